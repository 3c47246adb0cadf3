"""bat0's address at boot, on two network namespaces joined by a veth pair (the host kernel has
no batman-adv: the second namespace's end is simply called bat0). ARP probes are real: the
kernel of the first namespace answers for an address it holds.

A node whose first candidate is held by another machine reports the collision and takes its
second candidate; with the first free it takes the first; a fixed address that is taken is
reported and not configured."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest

from eschaton.core.link.identity import NodeKeys
from eschaton.field.meshaddr import candidates
from tests.conftest import need_root, need_tool

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

PREFIX = ipaddress.IPv4Network("10.77.0.0/16")
NODE_ID = NodeKeys.from_seed(bytes(32)).node_id.hex()


@pytest.fixture
def two_machines() -> Iterator[tuple[str, str]]:
    need_root()
    need_tool("ip")
    a, b = f"escma-{os.getpid()}-a", f"escma-{os.getpid()}-b"
    made: list[str] = []
    try:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        subprocess.run(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "bat0",
                        "netns", b], check=True)
        for ns, dev in ((a, "eth0"), (b, "bat0")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        yield a, b
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def mesh_step(ns: str, root: Path, address: str | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    (root / "etc/eschaton").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/eschaton").mkdir(parents=True, exist_ok=True)
    (root / "etc/eschaton/mesh.json").write_text(json.dumps({
        "node_id": NODE_ID, "prefix": str(PREFIX), "address": address, "interfaces": ["bat0"],
        "netem": None, "wifi": None}))
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "eschaton.field", "mesh",
                        "--root", str(root)], capture_output=True, text=True, timeout=60)
    status: dict[str, object] = json.loads((root / "var/lib/eschaton/mesh-address.json").read_text())
    return r, status


def addresses(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-j", "addr", "show", "dev", "bat0"], capture_output=True,
                         text=True, check=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0]["addr_info"] if a["family"] == "inet"]


def test_a_collision_moves_to_the_next_candidate(two_machines: tuple[str, str], tmp_path: Path) -> None:
    a, b = two_machines
    first, second = islice(candidates(bytes.fromhex(NODE_ID), PREFIX), 2)
    subprocess.run(["ip", "-n", a, "addr", "add", f"{first}/16", "dev", "eth0"], check=True)
    r, status = mesh_step(b, tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"eschaton-mesh: {first} is already in use on the mesh, trying the next" in r.stdout
    assert f"eschaton-mesh: bat0 is {second}/16" in r.stdout
    assert status == {"address": str(second), "prefix": str(PREFIX), "collisions": [str(first)]}
    assert addresses(b) == [f"{second}/16"]


def test_a_free_first_candidate_is_taken(two_machines: tuple[str, str], tmp_path: Path) -> None:
    _, b = two_machines
    first = next(candidates(bytes.fromhex(NODE_ID), PREFIX))
    r, status = mesh_step(b, tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert status == {"address": str(first), "prefix": str(PREFIX), "collisions": []}
    assert addresses(b) == [f"{first}/16"]
    # With the prefix's broadcast address, which discovery beacons to (none: no beacons at all).
    brd = str(PREFIX.broadcast_address)
    out = subprocess.run(["ip", "-n", b, "-j", "addr", "show", "dev", "bat0"], capture_output=True, text=True,
                         check=True).stdout
    assert [a.get("broadcast") for a in json.loads(out)[0]["addr_info"] if a["family"] == "inet"] == [brd]
    seen = subprocess.run(["ip", "netns", "exec", b, sys.executable, "-c",
                           "from eschaton.net.discovery import broadcast_addresses; print(broadcast_addresses())"],
                          capture_output=True, text=True, check=True).stdout
    assert brd in seen, seen


def test_a_taken_fixed_address_is_reported_not_used(two_machines: tuple[str, str], tmp_path: Path) -> None:
    a, b = two_machines
    subprocess.run(["ip", "-n", a, "addr", "add", "10.77.0.1/16", "dev", "eth0"], check=True)
    r, status = mesh_step(b, tmp_path / "b", address="10.77.0.1")
    assert r.returncode == 1
    assert "eschaton-mesh: 10.77.0.1 is already in use on the mesh\n" in r.stdout
    assert "no free mesh address" in r.stdout
    assert status == {"address": None, "prefix": str(PREFIX), "collisions": ["10.77.0.1"]}
    assert addresses(b) == []
