"""A house finds its village's chain: it listens on the discovery port for a chain
announcement (``eschaton.core.link.announce``) from a node it trusts, before its chain starts.

Whom it trusts, in order: ``[chain] gateways`` when set (only those node ids); else the node it
pinned before; else the first announcer it hears, which it pins (trust on first use) in
``<datadir>/chain-gateway``, so a later announcer on the mesh cannot take the house to another
chain. To move a house to another gateway: list it in ``[chain] gateways``, or delete the pin.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from eschaton.core.link.announce import is_announcement, parse_chain_announcement
from eschaton.core.wire.errors import WireError
from eschaton.errors import LocalError

log = logging.getLogger(__name__)

PIN_FILE = "chain-gateway"


class NoChainFound(LocalError):
    """No trusted node announced a chain in time."""


def read_pin(datadir: Path) -> str | None:
    try:
        text = (datadir / PIN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def write_pin(datadir: Path, node_id_hex: str) -> None:
    """The pin, written atomically (0600)."""
    path = datadir / PIN_FILE
    tmp = path.with_name(f".{PIN_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, f"{node_id_hex}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


async def find_chain(datadir: Path, *, port: int, gateways: Sequence[str] = (),
                     interface: str | None = None, timeout: float = 60.0) -> tuple[str, str]:
    """(the announcer's node id, the chain's Electrum URL) from the first trusted announcement
    heard within ``timeout`` seconds."""
    pinned = read_pin(datadir)
    trusted = set(gateways) or ({pinned} if pinned else set())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise NoChainFound(f"cannot listen for chain announcements on port {port}: {exc.strerror}") from None
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    ignored: set[str] = set()
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                data, (host, src_port) = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
            except TimeoutError:
                break
            if not is_announcement(data):
                continue
            try:
                ann = parse_chain_announcement(data)
            except WireError as exc:
                log.debug("announcement from %s refused: %s", host, exc)
                continue
            who = ann.node_id.hex()
            if trusted and who not in trusted:
                if who not in ignored:
                    ignored.add(who)
                    log.warning("chain announced by %s ignored: not a trusted gateway", ann.node_id.short())
                continue
            url = ann.resolved(f"{host}:{src_port}")
            if url is None:
                continue
            if not trusted:
                write_pin(datadir, who)
                log.warning("following the chain of %s at %s (first announcer; pinned in %s)",
                            ann.node_id.short(), url, datadir / PIN_FILE)
            return who, url
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    whom = ("from " + ", ".join(sorted(trusted))) if trusted else "from any node"
    raise NoChainFound(f"no chain announced {whom} on port {port} within {timeout:.0f} s "
                       "(is the gateway up and on the mesh?)")
