"""Every configuration default, in one place."""
from __future__ import annotations

DATADIR = "/var/lib/eschaton"
NODE_NAME = ""

LISTEN = ("tcp://0.0.0.0:9735",)
DISCOVERY_ENABLED = True
DISCOVERY_PORT = 47800
DISCOVERY_INTERVAL = 10.0
DISCOVERY_BROADCAST = "auto"
DISCOVERY_MAX_AGE = 60.0
DISCOVERY_STRICT_CLOCK = False  # a Pi has no real-time clock; see core/link/beacon.py
DISCOVERY_EXPIRY = 45.0

API_SOCKET = "api.sock"
API_TCP_PORT = 0
API_TOKEN_FILE = "api.token"

CHAIN_BACKEND = "embedded"
CHAIN_NETWORK = "regtest"
CHAIN_DATADIR = "."  # the node's datadir: its chain is <datadir>/chain, where `eschaton chain --datadir` looks
CHAIN_DATADIR_LEGACY = "chain"  # the default before: <datadir>/chain/chain, still used if a chain is there
CHAIN_URL = ""
