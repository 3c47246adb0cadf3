"""Read the node's TOML configuration once and validate it into ``schema.NodeConfig``.

Rules:
- Every key is checked (type, range, known name); unknown keys are errors, so typos surface.
- A ``ConfigError`` names the file, the dotted key and, when it can be found, the line.
- Relative paths are resolved against ``[node] datadir``.
- One module per section parses it (``node``, ``network``, ``api``, ``chain``, ``metering``,
  ``microgrid``, ``bandwidth``); ``crosscheck`` then checks the names one section uses against
  the sections that declare them.
- Three readers, from the whole to the least: ``load_config`` (the node), ``load_client_config``
  (``[node]`` and ``[api]`` alone, for the CLI commands that only need to find the running node)
  and ``load_metering_config`` (the metering sections alone, for ``eschaton hw safe-state`` and
  the ``meter``/``valve`` commands). What validates the other sections (node ids, the microgrid's
  units) is imported by ``parse_config`` when it runs: a client does not pay for it at each command.
"""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eschaton.config.api import parse_api
from eschaton.config.errors import ConfigContext, ConfigError, find_line
from eschaton.config.node import parse_node
from eschaton.config.schema import ClientConfig, NodeConfig

if TYPE_CHECKING:
    from eschaton.config.metering import MeteringConfig

__all__ = ["ConfigContext", "ConfigError", "find_line", "load_client_config", "load_config",
           "load_metering_config", "parse_client_config", "parse_config"]


def _parse_toml(text: str, source: str, key: str = "") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(source, key, f"not valid TOML: {exc}", int(m.group(1)) if m else None) \
            from None


def parse_config(text: str, source: str = "<config>") -> NodeConfig:
    """Validate TOML ``text``; ``source`` names it in errors."""
    from eschaton.config.bandwidth import parse_bandwidth
    from eschaton.config.chain import parse_chain
    from eschaton.config.channel import parse_channel
    from eschaton.config.crosscheck import cross_check
    from eschaton.config.dashboard import parse_dashboard
    from eschaton.config.dht import parse_dht
    from eschaton.config.metering import SECTIONS, has_metering, parse_metering_config
    from eschaton.config.microgrid import parse_microgrid
    from eschaton.config.network import parse_network
    from eschaton.config.routing import parse_routing
    from eschaton.config.stamp import parse_stamp

    doc = _parse_toml(text, source)
    root, node = parse_node(doc, text, source)
    ctx = root.ctx
    network = parse_network(root)
    api = parse_api(root)
    chain = parse_chain(root)
    channel = parse_channel(root)
    dashboard = parse_dashboard(root)
    stamp = parse_stamp(root)
    routing = parse_routing(root)
    dht = parse_dht(root)
    root.done(allowed_extra=(*SECTIONS, "microgrid", "bandwidth"))
    metering = parse_metering_config(doc, ctx=ctx) if has_metering(doc) else None
    microgrid = parse_microgrid(doc, ctx)
    bandwidth = parse_bandwidth(doc, ctx)
    cross_check(ctx, network, metering, microgrid, bandwidth)
    return NodeConfig(source, node, network, api, chain, metering, microgrid, bandwidth, channel,
                      dashboard if dashboard.enabled else None, stamp, routing, dht)


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
    root, node = parse_node(_parse_toml(text, source), text, source)
    return ClientConfig(source, node, parse_api(root))


def load_client_config(path: str | Path) -> ClientConfig:
    """``parse_client_config`` of the TOML file at ``path``."""
    return parse_client_config(*_read(path))


def load_metering_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
                         check_ports: bool = True) -> MeteringConfig:
    """The metering sections of the TOML file at ``path`` alone (the rest is the node's to check:
    the safe-state command must close valves whatever else the file says)."""
    from eschaton.config.metering import parse_metering_config

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(str(p), "file", "does not exist") from None
    except OSError as e:
        raise ConfigError(str(p), "file", f"cannot be read: {e.strerror}") from None
    data = _parse_toml(text, str(p), key="toml")
    return parse_metering_config(data, source=str(p), text=text, env=env, check_ports=check_ports)
