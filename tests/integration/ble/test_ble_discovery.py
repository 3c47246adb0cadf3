"""Discovery over Bluetooth LE advertisements: two node processes with a ``ble://`` listener and
``[network.discovery] ble = true``, no static peer and no IP path between them, find each other
by scanning, read each other's signed beacon over GATT and link (the lower id dials)."""
from __future__ import annotations

import pytest

from tests.integration.ble.conftest import Air
from tests.integration.node.harness import Cluster, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_nodes_find_each_other_by_advertisement_and_link(cluster: Cluster, air: Air) -> None:
    nodes = []
    for i, name in enumerate(("a", "b")):
        n = cluster.node(name, listen=[f"ble://{air.adapter(i)}"])
        n.config.write_text(n.config.read_text().replace(
            "[network.discovery]\nenabled = false",
            "[network.discovery]\nenabled = false\nble = true\ninterval = 0.5"))
        nodes.append(n.start())
    a, b = nodes
    for n in nodes:
        n.wait_ready()
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "a and b linked by BLE discovery",
         timeout=45)
    lower, upper = sorted(nodes, key=lambda n: bytes.fromhex(n.id))
    via = {p["id"]: p.get("via", "") for p in lower.cli("peer", "list")}
    assert via[upper.id].startswith("ble://"), via
    found = [r for r in lower.logs if r.get("event") == "neighbour" and r.get("id") == upper.id]
    assert found and found[0]["urls"][0].startswith(f"ble://{air.adapter(0 if lower is a else 1)}/")

    # The link drops; the lower id hears the advertisement again and redials.
    assert air.drop() >= 1
    poll(lambda: upper.id not in lower.linked(), "the link drops")
    poll(lambda: a.id in b.linked() and b.id in a.linked(), "linked again", timeout=45)
    for n in nodes:
        assert not [r for r in n.logs if "exc" in r], f"{n.name} logged a traceback"
        assert n.stop() == 0
