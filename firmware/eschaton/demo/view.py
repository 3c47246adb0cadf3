"""The demo's terminal view: a refreshing table on a terminal, plain progress lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RED, GREEN, RESET = "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[0m"


def _qty(units: int, base: str) -> str:
    return f"{units / 1000:8.2f} {'L' if base == 'mL' else 'kWh'}" if base in ("mL", "Wh") else f"{units} {base}"


class View:
    def __init__(self, out: TextIO = sys.stdout, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._last_phase = ""
        self._last_line = 0.0
        self._last_draw = 0.0
        self._events_seen: set[tuple[str, int, str]] = set()

    def __call__(self, story: Any) -> None:
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.25 or story.phase != self._last_phase:
                self._last_draw = now
                self._last_phase = story.phase
                self.out.write(CLEAR + "\n".join(self.table(story)) + "\n")
                self.out.flush()
            return
        t = time.monotonic() - story.t0
        if story.phase != self._last_phase:
            self._last_phase = story.phase
            self.out.write(f"[{t:6.1f}s] {story.phase}\n")
        for line in self.new_events(story):
            self.out.write(f"[{t:6.1f}s]   {line}\n")
        if story.snapshot and time.monotonic() - self._last_line > 5:
            self._last_line = time.monotonic()
            for row in self.contract_rows(story):
                self.out.write(f"[{t:6.1f}s]   {row}\n")
        self.out.flush()

    # --- pieces --------------------------------------------------------------------------------

    def contract_rows(self, story: Any) -> list[str]:
        rows = []
        for s in story.sales:
            r = story.sell_row(s.meter)
            supply = r.get("supply", "?")
            rows.append(f"{s.meter:<12} {s.seller:>6} -> {s.buyer:<6} "
                        f"{_qty(r.get('units', 0), r.get('base_unit', 'mL'))}  "
                        f"invoiced {r.get('invoiced_sat', 0):>6} sat  paid {r.get('paid_sat', 0):>6}  "
                        f"unpaid {r.get('unpaid_sat', 0):>4}/{s.credit_limit_sat:<4} supply {supply}")
        return rows

    def new_events(self, story: Any) -> list[str]:
        out = []
        for house in sorted(story.snapshot):
            for e in story.recent(house):
                key = (house, e["seq"], e["role"])
                if key in self._events_seen:
                    continue
                self._events_seen.add(key)
                if e["kind"] in ("agreement", "supply_cut", "supply_restored", "loss_alarm",
                                 "loss_cleared", "invoice_refused"):
                    out.append(self.event_text(house, e))
        return out

    @staticmethod
    def event_text(house: str, e: dict[str, Any]) -> str:
        extra = {k: v for k, v in e.items() if k not in ("role", "seq", "kind", "at_ms", "payment_id", "ref")}
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        return f"{house} {e['role']} ledger: {e['kind']} {detail}"

    def table(self, story: Any) -> list[str]:
        t = time.monotonic() - story.t0
        lines = [f"{BOLD}Eschaton village demo{RESET}  t={t:5.1f}s   {DIM}(Ctrl-C stops and cleans up){RESET}",
                 f"{BOLD}now:{RESET} {story.phase}", "", f"{BOLD}houses{RESET}"]
        for h in story.houses:
            running = h.proc is not None and h.proc.poll() is None
            roles = ", ".join([f"sells {s.kind} to {s.buyer}" for s in h.sells]
                              + [f"buys {s.kind} from {s.seller}" for s in h.buys]) or "holds the chain"
            lines.append(f"  {h.name:<8} {h.node_id[:12]:<12} "
                         f"{GREEN + 'running' if running else DIM + 'stopped'}{RESET}  {roles}")
        lines.append("")
        lines.append(f"{BOLD}{'connection':<12} {'seller':>6}    {'buyer':<6} {'metered':>12}  "
                     f"{'invoiced':>8} {'paid':>6} {'unpaid/limit':>12}  supply{RESET}")
        for s in story.sales:
            r = story.sell_row(s.meter)
            supply = r.get("supply", "-")
            colour = RED if supply == "cut" else GREEN if supply == "on" else DIM
            cut_kind = "valve" if s.kind == "water" else "relay"
            state = {"on": "open" if s.kind == "water" else "on",
                     "cut": "CLOSED" if s.kind == "water" else "OFF",
                     "none": "no contract"}.get(supply, supply)
            lines.append(f"{s.meter:<12} {s.seller:>6} -> {s.buyer:<6} "
                         f"{_qty(r.get('units', 0), r.get('base_unit', 'mL')):>12}  "
                         f"{r.get('invoiced_sat', 0):>8} {r.get('paid_sat', 0):>6} "
                         f"{str(r.get('unpaid_sat', 0)) + '/' + str(s.credit_limit_sat):>12}  "
                         f"{colour}{cut_kind} {state}{RESET}")
        lines += ["", f"{BOLD}trade channels{RESET} (sat)"]
        for h in story.houses:
            chans = story.snapshot.get(h.name, {}).get("channels", [])
            for c in chans:
                if c.get("role") != "opener":
                    continue
                peer = next((x.name for x in story.houses if x.node_id == c["peer"]), c["peer"][:8])
                lines.append(f"  {h.name} -> {peer:<7} {c['state']:<8} {h.name} {c['local_sat']:>7}   "
                             f"{peer} {c['remote_sat']:>7}   version {c['version']}")
        lines += ["", f"{BOLD}recent ledger entries{RESET}"]
        events = []
        for house, snap in story.snapshot.items():
            for e in snap.get("mg", {}).get("notable", []):
                events.append((e["at_ms"], house, e))
        for at_ms, house, e in sorted(events, key=lambda x: x[0])[-8:]:
            ts = time.strftime("%H:%M:%S", time.localtime(at_ms / 1000))
            lines.append(f"  {ts}.{at_ms % 1000:03d} {self.event_text(house, e)}"[:160])
        errors = [f"  {h}: {v['error']}" for h, v in story.snapshot.items() if "error" in v]
        if errors:
            lines += ["", "node errors:"] + errors
        return lines


def summary(story: Any) -> list[str]:
    lines = ["", "Summary"]
    for at, text in story.log:
        lines.append(f"  [{at:6.1f}s] {text}")
    if story.checks:
        lines.append("Books:")
        for text, ok in story.checks:
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {text}")
    return lines
