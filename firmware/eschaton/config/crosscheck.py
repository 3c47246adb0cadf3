"""Checks across sections, made when the file is read: a name used in one section must be
declared in another, a name declares one thing, and a serial device serves one purpose. Each
error names the file, the key that uses the name and its line, like the sections' own."""
from __future__ import annotations

from eschaton.config.bandwidth import BandwidthEntry
from eschaton.config.errors import ConfigContext
from eschaton.config.metering import MeteringConfig, ModbusMeterConfig
from eschaton.config.microgrid import MicrogridConfig
from eschaton.config.network import NetworkConfig
from eschaton.core.url import parse_url


def cross_check(ctx: ConfigContext, network: NetworkConfig, metering: MeteringConfig | None,
                microgrid: MicrogridConfig | None, bandwidth: tuple[BandwidthEntry, ...]) -> None:
    _serial_ports(ctx, network, metering)
    _names(ctx, metering, microgrid, bandwidth)


def _serial_ports(ctx: ConfigContext, network: NetworkConfig,
                  metering: MeteringConfig | None) -> None:
    """A serial device carries either peer links or a Modbus meter: both on one line would
    garble each other's frames."""
    links: dict[str, str] = {}
    for key, urls in (("network.listen", network.listen),
                      ("network.peers", tuple(p.url for p in network.peers))):
        for i, url in enumerate(urls):
            parsed = parse_url(url)  # already checked by network.py
            if parsed.scheme == "serial" and parsed.path:
                links.setdefault(parsed.path, f"{key}[{i}]" if key == "network.listen"
                                 else f"{key}[{i}].url")
    for i, m in enumerate(metering.meters if metering is not None else ()):
        if isinstance(m, ModbusMeterConfig) and m.port in links:
            raise ctx.error(("meter", i, "port"), f"{m.port} is already the link transport of "
                            f"{links[m.port]}")


def _names(ctx: ConfigContext, metering: MeteringConfig | None,
           microgrid: MicrogridConfig | None, bandwidth: tuple[BandwidthEntry, ...]) -> None:
    meters = {m.name for m in metering.meters} if metering is not None else set()
    declared = {n: f"{kind}[{i}]" for kind, items in (
        ("meter", metering.meters if metering else ()), ("valve", metering.valves if metering else ()),
        ("relay", metering.relays if metering else ()), ("tamper", metering.tampers if metering else ()))
        for i, n in enumerate(x.name for x in items)}
    for i, entry in enumerate(bandwidth):
        if entry.name in declared:  # a microgrid sale names a meter: it must mean one thing
            raise ctx.error(("bandwidth", i, "name"), f"{entry.name!r} is already the name of "
                            f"{declared[entry.name]}")
    if microgrid is None:
        return
    bw = {b.name for b in bandwidth}
    everything = meters | bw
    valves = {v.name for v in metering.valves} if metering is not None else set()
    relays = {r.name for r in metering.relays} if metering is not None else set()
    for i, s in enumerate(microgrid.sell):
        if s.meter not in everything:
            raise ctx.error(("microgrid", "sell", i, "meter"), f"no [[meter]] named {s.meter!r}")
        if s.valve is not None and s.valve not in valves:
            raise ctx.error(("microgrid", "sell", i, "valve"), f"no [[valve]] named {s.valve!r}")
        if s.relay is not None and s.relay not in relays:
            raise ctx.error(("microgrid", "sell", i, "relay"), f"no [[relay]] named {s.relay!r}")
        if (s.meter in bw) != (s.service == "bandwidth"):
            raise ctx.error(("microgrid", "sell", i, "meter"), f"meter {s.meter!r} is " + (
                "a [[bandwidth]] meter; sell it as service = \"bandwidth\"" if s.meter in bw
                else "not a [[bandwidth]] meter; bandwidth is sold from [[bandwidth]] meters"))
    for i, b in enumerate(microgrid.buy):
        if b.meter is not None and b.meter not in everything:
            raise ctx.error(("microgrid", "buy", i, "meter"), f"no [[meter]] named {b.meter!r}")
    for i, ls in enumerate(microgrid.loss):
        for key, names in (("bulk", (ls.bulk,)), ("downstream", ls.downstream)):
            for name in names:
                if name not in everything:
                    raise ctx.error(("microgrid", "loss", i, key), f"no [[meter]] named {name!r}")
