"""The node's services over the parts below the daemon (chain, wallet, channels, metering,
bandwidth meters, microgrid, network, API): each one a ``Service`` (``eschaton.daemon.service``).

Each opens its part in ``start()``, sets it on the node (``node.chain``, ``node.channels``, ...:
what the API commands read) and releases it in ``stop()``. A part the config does not ask for
(no ``[metering]``, no ``[[bandwidth]]``, no ``[microgrid]``, no API socket or port) is a service
whose health is ``off``: every node shows the same list, in the same order.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import Command
from eschaton.daemon.service import OFF, STOPPED, Health, State
from eschaton.errors import LocalError

if TYPE_CHECKING:
    from eschaton.chain.backend import ChainBackend
    from eschaton.daemon.node import Node
    from eschaton.net.router import ServiceRoutes

log = logging.getLogger("eschaton.node")

BANDWIDTH_POLL_S = 0.5  # how often kernel byte counters are read into the journal
NO_COMMANDS: Mapping[str, Command] = {}


class _Part:
    """What the services here share: the node they set their part on, no commands, no rows."""

    name = ""

    def __init__(self, node: Node) -> None:
        self.node = node

    def commands(self) -> Mapping[str, Command]:
        return NO_COMMANDS

    def routes(self) -> ServiceRoutes | None:
        return None


class ChainService(_Part):
    """The embedded chain (owned, or reached through its owner) or a remote Electrum server."""

    name = "chain"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.height = -1
        self._coinbase: bytes | None = None

    async def start(self) -> None:
        from eschaton.chain.backend import NewTip
        from eschaton.chain.resilient import ReopeningChain

        cc = self.node.config.chain
        if cc.backend == "embedded":
            base = cc.datadir if cc.datadir is not None else self.node.datadir
            # Several nodes may share this chain; if its owner goes away, reopen (and maybe own) it.
            # ``[chain] serve``: other nodes of the mesh use this chain too (backend = "electrum").
            # ``[chain] rpc_port``: whichever process owns the chain serves bitcoind's RPC too.
            rpc = None
            if cc.rpc_port is not None:
                from eschaton.chain.rpc.server import RpcListen

                rpc = RpcListen(cc.rpc_port, cc.rpc_user, cc.rpc_password)
            reopening = await ReopeningChain.open(base, serve=True, also=cc.serve, rpc=rpc)
            if cc.block_interval_s > 0 or cc.block_after_tx_s > 0:
                # A village chain makes its own blocks (whichever node owns it); the coinbase pays
                # this node's wallet.
                reopening.produce_blocks(cc.block_interval_s, cc.block_after_tx_s, self._coinbase_script)
            chain: ChainBackend = reopening
        elif cc.backend == "rpc":
            from eschaton.chain.rpc.client import RpcChainClient, RpcCredentials

            assert cc.url is not None  # checked by the loader: http://HOST:PORT
            creds = RpcCredentials(cc.rpc_user, cc.rpc_password, cc.rpc_cookie)
            # HTTP needs no reconnecting: every call is a request; the first one must work.
            chain = await RpcChainClient.connect(cc.url, creds, poll=cc.rpc_poll, network=cc.network)
        else:
            from eschaton.net.transport import parse_url

            # Checked by the loader: tcp://HOST:PORT each. A server may restart or lie: reconnect
            # to the next one (and re-watch) instead of going deaf; headers persist in the datadir.
            found = (cc.url,) if cc.url else ()
            if cc.discover:
                # A village house: the chain its gateway announces on the mesh (before the
                # network service starts: the chain comes first in the start order).
                from eschaton.net.chainfind import find_chain

                disc = self.node.config.network.discovery
                gateway, url = await find_chain(self.node.datadir, port=disc.port, gateways=cc.gateways,
                                                interface=disc.interface, timeout=cc.discover_timeout)
                log.info("chain announced", extra={"fields": {"gateway": gateway, "url": url}})
                found = (url,)
            urls = [parse_url(u) for u in (cc.urls or found)]
            chain = await ReopeningChain.electrum([(u.host, u.require_port()) for u in urls],
                                                  self.node.datadir / "spv" / f"headers-{cc.network}.sqlite",
                                                  network=cc.network)
        self.node.chain = chain
        self.height = (await chain.tip()).height

        def on_tip(ev: Any) -> None:
            if isinstance(ev, NewTip):
                self.height = ev.tip.height

        chain.subscribe(on_tip)
        log.info("chain ready", extra={"fields": {"tip": self.height}})

    def _coinbase_script(self) -> bytes | None:
        """One receive script of the node's wallet for every block it makes (asked once: a
        fresh address per block would walk the wallet's gap). None until the wallet exists."""
        if self._coinbase is None and self.node.wallet is not None:
            self._coinbase = self.node.wallet.payout_script()
        return self._coinbase

    async def stop(self) -> None:
        if self.node.chain is not None:
            await self.node.chain.close()

    def health(self) -> Health:
        chain = self.node.chain
        if chain is None:
            return STOPPED
        role = "owner" if getattr(chain, "owner", False) else "client"
        produced = getattr(chain, "production", None)
        blocks = f", {produced.produced} blocks made" if produced is not None else ""
        return Health(State.OK, f"{self.node.config.chain.backend} ({role}), height {self.height}{blocks}")


class WalletService(_Part):
    name = "wallet"

    async def start(self) -> None:
        from eschaton.wallet.wallet import Wallet

        chain = self.node.chain
        assert chain is not None  # declared after the chain
        cc = self.node.config.chain
        net_name = {"mainnet": "main", "testnet": "test"}.get(cc.network, cc.network)
        self.node.wallet = Wallet(self.node.datadir / "wallet", chain, net_name)

    async def stop(self) -> None:
        pass  # the wallet writes its files as it goes: nothing held open

    def health(self) -> Health:
        return Health(State.OK, self.node.config.chain.network)

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.commands import WALLET

        return WALLET


class ChannelsService(_Part):
    """Trade channels and their payments facade (``eschaton.daemon.channels``)."""

    name = "channels"

    async def start(self) -> None:
        from eschaton.daemon.channels import ChannelService

        self.node.channels = await ChannelService.open(self.node)

    async def stop(self) -> None:
        if self.node.channels is not None:
            await self.node.channels.close()

    def health(self) -> Health:
        svc = self.node.channels
        if svc is None:
            return STOPPED
        peers = set(svc.peers.map.values())
        linked = sum(1 for p in peers if svc.linked(p))
        return Health(State.OK, f"{len(svc.endpoint.channels)} channels, {linked} of {len(peers)} peers linked")

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.commands import CHANNEL

        return CHANNEL

    def routes(self) -> ServiceRoutes | None:
        return self.node.channels.routes() if self.node.channels is not None else None


class MeteringService(_Part):
    """``[metering]``: pulse and energy meters, valves and relays, their journal and safety."""

    name = "metering"

    async def start(self) -> None:
        if self.node.config.metering is None:
            return
        from eschaton.metering.service import MeteringService as Meters

        svc = Meters.open(self.node.config.metering, datadir=self.node.datadir)
        svc.start()
        self.node.metering = svc

    async def stop(self) -> None:
        if self.node.metering is not None:
            self.node.metering.close()  # valves go to their declared safe state

    def health(self) -> Health:
        m = self.node.metering
        if m is None:
            return OFF
        return Health(State.OK, f"{len(m.pulse_meters) + len(m.modbus_meters)} meters, "
                                f"{len(m.valves)} valves, {len(m.relays)} relays")

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.meter_commands import METERING

        return METERING


class BandwidthService(_Part):
    """``[[bandwidth]]``: kernel byte counters per neighbour, polled into a durable journal."""

    name = "bandwidth"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""  # of the last poll, "" once one succeeds again

    async def start(self) -> None:
        if not self.node.config.bandwidth:
            return
        from eschaton.config.bandwidth import guarded_interfaces
        from eschaton.metering.bandwidth import BandwidthMeters
        from meter_drivers.nft_bandwidth import BandwidthClient

        entries = self.node.config.bandwidth
        clients = [BandwidthClient(e.name, e.addresses) for e in entries]
        guard = guarded_interfaces(entries)
        # nft runs as a subprocess: off the event loop.
        self.node.bandwidth = await asyncio.to_thread(
            lambda: BandwidthMeters(clients, self.node.datadir / "bandwidth", guard=guard))
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        meters = self.node.bandwidth
        while True:
            try:
                await asyncio.to_thread(meters.poll)
                self.last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as e:  # supervision boundary: a failed read is retried next round
                self.last_error = str(e) or type(e).__name__
                log.exception("bandwidth meters: poll failed")
            await asyncio.sleep(BANDWIDTH_POLL_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.node.bandwidth is not None:
            # The nft table stays: a client cut for not paying stays cut while the node is down.
            await asyncio.to_thread(self.node.bandwidth.close)

    def health(self) -> Health:
        bw = self.node.bandwidth
        if bw is None:
            return OFF
        if self.last_error:
            return Health(State.DEGRADED, f"last poll failed: {self.last_error}")
        return Health(State.OK, f"{len(bw.names)} clients")


class MicrogridService(_Part):
    """``[microgrid]``: selling and buying metered supply over trade channels."""

    name = "microgrid"

    async def start(self) -> None:
        from eschaton.daemon.microgrid import MicrogridService as Microgrid

        self.node.microgrid = await Microgrid.open(self.node)

    async def stop(self) -> None:
        if self.node.microgrid is not None:
            await self.node.microgrid.close()

    def health(self) -> Health:
        mg = self.node.microgrid
        if mg is None:
            return OFF
        return Health(State.OK, f"selling {len(mg.sells)} meters, buying from {len(mg.buys)} sellers")

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.mg_commands import MICROGRID

        return MICROGRID

    def routes(self) -> ServiceRoutes | None:
        return self.node.microgrid.routes() if self.node.microgrid is not None else None


class NetworkService(_Part):
    """Peer links, listeners and discovery; declared after every service with wire rows, so the
    router it hands every link is complete (and sealed at the first link)."""

    name = "network"

    async def start(self) -> None:
        from eschaton.net.mesh import NetNode

        node = self.node
        node.net = await NetNode.new(node.config, keys=node.keys, router=node.router,
                                     on_event=node.on_net_event, is_known=node.is_channel_peer)

    async def stop(self) -> None:
        if self.node.net is not None:
            await self.node.net.close()

    def health(self) -> Health:
        net = self.node.net
        if net is None:
            return STOPPED
        linked = sum(1 for s in net.sessions.values() if s.is_open)
        return Health(State.OK, f"{linked} peers linked, {len(net.listeners)} listeners, "
                                f"discovery {'on' if net.discovery is not None else 'off'}")

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.commands import PEER

        return PEER


class ApiService(_Part):
    """The local control API (unix socket and/or 127.0.0.1 port). It serves the commands of every
    service of the node (``Services.commands``) and owns the node-wide ones itself."""

    name = "api"

    async def start(self) -> None:
        api = self.node.config.api
        if api.socket is None and api.tcp_port is None:
            return
        from eschaton.api.server import ApiServer

        server = ApiServer(self.node, self.node.services.commands, api.socket, api.token_file, api.tcp_port)
        try:
            await server.start()
        except BaseException:
            await server.stop()  # a socket already bound when the port failed
            raise
        self.node.api = server

    async def stop(self) -> None:
        if self.node.api is not None:
            await self.node.api.stop()

    def health(self) -> Health:
        server = self.node.api
        if server is None:
            return OFF
        where = [str(server.socket_path)] if server.socket_path is not None else []
        if server.tcp_port is not None:
            where.append(f"127.0.0.1:{server.tcp_port}")
        return Health(State.OK, ", ".join(where))

    def commands(self) -> Mapping[str, Command]:
        from eschaton.daemon.commands import NODE

        return NODE


def prepare_datadir(node: Node) -> None:
    """The node's datadir, 0700: before any service, since every one of them writes there."""
    try:
        node.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(node.datadir, 0o700)
    except OSError as e:  # a file in the way, a read-only or foreign parent
        why = "it is not a directory" if isinstance(e, FileExistsError) else e.strerror
        raise LocalError(f"[node] datadir {node.datadir}: cannot use it: {why}") from None
