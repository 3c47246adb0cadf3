"""The village: node processes on loopback sharing one embedded chain, their configs and flows.

Rules / theory of operation:
- Every node is a separate ``eschaton node run`` process in its own process group, with
  ``PR_SET_PDEATHSIG`` so it gets SIGTERM even if this driver is killed. ``stop()`` sends
  SIGTERM to each group, waits, then SIGKILLs what is left and reaps it: no strays.
- The gateway starts first and owns the chain (``[chain] datadir`` shared by all); the houses
  connect to it over Electrum. Node keys are created before start, so every config can name
  its peers by node id; buyers dial their sellers as static peers (no broadcast needed).
- Meters are gpiozero mock pins driven inside the seller's process (``eschaton.demo.flows``);
  the driver steers them only through the flows control file.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eschaton.errors import LocalError, TransientError

PR_SET_PDEATHSIG = 1


class DemoError(LocalError):
    pass


@dataclass
class Sale:
    """One metered connection: ``seller``'s meter feeding ``buyer``."""

    seller: str
    buyer: str
    meter: str
    pin: int
    kind: str  # "water" | "electricity"
    hz: float
    price_msat: int
    credit_limit_sat: int
    valve_pin: int | None = None
    relay_pin: int | None = None
    pay_interval_ms: int = 2000

    @property
    def cut(self) -> str:
        return "v-" + self.meter if self.kind == "water" else "r-" + self.meter


@dataclass
class House:
    name: str
    label: str
    datadir: Path = Path()
    port: int = 0
    node_id: str = ""
    config: Path = Path()
    flows: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path = Path()
    sells: list[Sale] = field(default_factory=list)
    buys: list[Sale] = field(default_factory=list)
    bulk: dict[str, Any] | None = None
    extra_toml: str = ""  # appended to the node's config (e.g. a [dashboard] section)


def default_village() -> tuple[list[House], list[Sale]]:
    """House 2 pumps water to houses 1 and 3; house 3 sells solar power to house 1."""
    houses = [House("gateway", "Gateway (chain)"), House("house1", "House 1 (Amara)"),
              House("house2", "House 2 (pump)"), House("house3", "House 3 (solar)")]
    sales = [
        # 450 pulses per litre (YF-S201): 90 Hz = 0.2 L/s; 50 sat per litre -> 10 sat/s
        Sale("house2", "house1", "h2-water-h1", 17, "water", 90.0, 50_000, 80, valve_pin=23),
        Sale("house2", "house3", "h2-water-h3", 27, "water", 45.0, 50_000, 80, valve_pin=24),
        # S0 meter, 1000 impulses per kWh: 4 Hz = 4 Wh/s; 1000 sat per kWh -> 4 sat/s
        Sale("house3", "house1", "h3-power-h1", 17, "electricity", 4.0, 1_000_000, 40,
             relay_pin=26),
    ]
    by = {h.name: h for h in houses}
    for s in sales:
        by[s.seller].sells.append(s)
        by[s.buyer].buys.append(s)
    by["house2"].bulk = {"meter": "h2-pump", "pin": 22, "extra_hz": 30.0}
    return houses, sales


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _meter_toml(s: Sale) -> str:
    if s.kind == "water":
        return (f'[[meter]]\nname = "{s.meter}"\ntype = "pulse_flow"\npin = {s.pin}\n'
                f'pulses_per_litre = 450\n\n[[valve]]\nname = "{s.cut}"\ntype = "solenoid_nc"\n'
                f'pin = {s.valve_pin}\nmeter = "{s.meter}"\nsettle_s = 2\nleak_pulses = 50\n\n')
    return (f'[[meter]]\nname = "{s.meter}"\ntype = "s0_energy"\npin = {s.pin}\n'
            f'impulses_per_kwh = 1000\n\n[[relay]]\nname = "{s.cut}"\npin = {s.relay_pin}\n'
            f'contact = "no"\nmeter = "{s.meter}"\n\n')


def write_configs(base: Path, houses: list[House], chain_dir: Path) -> None:
    from eschaton.net.identity import create_identity

    by = {h.name: h for h in houses}
    for h in houses:
        h.datadir = base / h.name
        h.port = free_port()
        h.node_id = create_identity(h.datadir).node_id.hex()
        h.config = h.datadir / "node.toml"
        h.log = h.datadir / "node.log"
    for h in houses:
        t = [f'[node]\ndatadir = "{h.datadir}"\nname = "{h.name}"\n\n',
             f'[network]\nlisten = ["tcp://127.0.0.1:{h.port}"]\n\n',
             '[network.discovery]\nenabled = false\n\n']
        for seller in sorted({s.seller for s in h.buys}):
            p = by[seller]
            t.append(f'[[network.peers]]\nid = "{p.node_id}"\nurl = "tcp://127.0.0.1:{p.port}"\n'
                     f'name = "{p.name}"\n\n')
        t.append(f'[chain]\ndatadir = "{chain_dir}"\n\n')
        if h.sells:
            t.append('[hardware]\nbackend = "mock"\n\n[metering]\ncommit_interval_s = 1.0\n\n')
            for s in h.sells:
                t.append(_meter_toml(s))
            if h.bulk:
                t.append(f'[[meter]]\nname = "{h.bulk["meter"]}"\ntype = "pulse_flow"\n'
                         f'pin = {h.bulk["pin"]}\npulses_per_litre = 450\n\n')
        if h.sells or h.buys:
            t.append('[microgrid]\nreading_interval_s = 0.25\n\n')
        for s in h.sells:
            unit, base_unit = ("litre", "mL") if s.kind == "water" else ("kWh", "Wh")
            cut = f'valve = "{s.cut}"' if s.kind == "water" else f'relay = "{s.cut}"'
            t.append(f'[[microgrid.sell]]\nmeter = "{s.meter}"\n{cut}\nbuyer = "{by[s.buyer].node_id}"\n'
                     f'service = "{s.kind}"\nunit = "{unit}"\nbase_unit = "{base_unit}"\n'
                     f'price_msat = {s.price_msat}\ncredit_limit_sat = {s.credit_limit_sat}\n'
                     f'pay_interval_ms = {s.pay_interval_ms}\n\n')
        for seller in sorted({s.seller for s in h.buys}):
            t.append(f'[[microgrid.buy]]\nseller = "{by[seller].node_id}"\n'
                     f'max_price_msat = 2000000\nmax_credit_limit_sat = 1000\n\n')
        if h.bulk:
            down = ", ".join(f'"{s.meter}"' for s in h.sells if s.kind == "water")
            t.append(f'[[microgrid.loss]]\nbulk = "{h.bulk["meter"]}"\ndownstream = [{down}]\n'
                     'window_s = 8\nalarm_units = 300\nalarm_ppm = 80000\nclear_units = 100\n'
                     'clear_ppm = 20000\n\n')
        h.config.write_text("".join(t) + h.extra_toml)
        if h.sells:
            flows: list[dict[str, Any]] = []
            for s in h.sells:
                f: dict[str, Any] = {"name": s.meter, "pin": s.pin, "hz": s.hz}
                f["valve" if s.kind == "water" else "relay"] = s.cut
                flows.append(f)
            if h.bulk:
                flows.append({"name": h.bulk["meter"], "pin": h.bulk["pin"], "hz": 0.0,
                              "sum_of": [s.meter for s in h.sells if s.kind == "water"],
                              "extra_hz": h.bulk["extra_hz"]})
            h.flows = h.datadir / "flows.json"
            h.flows.write_text(json.dumps(flows, indent=1))


def set_flows(h: House, **ctl: bool) -> None:
    """Steer a seller's emulated pipes (see ``eschaton.demo.flows``)."""
    if h.flows is None:
        return
    p = Path(str(h.flows) + ".ctl")
    cur = json.loads(p.read_text()) if p.exists() else {}
    cur.update(ctl)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(cur))
    os.replace(tmp, p)


def _pdeathsig() -> None:
    """In the child: SIGTERM when the parent dies, so a killed driver leaves no nodes."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_node(h: House, env_extra: dict[str, str] | None = None) -> None:
    env = dict(os.environ)
    env["GPIOZERO_PIN_FACTORY"] = "mock"
    env.update(env_extra or {})
    # A seller's emulated pipes run in its node process (the mock pins live there).
    cmd = [sys.executable, "-m", "eschaton", "node", "run", "--config", str(h.config)] if h.flows is None else \
        [sys.executable, "-m", "eschaton.demo.node_process", "--config", str(h.config), "--flows", str(h.flows)]
    logf = open(h.log, "ab")  # noqa: SIM115 - handed to the child; closed below
    try:
        h.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=_pdeathsig)
    finally:
        logf.close()


def stop_node(h: House, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
    p = h.proc
    if p is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        rc = p.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)  # anything the node left in its group
    h.proc = None
    return rc


def stop_all(houses: list[House]) -> None:
    # Houses first (they use the gateway's chain), then the gateway. SIGTERM to all at once.
    running = [h for h in houses if h.proc is not None]
    for h in running:
        if h.name != "gateway":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(h.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
    for h in running:
        if h.name != "gateway":
            stop_node(h)
    for h in running:
        if h.name == "gateway":
            stop_node(h)


async def api(h: House, name: str, **params: Any) -> Any:
    from eschaton.api.client import call_async

    return await call_async(h.datadir, name, params, timeout=60.0)


async def wait_ready(h: House, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        if h.proc is not None and h.proc.poll() is not None:
            tail = h.log.read_text(errors="replace")[-2000:] if h.log.exists() else ""
            raise DemoError(f"{h.name} exited with {h.proc.returncode} while starting:\n{tail}")
        try:
            st: dict[str, Any] = await api(h, "node.status")
            return st
        except TransientError:
            pass
        except Exception as e:  # the API server may half-answer while it starts
            if time.monotonic() > deadline:
                raise DemoError(f"{h.name} did not start: {e}") from e
        if time.monotonic() > deadline:
            raise DemoError(f"{h.name} did not start within {timeout:.0f}s (see {h.log})")
        await asyncio.sleep(0.2)


class Chain:
    """The driver's Electrum connection to the gateway's chain (to mine blocks)."""

    def __init__(self, chain_dir: Path) -> None:
        self.dir = chain_dir
        self.client: Any = None

    async def __aenter__(self) -> Chain:
        from eschaton.chain.open import open_chain

        self.client = await open_chain(self.dir, serve=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()

    async def mine(self, n: int, address: str | None = None) -> None:
        from eschaton.core.script import address_to_script

        await self.client.mine(n, address_to_script(address, "regtest") if address else None)


def clean(base: Path) -> None:
    if base.exists():
        shutil.rmtree(base, ignore_errors=True)
