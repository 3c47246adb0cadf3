"""Every host program and file the tests and the image builder use, with the Debian package
that brings it.

Why a table: a developer's machine keeps whatever was ever installed by hand, so a test that
runs a tool nobody installs passes there and fails on a fresh machine, deep inside the test
(QEMU's "failed to find romfile" was one). ``need_tool`` and ``need_file`` refuse a name that is
not listed here, and ``tests/unit/test_host_packages.py`` checks that each listed package is one
the Makefile installs (or one every Debian system has) and, on a Debian machine, that the
program really comes from that package. A missing one then names its package.

Kernel modules: the host kernel the tests run on has no loadable modules; everything the
host-side tests use (veth, bridge, netns, nftables) is built in. The guests' modules
(batman-adv and the like) come from the image's own kernel package (``image/build.sh``).
"""
from __future__ import annotations

# program name -> Debian package
PROGRAMS: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "sysctl": "procps",
    "socat": "socat",
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
    "systemd-tmpfiles": "systemd",
    "setpriv": "util-linux",
    "runuser": "util-linux",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "prlimit": "util-linux",
    "fallocate": "util-linux",
    # a stock Electrum wallet (4.3.4 on Debian 12) against the chain's Electrum server
    "electrum": "electrum",
    "mount": "mount",
    "umount": "mount",
    # the image builder (image/build.sh) and the QEMU guests
    "debootstrap": "debootstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "update-binfmts": "binfmt-support",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-img": "qemu-utils",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    # the first-boot steps of the image (eschaton.field.firstboot), on a host image file
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "losetup": "mount",
    "ssh-keygen": "openssh-client",
    "mtype": "mtools",
    # the dashboard's browser tests (tests/integration/dashboard), headless
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "dpkg-query": "dpkg",
    "chroot": "coreutils",
    "cp": "coreutils",
    "dd": "coreutils",
    "truncate": "coreutils",
}

# data file -> Debian package. QEMU loads a NIC's option ROM even with -kernel boot:
# ``-device virtio-net-pci`` fails with 'failed to find romfile "efi-virtio.rom"' without it,
# and qemu-system-arm only recommends the package that has it.
FILES: dict[str, str] = {
    "/usr/lib/ipxe/qemu/efi-virtio.rom": "ipxe-qemu",
}


def package_of(name: str) -> str:
    """The package of a listed program or file; a KeyError names the table to extend."""
    table = FILES if name.startswith("/") else PROGRAMS
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"'{name}' is used by a test but not listed in tests/host_packages.py: "
                       "add it with the Debian package that provides it (and add that package "
                       "to the Makefile's APT_PKGS)") from None
