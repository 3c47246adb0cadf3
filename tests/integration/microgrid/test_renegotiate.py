"""Either side renegotiates over real node processes: the seller raises its price, the buyer
proposes terms the seller accepts, and a proposal below the seller's terms is refused. New terms
price only future units (each agreement is anchored at the last invoice), and the books stay
exact: the channel moved exactly what was invoiced."""
from __future__ import annotations

import pytest

from eschaton.demo.village import api, set_flows
from tests.integration.microgrid.conftest import PRICE_MSAT, channel_to, ledger, run


@pytest.mark.timeout(180)
def test_seller_and_buyer_renegotiate(village) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        s = village
        await s.setup()
        buyer, seller = s.by["house1"], s.by["house2"]
        meter = s.sales[0].meter

        async def invoiced(n: int) -> bool:
            return s.sell_row(meter).get("invoices", 0) >= n and s.sell_row(meter).get("paid_sat", 0) > 0

        await s.until("first payments", lambda: invoiced(2), 40)

        # The seller doubles its price for future units.
        r = await api(seller, "microgrid.renegotiate", meter=meter, price_msat=2 * PRICE_MSAT)
        assert r["sent"] and r["price_msat"] == 2 * PRICE_MSAT

        async def agreed(price: int) -> bool:
            return s.sell_row(meter).get("agreed_price_msat") == price

        await s.until("the seller's new price agreed", lambda: agreed(2 * PRICE_MSAT), 30, poll=0.2)
        first_anchor = s.sell_row(meter)["anchor_units"]
        assert first_anchor > 0  # the new terms start at the last invoice, not at zero

        # The buyer proposes an even higher price (above the seller's floor): accepted.
        inv_before = s.sell_row(meter)["invoices"]
        await s.until("an invoice under the new terms", lambda: invoiced(inv_before + 1), 30)
        r = await api(buyer, "microgrid.renegotiate", meter=meter, price_msat=3 * PRICE_MSAT)
        assert r["sent"]
        await s.until("the buyer's proposal agreed", lambda: agreed(3 * PRICE_MSAT), 30, poll=0.2)
        assert s.sell_row(meter)["anchor_units"] >= first_anchor

        # A proposal below the seller's configured price is refused; the terms stay.
        inv_before = s.sell_row(meter)["invoices"]
        await s.until("another invoice", lambda: invoiced(inv_before + 1), 30)
        await api(buyer, "microgrid.renegotiate", meter=meter, price_msat=PRICE_MSAT // 2)

        async def refused() -> bool:
            st = await api(seller, "microgrid.status")
            return any(r["what"] == "mg_offer" and "below" in r["detail"] for r in st["refusals"])

        await s.until("the low proposal refused", refused, 30, poll=0.2)
        assert s.sell_row(meter)["agreed_price_msat"] == 3 * PRICE_MSAT

        # Settle and check the books: the channel moved exactly what was invoiced and paid.
        set_flows(seller, stopped=True)

        async def settled() -> bool:
            r = s.sell_row(meter)
            return r["invoiced_units"] == r["units"] and r["paid_sat"] == r["invoiced_sat"]

        await s.until("settlement", settled, 40)
        row = s.sell_row(meter)
        ch_seller = await channel_to(seller, buyer)
        assert ch_seller["local_sat"] == row["paid_sat"] == row["invoiced_sat"]
        # Above what the first price alone would have charged: the later units cost more.
        assert row["invoiced_sat"] > row["units"] * PRICE_MSAT // 1_000_000

        kinds = [e["kind"] for e in await ledger(seller, "seller")]
        assert kinds.count("agreement") == 1, kinds  # the first terms
        assert kinds.count("renegotiation") == 2, kinds  # the seller's, then the buyer's
        assert kinds.count("offer_made") == 2, kinds  # the seller offered twice; the buyer once
        bkinds = [e["kind"] for e in await ledger(buyer, "buyer")]
        assert bkinds.count("renegotiation") == 2, bkinds
        assert "invoice_refused" not in " ".join(e["kind"] for e in await ledger(buyer, "buyer"))

    run(scenario())
