"""Chain announcements: signed by the announcer, a wildcard host resolved against the source,
and a datagram a beacon parser refuses without harm (older nodes)."""
from __future__ import annotations

import pytest

from eschaton.core.link.announce import (
    AnnouncementError,
    is_announcement,
    make_chain_announcement,
    parse_chain_announcement,
)
from eschaton.core.link.beacon import BeaconError, parse_beacon
from eschaton.core.link.identity import NodeKeys
from eschaton.core.wire.errors import EncodeError

KEYS = NodeKeys.from_seed(bytes(32))


def test_round_trip_and_wildcard() -> None:
    d = make_chain_announcement(KEYS, url="tcp://0.0.0.0:50001", ts_ms=5, seq=7)
    assert is_announcement(d)
    a = parse_chain_announcement(d)
    assert (a.node_id, a.seq, a.ts_ms, a.url) == (KEYS.node_id, 7, 5, "tcp://0.0.0.0:50001")
    assert a.resolved("10.99.3.4:4545") == "tcp://10.99.3.4:50001"
    fixed = parse_chain_announcement(make_chain_announcement(KEYS, url="tcp://10.99.0.1:50001", ts_ms=5, seq=7))
    assert fixed.resolved("10.99.3.4:4545") == "tcp://10.99.0.1:50001"


def test_a_changed_byte_breaks_the_signature() -> None:
    d = bytearray(make_chain_announcement(KEYS, url="tcp://10.99.0.1:50001", ts_ms=5, seq=7))
    d[-3] ^= 1  # inside the URL
    with pytest.raises(AnnouncementError):
        parse_chain_announcement(bytes(d))


def test_malformed() -> None:
    with pytest.raises(EncodeError):
        make_chain_announcement(KEYS, url="http://x:1", ts_ms=0, seq=0)
    for bad in (b"", b"esa1" + bytes(70), b"esb1" + bytes(100)):
        with pytest.raises(AnnouncementError):
            parse_chain_announcement(bad)


def test_an_older_node_refuses_it_as_a_beacon() -> None:
    with pytest.raises(BeaconError, match="bad magic"):
        parse_beacon(make_chain_announcement(KEYS, url="tcp://0.0.0.0:50001", ts_ms=5, seq=7))
