"""``[chain]``: the embedded chain (libbitcoinkernel) or a remote Electrum server."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from eschaton.config import defaults as D
from eschaton.config.section import Section
from eschaton.core.url import BadTransportUrl, parse_url


@dataclass(frozen=True, slots=True)
class ChainConfig:
    backend: str
    """``embedded`` (libbitcoinkernel in-process) or ``electrum`` (a remote Electrum server)."""
    network: str
    """``regtest``, ``signet``, ``testnet`` or ``mainnet``."""
    datadir: Path | None
    """Block and chainstate directory of the embedded backend."""
    url: str | None
    """Electrum server URL, e.g. ``tcp://127.0.0.1:50001`` (electrum backend only)."""
    serve: tuple[str, int] | None = None
    """Embedded backend: also serve the chain over Electrum on this (host, port), e.g. the
    gateway's mesh address, so other nodes on the mesh use it (``backend = "electrum"``). None:
    loopback only, on a port the kernel picks (written to ``chain/electrum.port``)."""


def _check_chain_url(section: Section, url: str) -> str:
    """``[chain] url``: the Electrum server, ``tcp://HOST:PORT``."""
    try:
        parsed = parse_url(url)
        if parsed.scheme != "tcp" or not parsed.host:
            raise BadTransportUrl(f"{url}: must be tcp://HOST:PORT (e.g. tcp://10.99.0.1:50001)")
        parsed.require_port()
    except BadTransportUrl as exc:
        raise section.err("url", str(exc)) from None
    return url


def parse_chain(root: Section) -> ChainConfig:
    chain_s = root.sub("chain")
    backend = chain_s.get_choice("backend", D.CHAIN_BACKEND, ("embedded", "electrum"))
    network_name = chain_s.get_choice("network", D.CHAIN_NETWORK,
                                      ("regtest", "signet", "testnet", "mainnet"))
    chain_url = chain_s.get_str("url", D.CHAIN_URL) or None
    if backend == "electrum" and chain_url is None:
        raise chain_s.err("url", "is required when backend = \"electrum\"")
    if chain_url is not None:
        _check_chain_url(chain_s, chain_url)
    chain_default = D.CHAIN_DATADIR
    if chain_s.raw("datadir", None) is None and (
            root.ctx.datadir / D.CHAIN_DATADIR_LEGACY / "chain" / "index.sqlite").exists():
        chain_default = D.CHAIN_DATADIR_LEGACY  # a chain made under the old default: keep using it
    serve_url = chain_s.get_str("serve", "") or None
    serve: tuple[str, int] | None = None
    if serve_url is not None:
        if backend != "embedded":
            raise chain_s.err("serve", "only the owner of an embedded chain serves it")
        m = re.fullmatch(r"tcp://(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})", serve_url)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise chain_s.err("serve", "must be tcp://IPV4:PORT (e.g. tcp://0.0.0.0:50001)")
        try:
            ipaddress.IPv4Address(m.group(1))
        except ValueError:
            raise chain_s.err("serve", f"{m.group(1)} is not an IPv4 address") from None
        serve = (m.group(1), int(m.group(2)))
    chain = ChainConfig(backend, network_name, chain_s.get_path("datadir", chain_default),
                        chain_url, serve)
    chain_s.done()
    return chain
