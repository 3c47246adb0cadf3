"""Helpers of the image tests: the real builder, the test copy's autologin, QEMU guests and their
serial consoles.

Guests boot the image's own kernel and initrd (``-kernel``/``-initrd``) on
``qemu-system-aarch64 -M virt -cpu cortex-a53 -accel tcg``. Each guest writes to its own qcow2
overlay backed by the test copy of the image, so the copy stays as built: never booted, no node
key, no chain. Two guests therefore start as two distinct nodes, and two guests never write one
raw file (which would corrupt it).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.conftest import need_tool

REPO = Path(__file__).resolve().parents[3]
BUILD = REPO / "image" / "build.sh"
ROOT_LABEL = "ESCHATON_ROOT"
REGTEST_GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
SUFFIXES = (".img", ".vmlinuz", ".initrd.img")
BUILD_TOOLS = ("debootstrap", "qemu-aarch64-static", "qemu-system-aarch64", "qemu-img", "mkfs.vfat",
               "mcopy", "mdir", "sfdisk", "mkfs.ext4", "debugfs")
# The option ROM QEMU loads for the mesh test's ``-device virtio-net-pci`` (tests/host_packages.py).
VIRTIO_NET_ROM = "/usr/lib/ipxe/qemu/efi-virtio.rom"
# The hostname is the node's: eschaton-<8 hex of the node id>, or [node] name of eschaton.toml.
SHELL_PROMPT = r"root@[a-z0-9-]+:~# "
BOOT_FAIL = r"Kernel panic|emergency mode|Give root password"

AUTOLOGIN = """\
# Test only: a root shell on the serial console.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
"""


def partitions(img: Path) -> list[dict[str, object]]:
    out = subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True, text=True)
    parts: list[dict[str, object]] = json.loads(out.stdout)["partitiontable"]["partitions"]
    return parts


def build(out: Path) -> None:
    """Build the image with the real builder (debootstrap, apt, wheels, mkfs)."""
    started = time.monotonic()
    # Its own session, so a timeout or an interrupt stops the whole build (debootstrap, the
    # chroot's processes); SIGTERM lets build.sh unmount the chroot's proc and sys first.
    proc = subprocess.Popen([str(BUILD), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=1200)
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the build's session
            proc.wait()
        raise
    print(f"image build: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, f"build.sh failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    for suffix in SUFFIXES:
        assert out.with_suffix(suffix).is_file(), suffix


def add_autologin(img: Path, work: Path) -> None:
    """Autologin as root on ttyAMA0, written into the image's ext4 with debugfs (no mount, no
    loop device). Only ever applied to the tests' copy: the built image keeps root locked."""
    root = partitions(img)[1]
    offset = int(root["start"]) * 512  # type: ignore[call-overload]
    drop = work / "autologin.conf"
    drop.write_text(AUTOLOGIN)
    drop.chmod(0o644)
    unit_dir = "/etc/systemd/system/serial-getty@ttyAMA0.service.d"
    cmds = work / "debugfs.cmds"
    cmds.write_text(f"mkdir {unit_dir}\nwrite {drop} {unit_dir}/autologin.conf\n")
    proc = subprocess.run(["debugfs", "-w", "-f", str(cmds), f"{img}?offset={offset}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(["debugfs", "-R", f"cat {unit_dir}/autologin.conf", f"{img}?offset={offset}"],
                           capture_output=True, text=True)
    assert "--autologin root" in check.stdout, check.stderr


def configured(base: Path, path: Path, eschaton_toml: str) -> Path:
    """A sparse copy of ``base`` with ``eschaton_toml`` written on its FAT partition (mtools), as
    an installer does on a laptop; the guest boots an overlay of it."""
    subprocess.run(["cp", "--sparse=always", str(base), str(path)], check=True)
    boot = partitions(path)[0]
    src = path.with_name(path.stem + "-eschaton.toml")
    src.write_text(eschaton_toml)
    subprocess.run([need_tool("mcopy"), "-o", "-i", f"{path}@@{int(boot['start']) * 512}",  # type: ignore[call-overload]
                    str(src), "::eschaton.toml"], check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return path


def overlay(base: Path, path: Path) -> Path:
    """A qcow2 overlay of the raw ``base``: the guest's writes land here, the base is only read."""
    subprocess.run([need_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", str(base.resolve()), str(path)], check=True)
    return path


def guest_command(image: Path, disk: Path, nic: list[str], smp: int = 2) -> list[str]:
    """qemu-system-aarch64 booting ``image``'s kernel and initrd with ``disk`` (a qcow2 overlay)
    as its root; ``nic``: the network options (``["-nic", "none"]`` for none)."""
    return [need_tool("qemu-system-aarch64"), "-M", "virt", "-cpu", "cortex-a53", "-accel", "tcg",
            "-smp", str(smp), "-m", "1024",
            "-display", "none", "-monitor", "none", "-serial", "stdio",
            *nic,
            "-no-reboot",
            "-device", "virtio-rng-pci",
            "-kernel", str(image.with_suffix(".vmlinuz")),
            "-initrd", str(image.with_suffix(".initrd.img")),
            "-drive", f"if=none,format=qcow2,file={disk},id=hd0",
            "-device", "virtio-blk-pci,drive=hd0",
            "-append", f"root=LABEL={ROOT_LABEL} rw console=ttyAMA0 systemd.show_status=1 panic=-1"]


class Console:
    """The guest's serial console over QEMU's stdio: a reader thread and expect()."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.buf = b""
        self.pos = 0
        self._lock = threading.Lock()
        self._log = log.open("wb")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return
            with self._lock:
                self.buf += chunk
            self._log.write(chunk)
            self._log.flush()

    def text(self) -> str:
        with self._lock:
            return self.buf.decode(errors="replace")

    def expect(self, pattern: str, timeout: float, fail: str | None = None) -> re.Match[str]:
        """Wait for ``pattern`` in the output after the previous match; move past it.
        ``fail``: a pattern that ends the wait at once (a unit that failed)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                tail = self.buf[self.pos:].decode(errors="replace")
            if fail is not None and re.search(fail, tail):
                raise AssertionError(f"{fail!r} on the console:\n{self.text()[-6000:]}")
            m = rx.search(tail)
            if m:
                self.pos += len(tail[:m.end()].encode(errors="replace"))
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited ({self.proc.returncode}) waiting for {pattern!r}:\n"
                                     f"{self.text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; console tail:\n"
                                     f"{self.text()[-4000:]}")
            time.sleep(0.2)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\r")
        self.proc.stdin.flush()

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """Run one shell command; its output and exit status, framed by markers the typed
        line cannot match (the markers are split by quotes when typed)."""
        self.send(f"echo '=BE''GIN='; {command}; echo \"=E\"\"ND $?=\"")
        self.expect(r"=BEGIN=\r?\n", timeout)
        m = self.expect(r"(?s)(.*?)=END (\d+)=", timeout)
        return int(m.group(2)), m.group(1).replace("\r", "")

    def check(self, command: str, timeout: float = 120) -> str:
        """``run`` that insists on exit status 0; the output."""
        rc, out = self.run(command, timeout)
        assert rc == 0, f"{command!r} exited {rc}:\n{out}"
        return out

    def login(self, timeout: float = 600) -> None:
        """Wait for the autologin shell; quiet the console for run()."""
        self.expect(SHELL_PROMPT, timeout, fail=BOOT_FAIL)
        # Quiet console: no kernel messages or systemd status lines inside command output.
        self.send("dmesg -n 1; kill -s RTMIN+21 1; stty -echo cols 500; "
                  "export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat")

    def wait_node_active(self, timeout: float = 600) -> None:
        """Until eschaton.service is active. Type=notify: the unit is "active" only once the node
        sent READY=1 (until then it is "activating"); under TCG the node takes a while to import
        and open its chain."""
        rc, _ = self.run(f"timeout {timeout:.0f} sh -c 'until systemctl is-active -q eschaton; do "
                         "systemctl is-failed -q eschaton && exit 1; sleep 2; done'", timeout=timeout + 60)
        if rc != 0:
            _, diag = self.run("systemctl status eschaton --no-pager -l; "
                               "journalctl -b -u eschaton --no-pager | tail -n 60")
            raise AssertionError(f"eschaton.service did not become active:\n{diag}")

    def close(self) -> None:
        self._log.close()


def stop(proc: subprocess.Popen[bytes], console: Console | None) -> None:
    """Kill a guest that is still running (a failed test) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    if console is not None:
        console.close()
