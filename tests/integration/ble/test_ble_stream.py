"""The ``ble://`` transport between two host stacks in this process, each on its own virtual
controller in the relay process: framing across SDU boundaries, back-pressure by credits, bad
bytes on the channel, a missing adapter."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from eschaton.core.wire.errors import FrameError
from eschaton.net.transport import (
    FrameStream,
    TransportClosed,
    TransportError,
    TransportUnavailable,
    connect,
    listen,
)
from eschaton.net.transport.ble_l2cap import MTU, BleStream
from tests.integration.ble.conftest import Air, kernel_has_bluetooth

pytestmark = pytest.mark.timeout(60)


def _run(air: Air, body: Callable[[BleStream, BleStream], Awaitable[None]]) -> None:
    async def main() -> None:
        accepted: asyncio.Queue[FrameStream] = asyncio.Queue()
        done = asyncio.Event()

        async def on_stream(s: FrameStream) -> None:
            await accepted.put(s)
            await done.wait()

        listener = await listen(f"ble://{air.adapter(0)}", on_stream)
        addr = listener.url.split("/")[3].split("?")[0]
        dialled = await connect(f"ble://{air.adapter(1)}/{addr}")
        served = await asyncio.wait_for(accepted.get(), 10)
        assert isinstance(dialled, BleStream) and isinstance(served, BleStream)
        try:
            await body(dialled, served)
        finally:
            done.set()
            await dialled.close()
            await listener.close()

    asyncio.run(main())


def test_frames_of_every_size_cross_the_mtu(air: Air) -> None:
    async def body(d: BleStream, s: BleStream) -> None:
        assert d.mtu == MTU and s.mtu == MTU  # both ends offered MTU; each respects the other's
        sizes = [1, MTU - 7, MTU - 6, MTU - 5, MTU, MTU + 1, 3 * MTU, 65535]
        frames = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
        await d.write_frames(frames)  # one burst, cut into SDUs of at most the peer's MTU
        assert [await s.read_frame() for _ in frames] == frames
        for f in frames:
            await s.write_frame(f)
            assert await d.read_frame() == f

    _run(air, body)


def test_back_pressure_stops_the_writer_until_the_reader_reads(air: Air) -> None:
    async def body(d: BleStream, s: BleStream) -> None:
        frame = b"\x55" * 60_000
        frames = [frame] * 6  # 360 kB: more than the credits (32 KiB) and the buffer (64 KiB)
        writer = asyncio.ensure_future(d.write_frames(frames))
        for _ in range(200):
            if s._paused:  # the reader stopped granting credits
                break
            await asyncio.sleep(0.05)
        assert s._paused, "the receiving side never paused"
        await asyncio.sleep(0.3)
        assert not writer.done(), "the writer ran ahead of the reader"
        got = [await asyncio.wait_for(s.read_frame(), 20) for _ in frames]
        assert got == frames
        await asyncio.wait_for(writer, 20)

    _run(air, body)


def test_bad_bytes_on_the_channel_cost_one_frame(air: Air) -> None:
    async def body(d: BleStream, s: BleStream) -> None:
        d._channel.write(b"\x05garbage\x00")  # not a COBS + CRC frame
        await d.write_frame(b"after the noise")
        with pytest.raises(FrameError):
            await s.read_frame()
        assert await s.read_frame() == b"after the noise"

    _run(air, body)


def test_a_dropped_radio_link_closes_both_ends(air: Air) -> None:
    async def body(d: BleStream, s: BleStream) -> None:
        reader = asyncio.ensure_future(s.read_frame())
        await asyncio.sleep(0)
        assert air.drop() == 2  # one connection, seen by both controllers
        with pytest.raises(TransportClosed, match="disconnected"):
            await asyncio.wait_for(reader, 10)
        # The other end learns it from its own controller's event, which may come a moment later.
        with pytest.raises(TransportClosed, match="disconnected"):
            await asyncio.wait_for(d.read_frame(), 10)
        with pytest.raises(TransportClosed):
            await d.write_frame(b"too late")

    _run(air, body)


def test_no_adapter_is_a_one_line_error(air: Air) -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        with pytest.raises(TransportUnavailable, match="no Bluetooth adapter at") as exc:
            await listen(f"ble://tcp-client:127.0.0.1:{closed_port}", lambda s: asyncio.sleep(0))
        assert "\n" not in str(exc.value)
        if not kernel_has_bluetooth():
            with pytest.raises(TransportUnavailable, match="no Bluetooth adapter at 'hci-socket:0'"):
                await connect("ble://hci-socket:0/C1:00:00:00:00:09")
        # An adapter that works, a peer that is not there: a transient error, not a crash; and
        # the adapter still dials afterwards.
        with pytest.raises(TransportError, match="cannot connect: timeout"):
            await connect(f"ble://{air.adapter(1)}/C1:00:00:00:00:09", timeout=1.0)
        listener = await listen(f"ble://{air.adapter(0)}?address=C1:00:00:00:00:0A",
                                lambda s: asyncio.sleep(0))
        stream = await connect(f"ble://{air.adapter(1)}/C1:00:00:00:00:0A", timeout=5.0)
        await stream.close()
        await listener.close()

    asyncio.run(main())
