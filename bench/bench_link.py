"""Encrypted link vs bare TCP echo, over loopback between two processes, in one run.

A server process (this script with ``--server``) runs both a bare TCP echo of length-prefixed
frames and an Eschaton link (Noise_XK, canonical bencode messages, session dispatch) whose
handler echoes ``update_ack`` messages. The client measures, for each:
- throughput: N messages sent back-to-back (awaiting each write like a real sender), counting
  echoes until all N came back;
- latency: M sequential round trips, p50 and p99.
The payload is the same size in both cases (the encoded ``update_ack`` message).

    .venv/bin/python bench/bench_link.py [--messages 20000] [--rtts 2000]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eschaton.core.link.identity import NodeId
from eschaton.core.wire import Message, encode_message, make
from eschaton.core.wire.framing import StreamDeframer, encode_stream_frame
from eschaton.net.identity import load_or_create_identity
from eschaton.net.router import Router
from eschaton.net.session import Session, dial, serve


def ack(i: int) -> Message:
    # The channel core's update_ack body is {"number": n} (see eschaton.daemon.chanwire).
    return make("update_ack", channel_id=bytes(32), body=json.dumps({"number": i}).encode())


# ---- server ---------------------------------------------------------------------------------------
def echo_router() -> Router:
    """Sends every update_ack straight back (the other channel rows are not used here)."""
    async def echo(session: Session, msg: Message) -> None:
        await session.send(msg)

    return Router.of("channel", echo)


async def server(datadir: Path) -> None:
    keys = load_or_create_identity(datadir)

    async def raw_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)  # frames echo byte for byte
            await writer.drain()
        writer.close()

    raw = await asyncio.start_server(raw_echo, "127.0.0.1", 0)
    link = await serve("tcp://127.0.0.1:0", keys, router=echo_router())
    print(json.dumps({"raw_port": raw.sockets[0].getsockname()[1], "link_url": link.url,
                      "id": keys.node_id.hex()}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF


# ---- client ---------------------------------------------------------------------------------------
def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def bench_raw(port: int, n: int, rtts: int) -> dict[str, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = encode_stream_frame(encode_message(ack(1)))
    deframer = StreamDeframer()

    async def read_one() -> None:
        while deframer.next_frame() is None:
            deframer.feed(await reader.read(65536))

    lat = []
    for _ in range(rtts):
        t0 = time.perf_counter()
        writer.write(frame)
        await writer.drain()
        await read_one()
        lat.append(time.perf_counter() - t0)

    async def count() -> None:
        for _ in range(n):
            await read_one()

    t0 = time.perf_counter()
    counter = asyncio.create_task(count())
    for _ in range(n):
        writer.write(frame)
        await writer.drain()
    await counter
    elapsed = time.perf_counter() - t0
    writer.close()
    return {"msgs_per_s": n / elapsed, "p50_us": pct(lat, 0.5) * 1e6, "p99_us": pct(lat, 0.99) * 1e6}


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.event = asyncio.Event()
        self.target = 0

    def on_update_ack(self, session: Session, msg: Message) -> None:
        self.n += 1
        if self.n >= self.target:
            self.event.set()


async def bench_link(url: str, remote: NodeId, datadir: Path, n: int, rtts: int) -> dict[str, float]:
    keys = load_or_create_identity(datadir)
    t0 = time.perf_counter()
    counter = Counter()
    session, task = await dial(url, keys, remote, router=Router.of("channel", counter.on_update_ack))
    handshake = time.perf_counter() - t0
    msg = ack(1)
    lat = []
    for _ in range(rtts):
        counter.target = counter.n + 1
        counter.event.clear()
        t0 = time.perf_counter()
        await session.send(msg)
        await counter.event.wait()
        lat.append(time.perf_counter() - t0)
    counter.target = counter.n + n
    counter.event.clear()
    t0 = time.perf_counter()
    for _ in range(n):
        await session.send(msg)
    await counter.event.wait()
    elapsed = time.perf_counter() - t0
    await session.close()
    await task
    return {"msgs_per_s": n / elapsed, "p50_us": pct(lat, 0.5) * 1e6,
            "p99_us": pct(lat, 0.99) * 1e6, "handshake_ms": handshake * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", metavar="DATADIR")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rtts", type=int, default=2000)
    args = parser.parse_args()
    if args.server:
        asyncio.run(server(Path(args.server)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, __file__, "--server", f"{tmp}/server"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            raw = asyncio.run(bench_raw(info["raw_port"], args.messages, args.rtts))
            enc = asyncio.run(bench_link(info["link_url"], NodeId.from_hex(info["id"]),
                                         Path(tmp) / "client", args.messages, args.rtts))
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)
    size = len(encode_message(ack(1)))
    print(f"message: update_ack, {size} bytes encoded; {args.messages} msgs, {args.rtts} round trips; "
          "two processes over loopback")
    print(f"{'':24}{'msgs/s':>10}{'p50 us':>10}{'p99 us':>10}")
    print(f"{'bare TCP echo':24}{raw['msgs_per_s']:>10.0f}{raw['p50_us']:>10.0f}{raw['p99_us']:>10.0f}")
    print(f"{'encrypted link':24}{enc['msgs_per_s']:>10.0f}{enc['p50_us']:>10.0f}{enc['p99_us']:>10.0f}")
    print(f"ratio encrypted/bare: throughput {enc['msgs_per_s'] / raw['msgs_per_s']:.2f}x, "
          f"p50 latency {enc['p50_us'] / raw['p50_us']:.2f}x, p99 latency {enc['p99_us'] / raw['p99_us']:.2f}x")
    print(f"handshake (connect + Noise_XK + init exchange): {enc['handshake_ms']:.1f} ms")


if __name__ == "__main__":
    main()
