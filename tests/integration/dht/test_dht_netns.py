"""Eight node processes, each in its own network namespace, on one Ethernet segment (a bridge in
a ninth namespace). Every node links to every other; trade channels exist only between the
neighbours of one payment path. The DHT stores a record at its k closest nodes and every node
finds it; a paid query is forwarded two hops (asker -> forwarder -> holder), each hop paying
the next, with exact accounting on all three nodes and in their channels; a quote above
--max-price is refused with nothing paid.
"""
from __future__ import annotations

import asyncio
import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.api.client import CommandFailed
from eschaton.demo.village import House, api, wait_ready
from eschaton.net.identity import create_identity
from tests.conftest import need_root, need_tool
from tests.integration.netns_nodes import mine, start_in, stop_and_show, until

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]

N = 8
LINK_PORT, CHAIN_PORT = 9735, 50001
QUERY = '["has", ["data"]]'


def _ip(i: int) -> str:
    return f"10.94.0.{i + 1}"


@pytest.fixture
def segment() -> Iterator[list[str]]:
    """``N`` namespaces with one veth each, all on one bridge (in namespace ``sw``)."""
    need_root()
    ip = need_tool("ip")
    uid = uuid.uuid4().hex[:6]
    sw = f"escdht-{uid}-sw"
    names = [f"escdht-{uid}-{i}" for i in range(N)]
    made: list[str] = []

    def run(*args: str) -> None:
        subprocess.run([ip, *args], check=True, capture_output=True, timeout=10)

    try:
        for n in (sw, *names):
            run("netns", "add", n)
            made.append(n)
        run("-n", sw, "link", "add", f"br{uid}", "type", "bridge")
        run("-n", sw, "link", "set", f"br{uid}", "up")
        for i, n in enumerate(names):
            run("link", "add", f"d{i}{uid}", "netns", n, "type", "veth", "peer", "name", f"s{i}{uid}",
                "netns", sw)
            run("-n", sw, "link", "set", f"s{i}{uid}", "master", f"br{uid}")
            run("-n", sw, "link", "set", f"s{i}{uid}", "up")
            run("-n", n, "addr", "add", f"{_ip(i)}/24", "dev", f"d{i}{uid}")
            run("-n", n, "link", "set", f"d{i}{uid}", "up")
            run("-n", n, "link", "set", "lo", "up")
        yield names
    finally:
        for n in made:
            subprocess.run([ip, "netns", "del", n], capture_output=True, timeout=10)


def _configure(tmp_path: Path) -> list[House]:
    nodes = []
    for i in range(N):
        h = House(f"n{i}", "dht")
        h.datadir = tmp_path / h.name
        h.node_id = create_identity(h.datadir).node_id.hex()
        h.config, h.log = h.datadir / "node.toml", h.datadir / "node.log"
        nodes.append(h)
    for i, h in enumerate(nodes):
        chain = (f'serve = "tcp://{_ip(0)}:{CHAIN_PORT}"' if i == 0 else
                 f'backend = "electrum"\nurl = "tcp://{_ip(0)}:{CHAIN_PORT}"')
        # Each node dials the ones before it: one dial per pair, so no two links to one peer
        # cross (a crossed pair is closed down to one, and channel messages sent on the closed
        # one wait for the next relink).
        peers = "".join(f'[[network.peers]]\nid = "{o.node_id}"\nurl = "tcp://{_ip(j)}:{LINK_PORT}"\n'
                        for j, o in enumerate(nodes) if j < i)
        h.config.write_text(f'[node]\ndatadir = "{h.datadir}"\nname = "{h.name}"\n'
                            f'[network]\nlisten = ["tcp://{_ip(i)}:{LINK_PORT}"]\n{peers}'
                            f'[network.discovery]\nenabled = false\n[chain]\n{chain}\n[dht]\nk = 2\n')
    return nodes


async def _stats(h: House) -> dict[str, object]:
    st: dict[str, object] = await api(h, "dht.stats")
    return st


async def _local(h: House, cid: str) -> int:
    return int(next(c for c in await api(h, "channel.list") if c["channel"] == cid)["local_sat"])


def test_eight_nodes_store_find_and_a_paid_query_forwarded_two_hops(segment: list[str],
                                                                   tmp_path: Path) -> None:
    nodes = _configure(tmp_path)
    ns = dict(zip((h.name for h in nodes), segment, strict=True))

    async def scenario() -> None:
        start_in(ns["n0"], nodes[0])  # the chain's owner first
        await wait_ready(nodes[0])
        for h in nodes[1:]:
            start_in(ns[h.name], h)
        for h in nodes[1:]:
            await wait_ready(h)

        async def meshed() -> bool:
            return all([(await _stats(h))["linked"] == N - 1 for h in nodes])

        await until("every node linked to the 7 others", meshed, 60)

        # Store and find: a record lands at its 2 closest nodes (and its publisher); all find it.
        put = await api(nodes[3], "dht.put", data="kept on the segment", alg="sha256")
        holders = {nodes[3].node_id, *put["stored_at"]}
        assert len(put["stored_at"]) == 2 and put["refused"] == {}
        digest = hashlib.sha256(b"kept on the segment").hexdigest()
        for h in nodes:
            got = await api(h, "dht.get", key=digest, alg="sha256")
            assert [r["data"] for r in got["records"]] == ["kept on the segment"], h.name

        # The paid path: asker -> forwarder -> publisher, neither of the first two a holder.
        p = nodes[3]
        a, f = [h for h in nodes if h.node_id not in holders and h is not nodes[0]][:2]

        def mine_on_owner(n: int, to: str | None = None) -> None:
            mine(ns["n0"], nodes[0].datadir, n, to)

        for h in (a, f):
            mine_on_owner(1, (await api(h, "wallet.address"))["address"])
        mine_on_owner(100)

        async def funded() -> bool:
            return all([(await api(h, "wallet.balance"))["spendable"] > 0 for h in (a, f)])

        await until("the payers' coins", funded, 60)
        af = (await api(a, "channel.open", peer=f.node_id, capacity=200_000))["channel"]
        fp = (await api(f, "channel.open", peer=p.node_id, capacity=200_000))["channel"]

        seen: dict[str, str] = {}

        async def both_open() -> bool:
            mine_on_owner(1)
            for x, y, cid in ((a, f, af), (f, p, fp)):
                for n in (x, y):
                    ch = [c for c in await api(n, "channel.list") if c["channel"] == cid]
                    seen[f"{n.name}:{cid[:8]}"] = ch[0]["state"] if ch else "unknown"
            return all(v == "OPEN" for v in seen.values())

        try:
            await until("both channels open", both_open, 90, poll=1.0)
        except AssertionError:
            raise AssertionError(f"channels not open: {seen}") from None
        before = (await _local(f, af), await _local(p, fp))

        # p quotes base 1 + 1 record + 1 KiB = 3; f adds its base: 4.
        with pytest.raises(CommandFailed, match="price 4 sat exceeds --max-price 3 sat; nothing paid"):
            await api(a, "dht.query", key=digest, query=QUERY, alg="sha256", max_price=3)
        got = await api(a, "dht.query", key=digest, query=QUERY, alg="sha256", max_price=4)
        assert got["peer"] == f.node_id and got["price"] == 4
        assert [r["data"] for r in got["records"]] == ["kept on the segment"]

        qa, qf, qp = [(await _stats(h))["queries"] for h in (a, f, p)]
        assert isinstance(qa, dict) and isinstance(qf, dict) and isinstance(qp, dict)
        assert (qa["asked"], qa["spent_sat"]) == (1, 4)
        assert (qf["forwarded"], qf["forward_margin_sat"], qf["sold"]) == (1, 1, 0)
        assert (qp["sold"], qp["earned_sat"]) == (1, 3)
        for h in nodes:
            if h not in (a, f, p):
                q = (await _stats(h))["queries"]
                assert isinstance(q, dict) and q["sold"] == q["forwarded"] == q["asked"] == 0, h.name
        assert (await _local(f, af), await _local(p, fp)) == (before[0] + 4, before[1] + 3)

    try:
        asyncio.run(scenario())
    finally:
        stop_and_show(*reversed(nodes))
