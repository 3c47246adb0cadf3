"""A link over a real serial line (a socat pty pair): handshake, messages, and CRC detection of a
byte corrupted on the line."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from eschaton.core.link.errors import PeerSentError
from eschaton.core.wire import CrcError, Message, make
from eschaton.core.wire.framing import encode_serial_frame
from eschaton.net.identity import load_or_create_identity
from eschaton.net.session import Session, dial, serve
from eschaton.net.transport import connect
from tests.conftest import need_tool
from tests.routes import Recorder, router

pytestmark = [pytest.mark.pty, pytest.mark.timeout(60)]


@pytest.fixture
def pty_pair(tmp_path: Path):
    socat = need_tool("socat")
    x, y = tmp_path / f"x-{uuid.uuid4().hex[:6]}", tmp_path / f"y-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen([socat, "-d", "-d", f"pty,raw,echo=0,link={x}",
                             f"pty,raw,echo=0,link={y}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (x.exists() and y.exists()):
            assert proc.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not create the ptys"
            time.sleep(0.02)
        yield x, y
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_raw_serial_frames_and_crc(pty_pair) -> None:
    x, y = pty_pair

    async def main() -> None:
        a = await connect(f"serial://{x}?baud=115200")
        b = await connect(f"serial://{y}?baud=115200")
        await a.write_frame(b"hello \x00 serial")
        assert await b.read_frame() == b"hello \x00 serial"
        good = encode_serial_frame(b"payload")
        bad = bytearray(good)
        bad[4] ^= 0x10  # one corrupted byte on the line
        await a.write_raw(bytes(bad) + encode_serial_frame(b"after"))
        with pytest.raises(CrcError):
            await b.read_frame()
        assert await b.read_frame() == b"after"  # COBS resynchronised at the delimiter
        assert b.crc_errors == 1
        await a.close()
        await b.close()

    asyncio.run(main())


def test_link_over_serial_and_corruption_closes_it(pty_pair, tmp_path: Path) -> None:
    x, y = pty_pair

    async def main() -> None:
        ka = load_or_create_identity(tmp_path / "a")
        kb = load_or_create_identity(tmp_path / "b")
        accepted: list[Session] = []
        # B answers on its end of the line and accepts only A (a point-to-point cable).
        recorder = Recorder("channel")
        listener = await serve(f"serial://{y}?baud=115200", kb, expect=ka.node_id,
                               router=router(recorder), on_session=accepted.append)
        session, task = await dial(f"serial://{x}?baud=115200", ka, kb.node_id,
                                   router=router(Recorder("channel")))
        assert session.remote == kb.node_id
        for v in range(5):
            await session.send_message("update", channel_id=bytes(32), body=_body(v))
        assert await session.ping() < 5  # the pong follows the updates, so they all arrived
        served = accepted[0]
        assert [_version(m) for m in recorder.got] == list(range(5))
        # Now the line corrupts one byte of the next frame.
        session.link.send(_update(99))
        frame = session.link.data_to_send()[0]
        wire = bytearray(encode_serial_frame(frame))
        wire[len(wire) // 2] ^= 0x01
        await session.stream.write_raw(bytes(wire))
        closed = await asyncio.wait_for(served.closed, 10)
        assert isinstance(closed.error, CrcError), closed
        assert served.stream.crc_errors == 1
        assert 99 not in [_version(m) for m in recorder.got]
        ev = await asyncio.wait_for(task, 10)
        assert isinstance(ev.error, PeerSentError) and "CRC" in str(ev.error)  # B told A why
        await listener.close()

    asyncio.run(main())


def _body(version: int) -> bytes:
    body = {"version": {"number": version, "balances": [10, 20]}, "signature": {"$b": "00" * 64}}
    return json.dumps(body).encode()


def _update(version: int) -> Message:
    return make("update", channel_id=bytes(32), body=_body(version))


def _version(msg: Message) -> int:
    n = json.loads(msg.get_bytes("body"))["version"]["number"]
    assert isinstance(n, int)
    return n


def test_serial_device_missing_is_a_transport_error(tmp_path: Path) -> None:
    from eschaton.net.transport import TransportError

    async def main() -> None:
        with pytest.raises(TransportError, match="cannot open"):
            await connect(f"serial://{tmp_path}/no-such-tty")

    asyncio.run(main())
    assert not os.path.exists(tmp_path / "no-such-tty")
