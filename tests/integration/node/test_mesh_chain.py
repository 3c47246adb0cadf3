"""Two nodes on two machines of a mesh share one chain: the gateway owns its embedded chain and
serves it on its mesh address (``[chain] serve``), the house uses it as its chain server
(``[chain] backend = "electrum"``). The house is funded on that chain, opens a trade channel to
the gateway over the link, pays, and both sides agree on the balances. The house cannot make
blocks on the gateway's chain: over the served address mining is refused and the tip stays.

The two "machines" are two network namespaces the test creates, joined by a veth pair: the
house cannot reach the gateway's loopback, only its mesh address.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eschaton.demo.village import House, api, wait_ready
from eschaton.net.identity import create_identity
from tests.conftest import need_root, need_tool
from tests.integration.netns_nodes import mine, start_in, stop_and_show, until

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

GW, HOUSE = "10.93.0.1", "10.93.0.2"
CHAIN_PORT, LINK_PORT = 50001, 9735

_MINER = r"""
import asyncio, json, sys
from eschaton.chain.electrum.client import ElectrumChainClient
from eschaton.chain.errors import NotOwner

async def main():
    c = await ElectrumChainClient.connect(sys.argv[1], int(sys.argv[2]))
    tip = await c.tip()
    out = {}
    for name, call in (("mine", lambda: c.mine(3)), ("mine_branch", lambda: c.mine_branch(tip.block_hash, 5))):
        try:
            await call()
            out[name] = "accepted"
        except NotOwner as e:
            out[name] = str(e)
    await c.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture
def two_machines() -> Iterator[dict[str, str]]:
    need_root()
    ip = need_tool("ip")
    uid = uuid.uuid4().hex[:6]
    ns = {"gw": f"escmc-{uid}-gw", "house": f"escmc-{uid}-house"}
    made: list[str] = []

    def run(*args: str) -> None:
        subprocess.run([ip, *args], check=True, capture_output=True, timeout=10)

    try:
        for n in ns.values():
            run("netns", "add", n)
            made.append(n)
        run("link", "add", f"mg{uid}", "netns", ns["gw"], "type", "veth", "peer", "name", f"mh{uid}",
            "netns", ns["house"])
        for n, dev, addr in ((ns["gw"], f"mg{uid}", GW), (ns["house"], f"mh{uid}", HOUSE)):
            run("-n", n, "addr", "add", f"{addr}/24", "dev", dev)
            run("-n", n, "link", "set", dev, "up")
            run("-n", n, "link", "set", "lo", "up")
        yield ns
    finally:
        for n in made:
            subprocess.run([ip, "netns", "del", n], capture_output=True, timeout=10)


def test_a_house_uses_the_gateways_chain_across_the_mesh(two_machines: dict[str, str],
                                                        tmp_path: Path) -> None:
    ns = two_machines
    gw, house = House("gw", "gateway"), House("house", "buyer")
    for h in (gw, house):
        h.datadir = tmp_path / h.name
        h.node_id = create_identity(h.datadir).node_id.hex()
        h.config, h.log = h.datadir / "node.toml", h.datadir / "node.log"
    gw.config.write_text(f'''
[node]
datadir = "{gw.datadir}"
name = "gw"
[network]
listen = ["tcp://{GW}:{LINK_PORT}"]
[network.discovery]
enabled = false
[chain]
serve = "tcp://{GW}:{CHAIN_PORT}"
''')
    house.config.write_text(f'''
[node]
datadir = "{house.datadir}"
name = "house"
[network]
listen = ["tcp://{HOUSE}:{LINK_PORT}"]
[network.discovery]
enabled = false
[[network.peers]]
id = "{gw.node_id}"
url = "tcp://{GW}:{LINK_PORT}"
[chain]
backend = "electrum"
url = "tcp://{GW}:{CHAIN_PORT}"
''')

    def mine_on_gw(n: int, to: str | None = None) -> None:
        mine(ns["gw"], gw.datadir, n, to)  # the gateway's node owns the chain

    async def scenario() -> None:
        start_in(ns["gw"], gw)
        await wait_ready(gw)
        start_in(ns["house"], house)
        st = await wait_ready(house)
        assert st["chain"]["backend"] == "electrum"

        addr = (await api(house, "wallet.address"))["address"]
        mine_on_gw(1, addr)
        mine_on_gw(100)

        async def funded() -> bool:
            return bool((await api(house, "wallet.balance"))["spendable"] >= 1_000_000)

        await until("the house's coins, seen through the gateway's chain", funded, 60)
        tips = [(await api(h, "node.status"))["chain"] for h in (gw, house)]
        assert tips[0]["height"] == tips[1]["height"] == 101 and tips[0]["hash"] == tips[1]["hash"]

        # The house asks the gateway's served chain to make blocks: refused, the tip stays.
        tried = subprocess.run(["ip", "netns", "exec", ns["house"], sys.executable, "-c", _MINER, GW,
                                str(CHAIN_PORT)], capture_output=True, text=True, timeout=60)
        assert tried.returncode == 0, tried.stderr
        for method, answer in json.loads(tried.stdout).items():
            assert "refused: only the chain's owner may make blocks" in answer, (method, answer)
        assert (await api(gw, "node.status"))["chain"] == tips[0]

        async def linked() -> bool:
            return gw.node_id in (await api(house, "node.status"))["peers"]

        await until("the link", linked, 30)
        opened = await api(house, "channel.open", peer=gw.node_id, capacity=200_000)
        cid = opened["channel"]

        async def is_open() -> bool:
            mine_on_gw(1)
            ours = {c["channel"]: c for c in await api(house, "channel.list")}
            theirs = {c["channel"]: c for c in await api(gw, "channel.list")}
            return cid in ours and cid in theirs and ours[cid]["state"] == theirs[cid]["state"] == "OPEN"

        await until("the channel to open on both sides", is_open, 90, poll=1.0)
        for _ in range(3):
            await api(house, "channel.pay", channel=cid, amount=1_000)
        ours = next(c for c in await api(house, "channel.list") if c["channel"] == cid)
        theirs = next(c for c in await api(gw, "channel.list") if c["channel"] == cid)
        assert theirs["local_sat"] == ours["remote_sat"] == 3_000
        assert ours["local_sat"] + ours["remote_sat"] + ours["fee_sat"] == 200_000

    try:
        asyncio.run(scenario())
    finally:
        stop_and_show(house, gw)
