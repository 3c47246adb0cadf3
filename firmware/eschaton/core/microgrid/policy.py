"""Offer policy (sans-IO): which terms a node takes, as a buyer from a seller or as the seller of
a meter whose buyer proposes new terms. A refusal is a ``LocalError`` with a one-line reason;
the adapter records it and answers ``mg_refused``."""
from __future__ import annotations

from eschaton.core.microgrid.terms import Offer
from eschaton.errors import LocalError


def check_seller_offer(offer: Offer, peer: bytes, max_price_msat: int, max_credit_limit_sat: int) -> None:
    """A seller's offer to us: signed by the peer that sent it, within our maximum price and
    credit limit."""
    if offer.seller != peer:
        raise LocalError("offer is not signed by the peer that sent it")
    if offer.tariff.price_msat > max_price_msat:
        raise LocalError(f"price {offer.tariff.price_msat} msat above our maximum {max_price_msat}")
    if offer.tariff.credit_limit_sat > max_credit_limit_sat:
        raise LocalError("credit limit above our maximum")


def check_buyer_proposal(offer: Offer, peer: bytes, price_msat: int, credit_limit_sat: int, fee_sat: int) -> None:
    """The buyer's proposal for a meter we sell: signed by it, and our configured terms are the
    floor (price and fee at least ours, credit limit at most ours)."""
    if offer.proposer != peer:
        raise LocalError("proposal is not signed by the peer that sent it")
    t = offer.tariff
    if t.price_msat < price_msat or t.credit_limit_sat > credit_limit_sat or t.fee_sat < fee_sat:
        raise LocalError("proposed terms are below this seller's terms")
