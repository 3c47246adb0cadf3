"""Test rig for Modbus RTU over ptys: socat pty pairs, an SDM emulator process, and a forwarding
proxy between two pty pairs that can corrupt, garble or drop the meter's answers on demand.

    driver --- client pty ==socat== proxy_a pty --[FaultyLine]-- proxy_b pty ==socat== server pty --- emulator
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class PtyPair:
    """``socat`` joining two ptys, reachable through symlinks ``a`` and ``b``."""

    def __init__(self, socat: str, a: Path, b: Path) -> None:
        self.socat, self.a, self.b = socat, a, b
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PtyPair:
        self.proc = subprocess.Popen(
            [self.socat, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.a.exists() and self.b.exists(), 10, "socat ptys")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
        wait_for(lambda: not self.a.exists() and not self.b.exists(), 10, "socat to remove links")


class Emulator:
    """``python -m meter_drivers.sdm_sim`` on a pty, as a separate process that can vanish."""

    def __init__(self, port: Path, model: str = "sdm120", **values: float) -> None:
        self.port, self.model, self.values = port, model, values
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Emulator:
        args = [sys.executable, "-m", "meter_drivers.sdm_sim", "--port", str(self.port),
                "--model", self.model]
        for k, v in self.values.items():
            args += [f"--{k.replace('_', '-')}", repr(v)]
        env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'firmware'}")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class FaultyLine:
    """Forwards bytes between two ptys; ``fault(mode, count)`` damages the next answers.

    Modes: "crc" flips bits in the last byte (the CRC), "garbage" replaces the answer with noise
    of the same length, "drop" swallows it, "noise" sends junk bytes and no answer.
    """

    def __init__(self, client_side: Path, server_side: Path) -> None:
        self._a = os.open(client_side, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._b = os.open(server_side, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        for fd in (self._a, self._b):
            tty.setraw(fd)
        self.mode = "pass"
        self.remaining = 0
        self.damaged = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="faulty-line")
        self._thread.start()

    def fault(self, mode: str, count: int = 1_000_000) -> None:
        with self._lock:
            self.mode, self.remaining = mode, count

    def heal(self) -> None:
        self.fault("pass", 0)

    def _transform(self, data: bytes) -> bytes:
        with self._lock:
            if self.remaining <= 0 or self.mode == "pass":
                return data
            self.remaining -= 1
            self.damaged += 1
            mode = self.mode
        if mode == "crc":
            return data[:-1] + bytes([data[-1] ^ 0x5A])
        if mode == "garbage":
            return bytes((b * 37 + 11) & 0xFF for b in data)
        if mode == "noise":
            return b"\x00\xff\x13\x37\x42"
        return b""  # drop

    def _run(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self._a, self._b], [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if not data:
                    continue
                if fd == self._a:
                    os.write(self._b, data)  # requests pass untouched
                else:
                    # Let the rest of a frame arrive so a fault hits one whole answer.
                    time.sleep(0.01)
                    try:
                        data += os.read(fd, 4096)
                    except (BlockingIOError, OSError):
                        pass
                    out = self._transform(data)
                    if out:
                        os.write(self._a, out)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._a)
        os.close(self._b)
