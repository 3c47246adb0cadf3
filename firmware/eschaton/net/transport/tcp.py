"""``tcp://host:port``: length-prefixed frames over TCP, on any IP interface (Ethernet, Wi-Fi,
bat0 alike). Listening on port 0 picks a free port; ``Listener.url`` reports it.

The listener runs its own accept loop rather than ``asyncio.start_server``: when the process is
out of file descriptors (or the kernel out of buffers), asyncio logs a full traceback for every
failed ``accept`` and retries after a fixed second, hundreds of lines a second under a flood.
Here such a failure is an expected condition: one log line per interval with a count, and an
accept back-off that doubles up to ``_ACCEPT_BACKOFF_MAX`` so the loop does not spin while
connections wait in the kernel's backlog.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Sequence
from typing import Any

from eschaton.core.wire.framing import StreamDeframer, encode_stream_frame
from eschaton.net.ratelog import RateLimitedLog
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
_ACCEPT_BACKOFF_MIN = 0.05
_ACCEPT_BACKOFF_MAX = 1.0
# Out of a resource: wait for connections to close. Anything else: the same, it is rare.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_accept_log = RateLimitedLog(log)


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
        self.source = str(peer[0]) if peer else "?"

    async def read_frame(self) -> bytes:
        self._deframer.max_frame = self.max_frame
        while True:
            frame = self._deframer.next_frame()
            if frame is not None:
                return frame
            if self._closed:
                raise TransportClosed("stream closed")
            try:
                # While the handshake allows only small frames, read no more than one: a
                # stranger's garbage is never copied into a large buffer.
                data = await self._reader.read(min(_READ_CHUNK, self.max_frame + 2))
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
    def __init__(self, sock: socket.socket, url: str, on_stream: OnStream) -> None:
        self._sock = sock
        self.url = url
        self._on_stream = on_stream
        self._handlers: set[asyncio.Task[None]] = set()  # strong refs until each one ends
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())
        self.accept_failures = 0
        """``accept`` calls that failed (EMFILE and the like) since start."""

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # the peer gave up before we accepted: nothing to do
            except OSError as exc:
                self.accept_failures += 1
                backoff = min(max(backoff * 2, _ACCEPT_BACKOFF_MIN), _ACCEPT_BACKOFF_MAX)
                what = "out of resources" if exc.errno in _RESOURCE_ERRNOS else "failed"
                _accept_log.note(f"accept {what}",
                                 f"{self.url}: accept {what}: {exc.strerror or exc}; "
                                 f"pausing accepts up to {_ACCEPT_BACKOFF_MAX:g} s")
                await asyncio.sleep(backoff)
                continue
            backoff = 0.0
            task = loop.create_task(self._serve(conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError as exc:  # e.g. EMFILE while setting up the transport
            conn.close()
            _accept_log.note("setup failed", f"{self.url}: dropped a connection: {exc.strerror or exc}")
            return
        stream = TcpStream(reader, writer)
        try:
            await self._on_stream(stream)
        finally:
            await stream.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()


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
        host = url.host or "0.0.0.0"
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _name, addr = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise TransportError(f"{url.url}: cannot listen: {exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(f"{url.url}: cannot listen: {exc}") from None
        bound: Any = sock.getsockname()
        return TcpListener(sock, f"tcp://{_host(bound[0])}:{bound[1]}", on_stream)


register_scheme("tcp", TcpTransport())
