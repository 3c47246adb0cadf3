"""The API client against real unix sockets that answer in every wrong way: each failure is one
typed line (what the CLI prints), never a traceback; the request on the wire is the API's
(``POST /v1/<name>``, the bearer token, a JSON body); ``call_async`` calls run at once."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eschaton.api.client import CommandFailed, NodeNotRunning, call, call_async
from eschaton.errors import TransientError

TOKEN = "ab" * 32


def _read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP request."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


class Server:
    """A unix socket served from a thread: ``handle(conn)`` for each of ``n`` connections, or
    with ``batch`` all ``n`` accepted (and their requests read) before any is answered."""

    def __init__(self, path: Path, handle: Callable[[socket.socket], None], n: int = 1,
                 batch: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(30)
        self.handle, self.n, self.batch = handle, n, batch
        self.requests: list[tuple[bytes, bytes]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conns = []
        for _ in range(self.n):
            conn, _ = self.sock.accept()
            if self.batch:
                self.requests.append(_read_request(conn))
                conns.append(conn)
            else:
                with conn:
                    self.handle(conn)
        for conn in conns:
            with conn:
                self.handle(conn)

    def close(self) -> None:
        self.thread.join(30)
        self.sock.close()


@pytest.fixture()
def datadir(tmp_path: Path) -> Path:
    (tmp_path / "api.token").write_text(TOKEN)
    return tmp_path


@pytest.fixture()
def serve(datadir: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(handle: Callable[[socket.socket], None], **kw: Any) -> Server:
        s = Server(datadir / "api.sock", handle, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def _answer(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def test_the_request_on_the_wire_and_the_result(datadir: Path, serve: Callable[..., Server]) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def ok(conn: socket.socket) -> None:
        seen.append(_read_request(conn))
        conn.sendall(_answer("200 OK", b'{"result": {"height": 7}}'))

    serve(ok)
    assert call(datadir, "node.status", {"a": 1, "b": "x"}) == {"height": 7}
    head, body = seen[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/node.status HTTP/1.1"
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"a": 1, "b": "x"}


def test_no_token_file_is_no_node(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match=f"no node is running with datadir {tmp_path}$"):
        call(tmp_path, "node.status", {})


def test_a_token_but_nobody_listening(datadir: Path) -> None:
    with pytest.raises(NodeNotRunning, match="no node is answering on .*api.sock$"):
        call(datadir, "node.status", {})
    # A socket file left by a node that crashed: refused, the same line.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(datadir / "api.sock"))
    stale.close()
    with pytest.raises(NodeNotRunning, match="no node is answering on"):
        call(datadir, "node.status", {})


def test_a_refusal_is_its_type_and_message(datadir: Path, serve: Callable[..., Server]) -> None:
    def refuse(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(_answer("400 Bad Request",
                             b'{"error": {"type": "ApiError", "message": "amount must be positive"}}'))

    serve(refuse)
    with pytest.raises(CommandFailed, match="^ApiError: amount must be positive$"):
        call(datadir, "channel.pay", {"amount": -1})


@pytest.mark.parametrize("reply,words", [
    (_answer("502 Bad Gateway", b"<html>proxy</html>", "text/html"), "answered HTTP 502 without a JSON object"),
    (_answer("200 OK", b"[1, 2]"), "answered HTTP 200 without a JSON object"),
    (_answer("200 OK", b"\xff\xfe not utf-8"), "answered HTTP 200 without a JSON object"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "answered something that is not HTTP"),
])
def test_an_answer_that_is_not_the_api(datadir: Path, serve: Callable[..., Server], reply: bytes,
                                       words: str) -> None:
    def answer(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(reply)

    serve(answer)
    with pytest.raises(CommandFailed, match=words):
        call(datadir, "node.status", {})


def test_a_node_that_goes_away_mid_request(datadir: Path, serve: Callable[..., Server]) -> None:
    serve(lambda conn: (_read_request(conn), conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{")))
    with pytest.raises(NodeNotRunning, match="no node is answering on"):
        call(datadir, "node.status", {})


def test_a_node_that_says_nothing_at_all_closes(datadir: Path, serve: Callable[..., Server]) -> None:
    serve(lambda conn: _read_request(conn))
    with pytest.raises(NodeNotRunning, match="no node is answering on"):
        call(datadir, "node.status", {})


def test_no_answer_within_the_timeout(datadir: Path, serve: Callable[..., Server]) -> None:
    release = threading.Event()

    def silent(conn: socket.socket) -> None:
        _read_request(conn)
        release.wait(30)

    serve(silent)
    try:
        with pytest.raises(TransientError, match="^node did not answer channel.open within 1s$"):
            call(datadir, "channel.open", {}, timeout=1.0)
    finally:
        release.set()


def test_call_async_calls_are_in_flight_at_once(datadir: Path, serve: Callable[..., Server]) -> None:
    """The server answers only after it holds all 12 requests (more than the event loop's
    default executor has workers here): calls queued behind each other would never finish."""
    n = 12

    def echo(conn: socket.socket) -> None:
        conn.sendall(_answer("200 OK", b'{"result": "ok"}'))

    server = serve(echo, n=n, batch=True)

    async def all_at_once() -> list[Any]:
        return list(await asyncio.gather(*(call_async(datadir, "node.status", {"i": i}, timeout=20)
                                           for i in range(n))))

    assert asyncio.run(all_at_once()) == ["ok"] * n
    assert sorted(json.loads(body)["i"] for _, body in server.requests) == list(range(n))
