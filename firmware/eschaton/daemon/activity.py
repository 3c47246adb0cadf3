"""Per-payment channel events as one summary line per interval, not one line each.

Why: a hub paying 300 times a second would write a log line per payment (about 190 MB an hour
at info level) and wear out its SD card. Payments, payment acknowledgements and direction
switches are counted here and logged at debug level one by one; at info level, one line per
``interval`` seconds says how many there were and how many satoshis moved each way. Rarer
events (opens, closes, escrows, re-anchors, errors) keep their own info lines.

The summary is written when an event arrives after the interval has passed (so an idle node
writes nothing) and at close; the line gives the span it covers.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Events that happen once per payment or per direction switch.
PER_PAYMENT = frozenset({"payment", "payment_sent", "turn"})


@dataclass(slots=True)
class ActivitySummary:
    log: logging.Logger
    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    received: int = 0
    received_sat: int = 0
    sent: int = 0
    sent_sat: int = 0
    switches: int = 0
    _since: float | None = field(default=None)

    def note(self, channel: str, kind: str, data: dict[str, object]) -> bool:
        """Count a per-payment event (True), or leave it to the caller (False)."""
        if kind not in PER_PAYMENT:
            return False
        now = self.clock()
        if self._since is None:
            self._since = now
        amount = data.get("amount")
        sat = amount if isinstance(amount, int) else 0
        if kind == "payment":
            self.received, self.received_sat = self.received + 1, self.received_sat + sat
        elif kind == "payment_sent":
            self.sent, self.sent_sat = self.sent + 1, self.sent_sat + sat
        else:
            self.switches += 1
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("channel %s: %s %s", channel, kind, sat or "")
        if now - self._since >= self.interval:
            self.flush()
        return True

    def flush(self) -> None:
        """Write the summary of what was counted (nothing if nothing was)."""
        if self._since is None:
            return
        span = self.clock() - self._since
        self.log.info("channels in the last %.0f s: %d payments received (%d sat), %d sent (%d sat), "
                      "%d direction switches", span, self.received, self.received_sat, self.sent,
                      self.sent_sat, self.switches)
        self.received = self.received_sat = self.sent = self.sent_sat = self.switches = 0
        self._since = None
