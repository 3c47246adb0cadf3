"""``[api]``: the local control API (a Unix socket, optionally a loopback TCP port)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eschaton.config import defaults as D
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class ApiConfig:
    socket: Path | None
    """Unix socket of the local control API (None disables it)."""
    tcp_port: int | None
    """If set, also listen on 127.0.0.1 at this port (never on other addresses)."""
    token_file: Path
    """File (0600) holding the API bearer token."""


def parse_api(root: Section) -> ApiConfig:
    api_s = root.sub("api")
    port = api_s.raw("tcp_port", D.API_TCP_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise api_s.err("tcp_port", "must be a port in 1..65535 (127.0.0.1 only), or 0 for none")
    token = api_s.get_path("token_file", D.API_TOKEN_FILE)
    assert token is not None
    api = ApiConfig(api_s.get_path("socket", D.API_SOCKET), port or None, token)
    api_s.done()
    return api
