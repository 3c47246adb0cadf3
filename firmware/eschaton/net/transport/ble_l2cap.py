"""The ``ble://`` implementation: frames over an L2CAP LE credit-based channel (bumble's host
stack; see ``net/blehost.py`` for why bumble). Loaded by ``net/transport/ble.py`` on first use.

The channel carries the same bytes as ``serial://`` (COBS + CRC-32 frames,
``core/wire/framing``): the L2CAP channel is reliable and ordered, so the CRC never fires in
practice, but one framing for both byte-stream links keeps one decoder and lets a serial-to-BLE
bridge pass bytes through. The bytes are cut into SDUs no larger than the MTU the peer
announced (``core/link/ble.segments``). Back-pressure is the channel's credits: each write
waits (``drain``) until the peer has granted credits for everything queued; on the receiving
side, reading pauses (no credits returned) while more than ``_RX_HIGH`` bytes wait unread.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from bumble import l2cap
from bumble.core import BaseBumbleError
from bumble.core import ConnectionError as BumbleConnectionError
from bumble.hci import HCI_Error

from eschaton.core.link.ble import (
    parse_ble_url,
    plain_advert,
    segments,
)
from eschaton.core.wire.framing import SerialDeframer, encode_serial_frame
from eschaton.net import blehost
from eschaton.net.transport.base import (
    FrameStream,
    Listener,
    OnStream,
    TransportClosed,
    TransportError,
    TransportUnavailable,
    TransportUrl,
)

log = logging.getLogger(__name__)
MTU = 512  # our receive SDU size: a few Noise frames at once, small enough for a Pi's RAM
CREDITS = 64
_RX_HIGH = 64 * 1024  # bytes buffered unread before we stop granting credits
_RELISTEN_DELAY = 1.0  # s between attempts to reopen a lost adapter
_BUMBLE_ERRORS = (BaseBumbleError, HCI_Error, BumbleConnectionError, OSError, asyncio.TimeoutError)


class BleStream(FrameStream):
    def __init__(self, channel: Any, peer: str) -> None:
        self._channel = channel
        self._deframer = SerialDeframer()
        self._buffered = 0
        self._paused = False
        self._closed = False
        self._lost = ""
        self._wake = asyncio.Event()
        self.peer = peer
        self.source = peer
        channel.sink = self._on_sdu
        channel.on("close", lambda: self._on_lost("channel closed"))
        channel.connection.on("disconnection", lambda reason: self._on_lost(
            f"disconnected (reason 0x{int(reason):02x})"))

    @property
    def mtu(self) -> int:
        """The largest SDU the peer accepts (negotiated when the channel opened)."""
        return int(self._channel.peer_mtu)

    def _on_sdu(self, sdu: bytes) -> None:
        self._deframer.feed(sdu)
        self._buffered += len(sdu)
        if self._buffered > _RX_HIGH and not self._paused:
            self._paused = True
            self._channel.pause_reading()
        self._wake.set()

    def _on_lost(self, why: str) -> None:
        if not self._lost:
            self._lost = why
        self._wake.set()

    async def read_frame(self) -> bytes:
        while True:
            frame = self._deframer.next_frame()  # may raise CrcError/FrameError for one frame
            if frame is not None:
                self._buffered = max(0, self._buffered - len(frame))
                return frame
            self._buffered = 0  # everything fed is now either returned or a partial frame
            if self._paused:
                self._paused = False
                self._channel.resume_reading()
            if self._closed or self._lost:
                raise TransportClosed(f"{self.peer}: {self._lost or 'closed'}")
            self._wake.clear()
            await self._wake.wait()

    async def write_frame(self, frame: bytes) -> None:
        await self.write_frames((frame,))

    async def write_frames(self, frames: Sequence[bytes]) -> None:
        if self._closed or self._lost:
            raise TransportClosed(f"{self.peer}: {self._lost or 'closed'}")
        data = b"".join(encode_serial_frame(f) for f in frames)
        try:
            for sdu in segments(data, self.mtu):
                self._channel.write(sdu)
            await self._drain()
        except _BUMBLE_ERRORS as exc:
            raise TransportClosed(f"{self.peer}: {exc}") from None

    async def _drain(self) -> None:
        # drain() waits for credits; a link lost meanwhile never grants them, so wait for either.
        drain = asyncio.ensure_future(self._channel.drain())
        lost = asyncio.ensure_future(self._wait_lost())
        try:
            await asyncio.wait({drain, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (drain, lost):
                t.cancel()
        if self._lost or self._closed:
            raise TransportClosed(f"{self.peer}: {self._lost or 'closed'}")

    async def _wait_lost(self) -> None:
        while not (self._lost or self._closed):
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if not self._lost:
            # The LE connection itself: one link per connection, and a central that leaves it
            # open would keep the peer from advertising (a controller has few connections).
            with contextlib.suppress(*_BUMBLE_ERRORS):
                await asyncio.wait_for(self._channel.connection.disconnect(), 2.0)


class BleListener(Listener):
    def __init__(self, url: str, task: asyncio.Task[None]) -> None:
        self.url = url
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _spec(psm: int) -> l2cap.LeCreditBasedChannelSpec:
    # 64 credits of one 512-byte PDU each: 32 KiB in flight per direction, plenty for frames of
    # a few hundred bytes, and a bound on what a peer can make us buffer.
    return l2cap.LeCreditBasedChannelSpec(psm=psm, mtu=MTU, mps=MTU, max_credits=CREDITS)


async def _acquire(url: TransportUrl, adapter: str, own: str | None) -> blehost.BleHost:
    try:
        return await blehost.acquire(adapter, address=own)
    except blehost.BleUnavailable as exc:
        raise TransportUnavailable(f"{url.url}: {exc}") from None
    except TimeoutError:
        raise TransportUnavailable(f"{url.url}: the Bluetooth adapter did not answer") from None


async def connect(url: TransportUrl, *, timeout: float) -> FrameStream:
    u = parse_ble_url(url, dial=True)
    adapter, peer, psm, own = u.adapter, u.peer, u.psm, u.own
    assert peer is not None
    host = await _acquire(url, adapter, own)
    connection = None
    try:
        # Our own deadline too: a controller that never reports the cancelled connection
        # (as the spec says it must) would otherwise keep this dial waiting for ever.
        connection = await asyncio.wait_for(host.connect(peer, timeout=timeout), timeout + 2)
        channel = await asyncio.wait_for(connection.create_l2cap_channel(spec=_spec(psm)),
                                         timeout)
    except _BUMBLE_ERRORS as exc:
        if connection is not None:
            with contextlib.suppress(*_BUMBLE_ERRORS):
                await asyncio.wait_for(connection.disconnect(), 2.0)
        raise TransportError(f"{url.url}: cannot connect: {str(exc) or 'timeout'}") from None
    return BleStream(channel, f"ble://{peer}")


async def listen(url: TransportUrl, on_stream: OnStream) -> Listener:
    u = parse_ble_url(url, dial=False)
    adapter, psm, own = u.adapter, u.psm, u.own
    host = await _acquire(url, adapter, own)  # fail at once when there is no adapter
    handlers: set[asyncio.Task[None]] = set()

    async def serve(stream: BleStream) -> None:
        try:
            await on_stream(stream)
        finally:
            await stream.close()

    def on_channel(channel: Any) -> None:
        peer = str(channel.connection.peer_address).split("/")[0]
        task = asyncio.get_running_loop().create_task(serve(BleStream(channel, f"ble://{peer}")))
        handlers.add(task)
        task.add_done_callback(handlers.discard)

    async def run(host: blehost.BleHost) -> None:
        while True:
            try:
                host.device.create_l2cap_server(spec=_spec(psm), handler=on_channel)
                if host.advert is None:  # BLE discovery may already advertise more
                    await host.advertise(plain_advert())
            except _BUMBLE_ERRORS as exc:
                log.warning("%s: cannot listen: %s", url.url, exc)
            await asyncio.shield(host.lost)
            # The adapter went away (reset, unplugged, virtual controller restarted): every
            # link on it is gone; open it again and listen on the new one.
            log.warning("%s: Bluetooth adapter lost; reopening", url.url)
            while True:
                await asyncio.sleep(_RELISTEN_DELAY)
                try:
                    host = await blehost.acquire(adapter, address=own)
                    break
                except (blehost.BleUnavailable, TimeoutError) as exc:
                    log.info("%s: cannot reopen yet: %s", url.url, exc)

    bound = f"ble://{adapter}/{host.address}?psm={psm}"
    return BleListener(bound, asyncio.get_running_loop().create_task(run(host)))
