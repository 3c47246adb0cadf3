"""A channel that keeps paying keeps its memory flat: nothing the endpoint does per payment is
kept after the payment is done (a hub makes millions of them over months on a Pi)."""
from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from tests.integration.channel.harness import Net

WARMUP = 300
PAYMENTS = 3_000
# Bytes retained per payment that the run may show without a leak. Interpreter and statement
# caches still settle after the warm-up (about 10 B per payment over this run, measured); a
# list that keeps one small object per payment is several hundred (the endpoint's old list of
# notifications was 550).
BOUND_PER_PAYMENT = 64


def _pay_both_ways(net: Net, n: int) -> None:
    for i in range(n):
        net.do("a" if i % 50 < 25 else "b", "pay", 1)


def test_memory_stays_flat_over_thousands_of_payments(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        net.open(capacity=5_000_000, acceptor=1_000_000, lifetime_blocks=2_000, step=1)
        seen: list[str] = []
        net.b.ep.listeners.append(lambda n: seen.append(n.kind) if len(seen) < 10 else None)
        _pay_both_ways(net, WARMUP)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            _pay_both_ways(net, PAYMENTS)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        grown = (after - before) / PAYMENTS
        assert "payment" in seen  # the event stream still reaches listeners
        assert grown < BOUND_PER_PAYMENT, f"{grown:.0f} bytes retained per payment"
    finally:
        net.close()
