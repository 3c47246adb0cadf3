"""First boot, made safe against a power cut at any moment: every step is idempotent and
leaves either the old state or the new one, so the boot after a cut simply runs it again.

1. Grow the root partition to the end of the card (``sfdisk -N``: one sector write of the
   partition table; growing a partition that already ends last changes nothing), tell the
   kernel (``partx -u``), and grow the mounted ext4 online (``resize2fs``: the kernel journals
   an online resize; a second run finds nothing to do).
2. The node key (``eschaton.net.identity``): written to a temporary file, fsynced, hard-linked
   into place. Once there it is never made again; a temporary file left by a cut is removed.
   The wallet seed is made by the node on its first start, with the same care
   (``eschaton.wallet``).
3. SSH host keys, each card its own (the image ships none): ``ssh-keygen -A`` into a scratch
   directory, then each key renamed into /etc/ssh, the ed25519 private key last: its presence
   means the step is done.

A marker (``/var/lib/eschaton-field/grown``) skips step 1 on later boots; it is written after
the step, so a cut before it only means the step runs again.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from eschaton.core.link.identity import IdentityError
from eschaton.field import atomic
from eschaton.field.apply import STATE_DIR, _ids
from eschaton.net.identity import KEY_FILE, create_identity, load_identity

GROWN = f"{STATE_DIR}/grown"
DATADIR = "var/lib/eschaton"

Runner = Callable[[Sequence[str]], None]


def run(cmd: Sequence[str]) -> None:
    """Run ``cmd``; a failure raises with its output (one line for the journal)."""
    res = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        out = " ".join((res.stderr or res.stdout).split())
        raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}: {out}")


def root_device(mountpoint: str = "/") -> tuple[str, str, int]:
    """(the disk, the root partition, its number) of the filesystem mounted at ``mountpoint``,
    from /proc/self/mountinfo and sysfs: ``("/dev/mmcblk0", "/dev/mmcblk0p2", 2)``."""
    st = os.stat(mountpoint)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    sys_dev = Path(f"/sys/dev/block/{major}:{minor}").resolve()
    number = int((sys_dev / "partition").read_text())
    return f"/dev/{sys_dev.parent.name}", f"/dev/{sys_dev.name}", number


def grow_root(root: Path, disk: str, part: str, number: int, *, runner: Runner = run,
              tell_kernel: bool = True, offline: bool = False) -> bool:
    """Step 1; returns whether it ran (False: the marker says it is done).

    ``offline``: the filesystem is not mounted (a test on an image file): e2fsck first, as
    resize2fs requires, which also finishes an offline resize a cut interrupted."""
    marker = root / GROWN
    if marker.exists():
        return False
    # ", +": keep the start, take all the space after it.
    res = subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "-N", str(number), disk],
                         input=", +\n", capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"sfdisk -N {number} {disk}: {' '.join(res.stderr.split())}")
    if tell_kernel:
        runner(["partx", "-u", "--nr", str(number), disk])
    if offline:
        res = subprocess.run(["e2fsck", "-f", "-y", part], capture_output=True, text=True, check=False)
        if res.returncode not in (0, 1):  # 1: errors corrected
            raise RuntimeError(f"e2fsck -f -y {part}: exit {res.returncode}: {' '.join(res.stdout.split())}")
    runner(["resize2fs", part])
    atomic.write_atomic(marker, "", 0o600, dir_mode=0o700)
    return True


def node_key(root: Path) -> tuple[str, bool]:
    """Step 2: (the node id, whether it was made now). Never replaces an existing key."""
    datadir = root / DATADIR
    try:
        return load_identity(datadir).node_id.hex(), False
    except IdentityError:
        if (datadir / KEY_FILE).exists():
            raise  # a key that does not load is reported, never overwritten
    for stale in datadir.glob(f".{KEY_FILE}.*"):
        stale.unlink()  # a temporary file a cut left behind
    keys = create_identity(datadir)
    uid, gid = _ids(root, "passwd", "eschaton"), _ids(root, "group", "eschaton")
    if uid != -1:
        os.chown(datadir / KEY_FILE, uid, gid)
        os.chown(datadir, uid, gid)
    return keys.node_id.hex(), True


def ssh_host_keys(root: Path, *, runner: Runner = run) -> bool:
    """Step 3; returns whether keys were made now (False: present already, or no sshd)."""
    etc_ssh = root / "etc/ssh"
    done = etc_ssh / "ssh_host_ed25519_key"
    if done.exists() or not (root / "usr/sbin/sshd").exists():
        return False
    scratch = etc_ssh / ".host-keys-new"
    shutil.rmtree(scratch, ignore_errors=True)  # left by a cut: made again from scratch
    (scratch / "etc/ssh").mkdir(parents=True, mode=0o700)  # makes /etc/ssh too if it is missing
    runner(["ssh-keygen", "-A", "-f", str(scratch)])
    made = sorted((scratch / "etc/ssh").iterdir(), key=lambda p: (p.name == done.name, p.suffix != ".pub"))
    for key in made:
        fd = os.open(key, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(key, etc_ssh / key.name)
        atomic.fsync_dir(etc_ssh)
    shutil.rmtree(scratch, ignore_errors=True)
    return True
