"""Run ``python -m eschaton.net.mesh`` processes and read their JSON event lines."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class NodeProcess:
    def __init__(self, config: Path, prefix: list[str] | None = None, *, args: Sequence[str] = (),
                 preexec_fn: Callable[[], None] | None = None) -> None:
        cmd = [*(prefix or []), sys.executable, "-m", "eschaton.net.mesh", "--config", str(config),
               *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn)  # e.g. a lower RLIMIT_NOFILE
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_for(self, timeout: float = 20.0, **match: object) -> dict:
        """The first event (seen before or arriving within ``timeout``) matching ``match``."""
        for ev in self.seen:
            if all(ev.get(k) == v for k, v in match.items()):
                return ev
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and self.events.empty():
                raise AssertionError(
                    f"no event {match} within {timeout}s; seen {self.seen}; "
                    f"exit={self.proc.poll()}; stderr={''.join(self.stderr)[-2000:]}")
            try:
                ev = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self.seen.append(ev)
            if all(ev.get(k) == v for k, v in match.items()):
                return ev

    def drain(self) -> list[dict]:
        """Every event so far (moves arrived ones into ``seen``)."""
        while not self.events.empty():
            self.seen.append(self.events.get_nowait())
        return self.seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._threads:  # they end at EOF, now that the process is gone
            t.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
