"""Three network namespaces for the bandwidth meter tests: client - gw - upstream.

client (10.91.1.2/24) --veth-- gw (10.91.1.1/24 | 10.91.2.1/24, forwarding on) --veth-- upstream
(10.91.2.2/24). The nft table lives in the gw namespace (``Topo.nft`` is the command prefix), and
``udp_exchange`` sends known datagrams from the client to a receiver in upstream, which answers
each one, so the bytes forwarded both ways are known exactly. Its endpoints are parameters, so
a test can send from a second address on the client (bound to it), from upstream to the client,
or over IPv6 (``Topo.add_ipv6``: fd91:1::2 - fd91:1::1 | fd91:2::1 - fd91:2::2).
"""
from __future__ import annotations

import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

UDP_PORT = 47911
UDP_L3_OVERHEAD = 28  # IPv4 header (20) + UDP header (8); nft counts L3 bytes
UDP6_L3_OVERHEAD = 48  # IPv6 header (40) + UDP header (8)

RECEIVER = """
import select, socket, sys
reply = b"r" * int(sys.argv[1])
addr = sys.argv[2]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, PORT))
print("ready", flush=True)
got = 0
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [], 30)
    if not ready:
        break
    if s in ready:
        data, addr = s.recvfrom(65535)
        got += 1
        s.sendto(reply, addr)
    if sys.stdin in ready and not sys.stdin.read(1):
        break  # the test closed our stdin: the sender is done
print(got, flush=True)
""".replace("PORT", str(UDP_PORT))

SENDER = """
import socket, sys
n, size, wait = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
src, dst = sys.argv[4], sys.argv[5]
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.connect((dst, PORT))
s.settimeout(wait)
replies = 0
for _ in range(n):
    s.send(b"x" * size)
    try:
        s.recv(65535)
        replies += 1
    except TimeoutError:
        pass
print(replies, flush=True)
""".replace("PORT", str(UDP_PORT))


@dataclass(frozen=True)
class Exchange:
    """What one ``udp_exchange`` moved: datagrams that arrived each way and their L3 bytes."""

    up: int
    """Datagrams the upstream receiver got."""
    down: int
    """Replies the client got."""
    l3_bytes: int
    """L3 bytes forwarded both ways (what a counter on the client must show)."""


@dataclass(frozen=True)
class Topo:
    ip: str
    client: str
    gw: str
    upstream: str
    client_dev: str
    """The client's veth end (in ``client``)."""
    gw_client_dev: str
    """The gw's veth end towards the client: the interface the gw sells bandwidth on."""
    gw_upstream_dev: str
    upstream_dev: str

    @property
    def nft(self) -> tuple[str, ...]:
        return (self.ip, "netns", "exec", self.gw, "nft")

    def exec(self, ns: str) -> list[str]:
        return [self.ip, "netns", "exec", ns]

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=10)

    def add_address(self, ns: str, dev: str, addr: str) -> None:
        """One more address (usable at once: no duplicate address detection for IPv6)."""
        self._run(self.ip, "-n", ns, "addr", "add", addr, "dev", dev,
                  *(("nodad",) if ":" in addr else ()))

    def add_ipv6(self) -> None:
        """IPv6 on both links, routed and forwarded by gw (its IPv6 is not metered)."""
        for ns, dev, addr in ((self.client, self.client_dev, "fd91:1::2/64"),
                              (self.gw, self.gw_client_dev, "fd91:1::1/64"),
                              (self.gw, self.gw_upstream_dev, "fd91:2::1/64"),
                              (self.upstream, self.upstream_dev, "fd91:2::2/64")):
            self.add_address(ns, dev, addr)
        self._run(self.ip, "-n", self.client, "-6", "route", "add", "default", "via", "fd91:1::1")
        self._run(self.ip, "-n", self.upstream, "-6", "route", "add", "default", "via",
                  "fd91:2::1")
        self._run(*self.exec(self.gw), "sysctl", "-w", "net.ipv6.conf.all.forwarding=1")
        # The link-local addresses the kernel gave the veths when they came up are still in
        # duplicate address detection for about a second; until then neighbour discovery
        # drops the first datagrams. Wait for it to end (poll, bounded), not a fixed sleep.
        deadline = time.monotonic() + 10
        for ns in (self.client, self.gw, self.upstream):
            while subprocess.run([self.ip, "-n", ns, "-6", "addr", "show", "tentative"],
                                 check=True, capture_output=True, text=True,
                                 timeout=10).stdout.strip():
                assert time.monotonic() < deadline, f"IPv6 addresses in {ns} stay tentative"
                time.sleep(0.05)

    def udp_exchange(self, n: int, size: int, reply: int, *, wait: float = 2.0,
                     src: str = "10.91.1.2", dst: str = "10.91.2.2", sender: str | None = None,
                     receiver: str | None = None) -> Exchange:
        """``n`` datagrams of ``size`` payload bytes from ``src`` (in namespace ``sender``,
        default the client) to ``dst`` (in ``receiver``, default upstream), a ``reply``-byte
        answer to each."""
        sender = self.client if sender is None else sender
        receiver = self.upstream if receiver is None else receiver
        overhead = UDP6_L3_OVERHEAD if ":" in dst else UDP_L3_OVERHEAD
        recv = subprocess.Popen([*self.exec(receiver), sys.executable, "-c", RECEIVER,
                                 str(reply), dst], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert recv.stdout is not None and recv.stdin is not None
            ready, _, _ = select.select([recv.stdout], [], [], 15)
            assert ready and recv.stdout.readline().strip() == "ready", recv.stderr
            sent = subprocess.run([*self.exec(sender), sys.executable, "-c", SENDER, str(n),
                                   str(size), str(wait), src, dst], capture_output=True, text=True,
                                  timeout=30 + n * wait, check=True)
            down = int(sent.stdout.strip())
            out, _ = recv.communicate(timeout=15)  # closes its stdin: the sender is done
            up = int(out.strip())
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        return Exchange(up, down, up * (size + overhead) + down * (reply + overhead))


@contextmanager
def three_namespaces(ip: str) -> Iterator[Topo]:
    uid = uuid.uuid4().hex[:6]
    topo = Topo(ip, f"escbw-{uid}-c", f"escbw-{uid}-g", f"escbw-{uid}-u",
                f"vb{uid}c", f"vb{uid}g1", f"vb{uid}g2", f"vb{uid}u")
    created: list[str] = []

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=10)

    try:
        for ns in (topo.client, topo.gw, topo.upstream):
            run(ip, "netns", "add", ns)
            created.append(ns)
        links = ((topo.client, topo.client_dev, "10.91.1.2/24",
                  topo.gw, topo.gw_client_dev, "10.91.1.1/24"),
                 (topo.upstream, topo.upstream_dev, "10.91.2.2/24",
                  topo.gw, topo.gw_upstream_dev, "10.91.2.1/24"))
        for ns_a, dev_a, addr_a, ns_b, dev_b, addr_b in links:
            run(ip, "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b,
                "netns", ns_b)
            for ns, dev, addr in ((ns_a, dev_a, addr_a), (ns_b, dev_b, addr_b)):
                run(ip, "-n", ns, "addr", "add", addr, "dev", dev)
                run(ip, "-n", ns, "link", "set", dev, "up")
                run(ip, "-n", ns, "link", "set", "lo", "up")
        run(ip, "-n", topo.client, "route", "add", "default", "via", "10.91.1.1")
        run(ip, "-n", topo.upstream, "route", "add", "default", "via", "10.91.2.1")
        run(*topo.exec(topo.gw), "sysctl", "-w", "net.ipv4.ip_forward=1")
        yield topo
    finally:
        for ns in created:  # deleting a namespace deletes its veth ends and its nft tables
            subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=10)
