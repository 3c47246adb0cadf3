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

from eschaton.dashboard.pages import action, ago, csrf_field, esc, fmt, kv, table
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
    """Each contract on its own card: price, credit used against the limit (a gauge), invoices;
    then cuts, reconnections and loss alarms. ``dashboard.js`` redraws the ``#mg`` section when a
    microgrid, supply or payment event arrives on the live stream."""
    st = await run("microgrid.status")
    out = ['<div id="mg">']
    if st["sell"]:
        out.append("<h2>Sold</h2>")
    for c in st["sell"]:
        out.append(_contract_card(c, "sell"))
    if st["buy"]:
        out.append("<h2>Bought</h2>")
    for c in st["buy"]:
        out.append(_contract_card(c, "buy"))
    if not st["sell"] and not st["buy"]:
        out.append('<p class="empty">no contracts</p>')
    alarms = await run("events.since", seq=0, limit=1000, source="microgrid")
    cuts = await run("events.since", seq=0, limit=1000, source="supply")
    ev = sorted((e for e in alarms["events"] + cuts["events"]
                 if e["kind"] == "actuation" or "loss" in e["kind"] or "alarm" in e["kind"]),
                key=lambda e: (e["at_ms"], e["seq"]))
    was_cut: set[str] = set()
    for e in ev:
        e["when"], e["what"] = ago(e["at_ms"]), _what(e, was_cut)
    out.append("<h2>Cuts, reconnections and loss alarms</h2>"
               + table(ev[::-1][:200], [("when", "when"), ("what", "what"), ("meter_id", "meter")],
                       row_id="mg-ev", key="seq", empty="none since start"))
    invoices = [dict(e.get("invoice") if isinstance(e.get("invoice"), dict) else {}, when=ago(e["at_ms"]),
                     kind=e["kind"], role=e.get("role")) for e in st["recent"] if "invoice" in e["kind"]]
    out.append("<h2>Latest invoices</h2>"
               + table(invoices[::-1][:20], [("when", "when"), ("kind", "kind"), ("role", "role"),
                                            ("meter_id", "meter"), ("seq", "invoice"), ("cum_units", "units so far"),
                                            ("cum_due_sat", "due so far sat")], empty="none yet"))
    out.append("</div>")
    return "".join(out)


def _what(e: Mapping[str, Any], was_cut: set[str]) -> str:
    """``was_cut``: meters cut earlier in the list (a supply turned on after a cut is a
    reconnection; before any, it is the first connection)."""
    if e["kind"] == "actuation":
        meter = str(e.get("meter_id"))
        if not e.get("on"):
            was_cut.add(meter)
            return "cut"
        return "reconnected" if meter in was_cut else "connected"
    return str(e["kind"]).replace("_", " ")


def _contract_card(c: Mapping[str, Any], side: str) -> str:
    meter = str(c["meter"])
    if side == "sell":
        price = c.get("agreed_price_msat", c.get("price_msat"))
        limit = int(c.get("agreed_credit_limit_sat", c.get("credit_limit_sat")) or 0)
        used = int(c.get("unpaid_sat") or 0)
        facts = {"buyer": c.get("buyer"), "price": f"{price} msat per {c.get('base_unit')}",
                 "invoices": c.get("invoices", 0), "invoiced sat": c.get("invoiced_sat", 0),
                 "paid sat": c.get("paid_sat", 0), "supply": c.get("supply"), "paid via": c.get("via", "channel")}
        pct = min(100, round(100 * used / limit)) if limit > 0 else 0
        gauge = (f'<p class="credit">credit used <b data-k="credit_used">{used}</b> of '
                 f'<b data-k="credit_limit">{limit}</b> sat ({pct} %)<br>'
                 f'<meter id="credit-{esc(meter)}" min="0" max="{limit}" low="{limit * 0.5:g}" '
                 f'high="{limit * 0.8:g}" optimum="0" value="{used}">{used}/{limit}</meter></p>')
    else:
        facts = {"seller": c.get("seller"), "invoices": c.get("invoices", 0),
                 "accepted sat": c.get("accepted_sat", 0), "paid sat": c.get("paid_sat", 0),
                 "pending sat": c.get("pending_sat", 0), "held": c.get("held"), "paid via": c.get("via", "channel")}
        gauge = ""
    return (f'<section class="contract" id="contract-{esc(side)}-{esc(meter)}"><h3>{esc(meter)}</h3>'
            f"{gauge}{kv(facts)}</section>")


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
    """The installer's tools, each a command of the node (``config.check``, ``pin.read``,
    ``pin.toggle``, ``meter.calibrate``): their answers come back in the page's flash line."""
    health = await run("node.health")
    bad = [h for h in health if h["state"] not in ("ok", "off")]
    services = ("<p class=ok>every configured service is ok</p>" if not bad else
                "".join(f'<p class=error>{esc(h["service"])}: {esc(h["state"])} {esc(h["detail"])}</p>'
                        for h in bad))
    file_check = action("config.check", csrf, {}, "Check the node's config file", back="/tools",
                        cls="check-file")
    pasted = (f'<form method="post" action="/do/config.check" class="check-text" id="check-text">'
              f'{csrf_field(csrf)}<input type="hidden" name="back" value="/tools">'
              '<textarea name="text" rows="6" placeholder="paste a node.toml to check it" required></textarea>'
              "<button>Check the pasted config</button></form>")
    meters: list[dict[str, Any]] = []
    try:
        meters = await run("meter.list")
    except EschatonError:  # no [metering]: no pins and nothing to calibrate
        meters = []
    pulse = [m for m in meters if "counts" in m]
    pins = table(pulse, [("name", "meter"), ("type", "type"), ("counts", "pulses"),
                         ("counts_per_unit", "pulses per unit")], row_id="pin", empty="no pulse meters")
    pin_forms = "" if not meters else (
        action("pin.read", csrf, {}, "Read", inputs=[("pin", "text", "GPIO, e.g. 17")], back="/tools",
               cls="pin-read")
        + action("pin.toggle", csrf, {}, "Toggle", inputs=[("pin", "text", "GPIO, e.g. 5")], back="/tools",
                 cls="pin-toggle", confirm="Drive this pin as an output and flip it? Whatever is wired "
                                           "to it switches."))
    cal = []
    for m in pulse:
        now = await run("meter.calibrate", name=m["name"], step="status")
        since = (f'<p>run started at <b data-k="start_pulses">{now["start_pulses"]}</b> pulses: '
                 f'<b data-cal-since="{esc(m["name"])}" data-start="{now["start_pulses"]}">'
                 f'{m["counts"] - now["start_pulses"]}</b> pulses since</p>') if now.get("running") else ""
        cal.append(f'<section class="calibrate" id="cal-{esc(m["name"])}"><h3>{esc(m["name"])}</h3>'
                   f'<p>nominal {fmt(now["nominal_counts_per_unit"])} pulses per {esc(m["unit"])}, '
                   f'now {fmt(m["counts_per_unit"])}</p>{since}'
                   + action("meter.calibrate", csrf, {"name": m["name"], "step": "start"}, "Start a run",
                            back="/tools", cls="cal-start")
                   + action("meter.calibrate", csrf, {"name": m["name"], "step": "finish"}, "Finish",
                            inputs=[("quantity", "decimal", m["unit"] + " that passed")], back="/tools",
                            cls="cal-finish")
                   + "</section>")
    return ("<h2>Config check</h2>" + services + file_check + pasted + kv(config)
            + "<h2>Pin test</h2><p>Read any pin; toggle a free one (a pin a meter, valve or relay "
              "holds is refused). Pulses counted on each meter input, live (the <b>since open</b> "
              "count starts when this page opened):</p>" + pin_forms + pins
            + "<h2>Calibration</h2><p>Start a run, pass a known quantity through the meter (a 10 L "
              "bucket), stop the flow, then finish with that quantity: the node counts the pulses, "
              "stores the measured pulses per unit for its next start and shows the config line.</p>"
            + "".join(cal))
