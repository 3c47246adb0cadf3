"""A hostile-traffic generator for loopback tests and the flood benchmark.

Three kinds of connection, each from its own loopback source address (127.0.0.2 and up, so the
legitimate peer on 127.0.0.1 is a different source):
- idle: connect and send nothing (held until the node's handshake deadline closes them);
- garbage: random bytes, half of them led by a 64 KiB length prefix (the node must refuse the
  frame without buffering it);
- strangers: complete Noise handshakes with fresh random keys, then stay linked if let in.
Everything runs in one background thread with its own event loop, bounded in count and time.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from eschaton.core.link.identity import NodeId, NodeKeys
from eschaton.errors import EschatonError
from eschaton.net.session import dial


@dataclass
class FloodStats:
    opened: int = 0
    """TCP connections the kernel accepted for us."""
    closed_by_node: int = 0
    """... that the node closed (EOF or reset) while we held them."""
    refused: int = 0
    """connect() failed (backlog full: the node is not accepting)."""
    strangers_linked: int = 0
    strangers_refused: int = 0
    errors: list[str] = field(default_factory=list)


def _source(i: int) -> str:
    return f"127.0.{2 + i // 250}.{2 + i % 250}"


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: FloodStats,
                hold: float) -> None:
    try:
        data = await asyncio.wait_for(reader.read(1 << 16), hold)
        while data:
            data = await asyncio.wait_for(reader.read(1 << 16), hold)
        stats.closed_by_node += 1
    except TimeoutError:
        pass  # still open when we gave up
    except (ConnectionError, OSError):
        stats.closed_by_node += 1  # reset: closed with our garbage unread
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _connect(host: str, port: int, i: int, garbage: bool, stats: FloodStats, hold: float) -> None:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(_source(i), 0)), 3.0)
    except (TimeoutError, OSError):
        stats.refused += 1
        return
    stats.opened += 1
    if garbage:
        junk = (b"\xff\xff" if i % 2 else b"") + os.urandom(60_000 if i % 2 else 300)
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(junk)
    await _hold(reader, writer, stats, hold)


async def _stranger(url: str, target: NodeId, stats: FloodStats, hold: float) -> None:
    keys = NodeKeys.generate(secrets.token_bytes)
    try:
        session, task = await dial(url, keys, target, timeout=5.0)
    except (EschatonError, OSError):
        stats.strangers_refused += 1
        return
    stats.strangers_linked += 1
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, EschatonError):
        await asyncio.wait_for(asyncio.shield(task), hold)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, EschatonError):
        await task


async def flood(host: str, port: int, target: NodeId, *, idle: int, garbage: int,
                strangers: int, hold: float = 8.0, stats: FloodStats | None = None) -> FloodStats:
    stats = stats or FloodStats()
    url = f"tcp://{host}:{port}"
    jobs: list[Any] = []
    for i in range(idle + garbage):
        jobs.append(_connect(host, port, i, i >= idle, stats, hold))
    jobs += [_stranger(url, target, stats, hold) for _ in range(strangers)]
    await asyncio.gather(*jobs)
    return stats


class FloodThread:
    """Run ``flood(...)`` rounds in a thread until ``stop()`` (or ``rounds`` are done)."""

    def __init__(self, host: str, port: int, target: NodeId, *, rounds: int = 1000, **kw: Any) -> None:
        self.stats = FloodStats()
        self._args = (host, port, target)
        self._kw = kw
        self._rounds = rounds
        self._stop = threading.Event()
        self.rounds_done = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> FloodThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        async def main() -> None:
            while not self._stop.is_set() and self.rounds_done < self._rounds:
                await flood(*self._args, stats=self.stats, **self._kw)
                self.rounds_done += 1

        try:
            asyncio.run(main())
        except Exception as e:  # reported to the test through stats.errors
            self.stats.errors.append(repr(e))

    def stop(self, timeout: float = 30.0) -> FloodStats:
        self._stop.set()
        self._thread.join(timeout)
        return self.stats
