"""``ble://`` against ``tcp://`` on loopback, measured in one run: time to open a stream, echo
round trip of a 200-byte frame, and bulk throughput of 4 KiB frames.

Both BLE ends are bumble host stacks in this process, each on its own virtual controller in
the test relay process (``tests/integration/ble/relay.py``), so the figures measure the Python
Bluetooth stack and the HCI hops over loopback TCP, not a radio (a real LE link of a Pi is
bounded by its connection interval and PHY: expect tens of kB/s and round trips of tens of ms).

    .venv/bin/python bench/bench_ble.py
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "firmware")]

from eschaton.net import blehost  # noqa: E402
from eschaton.net.transport import FrameStream, TransportClosed, connect, listen  # noqa: E402
from tests.integration.ble.conftest import Air  # noqa: E402

ECHOES = 200
BULK = 100  # frames of 4 KiB


async def _echo(stream: FrameStream) -> None:
    with contextlib.suppress(TransportClosed):
        while True:
            await stream.write_frame(await stream.read_frame())


async def measure(listen_url: str, dial: str) -> dict[str, float]:
    listener = await listen(listen_url, _echo)
    target = dial or listener.url
    if not dial and target.startswith("ble://"):
        raise SystemExit("ble needs a dial URL")
    t = time.perf_counter()
    stream = await connect(target)
    opened = time.perf_counter() - t
    frame = b"\xaa" * 200
    t = time.perf_counter()
    for _ in range(ECHOES):
        await stream.write_frame(frame)
        await stream.read_frame()
    rtt = (time.perf_counter() - t) / ECHOES
    bulk = b"\x55" * 4096
    t = time.perf_counter()

    async def drain() -> None:
        for _ in range(BULK):
            await stream.read_frame()

    reader = asyncio.ensure_future(drain())
    for _ in range(BULK):
        await stream.write_frame(bulk)
    await reader
    rate = 2 * BULK * len(bulk) / (time.perf_counter() - t)  # there and echoed back
    await stream.close()
    await listener.close()
    return {"open_s": round(opened, 3), "rtt_ms": round(rtt * 1000, 2), "kB_per_s": round(rate / 1000, 1)}


async def main() -> None:
    air = Air(2)
    try:
        tcp = await measure("tcp://127.0.0.1:0", "")
        ble = await measure(f"ble://{air.adapter(0)}?address=C1:00:00:00:00:0B",
                            f"ble://{air.adapter(1)}/C1:00:00:00:00:0B")
    finally:
        await blehost.close_all()
        air.close()
    print(json.dumps({"tcp": tcp, "ble": ble,
                      "rtt_ratio_ble_over_tcp": round(ble["rtt_ms"] / tcp["rtt_ms"], 1),
                      "throughput_ratio_tcp_over_ble": round(tcp["kB_per_s"] / ble["kB_per_s"], 1)}))


if __name__ == "__main__":
    asyncio.run(main())
