"""The dashboard service: the operator's web pages and ``/metrics`` (``eschaton.dashboard``).

Declared before the API (which stays last) and after everything it shows. Off without
``[dashboard] enabled = true``. While it runs it follows the node's event stream (payments,
channels, links, microgrid) and samples the meters once a second (``meter.list`` and friends:
the same commands the API serves) into the plots' history; both go to the open pages as
server-sent events. The sampler is the dashboard's only periodic work, and it runs only when
the node has meters.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eschaton.api.registry import Command
from eschaton.daemon.service import OFF, STOPPED, Health, State

if TYPE_CHECKING:
    from eschaton.daemon.events import Event
    from eschaton.daemon.node import Node
    from eschaton.dashboard.app import Dashboard
    from eschaton.net.router import ServiceRoutes

log = logging.getLogger("eschaton.dashboard")

SAMPLE_S = 1.0


class DashboardService:
    name = "dashboard"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.dashboard: Dashboard | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def commands(self) -> Mapping[str, Command]:
        return {}

    def routes(self) -> ServiceRoutes | None:
        return None

    async def start(self) -> None:
        cfg = self.node.config.dashboard
        if cfg is None:
            return
        from eschaton.dashboard.app import Dashboard

        node = self.node
        dash = Dashboard(node, node.services.commands, cfg.host, cfg.port, cfg.password_file,
                         token=lambda: getattr(node.api, "token", None) or None,
                         login_lock_s=cfg.login_lock_s)
        url = await dash.start()
        self.dashboard = dash
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        node.stream.subscribe(self._on_event)
        if node.metering is not None:
            self._task = self._loop.create_task(self._sample())
        _write_private(cfg.url_file, url + "\n")
        log.info("dashboard listening", extra={"fields": {"url": url, "loopback": cfg.loopback}})

    async def stop(self) -> None:
        self.node.stream.unsubscribe(self._on_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.dashboard is not None:
            await self.dashboard.stop()
            self.dashboard = None

    def health(self) -> Health:
        if self.node.config.dashboard is None:
            return OFF
        d = self.dashboard
        if d is None:
            return STOPPED
        return Health(State.OK, f"{d.url}, {len(d.sessions)} sessions, {d.live_clients} live pages")

    def _on_event(self, ev: Event) -> None:
        if threading.get_ident() != self._loop_thread and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_event_here, ev)
        else:
            self._on_event_here(ev)

    def _on_event_here(self, ev: Event) -> None:
        d = self.dashboard
        if d is None:
            return
        d.metrics.payments.on_event(ev.source, ev.kind, ev.data)
        d.publish("event", ev.to_json())

    async def _sample(self) -> None:
        while True:
            d = self.dashboard
            try:
                if d is not None:
                    await self._sample_once(d)
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision boundary: a failed sample is retried next second
                log.exception("dashboard: meter sample failed")
            await asyncio.sleep(SAMPLE_S)

    async def _sample_once(self, d: Dashboard) -> None:
        meters: list[dict[str, Any]] = await d.run("meter.list")
        now = time.time()
        for m in meters:
            if m.get("total") is not None:
                d.history.add(m["name"], now, float(m["total"]))
        if d.live_clients:
            d.publish("sample", {"t": now, "meters": meters, "valves": await d.run("valve.list"),
                                 "relays": await d.run("relay.list")})


def _write_private(path: Any, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
