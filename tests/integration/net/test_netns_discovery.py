"""Two node processes in separate network namespaces, joined by a veth pair, find each other by
signed beacons alone (no static peers) and then build one authenticated link. Beacons replayed
or tampered with, broadcast on the same segment, are refused. A node whose clock is an hour
behind is still found (a Pi has no real-time clock), with its clock offset reported."""
from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import need_root, need_tool

from .procs import NodeProcess

pytestmark = [pytest.mark.root, pytest.mark.timeout(90)]


@pytest.fixture
def veth_pair():
    need_root()
    ip = need_tool("ip")
    uid = uuid.uuid4().hex[:6]
    ns = (f"escnet-{uid}-a", f"escnet-{uid}-b")
    dev = (f"ve{uid}a", f"ve{uid}b")
    created: list[str] = []

    def run(*args: str) -> None:
        subprocess.run([ip, *args], check=True, capture_output=True, timeout=10)

    try:
        for n in ns:
            run("netns", "add", n)
            created.append(n)
        run("link", "add", dev[0], "netns", ns[0], "type", "veth", "peer", "name", dev[1],
            "netns", ns[1])
        for n, d, addr in zip(ns, dev, ("10.77.0.1/24", "10.77.0.2/24"), strict=True):
            run("-n", n, "addr", "add", addr, "brd", "+", "dev", d)
            run("-n", n, "link", "set", d, "up")
            run("-n", n, "link", "set", "lo", "up")
        yield ip, ns, dev
    finally:
        for n in created:  # deleting a namespace also deletes its end of the veth pair
            subprocess.run([ip, "netns", "del", n], capture_output=True, timeout=10)


INJECT_PORT = 47999
SNIFF = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 47800))
s.settimeout(15)
while True:
    data, addr = s.recvfrom(2048)
    if addr[0] == "10.77.0.1" and data[:4] == b"esb1":
        print(data.hex())
        break
"""
INJECT = """
import socket, sys, time, secrets
from eschaton.core.link.beacon import make_beacon
from eschaton.core.link.identity import NodeKeys
beacon = bytes.fromhex(sys.argv[1])
tampered = beacon.replace(b"10.77.0.1", b"10.77.0.9")  # redirect dialers: signature breaks
behind = NodeKeys.generate(secrets.token_bytes)
stale = make_beacon(behind, urls=["tcp://10.77.0.1:1"], ts_ms=int((time.time() - 3600) * 1000), seq=1)
print(behind.node_id.hex())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[2].encode())
s.bind(("0.0.0.0", INJECT_PORT))
for d in (beacon, tampered, stale):
    s.sendto(d, ("10.77.0.255", 47800))
""".replace("INJECT_PORT", str(INJECT_PORT))


def _refusal(proc: NodeProcess, word: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for ev in proc.seen:
            if (ev["event"] == "beacon_refused" and ev["source"] == f"10.77.0.1:{INJECT_PORT}"
                    and word in ev["reason"]):
                return ev
        assert time.monotonic() < deadline, f"no refusal mentioning {word!r}: {proc.seen}"
        with contextlib.suppress(queue.Empty):
            proc.seen.append(proc.events.get(timeout=0.5))


def _config(path: Path, datadir: Path, interface: str | None) -> Path:
    iface = "" if interface is None else f'interface = "{interface}"'
    path.write_text(f"""
[node]
datadir = "{datadir}"
name = "{datadir.name}"

[network]
listen = ["tcp://0.0.0.0:9735"]

[network.discovery]
{iface}
port = 47800
interval = 0.5
""")
    return path


def test_the_default_config_finds_and_links_neighbours(veth_pair, tmp_path: Path) -> None:
    """No interface configured (as in the shipped image): each node beacons on every interface
    with a broadcast address, announces its wildcard listen URL as such, and the receiver dials
    the address the beacon came from."""
    ip, ns, dev = veth_pair
    procs = []
    try:
        for name, n in zip(("a", "b"), ns, strict=True):
            cfg = _config(tmp_path / f"{name}.toml", tmp_path / name, None)
            procs.append(NodeProcess(cfg, prefix=[ip, "netns", "exec", n]))
        a, b = procs
        sa, sb = a.wait_for(event="started"), b.wait_for(event="started")
        assert sa["advertise"] == sb["advertise"] == ["tcp://0.0.0.0:9735"]
        seen_by_a = a.wait_for(event="neighbour", id=sb["id"])
        seen_by_b = b.wait_for(event="neighbour", id=sa["id"])
        assert seen_by_a["urls"] == ["tcp://10.77.0.2:9735"], seen_by_a
        assert seen_by_b["urls"] == ["tcp://10.77.0.1:9735"], seen_by_b
        assert a.wait_for(event="link_open", id=sb["id"])
        assert b.wait_for(event="link_open", id=sa["id"])
    finally:
        for p in procs:
            p.stop()


def test_nodes_find_each_other_by_beacons(veth_pair, tmp_path: Path) -> None:
    ip, ns, dev = veth_pair
    procs = []
    try:
        for name, n, d in zip(("a", "b"), ns, dev, strict=True):
            cfg = _config(tmp_path / f"{name}.toml", tmp_path / name, d)
            procs.append(NodeProcess(cfg, prefix=[ip, "netns", "exec", n]))
        a, b = procs
        sa, sb = a.wait_for(event="started"), b.wait_for(event="started")
        assert sa["advertise"] == ["tcp://10.77.0.1:9735"]
        assert sb["advertise"] == ["tcp://10.77.0.2:9735"]
        seen_by_a = a.wait_for(event="neighbour", id=sb["id"])
        seen_by_b = b.wait_for(event="neighbour", id=sa["id"])
        assert seen_by_a["urls"] == ["tcp://10.77.0.2:9735"] and seen_by_a["name"] == "b"
        assert seen_by_b["urls"] == ["tcp://10.77.0.1:9735"]
        assert seen_by_a["source"].startswith("10.77.0.2:")
        # The node with the smaller id dials; both end up with one open link.
        assert a.wait_for(event="link_open", id=sb["id"])
        assert b.wait_for(event="link_open", id=sa["id"])

        # Capture one of A's beacons off the wire inside B's namespace...
        captured = subprocess.run(
            [ip, "netns", "exec", ns[1], sys.executable, "-c", SNIFF], capture_output=True,
            text=True, timeout=20, check=True).stdout.strip()
        # ...then, from A's namespace, replay it, tamper with it, and send one from a node whose
        # clock is an hour behind.
        behind = subprocess.run([ip, "netns", "exec", ns[0], sys.executable, "-c", INJECT, captured,
                                 dev[0]], capture_output=True, text=True, timeout=20,
                                check=True).stdout.strip()
        for word in ("replayed", "signature"):
            _refusal(b, word)  # each forgery refused, with that reason, by B's validator
        found = b.wait_for(event="neighbour", id=behind)
        assert -3700 < found["clock_offset_s"] < -3500, found
        # The genuine link survived the noise.
        assert not [e for e in b.seen if e["event"] == "link_closed"]
    finally:
        for p in procs:
            p.stop()
