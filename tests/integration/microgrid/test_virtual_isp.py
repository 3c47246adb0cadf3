"""The virtual ISP: a client with one trade channel, to its neighbour, buys bandwidth from an
access point two hops away and pays it with multi-hop payments.

Four network namespaces the test creates, joined by veth pairs:

    client (10.X.1.2) -- nbr (10.X.1.1 | 10.X.2.2) -- ap (10.X.2.1 | 10.X.3.1) -- inet (10.X.3.2)

Three node processes (client, nbr, ap), one in each of the first three, sharing one embedded
chain served apart. Channels client -> nbr and nbr -> ap only; the client and the ap are linked
over IP through nbr (as any two nodes of a mesh may be) but hold no channel. The client's real
TCP traffic to ``inet`` is forwarded by nbr and then by the ap, whose nftables meter counts it;
the ap invoices it (``[[microgrid.sell]] via = "routing"``), the client asks a payment request
for each payment and pays it through nbr. The client's purchase is capped
(``max_total_sat``): past the cap it stops paying, and the ap cuts it in the kernel. Raised cap,
restarted client: it pays what it owes, and the ap lets it through again. Every balance
reconciles: nbr keeps exactly its configured fee on every payment.
"""
from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eschaton.core.routing.policy import FeePolicy
from eschaton.net.identity import create_identity
from tests.conftest import need_root, need_tool
from tests.integration.node.harness import Cluster, NodeProc, mirrored, open_channel, poll

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]

PRICE_MSAT = 10_000_000  # per MB: 10 sat per 1000 bytes (payments must be above the dust limit)
CREDIT_SAT = 1500
CAP_SAT = 1000
MIN_SAT = 546  # the least a multi-hop payment can carry (an escrow's dust limit)
CAPACITY = 400_000
NBR_FEE = FeePolicy(2, 20_000, 0, 24)  # 2 sat + 2 %, no reservation term: exact whatever the height
PORT, LINK = 9000, 9735

RECV = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
total = 0
try:
    c, _ = s.accept()
    c.settimeout(float(sys.argv[3]))
    while True:
        b = c.recv(65536)
        if not b:
            break
        total += len(b)
except OSError:
    pass
print(total, flush=True)
"""
SEND = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2.0)
    s.sendall(b"x" * int(sys.argv[3]))
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
except OSError:
    pass
"""


@pytest.fixture
def isp_net() -> Iterator[dict[str, str]]:
    need_root()
    ip = need_tool("ip")
    need_tool("nft")
    uid = uuid.uuid4().hex[:6]
    net = f"10.{90 + int(uid, 16) % 60}"
    ns = {k: f"escisp-{uid}-{k}" for k in ("client", "nbr", "ap", "inet")}
    made: list[str] = []

    def run(*args: str) -> None:
        subprocess.run([ip, *args], check=True, capture_output=True, timeout=10)

    try:
        for n in ns.values():
            run("netns", "add", n)
            made.append(n)
            run("-n", n, "link", "set", "lo", "up")
        # (link, end a, its host number, end b, its host number): 10.X.<link>.<host>
        for i, a, ha, b, hb in ((1, "client", 2, "nbr", 1), (2, "nbr", 2, "ap", 1), (3, "ap", 1, "inet", 2)):
            da, db = f"i{i}a{uid}", f"i{i}b{uid}"
            run("link", "add", da, "netns", ns[a], "type", "veth", "peer", "name", db, "netns", ns[b])
            for n, dev, host in ((ns[a], da, ha), (ns[b], db, hb)):
                run("-n", n, "addr", "add", f"{net}.{i}.{host}/24", "dev", dev)
                run("-n", n, "link", "set", dev, "up")
        run("-n", ns["client"], "route", "add", "default", "via", f"{net}.1.1")
        run("-n", ns["nbr"], "route", "add", "default", "via", f"{net}.2.1")
        run("-n", ns["ap"], "route", "add", f"{net}.1.0/24", "via", f"{net}.2.2")
        run("-n", ns["inet"], "route", "add", "default", "via", f"{net}.3.1")
        for n in ("nbr", "ap"):
            subprocess.run([ip, "netns", "exec", ns[n], "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                           check=True, capture_output=True, timeout=10)
        yield {**ns, "net": net}
    finally:
        for n in made:
            subprocess.run([ip, "netns", "del", n], capture_output=True, timeout=10)


def transfer(ns: dict[str, str], nbytes: int) -> int:
    """Send ``nbytes`` over TCP from the client to ``inet`` (through nbr and the ap); returns the
    bytes that arrived."""
    inet = f"{ns['net']}.3.2"
    recv = subprocess.Popen(["ip", "netns", "exec", ns["inet"], sys.executable, "-c", RECV, inet, str(PORT), "4"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", ns["client"], sys.executable, "-c", SEND, inet, str(PORT),
                        str(nbytes)], check=True, timeout=30)
        out, _ = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    return int(out.strip())


def _close_total(n: NodeProc) -> int:
    return sum(int(c["close_sat"]) for c in n.api("channel.list"))


def _payments(client: NodeProc) -> list[int]:
    """The amounts of the client's confirmed microgrid payments, from its ledger."""
    led = client.api("microgrid.ledger", role="buyer")
    sent = {e["payment_id"]: e["amount_sat"] for e in led if e["kind"] == "payment_sent"}
    return [sent[e["payment_id"]] for e in led if e["kind"] == "payment_confirmed"]


def _pending(client: NodeProc) -> bool:
    return any(b["pending_sat"] for b in client.api("microgrid.status")["buy"])


def test_virtual_isp_client_pays_an_access_point_two_hops_away(isp_net: dict[str, str], tmp_path: Path) -> None:
    ns, net = isp_net, isp_net["net"]
    cluster = Cluster(tmp_path)
    cluster.serve_chain()
    ids = {n: create_identity(tmp_path / n).node_id.hex() for n in ("client", "nbr", "ap")}
    addr = {"client": f"{net}.1.2", "nbr": f"{net}.1.1", "ap": f"{net}.2.1"}
    url = {n: f"tcp://{a}:{LINK}" for n, a in addr.items()}
    ap = cluster.node("ap", listen=[url["ap"]], sections=[
        "[[bandwidth]]", 'name = "client"', f'addresses = ["{addr["client"]}"]', "",
        "[microgrid]", "reading_interval_s = 0.25", "[[microgrid.sell]]", 'meter = "client"',
        f'buyer = "{ids["client"]}"', 'service = "bandwidth"', 'unit = "MB"', 'base_unit = "B"',
        f"price_msat = {PRICE_MSAT}", f"credit_limit_sat = {CREDIT_SAT}", "pay_interval_ms = 500",
        'via = "routing"'])
    nbr = cluster.node("nbr", listen=[url["nbr"]], peers=[(ids["ap"], url["ap"])], sections=[
        "[routing]", f"fee_base_sat = {NBR_FEE.base}", f"fee_ppm = {NBR_FEE.ppm}",
        f"fee_hold_ppm = {NBR_FEE.hold_ppm}"])
    client = cluster.node("client", listen=[url["client"]], peers=[(ids["nbr"], url["nbr"]), (ids["ap"], url["ap"])],
                          sections=["[microgrid]", "reading_interval_s = 0.25", "[[microgrid.buy]]",
                                    f'seller = "{ids["ap"]}"', "max_price_msat = 20000000",
                                    "max_credit_limit_sat = 5000", 'via = "routing"', f"max_total_sat = {CAP_SAT}"])
    nodes = {"ap": ap, "nbr": nbr, "client": client}
    try:
        for name, n in nodes.items():
            n.start(wrap=["ip", "netns", "exec", ns[name]])
        for n in nodes.values():
            n.wait_ready()
        poll(lambda: {ids["nbr"], ids["ap"]} <= client.linked() and ids["ap"] in nbr.linked(), "links", 30)
        for n in (client, nbr):
            cluster.chain.mine(1, to=n.wallet("address")["address"])
        cluster.chain.mine(100)
        for n in (client, nbr):
            poll(lambda n=n: n.wallet("balance")["spendable"] > 0, f"{n.name} funded", 60)
        # Opened from the ap's end: the client's channel lives longer, so the timeouts (growing
        # by nbr's delta towards the payer) fit under its cap.
        c2 = open_channel(cluster.chain, nbr, ap, CAPACITY, "--lifetime", "1008")
        c1 = open_channel(cluster.chain, client, nbr, CAPACITY, "--lifetime", "1108")
        assert not any(c["peer"] == ids["ap"] for c in client.api("channel.list"))  # no channel to the ap
        poll(lambda: len(client.api("routing.graph")["channels"]) == 2, "the client knows both channels", 60)

        def sell_row() -> dict[str, Any]:
            return next(r for r in ap.api("microgrid.status")["sell"] if r["meter"] == "client")

        poll(lambda: sell_row().get("supply") == "on", "the agreement and the supply on", 60)
        assert sell_row()["via"] == "routing"
        before = {k: _close_total(n) for k, n in nodes.items()}

        # Paid traffic: real TCP bytes forwarded by nbr and the ap, counted by the ap's meter.
        units0 = sell_row()["units"]
        assert transfer(ns, 60_000) == 60_000
        poll(lambda: sell_row()["units"] - units0 > 60_000, "the bytes in the ap's meter", 10)

        def settled() -> bool:
            """Every byte invoiced, and paid but for less than one payment can carry."""
            r = sell_row()
            return bool(r["invoiced_units"] == r["units"] and r["paid_sat"] > 0
                        and 0 <= r["invoiced_sat"] - r["paid_sat"] < MIN_SAT and not _pending(client))

        poll(settled, "the invoices paid through nbr", 40)

        def books(paid_sat: int) -> None:
            """Every balance reconciles: the ap got what it credited, nbr exactly its fee on each
            payment, the client paid both; the channels mirror each other and add up."""
            poll(lambda: mirrored(client, nbr, c1)[0]["escrows"] == 0 and mirrored(nbr, ap, c2)[0]["escrows"] == 0
                 and not _pending(client), "escrows settled", 30)
            amounts = _payments(client)
            assert sum(amounts) == paid_sat, (amounts, paid_sat)
            fees = sum(NBR_FEE.fee(a, 0) for a in amounts)
            delta = {k: _close_total(n) - before[k] for k, n in nodes.items()}
            assert delta == {"ap": paid_sat, "nbr": fees, "client": -(paid_sat + fees)}, (delta, amounts)
            for x, y, cid in ((client, nbr, c1), (nbr, ap, c2)):
                vx, _ = mirrored(x, y, cid)
                assert vx["local_sat"] + vx["remote_sat"] + vx["fee_sat"] == CAPACITY

        r = sell_row()
        books(r["paid_sat"])
        assert r["paid_sat"] < CAP_SAT
        assert len(client.api("microgrid.status")["buy"]) == 1

        # The client stops paying: its cap is reached; past the credit limit the ap cuts it.
        assert transfer(ns, 250_000) > 0  # (the cut may come before the end of it)
        poll(lambda: sell_row().get("supply") == "cut", "the cut", 20)
        poll(lambda: sell_row()["invoiced_units"] == sell_row()["units"], "the last bytes invoiced", 10)
        cut = sell_row()
        assert cut["paid_sat"] <= CAP_SAT < cut["invoiced_sat"]
        assert cut["invoiced_sat"] - cut["paid_sat"] > CREDIT_SAT
        assert transfer(ns, 20_000) == 0  # nothing crosses the ap while cut...
        assert sell_row()["units"] == cut["units"]  # ...and nothing more is billed
        assert ap.api("node.status")["bandwidth"]["client"]["cut"] is True

        # The client's cap is raised and it restarts: it pays what it owes through nbr, and the ap
        # lets it through again.
        client.stop()
        client.config.write_text(client.config.read_text().replace(f"max_total_sat = {CAP_SAT}",
                                                                   "max_total_sat = 100000"))
        client.start(wrap=["ip", "netns", "exec", ns["client"]])
        client.wait_ready()
        poll(lambda: sell_row().get("supply") == "on", "the ap reconnects the client", 60)
        units3 = sell_row()["units"]
        assert transfer(ns, 80_000) == 80_000
        poll(lambda: sell_row()["units"] - units3 > 80_000, "the last bytes in the ap's meter", 10)
        poll(settled, "everything paid", 40)
        end = sell_row()
        # The ap bills every byte once: its invoices say floor(bytes x price), exactly.
        assert end["invoiced_sat"] == (end["units"] - end["anchor_units"]) * PRICE_MSAT // (1_000_000 * 1000)
        books(end["paid_sat"])
        kinds = " ".join(e["kind"] for e in ap.api("microgrid.ledger", role="seller"))
        assert "supply_cut" in kinds and kinds.rindex("supply_restored") > kinds.index("supply_cut")
    finally:
        for n in (client, ap):  # what each side's microgrid saw, for a failure's diagnosis
            if n.running:
                st = n.api("microgrid.status")
                print(f"--- {n.name} microgrid: sell {st['sell']} buy {st['buy']} refusals {st['refusals'][-5:]} "
                      f"notable {st['notable'][-10:]}")
        for n in (client, nbr, ap):
            if n.running:
                n.stop()
        cluster.close()
        for n in (client, nbr, ap):
            notable = [r for r in n.logs if r.get("level") not in ("info", "debug")]
            print(f"--- {n.name} warnings:\n" + "\n".join(str(r)[:600] for r in notable[-20:]) + "".join(n.stderr[-20:]))
