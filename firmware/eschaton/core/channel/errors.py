"""Typed errors of the trade channel core, split by fault (STYLE.md rule 8).

- ``RuleViolation`` and its subclasses: a proposed version breaks a channel rule. These are
  ``RemoteError``s because the rules exist to refuse a peer's countersignature request; when our
  own caller asks for something that breaks a rule, the channel raises ``InvalidRequest`` (a
  ``LocalError``) that wraps the violation (``.rule``).
- ``BadSignature``: a peer's signature does not commit to the version we derived.
- ``IllegalTransition``: a state change not in the declared table (a bug or a confused peer).
Every check runs before any state is mutated, so a refused message leaves the channel usable.
"""
from __future__ import annotations

from eschaton.errors import EschatonError, LocalError, RemoteError


class ChannelError(EschatonError):
    """Root of trade channel errors."""


class RuleViolation(RemoteError, ChannelError):
    """A proposed version or operation breaks a channel rule."""


class VersionViolation(RuleViolation):
    """Version number not exactly one above the current one."""


class LocktimeViolation(RuleViolation):
    """nLockTime not as the rules require (same epoch: equal; new epoch: exactly one step earlier)."""


class LocktimeExhausted(RuleViolation):
    """A direction switch would put nLockTime below the current height plus the safety margin."""


class FeeViolation(RuleViolation):
    """Fee not as the rules require (same epoch: equal; new epoch: one fee step higher)."""


class BalanceViolation(RuleViolation):
    """Balances do not add up to capacity minus fee, go negative, or move the wrong way."""


class ReserveViolation(RuleViolation):
    """A payer's balance would drop below the reserve."""


class PaymentTooLarge(RuleViolation):
    """A payment, escrow or stake above the negotiated maximum."""


class EscrowViolation(RuleViolation):
    """Escrow set inconsistent: unknown id, too many, wrong party, wrong preimage."""


class BetViolation(RuleViolation):
    """Bet inconsistent: bad announcement, unknown outcome, wrong party."""


class ParamsRejected(RuleViolation):
    """Proposed channel parameters fall outside our policy."""


class BadSignature(RemoteError, ChannelError):
    """A signature that does not verify against the version we derived."""


class ProtocolViolation(RemoteError, ChannelError):
    """A message that makes no sense in the channel's current state."""


class InvalidRequest(LocalError, ChannelError):
    """Our own caller asked for an operation the channel cannot do now."""

    def __init__(self, message: str, rule: RuleViolation | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class IllegalTransition(InvalidRequest):
    """A state transition that is not in the declared table."""


class OracleError(RemoteError, ChannelError):
    """An oracle announcement or preimage that does not verify."""


class NotMyTurn(InvalidRequest):
    """The peer holds the turn: ``request_turn()`` and retry after the ``turn`` notification."""
