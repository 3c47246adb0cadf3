"""Prometheus ``/metrics`` of the node, in the text exposition format (prometheus_client).

Rules / theory of operation:
- The values come from the same API commands the dashboard and the CLI use (``node.status``,
  ``channel.list``, ``peer.list``, ``meter.list``, ``valve.list``, ``relay.list``), read once
  per scrape into a ``Snapshot``; the registry's collector only formats that snapshot, so one
  scrape is one consistent view and a metric can never disagree with the API.
- Payment outcomes are counters of the payments facade's typed events since the node started
  (``PaymentSettled``, ``PaymentFailed``, ``PaymentReceived``); Prometheus copes with counters
  that restart with the process.
- Process metrics (RSS, CPU, open files) come from prometheus_client's ``ProcessCollector``.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = {"PaymentSettled": "settled", "PaymentFailed": "failed", "PaymentReceived": "received"}


@dataclass
class Snapshot:
    status: dict[str, Any] = field(default_factory=dict)
    channels: list[dict[str, Any]] = field(default_factory=list)
    peers: list[dict[str, Any]] = field(default_factory=list)
    meters: list[dict[str, Any]] = field(default_factory=list)
    valves: list[dict[str, Any]] = field(default_factory=list)
    relays: list[dict[str, Any]] = field(default_factory=list)
    payments: dict[str, int] = field(default_factory=dict)  # outcome -> count since start
    payment_sats: dict[str, int] = field(default_factory=dict)  # outcome -> sat since start
    dashboard: dict[str, int] = field(default_factory=dict)  # sessions, sse_clients, events_sent


class PaymentCounter:
    """Counts the payments facade's events from the node's event stream (``payments``)."""

    def __init__(self) -> None:
        self.count = {o: 0 for o in OUTCOMES.values()}
        self.sats = {o: 0 for o in OUTCOMES.values()}

    def on_event(self, source: str, kind: str, data: Any) -> None:
        outcome = OUTCOMES.get(kind) if source == "payments" else None
        if outcome is not None:
            self.count[outcome] += 1
            self.sats[outcome] += int(data.get("amount", 0))


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snap = Snapshot()

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        st = s.status
        g = GaugeMetricFamily
        if st:
            yield g("eschaton_chain_height", "Height of the chain tip the node sees", value=st["chain"]["height"])
            yield g("eschaton_uptime_seconds", "Seconds since the node started", value=st["uptime_s"])
            yield CounterMetricFamily("eschaton_channel_store_commits", "Channel store transactions "
                                      "(each an fsync) since start", value=st["channel_store_commits"])
            yield g("eschaton_peers_linked", "Peers with an open link", value=len(st["peers"]))
        by_state: dict[str, int] = {}
        for c in s.channels:
            by_state[c["state"]] = by_state.get(c["state"], 0) + 1
        chans = g("eschaton_channels", "Channels by state", labels=["state"])
        for state, n in sorted(by_state.items()):
            chans.add_metric([state], n)
        yield chans
        bal = g("eschaton_channel_balance_sat", "Channel balance in satoshis", labels=["channel", "peer", "side"])
        cap = g("eschaton_channel_switches_left", "Direction switches left in the channel's nLockTime budget",
                labels=["channel"])
        esc = g("eschaton_channel_escrows", "Open escrows in the channel", labels=["channel"])
        for c in s.channels:
            cid = c["channel"][:16]
            bal.add_metric([cid, c["peer"][:16], "local"], c["local_sat"])
            bal.add_metric([cid, c["peer"][:16], "remote"], c["remote_sat"])
            cap.add_metric([cid], c["switches_left"])
            esc.add_metric([cid], c["escrows"])
        yield bal
        yield cap
        yield esc
        pays = CounterMetricFamily("eschaton_payments", "Payment outcomes since start "
                                   "(settled and failed: ours; received: the peers')", labels=["outcome"])
        sats = CounterMetricFamily("eschaton_payment_sat", "Satoshis of payment outcomes since start",
                                   labels=["outcome"])
        for outcome in sorted(s.payments):
            pays.add_metric([outcome], s.payments[outcome])
            sats.add_metric([outcome], s.payment_sats.get(outcome, 0))
        yield pays
        yield sats
        rtt = g("eschaton_link_rtt_seconds", "Last keepalive round trip of each linked peer",
                labels=["peer", "transport"])
        for p in s.peers:
            if p.get("linked") and p.get("rtt_ms") is not None:
                rtt.add_metric([p["id"][:16], p.get("transport", "")], p["rtt_ms"] / 1000)
        yield rtt
        total = g("eschaton_meter_total", "Meter total in its unit (litre, kWh)", labels=["meter", "unit"])
        rate = g("eschaton_meter_rate_per_second", "Meter rate in its unit per second (10 s window)",
                 labels=["meter", "unit"])
        for m in s.meters:
            if m.get("total") is not None:
                total.add_metric([m["name"], m["unit"]], m["total"])
            if m.get("rate_per_s") is not None:
                rate.add_metric([m["name"], m["unit"]], m["rate_per_s"])
        yield total
        yield rate
        valve = g("eschaton_valve_open", "1 if the valve is commanded open", labels=["valve"])
        for v in s.valves:
            valve.add_metric([v["name"]], 1 if v["open"] else 0)
        yield valve
        relay = g("eschaton_relay_on", "1 if the supply relay is on", labels=["relay"])
        for r in s.relays:
            relay.add_metric([r["name"]], 1 if r["on"] else 0)
        yield relay
        for key, help_ in (("sessions", "Dashboard sessions logged in"),
                           ("sse_clients", "Dashboard pages receiving live updates")):
            if key in s.dashboard:
                yield g(f"eschaton_dashboard_{key}", help_, value=s.dashboard[key])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes and friends
        self.payments = PaymentCounter()

    def render(self, snap: Snapshot) -> bytes:
        """The exposition of ``snap`` (no await between setting and reading it: one view)."""
        snap.payments = dict(self.payments.count)
        snap.payment_sats = dict(self.payments.sats)
        self._collector.snap = snap
        return generate_latest(self.registry)
