"""Selling mesh bandwidth end to end: the kernel counts the bytes a gateway forwards for a
neighbour (nftables), the gateway's node bills them per MB over a trade channel, cuts the
neighbour off in the kernel when payment stops, and lets it through again once paid.

Three namespaces the test creates: ``client`` (10.91.11.2, and 10.91.11.3 that nobody meters) -
``gw`` (forwards; its client-side interface is guarded) - ``upstream`` (10.91.12.2). Both node processes run inside ``gw`` (they share its loopback and the embedded
chain its first node owns); the seller meters the client's address, the buyer node pays for it.
Real UDP traffic from the client to the upstream namespace is what gets billed and cut.
"""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eschaton.demo.village import House, api, free_port, wait_ready
from eschaton.net.identity import create_identity
from tests.conftest import need_root, need_tool
from tests.integration.netns_nodes import mine, start_in, stop_and_show, until

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

PRICE_MSAT = 1_000_000  # per MB: 1 sat per 1000 bytes
CREDIT_SAT = 150
CLIENT, UPSTREAM = "10.91.11.2", "10.91.12.2"
STRANGER = "10.91.11.3"  # another address on the client's wire, metered by nobody
PORT = 9000

RECV = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.2)
total, end = 0, time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
while time.monotonic() < end:
    try:
        total += len(s.recv(65535))
    except socket.timeout:
        pass
print(total, flush=True)
"""
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[5], 0))
for _ in range(int(sys.argv[3])):
    s.sendto(b"x" * 1000, (sys.argv[1], int(sys.argv[2])))
    time.sleep(float(sys.argv[4]))
"""


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    need_root()
    ip = need_tool("ip")
    need_tool("nft")
    uid = uuid.uuid4().hex[:6]
    ns = {k: f"escbw-{uid}-{k}" for k in ("client", "gw", "upstream")}
    made: list[str] = []

    def run(*args: str) -> None:
        subprocess.run([ip, *args], check=True, capture_output=True, timeout=10)

    try:
        for n in ns.values():
            run("netns", "add", n)
            made.append(n)
        run("link", "add", f"bc{uid}", "netns", ns["client"], "type", "veth", "peer", "name",
            f"bg{uid}", "netns", ns["gw"])
        run("link", "add", f"bu{uid}", "netns", ns["upstream"], "type", "veth", "peer", "name",
            f"bh{uid}", "netns", ns["gw"])
        for n, dev, addr in ((ns["client"], f"bc{uid}", f"{CLIENT}/24"),
                             (ns["client"], f"bc{uid}", f"{STRANGER}/24"),
                             (ns["gw"], f"bg{uid}", "10.91.11.1/24"),
                             (ns["gw"], f"bh{uid}", "10.91.12.1/24"),
                             (ns["upstream"], f"bu{uid}", f"{UPSTREAM}/24")):
            run("-n", n, "addr", "add", addr, "dev", dev)
            run("-n", n, "link", "set", dev, "up")
        for n in ns.values():
            run("-n", n, "link", "set", "lo", "up")
        run("-n", ns["client"], "route", "add", "default", "via", "10.91.11.1")
        run("-n", ns["upstream"], "route", "add", "default", "via", "10.91.12.1")
        subprocess.run([ip, "netns", "exec", ns["gw"], "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True, capture_output=True, timeout=10)
        ns["gw_dev"] = f"bg{uid}"  # the gateway's client-side interface
        yield ns
    finally:
        for n in made:
            subprocess.run([ip, "netns", "del", n], capture_output=True, timeout=10)


def burst(ns: dict[str, str], datagrams: int, gap_s: float = 0.01, source: str = CLIENT) -> int:
    """Send ``datagrams`` x 1000 bytes from ``source`` in the client namespace to the upstream
    namespace through the gateway; returns the bytes that arrived."""
    recv = subprocess.Popen(
        ["ip", "netns", "exec", ns["upstream"], sys.executable, "-c", RECV, UPSTREAM, str(PORT),
         str(datagrams * gap_s + 2.0)], stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", ns["client"], sys.executable, "-c", SEND, UPSTREAM,
                        str(PORT), str(datagrams), str(gap_s), source], check=True, timeout=60)
        out, _ = recv.communicate(timeout=60)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    return int(out.strip())


def test_bandwidth_is_metered_in_the_kernel_billed_cut_and_restored(
        namespaces: dict[str, str], tmp_path: Path) -> None:
    ns = namespaces
    chain_base = tmp_path / "chainbase"
    seller, buyer = House("gw", "seller"), House("client1", "buyer")
    for h in (seller, buyer):
        h.datadir = tmp_path / h.name
        h.port = free_port()
        h.node_id = create_identity(h.datadir).node_id.hex()
        h.config, h.log = h.datadir / "node.toml", h.datadir / "node.log"
    common = 'reading_interval_s = 0.25\n'
    seller.config.write_text(f'''
[node]
datadir = "{seller.datadir}"
name = "gw"
[network]
listen = ["tcp://127.0.0.1:{seller.port}"]
[network.discovery]
enabled = false
[chain]
datadir = "{chain_base}"

[[bandwidth]]
name = "client1"
addresses = ["{CLIENT}"]
interface = "{ns['gw_dev']}"

[microgrid]
{common}
[[microgrid.sell]]
meter = "client1"
buyer = "{buyer.node_id}"
service = "bandwidth"
unit = "MB"
base_unit = "B"
price_msat = {PRICE_MSAT}
credit_limit_sat = {CREDIT_SAT}
pay_interval_ms = 500
''')
    buyer.config.write_text(f'''
[node]
datadir = "{buyer.datadir}"
name = "client1"
[network]
listen = ["tcp://127.0.0.1:{buyer.port}"]
[network.discovery]
enabled = false
[[network.peers]]
id = "{seller.node_id}"
url = "tcp://127.0.0.1:{seller.port}"
[chain]
datadir = "{chain_base}"

[microgrid]
{common}
[[microgrid.buy]]
seller = "{seller.node_id}"
max_price_msat = 2000000
max_credit_limit_sat = 1000
''')

    async def scenario() -> None:
        start_in(ns["gw"], seller)
        await wait_ready(seller)  # it owns the chain
        start_in(ns["gw"], buyer)
        await wait_ready(buyer)

        async def sell_row() -> dict[str, Any]:
            rows = (await api(seller, "microgrid.status"))["sell"]
            return next(r for r in rows if r["meter"] == "client1")

        addr = (await api(buyer, "wallet.address"))["address"]
        mine(ns["gw"], chain_base, 1, addr)
        mine(ns["gw"], chain_base, 100)

        async def funded() -> bool:
            return bool((await api(buyer, "wallet.balance"))["spendable"] >= 500_000)

        await until("the buyer's coins", funded, 60)

        async def linked() -> bool:
            return seller.node_id in (await api(buyer, "node.status"))["peers"]

        await until("the link", linked, 30)
        await api(buyer, "channel.open", peer=seller.node_id, capacity=300_000)

        async def channel_open() -> bool:
            mine(ns["gw"], chain_base, 1)
            chans = await api(buyer, "channel.list")
            return any(c["peer"] == seller.node_id and c["state"] == "OPEN" for c in chans)

        await until("the channel", channel_open, 90, poll=1.0)

        async def agreed() -> bool:
            return bool((await sell_row()).get("supply") == "on")

        await until("the agreement and supply", agreed, 60)

        # Paid traffic flows, and every byte that crossed the gateway is metered: UDP datagrams
        # of 1000 bytes are 1028 bytes at L3 (the kernel counts L3 bytes).
        before = (await sell_row())["units"]
        got = burst(ns, 200)
        assert got == 200 * 1000, got

        async def metered() -> bool:
            return bool((await sell_row())["units"] - before >= 200 * 1028)

        await until("the bytes in the meter", metered, 10)
        assert (await sell_row())["units"] - before == 200 * 1028

        async def paid() -> bool:
            r = await sell_row()
            return bool(r.get("paid_sat", 0) > 0 and r.get("invoices", 0) >= 2)

        await until("payments", paid, 30)

        # The gateway's client-side interface is guarded: an address nobody meters gets nothing
        # forwarded (a neighbour cannot dodge the meter, or a cut, by taking another address).
        units = (await sell_row())["units"]
        assert burst(ns, 50, source=STRANGER) == 0
        await asyncio.sleep(1.5)
        assert (await sell_row())["units"] == units

        # The buyer stops paying: past the credit limit the gateway cuts the client in the kernel.
        await api(buyer, "microgrid.hold", meter="client1", paused=True)
        got = burst(ns, 400)
        assert got < 400 * 1000, got

        async def cut() -> bool:
            return bool((await sell_row()).get("supply") == "cut")

        await until("the cut", cut, 20)
        await asyncio.sleep(1.5)  # the last counted bytes reach the journal
        units_cut = (await sell_row())["units"]
        assert burst(ns, 100) == 0  # nothing crosses while cut...
        await asyncio.sleep(1.5)
        assert (await sell_row())["units"] == units_cut  # ...and nothing is billed
        status = (await api(seller, "node.status"))["bandwidth"]
        assert status == {"client1": {"bytes": units_cut, "cut": True}}, status

        # Paying again restores the client.
        await api(buyer, "microgrid.hold", meter="client1", paused=False)

        async def restored() -> bool:
            return bool((await sell_row()).get("supply") == "on")

        await until("the restore", restored, 30)
        assert burst(ns, 100) == 100 * 1000

        async def settled() -> bool:
            r = await sell_row()
            return bool(r["invoiced_units"] == r["units"] and r["paid_sat"] == r["invoiced_sat"])

        await until("settlement", settled, 30)
        row = await sell_row()
        # The books: what the channel moved is floor(bytes x price per MB), exactly.
        due = (row["units"] - row["anchor_units"]) * PRICE_MSAT // (1_000_000 * 1000)
        assert row["paid_sat"] == due > 0
        chans = await api(seller, "channel.list")
        ch = next(c for c in chans if c["peer"] == buyer.node_id)
        assert ch["local_sat"] == due
        sl = await api(seller, "microgrid.ledger", role="seller")
        kinds = " ".join(e["kind"] for e in sl)
        assert re.search(r"supply_cut .*supply_restored", kinds), kinds

    try:
        asyncio.run(scenario())
    finally:
        stop_and_show(buyer, seller)
