"""First boot cut by power failures: the first-boot steps (grow partition 2 of a disk image to
its end, check and grow its ext4, make the node key and the SSH host keys, apply eschaton.toml)
run as a real process that is SIGKILLed (with its children: sfdisk, e2fsck, resize2fs,
ssh-keygen) at random moments, again and again, then run to the end. The result must be the
same as an uninterrupted first boot of an identical disk: the same partition table, a clean
filesystem grown to the partition's end, one node key that was never replaced once made, SSH
host keys that load, and the configuration applied.

What this host test cannot show: on the device the filesystem is grown online (mounted), which
the kernel journals; this container may not resize a mounted filesystem, so here the step runs
offline, e2fsck first (which also finishes an offline resize a cut interrupted). The partition
table, key and configuration steps are the device's own code paths.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]

SECTOR = 512
P2_START, P2_SECTORS = 18432, 65536  # 32 MiB, grown to the end of a 1 GiB (sparse) disk
DISK_BYTES = 1024 * 1024 * 1024
# Where each cut falls: after the driver says it began that step, at a random moment within the
# step's length in the uninterrupted run. Every step is cut several times, the first ones first.
CUTS = ("start", "grow", "grow", "grow", "key", "key", "ssh", "ssh", "ssh", "apply", "apply", "start")

DRIVER = r"""
import sys
from pathlib import Path
from eschaton.field import apply, firstboot
root, disk, part = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print("grow", flush=True)
firstboot.grow_root(root, disk, part, 2, tell_kernel=False, offline=True)
print("key", flush=True)
node_id, _ = firstboot.node_key(root)
print("ssh", flush=True)
firstboot.ssh_host_keys(root)
print("apply", flush=True)
apply.apply(root, node_id)
print("done", flush=True)
"""

BOOT_TOML = '[node]\nrole = "gateway"\n\n[mesh]\ninterfaces = ["eth0"]\n'


class Machine:
    """A disk image (partition 2 as a loop device at its offset: its size is the disk's end, as
    the grown partition's will be) and a directory standing for the root filesystem."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.disk = base / "disk.img"
        self.root = base / "root"
        with open(self.disk, "wb") as f:
            f.truncate(DISK_BYTES)
        subprocess.run(["sfdisk", "-q", str(self.disk)], check=True, text=True, input=(
            "label: dos\nlabel-id: 0x0e5c4a70\nunit: sectors\n"
            f"start=2048, size=16384, type=c, bootable\nstart={P2_START}, size={P2_SECTORS}, type=83\n"))
        self.loop = subprocess.run(["losetup", "-f", "--show", "-o", str(P2_START * SECTOR), str(self.disk)],
                                   check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["mkfs.ext4", "-q", "-F", "-U", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                        "-E", "hash_seed=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", self.loop,
                        str(P2_SECTORS * SECTOR // 4096)], check=True)
        (self.root / "boot/firmware").mkdir(parents=True)
        (self.root / "boot/firmware/eschaton.toml").write_text(BOOT_TOML)
        (self.root / "var/lib/eschaton").mkdir(parents=True, mode=0o700)
        (self.root / "usr/sbin").mkdir(parents=True)
        (self.root / "usr/sbin/sshd").write_text("")  # an image with an SSH server

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", DRIVER, str(self.root), str(self.disk), self.loop],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def partition_table(self) -> str:
        return subprocess.run(["sfdisk", "--dump", str(self.disk)], check=True, capture_output=True,
                              text=True).stdout.replace(str(self.disk), "DISK")

    def fs(self) -> tuple[int, str]:
        """(the filesystem's size in bytes, e2fsck's verdict)."""
        fsck = subprocess.run(["e2fsck", "-f", "-n", self.loop], capture_output=True, text=True)
        out = subprocess.run(["dumpe2fs", "-h", self.loop], capture_output=True, text=True).stdout
        blocks = int(re.search(r"Block count:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
        size = int(re.search(r"Block size:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
        return blocks * size, f"exit {fsck.returncode}" + ("" if fsck.returncode == 0 else fsck.stdout)

    def key(self) -> str | None:
        p = self.root / "var/lib/eschaton/node_key"
        return p.read_text() if p.exists() else None

    def close(self) -> None:
        subprocess.run(["losetup", "-d", self.loop], check=False)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[Machine, Machine]]:
    need_root()
    for tool in ("sfdisk", "losetup", "mkfs.ext4", "e2fsck", "resize2fs", "dumpe2fs", "ssh-keygen"):
        need_tool(tool)
    made: list[Machine] = []
    try:
        for name in ("reference", "cut"):
            (tmp_path / name).mkdir()
            made.append(Machine(tmp_path / name))
        yield made[0], made[1]
    finally:
        for m in made:
            m.close()


def test_first_boot_survives_power_cuts_at_random_moments(machines: tuple[Machine, Machine]) -> None:
    ref, cut = machines
    t0 = time.monotonic()
    p = ref.start()
    assert p.stdout is not None
    at = {"start": 0.0}
    for line in p.stdout:
        at[line.strip()] = time.monotonic() - t0
    assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    assert list(at) == ["start", "grow", "key", "ssh", "apply", "done"]
    steps = list(at)
    length = {s: at[steps[i + 1]] - at[s] for i, s in enumerate(steps[:-1])}

    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    first_key: str | None = None
    reached: list[str] = []
    for target in CUTS:
        p = cut.start()
        assert p.stdout is not None
        last = "start"
        if target != "start":
            for line in p.stdout:
                last = line.strip()
                if last in (target, "done"):
                    break
        time.sleep(rng.uniform(0, length[target]))
        os.killpg(p.pid, signal.SIGKILL)  # the power goes: the driver and whatever it runs
        rest, _ = p.communicate(timeout=30)
        reached.append((rest.split() or [last])[-1])
        key = cut.key()
        if first_key is None:
            first_key = key
        elif key is not None:
            assert key == first_key, "the node key was made again after a cut"
        assert key is None or first_key is not None
    p = cut.start()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    print(f"uninterrupted first boot: {at}; cut during: {reached}")

    # The same as the uninterrupted first boot.
    assert cut.partition_table() == ref.partition_table()
    table = json.loads(subprocess.run(["sfdisk", "--json", str(cut.disk)], check=True,
                                      capture_output=True, text=True).stdout)
    p2 = table["partitiontable"]["partitions"][1]
    assert p2["start"] == P2_START and p2["start"] + p2["size"] == DISK_BYTES // SECTOR
    ref_size, ref_fsck = ref.fs()
    size, fsck = cut.fs()
    assert (size, fsck) == (ref_size, ref_fsck) == (p2["size"] * SECTOR, "exit 0")
    # One key, never replaced once it existed; the node id it gives is the one configured.
    key = cut.key()
    assert key is not None and (first_key is None or key == first_key)
    mesh = json.loads((cut.root / "etc/eschaton/mesh.json").read_text())
    from eschaton.net.identity import load_identity
    assert load_identity(cut.root / "var/lib/eschaton").node_id.hex() == mesh["node_id"]
    assert not list((cut.root / "var/lib/eschaton").glob(".node_key.*"))
    # SSH host keys that load, and no scratch left.
    for kind in ("ed25519", "ecdsa", "rsa"):
        k = cut.root / f"etc/ssh/ssh_host_{kind}_key"
        assert subprocess.run(["ssh-keygen", "-y", "-f", str(k)], capture_output=True).returncode == 0, k
    assert not (cut.root / "etc/ssh/.host-keys-new").exists()
    # The configuration: the same files as the reference, but for the node id in them.
    def files(m: Machine) -> dict[str, str]:
        nid = json.loads((m.root / "etc/eschaton/mesh.json").read_text())["node_id"]
        return {str(f.relative_to(m.root)): f.read_text().replace(nid, "NODE").replace(nid[:8], "NODE8")
                for f in sorted((m.root / "etc").rglob("*")) if f.is_file() and "ssh_host" not in f.name}
    assert files(cut) == files(ref)
    assert not [f for f in cut.root.rglob(".*.tmp")]
    shutil.rmtree(cut.root / "etc/ssh", ignore_errors=True)
