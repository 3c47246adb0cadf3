"""A seller node credits only what its trade channels moved: a buyer that accepts terms, draws
water and sends ``mg_paid`` claims without paying gets nothing credited and its valve closed.

The buyer is this test process (a real ``NetNode`` and a real ``BuyerCore``); the seller is a
real node process with a flow meter and a valve on mock pins, water driven in its process.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from eschaton.core.microgrid.buyer import BuyerCore
from eschaton.core.microgrid.decisions import Pay
from eschaton.core.microgrid.terms import Offer
from eschaton.core.wire.codec import make
from eschaton.daemon.microgrid import _to_wire, from_wire_fields
from eschaton.demo.village import api, start_node, stop_node, wait_ready
from eschaton.net.identity import create_identity
from eschaton.net.mesh import NetNode
from tests.integration.microgrid.lone_seller import buyer_config, lone_seller
from tests.routes import Recorder, router

METER = "h2-water-h1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.timeout(120)
def test_claims_without_channel_payments_credit_nothing_and_the_valve_closes(tmp_path: Path) -> None:
    buyer_dir = tmp_path / "buyer"
    buyer_keys = create_identity(buyer_dir)
    seller = lone_seller(tmp_path, "house2", METER, buyer_keys.node_id.hex(), extra="pay_interval_ms = 500\n")
    buyer_cfg = buyer_config(buyer_dir, "fake-buyer", seller)

    async def scenario() -> None:
        fake_buyer = Recorder("microgrid")  # runs the microgrid service: records its rows
        inbox = fake_buyer.inbox
        start_node(seller)
        net = None
        try:
            await wait_ready(seller)
            net = await NetNode.new(buyer_cfg, router=router(fake_buyer))
            offer_msg = await asyncio.wait_for(inbox.get(), 20)
            assert offer_msg.name == "mg_offer"
            core = BuyerCore(SigningKey(buyer_keys.seed()))
            acc, _ = core.accept(Offer.from_wire(from_wire_fields(offer_msg)), now_ms())
            session = net.session(next(iter(net.sessions)))
            await session.send(_to_wire("mg_accept", acc.to_wire()))
            claims = 0
            while True:
                msg = await asyncio.wait_for(inbox.get(), 20)
                if msg.name != "mg_invoice":
                    continue
                for d in core.on_invoice(from_wire_fields(msg), now_ms()):
                    if isinstance(d, Pay):
                        # Claim the payment on a channel id we invent, then on the seller's
                        # own node id: neither is a channel this buyer holds with the seller.
                        for cid in (os.urandom(32), bytes.fromhex(seller.node_id)):
                            await session.send(make("mg_paid", meter_id=d.meter_id, ref=d.ref,
                                                    payment_id=d.payment_id,
                                                    amount_sat=d.amount_sat, channel_id=cid))
                            claims += 1
                st = await api(seller, "microgrid.status")
                if st["sell"][0]["supply"] == "cut":
                    break
            assert claims >= 2
            st = await api(seller, "microgrid.status")
            row = st["sell"][0]
            assert row["paid_sat"] == 0 and row["unpaid_sat"] > 20
            assert [a["on"] for a in st["actuations"]] == [True, False]  # opened, then cut
            assert len(st["refusals"]) == claims
            assert all(r["what"] == "mg_paid" for r in st["refusals"])
            kinds = [e["kind"] for e in await api(seller, "microgrid.ledger", role="seller")]
            assert "payment_received" not in kinds and kinds[-1] == "supply_cut"
        finally:
            stop_node(seller)
            if net is not None:
                await net.close()

    asyncio.run(scenario())
