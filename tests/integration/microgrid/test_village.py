"""End to end: meter -> invoice -> channel payment, cut-off past the credit limit, reconnection
after payment, exact books, and the ledger's story, across real node processes."""
from __future__ import annotations

import asyncio
import re

import pytest

from eschaton.demo.village import api, set_flows
from tests.integration.microgrid.conftest import CREDIT_SAT, PRICE_MSAT, channel_to, ledger, run


@pytest.mark.timeout(180)
def test_trade_cut_reconnect_and_exact_books(village) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        s = village
        await s.setup()
        buyer, seller = s.by["house1"], s.by["house2"]
        meter = s.sales[0].meter

        async def paid_twice() -> bool:
            return s.sell_row(meter).get("paid_sat", 0) > 0 and s.sell_row(meter).get("invoices", 0) >= 3

        await s.until("payments", paid_twice, 40)
        await api(buyer, "microgrid.hold", meter=meter, paused=True)

        async def cut() -> bool:
            return s.sell_row(meter).get("supply") == "cut"

        await s.until("the cut-off", cut, 40, poll=0.2)
        # Billing reads the journal's committed totals (<= 1 s behind the pulses); once that
        # has caught up, the shut valve lets nothing more through.
        await asyncio.sleep(1.5)
        await s.refresh()
        units_after_cut = s.sell_row(meter)["units"]
        await asyncio.sleep(2.0)
        await s.refresh()
        assert s.sell_row(meter)["units"] == units_after_cut
        await api(buyer, "microgrid.hold", meter=meter, paused=False)

        async def restored() -> bool:
            return s.sell_row(meter).get("supply") == "on"

        await s.until("reconnection", restored, 30, poll=0.2)
        await asyncio.sleep(2.0)
        set_flows(seller, stopped=True)
        await asyncio.sleep(1.0)

        async def settled() -> bool:
            r = s.sell_row(meter)
            return r["invoiced_units"] == r["units"] and r["paid_sat"] == r["invoiced_sat"]

        await s.until("settlement", settled, 30)
        row = s.sell_row(meter)

        # Books: what the channel moved == floor(metered units x price / scale), exactly.
        units = row["units"] - row["anchor_units"]
        due = units * PRICE_MSAT // (1000 * 1000)
        ch_seller, ch_buyer = await channel_to(seller, buyer), await channel_to(buyer, seller)
        assert row["invoiced_sat"] == due and row["paid_sat"] == due
        assert ch_seller["local_sat"] == due and ch_buyer["remote_sat"] == due
        assert units > 1000

        sl, bl = await ledger(seller, "seller"), await ledger(buyer, "buyer")
        status = await api(seller, "microgrid.status")

        # The seller's ledger tells the story in order.
        kinds = " ".join(e["kind"] for e in sl)
        assert re.fullmatch(
            r"offer_made agreement (invoice_issued (payment_received )?)+"
            r"supply_cut (invoice_issued |payment_received )*supply_restored "
            r"(invoice_issued |payment_received )*", kinds + " "), kinds
        assert "invoice_refused" not in kinds
        assert sum(e["amount_sat"] for e in sl if e["kind"] == "payment_received") == due

        # Cut within 1 s of the reading that crossed the limit, from ledger timestamps; the
        # crossing invoice is the one recorded with the cut, and it is over the limit.
        i = next(n for n, e in enumerate(sl) if e["kind"] == "supply_cut")
        cut_e, crossing = sl[i], sl[i - 1]
        assert crossing["kind"] == "invoice_issued"
        paid_before = sum(e["amount_sat"] for e in sl[:i] if e["kind"] == "payment_received")
        assert crossing["cum_due_sat"] - paid_before == cut_e["unpaid_sat"] > CREDIT_SAT
        prev_due = max(e["cum_due_sat"] for e in sl[:i - 1] if e["kind"] == "invoice_issued")
        assert prev_due - paid_before <= CREDIT_SAT  # the previous reading had not crossed
        assert 0 <= cut_e["at_ms"] - crossing["at_ms"] <= 1000
        closes = [a for a in status["actuations"] if not a["on"]]
        assert closes and 0 <= closes[0]["at_ms"] - cut_e["at_ms"] <= 1000
        print(f"valve closed {closes[0]['at_ms'] - cut_e['at_ms']} ms after the crossing reading")

        # Reconnection follows a payment that brought the unpaid amount back within the limit.
        j = next(n for n, e in enumerate(sl) if e["kind"] == "supply_restored")
        assert sl[j - 1]["kind"] == "payment_received"
        assert sl[j]["unpaid_sat"] <= CREDIT_SAT
        opens = [a for a in status["actuations"] if a["on"]]
        assert any(0 <= a["at_ms"] - sl[j]["at_ms"] <= 1000 for a in opens)

        # The buyer's ledger: agreement, then accepted invoices each paid and confirmed.
        bkinds = " ".join(e["kind"] for e in bl)
        assert re.fullmatch(r"agreement (invoice_accepted (payment_sent payment_confirmed )?)+",
                            bkinds + " "), bkinds
        assert sum(e["amount_sat"] for e in bl if e["kind"] == "payment_sent") == due

    run(scenario())
