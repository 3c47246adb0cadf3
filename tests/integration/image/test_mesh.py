"""Two guests of the SD image, each configured only by ``eschaton.toml`` on its FAT partition
(written with mtools, as an installer would), on one emulated wire: they mesh over batman-adv,
their nodes link, and the house finds and uses the gateway's chain, with nothing typed to set
any of it up.

What this proves:
- the boot-partition configuration: guest a is ``role = "gateway"`` named ``gw-a``, guest b
  ``role = "house"`` named ``house-b``; each takes its name as hostname and its file is applied
  (``node status`` ``boot.config.ok``);
- the mesh at boot: systemd-networkd enslaves the wired NIC to bat0 (the default ``[mesh]
  interfaces``: ``eth*``, ``en*``) and eschaton-mesh.service gives bat0 the first candidate
  address derived from the node id inside 10.99.0.0/16 (computed here from the node id and
  compared), after an ARP probe; each guest lists the other as a batman neighbour;
- discovery and one link over bat0 between the two derived addresses;
- the chain found by announcement: the gateway serves its embedded chain on every address and
  announces it; the house (``discover``, no URL) follows it, pins the gateway, is funded on it,
  opens a trade channel to the gateway over the link and pays.

The wire: a namespace of the test's own (``esch-mesh-<pid>``) holding a bridge and two tap
devices, no uplink: nothing leaves the host. Both QEMU processes run inside it. Each guest
boots a qcow2 overlay of its own configured copy of the unbooted test image, so each node makes
its own key on first boot. Both guests boot at once (two vCPUs of TCG on a 2-core host in all).
The console is used to read state and to operate the nodes (mine, fund, open, pay), never to
configure the mesh, the addresses or the chain.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eschaton.field.meshaddr import candidates
from tests.conftest import need_file, need_root, need_tool
from tests.integration.image.qemu import (
    VIRTIO_NET_ROM,
    Console,
    configured,
    guest_command,
    overlay,
    stop,
)

# After the shared build (conftest.py) the test takes about 12 minutes on the 2-core machine
# (see docs/image.md). The timeout also covers the ~11-minute build when this module runs alone.
pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.root, pytest.mark.timeout(1800)]

CONFIG = "/etc/eschaton/node.toml"
PORT = 9735
CHAIN_PORT = 50001
PREFIX = ipaddress.IPv4Network("10.99.0.0/16")


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    tap: str
    mac: str
    toml: str


SPECS = (Spec("a", "tapA", "52:54:00:00:00:0a", '[node]\nrole = "gateway"\nname = "gw-a"\n'),
         Spec("b", "tapB", "52:54:00:00:00:0b", '[node]\nrole = "house"\nname = "house-b"\n'))


@dataclass(slots=True)
class Guest:
    spec: Spec
    console: Console
    node_id: str = ""
    addr: str = ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture()
def wire() -> Iterator[str]:
    """A namespace with a bridge and the two guests' taps, all up, no uplink. Deleted after."""
    need_root()
    need_tool("ip")
    ns = f"esch-mesh-{os.getpid()}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "add", "br0", "type", "bridge")
        for spec in SPECS:
            _ip("-n", ns, "tuntap", "add", spec.tap, "mode", "tap")
            _ip("-n", ns, "link", "set", spec.tap, "master", "br0")
            _ip("-n", ns, "link", "set", spec.tap, "up")
        _ip("-n", ns, "link", "set", "br0", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.fixture()
def guests(bootable: Path, wire: str, tmp_path: Path) -> Iterator[list[Guest]]:
    """Both guests, each with its own eschaton.toml, powered on together inside the wire's
    namespace."""
    procs: list[tuple[subprocess.Popen[bytes], Console]] = []
    try:
        for spec in SPECS:
            card = configured(bootable, tmp_path / f"{spec.name}.img", spec.toml)
            disk = overlay(card, tmp_path / f"{spec.name}.qcow2")
            need_file(VIRTIO_NET_ROM)
            nic = ["-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
                   "-device", f"virtio-net-pci,netdev=n0,mac={spec.mac}"]
            # One vCPU each: two guests booting at once share the host's 2 cores.
            cmd = ["ip", "netns", "exec", wire, *guest_command(bootable, disk, nic, smp=1)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            procs.append((proc, Console(proc, tmp_path / f"console-{spec.name}.log")))
        yield [Guest(spec, console) for spec, (_, console) in zip(SPECS, procs, strict=True)]
    finally:
        for proc, console in procs:
            stop(proc, console)
        print(f"serial console logs: {tmp_path}/console-*.log")


def _poll(c: Console, command: str, done: Callable[[str], bool], timeout: float, what: str) -> str:
    """Run ``command`` in the guest until ``done(output)``; its last output."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out = c.run(command)
        if rc == 0 and done(out):
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last output ({rc}):\n{out}")
        time.sleep(1)


def _contains(text: str) -> Callable[[str], bool]:
    return lambda out: text in out


def _journal(g: Guest) -> str:
    _, out = g.console.run("journalctl -b -u eschaton -o cat --no-pager | tail -n 40")
    return f"--- eschaton journal of guest {g.spec.name}:\n{out}"


def _peer_list(c: Console) -> list[dict[str, object]]:
    out = c.check(f"eschaton peer list --json --config {CONFIG}")
    peers: list[dict[str, object]] = json.loads(out)
    return peers


# A 15 s listen on the discovery port (the image has no tcpdump): what reaches the house.
LISTEN = ("python3 -c 'exec(\"import socket\\ns=socket.socket(2,2)\\ns.setsockopt(1,2,1)\\n"
          "s.bind((\\\"\\\",47800))\\ns.settimeout(15)\\nfor _ in range(6):\\n"
          " d,a=s.recvfrom(2048);print(\\\"got\\\",a,len(d),d[:4])\")'")


def _diagnose_discovery(gateway: Guest, house: Guest) -> None:
    """What each side of the chain announcement saw, printed when the house's node did not come
    up (it waits for the gateway's announcement before it starts)."""
    for cmd in ("journalctl -b -u eschaton --no-pager | tail -n 40", "ip -4 -o addr", "ss -ulpn",
                "cat /etc/eschaton/node.toml"):
        print(f"--- gateway: {cmd}\n{gateway.console.run(cmd)[1]}")
    for cmd in ("ip -4 -o addr", "cat /etc/eschaton/node.toml", "systemctl stop eschaton; " + LISTEN):
        print(f"--- house: {cmd}\n{house.console.run(cmd, timeout=60)[1]}")


def test_two_nodes_mesh_link_and_share_a_chain_from_their_boot_files(guests: list[Guest]) -> None:
    started = time.monotonic()
    a, b = guests
    for g in guests:
        g.console.login(600)
        print(f"guest {g.spec.name}: boot to a shell: {time.monotonic() - started:.0f} s")

    # batman-adv, set up at boot: the other guest's NIC is an originator neighbour of ours.
    for g, other in ((a, b), (b, a)):
        _poll(g.console, "batctl n", _contains(other.spec.mac), 300,
              f"{other.spec.name} as a batman neighbour of {g.spec.name}")
    print(f"batman neighbours: {time.monotonic() - started:.0f} s")

    for g in guests:
        try:
            g.console.wait_node_active(600)
        except AssertionError:
            _diagnose_discovery(a, b)
            raise
        status = json.loads(g.console.check(f"eschaton node status --json --config {CONFIG}"))
        g.node_id = status["id"]
        assert re.fullmatch(r"[0-9a-f]{64}", g.node_id), status
        print(f"guest {g.spec.name}: eschaton.service active: {time.monotonic() - started:.0f} s")
        # Its boot file, applied; its name; its mesh address, the first derived candidate.
        assert status["boot"]["config"]["ok"] is True, status
        name = {"a": "gw-a", "b": "house-b"}[g.spec.name]
        assert g.console.check("hostname").strip() == name
        assert status["name"] == name, status
        expected = str(next(candidates(bytes.fromhex(g.node_id), PREFIX)))
        mesh = _poll(g.console, "cat /var/lib/eschaton/mesh-address.json", _contains('"address"'), 120,
                     f"{g.spec.name}'s mesh address")
        assert json.loads(mesh) == {"address": expected, "prefix": str(PREFIX), "collisions": []}, mesh
        assert f"inet {expected}/16" in g.console.check("ip -4 -o addr show dev bat0")
        g.addr = expected
    assert a.node_id != b.node_id
    for g, other in ((a, b), (b, a)):
        out = g.console.check(f"batctl ping -c 2 {other.spec.mac}", timeout=60)
        assert re.search(r"2 packets transmitted, 2 received", out), out

    # Discovery, then one link (the smaller id dials): each side lists the other as linked.
    for g, other in ((a, b), (b, a)):
        deadline = time.monotonic() + 300
        while True:
            entry = next((p for p in _peer_list(g.console) if p.get("id") == other.node_id), None)
            if entry is not None and entry.get("linked") is True:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{g.spec.name} never linked to {other.spec.name}: {entry}\n"
                                     + "\n".join(_journal(x) for x in guests))
            time.sleep(1)
        # The link's far end is the other guest's bat0 address.
        assert str(entry.get("via", "")).startswith(f"tcp://{other.addr}:"), entry
    print(f"linked: {time.monotonic() - started:.0f} s")
    for g, other in ((a, b), (b, a)):
        out = g.console.check(f"ss -tnH state established '( sport = :{PORT} or dport = :{PORT} )'")
        assert re.search(rf"{re.escape(g.addr)}:\d+\s+{re.escape(other.addr)}:\d+", out), out

    _channel_across_the_mesh(a, b, started)

    for g in guests:
        g.console.send("systemctl poweroff")
    for g in guests:
        assert g.console.proc.wait(timeout=300) == 0
    print(f"both guests powered off: {time.monotonic() - started:.0f} s")


def _json(c: Console, command: str, timeout: float = 300) -> Any:
    return json.loads(c.check(f"{command} --json --config {CONFIG}", timeout=timeout))


def _channel_across_the_mesh(a: Guest, b: Guest, started: float) -> None:
    """One chain for the mesh, found by the house itself: the gateway serves its embedded chain
    and announces it; the house follows it (pinned), is funded on it, opens a trade channel to
    the gateway over their link, and pays."""
    st = _json(b.console, "eschaton node status")
    assert st["chain"]["backend"] == "electrum", st
    assert b.console.check("cat /var/lib/eschaton/chain-gateway").strip() == a.node_id
    assert _json(a.console, "eschaton node status")["chain"]["backend"] == "embedded"
    out = b.console.check("journalctl -b -u eschaton -o cat --no-pager | grep 'chain announced'")
    assert f"tcp://{a.addr}:{CHAIN_PORT}" in out, out
    print(f"b on a's chain: {time.monotonic() - started:.0f} s")

    addr = _json(b.console, "eschaton wallet address")["address"]
    a.console.check(f"eschaton chain mine 101 --to {addr} --datadir /var/lib/eschaton", timeout=600)
    _poll(b.console, f"eschaton wallet balance --json --config {CONFIG}",
          lambda out: json.loads(out)["spendable"] >= 1_000_000, 300, "b's coins on a's chain")
    cid = _json(b.console, f"eschaton channel open {a.node_id} 200000")["channel"]
    deadline = time.monotonic() + 600
    while True:
        a.console.check("eschaton chain mine 1 --datadir /var/lib/eschaton", timeout=300)
        states = [{c["channel"]: c["state"] for c in _json(g.console, "eschaton channel list")}.get(cid)
                  for g in (a, b)]
        if states == ["OPEN", "OPEN"]:
            break
        assert time.monotonic() < deadline, f"channel {cid} not open on both guests: {states}"
        time.sleep(3)
    print(f"channel open: {time.monotonic() - started:.0f} s")
    _json(b.console, f"eschaton channel pay {cid} 1000")
    theirs = next(c for c in _json(a.console, "eschaton channel list") if c["channel"] == cid)
    ours = next(c for c in _json(b.console, "eschaton channel list") if c["channel"] == cid)
    assert theirs["local_sat"] == ours["remote_sat"] == 1000, (theirs, ours)
    print(f"paid across the mesh: {time.monotonic() - started:.0f} s")
