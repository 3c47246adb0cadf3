"""The DHT service over real links: eight network nodes in this process, linked over TCP on
loopback, each running the DHT service with k = 3. A record published at one node is held by
the 3 closest nodes and found from every other node, also after two of its holders left."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from eschaton.config import parse_config
from eschaton.core.dht import records
from eschaton.core.dht.protocol import Params
from eschaton.core.link.identity import NodeKeys
from eschaton.daemon.dht import DhtService
from eschaton.net.mesh import NetNode
from eschaton.net.router import Router

pytestmark = pytest.mark.timeout(40)


def config(tmp_path: Path, name: str):
    return parse_config(f"""
[node]
datadir = "{tmp_path / name}"
name = "{name}"
[network]
listen = ["tcp://127.0.0.1:0"]
[network.discovery]
enabled = false
""", f"{name}.toml")


def test_publish_and_find_over_links(tmp_path: Path) -> None:
    async def main() -> None:
        rng = random.Random(18)
        nets: list[NetNode] = []
        dhts: list[DhtService] = []
        for i in range(8):
            keys = NodeKeys.generate(rng.randbytes)
            dht = DhtService(lambda k=keys: k.node_id.raw, params=Params(k=3), timeout=2.0)
            router = Router()
            router.add(dht.routes())
            await dht.start()
            nets.append(await NetNode.new(config(tmp_path, f"n{i}"), keys=keys, router=router))
            dhts.append(dht)
        try:
            # Links between every pair (channels would run between neighbours only; the DHT
            # reaches any linked node).
            for i, a in enumerate(nets):
                for b in nets[i + 1:]:
                    await a.connect(b.node_id, b.listeners[0].url)
            for d in dhts:  # both ends of every link have run the DHT's link-open hook
                while d.stats()["linked"] < 7:
                    await asyncio.sleep(0.01)

            data = records.encode(records.Preimage("sha256", b"found over real links"))
            key = records.key_of(records.decode(data))
            out = await dhts[0].publish(data)
            assert len(out["stored_at"]) == 3 and out["refused"] == {}
            holders = {bytes.fromhex(h) for h in out["stored_at"]}
            by_key = {n.node_id.raw: i for i, n in enumerate(nets)}
            assert all(key in dhts[by_key[h]].rpc.node.store.keys() for h in holders)

            askers = [i for i in range(1, 8) if nets[i].node_id.raw not in holders]
            for i in askers:
                assert await dhts[i].get(key) == [data]

            # Two holders leave; the record is still found (through timeouts or refusals).
            for h in list(holders)[:2]:
                await nets[by_key[h]].close()
            for i in askers:
                if not nets[i].listeners:
                    continue
                assert await dhts[i].get(key) == [data]
            # A record nobody published is not found, and the lookup ends.
            assert await dhts[askers[0]].get(b"\x42" * 32) == []
        finally:
            for d in dhts:
                await d.stop()
            for n in nets:
                await n.close()

    asyncio.run(main())
