"""``[chain]``: the embedded chain (libbitcoinkernel), a remote Electrum server, or a bitcoind's
JSON-RPC (``backend = "rpc"``: Bitcoin Core or Knots next to the node, or another Eschaton
chain's RPC)."""
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
    """``embedded`` (libbitcoinkernel in-process), ``electrum`` (a remote Electrum server) or
    ``rpc`` (a bitcoind-compatible JSON-RPC)."""
    network: str
    """``regtest``, ``signet``, ``testnet`` or ``mainnet``."""
    datadir: Path | None
    """Block and chainstate directory of the embedded backend."""
    url: str | None
    """Electrum server URL, e.g. ``tcp://127.0.0.1:50001`` (electrum backend: the first of
    ``urls``), or the node's RPC, ``http://127.0.0.1:18443`` (rpc backend)."""
    serve: tuple[str, int] | None = None
    """Embedded backend: also serve the chain over Electrum on this (host, port), e.g. the
    gateway's mesh address, so other nodes on the mesh use it (``backend = "electrum"``). None:
    loopback only, on a port the kernel picks (written to ``chain/electrum.port``)."""
    rpc_port: int | None = None
    """Embedded backend: the chain's owner also serves bitcoind's JSON-RPC on 127.0.0.1:rpc_port
    (0: a free port, written to ``chain/rpc.port``). None: no RPC."""
    rpc_user: str | None = None
    """With ``rpc_password``: HTTP Basic credentials. Embedded backend: accepted by the RPC
    server besides the cookie (``chain/.cookie``). rpc backend: sent to the remote node."""
    rpc_password: str | None = None
    """See ``rpc_user``."""
    rpc_cookie: Path | None = None
    """rpc backend without user/password: the remote node's cookie file (``__cookie__:HEX``),
    re-read on every authentication failure because bitcoind writes a new one at each start."""
    rpc_poll: float = 1.0
    """rpc backend: seconds between polls of the remote tip and mempool (subscriptions)."""
    urls: tuple[str, ...] = ()
    """electrum backend: every configured server, in order (``url`` as a list, or one string
    with several URLs separated by commas or spaces). The client uses one at a time and moves
    to the next when one fails or lies."""
    mainnet_risk_acknowledged: bool = False
    """``network = "mainnet"``: the operator wrote ``mainnet_risk_acknowledged =
    MAINNET_ACKNOWLEDGEMENT`` (the node refuses to start on mainnet without it)."""
    block_interval_s: float = 0.0
    """Embedded regtest chain: the owner makes a block this many seconds after the last block,
    so a village chain moves with nobody typing ``chain mine`` (0: off)."""
    block_after_tx_s: float = 0.0
    """Embedded regtest chain: the owner makes a block this many seconds after a transaction
    enters an empty mempool, so funding and closing transactions confirm soon (0: off)."""
    discover: bool = False
    """electrum backend without ``url``: the chain server is the one a trusted node announces
    on the mesh (a village's gateway; ``eschaton.net.chainfind``)."""
    gateways: tuple[str, ...] = ()
    """With ``discover``: the node ids (hex) whose announcements are followed; empty: the first
    announcer, pinned (trust on first use)."""
    discover_timeout: float = 60.0
    """With ``discover``: seconds the node waits for the announcement at start before it gives
    up (and systemd starts it again)."""


MAINNET_ACKNOWLEDGEMENT = "I understand this node moves real bitcoin"


def _check_network(chain_s: Section, backend: str, network_name: str) -> bool:
    """The embedded chain is a private regtest chain; a public network is reached through a
    server (electrum) or a bitcoind (rpc); mainnet needs the operator's acknowledgement."""
    if backend == "embedded" and network_name != "regtest":
        raise chain_s.err("network", f"\"{network_name}\" needs backend = \"electrum\" or \"rpc\": "
                                     "the embedded chain is a private regtest chain")
    ack = chain_s.raw("mainnet_risk_acknowledged", None)
    if ack is not None and ack != MAINNET_ACKNOWLEDGEMENT:
        raise chain_s.err("mainnet_risk_acknowledged", f"must be exactly \"{MAINNET_ACKNOWLEDGEMENT}\"")
    if network_name == "mainnet" and ack is None:
        raise chain_s.err("network", "\"mainnet\" moves real bitcoin: add mainnet_risk_acknowledged = "
                                     f"\"{MAINNET_ACKNOWLEDGEMENT}\" to [chain] to start")
    return ack is not None


def _block_production(chain_s: Section, backend: str, network_name: str) -> tuple[float, float]:
    """``block_interval_s`` and ``block_after_tx_s``: only the owner of a village chain (embedded
    regtest) makes blocks; on any other chain a block is proof of work that others do."""
    out = []
    for key, default in (("block_interval_s", D.CHAIN_BLOCK_INTERVAL_S),
                         ("block_after_tx_s", D.CHAIN_BLOCK_AFTER_TX_S)):
        v = chain_s.get_float(key, default, 0.0, D.CHAIN_BLOCK_MAX_S)
        if v > 0 and backend != "embedded":
            raise chain_s.err(key, f"only the owner of an embedded chain makes blocks (backend is \"{backend}\"); "
                                   "remove it or set 0")
        if v > 0 and network_name != "regtest":
            raise chain_s.err(key, f"blocks are made by themselves only on a regtest chain (network is "
                                   f"\"{network_name}\"); remove it or set 0")
        out.append(v)
    return out[0], out[1]


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


def _check_rpc_url(section: Section, url: str) -> str:
    """``[chain] url`` of the rpc backend: ``http://HOST:PORT`` (bitcoind serves plain HTTP)."""
    m = re.fullmatch(r"http://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})/?", url)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise section.err("url", f"{url}: must be http://HOST:PORT (e.g. http://127.0.0.1:8332), "
                                 "without credentials (rpc_user/rpc_password or rpc_cookie)")
    return url


def parse_chain(root: Section) -> ChainConfig:
    chain_s = root.sub("chain")
    backend = chain_s.get_choice("backend", D.CHAIN_BACKEND, ("embedded", "electrum", "rpc"))
    network_name = chain_s.get_choice("network", D.CHAIN_NETWORK,
                                      ("regtest", "signet", "testnet", "mainnet"))
    acknowledged = _check_network(chain_s, backend, network_name)
    raw_url = chain_s.raw("url", D.CHAIN_URL)
    urls: tuple[str, ...] = ()
    if isinstance(raw_url, list) and backend == "electrum":
        if not all(isinstance(u, str) for u in raw_url):
            raise chain_s.err("url", "must be a URL or a list of URLs (strings)")
        urls = tuple(raw_url)
    elif backend == "electrum" and isinstance(raw_url, str):
        urls = tuple(u for u in re.split(r"[,\s]+", raw_url) if u)
    if isinstance(raw_url, list):
        if backend != "electrum":
            raise chain_s.err("url", "only backend = \"electrum\" takes several servers")
        chain_url = urls[0] if urls else None
    else:
        chain_url = urls[0] if urls else (chain_s.get_str("url", D.CHAIN_URL) or None)
    discover = chain_s.get_bool("discover", False)
    if discover and (backend != "electrum" or chain_url is not None):
        raise chain_s.err("discover", "needs backend = \"electrum\" and no url (the url is announced)")
    gateways = chain_s.get_str_list("gateways", ())
    discover_timeout = chain_s.get_float("discover_timeout_s", 60.0, 1.0, 3600.0)
    if gateways and not discover:
        raise chain_s.err("gateways", "only with discover = true")
    # Here, not at the top: a client reading [node] and [api] imports this module's dataclass
    # and must not load the node's crypto.
    from eschaton.core.link.identity import IdentityError, NodeId

    for i, g in enumerate(gateways):
        try:
            NodeId.from_hex(g)
        except IdentityError as exc:
            raise chain_s.err("gateways", f"[{i}]: {exc}") from None
    if backend in ("electrum", "rpc") and chain_url is None and not discover:
        raise chain_s.err("url", f"is required when backend = \"{backend}\" (or, for electrum, "
                                 "discover = true)")
    if len(set(urls)) != len(urls):
        raise chain_s.err("url", "lists a server twice")
    for u in urls:
        _check_chain_url(chain_s, u)
    if chain_url is not None and not urls:
        if backend == "rpc":
            _check_rpc_url(chain_s, chain_url)
        else:
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
    rpc_port: int | None = None
    if chain_s.raw("rpc_port", None) is not None:
        if backend != "embedded":
            raise chain_s.err("rpc_port", "only the owner of an embedded chain serves the RPC")
        rpc_port = chain_s.get_int("rpc_port", 0, 0, 65535)
    rpc_user = chain_s.get_str("rpc_user", "") or None
    rpc_password = chain_s.get_str("rpc_password", "") or None
    if (rpc_user is None) != (rpc_password is None):
        missing = "rpc_password" if rpc_password is None else "rpc_user"
        raise chain_s.err(missing, "rpc_user and rpc_password go together")
    if rpc_user is not None and ":" in rpc_user:
        raise chain_s.err("rpc_user", "must not contain ':' (HTTP Basic authentication)")
    rpc_cookie = chain_s.get_path("rpc_cookie", None)
    if backend == "rpc" and rpc_user is None and rpc_cookie is None:
        raise chain_s.err("url", "backend = \"rpc\" needs rpc_user and rpc_password, or rpc_cookie")
    rpc_poll = chain_s.get_float("rpc_poll", 1.0, 0.05, 600.0)
    block_interval, block_after_tx = _block_production(chain_s, backend, network_name)
    chain = ChainConfig(backend, network_name, chain_s.get_path("datadir", chain_default),
                        chain_url, serve, rpc_port, rpc_user, rpc_password, rpc_cookie, rpc_poll, urls,
                        acknowledged, block_interval, block_after_tx, discover, tuple(gateways),
                        discover_timeout)
    chain_s.done()
    return chain
