"""The ``[microgrid]`` section: what this node sells to and buys from its neighbours.

```toml
[microgrid]
reading_interval_s = 0.25        # how often contracted meters are read and billed

[[microgrid.sell]]               # one metered connection this node supplies
meter = "h2-to-h1"               # our [[meter]] on that connection
valve = "h2-to-h1"               # the [[valve]] (or relay = "...") that cuts it; a
                                 # [[bandwidth]] meter cuts its own client (no valve)
buyer = "<node id, 64 hex>"      # the neighbour who pays for it
service = "water"                # water | electricity | bandwidth
unit = "litre"                   # litre | kWh | MB | GB (priced unit)
base_unit = "mL"                 # mL | L | Wh | kWh | B (what invoices count)
price_msat = 20000               # per priced unit
credit_limit_sat = 100           # unpaid amount tolerated before the cut
pay_interval_ms = 2000           # least time between invoices
fee_sat = 0                      # access fee per completed period (optional)
fee_period_ms = 0
offer_ttl_s = 60                 # how long an offer stays open
via = "channel"                  # channel: paid over our trade channel with the buyer;
                                 # routing: paid through the network to our payment requests
                                 # (the buyer need not hold a channel with us)

[[microgrid.buy]]                # a neighbour this node buys from
seller = "<node id, 64 hex>"
max_price_msat = 50000           # offers above this are refused
max_credit_limit_sat = 10000     # and offers asking more credit than this
meter = "inlet"                  # optional: our own meter on the connection (checks invoices)
tolerance_units = 200            # own-meter check: absolute slack in base units
tolerance_ppm = 20000            # plus this fraction of our own count
via = "channel"                  # or "routing": pay the seller's payment requests through
                                 # the network (multi-hop), with no channel to the seller
max_total_sat = 50000            # optional: pay this seller no more than this in all

[[microgrid.loss]]               # optional loss / bypass check among our own meters
bulk = "pump"
downstream = ["h2-to-h1", "h2-to-h3"]
window_s = 10
alarm_units = 500                # base units of the bulk meter
alarm_ppm = 50000
clear_units = 200
clear_ppm = 20000
```

Rules: every key is checked (type, range, known name) and an error names the file, the key and
its line through the loader's ``ConfigContext``. The names of meters, valves and relays are
checked against the sections that declare them by ``config.crosscheck``, when the file is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eschaton.config import defaults as D
from eschaton.config.errors import ConfigContext, ConfigError

MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SellConfig:
    meter: str
    valve: str | None
    relay: str | None
    buyer: str
    service: str
    unit: str
    base_unit: str
    price_msat: int
    credit_limit_sat: int
    pay_interval_ms: int
    fee_sat: int
    fee_period_ms: int
    offer_ttl_s: float
    via: str = "channel"
    """How the buyer pays: ``channel`` (our trade channel with it) or ``routing`` (multi-hop
    payments to our payment requests, ``eschaton.core.microgrid.routed``)."""


@dataclass(frozen=True, slots=True)
class BuyConfig:
    seller: str
    max_price_msat: int
    max_credit_limit_sat: int
    meter: str | None
    tolerance_units: int
    tolerance_ppm: int
    via: str = "channel"
    """How we pay: ``channel`` or ``routing`` (see ``SellConfig.via``)."""
    max_total_sat: int | None = None
    """The most we pay this seller in all (None: no cap); past it we stop paying."""


@dataclass(frozen=True, slots=True)
class LossSection:
    bulk: str
    downstream: tuple[str, ...]
    window_s: float
    alarm_units: int
    alarm_ppm: int
    clear_units: int
    clear_ppm: int


@dataclass(frozen=True, slots=True)
class MicrogridConfig:
    reading_interval_s: float
    sell: tuple[SellConfig, ...]
    buy: tuple[BuyConfig, ...]
    loss: tuple[LossSection, ...]


class Table:
    """One table of the section, with typed getters that raise located errors."""

    def __init__(self, ctx: ConfigContext, path: tuple[str | int, ...], data: Any) -> None:
        self.ctx, self.path = ctx, path
        if not isinstance(data, dict):
            raise ctx.error(path, "must be a table")
        self.data = data
        self.used: set[str] = set()

    def err(self, key: str, msg: str) -> ConfigError:
        return self.ctx.error((*self.path, key), msg)

    def raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise self.err(key, "is required")
            return default
        return self.data[key]

    def int_(self, key: str, default: Any = None, lo: int = 0, hi: int = MAX_INT) -> int:
        v = self.raw(key, _REQUIRED if default is None else default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.err(key, f"must be an integer in {lo}..{hi}")
        return v

    def num(self, key: str, default: float, lo: float, hi: float) -> float:
        v = self.raw(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self.err(key, f"must be a number in {lo}..{hi}")
        return float(v)

    def str_(self, key: str, default: Any = None) -> Any:
        if key not in self.data and default is not None:
            self.used.add(key)
            return default
        v = self.raw(key, _REQUIRED if default is None else default)
        if not isinstance(v, str) or not v:
            raise self.err(key, "must be a non-empty string")
        return v

    def node_id(self, key: str) -> str:
        v = self.str_(key)
        try:
            if len(bytes.fromhex(v)) != 32:
                raise ValueError
        except ValueError:
            raise self.err(key, "must be a node id (64 hex digits)") from None
        return str(v).lower()

    def done(self) -> None:
        for k in self.data:
            if k not in self.used:
                raise self.err(k, "unknown key")


_REQUIRED = object()
VIAS = ("channel", "routing")


def via(t: Table) -> str:
    v = t.str_("via", "channel")
    if v not in VIAS:
        raise t.err("via", "must be channel or routing")
    return str(v)


def table_list(root: Table, key: str) -> list[Any]:
    v = root.raw(key, [])
    if not isinstance(v, list):
        raise root.err(key, f"must be an array of tables ([[microgrid.{key}]])")
    return v


def parse_microgrid(doc: dict[str, Any], ctx: ConfigContext) -> MicrogridConfig | None:
    """The ``[microgrid]`` section of the node's TOML, or None if absent."""
    if "microgrid" not in doc:
        return None
    # The unit table lives with the terms, which sign with the node key: loaded only when a node
    # reads its config, never by a thin client.
    from eschaton.core.microgrid.terms import UNITS, Service

    root = Table(ctx, ("microgrid",), doc["microgrid"])
    interval = root.num("reading_interval_s", D.READING_INTERVAL_S, 0.01, 60.0)
    sells: list[SellConfig] = []
    for i, d in enumerate(table_list(root, "sell")):
        t = Table(ctx, ("microgrid", "sell", i), d)
        service = t.str_("service")
        if service not in {s.value for s in Service}:
            raise t.err("service", "must be water, electricity or bandwidth")
        unit, base = t.str_("unit"), t.str_("base_unit")
        if (Service(service), unit, base) not in UNITS:
            raise t.err("base_unit", f"{service}/{unit}/{base} is not a known unit pair "
                        "(water: litre with mL or L; electricity: kWh with Wh or kWh; "
                        "bandwidth: MB or GB with B)")
        valve, relay = t.str_("valve", ""), t.str_("relay", "")
        if service == Service.BANDWIDTH.value:
            if valve or relay:
                raise t.err("valve" if valve else "relay",
                            "a bandwidth meter cuts its own client: give no valve or relay")
        elif bool(valve) == bool(relay):
            raise t.err("valve", "give exactly one of valve or relay (what cuts the supply)")
        sale_via = via(t)
        if sale_via == "routing":
            from eschaton.core.microgrid.routed import MIN_PAYMENT_SAT

            if t.int_("credit_limit_sat", 0) < MIN_PAYMENT_SAT:
                raise t.err("credit_limit_sat", f"a sale paid through the network needs a credit limit of at "
                            f"least {MIN_PAYMENT_SAT} sat (no escrow can carry less)")
        fee, period = t.int_("fee_sat", 0), t.int_("fee_period_ms", 0)
        if fee and not period:
            raise t.err("fee_sat", "an access fee needs a positive fee_period_ms")
        sells.append(SellConfig(
            meter=t.str_("meter"), valve=valve or None, relay=relay or None,
            buyer=t.node_id("buyer"), service=service, unit=unit, base_unit=base,
            price_msat=t.int_("price_msat", None, 0, 10**12),
            credit_limit_sat=t.int_("credit_limit_sat", 0),
            pay_interval_ms=t.int_("pay_interval_ms", 0),
            fee_sat=fee, fee_period_ms=period,
            offer_ttl_s=t.num("offer_ttl_s", D.OFFER_TTL_S, 1.0, 86400.0), via=sale_via))
        t.done()
        if sum(1 for s in sells if s.meter == sells[-1].meter) > 1:
            raise t.err("meter", f"meter {sells[-1].meter!r} is sold twice")
    buys: list[BuyConfig] = []
    for i, d in enumerate(table_list(root, "buy")):
        t = Table(ctx, ("microgrid", "buy", i), d)
        buys.append(BuyConfig(
            seller=t.node_id("seller"),
            max_price_msat=t.int_("max_price_msat", None, 0, 10**12),
            max_credit_limit_sat=t.int_("max_credit_limit_sat", MAX_INT),
            meter=t.str_("meter", "") or None,
            tolerance_units=t.int_("tolerance_units", 0),
            tolerance_ppm=t.int_("tolerance_ppm", 0, 0, 1_000_000), via=via(t),
            max_total_sat=t.int_("max_total_sat", 0) if "max_total_sat" in t.data else None))
        t.done()
    losses: list[LossSection] = []
    for i, d in enumerate(table_list(root, "loss")):
        t = Table(ctx, ("microgrid", "loss", i), d)
        down = t.raw("downstream", _REQUIRED)
        if not isinstance(down, list) or not down or not all(isinstance(x, str) and x for x in down):
            raise t.err("downstream", "must be a non-empty list of meter names")
        losses.append(LossSection(
            bulk=t.str_("bulk"), downstream=tuple(down),
            window_s=t.num("window_s", D.LOSS_WINDOW_S, 0.1, 86400.0),
            alarm_units=t.int_("alarm_units", 0), alarm_ppm=t.int_("alarm_ppm", 0, 0, 1_000_000),
            clear_units=t.int_("clear_units", 0), clear_ppm=t.int_("clear_ppm", 0, 0, 1_000_000)))
        t.done()
    root.done()
    return MicrogridConfig(interval, tuple(sells), tuple(buys), tuple(losses))
