"""The local API refuses malformed requests in one line (never a 500 and a logged traceback), and
``[api] tcp_port`` serves the same API on 127.0.0.1 only, behind the same token."""
from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eschaton.chain.electrum.server import PORT_FILE
from tests.integration.node.harness import Cluster, NodeProc, free_port, run_cli

pytestmark = pytest.mark.timeout(180)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("node", timeout=30)
        self._path = str(path)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self._path)
        self.sock = s


def _post(conn: http.client.HTTPConnection, name: str, body: bytes,
          token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", f"/v1/{name}", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                addr, port = f[1].split(":")
                if len(addr) == 8:  # IPv4, little-endian hex
                    host = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])
                else:
                    host = "::" if set(addr) == {"0"} else addr
                out.add((host, int(port, 16)))
    return out


def _others(node: NodeProc, cluster: Cluster) -> set[tuple[str, int]]:
    """What the node listens on besides its API: the Electrum server of the chain it owns."""
    port_file = cluster.chain.datadir / "chain" / PORT_FILE
    return {("127.0.0.1", int(port_file.read_text()))} if port_file.exists() else set()


BAD_BODIES = [
    (b'{"channel": "00", "amount": ' + b"7" * 5000 + b"}", "channel.pay", 400, "digits"),
    (b"[" * 200_000 + b"]" * 200_000, "node.status", 400, "nested too deeply"),
    (b'{"channel": "00", "amount": 100000000000000000000}', "channel.pay", 400, "out of range"),
    (b'{"channel": "00", "amount": 18446744073709551616}', "channel.pay", 400, "out of range"),
    (b'{"hold_s": NaN}', "node.status", 400, "NaN"),
    (b'{"a": Infinity}', "node.status", 400, "Infinity"),
    (b'{"a": 1,}', "node.status", 400, "not JSON"),
    (b"\xff\xfe{}", "node.status", 400, "not JSON"),
    (b"[1, 2]", "node.status", 400, "JSON object"),
    (b" " * (2 << 20), "node.status", 413, "larger than"),
]


def _refuses_bad_bodies(a: NodeProc, conn: Callable[[], http.client.HTTPConnection], token: str) -> None:
    for body_bytes, name, want, words in BAD_BODIES:
        status, body = _post(conn(), name, body_bytes, token)
        msg = body["error"]["message"]
        assert status == want and words in msg, (body_bytes[:40], status, body)
        assert "\n" not in msg and len(msg) < 300, msg
    # The node still runs, logged no traceback, and a valid request still works.
    assert a.running
    assert not [r for r in a.logs if "exc" in r or r.get("level") == "error"], a.logs[-5:]
    assert not [line for line in a.stderr if "Traceback" in line]
    status, body = _post(conn(), "node.status", b"{}", token)
    assert status == 200 and body["result"]["id"] == a.id


def test_malformed_bodies_are_refused_in_one_line(cluster: Cluster) -> None:
    a = cluster.node("a")
    a.start().wait_ready()
    assert a.proc is not None
    # Without [api] tcp_port nothing but the unix socket serves the API.
    assert _listening(a.proc.pid) - _others(a, cluster) == set()
    token = (a.datadir / "api.token").read_text().strip()
    _refuses_bad_bodies(a, lambda: _UnixHTTPConnection(a.datadir / "api.sock"), token)
    assert a.cli("node", "status")["id"] == a.id


def test_tcp_port_is_loopback_only_and_needs_the_token(cluster: Cluster) -> None:
    port = free_port()
    a = cluster.node("a")
    a.config.write_text(a.config.read_text() + f"\n[api]\ntcp_port = {port}\n")
    a.start().wait_ready()
    assert a.proc is not None
    token = (a.datadir / "api.token").read_text().strip()

    def tcp() -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    # The listener is bound to 127.0.0.1 and to nothing else.
    assert _listening(a.proc.pid) - _others(a, cluster) == {("127.0.0.1", port)}
    # The token works, no token or a wrong one is 401, and it is the same registry.
    status, body = _post(tcp(), "node.status", b"{}", token)
    assert status == 200 and body["result"]["id"] == a.id
    for bad in (None, "", token[:-1] + ("0" if token[-1] != "0" else "1"), token + token):
        status, body = _post(tcp(), "node.status", b"{}", bad)
        assert status == 401 and body["error"]["type"] == "Unauthorized", (bad, body)
    status, body = _post(tcp(), "no.such.command", b"{}", token)
    assert status == 404 and body["error"]["type"] == "UnknownCommand"
    _refuses_bad_bodies(a, tcp, token)
    assert a.cli("node", "status")["id"] == a.id  # the unix socket serves as before


def test_the_cli_reaches_a_node_whose_api_is_only_on_tcp(cluster: Cluster) -> None:
    port = free_port()
    a = cluster.node("a")
    a.config.write_text(a.config.read_text() + f'\n[api]\nsocket = ""\ntcp_port = {port}\n')
    a.start().wait_ready()
    assert a.proc is not None
    assert not (a.datadir / "api.sock").exists()
    assert _listening(a.proc.pid) - _others(a, cluster) == {("127.0.0.1", port)}
    assert a.cli("node", "status")["id"] == a.id


def test_a_tcp_port_in_use_is_one_line_at_start(cluster: Cluster) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        a = cluster.node("a")
        a.config.write_text(a.config.read_text() + f"\n[api]\ntcp_port = {port}\n")
        p = run_cli("node", "run", "--config", str(a.config), check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "tcp_port" in lines[0], lines[0]
