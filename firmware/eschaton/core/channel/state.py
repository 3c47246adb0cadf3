"""Channel lifecycle states and their declared transition table (STYLE.md rule 3).

States are persisted by name; renaming one or changing the table's meaning needs a schema
migration in ``eschaton.channel.store``.

    PROPOSED ─► ACCEPTED ─► REFUND_SIGNED ─► FUNDING_BROADCAST ─► OPEN ─► CLOSING ─► CLOSED
        │           │             │                  │              │         │         ▲
        └───────────┴─────────────┴─► ABORTED        └──────────────┴─────────┴─► FORCE_CLOSING

- ABORTED is only reachable before any funding input signature left the node: from then on the
  funding transaction may confirm and only the refund path is safe.
- FORCE_CLOSING means we are getting a refund version (ours or the peer's) confirmed.
- REANCHORING (from OPEN): both sides sign the move to a new funding output with a fresh
  nLockTime budget; it returns to OPEN as soon as the re-anchor transaction is fully signed
  (the channel then lives on its output, confirmed or not), or on a refusal.
"""
from __future__ import annotations

from enum import Enum

from eschaton.core.channel.errors import IllegalTransition


class ChannelState(Enum):
    PROPOSED = "PROPOSED"
    ACCEPTED = "ACCEPTED"
    REFUND_SIGNED = "REFUND_SIGNED"
    FUNDING_BROADCAST = "FUNDING_BROADCAST"
    OPEN = "OPEN"
    REANCHORING = "REANCHORING"
    CLOSING = "CLOSING"
    FORCE_CLOSING = "FORCE_CLOSING"
    CLOSED = "CLOSED"
    ABORTED = "ABORTED"


S = ChannelState
TRANSITIONS: dict[ChannelState, frozenset[ChannelState]] = {
    S.PROPOSED: frozenset({S.ACCEPTED, S.ABORTED}),
    S.ACCEPTED: frozenset({S.REFUND_SIGNED, S.ABORTED}),
    S.REFUND_SIGNED: frozenset({S.FUNDING_BROADCAST, S.ABORTED, S.FORCE_CLOSING}),
    S.FUNDING_BROADCAST: frozenset({S.OPEN, S.FORCE_CLOSING, S.CLOSED}),
    S.OPEN: frozenset({S.CLOSING, S.FORCE_CLOSING, S.CLOSED, S.REANCHORING}),
    S.REANCHORING: frozenset({S.OPEN, S.FORCE_CLOSING, S.CLOSED}),
    S.CLOSING: frozenset({S.CLOSED, S.FORCE_CLOSING}),
    S.FORCE_CLOSING: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
    S.ABORTED: frozenset(),
}


def check_transition(current: ChannelState, new: ChannelState) -> ChannelState:
    """Return ``new`` if the table allows ``current -> new``; raise ``IllegalTransition`` otherwise."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"illegal channel transition {current.name} -> {new.name}")
    return new
