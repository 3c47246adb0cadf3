"""A small village of real node processes (gateway, buyer house1, seller house2) for the tests.

Everything runs through ``eschaton.demo`` (the same code ``make demo`` runs): real processes on
loopback, the real embedded chain, real trade channels, gpiozero mock pins driven inside the
seller's process. The fixture stops every process it started (SIGTERM, then SIGKILL, reaped).
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eschaton.demo.story import Story
from eschaton.demo.village import House, Sale, api, stop_all

PRICE_MSAT = 50_000  # per litre: 0.05 sat per mL, so the floor rule matters
CREDIT_SAT = 60


def small_village() -> tuple[list[House], list[Sale]]:
    houses = [House("gateway", "gateway"), House("house1", "buyer"), House("house2", "seller")]
    sale = Sale("house2", "house1", "h2-water-h1", 17, "water", 90.0, PRICE_MSAT, CREDIT_SAT,
                valve_pin=23, pay_interval_ms=1000)
    houses[2].sells.append(sale)
    houses[1].buys.append(sale)
    houses[2].bulk = {"meter": "h2-pump", "pin": 22, "extra_hz": 30.0}  # loss check, no bypass
    return houses, [sale]


@pytest.fixture
def village(tmp_path: Path) -> Iterator[Story]:
    story = Story(tmp_path, 600.0, lambda s: None, houses=small_village())
    try:
        yield story
    finally:
        stop_all(story.houses)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def ledger(h: House, role: str) -> list[dict[str, Any]]:
    return list(await api(h, "microgrid.ledger", role=role))


async def channel_to(h: House, peer: House) -> dict[str, Any]:
    chans = await api(h, "channel.list")
    return next(c for c in chans if c["peer"] == peer.node_id)
