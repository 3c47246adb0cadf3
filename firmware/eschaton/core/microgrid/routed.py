"""Microgrid sales paid through the network (the "virtual ISP"): a buyer with no channel to the
seller pays each invoice with a multi-hop payment to one of the seller's payment requests.

Rules / theory of operation:
- The microgrid's terms, invoices and ledgers are unchanged: the buyer's core still decides what
  to pay (``Pay``: meter, payment id, invoice reference, amount). Only the way the money moves
  differs: instead of a channel payment to a neighbour, the buyer asks the seller for a payment
  request for exactly that ``Pay`` (``mg_ask``) and pays it through the network.
- The seller binds the request to the ``Pay`` in its description (``tag``): the payment id, the
  invoice reference and the meter. When the seller's routing service has been paid a request
  (its preimage durable, the escrow ours), the seller credits the tag's payment id with the
  request's amount: the credit comes from money the seller received, never from the buyer's
  word, and a payment id is credited once (the seller core ignores a repeated one).
- The buyer pays a request only if it is for that very ``Pay`` (``check_request``): the payee is
  the seller it buys from, the amount is the ``Pay``'s, the tag names the ``Pay``'s payment id,
  reference and meter, and it has not expired. It pays under a routing payment id derived from
  the microgrid payment id (``routing_id``), so a retry or a second request for the same ``Pay``
  never pays twice (the routing service answers a known id with its stored outcome and refuses
  the id for another hash).
- An escrow below the dust limit cannot exist, so neither can a multi-hop payment below it: the
  buyer pays once it owes at least ``MIN_PAYMENT_SAT`` (``payable``). An invoice that leaves less
  than that unpaid is set aside unhandled (``worth_handling``: invoices are cumulative, the next
  one covers it), so no payment is decided for it; a smaller payment decided anyway (what is
  outstanding after a restart) is counted failed and paid with a later invoice. So a sale paid
  this way needs a credit limit of at least that much (checked when the config is read).
- A purchase may be capped (``within_cap``): the buyer pays at most ``max_total_sat`` in all to
  that seller; past the cap it stops paying, and the seller cuts it as it would any buyer that
  stops paying.
"""
from __future__ import annotations

from dataclasses import dataclass

from eschaton.core.channel.params import DUST_LIMIT
from eschaton.core.microgrid.decisions import Pay
from eschaton.core.microgrid.errors import Refusal
from eschaton.core.routing.invoice import PaymentRequest

TAG_PREFIX = "eschaton-mg1"
ROUTING_ID_PREFIX = "mg-"
MIN_PAYMENT_SAT = DUST_LIMIT
"""The least a payment through the network can carry: its escrows must be above the dust limit."""
REQUEST_EXPIRY_S = 600
"""How long a seller's request for one ``Pay`` holds: long enough for a payment's retries."""


class RequestRefused(Refusal):
    """A payment request that does not match the payment the buyer's core decided."""

    reason = "request_mismatch"


@dataclass(frozen=True, slots=True)
class Tag:
    """What a seller's payment request is for: one ``Pay`` of the buyer."""

    meter_id: str
    payment_id: bytes
    ref: bytes

    def text(self) -> str:
        # The meter goes last: the only part that is free text (the ids are fixed-size hex).
        return f"{TAG_PREFIX}:{self.payment_id.hex()}:{self.ref.hex()}:{self.meter_id}"

    @classmethod
    def of(cls, pay: Pay) -> Tag:
        return cls(pay.meter_id, pay.payment_id, pay.ref)

    @classmethod
    def parse(cls, description: str) -> Tag | None:
        """The tag in a request's description, or None if it is not a microgrid request."""
        parts = description.split(":", 3)
        if len(parts) != 4 or parts[0] != TAG_PREFIX or not parts[3]:
            return None
        try:
            pid, ref = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        except ValueError:
            return None
        if len(pid) != 32 or len(ref) != 32:
            return None
        return cls(parts[3], pid, ref)


def routing_id(payment_id: bytes) -> str:
    """The routing payment id of a microgrid payment: derived, so a retry after a crash uses the
    same one (at most 56 characters, the routing service's limit)."""
    return ROUTING_ID_PREFIX + payment_id.hex()[:48]


def check_request(req: PaymentRequest, *, seller: bytes, pay: Pay, now_s: int) -> None:
    """Raises ``RequestRefused`` unless ``req`` is the seller's request for exactly ``pay``."""
    if req.payee != seller:
        raise RequestRefused(f"request payee {req.payee.hex()[:12]} is not the seller {seller.hex()[:12]}")
    if req.amount != pay.amount_sat:
        raise RequestRefused(f"request asks {req.amount} sat, the invoice's payment is {pay.amount_sat}")
    if Tag.parse(req.description) != Tag.of(pay):
        raise RequestRefused("request description does not name this payment")
    if now_s >= req.expires:
        raise RequestRefused(f"request expired {now_s - req.expires} s ago")


def payable(amount_sat: int) -> bool:
    """Whether a payment of ``amount_sat`` can go through the network (see ``MIN_PAYMENT_SAT``)."""
    return amount_sat >= MIN_PAYMENT_SAT


def worth_handling(invoice: dict[str, object], paid_sat: int) -> bool:
    """(buyer) Whether an invoice (its wire dict, not yet checked) leaves enough unpaid for a
    payment through the network. One whose amount is not an integer is handled (and refused)."""
    due = invoice.get("cum_due_sat")
    return not isinstance(due, int) or isinstance(due, bool) or payable(due - paid_sat)


def within_cap(spent_sat: int, amount_sat: int, cap_sat: int | None) -> bool:
    """Whether paying ``amount_sat`` more keeps the total to that seller within ``cap_sat``
    (``spent_sat``: paid and in flight, this payment excluded; None: no cap)."""
    return cap_sat is None or spent_sat + amount_sat <= cap_sat


def askable(invoiced_due_sat: int, paid_sat: int, amount_sat: int) -> bool:
    """(seller) Whether a buyer may ask a request of ``amount_sat``: positive and no more than what
    the invoices it holds say is unpaid."""
    return 0 < amount_sat <= invoiced_due_sat - paid_sat
