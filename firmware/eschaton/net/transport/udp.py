"""``udp://host:port``: one frame per datagram.

Fits beacons and other low-rate, loss-tolerant traffic. A Noise link over UDP dies on the first
lost or reordered datagram (its nonces are implicit counters), so links use ``tcp://`` or
``serial://``; discovery (``eschaton.net.discovery``) owns its own broadcast socket.
``listen`` demultiplexes by source address: one stream per remote ``ip:port``.
"""
from __future__ import annotations

import asyncio
from typing import Any

from eschaton.net.transport.base import (
    FrameStream,
    Listener,
    OnStream,
    TransportClosed,
    TransportError,
    TransportUrl,
    register_scheme,
)

_MAX_DATAGRAM = 65507


class UdpStream(FrameStream):
    def __init__(self, transport: asyncio.DatagramTransport, addr: Any, peer: str,
                 owned: bool) -> None:
        self._transport = transport
        self._addr = addr
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(1024)
        self._closed = False
        self._owned = owned  # a client stream owns its socket; a listener's streams share one
        self.peer = peer

    def _deliver(self, data: bytes) -> None:
        if data and not self._queue.full():  # drop when the reader lags: it is UDP
            self._queue.put_nowait(data)

    async def read_frame(self) -> bytes:
        if self._closed:
            raise TransportClosed(f"{self.peer}: closed")
        data = await self._queue.get()
        if data is None:
            raise TransportClosed(f"{self.peer}: closed")
        return data

    async def write_frame(self, frame: bytes) -> None:
        if self._closed or self._transport.is_closing():
            raise TransportClosed(f"{self.peer}: closed")
        if len(frame) > _MAX_DATAGRAM:
            raise TransportError(f"{self.peer}: frame of {len(frame)} bytes too big for UDP")
        self._transport.sendto(frame, self._addr)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._queue.full():
                self._queue.put_nowait(None)
            if self._owned:
                self._transport.close()


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)


class UdpListener(Listener):
    def __init__(self, transport: asyncio.DatagramTransport, url: str) -> None:
        self._transport = transport
        self.url = url

    async def close(self) -> None:
        self._transport.close()


class UdpTransport:
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream:
        port = url.require_port()
        loop = asyncio.get_running_loop()
        holder: list[UdpStream] = []
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Proto(lambda data, addr: holder[0]._deliver(data) if holder else None),
                remote_addr=(url.host, port))
        except OSError as exc:
            raise TransportError(f"{url.url}: {exc}") from None
        stream = UdpStream(transport, None, url.url, owned=True)
        holder.append(stream)
        return stream

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener:
        port = url.require_port(allow_zero=True)
        loop = asyncio.get_running_loop()
        streams: dict[Any, UdpStream] = {}
        tasks: set[asyncio.Task[None]] = set()
        box: list[asyncio.DatagramTransport] = []

        def on_datagram(data: bytes, addr: Any) -> None:
            stream = streams.get(addr)
            if stream is None:
                stream = UdpStream(box[0], addr, f"udp://{addr[0]}:{addr[1]}", owned=False)
                streams[addr] = stream

                async def serve(s: UdpStream = stream, a: Any = addr) -> None:
                    try:
                        await on_stream(s)
                    finally:
                        await s.close()
                        streams.pop(a, None)

                task = loop.create_task(serve())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            stream._deliver(data)

        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Proto(on_datagram), local_addr=(url.host or "0.0.0.0", port))
        except OSError as exc:
            raise TransportError(f"{url.url}: {exc}") from None
        box.append(transport)
        bound = transport.get_extra_info("sockname")
        return UdpListener(transport, f"udp://{bound[0]}:{bound[1]}")


register_scheme("udp", UdpTransport())
