#!/usr/bin/env bash
# Build a flashable arm64 SD image of an Eschaton node (Debian 12 "bookworm").
#
#   image/build.sh OUT.img [--workdir DIR] [--mirror URL] [--size SIZE] [--root-password-file FILE]
#
# Run as root on Debian 12 (x86_64 or arm64). Needs: debootstrap, qemu-user-static and
# binfmt-support (the arm64 second stage and every chroot command run under qemu-user),
# dosfstools, mtools, fdisk (sfdisk), e2fsprogs. No loop devices and no mounts of the image:
# the FAT boot partition is filled with mcopy, the ext4 root with `mkfs.ext4 -d`, and both are
# dd'ed into a sparse file partitioned by sfdisk, so no loop devices are needed.
#
# Output:
#   OUT.img            MBR: p1 FAT32 "ESCHATBOOT" (Pi firmware, kernel, initrd, DTBs, config.txt,
#                      cmdline.txt), p2 ext4 "ESCHATON_ROOT" (the rootfs). Sparse, SIZE nominal.
#   OUT.vmlinuz        the same kernel and initrd, for QEMU direct boot
#   OUT.initrd.img     (qemu-system-aarch64 -M virt -kernel OUT.vmlinuz -initrd OUT.initrd.img).
#
# What is verified and what is not (see docs/image.md):
# - tests/integration/image/test_image.py builds the image with this script and boots it under
#   qemu-system-aarch64 -M virt (cortex-a53, TCG) with -kernel/-initrd: the same rootfs, kernel
#   and initrd reach multi-user, eschaton.service signals ready and answers `eschaton chain info`.
# - The Raspberry Pi firmware path (start4.elf reading config.txt, the Pi DTBs, cmdline.txt) is
#   NOT exercised here: QEMU 7.2 has no raspi4b. Nor is the initrd's module list (MODULES=list,
#   below) proven on a Pi's SD or USB controller. Debian 12's kernel supports the Pi 3 and 4
#   (and the Zero 2 W); it does not support the Pi 5.
#
# --workdir DIR keeps the rootfs between runs: the debootstrap and apt stages are skipped when
# their stamp files exist (for iterating on this script). Without it a fresh directory next to
# OUT.img is used and removed afterwards. The Eschaton venv and the image are always rebuilt.
set -euo pipefail
# Everything in the image is made by this script: its modes must not depend on the caller's
# umask. Under 0077 (a careful root shell, or a test process after the node's CLI ran in it)
# /opt/eschaton/venv came out 0700 and the node's own user could not execute it.
umask 022

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
SIZE=3G
BOOT_MIB=256
BOOT_LABEL=ESCHATBOOT
ROOT_LABEL=ESCHATON_ROOT
HOSTNAME_=eschaton
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR=""
ROOT_PASSWORD_FILE=""
# Packages installed with apt inside the arm64 chroot (after the minbase debootstrap).
PACKAGES=(
  systemd systemd-sysv systemd-timesyncd udev dbus kmod
  python3 python3-venv
  nftables iproute2 batctl wpasupplicant iw ca-certificates
  initramfs-tools raspi-firmware
  e2fsprogs dosfstools
  fdisk openssh-server
)
# The kernel goes in by itself, last: its postinst builds the initrd once, with every other
# package's initramfs hooks already in place. Installed together, the initramfs-tools trigger
# builds it a second time, and under qemu-user each build takes minutes (one modinfo process
# per module).
KERNEL_PACKAGES=(linux-image-arm64)

die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

usage() { sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir) WORKDIR="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --root-password-file) ROOT_PASSWORD_FILE="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$OUT" ] || die "one output image only"; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || usage
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, file ownership in the rootfs)"
for tool in debootstrap chroot mkfs.vfat mcopy mkfs.ext4 sfdisk dd truncate; do
  command -v "$tool" >/dev/null || die "missing '$tool' (apt-get install debootstrap qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs)"
done

OUT="$(realpath -m "$OUT")"
mkdir -p "$(dirname "$OUT")"
KEEP_WORKDIR=1
if [ -z "$WORKDIR" ]; then
  WORKDIR="$(mktemp -d "$(dirname "$OUT")/.eschaton-image.XXXXXX")"
  KEEP_WORKDIR=0
fi
mkdir -p "$WORKDIR"
WORKDIR="$(realpath "$WORKDIR")"
ROOTFS="$WORKDIR/rootfs"

# Python on the host, for building our wheel and downloading the arm64 wheels.
HOST_PY="${HOST_PY:-}"
if [ -z "$HOST_PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then HOST_PY="$REPO/.venv/bin/python"; else HOST_PY=python3; fi
fi

# --- mounts inside the chroot, always undone ---------------------------------------------------
# Only proc and sysfs: debootstrap's static /dev nodes (null, zero, urandom, tty) are enough for
# the maintainer scripts, and not bind-mounting /dev keeps a devpts mount from ever propagating
# back to the host.
MOUNTED=()
chroot_mount() {
  mountpoint -q "$ROOTFS/proc" || { mount -t proc proc "$ROOTFS/proc"; MOUNTED+=("$ROOTFS/proc"); }
  mountpoint -q "$ROOTFS/sys" || { mount -t sysfs sysfs "$ROOTFS/sys"; MOUNTED+=("$ROOTFS/sys"); }
}
chroot_umount() {
  local i
  for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
  MOUNTED=()
  # And whatever an interrupted debootstrap second stage left mounted in the rootfs.
  local m
  { findmnt -rno TARGET | grep "^$ROOTFS/" || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  chroot_umount
  if [ "$KEEP_WORKDIR" = 0 ] && [ -d "$WORKDIR" ]; then
    # Never rm -rf through a mount point that failed to come off.
    if ! findmnt -rno TARGET | grep -q "^$WORKDIR/"; then rm -rf "$WORKDIR"; fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_chroot() {
  chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# --- binfmt_misc: arm64 binaries run through qemu-user -----------------------------------------
ensure_binfmt() {
  [ "$(uname -m)" = aarch64 ] && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    if command -v update-binfmts >/dev/null; then
      update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # No binfmt-support (or it refused): register qemu-user-static's own line by hand.
    # The F flag makes the kernel open the interpreter now, so it need not exist in the chroot.
    local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -r "$conf" ] || die "no $conf: install qemu-user-static"
    grep -v '^#' "$conf" | head -n1 > /proc/sys/fs/binfmt_misc/register
  fi
  [ "$(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 | head -n1)" = enabled ] \
    || echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
  grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "qemu-aarch64 binfmt is registered without the F flag; re-register it from qemu-user-static"
}

# --- stage 1: debootstrap ----------------------------------------------------------------------
stage_debootstrap() {
  [ -e "$WORKDIR/.stage-debootstrap" ] && { log "debootstrap: reusing $ROOTFS"; return; }
  log "debootstrap $SUITE arm64 (minbase) from $MIRROR"
  rm -rf "$ROOTFS"
  debootstrap --foreign --arch arm64 --variant=minbase --components=main,non-free-firmware \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORKDIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/debootstrap.log"; die "debootstrap (first stage) failed"; }
  chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >>"$WORKDIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/debootstrap.log"; die "debootstrap (second stage) failed"; }
  touch "$WORKDIR/.stage-debootstrap"
}

# --- stage 2: Debian packages ------------------------------------------------------------------
stage_packages() {
  [ -e "$WORKDIR/.stage-packages" ] && { log "packages: reusing $ROOTFS"; return; }
  log "apt: ${PACKAGES[*]}"
  cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main non-free-firmware
deb $MIRROR $SUITE-updates main non-free-firmware
deb $SECURITY_MIRROR $SUITE-security main non-free-firmware
EOF
  # No daemon may start inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  # The raspi-firmware kernel hooks copy the kernel, initrd and DTBs here and write config.txt
  # and cmdline.txt; ROOTPART is what cmdline.txt's root= says.
  mkdir -p "$ROOTFS/boot/firmware" "$ROOTFS/etc/default"
  in_chroot apt-get update -qq
  in_chroot apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-unsafe-io \
    -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${PACKAGES[@]}" >"$WORKDIR/apt.log" 2>&1 \
    || { tail -n 40 "$WORKDIR/apt.log"; die "apt-get install in the chroot failed"; }
  # initramfs-tools' MODULES=most copies ~3700 modules, and even its "base mmc block" classes
  # ~1000, at several processes per module: minutes each under qemu-user. So MODULES=list with
  # the modules the root filesystem needs on the machines we boot. Debian 12's arm64 kernel has
  # the Pi's plumbing built in (mmc_core, mmc_block, pinctrl-bcm2835, clk-raspberrypi,
  # gpio-raspberrypi-exp, the firmware mailbox, pcie-brcmstb); modprobe adds dependencies.
  #   SD card, Pi 3 and 4:  sdhci-iproc (Pi 4 emmc2, Pi 3 SD), bcm2835 (Pi 3 sdhost),
  #                         gpio-regulator (Pi 4 SD I/O voltage)
  #   USB boot, Pi 4:       xhci-pci, reset-raspberrypi (VL805 firmware load), usb-storage, uas
  #   QEMU -M virt:         virtio_pci, virtio_mmio, virtio_blk
  #   root and boot fs:     ext4, vfat, crc32c_generic (ext4 metadata checksums)
  mkdir -p "$ROOTFS/etc/initramfs-tools/conf.d"
  echo "MODULES=list" >"$ROOTFS/etc/initramfs-tools/conf.d/eschaton"
  cat >>"$ROOTFS/etc/initramfs-tools/modules" <<'MODS'
# Eschaton image (image/build.sh): what the root filesystem needs on a Pi 3/4 and on QEMU virt.
sdhci-iproc
bcm2835
gpio-regulator
xhci-pci
reset-raspberrypi
usb-storage
uas
virtio_pci
virtio_mmio
virtio_blk
ext4
vfat
crc32c_generic
MODS
  log "apt: ${KERNEL_PACKAGES[*]}"
  in_chroot apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-unsafe-io \
    -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${KERNEL_PACKAGES[@]}" >>"$WORKDIR/apt.log" 2>&1 \
    || { tail -n 40 "$WORKDIR/apt.log"; die "apt-get install (kernel) in the chroot failed"; }
  in_chroot apt-get clean
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  touch "$WORKDIR/.stage-packages"
}

# --- stage 3: system configuration -------------------------------------------------------------
stage_system() {
  log "system configuration"
  echo "$HOSTNAME_" >"$ROOTFS/etc/hostname"
  cat >"$ROOTFS/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$HOSTNAME_
::1		localhost ip6-localhost ip6-loopback
EOF
  cat >"$ROOTFS/etc/fstab" <<EOF
# Both by label, so the same fstab works on an SD card (mmcblk0) and a virtio disk (vda).
LABEL=$ROOT_LABEL	/		ext4	defaults,noatime	0	1
LABEL=$BOOT_LABEL	/boot/firmware	vfat	defaults,noatime,nofail,x-systemd.device-timeout=5min	0	2
EOF
  # Pi boot: raspi-firmware writes cmdline.txt from these. On the Pi 3 and 4 (arm64) the GPIO
  # header UART is ttyS1; the last console= gets the boot log, and systemd's getty generator
  # starts a serial getty on it.
  cat >"$ROOTFS/etc/default/raspi-firmware" <<EOF
# Written by Eschaton's image builder (image/build.sh).
ROOTPART=LABEL=$ROOT_LABEL
CONSOLES="tty0 ttyS1,115200"
KERNEL_ARCH=arm64
EOF
  # Wired and USB network interfaces take DHCP; the mesh (batman-adv) is configured by the node's
  # operator. systemd-networkd-wait-online stays off: nothing here needs a routable address, and
  # it would hold boot two minutes on a node with no cable.
  mkdir -p "$ROOTFS/etc/systemd/network"
  cat >"$ROOTFS/etc/systemd/network/20-wired.network" <<EOF
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
  in_chroot systemctl enable systemd-networkd.service systemd-timesyncd.service >/dev/null 2>&1
  in_chroot systemctl disable systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  # A node boots unattended: systemd-firstboot would prompt on the console for a locale, a time
  # zone and a root password on first boot (it is pulled in by sysinit.target). No prompts.
  in_chroot systemctl mask systemd-firstboot.service >/dev/null 2>&1
  # A fresh machine-id on first boot (empty file = "uninitialized", systemd(1)). First boot also
  # applies the presets; ours (below) keeps the node enabled.
  : >"$ROOTFS/etc/machine-id"
  rm -f "$ROOTFS/var/lib/dbus/machine-id"
  ln -sf /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id" 2>/dev/null || true
  # The real resolv.conf comes from DHCP; the build host's must not ship.
  rm -f "$ROOTFS/etc/resolv.conf"; : >"$ROOTFS/etc/resolv.conf"
  # Root stays locked (debootstrap's "*") unless a password is given for this build.
  if [ -n "$ROOT_PASSWORD_FILE" ]; then
    printf 'root:%s\n' "$(head -n1 "$ROOT_PASSWORD_FILE")" | in_chroot chpasswd
  fi
}

# --- stage 4: Eschaton in /opt/eschaton/venv ---------------------------------------------------
stage_eschaton() {
  log "eschaton wheels (host) for cp311 aarch64"
  local wheels="$WORKDIR/wheels" pure="$WORKDIR/wheels-pure" req="$WORKDIR/requirements.txt"
  rm -rf "$wheels" "$pure"; mkdir -p "$wheels" "$pure"
  "$HOST_PY" - "$REPO/pyproject.toml" >"$req" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF
  # Build our wheel from a copy of just the packaged sources: setuptools' package discovery
  # walks the whole source directory, and a work directory under build/ holds a rootfs.
  local src="$WORKDIR/src"
  rm -rf "$src"; mkdir -p "$src"
  cp "$REPO/pyproject.toml" "$REPO/README.md" "$src/"
  for d in firmware hw meter_drivers; do
    [ -d "$REPO/$d" ] && cp -r "$REPO/$d" "$src/$d"
  done
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  "$HOST_PY" -m pip wheel -q --no-deps -w "$wheels" "$src" >"$WORKDIR/pip.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/pip.log"; die "building the eschaton wheel failed"; }
  # Some pins ship only an sdist (embit is pure Python). pip cannot build an sdist for another
  # platform, so build every dependency for the host first and keep the pure-Python wheels
  # (py3-none-any), which are the same on arm64; then let the arm64 download find them there.
  "$HOST_PY" -m pip wheel -q -w "$pure" -r "$req" >>"$WORKDIR/pip.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/pip.log"; die "building the host wheels failed"; }
  find "$pure" -name '*.whl' ! -name '*-none-any.whl' -delete
  "$HOST_PY" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --abi abi3 --abi none \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64 \
    --find-links "$pure" -d "$wheels" -r "$req" >>"$WORKDIR/pip.log" 2>&1 \
    || { tail -n 30 "$WORKDIR/pip.log"; die "downloading the arm64 wheels failed"; }
  if ls "$wheels" | grep -q 'x86_64'; then die "an x86_64 wheel slipped into $wheels"; fi

  log "eschaton venv (chroot, offline)"
  rm -rf "$ROOTFS/opt/eschaton" "$ROOTFS/tmp/wheels"
  mkdir -p "$ROOTFS/opt/eschaton" "$ROOTFS/tmp/wheels"
  cp "$wheels"/*.whl "$ROOTFS/tmp/wheels/"
  cp "$REPO/README.md" "$ROOTFS/opt/eschaton/README.md"
  in_chroot python3 -m venv /opt/eschaton/venv
  # --no-index: the chroot never reaches PyPI; every wheel was fetched above, on the host.
  in_chroot /opt/eschaton/venv/bin/pip install -q --no-index --find-links /tmp/wheels eschaton \
    >>"$WORKDIR/pip.log" 2>&1 || { tail -n 30 "$WORKDIR/pip.log"; die "pip install in the chroot failed"; }
  rm -rf "$ROOTFS/tmp/wheels"
  # The compiled parts (libbitcoinkernel, secp256k1, libsodium) load on arm64:
  in_chroot /opt/eschaton/venv/bin/python -c 'import pbk, coincurve, nacl.bindings, eschaton.cli.main' \
    || die "the arm64 venv does not import"
  ln -sf /opt/eschaton/venv/bin/eschaton "$ROOTFS/usr/local/bin/eschaton"

  log "eschaton service"
  install -m 0644 "$REPO/systemd/eschaton.service" "$ROOTFS/usr/lib/systemd/system/eschaton.service"
  install -m 0644 "$REPO/systemd/eschaton.sysusers.conf" "$ROOTFS/usr/lib/sysusers.d/eschaton.conf"
  install -m 0644 "$REPO/systemd/eschaton.tmpfiles.conf" "$ROOTFS/usr/lib/tmpfiles.d/eschaton.conf"
  # The hardware watchdog: systemd pets it, a hung kernel or PID 1 resets the board.
  install -D -m 0644 "$REPO/systemd/eschaton-watchdog.conf" \
    "$ROOTFS/usr/lib/systemd/system.conf.d/50-eschaton-watchdog.conf"
  install -D -m 0644 "$REPO/systemd/eschaton-modules.conf" "$ROOTFS/usr/lib/modules-load.d/eschaton.conf"
  # /dev/gpiochip* for the gpio group: the node and its ExecStopPost run as eschaton, not root.
  install -D -m 0644 "$REPO/systemd/60-eschaton-gpio.rules" "$ROOTFS/usr/lib/udev/rules.d/60-eschaton-gpio.rules"
  in_chroot systemd-sysusers /usr/lib/sysusers.d/eschaton.conf
  in_chroot systemd-tmpfiles --create /usr/lib/tmpfiles.d/eschaton.conf
  install -m 0640 -g "$(in_chroot getent group eschaton | cut -d: -f3)" \
    "$REPO/image/node.toml" "$ROOTFS/etc/eschaton/node.toml"
  in_chroot systemctl enable eschaton.service >/dev/null 2>&1
  echo "enable eschaton.service" >"$ROOTFS/usr/lib/systemd/system-preset/80-eschaton.preset"
  # Validate the shipped configuration with the image's own code.
  in_chroot /opt/eschaton/venv/bin/python -c \
    'from eschaton.config import load_config; load_config("/etc/eschaton/node.toml")' \
    || die "image/node.toml does not load"
}

# --- stage 4b: configuration from the boot partition (eschaton.toml) ----------------------------
stage_field() {
  log "eschaton-field and eschaton-mesh (eschaton.toml on the boot partition)"
  install -m 0644 "$REPO/systemd/eschaton-field.service" "$ROOTFS/usr/lib/systemd/system/eschaton-field.service"
  install -m 0644 "$REPO/systemd/eschaton-mesh.service" "$ROOTFS/usr/lib/systemd/system/eschaton-mesh.service"
  in_chroot systemctl enable eschaton-field.service eschaton-mesh.service ssh.service >/dev/null 2>&1
  printf 'enable eschaton-field.service\nenable eschaton-mesh.service\nenable ssh.service\n' \
    >"$ROOTFS/usr/lib/systemd/system-preset/80-eschaton-field.preset"
  # openssh-server's postinst made host keys in the chroot: every card would share them.
  # eschaton-field makes each node's own on first boot.
  rm -f "$ROOTFS"/etc/ssh/ssh_host_*
  # The shipped example must be a good file, checked by the image's own code.
  install -m 0644 "$REPO/image/eschaton.toml.example" "$ROOTFS/tmp/eschaton.toml.example"
  in_chroot /opt/eschaton/venv/bin/python -m eschaton.field check /tmp/eschaton.toml.example >/dev/null \
    || die "image/eschaton.toml.example is refused by the image's own checker"
  rm -f "$ROOTFS/tmp/eschaton.toml.example"
}

# --- stage 5: boot files and the partitioned image ---------------------------------------------
stage_image() {
  local kver vmlinuz initrd
  kver="$(ls "$ROOTFS/lib/modules" | sort -V | tail -n1)"
  [ -n "$kver" ] || die "no kernel in the rootfs"
  vmlinuz="$ROOTFS/boot/vmlinuz-$kver"; initrd="$ROOTFS/boot/initrd.img-$kver"
  [ -f "$vmlinuz" ] && [ -f "$initrd" ] || die "no vmlinuz/initrd for $kver"
  log "boot files for $kver (raspi-firmware hook)"
  # Re-run raspi-firmware's hook now that /etc/default/raspi-firmware names our root label.
  # The firmware blobs are what raspi-firmware's postinst copies; the hook adds the rest.
  rm -rf "$ROOTFS/boot/firmware"; mkdir -p "$ROOTFS/boot/firmware"
  cp "$ROOTFS"/usr/lib/raspi-firmware/* "$ROOTFS/boot/firmware/"
  in_chroot env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware \
    "$kver" "/boot/vmlinuz-$kver" >"$WORKDIR/raspi-firmware.log" 2>&1 \
    || { cat "$WORKDIR/raspi-firmware.log"; die "raspi-firmware's kernel hook failed"; }
  grep -q "root=LABEL=$ROOT_LABEL" "$ROOTFS/boot/firmware/cmdline.txt" \
    || die "cmdline.txt does not name root=LABEL=$ROOT_LABEL: $(cat "$ROOTFS/boot/firmware/cmdline.txt")"
  [ -f "$ROOTFS/boot/firmware/config.txt" ] && [ -f "$ROOTFS/boot/firmware/start4.elf" ] \
    || die "raspi-firmware did not populate /boot/firmware"
  # The commented example of eschaton.toml, on the FAT partition where installers edit it.
  install -m 0644 "$REPO/image/eschaton.toml.example" "$ROOTFS/boot/firmware/eschaton.toml.example"

  chroot_umount
  log "filesystems"
  local boot_img="$WORKDIR/boot.vfat" root_img="$WORKDIR/root.ext4"
  local total_b boot_b root_start root_b
  total_b=$(numfmt --from=iec "$SIZE")
  boot_b=$((BOOT_MIB * 1024 * 1024))
  root_start=$((1024 * 1024 + boot_b))
  root_b=$(( (total_b - root_start) / 1048576 * 1048576 ))
  [ "$root_b" -gt $((1024 * 1048576)) ] || die "--size $SIZE leaves under 1 GiB for the root"
  rm -f "$boot_img" "$root_img"
  truncate -s "$boot_b" "$boot_img"
  mkfs.vfat -F 32 -n "$BOOT_LABEL" "$boot_img" >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -s -p -i "$boot_img" "$ROOTFS"/boot/firmware/* ::/
  # The ext4 gets the rootfs with an empty /boot/firmware (the FAT partition mounts there).
  local stash="$WORKDIR/firmware.stash"
  rm -rf "$stash"; mv "$ROOTFS/boot/firmware" "$stash"; mkdir "$ROOTFS/boot/firmware"
  truncate -s "$root_b" "$root_img"
  local rc=0
  mkfs.ext4 -q -F -L "$ROOT_LABEL" -d "$ROOTFS" "$root_img" || rc=$?
  rmdir "$ROOTFS/boot/firmware"; mv "$stash" "$ROOTFS/boot/firmware"
  [ "$rc" = 0 ] || die "mkfs.ext4 -d failed"

  log "partition table and $OUT"
  rm -f "$OUT"
  truncate -s "$total_b" "$OUT"
  sfdisk -q "$OUT" <<EOF
label: dos
unit: sectors
start=2048, size=$((boot_b / 512)), type=c, bootable
start=$((root_start / 512)), size=$((root_b / 512)), type=83
EOF
  dd if="$boot_img" of="$OUT" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$root_img" of="$OUT" bs=1M seek=$((root_start / 1048576)) conv=notrunc,sparse status=none
  rm -f "$boot_img" "$root_img"
  cp "$vmlinuz" "${OUT%.img}.vmlinuz"
  cp "$initrd" "${OUT%.img}.initrd.img"
  log "done: $OUT ($(du -h --apparent-size "$OUT" | cut -f1) nominal, $(du -h "$OUT" | cut -f1) used), kernel $kver"
}

START=$SECONDS
ensure_binfmt
stage_debootstrap
chroot_mount
stage_packages
stage_system
stage_eschaton
stage_field
stage_image
log "built in $((SECONDS - START)) s"
