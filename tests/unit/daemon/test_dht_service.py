"""The DHT service's own store upkeep, on an injected clock: republish when due, expiry at ttl."""
from __future__ import annotations

import asyncio

from eschaton.core.dht import records
from eschaton.core.dht.storage import DEFAULT_LIMITS
from eschaton.daemon.dht import DhtService
from eschaton.daemon.service import State


def test_publish_alone_then_republish_when_due_and_expire_at_ttl() -> None:
    async def main() -> None:
        now = [1000.0]
        svc = DhtService(lambda: b"\x05" * 32, clock=lambda: now[0])
        await svc.start()
        try:
            data = records.encode(records.Preimage("hash160", b"kept for a day"))
            out = await svc.publish(data)  # no links: nobody else to store at
            assert out["stored_at"] == [] and svc.stats()["records"] == 1
            key = bytes.fromhex(out["key"])
            assert await svc.get(key) == [data]
            assert svc.health().state is State.OK

            now[0] += DEFAULT_LIMITS.republish - 1
            assert svc.maintain(now[0]) == []
            now[0] += 1
            assert svc.maintain(now[0]) == [data]  # due: the loop pushes it to the k closest
            assert svc.maintain(now[0]) == []  # and its timer is re-armed
            now[0] = 1000.0 + DEFAULT_LIMITS.ttl
            assert svc.maintain(now[0]) == []
            assert svc.stats()["records"] == 0 and await svc.get(key) == []
        finally:
            await svc.stop()

    asyncio.run(main())
