"""The write-ahead indexing thread: one job at a time, handed over through two C-level queues.

Rules:
- ``submit`` one job, then ``result`` it, before the next ``submit`` (the node always waits for
  the index work of a block before it accepts the block; see ``follow.py``).
- ``result`` re-raises what the job raised, in the caller's thread.
- ``close`` waits for a job still running, then stops the thread. Idempotent.

Why not ``concurrent.futures.ThreadPoolExecutor``: every ``submit`` builds a ``Future`` (a
``Condition`` over an ``RLock``), takes the pool's shutdown lock and probes its idle semaphore,
and ``result`` waits on that ``Condition``; all of it is Python code on the serial path of each
block, and an empty block is where the chain layer's own cost shows most against the bare
kernel (``bench/bench_chain.py``). Two ``queue.SimpleQueue`` objects do the same hand-off in C.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class AheadWorker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._busy or self._closed:
            raise RuntimeError("write-ahead worker: a job is still out, or the worker is closed")
        self._busy = True
        self._jobs.put((fn, args))

    def result(self) -> Any:
        ok, value = self._results.get()
        self._busy = False
        if not ok:
            raise value
        return value

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                self._results.put((True, fn(*args)))
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which re-raises it
                self._results.put((False, e))

    def close(self) -> None:
        if self._closed:
            return
        if self._busy:
            try:
                self.result()
            except BaseException:  # noqa: BLE001 - closing: the caller already has its error
                pass
        self._closed = True
        self._jobs.put(None)
        self._thread.join()
