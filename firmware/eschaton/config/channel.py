"""``[channel]``: how the node runs its trade channels (docs/channels.md)."""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.config import defaults as D
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    turn_dwell: float
    """Seconds the turn holder keeps the turn after the peer asked for it, while payments of its
    own are queued on the channel (``turn_dwell_ms``): the reverse payments are then batched into
    one direction switch instead of one switch each. 0 hands the turn over as soon as nothing of
    ours is in flight."""
    payment_retention_days: int = D.PAYMENT_RETENTION_DAYS
    """Payment records (the ids that make a retry safe) are kept this many days (``payment_retention_days``)."""
    payment_records: int = D.PAYMENT_RECORDS
    """... and at most this many newest of the node (``payment_records``), which bounds the store
    on an SD card (docs/channels.md, "Payment ids")."""
    payment_keep_hours: int = D.PAYMENT_KEEP_HOURS
    """... except that the count never prunes a record younger than this (``payment_keep_hours``):
    a retry within it is answered from its record, never paid twice, however fast the node pays."""


def parse_channel(root: Section) -> ChannelConfig:
    s = root.sub("channel")
    dwell_ms = s.get_int("turn_dwell_ms", D.TURN_DWELL_MS, 0, 1_500)
    days = s.get_int("payment_retention_days", D.PAYMENT_RETENTION_DAYS, 1, 3_650)
    records = s.get_int("payment_records", D.PAYMENT_RECORDS, 100, 10_000_000)
    keep_hours = s.get_int("payment_keep_hours", D.PAYMENT_KEEP_HOURS, 0, 24 * days)
    s.done()
    return ChannelConfig(dwell_ms / 1000, days, records, keep_hours)
