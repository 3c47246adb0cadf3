"""The bodies of the dashboard's pages, from the results of the node's API commands.

``run(name, **args)`` is the dashboard's way to the node: the same ``Command`` the API serves
(validated the same way), never a second implementation.
"""
from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eschaton.dashboard.pages import action, ago, esc, fmt, kv, table
from eschaton.errors import EschatonError

Run = Callable[..., Awaitable[Any]]
RATE_DISPLAY = {"litre": ("L/min", 60.0), "kWh": ("W", 3.6e6)}  # unit -> (rate unit, factor per s)


async def node_view(run: Run, csrf: str) -> str:
    st = await run("node.status")
    peers = await run("peer.list")
    health = await run("node.health")
    facts = {"id": st["id"], "name": st["name"], "uptime": f'{st["uptime_s"]:.0f} s',
             "chain tip": f'{st["chain"]["height"]} ({st["chain"]["hash"][:16]}…)',
             "chain backend": st["chain"]["backend"], "listening on": st["listen"],
             "channels": st["channels"], "channel store commits": st["channel_store_commits"]}
    rows = [dict(p, rtt=(f'{p["rtt_ms"]:.1f} ms' if p.get("rtt_ms") is not None else "")) for p in peers]
    return (f'<section id="node">{kv(facts)}</section><h2>Peers</h2>'
            + table(rows, [("id", "node"), ("linked", "linked"), ("transport", "transport"),
                           ("via", "address"), ("rtt", "RTT"), ("services", "services")], row_id="peer",
                    empty="no peers")
            + "<h2>Services</h2>" + table(health, [("service", "service"), ("state", "state"),
                                                  ("detail", "detail")]))


async def channels_view(run: Run, csrf: str) -> str:
    chans = await run("channel.list")

    def acts(c: Mapping[str, Any]) -> str:
        if c["state"] != "OPEN":
            return ""
        pay = action("channel.pay", csrf, {"channel": c["channel"], "id": "dash-" + secrets.token_hex(8)},
                     "Pay", inputs=[("amount", "number", "sat")], back="/channels", cls="pay")
        close = action("channel.close", csrf, {"channel": c["channel"]}, "Close",
                       confirm="Close this channel cooperatively?", back="/channels")
        return pay + close

    rows = [dict(c, capacity=c["local_sat"] + c["remote_sat"] + c["fee_sat"]) for c in chans]
    body = table(rows, [("channel", "channel"), ("peer", "peer"), ("state", "state"),
                        ("capacity", "capacity sat"), ("local_sat", "ours sat"), ("remote_sat", "theirs sat"),
                        ("fee_sat", "fee sat"), ("switches_left", "switches left"), ("escrows", "escrows"),
                        ("bets", "bets"), ("version", "version")], row_id="ch", extra=acts,
                 empty="no channels")
    peers = [p for p in await run("peer.list") if p.get("linked")]
    opener = action("channel.open", csrf, {}, "Open a channel",
                    inputs=[("peer", "text", "peer node id"), ("capacity", "number", "capacity sat")],
                    back="/channels") if peers else ""
    return body + "<h2>Open</h2>" + (opener or "<p>no linked peer to open a channel with</p>")


async def payments_view(run: Run, csrf: str, state: str, channel: str) -> str:
    pays = await run("channel.payments", state=state, channel=channel, limit=500)
    received = await run("events.since", seq=0, limit=1000, source="payments")
    got = [dict(e, when=ago(e["at_ms"])) for e in received["events"] if e["kind"] == "PaymentReceived"
           and e.get("channel_id", "").startswith(channel.lower())]
    opts = "".join(f'<option value="{s}"{" selected" if s == state else ""}>{s or "all"}</option>'
                   for s in ("", "pending", "complete", "failed"))
    flt = (f'<form method="get" action="/payments" class="filter" id="filter"><select name="state">{opts}</select>'
           f'<input name="channel" placeholder="channel id" value="{esc(channel)}"><button>Filter</button></form>')
    return (flt + "<h2>Sent</h2>"
            + table(pays, [("created", "created"), ("id", "id"), ("channel", "channel"), ("amount", "sat"),
                           ("state", "state"), ("version", "version"), ("error", "error")], row_id="pay", key="id",
                    empty="no payments")
            + "<h2>Received since the node started</h2>"
            + table(got[::-1][:200], [("when", "when"), ("channel_id", "channel"), ("amount", "sat"),
                                      ("peer", "peer"), ("balance", "balance sat")], empty="none"))


async def meters_view(run: Run, csrf: str) -> str:
    meters = await run("meter.list")
    out = ['<p class="spans" id="spans">Plot the last <button data-span="hour" class="on">hour</button>'
           '<button data-span="day">day</button><button data-span="week">week</button></p>']
    for m in meters:
        unit, _ = RATE_DISPLAY.get(m["unit"], (m["unit"] + "/s", 1.0))
        factor = RATE_DISPLAY.get(m["unit"], ("", 1.0))[1]
        out.append(f'<section class="meter" id="meter-{esc(m["name"])}"><h2>{esc(m["name"])}</h2>'
                   f'<p>total <b data-meter-total="{esc(m["name"])}">{fmt(m.get("total"))}</b> {esc(m["unit"])}'
                   f' · rate <b data-meter-rate="{esc(m["name"])}" data-factor="{factor}">'
                   f'{fmt((m.get("rate_per_s") or 0) * factor)}</b> {esc(unit)}</p>'
                   f'<div class="plot" data-meter="{esc(m["name"])}" data-factor="{factor}" '
                   f'data-unit="{esc(unit)}" data-points="0"></div></section>')
    return "".join(out) if meters else '<p class="empty">no meters</p>'


async def valves_view(run: Run, csrf: str) -> str:
    valves = await run("valve.list")
    relays = await run("relay.list")

    def vact(v: Mapping[str, Any]) -> str:
        if v["open"]:
            return action("valve.close", csrf, {"name": v["name"]}, "Close", back="/valves",
                          confirm=f'Close valve {v["name"]}? The supply through it stops.')
        return action("valve.open", csrf, {"name": v["name"]}, "Open", back="/valves",
                      confirm=f'Open valve {v["name"]}?')

    def ract(r: Mapping[str, Any]) -> str:
        on = not r["on"]
        return action("relay.switch", csrf, {"name": r["name"], "on": "true" if on else "false"},
                      "Connect" if on else "Cut", back="/valves",
                      confirm=f'{"Connect" if on else "Cut"} the supply on relay {r["name"]}?')

    vrows = [dict(v, state="open" if v["open"] else "closed") for v in valves]
    rrows = [dict(r, state="on" if r["on"] else "off") for r in relays]
    return ("<h2>Valves</h2>" + table(vrows, [("name", "valve"), ("type", "type"), ("meter", "meter"),
                                              ("state", "state"), ("sensed_open", "sensed open")],
                                      row_id="valve", extra=vact, empty="no valves")
            + "<h2>Relays</h2>" + table(rrows, [("name", "relay"), ("meter", "meter"), ("contact", "contact"),
                                                ("state", "state")], row_id="relay", extra=ract,
                                        empty="no relays"))


async def microgrid_view(run: Run, csrf: str) -> str:
    st = await run("microgrid.status")
    alarms = await run("events.since", seq=0, limit=1000, source="microgrid")
    cuts = await run("events.since", seq=0, limit=1000, source="supply")
    ev = [dict(e, when=ago(e["at_ms"])) for e in alarms["events"] + cuts["events"]
          if e["kind"] in ("actuation", "loss_alarm", "loss_clear", "cut", "reconnect")
          or "alarm" in e["kind"]]
    return (kv(st) + "<h2>Cuts, reconnections and alarms</h2>"
            + table(ev[::-1][:200], [("when", "when"), ("source", "source"), ("kind", "kind"),
                                     ("meter_id", "meter"), ("on", "on")], empty="none since start"))


async def ledger_view(run: Run, csrf: str, role: str) -> str:
    rows = await run("microgrid.ledger", role=role)
    tabs = "".join(f'<a href="/ledger?role={r}"{" class=on" if r == role else ""}>{r}</a>'
                   for r in ("seller", "buyer", "loss"))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return (f'<p class="tabs">{tabs} · <a id="csv" href="/ledger.csv?role={esc(role)}" download>'
            f"Download CSV</a></p>" + table(rows[::-1][:500], [(k, k) for k in keys], empty="no entries"))


async def ledger_csv(run: Run, role: str) -> str:
    rows = await run("microgrid.ledger", role=role)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_cell(r.get(k)) for k in keys})
    return buf.getvalue()


def _csv_cell(v: Any) -> Any:
    # A cell starting with =, +, - or @ is a formula to a spreadsheet: quote it as text.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@"):
        return "'" + v
    return v


async def tools_view(run: Run, csrf: str, config: Mapping[str, Any]) -> str:
    health = await run("node.health")
    bad = [h for h in health if h["state"] not in ("ok", "off")]
    check = ("<p class=ok>every configured service is ok</p>" if not bad else
             "".join(f'<p class=error>{esc(h["service"])}: {esc(h["state"])} {esc(h["detail"])}</p>'
                     for h in bad))
    meters: list[dict[str, Any]] = []
    try:
        meters = await run("meter.list")
    except EschatonError:  # no [metering]: the pin test has nothing to show
        meters = []
    pins = table([m for m in meters if "counts" in m],
                 [("name", "meter"), ("type", "type"), ("counts", "pulses"), ("counts_per_unit", "pulses per unit")],
                 row_id="pin", empty="no pulse meters")
    return ("<h2>Config check</h2>" + check + kv(config)
            + "<h2>Pin test</h2><p>Pulses counted on each meter input, live: run water or load "
              "through a meter and watch its count move (the <b>since open</b> column counts from "
              "when this page opened).</p>" + pins.replace("<th></th>", "")
            + "<h2>Calibration</h2><p>Measure a pulse meter's pulses per unit: note the pulse count "
              "above, pass a known quantity (a 10 L bucket), and divide the difference by it. "
              "<code>eschaton meter calibrate NAME --pulses N --quantity Q</code> stores it for the next "
              "start.</p><p class=calc>pulses <input id=cal-pulses type=number inputmode=numeric> "
              "for quantity <input id=cal-qty type=number inputmode=decimal> = "
              "<b id=cal-out>?</b> per unit</p>")
