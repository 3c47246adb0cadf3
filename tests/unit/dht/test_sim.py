"""The deterministic simulator: lookups succeed through 20% churn (a smaller network than the
benchmark's 1,000 nodes, same code)."""
from __future__ import annotations

from eschaton.core.dht import sim
from eschaton.core.dht.protocol import Params


def test_lookups_survive_churn() -> None:
    r = sim.run(120, seed=18, churn=0.2, values=30, lookups=200)
    assert r.timeouts > 0  # lookups did meet nodes that had left
    assert r.success_rate >= 0.99, r
    assert max(r.hops) <= 6


def test_same_seed_same_network() -> None:
    a = sim.run(40, seed=3, values=5, lookups=20, params=Params(k=8))
    b = sim.run(40, seed=3, values=5, lookups=20, params=Params(k=8))
    c = sim.run(40, seed=4, values=5, lookups=20, params=Params(k=8))
    assert a == b
    assert a.queries != c.queries or a.hops != c.hops


def test_success_rate_can_fail() -> None:
    # Control: with k = 1 (one replica per record, one contact per bucket) 40% of the nodes
    # leaving loses lookups, so the success rate above measures the design, not a constant.
    lone = sim.run(60, seed=5, churn=0.4, values=30, lookups=100, republish=False,
                   params=Params(k=1, alpha=1))
    assert lone.success_rate < 0.9
