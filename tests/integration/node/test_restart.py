"""A node SIGKILLed right after a payment resumes its channel when restarted: it links to its
peer again (discovery, same address), both sides report the same version and balances, and
payments continue both ways. Each side is killed in turn, then the payee while a payment is in
flight. The chain is owned by a separate ``chain serve`` so that killing a node never takes the
chain away from the other."""
from __future__ import annotations

import threading

import pytest

from eschaton.errors import EschatonError
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    channel_pair,
    mirrored,
    pay,
    poll,
)

pytestmark = pytest.mark.timeout(240)


def _kill_and_restart(victim: NodeProc, survivor: NodeProc, cid: str) -> None:
    before_v, before_s = mirrored(victim, survivor, cid)
    victim.kill()
    poll(lambda: victim.id not in survivor.linked(), f"{survivor.name} notices the link is gone")
    assert survivor.running
    old_id = victim.id
    victim.start()
    assert victim.wait_ready() == old_id  # the same node key, read back from its datadir
    poll(lambda: survivor.id in victim.linked() and victim.id in survivor.linked(),
         f"{victim.name} and {survivor.name} linked again", timeout=60)
    after_v, after_s = mirrored(victim, survivor, cid)
    assert after_v == before_v and after_s == before_s  # nothing lost, nothing invented


def test_sigkill_mid_channel_resumes(cluster: Cluster) -> None:
    a, b, cid = channel_pair(cluster, 4_000_000, serve=True, fixed_ports=True)

    # Kill the node with the larger id first: then the survivor is the side that must dial.
    first, second = sorted((a, b), key=lambda n: n.id, reverse=True)
    pay(a, b, cid, 100_000)
    pay(first, second, cid, 3_000)  # the victim pays, then dies without a clean stop
    _kill_and_restart(first, second, cid)
    pay(first, second, cid, 2_000)
    pay(second, first, cid, 1_000)

    pay(second, first, cid, 500)
    _kill_and_restart(second, first, cid)
    pay(second, first, cid, 400)
    pay(first, second, cid, 300)

    # The payee dies while a payment is in flight: whichever side of its fsync the kill lands,
    # the restarted pair agrees, and a payment the payer reported done is in that agreement.
    before, _ = mirrored(a, b, cid)
    outcome: dict[str, object] = {}

    def paying() -> None:
        try:
            outcome["result"] = a.api("channel.pay", channel=cid, amount=777)
        except EschatonError as e:  # a clean refusal or timeout is acceptable; a hang is not
            outcome["result"] = e

    t = threading.Thread(target=paying)
    t.start()
    b.kill()
    b.start().wait_ready()
    t.join(90)
    assert not t.is_alive(), "the payer's request never returned"
    after_a, after_b = mirrored(a, b, cid)
    assert after_a["version"] in (before["version"], before["version"] + 1)
    if isinstance(outcome["result"], dict):
        assert after_a["version"] == before["version"] + 1
        assert after_b["local_sat"] == before["remote_sat"] + 777
    pay(b, a, cid, 200)
    pay(a, b, cid, 100)

    for n in (a, b):
        st = n.cli("channel", "list")
        assert [c["state"] for c in st] == ["OPEN"]
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"


def test_chain_client_node_follows_the_chain_after_its_owner_restarts(cluster: Cluster) -> None:
    a = cluster.node("a", listen=["tcp://127.0.0.1:0"])
    b = cluster.node("b", listen=["tcp://127.0.0.1:0"])
    a.start().wait_ready()  # a owns the chain and serves it
    b.start().wait_ready()
    height = cluster.chain.mine(2)
    poll(lambda: b.api("node.status")["chain"]["height"] == height, "b follows the chain")
    a.kill()
    a.start().wait_ready()
    height = cluster.chain.mine(1)
    poll(lambda: b.api("node.status")["chain"]["height"] == height, "b follows the chain again",
         timeout=15)
