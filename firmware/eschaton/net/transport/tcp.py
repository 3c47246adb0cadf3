"""``tcp://host:port``: length-prefixed frames over TCP, on any IP interface (Ethernet, Wi-Fi,
bat0 alike). Listening on port 0 picks a free port; ``Listener.url`` reports it."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence

from eschaton.core.wire.framing import StreamDeframer, encode_stream_frame
from eschaton.net.transport.base import (
    FrameStream,
    Listener,
    OnStream,
    TransportClosed,
    TransportError,
    TransportUrl,
    register_scheme,
)

log = logging.getLogger(__name__)
_READ_CHUNK = 65536


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TcpStream(FrameStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._deframer = StreamDeframer()
        self._closed = False
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Frames are small and latency matters (pings, channel updates): no Nagle delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        self.peer = f"tcp://{_host(peer[0])}:{peer[1]}" if peer else "tcp://?"

    async def read_frame(self) -> bytes:
        while True:
            frame = self._deframer.next_frame()
            if frame is not None:
                return frame
            if self._closed:
                raise TransportClosed("stream closed")
            try:
                data = await self._reader.read(_READ_CHUNK)
            except (ConnectionError, OSError) as exc:
                raise TransportClosed(f"{self.peer}: {exc}") from None
            if not data:
                raise TransportClosed(f"{self.peer}: end of stream")
            self._deframer.feed(data)

    async def write_frame(self, frame: bytes) -> None:
        await self.write_frames((frame,))

    async def write_frames(self, frames: Sequence[bytes]) -> None:
        # One write and one drain for a burst: a pipelining channel sends many small frames.
        if self._closed or self._writer.is_closing():
            raise TransportClosed(f"{self.peer}: closed")
        try:
            self._writer.write(b"".join(encode_stream_frame(f) for f in frames))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise TransportClosed(f"{self.peer}: {exc}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class TcpListener(Listener):
    def __init__(self, server: asyncio.Server, url: str) -> None:
        self._server = server
        self.url = url

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


class TcpTransport:
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream:
        port = url.require_port()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(url.host, port), timeout)
        except (TimeoutError, OSError) as exc:
            raise TransportError(f"{url.url}: cannot connect: {exc or 'timeout'}") from None
        return TcpStream(reader, writer)

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener:
        port = url.require_port(allow_zero=True)

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            stream = TcpStream(reader, writer)
            try:
                await on_stream(stream)
            finally:
                await stream.close()

        try:
            server = await asyncio.start_server(accepted, url.host or "0.0.0.0", port,
                                                reuse_address=True)
        except OSError as exc:
            raise TransportError(f"{url.url}: cannot listen: {exc}") from None
        bound = server.sockets[0].getsockname()
        return TcpListener(server, f"tcp://{_host(bound[0])}:{bound[1]}")


register_scheme("tcp", TcpTransport())
