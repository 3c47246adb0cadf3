"""A seller node and a buyer that does not run the microgrid service (an older node, or one
without ``[microgrid]``) share a link: the seller records and sends no offer to it, nobody's
link drops, and the echo service still answers across it.

The seller is a real node process (flow meter and valve on mock pins); the buyer is this test
process: a real ``NetNode`` whose router runs the channel service only.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.daemon.microgrid import OFFER_RESEND_S
from eschaton.demo.village import api, start_node, stop_node, wait_ready
from eschaton.net.identity import create_identity
from eschaton.net.mesh import NetNode
from tests.integration.microgrid.lone_seller import buyer_config, lone_seller
from tests.routes import Recorder, router

METER = "h3-water-h1"


@pytest.mark.timeout(120)
def test_a_buyer_without_the_microgrid_service_is_offered_nothing_and_stays_linked(tmp_path: Path) -> None:
    buyer_dir = tmp_path / "buyer"
    buyer_keys = create_identity(buyer_dir)
    seller = lone_seller(tmp_path, "house3", METER, buyer_keys.node_id.hex())
    buyer_cfg = buyer_config(buyer_dir, "old-buyer", seller)

    async def scenario() -> None:
        channel = Recorder("channel")  # the old buyer runs channels, not the microgrid
        start_node(seller)
        net = None
        try:
            await wait_ready(seller)
            net = await NetNode.new(buyer_cfg, router=router(channel))
            await asyncio.wait_for(channel.opened_event.wait(), 20)
            session = channel.opened[0]
            assert session.link.peer_runs("microgrid") and session.link.peer_runs("echo")
            peers = await api(seller, "peer.list")
            assert [p["services"] for p in peers if p["linked"]] == [["channel"]]
            # Several offer rounds pass (an offer is due every OFFER_RESEND_S to a linked buyer).
            await asyncio.sleep(2 * OFFER_RESEND_S + 1)
            assert channel.got == []
            assert net.stats()["ignored_messages"] == 0 and net.stats()["refused_messages"] == 0
            ledger = await api(seller, "microgrid.ledger", role="seller")
            assert [e for e in ledger if e["kind"] == "offer_made"] == []  # none recorded
            assert session.is_open and len(net.sessions) == 1
            st = await api(seller, "microgrid.status")
            assert st["sell"][0]["supply"] == "none" and not st["sell"][0]["agreed"]
        finally:
            stop_node(seller)
            if net is not None:
                await net.close()
        log = seller.log.read_text()
        assert "does not run the microgrid service" not in log  # not even attempted

    asyncio.run(scenario())
