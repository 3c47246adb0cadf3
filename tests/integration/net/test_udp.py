"""``udp://``: one frame per datagram on loopback; a link runs over it while nothing is lost."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eschaton.net.identity import load_or_create_identity
from eschaton.net.session import dial, serve
from eschaton.net.transport import FrameStream, connect, listen

pytestmark = pytest.mark.timeout(30)


def test_udp_frames_and_link(tmp_path: Path) -> None:
    async def main() -> None:
        async def echo(stream: FrameStream) -> None:
            while True:
                await stream.write_frame(await stream.read_frame())

        listener = await listen("udp://127.0.0.1:0", echo)
        client = await connect(listener.url)
        for payload in (b"one", b"two" * 100):
            await client.write_frame(payload)
            assert await asyncio.wait_for(client.read_frame(), 5) == payload
        await client.close()
        await listener.close()

        a = load_or_create_identity(tmp_path / "a")
        b = load_or_create_identity(tmp_path / "b")
        links = await serve("udp://127.0.0.1:0", b)
        session, task = await dial(links.url, a, b.node_id)
        assert session.remote == b.node_id
        assert await session.ping() < 5
        await session.close()
        await task
        await links.close()

    asyncio.run(main())
