"""``serial:///dev/ttyX?baud=115200``: COBS + CRC-32 frames over a serial line (pyserial).

A serial line has no connections: ``connect`` opens the device, and ``listen`` opens it and hands
the one stream to ``on_stream``. Which end starts the Noise handshake is configuration.
Corrupted frames raise ``CrcError`` from ``read_frame`` and the stream stays usable (COBS
resynchronises at the next 0x00); the link above closes anyway, because a lost frame breaks its
nonce sequence, and the node redials.

pyserial has no asyncio API (pyserial-asyncio is not a pinned dependency), so the port's file
descriptor is driven with ``loop.add_reader``/``add_writer`` in non-blocking mode.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import serial

from eschaton.core.wire.framing import SerialDeframer, encode_serial_frame
from eschaton.errors import EschatonError
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

DEFAULT_BAUD = 115200
RELISTEN_DELAY = 0.2  # seconds between the end of one session on a line and listening again
log = logging.getLogger(__name__)


class SerialStream(FrameStream):
    def __init__(self, port: serial.Serial, peer: str) -> None:
        self._port = port
        self._fd: int = port.fileno()
        os.set_blocking(self._fd, False)
        self._deframer = SerialDeframer()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.peer = peer

    @property
    def crc_errors(self) -> int:
        """Frames dropped because the line corrupted them."""
        return self._deframer.crc_errors

    @property
    def raw(self) -> serial.Serial:
        """The pyserial port (for tests that need to put raw bytes on the line)."""
        return self._port

    async def _wait(self, add: str, remove: str) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiter = fut

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        getattr(self._loop, add)(self._fd, ready)
        try:
            await fut
        finally:
            getattr(self._loop, remove)(self._fd)

    async def read_frame(self) -> bytes:
        woken = False
        while True:
            frame = self._deframer.next_frame()  # may raise CrcError/FrameError for one frame
            if frame is not None:
                return frame
            if self._closed:
                raise TransportClosed(f"{self.peer}: closed")
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                data = b""
            except OSError as exc:  # EIO when the other end of a pty goes away
                raise TransportClosed(f"{self.peer}: {exc}") from None
            if data:
                woken = False
                self._deframer.feed(data)
                continue
            # pyserial sets VMIN=0/VTIME=0, so an idle tty reads b"" rather than EAGAIN. Only
            # "readable, yet nothing to read" means the line hung up.
            if woken:
                raise TransportClosed(f"{self.peer}: line hung up")
            await self._wait("add_reader", "remove_reader")
            woken = True

    async def write_frame(self, frame: bytes) -> None:
        if self._closed:
            raise TransportClosed(f"{self.peer}: closed")
        await self.write_raw(encode_serial_frame(frame))

    async def write_raw(self, data: bytes) -> None:
        """Put bytes on the line as they are (framing already applied)."""
        view = memoryview(data)
        while view:
            if self._closed:
                raise TransportClosed(f"{self.peer}: closed")
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                await self._wait("add_writer", "remove_writer")
                continue
            except OSError as exc:
                raise TransportClosed(f"{self.peer}: {exc}") from None
            view = view[n:]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)  # wake a pending reader/writer: it sees _closed
            with contextlib.suppress(OSError):
                self._port.close()


class SerialListener(Listener):
    def __init__(self, url: str, task: asyncio.Task[None]) -> None:
        self.url = url
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _open(url: TransportUrl) -> SerialStream:
    if not url.path:
        raise BadTransportUrl(f"{url.url}: needs a device path, e.g. serial:///dev/ttyAMA0")
    try:
        baud = int(url.query.get("baud", DEFAULT_BAUD))
    except ValueError:
        raise BadTransportUrl(f"{url.url}: baud must be an integer") from None
    try:
        port = serial.Serial(url.path, baudrate=baud, timeout=0, write_timeout=0)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise TransportError(f"{url.url}: cannot open: {exc}") from None
    return SerialStream(port, url.url)


class SerialTransport:
    async def connect(self, url: TransportUrl, *, timeout: float) -> FrameStream:
        return _open(url)

    async def listen(self, url: TransportUrl, on_stream: OnStream) -> Listener:
        stream = _open(url)  # fail at once on a missing device or a bad URL

        async def run() -> None:
            current: SerialStream | None = stream
            while True:
                if current is not None:
                    try:
                        await on_stream(current)
                    except EschatonError as exc:
                        log.info("%s: session ended: %s", url.url, exc)
                    finally:
                        await current.close()
                # A serial line has no accept(): it is point to point, and after one session ends
                # (the peer restarted, the line was cut) we listen on the same device again, so the
                # peer can redial. A device that vanished (USB adapter unplugged) is retried.
                await asyncio.sleep(RELISTEN_DELAY)
                try:
                    current = _open(url)
                except TransportError as exc:
                    log.info("%s: cannot reopen yet: %s", url.url, exc)
                    current = None

        return SerialListener(url.url, asyncio.get_running_loop().create_task(run()))


register_scheme("serial", SerialTransport())
