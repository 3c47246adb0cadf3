"""The SD image builder end to end: build the image with ``image/build.sh``, boot it under QEMU.

What this proves:
- the builder produces an MBR image with a FAT32 boot partition holding the Raspberry Pi boot
  files (firmware, kernel, initrd, DTBs, ``config.txt``, ``cmdline.txt`` naming the root by label)
  and an ext4 root partition;
- the same kernel, initrd and root filesystem boot on an emulated arm64 machine
  (``qemu-system-aarch64 -M virt -cpu cortex-a53``, TCG) to ``multi-user.target``;
- ``eschaton.service`` (``Type=notify``) starts, so the node signalled READY=1, and the real stack
  answers inside the guest: ``eschaton chain info`` reaches the node's embedded chain over
  Electrum on the guest's loopback, ``node status`` answers over the API socket, and a block
  mined through the node is judged by libbitcoinkernel on arm64;
- first boot (``eschaton-field.service``) on a disk larger than the image: the root partition and
  filesystem grow to the disk, the node key is made and names the host, SSH runs with keys only,
  and with no ``eschaton.toml`` the image's defaults apply (the node on its own chain).

What it does not prove: the Raspberry Pi firmware path (QEMU 7.2 has no raspi4b machine).

The guest has no network device (``-nic none``): nothing leaves the host. To log in on the serial
console, the tests add an autologin drop-in to THEIR copy of the image with ``debugfs`` (no mount,
no loop device); the built image itself keeps root locked. The guest writes to a qcow2 overlay of
that copy, which stays unbooted for the other image tests (``test_mesh.py``). The build, the
autologin and the QEMU helpers are shared with them (``conftest.py``, ``qemu.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.integration.image.qemu import (
    REGTEST_GENESIS,
    ROOT_LABEL,
    Console,
    guest_command,
    overlay,
    partitions,
    stop,
)

# The session-scoped build (conftest.py) runs inside the first test's timeout: about 9 minutes
# on 2 cores, nearly all of it debootstrap, apt and pip under qemu-user; the boot test adds about
# 2 (a shell at ~50 s, the node ready at ~70 s after power-on under TCG). ~11 minutes in all.
pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.root, pytest.mark.timeout(1800)]


def test_image_layout(built: Path) -> None:
    parts = partitions(built)
    assert [p["type"] for p in parts] == ["c", "83"]
    assert parts[0].get("bootable") is True
    boot = f"{built}@@{int(parts[0]['start']) * 512}"  # type: ignore[call-overload]
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = subprocess.run(["mdir", "-b", "-i", boot, "::/"], check=True, capture_output=True,
                             text=True, env=env).stdout
    names = {line.strip().lstrip(":/").lower() for line in listing.splitlines()}
    for must in ("config.txt", "cmdline.txt", "start4.elf", "fixup4.dat", "bootcode.bin",
                 "bcm2711-rpi-4-b.dtb", "bcm2837-rpi-3-b-plus.dtb", "eschaton.toml.example"):
        assert must in names, f"{must} missing from the boot partition: {sorted(names)}"
    assert any(n.startswith("vmlinuz") for n in names) and any(n.startswith("initrd") for n in names)
    cmdline = subprocess.run(["mtype", "-i", boot, "::/cmdline.txt"], check=True,
                             capture_output=True, text=True, env=env).stdout
    assert f"root=LABEL={ROOT_LABEL}" in cmdline
    # Sparse: the nominal size is not all written.
    st = built.stat()
    assert st.st_blocks * 512 < st.st_size



@pytest.fixture()
def guest(bootable: Path, tmp_path: Path) -> Iterator[Console]:
    disk = overlay(bootable, tmp_path / "guest.qcow2")
    # A bigger card than the image: first boot grows the root partition and filesystem to it.
    subprocess.run([need_tool("qemu-img"), "resize", "-q", str(disk), "4G"], check=True)
    cmd = guest_command(bootable, disk, ["-nic", "none"])  # no network device: nothing leaves the host
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    console = Console(proc, tmp_path / "console.log")
    try:
        yield console
    finally:
        stop(proc, console)
        print(f"serial console log: {tmp_path / 'console.log'}")


def test_boots_and_runs_the_node(guest: Console) -> None:
    started = time.monotonic()
    guest.login(600)
    print(f"boot to a shell: {time.monotonic() - started:.0f} s")
    guest.wait_node_active(600)
    print(f"eschaton.service active: {time.monotonic() - started:.0f} s after power-on")
    rc, out = guest.run("journalctl -b -u eschaton -o cat --no-pager")
    assert re.search(r"^Started eschaton\.service", out, re.M), out
    rc, out = guest.run("systemctl is-active multi-user.target")
    assert (rc, out.strip()) == (0, "active"), out
    rc, out = guest.run("systemctl --failed --no-legend --plain")
    assert out.strip() == "", f"failed units: {out}"

    rc, out = guest.run("systemctl is-active eschaton")
    assert (rc, out.strip()) == (0, "active"), out
    rc, out = guest.run("systemctl show -p Type,User,NRestarts eschaton")
    assert "Type=notify" in out and "User=eschaton" in out and "NRestarts=0" in out, out

    # The chain the node owns, reached over Electrum on the guest's loopback.
    rc, out = guest.run("eschaton chain info --json --datadir /var/lib/eschaton")
    assert rc == 0, out
    info = json.loads(out)
    assert info["backend"] == "ElectrumChainClient", info
    assert (info["height"], info["hash"]) == (0, REGTEST_GENESIS), info

    # A block through the node: libbitcoinkernel on arm64 validates and connects it.
    rc, out = guest.run("eschaton chain mine 1 --json --datadir /var/lib/eschaton", timeout=300)
    assert rc == 0, out
    rc, out = guest.run("eschaton chain info --json --datadir /var/lib/eschaton")
    info = json.loads(out)
    assert info["height"] == 1 and info["hash"] != REGTEST_GENESIS, info

    # The node's own API (unix socket in the node's 0700 datadir) agrees.
    rc, out = guest.run("eschaton node status --json --config /etc/eschaton/node.toml")
    assert rc == 0, out
    status = json.loads(out)
    assert status["chain"]["height"] == 1, status
    assert re.fullmatch(r"[0-9a-f]{64}", status["id"]) and status["peers"] == [], status

    rc, out = guest.run("ls -ld /var/lib/eschaton | cut -d' ' -f1,3")
    assert out.split() == ["drwx------", "eschaton"], out
    rc, out = guest.run("findmnt -no SOURCE,FSTYPE /boot/firmware")
    assert rc == 0 and "vfat" in out, out

    # First boot, from the boot partition (no eschaton.toml: the image's defaults): the root
    # grown to the 4 GiB disk, the hostname from the node id, SSH up with keys only.
    out = guest.check("journalctl -b -u eschaton-field -o cat --no-pager")
    assert re.search(r"eschaton-field: grew /dev/vda2 to the end of /dev/vda", out), out
    assert f"node id {status['id']}" in out and "applied the image's defaults" in out, out
    size = int(guest.check("findmnt -bno SIZE /").strip())
    assert size > 3_500_000_000, size
    assert guest.check("hostname").strip() == f"eschaton-{status['id'][:8]}"
    assert status["boot"]["config"]["ok"] is True, status
    assert guest.check("systemctl is-active ssh").strip() == "active"
    assert "passwordauthentication no" in guest.check("sshd -T | grep -i passwordauthentication").lower()
    assert guest.check("ls /etc/ssh/ssh_host_ed25519_key")

    guest.send("systemctl poweroff")
    assert guest.proc.wait(timeout=300) == 0
