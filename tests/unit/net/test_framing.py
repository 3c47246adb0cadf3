"""Frame codecs: length prefix for streams, COBS + CRC-32 for serial lines."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.core.wire.errors import CrcError, FrameError
from eschaton.core.wire.framing import (
    SerialDeframer,
    StreamDeframer,
    cobs_decode,
    cobs_encode,
    encode_serial_frame,
    encode_stream_frame,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data
    assert len(enc) <= len(data) + len(data) // 254 + 1


@pytest.mark.parametrize("data,enc", [
    (b"", b"\x01"), (b"\x00", b"\x01\x01"), (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"), (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
])
def test_cobs_vectors(data: bytes, enc: bytes) -> None:
    assert cobs_encode(data) == enc
    assert cobs_decode(enc) == data


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.integers(1, 50))
def test_stream_frames_survive_any_chunking(frames: list[bytes], chunk: int) -> None:
    wire = b"".join(encode_stream_frame(f) for f in frames)
    d = StreamDeframer()
    out = []
    for i in range(0, len(wire), chunk):
        d.feed(wire[i:i + chunk])
        while (f := d.next_frame()) is not None:
            out.append(f)
    assert out == frames


def test_stream_zero_length_breaks_the_stream() -> None:
    d = StreamDeframer()
    d.feed(b"\x00\x00abc")
    for _ in range(2):
        with pytest.raises(FrameError):
            d.next_frame()


def test_serial_corruption_is_detected_and_stream_resynchronises() -> None:
    frames = [b"first frame", b"second \x00 frame", b"third"]
    wire = [encode_serial_frame(f) for f in frames]
    bad = bytearray(wire[1])
    bad[3] ^= 0x04  # one flipped bit on the line
    d = SerialDeframer()
    d.feed(b"\x00\x00" + wire[0] + bytes(bad) + wire[2])
    assert d.next_frame() == b"first frame"
    with pytest.raises(CrcError):
        d.next_frame()
    assert d.next_frame() == b"third"
    assert d.next_frame() is None
    assert d.crc_errors == 1


def test_serial_noise_and_overlong_frames_are_dropped() -> None:
    d = SerialDeframer(max_frame=16)
    d.feed(b"\x05ab\x00")  # COBS code runs past the end
    with pytest.raises(FrameError):
        d.next_frame()
    d.feed(encode_serial_frame(b"x" * 40))
    with pytest.raises(FrameError):
        d.next_frame()
    d.feed(encode_serial_frame(b"ok"))
    assert d.next_frame() == b"ok"
