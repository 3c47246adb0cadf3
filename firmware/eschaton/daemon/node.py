"""The node daemon's composition root: ``await Node.new(config)`` builds and starts everything.

Rules:
- This is the only place that knows every part. ``_services`` lists the node's services
  (``eschaton.daemon.service.Service``) in their one start order: chain -> wallet -> channels
  -> metering -> bandwidth meters -> microgrid -> echo -> stamp -> dht -> network -> dashboard
  -> API. A new service is one line in that list (and the rows and commands it declares
  itself). Before them: the datadir and the node key; after them: sd_notify READY.
- ``Services`` starts them in that order. Each service's wire rows go to the router once it
  started; the network comes after every service with rows, because every link announces the
  router's services in its ``init``. The API serves the commands of all of them (collected
  before anything starts: one owner per command). If a start fails, the services that started
  are stopped in reverse order and a typed ``NodeStartError`` is raised: one line, naming the
  cause (the log line "service failed to start" names the service).
- Stop (SIGTERM, SIGINT, or ``node.stop`` over the API) runs in reverse: API, network, echo,
  microgrid, bandwidth meters (final commit; the nft table stays, so cut clients stay cut),
  metering (valves go to their safe state), channels (stores flushed and closed), wallet, chain.
- ``node.health`` (``eschaton node health``) shows each service's health in that order.
- The embedded chain is opened through ``open_chain``: the first node process on a chain
  directory owns it and serves it over Electrum (and, with ``[chain] rpc_port``, bitcoind's
  JSON-RPC); later ones (the houses of a village sharing the gateway's chain) connect to the
  owner. ``backend = "rpc"`` uses a bitcoind (or Knots, or another Eschaton chain's RPC).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from eschaton.chain.backend import ChainBackend
from eschaton.config import NodeConfig
from eschaton.daemon import sdnotify
from eschaton.daemon.events import EventStream
from eschaton.daemon.service import Service, Services, ServiceStartError
from eschaton.errors import EschatonError, LocalError

log = logging.getLogger("eschaton.node")


class NodeStartError(LocalError):
    pass


class Node:
    def __init__(self, config: NodeConfig) -> None:
        from eschaton.net.router import Router

        self.config = config
        self.datadir: Path = config.node.datadir
        self.started_at = time.time()
        # The parts the services open (``eschaton.daemon.services``) and the commands read.
        self.chain: ChainBackend | None = None
        self.wallet: Any = None
        self.net: Any = None
        self.channels: Any = None
        self.metering: Any = None
        self.bandwidth: Any = None
        self.microgrid: Any = None
        self.keys: Any = None
        self.api: Any = None
        self.router = Router()
        self._stop = asyncio.Event()
        self._redials: dict[str, asyncio.Task[None]] = {}
        self.stream = EventStream()  # the node's one event stream (``events.since``)
        self.services = Services(self._services(), self.router)

    def _services(self) -> list[Service]:
        """The services this node runs, in start order (stopped in reverse): one line each."""
        from eschaton.daemon.dashboard import DashboardService
        from eschaton.daemon.dht import DhtService
        from eschaton.daemon.echo import EchoService
        from eschaton.daemon.routing import RoutingService
        from eschaton.daemon.services import (
            ApiService,
            BandwidthService,
            ChainService,
            ChannelsService,
            MeteringService,
            MicrogridService,
            NetworkService,
            WalletService,
        )
        from eschaton.daemon.stamp import StampService

        dht = [DhtService(lambda: self.keys.node_id.raw, height=self._height, node=self,
                          config=self.config.dht)] if self.config.dht.enabled else []
        return [
            ChainService(self),
            WalletService(self),
            ChannelsService(self),
            MeteringService(self),
            BandwidthService(self),
            MicrogridService(self),
            EchoService(),
            StampService(self),
            *dht,
            RoutingService(self),
            NetworkService(self),  # after every service with wire rows
            DashboardService(self),  # after what it shows; its commands are the API's
            ApiService(self),  # last: serves the commands of all of them
        ]

    def _height(self) -> int:
        """The chain's tip height as the chain service last saw it (0 before it knows)."""
        chain = self.services.by_name.get("chain")
        return max(0, getattr(chain, "height", 0))

    def service(self, name: str) -> Any:
        """The running service called ``name`` (for the commands that need its methods)."""
        return self.services.by_name[name]

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def new(cls, config: NodeConfig) -> Node:
        node = cls(config)
        try:
            await node._start()
        except BaseException as e:
            await node.close()
            cause = e.__cause__ if isinstance(e, ServiceStartError) and e.__cause__ is not None else e
            if isinstance(cause, EschatonError):
                raise NodeStartError(f"node failed to start: {cause}") from e
            from eschaton.channel.store import is_disk_full

            if is_disk_full(cause):  # from any part (keys, wallet, token file): one line, not a traceback
                where = getattr(cause, "filename", None) or node.datadir
                raise NodeStartError(f"node failed to start: disk full: cannot write {where}") from e
            raise
        return node

    async def _start(self) -> None:
        from eschaton.daemon.services import prepare_datadir
        from eschaton.net.identity import load_or_create_identity

        prepare_datadir(self)
        self.keys = load_or_create_identity(self.datadir)
        await self.services.start()
        from eschaton.net.reclaim import freeze_startup_objects

        # Everything alive now lives as long as the node: keep the cycle collector off it, so
        # the collections after bursts of closed connections stay cheap (net/reclaim.py).
        freeze_startup_objects()
        sdnotify.notify("READY=1\nSTATUS=running")
        log.info("node ready", extra={"fields": {"id": self.node_id, "datadir": str(self.datadir)}})

    def is_channel_peer(self, node_id: Any) -> bool:
        """A peer we have a channel with is known (``[network] accept = "known"``): it must be
        able to come back to settle, and is never refused for want of a link slot."""
        return self.channels is not None and node_id.hex() in self.channels.peers.map.values()

    def on_net_event(self, ev: dict[str, Any]) -> None:
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
        await self.services.stop()
