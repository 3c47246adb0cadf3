"""Discovery over Bluetooth LE advertisements: two node processes with a ``ble://`` listener and
``[network.discovery] ble = true``, no static peer and no IP path between them, find each other
by scanning, read each other's signed beacon over GATT and link (the lower id dials)."""
from __future__ import annotations

import pytest

from tests.integration.ble.conftest import Air
from tests.integration.node.harness import Cluster, NodeProc, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _linked(nodes: list[NodeProc], what: str, timeout: float) -> None:
    """Every node linked to every other; on a timeout the nodes' network log lines say why."""
    def done() -> bool:
        return all({y.id for y in nodes if y is not x} <= x.linked() for x in nodes)
    try:
        poll(done, what, timeout=timeout)
    except AssertionError as exc:
        lines = [f"{n.name} {n.id[:8]}: {r.get('msg')} {r.get('exc', '')}" for n in nodes
                 for r in n.logs if r.get("msg") and r.get("logger", "eschaton.net").startswith(
                     ("eschaton.net", "eschaton.daemon"))]
        raise AssertionError(f"{exc}\n" + "\n".join(lines[-60:])) from None


def _discovering(cluster: Cluster, name: str, adapter: str) -> NodeProc:
    """A node listening on ``adapter`` with BLE discovery on and UDP beacons off."""
    n = cluster.node(name, listen=[f"ble://{adapter}"])
    n.config.write_text(n.config.read_text().replace(
        "[network.discovery]\nenabled = false",
        "[network.discovery]\nenabled = false\nble = true\ninterval = 0.5"))
    return n.start()


def test_nodes_find_each_other_by_advertisement_and_link(cluster: Cluster, air: Air) -> None:
    nodes = [_discovering(cluster, name, air.adapter(i)) for i, name in enumerate("ab")]
    a, b = nodes
    for n in nodes:
        n.wait_ready()
    _linked(nodes, "a and b linked by BLE discovery", timeout=45)
    lower, upper = sorted(nodes, key=lambda n: bytes.fromhex(n.id))
    via = {p["id"]: p.get("via", "") for p in lower.cli("peer", "list")}
    assert via[upper.id].startswith("ble://"), via
    found = [r for r in lower.logs if r.get("event") == "neighbour" and r.get("id") == upper.id]
    assert found and found[0]["urls"][0].startswith(f"ble://{air.adapter(0 if lower is a else 1)}/")

    # The link drops; the lower id hears the advertisement again and redials.
    closed_before = len(_closed(lower, upper))
    assert air.drop() >= 1
    # Watched in the event log: the redial can be quicker than one CLI round trip.
    poll(lambda: len(_closed(lower, upper)) > closed_before, "lower sees the link drop")
    _linked(nodes, "linked again", timeout=45)
    for n in nodes:
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0


@pytest.mark.timeout(120)
def test_three_nodes_mesh_over_ble(cluster: Cluster) -> None:
    """A node linked to one neighbour advertises again, so the third finds both."""
    air = Air(3)
    try:
        nodes = [_discovering(cluster, name, air.adapter(i)) for i, name in enumerate("abc")]
        for n in nodes:
            n.wait_ready()
        _linked(nodes, "each linked to both others", timeout=60)
        for n in nodes:
            assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
            assert n.stop() == 0
    finally:
        air.close()


def _closed(n: NodeProc, peer: NodeProc) -> list[dict[str, object]]:
    return [r for r in n.logs if r.get("event") == "link_closed" and r.get("id") == peer.id]
