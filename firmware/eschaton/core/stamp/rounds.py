"""When a round closes, and the states a closed round goes through.

Rules / theory of operation:
- Digests accepted since the last round wait in the open round. It closes when it is
  ``round_s`` old (the first digest's arrival starts the clock) or holds ``max_digests``;
  an empty round never closes (nothing to commit, no fee spent). ``Schedule`` decides this from
  ``now`` and the count; the service asks it, and waits until ``deadline``.
- A closed round is committed in one of two ways:

      COMMITTING --broadcast--> COMMITTED --in a block--> CONFIRMED --deep enough--> COMPLETE
          ^                        |   ^                      |
          +------ dropped ---------+   +------ reorged out ---+

  or, with an upstream, ``UPSTREAM`` (root sent to the upstream as a digest) -> ``COMPLETE``
  once the upstream's proof of the root arrives (that proof already reached a block).
  COMMITTING is persisted with the signed transaction before it is broadcast, so a crash in
  between rebroadcasts the same transaction instead of paying twice.
- A dropped commitment (the chain knows it no more, after a reorg or an eviction) goes back to
  COMMITTING: the service rebroadcasts it, or funds a new one if its coins are gone.
  A CONFIRMED round whose block left the chain goes back to COMMITTED (the transaction is back
  in the mempool) and its proofs are rebuilt from the block it confirms in next.
- States are persisted by name; an illegal transition raises ``IllegalTransition``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from eschaton.errors import LocalError


class RoundState(enum.Enum):
    COMMITTING = "committing"
    COMMITTED = "committed"
    CONFIRMED = "confirmed"
    COMPLETE = "complete"
    UPSTREAM = "upstream"


_ALLOWED: dict[RoundState, frozenset[RoundState]] = {
    RoundState.COMMITTING: frozenset({RoundState.COMMITTING, RoundState.COMMITTED}),
    RoundState.COMMITTED: frozenset({RoundState.COMMITTING, RoundState.CONFIRMED}),
    RoundState.CONFIRMED: frozenset({RoundState.COMMITTED, RoundState.CONFIRMED, RoundState.COMPLETE,
                                     RoundState.COMMITTING}),
    RoundState.COMPLETE: frozenset({RoundState.COMMITTED, RoundState.COMMITTING, RoundState.CONFIRMED,
                                    RoundState.COMPLETE}),
    RoundState.UPSTREAM: frozenset({RoundState.COMPLETE, RoundState.UPSTREAM}),
}


class IllegalTransition(LocalError):
    pass


def transition(old: RoundState, new: RoundState) -> RoundState:
    if new not in _ALLOWED[old]:
        raise IllegalTransition(f"round cannot go from {old.value} to {new.value}")
    return new


@dataclass(frozen=True, slots=True)
class Schedule:
    round_s: float
    max_digests: int

    def due(self, opened_at: float | None, count: int, now: float) -> bool:
        if count == 0 or opened_at is None:
            return False
        return count >= self.max_digests or now >= opened_at + self.round_s

    def deadline(self, opened_at: float | None) -> float | None:
        return None if opened_at is None else opened_at + self.round_s
