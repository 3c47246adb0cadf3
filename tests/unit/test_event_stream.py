"""The node's event stream: numbered, bounded per source, and honest about what a slow reader lost."""
from __future__ import annotations

from eschaton.daemon.events import EventStream
from eschaton.daemon.payments import PaymentReceived


def test_a_busy_source_does_not_push_out_a_rare_one_and_a_slow_reader_is_told() -> None:
    s = EventStream(per_source=10, clock=lambda: 1.5)
    s.emit("supply", "actuation", {"meter_id": "m", "on": False})
    for i in range(100):
        s.emit_typed("payments", PaymentReceived(f"recv:ab:{i}", b"\xab", "peer", 1, i, i))
    assert [e.kind for e in s.latest("supply")] == ["actuation"]  # kept, though 100 came after
    got = s.since(0, limit=1000)
    assert got["lost"] and got["head"] == 101
    assert [e["seq"] for e in got["events"]] == [1, *range(92, 102)]
    assert got["events"][0] == {"seq": 1, "at_ms": 1500, "source": "supply", "kind": "actuation",
                                "meter_id": "m", "on": False}
    assert got["events"][-1]["channel_id"] == "ab" and got["events"][-1]["kind"] == "PaymentReceived"
    assert not s.since(95)["lost"] and [e["seq"] for e in s.since(95, limit=2)["events"]] == [96, 97]
    assert s.since(95, limit=2)["next"] == 97
    assert s.since(101) == {"events": [], "next": 101, "lost": False, "head": 101}
    # A reader from before a restart (numbers start again) is brought back to the head.
    assert s.since(5000)["next"] == 101
