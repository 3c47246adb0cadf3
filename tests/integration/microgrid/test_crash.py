"""SIGKILL the buyer, then the seller, in the middle of metered trade; restart each. Afterwards
nothing is paid twice and nothing is lost: the channel moved exactly what the seller credited,
which is exactly floor(metered units x price) of the seller's last invoice, and every payment
id was confirmed once."""
from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter

import pytest

from eschaton.demo.village import api, set_flows, start_node, stop_node, wait_ready
from tests.integration.microgrid.conftest import PRICE_MSAT, channel_to, ledger, run


@pytest.mark.timeout(240)
def test_sigkill_buyer_and_seller_mid_stream(village) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(int(os.environ.get("MG_CRASH_SEED", "7")))

    async def scenario() -> None:
        s = village
        await s.setup()
        buyer, seller = s.by["house1"], s.by["house2"]
        meter = s.sales[0].meter

        async def paying() -> bool:
            return s.sell_row(meter).get("paid_sat", 0) > 0

        await s.until("payments", paying, 40)
        for victim in (buyer, seller, buyer, seller):
            before = s.sell_row(meter).get("paid_sat", 0)
            await asyncio.sleep(rng.uniform(0.5, 2.0))  # lands anywhere in the pay cycle
            stop_node(victim, sig=signal.SIGKILL)
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            start_node(victim)
            await wait_ready(victim)

            async def paid_more(before: int = before) -> bool:
                r = s.sell_row(meter)
                return r.get("paid_sat", 0) > before and r.get("supply") == "on"

            await s.until("payments after the restart", paid_more, 60)
        await settle_and_check_books(s)

    run(scenario())


async def settle_and_check_books(s) -> None:  # type: ignore[no-untyped-def]
    """Stop the water, wait for the last payment, and check nothing was paid twice or lost."""
    buyer, seller = s.by["house1"], s.by["house2"]
    meter = s.sales[0].meter
    set_flows(seller, stopped=True)
    await asyncio.sleep(1.0)

    async def settled() -> bool:
        r = s.sell_row(meter)
        return r["invoiced_units"] == r["units"] and r["paid_sat"] == r["invoiced_sat"]

    await s.until("settlement", settled, 60)
    row = s.sell_row(meter)
    due = (row["units"] - row["anchor_units"]) * PRICE_MSAT // (1000 * 1000)
    ch = await channel_to(seller, buyer)
    assert row["invoiced_sat"] == due == row["paid_sat"]
    assert ch["local_sat"] == due, "the channel moved more or less than was billed"

    sl, bl = await ledger(seller, "seller"), await ledger(buyer, "buyer")
    received = [e for e in sl if e["kind"] == "payment_received"]
    assert sum(e["amount_sat"] for e in received) == due
    assert all(n == 1 for n in Counter(e["payment_id"] for e in received).values())
    confirmed = Counter(e["payment_id"] for e in bl if e["kind"] == "payment_confirmed")
    assert all(n == 1 for n in confirmed.values())
    sent = {e["payment_id"]: e["amount_sat"] for e in bl if e["kind"] == "payment_sent"}
    failed = {e["payment_id"] for e in bl if e["kind"] == "payment_failed"}
    assert sum(a for p, a in sent.items() if p in confirmed) == due
    assert set(sent) == set(confirmed) | failed
    status = await api(buyer, "microgrid.status")
    assert status["buy"][0]["pending_sat"] == 0



@pytest.mark.timeout(240)
def test_buyer_killed_with_a_payment_in_flight_to_a_frozen_seller(village) -> None:  # type: ignore[no-untyped-def]
    """The buyer's channel update is sent to a seller that cannot answer (SIGSTOP); the buyer
    is SIGKILLed while the payment is in flight, then the seller too. After both restart, the
    payment is resolved against the channel exactly once."""

    async def scenario() -> None:
        s = village
        await s.setup()
        buyer, seller = s.by["house1"], s.by["house2"]
        meter = s.sales[0].meter

        async def paying() -> bool:
            return s.sell_row(meter).get("paid_sat", 0) > 0

        await s.until("payments", paying, 40)
        await api(buyer, "microgrid.hold", meter=meter, paused=True)
        await asyncio.sleep(1.5)  # an invoice waits in the buyer's stash
        assert seller.proc is not None
        os.killpg(seller.proc.pid, signal.SIGSTOP)
        try:
            await api(buyer, "microgrid.hold", meter=meter, paused=False)
            for _ in range(50):
                st = await api(buyer, "microgrid.status")
                if st["buy"][0]["pending_sat"] > 0:
                    break
                await asyncio.sleep(0.1)
            assert st["buy"][0]["pending_sat"] > 0, "no payment in flight"
            stop_node(buyer, sig=signal.SIGKILL)
        finally:
            os.killpg(seller.proc.pid, signal.SIGCONT)
        stop_node(seller, sig=signal.SIGKILL)
        start_node(seller)
        start_node(buyer)
        await wait_ready(seller)
        await wait_ready(buyer)
        before = s.sell_row(meter).get("paid_sat", 0)

        async def paid_more() -> bool:
            r = s.sell_row(meter)
            return r.get("paid_sat", 0) > before and r.get("supply") == "on"

        await s.until("payments after the restarts", paid_more, 60)
        await settle_and_check_books(s)

    run(scenario())


@pytest.mark.timeout(240)
def test_seller_that_lost_every_payment_event_recounts_them_from_the_channel(village) -> None:  # type: ignore[no-untyped-def]
    """The seller counts received payments from the payments facade's events into
    ``microgrid-received.db``. A kill -9 between a channel's commit and that count loses the
    event; the worst case is losing all of them (the file is gone). After the restart the
    seller catches up from the channel's durable version, so the buyer's payments (and its
    resent ``mg_paid`` notices) are credited exactly once and the books still close."""

    async def scenario() -> None:
        s = village
        await s.setup()
        seller = s.by["house2"]
        meter = s.sales[0].meter

        async def paying() -> bool:
            return s.sell_row(meter).get("paid_sat", 0) > 0

        await s.until("payments", paying, 40)
        await asyncio.sleep(1.0)
        stop_node(seller, sig=signal.SIGKILL)
        for f in seller.datadir.glob("microgrid-received.db*"):
            f.unlink()
        start_node(seller)
        await wait_ready(seller)
        before = s.sell_row(meter).get("paid_sat", 0)

        async def paid_more() -> bool:
            r = s.sell_row(meter)
            return r.get("paid_sat", 0) > before and r.get("supply") == "on"

        await s.until("payments after the restart", paid_more, 60)
        await settle_and_check_books(s)

    run(scenario())
