"""NetNode, the network half of the composition root, over the in-memory transport."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.config import parse_config
from eschaton.net.identity import load_or_create_identity
from eschaton.net.mesh import NetNode
from tests.routes import Recorder, router

pytestmark = pytest.mark.timeout(30)


def config(tmp_path: Path, name: str, peers: str = "") -> str:
    return f"""
[node]
datadir = "{tmp_path / name}"
name = "{name}"
[network]
listen = ["mem://{tmp_path.name}-{name}"]
[network.discovery]
enabled = false
{peers}
"""


def test_static_peer_is_dialled_and_services_plug_in(tmp_path: Path) -> None:
    async def main() -> None:
        events: list[dict] = []
        b_id = load_or_create_identity(tmp_path / "b").node_id
        channel_a, channel_b = Recorder("channel"), Recorder("channel")
        b = await NetNode.new(parse_config(config(tmp_path, "b"), "b.toml"),
                              router=router(channel_b), on_event=events.append)
        a = await NetNode.new(parse_config(config(tmp_path, "a", f"""
[[network.peers]]
id = "{b_id.hex()}"
url = "mem://{tmp_path.name}-b"
"""), "a.toml"), router=router(channel_a), on_event=events.append)
        try:
            assert b.node_id == b_id  # the key created above was loaded, not replaced
            for _ in range(100):  # wait for A's dial task (no sleeps: yield to the loop)
                if a.session(b_id) is not None and b.session(a.node_id) is not None:
                    break
                await asyncio.sleep(0)
            sa = a.session(b_id)
            assert sa is not None and b.session(a.node_id) is not None
            await sa.send_message("channel_ready", channel_id=bytes(32), body=b'{"depth":6}')
            await sa.ping()
            assert channel_b.opened == [b.session(a.node_id)]
            assert [m.get_bytes("body") for m in channel_b.got] == [b'{"depth":6}']
            assert {e["event"] for e in events} >= {"started", "link_open"}
            assert all(e["services"] == ["channel"] for e in events if e["event"] == "link_open")
        finally:
            await a.close()
            await b.close()
        assert a.session(b_id) is None

    asyncio.run(main())
