"""The ``[[bandwidth]]`` tables: neighbours whose forwarded traffic this node meters in the kernel.

```toml
[[bandwidth]]
name = "h1-uplink"               # meter name; sell it with [[microgrid.sell]] meter = "h1-uplink"
addresses = ["10.91.1.2"]        # the client's IPv4 addresses or prefixes ("10.91.1.0/28")
interface = "bat0"               # optional: the interface the client is reached on; then this
                                 # node forwards nothing from or to it but metered clients
```

Each entry becomes one nftables byte counter (traffic from or to those addresses that this node
forwards) and one entry of the node's cut set (``meter_drivers.nft_bandwidth``); totals are made
durable in ``DATADIR/bandwidth`` (``eschaton.metering.bandwidth``). The counter counts L3 bytes
both ways, so a tariff sold per MB bills upload and download alike.

An ``interface`` makes it a guarded interface: the node forwards nothing arriving on it or
leaving by it but IPv4 traffic of metered clients (and no IPv6, which is not metered). Without
one, a neighbour could take another, unmetered address (or use IPv6) and be forwarded for free,
or step around its own cut. Traffic to and from the node itself (its links, its API) is not
forwarded traffic and is unaffected.

Rules: names are short lowercase identifiers (they name kernel objects); addresses are checked
with ``ipaddress``; a name may appear once, and no two prefixes may overlap. Errors name the file, key and line.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from eschaton.config.errors import ConfigContext
from eschaton.config.microgrid import Table, table_list
from meter_drivers.nft_bandwidth import NAME_RE, NftConfigError, check_interface


@dataclass(frozen=True, slots=True)
class BandwidthEntry:
    name: str
    addresses: tuple[str, ...]
    interface: str | None = None
    """Guarded interface (see the module doc), or None."""


def guarded_interfaces(entries: tuple[BandwidthEntry, ...]) -> tuple[str, ...]:
    """Every interface some entry names, once, in file order."""
    return tuple(dict.fromkeys(e.interface for e in entries if e.interface is not None))


def parse_bandwidth(doc: dict[str, Any], ctx: ConfigContext) -> tuple[BandwidthEntry, ...]:
    """The ``[[bandwidth]]`` tables of the node's TOML (empty when absent)."""
    if "bandwidth" not in doc:
        return ()
    root = Table(ctx, (), doc)
    out: list[BandwidthEntry] = []
    seen: list[tuple[ipaddress.IPv4Network, str]] = []
    for i, d in enumerate(table_list(root, "bandwidth")):
        t = Table(ctx, ("bandwidth", i), d)
        name = t.str_("name")
        if not NAME_RE.fullmatch(name):  # the driver's rule: names name kernel objects
            raise t.err("name", "must be 1-31 characters of a-z, 0-9, '_' or '-', starting with a "
                        "letter or digit")
        if any(e.name == name for e in out):
            raise t.err("name", f"bandwidth meter {name!r} is declared twice")
        raw = t.raw("addresses", None)
        if raw is None:
            raise t.err("addresses", "is required")
        if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
            raise t.err("addresses", "must be a non-empty array of IPv4 addresses or prefixes")
        addrs: list[str] = []
        for a in raw:
            try:
                net = ipaddress.IPv4Network(a, strict=True)
            except ValueError as exc:
                raise t.err("addresses", f"{a!r} is not an IPv4 address or prefix ({exc})") from None
            text = str(net.network_address) if net.prefixlen == 32 else str(net)
            # A packet must bump exactly one counter: no address may be metered twice.
            for other, owner in seen:
                if net.overlaps(other):
                    raise t.err("addresses", f"{text} overlaps {other}, already metered by {owner!r}")
            seen.append((net, name))
            addrs.append(text)
        iface = t.raw("interface", None)
        if iface is not None:
            try:
                check_interface(iface)  # the driver's rule, checked here to name file and line
            except NftConfigError as exc:
                raise t.err("interface", str(exc)) from None
        t.done()
        out.append(BandwidthEntry(name, tuple(addrs), iface))
    return tuple(out)
