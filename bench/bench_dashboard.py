"""The dashboard's cost on a node: payment rate with no page open against the rate with 10 live
pages open (ratio in one run), events per second delivered to those 10 pages, the dashboard's
added RSS, and page load to first contentful paint on loopback (headless Chromium, if present).

Two ``eschaton node run`` processes on loopback with a channel a -> b, both clients of a
separate chain server; a serves the dashboard, b does not (so b's RSS, same channel, same
payments, is the baseline for a's).

    python bench/bench_dashboard.py [payments]
"""
from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "firmware"), str(ROOT)]

import aiohttp  # noqa: E402

from bench.bench_node import rss_kib  # noqa: E402
from eschaton.api.client import call_async  # noqa: E402
from tests.integration.node.harness import Cluster, NodeProc, free_port, open_channel, poll  # noqa: E402

PAGES = 10
ROUNDS = 3


async def pay_rate(payer: NodeProc, cid: str, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await call_async(payer.datadir, "channel.pay", {"channel": cid, "amount": 1000}, timeout=60)
    return n / (time.perf_counter() - t)


READER = """
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/events", headers={"Cookie": sys.argv[2]})
n = 0
try:
    with urllib.request.urlopen(req) as r:
        print("open", flush=True)
        for line in r:
            if line.startswith(b"event: event"):
                n += 1
                print(n, flush=True)
except Exception:
    pass
"""


async def with_pages(payer: NodeProc, url: str, token: str, cid: str, n: int) -> tuple[float, int, float, int]:
    """Pay rate with PAGES live pages open (each its own process, so that reading them costs
    the payer's client nothing); events they received; per second; the payer's RSS meanwhile."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
    async with aiohttp.ClientSession(cookie_jar=jar) as s, \
            s.post(url + "/login", data={"password": token}) as r:
        assert r.status == 200 and str(r.url).endswith("/"), r.status
        cookie = "; ".join(f"{c.key}={c.value}" for c in jar)
    procs = [subprocess.Popen([sys.executable, "-c", READER, url, cookie], stdout=subprocess.PIPE, text=True)
             for _ in range(PAGES)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "open"
        await asyncio.sleep(0.5)
        t = time.perf_counter()
        rate = await pay_rate(payer, cid, n)
        await asyncio.sleep(0.5)  # the last events on their way
        took = time.perf_counter() - t
        assert payer.proc is not None
        rss = rss_kib(payer.proc.pid)
    finally:
        for p in procs:
            p.terminate()
    counts = []
    for p in procs:
        out, _ = p.communicate(timeout=10)
        lines = out.split()
        counts.append(int(lines[-1]) if lines and lines[-1].isdigit() else 0)
    total = sum(counts)
    return rate, total, total / took, rss


def paint_ms(url: str, token: str, loads: int = 5) -> tuple[float, float] | None:
    """Median first contentful paint and DOMContentLoaded of the meters page (ms), or None."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=390,844"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    try:
        d.get(url + "/login")
        d.find_element(By.ID, "password").send_keys(token)
        d.find_element(By.ID, "login-button").click()
        fcp, dcl = [], []
        for _ in range(loads):
            d.get(url + "/")
            t: Any = d.execute_script(
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "const n = performance.getEntriesByType('navigation')[0];"
                "return [p ? p.startTime : null, n.domContentLoadedEventEnd];")
            if t[0] is not None:
                fcp.append(float(t[0]))
            dcl.append(float(t[1]))
        return (statistics.median(fcp) if fcp else float("nan")), statistics.median(dcl)
    finally:
        d.quit()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(Path(tmp))
        try:
            c.serve_chain()  # neither node owns the chain: their RSS compare like for like
            disc = free_port(socket.SOCK_DGRAM)
            dash = ["[dashboard]", "enabled = true", 'listen = "127.0.0.1:0"']
            a = c.node("a", listen=["tcp://127.0.0.1:0"], discovery_port=disc, sections=dash)
            b = c.node("b", listen=["tcp://127.0.0.1:0"], discovery_port=disc)
            a.start().wait_ready()
            b.start().wait_ready()
            poll(lambda: b.id in a.linked() and a.id in b.linked(), "a and b linked")
            c.chain.mine(101, to=a.wallet("address")["address"])
            poll(lambda: a.wallet("balance")["spendable"] > 0, "a has spendable coins")
            cid = open_channel(c.chain, a, b, 50_000_000)
            url = (a.datadir / "dashboard.url").read_text().strip()
            token = (a.datadir / "api.token").read_text().strip()
            asyncio.run(pay_rate(a, cid, 10))  # warm up
            assert a.proc is not None and b.proc is not None
            rss_a0, rss_b0 = rss_kib(a.proc.pid), rss_kib(b.proc.pid)
            # Alternating rounds, so that the drift of a shared machine falls on both sides.
            bares, rates, delivered = [], [], []
            for _ in range(ROUNDS):
                bares.append(asyncio.run(pay_rate(a, cid, n)))
                rate, events, eps, rss_open = asyncio.run(with_pages(a, url, token, cid, n))
                rates.append(rate)
                delivered.append(eps)
            rss_a1, rss_b1 = rss_kib(a.proc.pid), rss_kib(b.proc.pid)
            paint = paint_ms(url, token)
        finally:
            c.close()
    base, rate = statistics.median(bares), statistics.median(rates)
    print(f"payments per phase: {n}; live pages: {PAGES}; {ROUNDS} alternating rounds")
    print(f"pay rate, no page open:  {' '.join(f'{x:.1f}' for x in bares)} /s (median {base:.1f})")
    print(f"pay rate, {PAGES} pages open: {' '.join(f'{x:.1f}' for x in rates)} /s (median {rate:.1f}); "
          f"ratio of medians {rate / base:.3f}")
    print(f"events delivered to the {PAGES} pages in the last round: {events} ({events / PAGES:.0f} each); "
          f"{' '.join(f'{x:.0f}' for x in delivered)} /s in all per round")
    print(f"RSS (MiB), payer with dashboard a / payee without b: idle {rss_a0 / 1024:.1f} / {rss_b0 / 1024:.1f}"
          f" (a - b {(rss_a0 - rss_b0) / 1024:+.1f}); with {PAGES} pages open a {rss_open / 1024:.1f}; "
          f"after {rss_a1 / 1024:.1f} / {rss_b1 / 1024:.1f} (a - b {(rss_a1 - rss_b1) / 1024:+.1f})")
    if paint is None:
        print("page load: chromium or chromedriver missing, not measured")
    else:
        print(f"node page on loopback (phone width, median of 5): first contentful paint {paint[0]:.0f} ms, "
              f"DOMContentLoaded {paint[1]:.0f} ms")


if __name__ == "__main__":
    main()
