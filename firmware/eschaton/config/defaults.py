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
DISCOVERY_BLE = False  # Bluetooth LE advertisements; needs a ble:// listen URL

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
# [chain] automatic block production on a village chain (embedded regtest), seconds; 0 = off.
CHAIN_BLOCK_INTERVAL_S = 0.0  # a block this long after the last one
CHAIN_BLOCK_AFTER_TX_S = 0.0  # a block this long after a transaction enters an empty mempool
CHAIN_BLOCK_MAX_S = 86_400.0  # the longest either may be (a day)

# [channel] (config/channel.py): the turn holder keeps the turn this long while it has payments
# queued, so reverse payments share one direction switch (docs/channels.md, "Dwell"). Below the
# 2 s after which a waiting payment logs that it waits.
TURN_DWELL_MS = 300
PAYMENT_RETENTION_DAYS = 30  # [channel]: payment records older than this are pruned
PAYMENT_RECORDS = 100_000  # [channel]: ... and all but this many newest (about 16 MB on disk)
PAYMENT_KEEP_HOURS = 24  # [channel]: ... but the count never prunes a record younger than this

# The CLI's datadir when neither --datadir nor $ESCHATON_DATADIR names one (a user's own node; the
# node's service keeps DATADIR above, which its unit and /etc/eschaton/node.toml name).
CLIENT_DATADIR = "~/.eschaton"
CONFIG_NAME = "node.toml"  # the node's config inside a datadir, where the CLI looks by default

# [hardware], [metering], [[meter]], [[valve]] (config/metering.py)
HW_BACKEND = "auto"
COMMIT_INTERVAL_S = 1.0
JOURNAL_DIR = "metering"
PULSES_PER_LITRE = 450.0  # YF-S201: F(Hz) = 7.5 x Q(L/min)
IMPULSES_PER_KWH = 1000.0
FLOW_MAX_HZ = 500.0  # a YF-S201 tops out near 30 L/min = 225 Hz; far above is noise
S0_MAX_HZ = 100.0  # the S0 standard allows at most ~17 impulses/s; far above is noise
VALVE_SETTLE_S = 5.0
VALVE_TRAVEL_S = 15.0
LEAK_PULSES = 10
MODBUS_TIMEOUT_S = 0.5
MODBUS_POLL_INTERVAL_S = 5.0

# [microgrid] (config/microgrid.py)
READING_INTERVAL_S = 0.25
OFFER_TTL_S = 60.0
LOSS_WINDOW_S = 10.0

# [dashboard] (config/dashboard.py): off by default; loopback unless an address is configured.
DASHBOARD_ENABLED = False
DASHBOARD_LISTEN = "127.0.0.1:8480"
DASHBOARD_PASSWORD_FILE = "dashboard.passwd"
DASHBOARD_URL_FILE = "dashboard.url"
DASHBOARD_LOGIN_LOCK_S = 2.0

# [stamp] (config/stamp.py)
STAMP_ROUND_S = 1.0
STAMP_MAX_DIGESTS = 100_000
STAMP_FEE_TARGET_BLOCKS = 6
STAMP_CONFIRMATIONS = 1
STAMP_PRICE_SAT = 0
STAMP_MAX_PRICE_SAT = 0

# [dht] (config/dht.py): Kademlia's k and alpha; prices of a query in satoshis
DHT_K = 20
DHT_ALPHA = 3
DHT_RATE = 50.0
DHT_BURST = 200.0
DHT_PRICE_BASE_SAT = 1
DHT_PRICE_PER_RESULT_SAT = 1
DHT_PRICE_PER_KIB_SAT = 1
DHT_MAX_PRICE_SAT = 100
DHT_PER_PUBLISHER_RECORDS = 256
DHT_PER_PUBLISHER_KIB = 256
DHT_TOTAL_KIB = 16 * 1024
DHT_FORWARD_HOPS = 2
DHT_DIALS_PER_MINUTE = 30
DHT_DIALS_IN_FLIGHT = 4

# [routing] (config/routing.py): the fee policy a node announces for forwarding
ROUTING_FEE_BASE_SAT = 1
ROUTING_FEE_PPM = 1000
ROUTING_FEE_HOLD_PPM = 10
ROUTING_DELTA = 24
ROUTING_MIN_DELTA = 8  # 3 x confirm (2) + safety (2): the node's margins (daemon/routing.py)
