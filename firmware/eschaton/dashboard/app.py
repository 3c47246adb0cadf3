"""The dashboard's HTTP server (aiohttp), inside the node process.

Rules / theory of operation:
- Every page and ``/metrics`` needs a session (``auth.Sessions``) or, for ``/metrics``, the API
  token as a bearer; ``/login`` and ``/static/`` are open. A request whose ``Host`` is not the
  address the dashboard serves is refused (a DNS-rebinding page cannot talk to it by name).
- Every POST is refused unless its ``Origin`` (or, without one, its ``Referer``) is the dashboard
  itself, and every POST after login must carry the session's CSRF token; the cookie is
  ``SameSite=Strict`` besides. A cross-site form therefore reaches nothing.
- Actions (``/do/<command>``) run the node's own ``Command`` of that name (the API's table:
  same validation, same handler) from an allow-list of what the pages offer. A form is typed by
  the command's declared parameters; a payment form carries a payment id made when the page was
  drawn, so a form sent twice pays once.
- Live updates: ``/events`` is a server-sent event stream. Each client has a bounded queue fed
  from the node's event stream and from the meter sampler (``sample`` events, once a second); a
  client that falls ``QUEUE`` events behind is dropped (its browser reconnects and re-reads the
  page state), so a stalled phone never holds memory or slows the node.
- Responses carry a Content-Security-Policy allowing only the dashboard's own scripts and
  styles (no inline script), and pages are not cached.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from eschaton.api.registry import Command, Param
from eschaton.dashboard import views
from eschaton.dashboard.auth import LoginLimiter, Sessions, read_password_file, verify_password
from eschaton.dashboard.history import TIERS, MeterHistory
from eschaton.dashboard.metrics import CONTENT_TYPE, Metrics, Snapshot
from eschaton.dashboard.pages import esc, login_page, page
from eschaton.errors import EschatonError

log = logging.getLogger("eschaton.dashboard")

STATIC = Path(__file__).with_name("static")
COOKIE = "eschaton_session_"  # + the port: browsers share cookies between the ports of a host
QUEUE = 512  # events a live page may fall behind before it is dropped
KEEPALIVE_S = 15.0
MAX_FORM = 16 * 1024
ACTIONS = frozenset({"channel.open", "channel.pay", "channel.close", "valve.open", "valve.close",
                     "relay.switch", "microgrid.hold", "config.check", "pin.read", "pin.toggle",
                     "meter.calibrate"})
CONFIRM = frozenset({"channel.close", "valve.open", "valve.close", "relay.switch", "pin.toggle"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Dashboard:
    def __init__(self, node: Any, commands: Mapping[str, Command], host: str, port: int,
                 password_file: Path, token: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic, login_lock_s: float = 2.0) -> None:
        self.node = node
        self.commands = commands
        self.host, self.port = host, port
        self.password_file = password_file
        self._token = token
        self._clock = clock
        self.sessions = Sessions()
        self.limiter = LoginLimiter(backoff_s=login_lock_s)
        self.history = MeterHistory()
        self.metrics = Metrics()
        self._clients: set[asyncio.Queue[tuple[str, str] | None]] = set()
        self.events_sent = 0
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=MAX_FORM, middlewares=[self._guard])
        r = app.router
        r.add_get("/login", self._login_page)
        r.add_post("/login", self._login)
        r.add_post("/logout", self._logout)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/metrics", self._metrics)
        r.add_get("/events", self._events)
        r.add_get("/meters/history", self._history)
        r.add_get("/ledger.csv", self._ledger_csv)
        r.add_post("/do/{command}", self._do)
        for path in ("/", "/channels", "/payments", "/meters", "/valves", "/microgrid", "/ledger", "/tools"):
            r.add_get(path, self._page)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise EschatonError(f"[dashboard] listen: cannot listen on {self.host}:{self.port}: "
                                f"{e.strerror}") from None
        if self.port == 0:  # the port the system picked
            self.port = int(self._runner.addresses[0][1])
        return self.url

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        for q in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- live updates ------------------------------------------------------------------------

    def publish(self, kind: str, data: Any) -> None:
        """Hand one event to every live page (on the event loop)."""
        if not self._clients:
            return
        line = json.dumps(data, default=str)
        for q in list(self._clients):
            try:
                q.put_nowait((kind, line))
            except asyncio.QueueFull:  # fell behind: drop it; its browser reconnects
                self._clients.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(QUEUE)
        self._clients.add(q)
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if item is None:
                    break
                await resp.write(f"event: {item[0]}\ndata: {item[1]}\n\n".encode())
                self.events_sent += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(q)
        return resp

    @property
    def live_clients(self) -> int:
        return len(self._clients)

    # --- guards ------------------------------------------------------------------------------

    def _hosts(self) -> set[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        out = {f"{host}:{self.port}"}
        if self.host in ("127.0.0.1", "::1"):
            out.add(f"localhost:{self.port}")
        return out

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self._hosts():
            return _text(421, f"this dashboard answers at {self.url} only")
        if request.method == "POST" and not self._same_origin(request):
            log.warning("dashboard: cross-site POST to %s refused (Origin %s)", request.path,
                        request.headers.get("Origin"))
            return _text(403, "cross-site request refused")
        path = request.path
        if path.startswith("/static/") or path == "/login":
            resp = await handler(request)
        else:
            session = self.sessions.get(request.cookies.get(COOKIE + str(self.port)), self._clock())
            if session is None and path == "/metrics" and self._bearer_ok(request):
                resp = await handler(request)
            elif session is None:
                if request.method == "GET" and path != "/events" and path != "/metrics":
                    raise web.HTTPSeeOther("/login")
                return _text(401 if path == "/metrics" else 403, "log in first")
            else:
                if request.method == "POST":
                    form = await request.post()
                    if not hmac.compare_digest(str(form.get("csrf", "")).encode(), session.csrf.encode()):
                        return _text(403, "missing or wrong CSRF token: reload the page")
                request["session"] = session
                resp = await handler(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        if not path.startswith("/static/"):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            ref = request.headers.get("Referer")
            if ref is None:
                return True  # not a browser (curl, a script): the CSRF token still guards it
            parts = urlsplit(ref)
            origin = f"{parts.scheme}://{parts.netloc}"
        return origin in {f"http://{h}" for h in self._hosts()}

    def _bearer_ok(self, request: web.Request) -> bool:
        token = self._token()
        got = request.headers.get("Authorization", "")
        return bool(token) and hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    # --- login -------------------------------------------------------------------------------

    def _addr(self, request: web.Request) -> str:
        return request.remote or "?"

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        token_only = read_password_file(self.password_file) is None
        return _html(login_page(token_only=token_only))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        addr, now = self._addr(request), self._clock()
        token_only = read_password_file(self.password_file) is None
        wait = self.limiter.wait(addr, now)
        if wait > 0:
            return _html(login_page(f"Too many wrong passwords: try again in {wait:.0f} s.",
                                    token_only=token_only), 429, {"Retry-After": str(int(wait) + 1)})
        form = await request.post()
        password = str(form.get("password", ""))
        who = self._check(password)
        if who is None:
            lock = self.limiter.failed(addr, now)
            log.warning("dashboard: wrong password from %s", addr)
            msg = "Wrong password." + (f" Locked for {lock:.0f} s." if lock else "")
            return _html(login_page(msg, token_only=token_only), 401)
        self.limiter.succeeded(addr)
        s = self.sessions.new(who, now)
        log.info("dashboard: login from %s (%s)", addr, who)
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(COOKIE + str(self.port), s.id, httponly=True, samesite="Strict", path="/")
        raise resp

    def _check(self, password: str) -> str | None:
        if not password:
            return None
        token = self._token()
        if token and hmac.compare_digest(password.encode(), token.encode()):
            return "token"
        stored = read_password_file(self.password_file)
        if stored is not None and verify_password(password, stored):
            return "password"
        return None

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(request["session"].id)
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(COOKIE + str(self.port), path="/")
        raise resp

    # --- pages -------------------------------------------------------------------------------

    async def run(self, name: str, /, **args: Any) -> Any:
        """Run the node's command ``name`` as the API would (validated, same handler)."""
        cmd = self.commands[name]
        return await cmd.fn(self.node, **cmd.validate(args))

    async def _page(self, request: web.Request) -> web.StreamResponse:
        session = request["session"]
        csrf = session.csrf
        path, q = request.path, request.query
        titles = {"/": "Node", "/channels": "Channels", "/payments": "Payments", "/meters": "Meters",
                  "/valves": "Valves and relays", "/microgrid": "Microgrid", "/ledger": "Ledger",
                  "/tools": "Installer tools"}
        try:
            if path == "/":
                body = await views.node_view(self.run, csrf)
            elif path == "/channels":
                body = await views.channels_view(self.run, csrf)
            elif path == "/payments":
                body = await views.payments_view(self.run, csrf, q.get("state", ""), q.get("channel", ""))
            elif path == "/meters":
                body = await views.meters_view(self.run, csrf)
            elif path == "/valves":
                body = await views.valves_view(self.run, csrf)
            elif path == "/microgrid":
                body = await views.microgrid_view(self.run, csrf)
            elif path == "/ledger":
                body = await views.ledger_view(self.run, csrf, q.get("role", "seller"))
            else:
                body = await views.tools_view(self.run, csrf, self._config_summary())
        except EschatonError as e:  # e.g. no [metering] on this node: say so on the page
            body = f'<p class="error">{esc(e)}</p>'
        flash = getattr(session, "flash", "")
        session.flash = ""
        return _html(page(titles[path], path, body, csrf=csrf, flash=flash,
                          node_name=self.node.config.node.name))

    def _config_summary(self) -> dict[str, Any]:
        c = self.node.config
        m = c.metering
        return {"config file": c.source, "datadir": str(c.node.datadir), "dashboard": self.url,
                "chain": f"{c.chain.backend} {c.chain.network}",
                "meters": [f"{x.name} (pin {getattr(x, 'pin', getattr(x, 'port', '?'))})" for x in m.meters]
                if m else [],
                "valves": [f"{v.name} (pins {', '.join(map(str, v.pins))})" for v in m.valves] if m else [],
                "relays": [f"{r.name} (pin {r.pin})" for r in m.relays] if m else []}

    async def _history(self, request: web.Request) -> web.StreamResponse:
        span = request.query.get("span", "hour")
        if span not in TIERS:
            return _text(400, f"span must be one of {', '.join(TIERS)}")
        pts = self.history.series(request.query.get("meter", ""), span)
        return web.json_response({"t": [p[0] for p in pts], "total": [p[1] for p in pts],
                                  "rate": [p[2] for p in pts]})

    async def _ledger_csv(self, request: web.Request) -> web.StreamResponse:
        role = request.query.get("role", "seller")
        try:
            text = await views.ledger_csv(self.run, role)
        except EschatonError as e:
            return _text(400, str(e))
        return web.Response(text=text, content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="ledger-{role}.csv"'})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        snap = Snapshot(status=await self.run("node.status"), channels=await self.run("channel.list"),
                        peers=await self.run("peer.list"),
                        dashboard={"sessions": len(self.sessions), "sse_clients": self.live_clients})
        if getattr(self.node, "metering", None) is not None:
            snap.meters = await self.run("meter.list")
            snap.valves = await self.run("valve.list")
            snap.relays = await self.run("relay.list")
        return web.Response(body=self.metrics.render(snap), headers={"Content-Type": CONTENT_TYPE})

    # --- actions -----------------------------------------------------------------------------

    async def _do(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["command"]
        session = request["session"]
        form = await request.post()
        back = str(form.get("back", "/"))
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        if name not in ACTIONS or name not in self.commands:
            return _text(404, f"no action {name!r}")
        if name in CONFIRM and form.get("confirm") != "yes":
            session.flash = f"{name}: not confirmed, nothing done"
            raise web.HTTPSeeOther(back)
        cmd = self.commands[name]
        try:
            args = {p.name: _typed(p, str(form[p.name])) for p in cmd.params if form.get(p.name, "") != ""}
            result = await cmd.fn(self.node, **cmd.validate(args))
            failed = isinstance(result, dict) and result.get("ok") is False  # config.check's finding
            session.flash = f"{name}: {result['error']}" if failed else f"{name}: done" + _summary(result)
            # A pasted config may hold passwords (rpc_password): its size goes to the journal, not it.
            log.info("dashboard: %s %s", name, {k: (f"<{len(v)} characters>" if k == "text" else v)
                                                for k, v in args.items() if k != "csrf"})
        except (EschatonError, ValueError) as e:
            session.flash = f"{name}: {e}"
        raise web.HTTPSeeOther(back)


def _typed(p: Param, raw: str) -> Any:
    """A form field as the command's declared type (``validate`` then checks it as for the API)."""
    if p.type is bool:
        if raw.lower() in ("true", "on", "yes", "1"):
            return True
        if raw.lower() in ("false", "off", "no", "0"):
            return False
        raise ValueError(f"{p.name} must be true or false")
    if p.type is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"{p.name} must be a whole number") from None
    if p.type is float:
        return float(raw)
    return raw.strip()


def _summary(result: Any) -> str:
    if isinstance(result, dict):
        keys = [k for k in ("payment", "payment_state", "state", "local_sat", "open", "on", "ok", "file", "gpio",
                            "high", "owner", "start_pulses", "pulses", "counts_per_unit", "config_line")
                if k in result]
        return " (" + ", ".join(f"{k} {result[k]}" for k in keys) + ")" if keys else ""
    return ""


def _html(text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def _text(status: int, text: str) -> web.Response:
    return web.Response(text=text + "\n", status=status, content_type="text/plain")
