"""Supply state of a metered connection, with its transition table (STYLE rule 3)."""
from __future__ import annotations

import enum

from eschaton.core.microgrid.errors import IllegalTransition


class SupplyState(enum.Enum):
    ON = "on"
    CUT = "cut"


TRANSITIONS: dict[SupplyState, frozenset[SupplyState]] = {
    SupplyState.ON: frozenset({SupplyState.CUT}),
    SupplyState.CUT: frozenset({SupplyState.ON}),
}


def transition(old: SupplyState, new: SupplyState) -> SupplyState:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"supply {old.value} -> {new.value} is not allowed")
    return new
