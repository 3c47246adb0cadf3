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

# Inbound link limits (docs/network.md, "Limits"): a Pi has 1,024 file descriptors and little RAM.
ACCEPT = "any"  # or "known": only pinned peers may link
MAX_PENDING_HANDSHAKES = 64
MAX_PENDING_PER_ADDRESS = 8
MAX_LINKS = 64  # established inbound links from peers that are not pinned
HANDSHAKE_TIMEOUT = 10.0  # seconds from accept (or dial) until the link must be open

API_SOCKET = "api.sock"
API_TCP_PORT = 0
API_TOKEN_FILE = "api.token"

CHAIN_BACKEND = "embedded"
CHAIN_NETWORK = "regtest"
CHAIN_DATADIR = "."  # the node's datadir: its chain is <datadir>/chain, where `eschaton chain --datadir` looks
CHAIN_DATADIR_LEGACY = "chain"  # the default before: <datadir>/chain/chain, still used if a chain is there
CHAIN_URL = ""
