"""Fuzz the decoders that face the network: only typed errors (``WireError``) may come out.

Hypothesis draws the base inputs (raw bytes, random bencode behind valid type ids, valid
encodings), and every example also decodes ``BATCH`` cheap byte-level mutations of its base
input made with a PRNG seeded by Hypothesis. Hypothesis' own generation costs milliseconds per
example, the decoders microseconds, so batching is what makes 100k+ inputs per decoder fit the
CI budget (CI=true: 2,000 examples x 64 = 128k inputs for the message decoder and for each
frame decoder; locally a few thousand).
"""
from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eschaton.core.link.beacon import make_beacon, parse_beacon
from eschaton.core.link.link import Link, LinkClosed, Role
from eschaton.core.wire import MESSAGES, WireError, bencode, decode_message, encode_message, make
from eschaton.core.wire.framing import (
    SerialDeframer,
    StreamDeframer,
    encode_serial_frame,
    encode_stream_frame,
)

from .helpers import eph, keys, pair, pump

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BATCH = 64
EXAMPLES = 2_000 if IN_CI else 80  # x (1 + BATCH) inputs per decoder
LINK_EXAMPLES = 1_000 if IN_CI else 100


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def mutations(data: bytes, seed: int, n: int = BATCH) -> list[bytes]:
    """``n`` variants of ``data``: bit flips, truncation, insertion, deletion, splices."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(6)
            pos = rng.randrange(len(d) + 1)
            if op == 0 and d:
                d[min(pos, len(d) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                del d[pos:]
            elif op == 2:
                d.insert(pos, rng.choice((0, 0x30, 0x3A, 0x64, 0x65, 0x69, 0x6C, 0xFF, rng.randrange(256))))
            elif op == 3 and d:
                del d[min(pos, len(d) - 1)]
            elif op == 4:
                d[pos:pos] = d[rng.randrange(len(d) + 1):][:rng.randrange(1, 9)]
            else:
                d[pos:pos + 2] = rng.randbytes(rng.randrange(3))
        out.append(bytes(d))
    return out


bvalues = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.sampled_from([b"nonce", b"code", b"message", b"channel_id", b"body",
                                       b"padding", b"features", b"name", b"version", b"x"])
                      | st.binary(max_size=6), inner, max_size=6),
    max_leaves=12,
)
type_ids = st.sampled_from([m.type_id for m in MESSAGES]) | st.integers(0, 0xFFFF)

VALID = [encode_message(make("ping", nonce=5)),
         encode_message(make("update", channel_id=bytes(32),
                             body=b'{"version":{"number":1,"balances":[1,2]},'
                                  b'"signature":{"$b":"' + b"00" * 64 + b'"}}')),
         encode_message(make("init", features=b"\x2a", name="n")),
         encode_message(make("open_channel", channel_id=b"\x01" * 32,
                             body=b'{"params":{"tariff":5},"inputs":[],"change":[],'
                                  b'"funding_locktime":3}'))]

structured = st.builds(lambda t, v: t.to_bytes(2, "big") + bencode.encode(v), type_ids, bvalues)
message_bases = st.one_of(st.binary(max_size=300), structured, st.sampled_from(VALID))
seeds = st.integers(0, 2**32)


def check_message(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except WireError:
        return
    assert encode_message(msg) == data  # whatever decodes is canonical


@fuzz_settings(EXAMPLES)
@given(message_bases, seeds)
def test_fuzz_message_decoder(base: bytes, seed: int) -> None:
    check_message(base)
    for data in mutations(base, seed):
        check_message(data)


@fuzz_settings(EXAMPLES // 4)
@given(st.binary(max_size=400) | st.builds(bencode.encode, bvalues), seeds)
def test_fuzz_bencode(base: bytes, seed: int) -> None:
    for data in [base, *mutations(base, seed)]:
        try:
            value = bencode.decode(data)
        except WireError:
            continue
        assert bencode.encode(value) == data


def drain(deframer: StreamDeframer | SerialDeframer) -> list[bytes]:
    frames = []
    for _ in range(10_000):
        try:
            f = deframer.next_frame()
        except WireError:
            if isinstance(deframer, StreamDeframer):
                return frames  # a bad length prefix breaks a byte stream for good
            continue
        if f is None:
            return frames
        frames.append(f)
    raise AssertionError("deframer does not make progress")


def feed_chunked(deframer: StreamDeframer | SerialDeframer, data: bytes, chunk: int) -> None:
    for i in range(0, len(data), chunk):
        deframer.feed(data[i:i + chunk])
        drain(deframer)


stream_bases = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(VALID), min_size=1, max_size=4).map(
        lambda ms: b"".join(encode_stream_frame(m) for m in ms)))
serial_bases = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(VALID), min_size=1, max_size=4).map(
        lambda ms: b"".join(encode_serial_frame(m) for m in ms)))


@fuzz_settings(EXAMPLES)
@given(stream_bases, seeds, st.integers(1, 64))
def test_fuzz_stream_deframer(base: bytes, seed: int, chunk: int) -> None:
    for data in [base, *mutations(base, seed)]:
        feed_chunked(StreamDeframer(), data, chunk)


@fuzz_settings(EXAMPLES)
@given(serial_bases, seeds, st.integers(1, 64))
def test_fuzz_serial_deframer(base: bytes, seed: int, chunk: int) -> None:
    for data in [base, *mutations(base, seed)]:
        d = SerialDeframer()
        feed_chunked(d, data, chunk)
        # After any garbage, a clean frame behind a delimiter still gets through.
        d.feed(b"\x00" + encode_serial_frame(b"sync"))
        assert drain(d)[-1:] == [b"sync"]


A, B = keys("alice"), keys("bob")
BEACON = make_beacon(B, urls=["tcp://10.0.0.1:9735"], ts_ms=1, seq=1, name="b")


@fuzz_settings(EXAMPLES // 4)
@given(st.binary(max_size=300) | st.just(BEACON), seeds)
def test_fuzz_beacon_parser(base: bytes, seed: int) -> None:
    for data in [base, *mutations(base, seed)]:
        try:
            parse_beacon(data)
        except WireError:
            pass


def only_events(events: list) -> None:
    for e in events:
        if isinstance(e, LinkClosed):
            assert e.error is not None


@fuzz_settings(LINK_EXAMPLES)
@given(st.binary(max_size=200))
def test_fuzz_link_handshake(frame: bytes) -> None:
    lb = Link(B, Role.RESPONDER, now=0, ephemeral=eph("b"))
    lb.start()
    only_events(lb.receive_frame(frame, 1.0))  # never raises


@fuzz_settings(LINK_EXAMPLES)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=3))
def test_fuzz_open_link(frames: list[bytes]) -> None:
    la, lb = pair(A, B)
    pump(la, lb)
    assert lb.is_open
    for f in frames:
        only_events(lb.receive_frame(f, 2.0))
    assert lb.is_closed  # no random frame authenticates
