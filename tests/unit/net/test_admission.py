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
    t += [adm.begin("10.0.0.2"), adm.begin("10.0.0.3")]
    assert adm.begin("10.0.0.4") is Refusal.PENDING_FULL
    assert adm.pending == 4
    for ticket in t:
        assert isinstance(ticket, Ticket)
        ticket.closed()
        ticket.closed()  # idempotent
    assert adm.pending == 0 and adm.by_source == {}  # nothing kept per source
    assert adm.refused[Refusal.SOURCE_FULL] == 1 and adm.refused[Refusal.PENDING_FULL] == 1


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
