"""The echo service's sans-IO core: replies matched by peer, nonce and payload; bounded table."""
from __future__ import annotations

import pytest

from eschaton.core.echo import MAX_PAYLOAD, Echoed, EchoError, Echoes

P, Q = b"p" * 32, b"q" * 32


def test_a_reply_matches_only_its_own_request() -> None:
    e = Echoes()
    n1 = e.request(P, b"one", now=10.0, timeout=5.0)
    n2 = e.request(Q, b"two", now=10.0, timeout=5.0)
    assert n1 != n2 and e.pending == 2
    assert e.on_reply(Q, n1, b"one", now=10.5) is None  # from another peer
    assert e.on_reply(P, n1, b"altered", now=10.5) is None  # payload changed
    assert e.on_reply(P, n1, b"one", now=10.5) == Echoed(n1, 0.5)
    assert e.on_reply(P, n1, b"one", now=10.6) is None  # repeated
    assert e.unmatched == 3 and e.pending == 1


def test_late_replies_are_dropped_and_the_table_is_bounded() -> None:
    e = Echoes(max_pending=2)
    n = e.request(P, b"", now=0.0, timeout=1.0)
    assert e.on_reply(P, n, b"", now=1.5) is None  # past its deadline
    e.request(P, b"", now=2.0, timeout=1.0)
    e.request(P, b"", now=2.0, timeout=1.0)
    with pytest.raises(EchoError, match="already waiting"):
        e.request(P, b"", now=2.5, timeout=1.0)
    e.request(P, b"", now=3.5, timeout=1.0)  # the two before expired meanwhile
    assert e.pending == 1
    with pytest.raises(EchoError, match="exceeds"):
        e.request(P, b"x" * (MAX_PAYLOAD + 1), now=4.0, timeout=1.0)


def test_payload_limit_is_the_tables() -> None:
    from eschaton.core.wire import BY_NAME

    for row in ("echo_request", "echo_reply"):
        field = BY_NAME[row].field("payload")
        assert field is not None and field.type.max_len == MAX_PAYLOAD
