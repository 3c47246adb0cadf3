"""Signed beacons: verification, staleness, replay, expiry."""
from __future__ import annotations

import pytest

from eschaton.core.link.beacon import (
    BeaconError,
    NeighbourChanged,
    NeighbourFound,
    NeighbourLost,
    NeighbourTable,
    make_beacon,
    parse_beacon,
)
from eschaton.core.wire import bencode
from eschaton.core.wire.errors import EncodeError

from .helpers import keys

A, B, C = keys("alice"), keys("bob"), keys("carol")
NOW = 1_700_000_000.0
URLS = ["tcp://10.77.0.2:9735"]


def beacon(k=B, *, ts=NOW, seq=1, urls=URLS, name="bob") -> bytes:
    return make_beacon(k, urls=urls, ts_ms=int(ts * 1000), seq=seq, name=name)


def test_valid_beacon_is_found_then_quietly_refreshed() -> None:
    t = NeighbourTable(A.node_id)
    assert t.receive(beacon(), NOW, "10.77.0.2:47800") == [
        NeighbourFound(B.node_id, tuple(URLS), "bob", "10.77.0.2:47800")]
    assert t.receive(beacon(seq=2), NOW + 1) == []
    assert t.receive(beacon(seq=3, urls=["tcp://10.77.0.9:1"]), NOW + 2) == [
        NeighbourChanged(B.node_id, ("tcp://10.77.0.9:1",), "bob", "")]


def test_replayed_beacon_is_refused() -> None:
    t = NeighbourTable(A.node_id)
    b1 = beacon(seq=5)
    t.receive(b1, NOW)
    with pytest.raises(BeaconError, match="replayed"):
        t.receive(b1, NOW + 1)
    with pytest.raises(BeaconError, match="replayed"):
        t.receive(beacon(seq=4), NOW + 1)  # older sequence, same timestamp
    # A restart resets seq, but the clock moved on: accepted.
    assert t.receive(beacon(ts=NOW + 5, seq=1), NOW + 5) == []


def test_with_strict_clock_stale_and_future_first_beacons_are_refused() -> None:
    t = NeighbourTable(A.node_id, max_age=60, max_skew=30, strict_clock=True)
    with pytest.raises(BeaconError, match="stale"):
        t.receive(beacon(ts=NOW - 61), NOW)
    with pytest.raises(BeaconError, match="future"):
        t.receive(beacon(ts=NOW + 31), NOW)
    assert B.node_id not in t
    assert t.receive(beacon(ts=NOW - 59), NOW) != []


def test_a_node_with_a_wrong_clock_is_found_and_its_offset_reported() -> None:
    # A Pi has no real-time clock: Bob booted three hours behind, Carol a day ahead.
    t = NeighbourTable(A.node_id)
    [found] = t.receive(beacon(ts=NOW - 3 * 3600), NOW)
    assert isinstance(found, NeighbourFound) and found.clock_offset == -3 * 3600
    [found] = t.receive(beacon(C, ts=NOW + 86400, name="carol"), NOW)
    assert isinstance(found, NeighbourFound) and found.clock_offset == 86400
    # Bob's clock moves on with ours: his next beacons are accepted...
    assert t.receive(beacon(ts=NOW - 3 * 3600 + 10, seq=2), NOW + 10) == []
    # ...and an older one of his (replayed, whatever our clock says) is not.
    with pytest.raises(BeaconError, match="replayed"):
        t.receive(beacon(ts=NOW - 3 * 3600 + 5, seq=9), NOW + 11)
    # His clock is corrected forward (NTP reached him): still him, still accepted.
    assert t.receive(beacon(ts=NOW + 12, seq=3), NOW + 12) == []


def test_a_node_whose_clock_is_set_back_is_found_again_after_expiry() -> None:
    t = NeighbourTable(A.node_id, expiry=30)
    t.receive(beacon(ts=NOW + 3600), NOW, seen=0.0)  # Bob an hour ahead, then corrected
    with pytest.raises(BeaconError, match="replayed"):
        t.receive(beacon(ts=NOW + 1, seq=2), NOW + 1, seen=1.0)
    assert t.expire(30.0) == [NeighbourLost(B.node_id)]
    [found] = t.receive(beacon(ts=NOW + 31, seq=3), NOW + 31, seen=31.0)
    assert isinstance(found, NeighbourFound) and found.clock_offset == 0


def test_expiry_follows_the_monotonic_clock_not_the_wall_clock() -> None:
    t = NeighbourTable(A.node_id, expiry=30)
    t.receive(beacon(), NOW, seen=100.0)
    # Our wall clock is set back a year (NTP corrected it): Bob is neither lost at once nor kept
    # forever; he is lost 30 s after his last beacon on the monotonic clock.
    assert t.next_deadline() == 130.0
    assert t.expire(129.0) == []
    assert t.expire(130.0) == [NeighbourLost(B.node_id)]


def test_touch_keeps_a_neighbour_heard_by_other_means() -> None:
    t = NeighbourTable(A.node_id, expiry=30)
    assert not t.touch(B.node_id, 100.0)  # not in the table: nothing to keep
    t.receive(beacon(), NOW, seen=100.0)
    assert t.touch(B.node_id, 120.0)  # e.g. its BLE advertisement was heard
    assert t.expire(130.0) == [] and t.next_deadline() == 150.0
    assert t.touch(B.node_id, 110.0) and t.next_deadline() == 150.0  # never moves back
    assert t.expire(150.0) == [NeighbourLost(B.node_id)]


def test_badly_signed_beacon_is_refused() -> None:
    raw = bytearray(beacon())
    raw[-3] ^= 0x01  # inside the signed body
    with pytest.raises(BeaconError):
        parse_beacon(bytes(raw))
    # Carol signs a beacon claiming Bob's id.
    good = beacon()
    body = good[68:]
    forged = good[:4] + C.sign(b"eschaton-beacon/1\x00" + body) + body
    with pytest.raises(BeaconError, match="signature"):
        parse_beacon(forged)


def test_own_beacons_are_ignored_and_neighbours_expire() -> None:
    t = NeighbourTable(A.node_id, expiry=30)
    assert t.receive(beacon(A), NOW) == []
    t.receive(beacon(), NOW)
    assert t.next_deadline() == NOW + 30
    assert t.expire(NOW + 29) == []
    assert t.expire(NOW + 30) == [NeighbourLost(B.node_id)]


def test_table_memory_is_bounded() -> None:
    t = NeighbourTable(A.node_id, max_neighbours=2)
    for i, k in enumerate((B, C, keys("dave"))):
        t.receive(beacon(k), NOW + i)
    assert len(t.neighbours()) == 2 and B.node_id not in t


def test_malformed_beacons() -> None:
    for bad in (b"", b"esb1", b"xxxx" + bytes(100), b"esb1" + bytes(64) + bencode.encode([1])):
        with pytest.raises(BeaconError):
            parse_beacon(bad)
    with pytest.raises(EncodeError):
        make_beacon(B, urls=["not a url"], ts_ms=1, seq=1)


def test_wildcard_urls_are_dialled_at_the_beacons_source() -> None:
    """A node listening on every interface announces ``tcp://0.0.0.0:PORT``: the receiver dials
    the address the beacon came from, and a move to another address is a change."""
    t = NeighbourTable(A.node_id)
    wild = ["tcp://0.0.0.0:9735", "tcp://10.9.9.9:1"]
    assert t.receive(beacon(urls=wild), NOW, "10.77.0.2:47800") == [
        NeighbourFound(B.node_id, ("tcp://10.77.0.2:9735", "tcp://10.9.9.9:1"), "bob",
                       "10.77.0.2:47800")]
    assert t.neighbours()[B.node_id] == ("tcp://10.77.0.2:9735", "tcp://10.9.9.9:1")
    assert t.receive(beacon(seq=2, urls=wild), NOW + 1, "10.77.0.2:47800") == []
    assert t.receive(beacon(seq=3, urls=wild), NOW + 2, "10.88.0.5:47800") == [
        NeighbourChanged(B.node_id, ("tcp://10.88.0.5:9735", "tcp://10.9.9.9:1"), "bob",
                         "10.88.0.5:47800")]
    # From an unknown source a wildcard cannot be resolved: it is dropped, not dialled at 0.0.0.0.
    t2 = NeighbourTable(A.node_id)
    [found] = t2.receive(beacon(urls=["tcp://0.0.0.0:9735", "tcp://[::]:9735"]), NOW)
    assert isinstance(found, NeighbourFound) and found.urls == ()


def test_resolve_urls_brackets_an_ipv6_source() -> None:
    from eschaton.core.link.beacon import resolve_urls
    assert resolve_urls(["tcp://[::]:9735"], "fe80::1:47800") == ("tcp://[fe80::1]:9735",)
    assert resolve_urls(["serial:///dev/ttyAMA0"], "10.0.0.1:1") == ("serial:///dev/ttyAMA0",)
