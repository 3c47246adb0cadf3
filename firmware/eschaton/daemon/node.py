"""The node daemon's composition root: ``await Node.new(config)`` builds and starts everything.

Rules:
- This is the only place that knows every part. Order of start: datadir -> chain -> wallet ->
  node key -> channels -> metering -> bandwidth meters -> microgrid -> services registered
  with the router -> network -> API -> sd_notify READY. If any step fails, the parts that
  started are stopped in reverse order and a typed ``NodeStartError`` is raised.
- Services (``_register_services``, the one place that says which services this node runs):
  each registers the wire rows it owns with the router (``eschaton.net.router``). The network
  starts after that, because every link announces the router's services in its ``init``.
- Stop (SIGTERM, SIGINT, or ``node.stop`` over the API) runs in reverse: API, network,
  microgrid, bandwidth meters (final commit; the nft table stays, so cut clients stay cut),
  metering (valves go to their safe state), channels (stores flushed and closed), chain.
- The embedded chain is opened through ``open_chain``: the first node process on a chain
  directory owns it and serves it over Electrum (and, with ``[chain] rpc_port``, bitcoind's
  JSON-RPC); later ones (the houses of a village sharing the gateway's chain) connect to the
  owner. ``backend = "rpc"`` uses a bitcoind (or Knots, or another Eschaton chain's RPC).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eschaton.chain.backend import ChainBackend
from eschaton.config import NodeConfig
from eschaton.daemon import sdnotify
from eschaton.daemon.events import EventStream
from eschaton.errors import EschatonError, LocalError

log = logging.getLogger("eschaton.node")

BANDWIDTH_POLL_S = 0.5  # how often kernel byte counters are read into the journal


class NodeStartError(LocalError):
    pass


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.datadir: Path = config.node.datadir
        self.started_at = time.time()
        self.chain: ChainBackend | None = None
        self.wallet: Any = None
        self.net: Any = None
        self.channels: Any = None
        self.metering: Any = None
        self.bandwidth: Any = None
        self.microgrid: Any = None
        self.echo: Any = None
        self.keys: Any = None
        self.router: Any = None
        self.api: Any = None
        self._stop = asyncio.Event()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._redials: dict[str, asyncio.Task[None]] = {}
        self.stream = EventStream()  # the node's one event stream (``events.since``)

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def new(cls, config: NodeConfig) -> Node:
        node = cls(config)
        try:
            await node._start()
        except BaseException as e:
            await node.close()
            if isinstance(e, EschatonError):
                raise NodeStartError(f"node failed to start: {e}") from e
            from eschaton.channel.store import is_disk_full

            if is_disk_full(e):  # from any part (keys, wallet, token file): one line, not a traceback
                where = getattr(e, "filename", None) or node.datadir
                raise NodeStartError(f"node failed to start: disk full: cannot write {where}") from e
            raise
        return node

    async def _start(self) -> None:
        from eschaton.wallet.wallet import Wallet

        try:
            self.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.datadir, 0o700)
        except OSError as e:  # a file in the way, a read-only or foreign parent
            why = "it is not a directory" if isinstance(e, FileExistsError) else e.strerror
            raise LocalError(f"[node] datadir {self.datadir}: cannot use it: {why}") from None

        cc = self.config.chain
        if cc.backend == "embedded":
            from eschaton.chain.resilient import ReopeningChain

            base = cc.datadir if cc.datadir is not None else self.datadir
            # Several nodes may share this chain; if its owner goes away, reopen (and maybe own) it.
            # ``[chain] serve``: other nodes of the mesh use this chain too (backend = "electrum").
            # ``[chain] rpc_port``: whichever process owns the chain serves bitcoind's RPC too.
            rpc = None
            if cc.rpc_port is not None:
                from eschaton.chain.rpc.server import RpcListen

                rpc = RpcListen(cc.rpc_port, cc.rpc_user, cc.rpc_password)
            self.chain = await ReopeningChain.open(base, serve=True, also=cc.serve, rpc=rpc)
        elif cc.backend == "rpc":
            from eschaton.chain.rpc.client import RpcChainClient, RpcCredentials

            assert cc.url is not None  # checked by the loader: http://HOST:PORT
            creds = RpcCredentials(cc.rpc_user, cc.rpc_password, cc.rpc_cookie)
            # HTTP needs no reconnecting: every call is a request; the first one must work.
            self.chain = await RpcChainClient.connect(cc.url, creds, poll=cc.rpc_poll)
        else:
            from eschaton.chain.resilient import ReopeningChain
            from eschaton.net.transport import parse_url

            assert cc.url is not None  # checked by the loader: tcp://HOST:PORT
            url = parse_url(cc.url)
            # A remote chain server may restart: reconnect (and re-watch) instead of going deaf.
            self.chain = await ReopeningChain.electrum(url.host, url.require_port())
        chain = self.chain
        self._closers.append(chain.close)
        log.info("chain ready", extra={"fields": {"tip": (await chain.tip()).height}})

        net_name = {"mainnet": "main", "testnet": "test"}.get(cc.network, cc.network)
        self.wallet = Wallet(self.datadir / "wallet", chain, net_name)

        from eschaton.net.identity import load_or_create_identity

        self.keys = load_or_create_identity(self.datadir)
        await self._start_channels()
        self._start_metering()
        await self._start_bandwidth()
        await self._start_microgrid()
        self.router = self._register_services()
        await self._start_network()

        from eschaton.api.server import ApiServer

        api = self.config.api
        if api.socket is not None or api.tcp_port is not None:
            self.api = ApiServer(self, api.socket, api.token_file, api.tcp_port)
            await self.api.start()
            self._closers.append(self.api.stop)
        from eschaton.net.reclaim import freeze_startup_objects

        # Everything alive now lives as long as the node: keep the cycle collector off it, so
        # the collections after bursts of closed connections stay cheap (net/reclaim.py).
        freeze_startup_objects()
        sdnotify.notify("READY=1\nSTATUS=running")
        log.info("node ready", extra={"fields": {"id": self.node_id, "datadir": str(self.datadir)}})

    async def _start_channels(self) -> None:
        from eschaton.daemon.channels import ChannelService

        assert self.chain is not None
        self.channels = await ChannelService.open(self)
        self._closers.append(self.channels.close)

    def _register_services(self) -> Any:
        """The services this node runs, each with the wire rows it owns: one line per service."""
        from eschaton.daemon.echo import EchoService
        from eschaton.net.router import Router

        router = Router()
        router.add(self.channels.routes())
        if self.microgrid is not None:
            router.add(self.microgrid.routes())
        self.echo = EchoService()
        router.add(self.echo.routes())
        return router

    async def _start_network(self) -> None:
        from eschaton.net.node import NetNode

        self.net = await NetNode.new(self.config, keys=self.keys, router=self.router,
                                     on_event=self._on_net_event, is_known=self._is_channel_peer)
        self._closers.append(self.net.close)

    def _start_metering(self) -> None:
        if self.config.metering is None:
            return
        from eschaton.metering.service import MeteringService

        svc = MeteringService.open(self.config.metering, datadir=self.datadir)
        svc.start()
        self.metering = svc

        async def close_metering() -> None:
            svc.close()  # valves go to their declared safe state

        self._closers.append(close_metering)

    async def _start_bandwidth(self) -> None:
        """``[[bandwidth]]``: kernel byte counters per neighbour, polled into a durable journal."""
        if not self.config.bandwidth:
            return
        from eschaton.config.bandwidth import guarded_interfaces
        from eschaton.metering.bandwidth import BandwidthMeters
        from meter_drivers.nft_bandwidth import BandwidthClient

        clients = [BandwidthClient(e.name, e.addresses) for e in self.config.bandwidth]
        guard = guarded_interfaces(self.config.bandwidth)
        # nft runs as a subprocess: off the event loop.
        meters = await asyncio.to_thread(
            lambda: BandwidthMeters(clients, self.datadir / "bandwidth", guard=guard))
        self.bandwidth = meters

        async def poll() -> None:
            while True:
                try:
                    await asyncio.to_thread(meters.poll)
                except asyncio.CancelledError:
                    raise
                except Exception:  # supervision boundary: a failed read is retried next round
                    log.exception("bandwidth meters: poll failed")
                await asyncio.sleep(BANDWIDTH_POLL_S)

        task = asyncio.get_running_loop().create_task(poll())

        async def close_bandwidth() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # The nft table stays: a client cut for not paying stays cut while the node is down.
            await asyncio.to_thread(meters.close)

        self._closers.append(close_bandwidth)

    async def _start_microgrid(self) -> None:
        from eschaton.daemon.microgrid import MicrogridService

        self.microgrid = await MicrogridService.open(self)
        if self.microgrid is not None:
            self._closers.append(self.microgrid.close)

    def _is_channel_peer(self, node_id: Any) -> bool:
        """A peer we have a channel with is known (``[network] accept = "known"``): it must be
        able to come back to settle, and is never refused for want of a link slot."""
        return self.channels is not None and node_id.hex() in self.channels.peers.map.values()

    def _on_net_event(self, ev: dict[str, Any]) -> None:
        self.stream.emit("net", str(ev.get("event", "net")), ev)
        log.info(ev.get("event", "net"), extra={"fields": ev})
        if ev.get("event") == "link_closed" and not self._stop.is_set():
            self._redial_neighbour(str(ev["id"]))

    def _redial_neighbour(self, peer: str) -> None:
        """Dial a discovered neighbour again after its link dropped, while it keeps beaconing.

        Discovery reports only new or changed neighbours, so a peer that restarts at the same
        address (its beacons keep it fresh in the table) would never be dialled again. As for a
        new neighbour, only the side with the smaller id dials; static peers redial themselves.
        """
        from eschaton.core.link.identity import NodeId

        net = self.net
        if net is None or net.discovery is None or peer in self._redials:
            return
        nid = NodeId.from_hex(peer)
        if not net.node_id.raw < nid.raw or any(p.node_id == nid for p in self.config.network.peers):
            return
        task = asyncio.get_running_loop().create_task(self._redial(nid))
        self._redials[peer] = task
        task.add_done_callback(lambda _t: self._redials.pop(peer, None))

    async def _redial(self, nid: Any) -> None:
        delay = 0.5
        while not self._stop.is_set():
            await asyncio.sleep(delay)
            net = self.net
            urls = net.discovery.table.neighbours().get(nid) if net is not None and net.discovery else None
            tcp = [u for u in urls or () if u.startswith("tcp://")]
            if net is None or net.session(nid) is not None or not tcp:
                return  # linked again, or forgotten (a later beacon is reported as new)
            try:
                await net.connect(nid, tcp[0])
                return
            except EschatonError as e:
                log.info("redial of neighbour %s failed: %s", nid.short(), e)
            delay = min(delay * 2, 30.0)

    @property
    def node_id(self) -> str:
        return str(self.net.node_id.hex()) if self.net is not None else ""

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until ``stop()``; ping the systemd watchdog if it asked for it."""
        interval = sdnotify.watchdog_interval()
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval or 3600)
            if interval:
                sdnotify.notify("WATCHDOG=1")
        sdnotify.notify("STOPPING=1")

    async def close(self) -> None:
        self._stop.set()  # no redials while the network stops
        for task in list(self._redials.values()):
            task.cancel()
        while self._closers:
            closer = self._closers.pop()
            try:
                await closer()
            except Exception:  # supervision boundary: keep closing the rest
                log.exception("error while stopping a part of the node")
