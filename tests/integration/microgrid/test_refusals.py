"""A buyer node refuses bad invoices sent over a real encrypted link, records each refusal in
its ledger, answers ``mg_refused``, and pays nothing for them.

The seller here is this test process: a real ``NetNode`` with its own key, driving a real
``SellerCore`` (so offers and good invoices are genuinely signed) and crafting the bad ones.
The buyer is a real node process with its own flow meter (mock pin driven in its process).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from eschaton.config import parse_config
from eschaton.core.microgrid.decisions import SendInvoice
from eschaton.core.microgrid.seller import SellerCore
from eschaton.core.microgrid.terms import Acceptance, Service, Tariff
from eschaton.daemon.microgrid import _to_wire, from_wire_fields
from eschaton.demo.village import House, api, free_port, start_node, stop_node, wait_ready
from eschaton.net.identity import create_identity
from eschaton.net.mesh import NetNode
from tests.routes import Recorder, router

METER = "h9-water-h1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.timeout(120)
def test_bad_invoices_over_a_real_link_are_refused_logged_and_unpaid(tmp_path: Path) -> None:
    seller_dir, buyer = tmp_path / "seller", House("house1", "buyer")
    seller_keys = create_identity(seller_dir)
    seller_port = free_port()
    buyer.datadir = tmp_path / "house1"
    buyer.node_id = create_identity(buyer.datadir).node_id.hex()
    buyer.port, buyer.config, buyer.log = free_port(), buyer.datadir / "node.toml", buyer.datadir / "node.log"
    buyer.flows = buyer.datadir / "flows.json"
    buyer.flows.write_text(json.dumps([{"name": "inlet", "pin": 5, "hz": 45.0}]))  # 100 mL/s
    buyer.config.write_text(f'''
[node]
datadir = "{buyer.datadir}"
name = "house1"
[network]
listen = ["tcp://127.0.0.1:{buyer.port}"]
[network.discovery]
enabled = false
[[network.peers]]
id = "{seller_keys.node_id.hex()}"
url = "tcp://127.0.0.1:{seller_port}"
[chain]
datadir = "{tmp_path / 'chain'}"
[hardware]
backend = "mock"
[[meter]]
name = "inlet"
type = "pulse_flow"
pin = 5
pulses_per_litre = 450
[microgrid]
[[microgrid.buy]]
seller = "{seller_keys.node_id.hex()}"
max_price_msat = 100000
meter = "inlet"
tolerance_units = 50
''')
    seller_cfg = parse_config(f'''
[node]
datadir = "{seller_dir}"
name = "fake-seller"
[network]
listen = ["tcp://127.0.0.1:{seller_port}"]
[network.discovery]
enabled = false
''', "seller.toml")

    async def scenario() -> None:
        fake_seller = Recorder("microgrid")  # runs the microgrid service: records its rows
        inbox, opened = fake_seller.inbox, fake_seller.opened_event
        net = await NetNode.new(seller_cfg, router=router(fake_seller))
        try:
            start_node(buyer)
            await wait_ready(buyer)
            await asyncio.wait_for(opened.wait(), 20)
            session = net.session(next(iter(net.sessions)))
            core = SellerCore(SigningKey(seller_keys.seed()))
            tariff = Tariff(Service.WATER, "litre", "mL", price_msat=50_000, credit_limit_sat=1000)
            offer, _ = core.offer(offer_id=b"\x01" * 16, tariff=tariff, meter_id=METER,
                                  start_units=0, now_ms=now_ms(), expires_ms=now_ms() + 60_000,
                                  buyer=bytes.fromhex(buyer.node_id))
            await session.send(_to_wire("mg_offer", offer.to_wire()))
            acc = await asyncio.wait_for(inbox.get(), 10)
            assert acc.name == "mg_accept"
            core.on_acceptance(Acceptance.from_wire(from_wire_fields(acc)), now_ms())
            await asyncio.sleep(1.5)  # the buyer's own meter counts ~150 mL meanwhile

            def invoice(units: int) -> dict[str, Any]:
                t = now_ms()
                return next(d.invoice.to_wire() for d in core.on_reading(METER, units, t, t)
                            if isinstance(d, SendInvoice))

            good = invoice(40)  # 40 mL x 0.05 sat = 2 sat
            await session.send(_to_wire("mg_invoice", good))

            async def buyer_ledger() -> list[dict[str, Any]]:
                return list(await api(buyer, "microgrid.ledger", role="buyer"))

            for _ in range(100):
                if any(e["kind"] == "payment_sent" for e in await buyer_ledger()):
                    break
                await asyncio.sleep(0.1)
            assert [e["kind"] for e in await buyer_ledger()] == [
                "agreement", "invoice_accepted", "payment_sent"]

            bad_version = dict(invoice(60), v=2)
            unsigned = dict(invoice(70), sig=bytes(64))
            over = invoice(5_000)  # 5 L claimed; the buyer's meter saw well under 1 L
            cases = [("malformed", bad_version), ("bad_signature", unsigned),
                     ("over_metered", over), ("replayed", good)]
            for reason, d in cases:
                await session.send(_to_wire("mg_invoice", d))
                msg = await asyncio.wait_for(inbox.get(), 10)
                assert msg.name == "mg_refused" and msg["reason"] == reason, (reason, msg.fields)

            entries = await buyer_ledger()
            refused = [e for e in entries if e["kind"] == "invoice_refused"]
            assert [e["reason"] for e in refused] == [r for r, _ in cases]
            assert sum(e["amount_sat"] for e in entries if e["kind"] == "payment_sent") == 2
            status = await api(buyer, "microgrid.status")
            assert status["buy"][0]["paid_sat"] == 2 and status["buy"][0]["invoices"] == 1
            assert [r["reason"] for r in status["refusals"]] == [r for r, _ in cases]
        finally:
            stop_node(buyer)
            await net.close()

    asyncio.run(scenario())
