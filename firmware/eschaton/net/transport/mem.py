"""``mem://name``: in-process frame pipes for unit tests and single-process simulations.

A listener registers ``name`` in a process-wide table; ``connect`` creates a crossed pair of
queues. They are unbounded (no back-pressure): this transport is for tests and simulations.
"""
from __future__ import annotations

import asyncio

from eschaton.net.transport.base import (
    BadTransportUrl,
    FrameStream,
    Listener,
    OnStream,
    TransportClosed,
    TransportError,
    TransportUrl,
    register_scheme,
)

_EOF = b""  # frames are never empty, so the empty frame marks the end


class MemStream(FrameStream):
    def __init__(self, rx: asyncio.Queue[bytes], tx: asyncio.Queue[bytes], peer: str) -> None:
        self._rx = rx
        self._tx = tx
        self._closed = False
        self._eof = False
        self.peer = peer

    async def read_frame(self) -> bytes:
        if self._eof or self._closed:
            raise TransportClosed(f"{self.peer}: closed")
        frame = await self._rx.get()
        if frame == _EOF:
            self._eof = True
            raise TransportClosed(f"{self.peer}: end of stream")
        return frame

    async def write_frame(self, frame: bytes) -> None:
        if self._closed or self._eof:
            raise TransportClosed(f"{self.peer}: closed")
        if not frame:
            raise TransportError("empty frames are not allowed")
        await self._tx.put(bytes(frame))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._tx.put_nowait(_EOF)
            self._rx.put_nowait(_EOF)  # wake our own pending reader


class MemListener(Listener):
    def __init__(self, name: str, on_stream: OnStream) -> None:
        self.url = f"mem://{name}"
        self.name = name
        self.on_stream = on_stream
        self.tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        if _LISTENERS.get(self.name) is self:
            del _LISTENERS[self.name]


_LISTENERS: dict[str, MemListener] = {}


def _name(url: TransportUrl) -> str:
    name = url.host or url.path.lstrip("/")
    if not name:
        raise BadTransportUrl(f"{url.url}: needs a name, e.g. mem://node-a")
    return name


class MemTransport:
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream:
        listener = _LISTENERS.get(_name(url))
        if listener is None:
            raise TransportError(f"{url.url}: nobody listening")
        a_to_b: asyncio.Queue[bytes] = asyncio.Queue()
        b_to_a: asyncio.Queue[bytes] = asyncio.Queue()
        ours = MemStream(b_to_a, a_to_b, listener.url)
        theirs = MemStream(a_to_b, b_to_a, f"{listener.url}#client")

        async def serve() -> None:
            try:
                await listener.on_stream(theirs)
            finally:
                await theirs.close()

        task = asyncio.get_running_loop().create_task(serve())
        listener.tasks.add(task)
        task.add_done_callback(listener.tasks.discard)
        return ours

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener:
        name = _name(url)
        if name in _LISTENERS:
            raise TransportError(f"{url.url}: already listening")
        listener = MemListener(name, on_stream)
        _LISTENERS[name] = listener
        return listener


register_scheme("mem", MemTransport())
