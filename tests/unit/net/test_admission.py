"""Admission control of inbound links (sans-IO) and its ``[network]`` configuration."""
from __future__ import annotations

import secrets

import pytest

from eschaton.config.loader import ConfigError, parse_config
from eschaton.core.link.admission import Admission, AdmissionLimits, Refusal, Ticket
from eschaton.core.link.identity import NodeKeys


def _id():  # type: ignore[no-untyped-def]
    return NodeKeys.generate(secrets.token_bytes).node_id


def test_pending_caps_in_total_and_per_source_and_slots_come_back() -> None:
    adm = Admission(AdmissionLimits(max_pending=4, max_pending_per_source=2, max_links=1))
    t = [adm.begin("10.0.0.1"), adm.begin("10.0.0.1")]
    assert adm.begin("10.0.0.1") is Refusal.SOURCE_FULL
    t[1].closed()
    t[1:] = [adm.begin("10.0.0.2"), adm.begin("10.0.0.3"), adm.begin("10.0.0.4")]
    assert adm.begin("10.0.0.2") is Refusal.PENDING_FULL  # it may not evict its equals
    assert adm.pending == 4
    for ticket in t:
        assert isinstance(ticket, Ticket)
        ticket.closed()
        ticket.closed()  # idempotent
    assert adm.pending == 0 and adm.by_source == {}  # nothing kept per source
    assert adm.refused[Refusal.SOURCE_FULL] == 1 and adm.refused[Refusal.PENDING_FULL] == 1
    assert adm.refused[Refusal.EVICTED] == 0


def test_a_flood_from_many_addresses_cannot_lock_a_newcomer_out() -> None:
    """Every pending slot held by strangers from many addresses (one each, or several from one):
    a friend dialling in from an address of its own still gets a slot, by evicting the oldest
    handshake of the busiest source; the friend's own handshake survives until the flood has
    opened ``max_pending`` more, and a handshake that has shown a key we admit is never evicted."""
    friend = _id()
    adm = Admission(AdmissionLimits(max_pending=4, max_pending_per_source=4, max_links=8,
                                    evict_after=1.0), pinned=lambda n: n == friend)
    closed: list[str] = []

    def begin(source: str, name: str, now: float = 10.0) -> Ticket:
        t = adm.begin(source, now)
        assert isinstance(t, Ticket), (source, t)
        t.on_evict = lambda: closed.append(name)
        return t

    flood = [begin("10.9.0.1", "busy-1", 0.0), begin("10.9.0.1", "busy-2", 0.0),
             begin("10.9.0.2", "s2", 0.0), begin("10.9.0.3", "s3", 0.0)]
    assert adm.begin("10.0.0.7", 0.5) is Refusal.PENDING_FULL  # all too young to evict
    mine = begin("10.0.0.7", "friend")  # full: the busiest source's oldest handshake goes
    assert closed == ["busy-1"] and adm.pending == 4 and adm.by_source["10.9.0.1"] == 1
    assert adm.refused[Refusal.EVICTED] == 1 and adm.refused[Refusal.PENDING_FULL] == 1
    flood[0].closed()  # the adapter closes it later: nothing is given back twice
    assert adm.pending == 4
    for i in range(3):  # three more strangers from fresh addresses: the oldest go first
        begin(f"10.9.1.{i}", f"new-{i}")
    assert closed == ["busy-1", "busy-2", "s2", "s3"]
    assert adm.begin("10.9.1.9", 10.5) is Refusal.PENDING_FULL  # the friend is too young
    assert mine.authorize(friend)  # message 3: a pinned key; no longer evictable
    for i in range(3):
        begin(f"10.9.2.{i}", f"more-{i}", 20.0)
    assert closed == ["busy-1", "busy-2", "s2", "s3", "new-0", "new-1", "new-2"]
    assert adm.begin("10.9.3.1", 20.5) is Refusal.PENDING_FULL  # the friend is admitted, the rest young
    assert adm.pending == 4
    mine.opened()
    assert adm.pending == 3


def test_a_newcomer_is_refused_when_every_pending_slot_is_admitted_or_as_busy() -> None:
    friend = _id()
    adm = Admission(AdmissionLimits(max_pending=2, max_pending_per_source=2, max_links=8),
                    pinned=lambda n: n == friend)
    a, b = adm.begin("x"), adm.begin("y")
    assert isinstance(a, Ticket) and isinstance(b, Ticket)
    assert a.authorize(friend) and b.authorize(_id())
    assert adm.begin("z", 99.0) is Refusal.PENDING_FULL  # both have shown admitted keys
    assert adm.refused[Refusal.EVICTED] == 0


def test_link_cap_spares_pinned_peers_and_known_refuses_strangers() -> None:
    friend = _id()
    adm = Admission(AdmissionLimits(max_pending=8, max_pending_per_source=8, max_links=1),
                    pinned=lambda n: n == friend)
    a, b, c = (adm.begin("x") for _ in range(3))
    assert isinstance(a, Ticket) and isinstance(b, Ticket) and isinstance(c, Ticket)
    assert a.authorize(_id())
    assert not b.authorize(_id())  # links full
    assert c.authorize(friend)  # pinned: never refused for want of a slot
    assert adm.links == 1
    a.opened()
    a.closed()
    assert adm.links == 0 and adm.pending == 2
    known = Admission(AdmissionLimits(8, 8, 8, accept_unknown=False), pinned=lambda n: n == friend)
    t = known.begin("x")
    assert isinstance(t, Ticket)
    assert not t.authorize(_id()) and known.refused[Refusal.UNKNOWN_KEY] == 1
    assert t.authorize(friend)


BASE = '[node]\ndatadir = "/tmp/x"\n[network]\n'


def test_config_defaults_and_values() -> None:
    net = parse_config(BASE).network
    assert (net.accept, net.max_pending_handshakes, net.max_pending_per_address, net.max_links,
            net.handshake_timeout) == ("any", 64, 8, 64, 10.0)
    net = parse_config(BASE + 'accept = "known"\nmax_links = 3\nhandshake_timeout = 2\n').network
    assert (net.accept, net.max_links, net.handshake_timeout) == ("known", 3, 2.0)


@pytest.mark.parametrize("line,key", [
    ('accept = "friends"', "network.accept"),
    ("max_pending_handshakes = 0", "network.max_pending_handshakes"),
    ("max_pending_per_address = 100", "network.max_pending_per_address"),
    ("handshake_timeout = -1", "network.handshake_timeout"),
    ("max_links = 1.5", "network.max_links"),
])
def test_config_errors_name_file_key_and_line(line: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + line + "\n", "node.toml")
    assert e.value.key == key and e.value.line == 4 and str(e.value).startswith("node.toml:4: ")
