"""Read the node's TOML configuration once and validate it into ``schema.NodeConfig``.

Rules:
- Every key is checked (type, range, known name); unknown keys are errors, so typos surface.
- A ``ConfigError`` names the file, the dotted key and, when it can be found, the line.
- Relative paths are resolved against ``[node] datadir``.
- ``[[meter]]`` and ``[[valve]]`` belong to the metering layer: if
  ``eschaton.metering.config.parse_metering`` is importable it is called as
  ``parse_metering(doc, ctx)`` (``doc``: the whole parsed TOML dict; ``ctx``: a
  ``ConfigContext`` with ``source``, ``datadir`` and ``error(key_path, message)`` to raise
  errors in the same format); its result lands in ``NodeConfig.metering``.
- ``load_client_config`` reads ``[node]`` and ``[api]`` alone, with the same checks, for the CLI
  commands that only need to find the running node. What validates the other sections (transport
  URLs, node ids, the microgrid) is imported by ``parse_config`` when it runs, not with this
  module: a client does not pay for it at each command.
"""
from __future__ import annotations

import importlib
import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eschaton.config import defaults as D
from eschaton.config.schema import (
    ApiConfig,
    ChainConfig,
    ClientConfig,
    DiscoveryConfig,
    NetworkConfig,
    NodeConfig,
    NodeSection,
    PeerConfig,
)
from eschaton.errors import LocalError

KeyPath = Sequence[str | int]
_EXTENSION_SECTIONS = ("meter", "valve", "relay", "tamper", "hardware", "metering")


class ConfigError(LocalError):
    """A configuration problem, located by file, key and line."""

    def __init__(self, source: str, key: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.key = key
        self.line = line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def _dotted(path: KeyPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def find_line(text: str, path: KeyPath) -> int | None:
    """Best-effort line number of ``path`` in TOML ``text`` (tomllib does not report it)."""
    line = _find_line(text, path)
    if line is None and path and isinstance(path[-1], int):
        return _find_line(text, path[:-1])  # an element of an inline array: the key's line
    return line


def _find_line(text: str, path: KeyPath) -> int | None:
    keys = [p for p in path if isinstance(p, str)]
    if not keys:
        return None
    # The table is the path minus its last key; array indices pick the n-th [[table]] header.
    table_parts: list[str] = []
    index: int | None = None
    for p in path[:-1]:
        if isinstance(p, int):
            index = p
        else:
            table_parts.append(p)
    want_table = ".".join(table_parts)
    last = path[-1]
    current = ""
    seen_arrays: dict[str, int] = {}
    current_index: int | None = None
    header_line: int | None = None
    for no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        m = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", stripped) or None
        if m:
            current = m.group(1).replace(" ", "")
            seen_arrays[current] = seen_arrays.get(current, -1) + 1
            current_index = seen_arrays[current]
        else:
            m = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
            if m:
                current = m.group(1).replace(" ", "")
                current_index = None
            else:
                m = None
        if m:
            if isinstance(last, str) and current == ".".join(table_parts + [last]):
                header_line = header_line or no  # the key names a whole table
            if isinstance(last, int) and current == want_table and current_index == last:
                return no
            continue
        if current == want_table and (index is None or current_index == index):
            if isinstance(last, str) and re.match(rf"^\s*\"?{re.escape(last)}\"?\s*=", line):
                return no
    return header_line


@dataclass(frozen=True, slots=True)
class ConfigContext:
    """Passed to section parsers of other packages so their errors look like ours."""

    source: str
    text: str
    datadir: Path

    def error(self, path: KeyPath, message: str) -> ConfigError:
        return ConfigError(self.source, _dotted(path), message, find_line(self.text, path))


class _Section:
    """Typed getters over one TOML table that track which keys were used."""

    def __init__(self, ctx: ConfigContext, path: tuple[str | int, ...], table: Any) -> None:
        self.ctx = ctx
        self.path = path
        if not isinstance(table, dict):
            raise ctx.error(path, "must be a table")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def err(self, key: str | int, message: str) -> ConfigError:
        return self.ctx.error((*self.path, key), message)

    def raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.table.get(key, default)

    def get_str(self, key: str, default: str) -> str:
        v = self.raw(key, default)
        if not isinstance(v, str):
            raise self.err(key, f"must be a string, not {type(v).__name__}")
        return v

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self.err(key, "must be true or false")
        return v

    def get_int(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.err(key, f"must be an integer in {lo}..{hi}")
        return v

    def get_float(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self.err(key, f"must be a number in {lo}..{hi}")
        return float(v)

    def get_choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        v = self.get_str(key, default)
        if v not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)} (got {v!r})")
        return v

    def get_str_list(self, key: str, default: Sequence[str]) -> tuple[str, ...]:
        v = self.raw(key, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err(key, "must be a list of strings")
        return tuple(v)

    def sub(self, key: str) -> _Section:
        return _Section(self.ctx, (*self.path, key), self.raw(key, {}))

    def done(self, allowed_extra: Sequence[str] = ()) -> None:
        for key in self.table:
            if key not in self.used and key not in allowed_extra:
                raise self.err(key, "unknown key")


def _path(ctx: ConfigContext, section: _Section, key: str, default: str | None) -> Path | None:
    v = section.raw(key, default)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise section.err(key, "must be a path string")
    p = Path(v)
    return p if p.is_absolute() else ctx.datadir / p


def _check_url(section: _Section, key: str | int, url: str, *, path: KeyPath = (),
               listen: bool = False) -> str:
    """A transport URL; ``listen``: port 0 (the kernel picks one) is allowed."""
    from eschaton.net.transport import BadTransportUrl, parse_url, schemes

    where = tuple(path) or (*section.path, key)
    try:
        parsed = parse_url(url)
        if parsed.scheme in ("tcp", "udp"):
            parsed.require_port(allow_zero=listen)
    except BadTransportUrl as exc:
        raise section.ctx.error(where, str(exc)) from None
    if parsed.scheme not in schemes():
        raise section.ctx.error(where, f"unknown transport {parsed.scheme!r}; use one of "
                                       f"{', '.join(schemes())}")
    if parsed.scheme == "ble":
        raise section.ctx.error(where, "ble:// is not available in this build")
    return url


def _check_chain_url(section: _Section, url: str) -> str:
    """``[chain] url``: the Electrum server, ``tcp://HOST:PORT``."""
    from eschaton.net.transport import BadTransportUrl, parse_url

    try:
        parsed = parse_url(url)
        if parsed.scheme != "tcp" or not parsed.host:
            raise BadTransportUrl(f"{url}: must be tcp://HOST:PORT (e.g. tcp://10.99.0.1:50001)")
        parsed.require_port()
    except BadTransportUrl as exc:
        raise section.err("url", str(exc)) from None
    return url


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(source, "", f"not valid TOML: {exc}", int(m.group(1)) if m else None) \
            from None


def _parse_node(doc: dict[str, Any], text: str, source: str) -> tuple[_Section, NodeSection]:
    """``[node]``, first: every relative path hangs off its datadir. Returns the root section,
    its context now carrying that datadir."""
    root = _Section(ConfigContext(source, text, Path(D.DATADIR)), (), doc)
    node_s = root.sub("node")
    datadir = Path(node_s.get_str("datadir", D.DATADIR)).expanduser()
    if not datadir.is_absolute():
        raise node_s.err("datadir", "must be an absolute path")
    ctx = ConfigContext(source, text, datadir)
    node_s.ctx = ctx
    name = node_s.get_str("name", D.NODE_NAME)
    if len(name.encode()) > 64:
        raise node_s.err("name", "must be at most 64 bytes")
    node_s.done()
    root.ctx = ctx
    return root, NodeSection(datadir, name)


def _parse_api(root: _Section) -> ApiConfig:
    api_s = root.sub("api")
    port = api_s.raw("tcp_port", D.API_TCP_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise api_s.err("tcp_port", "must be a port in 1..65535 (127.0.0.1 only), or 0 for none")
    token = _path(root.ctx, api_s, "token_file", D.API_TOKEN_FILE)
    assert token is not None
    api = ApiConfig(_path(root.ctx, api_s, "socket", D.API_SOCKET), port or None, token)
    api_s.done()
    return api


def parse_config(text: str, source: str = "<config>") -> NodeConfig:
    """Validate TOML ``text``; ``source`` names it in errors."""
    from eschaton.core.link.identity import IdentityError, NodeId

    doc = _parse_toml(text, source)
    root, node = _parse_node(doc, text, source)
    ctx = root.ctx
    net_s = root.sub("network")
    listen = tuple(_check_url(net_s, "listen", u, path=("network", "listen", i), listen=True)
                   for i, u in enumerate(net_s.get_str_list("listen", D.LISTEN)))
    advertise = tuple(_check_url(net_s, "advertise", u, path=("network", "advertise", i))
                      for i, u in enumerate(net_s.get_str_list("advertise", ())))
    if len(advertise) > 8:
        raise net_s.err("advertise", "at most 8 URLs fit in a beacon")
    disc_s = net_s.sub("discovery")
    iface = disc_s.get_str("interface", "") or None
    if iface is not None and (len(iface) > 15 or "/" in iface or " " in iface):
        raise disc_s.err("interface", f"{iface!r} is not an interface name")
    broadcast = disc_s.get_str("broadcast", D.DISCOVERY_BROADCAST)
    if broadcast != "auto":
        try:
            ipaddress.IPv4Address(broadcast)
        except ValueError:
            raise disc_s.err("broadcast", "must be 'auto' or an IPv4 address") from None
    discovery = DiscoveryConfig(
        enabled=disc_s.get_bool("enabled", D.DISCOVERY_ENABLED),
        interface=iface,
        port=disc_s.get_int("port", D.DISCOVERY_PORT, 1, 65535),
        interval=disc_s.get_float("interval", D.DISCOVERY_INTERVAL, 0.1, 3600.0),
        broadcast=broadcast,
        max_age=disc_s.get_float("max_age", D.DISCOVERY_MAX_AGE, 1.0, 86400.0),
        expiry=disc_s.get_float("expiry", D.DISCOVERY_EXPIRY, 1.0, 86400.0),
        strict_clock=disc_s.get_bool("strict_clock", D.DISCOVERY_STRICT_CLOCK),
    )
    disc_s.done()
    peers_raw = net_s.raw("peers", [])
    if not isinstance(peers_raw, list):
        raise net_s.err("peers", "must be an array of tables ([[network.peers]])")
    peers: list[PeerConfig] = []
    for i, p in enumerate(peers_raw):
        ps = _Section(ctx, ("network", "peers", i), p)
        try:
            node_id = NodeId.from_hex(ps.get_str("id", ""))
        except IdentityError as exc:
            raise ps.err("id", str(exc)) from None
        url = ps.get_str("url", "")
        if not url:
            raise ps.err("url", "is required")
        _check_url(ps, "url", url)
        peers.append(PeerConfig(node_id, url, ps.get_str("name", "")))
        ps.done()
    ids = [p.node_id for p in peers]
    if len(set(ids)) != len(ids):
        raise net_s.err("peers", "the same node id is listed twice")
    accept = net_s.get_choice("accept", D.ACCEPT, ("any", "known"))
    max_pending = net_s.get_int("max_pending_handshakes", D.MAX_PENDING_HANDSHAKES, 1, 65536)
    per_address = net_s.get_int("max_pending_per_address", D.MAX_PENDING_PER_ADDRESS, 1, 65536)
    if per_address > max_pending:
        raise net_s.err("max_pending_per_address",
                        f"must be at most max_pending_handshakes ({max_pending})")
    max_links = net_s.get_int("max_links", D.MAX_LINKS, 0, 65536)
    handshake_timeout = net_s.get_float("handshake_timeout", D.HANDSHAKE_TIMEOUT, 0.5, 600.0)
    net_s.done()
    network = NetworkConfig(listen, advertise, discovery, tuple(peers), accept, max_pending,
                            per_address, max_links, handshake_timeout)

    api = _parse_api(root)

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
            ctx.datadir / D.CHAIN_DATADIR_LEGACY / "chain" / "index.sqlite").exists():
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
    chain = ChainConfig(backend, network_name,
                        _path(ctx, chain_s, "datadir", chain_default), chain_url, serve)
    chain_s.done()

    root.done(allowed_extra=(*_EXTENSION_SECTIONS, "microgrid", "bandwidth"))
    metering = _parse_extensions(doc, ctx)
    from eschaton.daemon.bandwidth_config import parse_bandwidth
    from eschaton.daemon.microgrid_config import parse_microgrid

    return NodeConfig(source, node, network, api, chain, metering, parse_microgrid(doc, ctx),
                      parse_bandwidth(doc, ctx))


def _parse_extensions(doc: dict[str, Any], ctx: ConfigContext) -> Any:
    if not any(k in doc for k in _EXTENSION_SECTIONS):
        return None
    try:
        module = importlib.import_module("eschaton.metering.config")
    except ImportError:
        raise ctx.error((next(k for k in _EXTENSION_SECTIONS if k in doc),),
                        "metering is not available in this build") from None
    import inspect

    parse = module.parse_metering
    if len(inspect.signature(parse).parameters) >= 2:
        return parse(doc, ctx)
    return parse(doc)


def _read(path: str | Path) -> tuple[str, str]:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), str(p)
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(p), "", "not UTF-8 text") from None


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate the TOML file at ``path``."""
    return parse_config(*_read(path))


def parse_client_config(text: str, source: str = "<config>") -> ClientConfig:
    """``[node]`` and ``[api]`` of TOML ``text``, checked exactly as ``parse_config`` checks them;
    the other sections are the node's to check when it starts (a client only needs to find it,
    and must not pay for importing what validates the network, the chain or the microgrid)."""
    root, node = _parse_node(_parse_toml(text, source), text, source)
    return ClientConfig(source, node, _parse_api(root))


def load_client_config(path: str | Path) -> ClientConfig:
    """``parse_client_config`` of the TOML file at ``path``."""
    return parse_client_config(*_read(path))
