"""The microgrid's API commands (``MICROGRID``, owned by the microgrid service)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eschaton.api.registry import ApiError, CommandTable, Param

if TYPE_CHECKING:
    from eschaton.daemon.microgrid import MicrogridService


MICROGRID = CommandTable()


def _svc(node: Any) -> MicrogridService:
    mg = getattr(node, "microgrid", None)
    if mg is None:
        raise ApiError("this node has no [microgrid] section")
    return mg  # type: ignore[no-any-return]


@MICROGRID.command("microgrid.status", "contracts sold and bought, meters, supply, recent ledger entries")
async def microgrid_status(node: Any) -> dict[str, Any]:
    return _svc(node).status()


@MICROGRID.command("microgrid.hold", "stop (or resume) paying a seller's invoices for a meter",
         Param("meter", str, "the seller's meter id"),
         Param("paused", bool, "true: hold payments; false: pay what is due", required=False,
               default=True))
async def microgrid_hold(node: Any, meter: str, paused: bool) -> dict[str, Any]:
    mg = _svc(node)
    if mg.buyer is None or meter not in mg.buyer.core.meters():
        raise ApiError(f"no agreement to buy from meter {meter!r}")
    mg.hold(meter, paused)
    return {"meter": meter, "held": paused}


@MICROGRID.command("microgrid.ledger", "every entry of the seller or buyer ledger (hash chain verified)",
         Param("role", str, "seller, buyer or loss", required=False, default="seller"))
async def microgrid_ledger(node: Any, role: str) -> list[dict[str, Any]]:
    if role not in ("seller", "buyer", "loss"):
        raise ApiError("role must be seller, buyer or loss")
    return _svc(node).ledger(role)


@MICROGRID.command("microgrid.renegotiate", "offer new terms for future units of a meter (seller or buyer side)",
         Param("meter", str, "the meter id of the agreement"),
         Param("price_msat", int, "new price in msat per unit", required=False),
         Param("credit_limit_sat", int, "new credit limit in sat", required=False),
         Param("fee_sat", int, "new access fee per period in sat", required=False))
async def microgrid_renegotiate(node: Any, meter: str, price_msat: int | None, credit_limit_sat: int | None,
                                fee_sat: int | None) -> dict[str, Any]:
    for name, v in (("price_msat", price_msat), ("credit_limit_sat", credit_limit_sat), ("fee_sat", fee_sat)):
        if v is not None and v < 0:
            raise ApiError(f"{name} must not be negative")
    return await _svc(node).renegotiate(meter, price_msat=price_msat, credit_limit_sat=credit_limit_sat,
                                        fee_sat=fee_sat)
