"""The microgrid's wire mapping (sans-IO): ``mg_*`` rows <-> the core's wire dicts, and short
views of ledger entries for status and events."""
from __future__ import annotations

from typing import Any

from eschaton.core.microgrid.terms import Tariff
from eschaton.core.wire.codec import Message as WireMessage
from eschaton.core.wire.codec import make
from eschaton.core.wire.messages import BY_NAME


def from_wire_fields(wm: WireMessage) -> dict[str, Any]:
    """The core's wire dict from a decoded ``mg_*`` row (the row's fields are the dict's)."""
    return dict(wm.fields)


def to_wire(name: str, d: dict[str, Any]) -> WireMessage:
    spec = BY_NAME[name]
    return make(name, **{f.name: d[f.name] for f in spec.fields})


def summary(kind: str, body: Any) -> dict[str, Any]:
    """A short, JSON-friendly view of a ledger entry body (for status and the demo)."""
    out: dict[str, Any] = {}
    if not isinstance(body, dict):
        return out
    inv = body.get("invoice")
    if isinstance(inv, dict):
        for k in ("meter_id", "seq", "cum_units", "cum_due_sat"):
            if k in inv:
                out[k] = inv[k]
    ag = body.get("agreement")
    if isinstance(ag, dict) and isinstance(ag.get("offer"), dict):
        out["meter_id"] = ag["offer"].get("meter_id")
    if isinstance(body.get("offer"), dict):
        out["meter_id"] = body["offer"].get("meter_id")
    for k in ("meter_id", "amount_sat", "unpaid_sat", "credit_limit_sat", "reason", "detail",
              "loss_units", "bulk_units"):
        v = body.get(k)
        if isinstance(v, int | str):
            out[k] = v
        elif isinstance(v, bytes):
            out[k] = v.decode("utf-8", "replace")
    for k in ("payment_id", "ref"):
        v = body.get(k)
        if isinstance(v, bytes):
            out[k] = v.hex()[:16]
    return out


def retariff(t: Tariff, price_msat: int | None, credit_limit_sat: int | None,
              fee_sat: int | None) -> Tariff:
    """``t`` with the given terms changed (None: unchanged)."""
    return Tariff(t.service, t.unit, t.base_unit,
                  price_msat=t.price_msat if price_msat is None else price_msat,
                  fee_sat=t.fee_sat if fee_sat is None else fee_sat, fee_period_ms=t.fee_period_ms,
                  credit_limit_sat=t.credit_limit_sat if credit_limit_sat is None else credit_limit_sat,
                  pay_interval_ms=t.pay_interval_ms)
