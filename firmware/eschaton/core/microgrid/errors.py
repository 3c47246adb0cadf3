"""Typed errors of microgrid trading, split by fault (see ``eschaton.errors``).

Every refusal of a peer's message is a ``Refusal`` (a ``RemoteError``) with a stable ``reason``
string: the reason is what the ledger records and what a report groups by, so it never changes
once shipped.
"""
from __future__ import annotations

from eschaton.errors import LocalError, RemoteError


class MicrogridError(LocalError):
    """Our own side asked for something the microgrid rules forbid."""


class CodecError(RemoteError):
    """Bytes that are not a canonical plain value (from a peer or a damaged ledger)."""


class UnknownContract(MicrogridError):
    """No agreement covers this meter (or payment reference)."""


class IllegalTransition(MicrogridError):
    """A supply state change that the transition table does not allow."""


class BadTerms(MicrogridError):
    """Tariff or offer values that are invalid (negative price, unknown unit pair, ...)."""


class MeterRegression(RemoteError):
    """A meter reading went backwards in units or in time."""


class LedgerCorrupt(RemoteError):
    """The ledger's hash chain does not verify: an entry was changed, removed or inserted."""

    def __init__(self, seq: int, text: str) -> None:
        super().__init__(f"ledger entry {seq}: {text}")
        self.seq = seq


class Refusal(RemoteError):
    """A peer's offer, acceptance or invoice was refused; nothing was paid or agreed."""

    reason = "refused"


class Malformed(Refusal):
    """Missing or extra fields, wrong types, values out of range."""

    reason = "malformed"


class BadSignature(Refusal):
    """The signature does not verify under the expected key (or is missing)."""

    reason = "bad_signature"


class UnknownAgreement(Refusal):
    """The message names an agreement (or meter) we do not have."""

    reason = "unknown_agreement"


class WrongAgreement(Refusal):
    """The invoice names an agreement that does not govern its sequence number."""

    reason = "wrong_agreement"


class Replayed(Refusal):
    """An invoice whose sequence number is not above the last accepted one."""

    reason = "replayed"


class CumulativeDecreased(Refusal):
    """Cumulative units, amount or reading time went down."""

    reason = "cumulative_decreased"


class WrongAmount(Refusal):
    """The amount due is not the agreed tariff applied to the units exactly."""

    reason = "wrong_amount"


class OverMetered(Refusal):
    """The invoice claims more units than our own meter saw (beyond tolerance)."""

    reason = "over_metered"


class FromTheFuture(Refusal):
    """The invoice's reading time is ahead of our clock by more than the allowed skew."""

    reason = "from_the_future"


class Expired(Refusal):
    """The offer was accepted (or presented) after its expiry."""

    reason = "expired"


class StaleOffer(Refusal):
    """A renegotiation anchored at a point that is not our latest invoice, or a wrong party."""

    reason = "stale_offer"
