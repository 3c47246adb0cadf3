"""Where the local API listens and how a request is addressed: shared by the server (aiohttp)
and the client (standard library), so that the client imports nothing of the server's.

Rules:
- The socket and the token file default to these names inside the node's datadir
  (``[api] socket`` and ``[api] token_file`` move them).
- ``[api] tcp_port`` listens on ``TCP_HOST`` only.
- A command is ``POST /v1/<name>`` with a JSON object body and ``Authorization: Bearer <token>``.
"""
from __future__ import annotations

TOKEN_FILE = "api.token"
SOCKET_FILE = "api.sock"
TCP_HOST = "127.0.0.1"  # the only address ``[api] tcp_port`` listens on
PATH_PREFIX = "/v1/"


def auth_header(token: str) -> str:
    return f"Bearer {token}"
