"""Shared plumbing for CLI groups that talk to a running node through its local API.

Such a command is a thin client: it imports the standard-library API client, the datadir rule
and (with ``--config``) the config reader, and nothing of the chain, the channel code, aiohttp or
libbitcoinkernel; a Pi Zero pays for every module at each command.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eschaton.cli.main import add_common


def add_node_common(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--config", default=None, help="the node's TOML config (finds its API socket)")


def call(args: argparse.Namespace, name: str, **params: Any) -> Any:
    from eschaton.api.client import call as api_call
    from eschaton.store.datadir import resolve_datadir

    if args.config:
        from eschaton.config import load_client_config

        cfg = load_client_config(args.config)
        # The unix socket when there is one; else the loopback port (``[api] socket = ""``).
        tcp = cfg.api.tcp_port if cfg.api.socket is None else None
        return api_call(cfg.node.datadir, name, params, socket_path=cfg.api.socket,
                        token_path=cfg.api.token_file, tcp_port=tcp)
    return api_call(Path(resolve_datadir(args.datadir)), name, params)
