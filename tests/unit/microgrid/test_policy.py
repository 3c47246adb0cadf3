"""Offer policy, sans-IO: a buyer's maximum terms and a seller's floor under a buyer's proposal."""
from __future__ import annotations

import pytest

from eschaton.core.microgrid.policy import check_buyer_proposal, check_seller_offer
from eschaton.core.microgrid.seller import SellerCore
from eschaton.core.microgrid.terms import Offer
from eschaton.errors import LocalError
from tests.unit.microgrid.helpers import BUYER_KEY, METER, SELLER_KEY, T0, make_pair, water


def _offer(price: int = 2_000, credit: int = 500) -> Offer:
    o, _ = SellerCore(SELLER_KEY).offer(offer_id=b"p" * 16, tariff=water(price, credit_limit_sat=credit),
                                        meter_id=METER, start_units=0, now_ms=T0, expires_ms=T0 + 60_000)
    return Offer.from_wire(o.to_wire())


def test_a_seller_offer_within_our_maximum_is_taken_and_others_refused_in_one_line() -> None:
    seller = bytes(SELLER_KEY.verify_key)
    check_seller_offer(_offer(), seller, max_price_msat=2_000, max_credit_limit_sat=500)
    for offer, peer, words in ((_offer(), bytes(BUYER_KEY.verify_key), "not signed by the peer"),
                               (_offer(price=2_001), seller, "price 2001 msat above our maximum 2000"),
                               (_offer(credit=501), seller, "credit limit above our maximum")):
        with pytest.raises(LocalError, match=words):
            check_seller_offer(offer, peer, max_price_msat=2_000, max_credit_limit_sat=500)


def test_a_buyer_proposal_below_the_sellers_terms_is_refused() -> None:
    pair = make_pair(water(2_000, credit_limit_sat=500))
    buyer = bytes(BUYER_KEY.verify_key)

    def proposal(price: int, credit: int) -> Offer:
        o, _ = pair.buyer.propose(METER, offer_id=bytes([price % 256]) * 16,
                                  tariff=water(price, credit_limit_sat=credit), now_ms=T0 + 100,
                                  expires_ms=T0 + 60_000)
        return Offer.from_wire(o.to_wire())

    check_buyer_proposal(proposal(2_500, 400), buyer, 2_000, 500, 0)
    with pytest.raises(LocalError, match="below this seller's terms"):
        check_buyer_proposal(proposal(1_999, 500), buyer, 2_000, 500, 0)
    with pytest.raises(LocalError, match="below this seller's terms"):
        check_buyer_proposal(proposal(2_000, 501), buyer, 2_000, 500, 0)
    with pytest.raises(LocalError, match="not signed by the peer"):
        check_buyer_proposal(proposal(2_500, 400), bytes(SELLER_KEY.verify_key), 2_000, 500, 0)
