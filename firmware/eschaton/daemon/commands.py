"""Commands of the running node, served by the local API and called by the CLI.

One ``CommandTable`` per service that owns them: ``NODE`` (the API service: status, health,
stop, events), ``PEER`` (the network), ``WALLET`` and ``CHANNEL``. The composition root hands
each table to the API through its service (``eschaton.daemon.services``); the CLI modules
``node``, ``peer`` and ``channel`` only map their arguments onto these names.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from eschaton.api.registry import ApiError, CommandTable, Param
from eschaton.daemon.channels import REANCHOR_TIMEOUT

NODE = CommandTable()
PEER = CommandTable()
WALLET = CommandTable()
CHANNEL = CommandTable()


def _boot_status(datadir: Any) -> dict[str, Any] | None:
    """What the field image's boot steps wrote into the datadir: whether eschaton.toml on the
    boot partition was applied or refused (and why), and the mesh address bat0 took. None on a
    node not started from the image."""
    import json
    from pathlib import Path

    out: dict[str, Any] = {}
    for key, name in (("config", "boot-config.json"), ("mesh", "mesh-address.json")):
        try:
            out[key] = json.loads((Path(datadir) / name).read_text())
        except (OSError, ValueError):
            continue
    return out or None


@NODE.command("node.status", "identity, chain tip, peers and channels of the running node")
async def node_status(node: Any) -> dict[str, Any]:
    tip = await node.chain.tip()
    peers = sorted(s.hex() for s in node.net.sessions) if node.net is not None else []
    listeners = [lst.url for lst in node.net.listeners] if node.net is not None else []
    bandwidth: dict[str, Any] = {}
    bw = node.bandwidth
    for name in bw.names if bw is not None else ():
        # Durable bytes (what is billed) and whether the kernel drops the client now (nft runs
        # as a subprocess: off the event loop).
        bandwidth[name] = {"bytes": bw.total(name), "cut": await asyncio.to_thread(bw.is_cut, name)}
    return {
        "id": node.node_id,
        "name": node.config.node.name,
        "uptime_s": round(time.time() - node.started_at, 1),
        # requests: sent to the chain server since start (null when this node owns the chain).
        # blocks: automatic block production ([chain] block_interval_s / block_after_tx_s), null
        # when off or when another process owns the chain.
        "chain": {"height": tip.height, "hash": tip.block_hash, "backend": node.config.chain.backend,
                  "requests": getattr(node.chain, "requests", None), "blocks": _production(node)},
        "listen": listeners,
        "peers": peers,
        "channels": len(node.channels.endpoint.channels) if node.channels is not None else 0,
        # Channel store transactions since start: each is an fsync, so this is the SD card's
        # write rate from channels (group commits make it lower than the number of updates).
        "channel_store_commits": node.channels.store.commits if node.channels is not None else 0,
        # The channel watcher's looks at the chain (blocks, a slow timer, channels opening or
        # closing; never per payment) and turn requests asked again on a relink.
        "channel_watcher_syncs": node.channels.watcher.syncs if node.channels is not None else 0,
        "turn_requests_resent": node.channels.turn_requests_resent if node.channels is not None else 0,
        "turn_dwells": node.channels.turn_dwells if node.channels is not None else 0,
        "payments_pruned": node.channels.payments_pruned if node.channels is not None else 0,
        "bandwidth": bandwidth,
        # Inbound admission: live pending handshakes, links, sessions, refusals by reason.
        "net": node.net.stats() if node.net is not None else {},
        # The field image: eschaton.toml applied or refused (file:line: key: why), bat0's address.
        "boot": _boot_status(node.config.node.datadir),
    }


def _production(node: Any) -> dict[str, Any] | None:
    produced = getattr(node.chain, "production", None)
    return None if produced is None else dict(produced.to_json())


@NODE.command("node.health", "each service of the running node, in start order, with its health")
async def node_health(node: Any) -> list[dict[str, Any]]:
    return [{"service": name, **h.to_json()} for name, h in node.services.health().items()]


MAX_CONFIG_TEXT = 256 * 1024  # a pasted config larger than this is not a node's config


@NODE.command("config.check", "check a config with the node's own loader: the running node's file "
              "(as it is on disk now) or a pasted one; a problem is one line naming file, line and key",
              Param("text", str, "TOML to check instead of the node's file", required=False, default=""))
async def config_check(node: Any, text: str) -> dict[str, Any]:
    from eschaton.config import ConfigError
    from eschaton.config.loader import load_config, parse_config
    from eschaton.errors import LocalError

    if len(text) > MAX_CONFIG_TEXT:
        raise ApiError(f"a config of more than {MAX_CONFIG_TEXT} characters is not a node's config")
    source = "pasted" if text else str(node.config.source)
    try:
        # Off the event loop: the loader reads files (the config, the datadir's old chain).
        await asyncio.to_thread(lambda: parse_config(text, source) if text else load_config(source))
    except ConfigError as e:
        return {"ok": False, "file": e.source, "line": e.line, "key": e.key, "error": str(e)}
    except LocalError as e:  # an unreadable file: still one line
        return {"ok": False, "file": source, "line": None, "key": "", "error": str(e)}
    return {"ok": True, "file": source, "line": None, "key": "", "error": ""}


@NODE.command("node.stop", "flush state and stop the node")
async def node_stop(node: Any) -> dict[str, Any]:
    node.stop()
    return {"stopping": True}


@PEER.command("peer.list", "linked peers and discovered neighbours")
async def peer_list(node: Any) -> list[dict[str, Any]]:
    from eschaton.net.mesh import services

    out = []
    for nid, s in sorted(node.net.sessions.items(), key=lambda kv: kv[0].hex()):
        # rtt_ms: the link's last keepalive round trip (null until one came back).
        out.append({"id": nid.hex(), "via": s.stream.peer, "version": s.version, "linked": s.is_open,
                    "services": services(s.link.peer_features), "transport": _transport(s.stream.peer),
                    "rtt_ms": round(s.last_rtt * 1000, 3) if s.last_rtt is not None else None})
    if node.net.discovery is not None:
        linked = {d["id"] for d in out}
        for nid, urls in node.net.discovery.table.neighbours().items():
            if nid.hex() not in linked:
                out.append({"id": nid.hex(), "urls": list(urls), "linked": False})
    return out


def _transport(peer: str) -> str:
    """The transport of a link from its stream's description (``tcp://...``, ``serial://...``)."""
    scheme, sep, _ = peer.partition("://")
    return scheme if sep else "tcp"


@PEER.command("peer.connect", "dial a peer by node id and transport URL",
         Param("id", str, "peer node id (64 hex digits)"),
         Param("url", str, "transport URL, e.g. tcp://127.0.0.1:9735"))
async def peer_connect(node: Any, id: str, url: str) -> dict[str, Any]:
    from eschaton.core.link.identity import NodeId

    try:
        nid = NodeId.from_hex(id)
    except Exception as e:  # typed identity errors and ValueError alike mean a bad id
        raise ApiError(f"bad node id: {e}") from e
    s = await node.net.connect(nid, url, pin=True)  # the operator named it: pinned
    return {"id": nid.hex(), "via": s.stream.peer, "version": s.version}


@WALLET.command("wallet.address", "a fresh receive address of the node's wallet")
async def wallet_address(node: Any) -> dict[str, Any]:
    return {"address": node.wallet.new_address()}


@WALLET.command("wallet.balance", "wallet balance in satoshis")
async def wallet_balance(node: Any) -> dict[str, Any]:
    b = await node.wallet.balance()
    return {"confirmed": b.confirmed, "unconfirmed": b.unconfirmed, "immature": b.immature,
            "spendable": b.spendable}


@WALLET.command("wallet.send", "pay an address from the node's wallet",
         Param("address", str, "destination address"), Param("sats", int, "amount in satoshis"))
async def wallet_send(node: Any, address: str, sats: int) -> dict[str, Any]:
    if sats <= 0:
        raise ApiError("amount must be positive")
    return {"txid": await node.wallet.send(address, sats)}


# --- channels -------------------------------------------------------------------------------


def _status(node: Any, ch: Any) -> dict[str, Any]:
    st = ch.status(node.channels.height)
    return {
        "channel": ch.channel_id.hex(),
        "peer": node.channels.peers.map.get(ch.channel_id, ""),
        "state": st.state,
        "role": st.role,
        "local_sat": st.local_balance,
        "remote_sat": st.remote_balance,
        "fee_sat": st.fee,
        "fee_paid_sat": st.fee_paid,
        "close_sat": st.close_balance,
        "escrows": st.escrows,
        "bets": st.bets,
        "version": st.number,
        "locktime": st.locktime,
        "switches_left": st.switches_left,
        "budget_low": st.budget_low,
        "locktime_step": int(ch.params.locktime_step),
        "fee_step_sat": int(ch.params.fee_step),
        "min_depth": int(ch.params.min_depth),
        "funding_txid": ch.setup.funding_txid if ch.setup is not None else None,
        "unconfirmed_anchors": len(ch.anchors),
    }


@CHANNEL.command("channel.list", "every channel with its state and balances")
async def channel_list(node: Any) -> list[dict[str, Any]]:
    return [_status(node, ch) for ch in node.channels.endpoint.channels.values()]


@CHANNEL.command("channel.open", "open a channel funded by this node's wallet",
         Param("peer", str, "peer node id"),
         Param("capacity", int, "satoshis this node puts in"),
         Param("lifetime", int, "blocks until the initial refund matures (0: the network's default, "
               "regtest 1008)", required=False, default=0),
         Param("step", int, "blocks nLockTime moves per direction switch (0: the network's default, "
               "regtest 6)", required=False, default=0),
         Param("wait", bool, "wait until the channel is open (someone must mine)", required=False,
               default=False))
async def channel_open(node: Any, peer: str, capacity: int, lifetime: int, step: int, wait: bool) -> dict[str, Any]:
    if lifetime < 0 or step < 0:
        raise ApiError("lifetime and step must be positive (or 0: the network's default)")
    ch = await node.channels.open_channel(peer, capacity, lifetime, step)
    if wait:
        await node.channels.wait_for(lambda: ch.state.name == "OPEN" and ch.peer_ready,
                                     "the channel to open", timeout=120)
    return _status(node, ch)


@CHANNEL.command("channel.pay", "pay the peer over a channel; a retry with the same id never pays twice",
         Param("channel", str, "channel id"), Param("amount", int, "satoshis"),
         Param("id", str, "payment id (default: the node makes one and returns it)", required=False,
               default=""),
         Param("created", float, "when the payment was first asked for (unix seconds): a retry older than the "
               "node's payment records is refused instead of paid again", required=False, default=0.0),
         cancellable=True)
async def channel_pay(node: Any, channel: str, amount: int, id: str, created: float) -> dict[str, Any]:
    if amount <= 0:
        raise ApiError("amount must be positive")
    svc = node.channels
    ch = svc.channel(channel)
    rec = await svc.payments.pay(ch, amount, id or None, created)
    # The channel object may have been reloaded since (after a failed commit): look it up again.
    return dict(_status(node, svc.endpoint.channels.get(ch.channel_id, ch)), payment=rec.id,
                payment_state=rec.state.value)


@CHANNEL.command("channel.payment", "a payment by id: pending, complete or failed, with channel, amount and times",
         Param("id", str, "payment id"))
async def channel_payment(node: Any, id: str) -> dict[str, Any]:
    return dict(node.channels.payments.lookup(id).to_json())


@CHANNEL.command("channel.payments", "payments this node made, newest first, filtered by state and channel",
         Param("state", str, "pending, complete or failed (default: all)", required=False, default=""),
         Param("channel", str, "only this channel id (or a prefix of it)", required=False, default=""),
         Param("limit", int, "at most this many (1 to 10000)", required=False, default=200))
async def channel_payments(node: Any, state: str, channel: str, limit: int) -> list[dict[str, Any]]:
    from eschaton.channel.payments import PaymentState

    if not 1 <= limit <= 10_000:
        raise ApiError("limit must be between 1 and 10000")
    states = [s for s in PaymentState if not state or s.value == state]
    if not states:
        raise ApiError(f"state must be one of {', '.join(s.value for s in PaymentState)}")
    recs = [r for s in states for r in node.channels.store.payments(s)
            if r.channel_id.hex().startswith(channel.lower())]
    recs.sort(key=lambda r: r.created_at, reverse=True)
    return [r.to_json() for r in recs[:limit]]


@CHANNEL.command("channel.escrow", "lock an amount for the peer against a hash; returns the escrow id",
         Param("channel", str, "channel id"), Param("amount", int, "satoshis"), cancellable=True)
async def channel_escrow(node: Any, channel: str, amount: int) -> dict[str, Any]:
    import os

    from eschaton.core.script import sha256

    if amount <= 0:
        raise ApiError("amount must be positive")
    ch = node.channels.channel(channel)
    preimage = os.urandom(32)
    escrow_id = await node.channels.run_update(ch, "offer_escrow", amount, preimage)
    return dict(_status(node, ch), escrow_id=escrow_id, hash=sha256(preimage).hex())


@CHANNEL.command("channel.escrow_offer", "lock an amount for the peer under a payment hash until a timeout "
                 "(the payee fulfils with the preimage); retrying with the same id never locks twice",
                 Param("target", str, "channel id, or a peer's node id (its open channel with the most room)"),
                 Param("amount", int, "satoshis"),
                 Param("hash", str, "payment hash, 64 hex digits (the payee knows its preimage)"),
                 Param("timeout", int, "blocks from the tip until the payer may reclaim on chain (0: the "
                       "channel's default)", required=False, default=0),
                 Param("id", str, "payment id of the offer (default: the node makes one)", required=False),
                 cancellable=True)
async def channel_escrow_offer(node: Any, target: str, amount: int, hash: str, timeout: int,
                               id: str | None) -> dict[str, Any]:
    from eschaton.daemon.escrows import check_hash, escrow_name

    if amount <= 0:
        raise ApiError("amount must be positive")
    if timeout < 0:
        raise ApiError("timeout must be a number of blocks (0: the channel's default)")
    svc = node.channels
    try:
        raw = bytes.fromhex(target)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiError(f"bad target {target[:80]!r}: a channel id or a node id (64 hex digits)")
    dest: Any = svc.endpoint.channels.get(raw) or target.lower()  # not a channel: a peer
    payment_hash = check_hash(hash)
    at = svc.height + timeout if timeout else 0
    rec, eid = await svc.payments.offer_escrow(dest, amount, payment_hash, at, id or None)
    ch = svc.endpoint.channels[rec.channel_id]
    e = next((x for x in ch.pending.escrows if x.id == eid), None) if ch.pending is not None else None
    e = e or next((x for x in ch.current.escrows if x.id == eid), None)
    return dict(_status(node, ch), escrow=escrow_name(rec.channel_id, eid), escrow_id=eid,
                hash=payment_hash.hex(), payment=rec.id.removeprefix("esc:"), payment_state=rec.state.value,
                timeout=e.timeout if e is not None else None)


@CHANNEL.command("channel.escrow_fulfil", "reveal an escrow's preimage to its payer (payee side); kept durably "
                 "first, then waits for the payer's commit while the payer is linked",
                 Param("escrow", str, "CHANNEL:ESCROW_ID"), Param("preimage", str, "64 hex digits"),
                 cancellable=True)
async def channel_escrow_fulfil(node: Any, escrow: str, preimage: str) -> dict[str, Any]:
    from eschaton.daemon.escrows import check_preimage

    ch, committed = await node.channels.payments.fulfil(escrow, check_preimage(preimage))
    return dict(_status(node, ch), committed=committed)


@CHANNEL.command("channel.escrow_fail", "refuse an escrow offered to this node and return it to the payer",
                 Param("escrow", str, "CHANNEL:ESCROW_ID"),
                 Param("reason", str, "a short reason code for the payer", required=False, default="failed"),
                 cancellable=True)
async def channel_escrow_fail(node: Any, escrow: str, reason: str) -> dict[str, Any]:
    if not reason or len(reason) > 32 or not reason.replace("_", "").isalnum():
        raise ApiError("reason must be 1 to 32 letters, digits or _")
    ch = await node.channels.payments.fail(escrow, reason)
    return _status(node, ch)


@CHANNEL.command("channel.settle", "commit an escrow (reveal its preimage) or, with rollback, return it",
         Param("channel", str, "channel id"), Param("escrow", int, "escrow id"),
         Param("rollback", bool, "return the escrow to the payer instead", required=False, default=False),
         cancellable=True)
async def channel_settle(node: Any, channel: str, escrow: int, rollback: bool) -> dict[str, Any]:
    ch = node.channels.channel(channel)
    await node.channels.run_update(ch, "return_escrow" if rollback else "commit_escrow", escrow)
    return _status(node, ch)


@CHANNEL.command("channel.reanchor", "move the channel to a new output with a fresh nLockTime budget",
         Param("channel", str, "channel id"),
         Param("lifetime", int, "blocks of the new budget (default: the channel's first)", required=False,
               default=0),
         Param("wait", bool, "wait until the new anchor confirms", required=False, default=False))
async def channel_reanchor(node: Any, channel: str, lifetime: int, wait: bool) -> dict[str, Any]:
    svc = node.channels
    ch = svc.channel(channel)
    await svc.reanchor(ch, lifetime or None)  # signed by both: the channel pays on the new anchor
    if wait:
        await svc.wait_for(lambda: not ch.anchors, f"the re-anchor of channel {channel[:12]} to confirm",
                           timeout=REANCHOR_TIMEOUT)
    return _status(node, ch)


@CHANNEL.command("channel.close", "close cooperatively, or unilaterally with force",
         Param("channel", str, "channel id"),
         Param("force", bool, "broadcast our best version without the peer", required=False, default=False))
async def channel_close(node: Any, channel: str, force: bool) -> dict[str, Any]:
    svc = node.channels
    ch = svc.channel(channel)
    if force:
        svc.endpoint.execute(ch, ch.force_close(svc.height))
    else:
        async with svc.exclusive(ch.channel_id):
            svc._session_for(ch.channel_id)
            await svc.ensure_turn(ch)
            svc.endpoint.execute(ch, ch.close(svc.height))
        svc._poke()
        await svc.wait_for(lambda: bool(ch.close_raw) or ch.state.name == "CLOSED", "the peer to sign the close")
    svc._poke()
    await svc.watcher.sync()
    return _status(node, ch)


@NODE.command("events.since", "the node's events after a sequence number (payments, channels, microgrid, links)",
         Param("seq", int, "the last sequence number already seen (0: from the oldest kept)",
               required=False, default=0),
         Param("limit", int, "at most this many events (1 to 1000)", required=False, default=200),
         Param("source", str, "only this source: net, channel, payments, microgrid, supply or refusals",
               required=False))
async def events_since(node: Any, seq: int, limit: int, source: str | None) -> dict[str, Any]:
    if seq < 0:
        raise ApiError("seq must not be negative")
    if not 1 <= limit <= 1000:
        raise ApiError("limit must be between 1 and 1000")
    return dict(node.stream.since(seq, limit, source or None))
