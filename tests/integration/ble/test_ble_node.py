"""Two node processes linked only over Bluetooth LE: each node's bumble host stack talks HCI to
its own virtual controller (``relay.py``), and the controllers share one simulated radio link.
The same Noise link and channel protocol run over the L2CAP channel as over TCP."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.ble.conftest import Air, kernel_has_bluetooth
from tests.integration.node.harness import (
    Cluster,
    NodeProc,
    mirrored,
    open_channel,
    pay,
    poll,
    run_cli,
)

pytestmark = [pytest.mark.timeout(120)]

A_ADDR = "C0:00:00:00:00:0A"


def _pair(cluster: Cluster, air: Air):  # type: ignore[no-untyped-def]
    a = cluster.node("a", listen=[f"ble://{air.adapter(0)}?address={A_ADDR}"])
    a.start().wait_ready()
    b = cluster.node("b", peers=[(a.id, f"ble://{air.adapter(1)}/{A_ADDR}")])
    b.start().wait_ready()
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "a and b linked over BLE")
    via = {p["id"]: p.get("via", "") for p in b.cli("peer", "list")}
    assert via[a.id] == f"ble://{A_ADDR}", via
    return a, b


@pytest.mark.slow
def test_channel_payment_over_ble_and_the_link_comes_back_after_a_drop(
        cluster: Cluster, air: Air) -> None:
    a, b = _pair(cluster, air)
    cluster.chain.mine(101, to=a.wallet("address")["address"])
    poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
    cid = open_channel(cluster.chain, a, b, 1_000_000)
    pay(a, b, cid, 120_000)
    pay(b, a, cid, 20_000)
    before = mirrored(a, b, cid)

    # The radio link is lost (supervision timeout on both controllers): both nodes see the link
    # close, b's static peer redials, and the channel goes on from the state it had.
    closed_before = len(_closed(b, a))
    assert air.drop() >= 1
    # Watched in the event log: the redial can be quicker than one CLI round trip.
    poll(lambda: len(_closed(b, a)) > closed_before, "b sees the link drop")
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "a and b linked again", timeout=30)
    assert mirrored(a, b, cid) == before
    pay(a, b, cid, 5_000)
    va, vb = mirrored(a, b, cid)
    assert va["close_sat"] == before[0]["close_sat"] - 5_000
    for n in (a, b):
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0


@pytest.mark.parametrize("adapter", ["hci-socket:0", "tcp-client:127.0.0.1:{closed}"])
def test_a_node_without_an_adapter_stops_with_one_line(tmp_path: Path, adapter: str) -> None:
    if adapter.startswith("hci-socket") and kernel_has_bluetooth():
        pytest.skip("this kernel has Bluetooth: hci-socket:0 may be a real adapter")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    n = NodeProc(tmp_path, "a", chain_dir=None, listen=[f"ble://{adapter.format(closed=closed)}"])
    p = run_cli("node", "run", "--config", str(n.config), check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, (p.returncode, p.stderr[-2000:])
    assert "no Bluetooth adapter at" in lines[0] and "Traceback" not in p.stdout + p.stderr


def _closed(n: NodeProc, peer: NodeProc) -> list[dict[str, object]]:
    return [r for r in n.logs if r.get("event") == "link_closed" and r.get("id") == peer.id]
