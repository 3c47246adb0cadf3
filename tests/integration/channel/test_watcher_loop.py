"""The watcher running on chain subscriptions (not polled): it closes and sweeps on its own."""
from __future__ import annotations

import asyncio

import pytest

from tests.integration.channel.harness import Net, k

pytestmark = pytest.mark.timeout(120)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_subscribed_watchers_close_at_lifetime_end_and_sweep(net: Net) -> None:
    net.open(lifetime_blocks=40)
    pre = k("loop-preimage")
    net.do("a", "offer_escrow", 250_000, pre)
    net.do("a", "pay", 100_000)
    v = net.ch("b").current

    async def main() -> None:
        for n in (net.a, net.b):
            await n.watcher.start()
        try:
            net.b.watcher.learn_preimage(pre)  # revealed out of band after cooperation stopped
            while net.height < v.locktime + 3:
                await net.chain.mine(1)  # events wake the watchers; nothing calls sync()
                await _settle()
                net.flush()
        finally:
            for n in (net.a, net.b):
                await n.watcher.stop()

    asyncio.run(main())
    assert net.funding_spender() == net.ch("b").best_txid()
    assert net.ch("a").state.name == net.ch("b").state.name == "CLOSED"
    assert net.b.paid_to_payout() == v.balances[1] + 250_000 - 1_000  # escrow claimed with the preimage
    assert any(r.label.startswith("claim escrow") and r.refused is None for r in net.b.watcher.results)
