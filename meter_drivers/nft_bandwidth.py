"""Bandwidth meters and gates in the kernel: one nftables table of per-client byte counters.

Rules / theory of operation:
- The kernel counts bytes; Python only reads the counters. Every forwarded IPv4 packet whose source
  or destination lies in a client's addresses bumps that client's named counter (upload and
  download on one counter). Counters count L3 bytes (IP header included, no Ethernet header), and
  we bill bytes, never packets: with GSO a "packet" can be a 64 KiB super-packet.
- Layout, all in ``table inet <table>`` and written by ONE ``nft -f -`` script (atomic: the
  kernel applies all of it or none of it):
    * counter ``bw_<client>`` per client. The prefix keeps client names that are nft keywords
      (``drop``, ``counter``) or start with a digit parseable: nft 1.0.6 accepts neither quoted
      nor digit-led object names;
    * set ``cut`` (``ipv4_addr``, ``flags interval``): addresses of clients that are cut off;
    * map ``clients`` (``ipv4_addr : counter``, ``flags interval``): address or prefix -> counter.
      One map lookup per packet instead of one rule per client, so the cost does not grow with
      the number of clients;
    * chain ``forward`` (hook forward, priority filter, policy accept): ``ip saddr @cut drop``,
      ``ip daddr @cut drop`` FIRST (cut traffic is neither forwarded nor billed), then
      ``counter name ip saddr map @clients`` and the same for ``daddr``.
- ``ensure()`` is idempotent and never zeroes a counter: ``add counter`` on an existing counter
  keeps its value, so a table that outlived the node (the kernel kept counting while the node was
  down) keeps its counts. The chain and the map are flushed and rebuilt inside the same
  transaction (so a changed client list takes effect) while the set ``cut`` is left alone (cut
  clients stay cut across a restart). Counters of clients no longer configured stay in the table,
  unreferenced, so their counts survive a configuration slip.
- Client addresses must not overlap, within a client or across clients: one byte is billed to
  one client, and an interval map or set refuses overlapping elements anyway.
- IPv4 only: the set and map are ``ipv4_addr``; IPv6 forwarding is not metered here.
- Guarded interfaces fail closed. Metering only the configured addresses would let a neighbour
  who sets another, unmetered IPv4 address (or speaks IPv6) be forwarded for free, and let a cut
  client escape its cut the same way. So for every interface in ``guard`` (the interfaces the
  node sells bandwidth on) the chain ends, AFTER the cut and counting rules (metered clients are
  counted exactly as without a guard), with:
    * ``iifname <if> ip saddr != @metered drop`` and ``oifname <if> ip daddr != @metered drop``:
      forwarded IPv4 into or out of the interface must be from or to a metered client;
    * ``iifname <if> meta nfproto ipv6 drop`` and the same for ``oifname``: IPv6 is not metered,
      so none of it is forwarded across the interface.
  ``metered`` (``ipv4_addr``, ``flags interval``) holds every client prefix; it is flushed and
  refilled with the chain and the map in the same ``ensure()`` transaction, so a changed client
  list can never meet a stale set. A cut client is dropped by the cut rules before it reaches
  the guard. The guard touches only the forward hook: ARP and batman-adv frames are not forwarded
  IPv4/IPv6, and traffic to or from the node itself (input/output hooks: its mesh links, its
  API, its peers) is unaffected. With no guarded interface no guard rule is written (exactly
  the unguarded layout; a ``metered`` set left by an earlier guarded run stays, unreferenced). Interface names are validated like the kernel does (1-15
  characters, no '/', ':' or whitespace, not "." or ".."), and additionally refused when they
  hold '"', '\\' or '*' (nft could not quote them, or would read a wildcard) or are not
  printable.
- We drive the ``nft`` CLI through subprocess and parse its JSON (``nft -j``) instead of using
  the ``nftables`` Python binding: Debian's python3-nftables works only under /usr/bin/python3,
  not from the project's venv. The command prefix is configurable so a test can run
  ``ip netns exec <ns> nft``.
"""
from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eschaton.errors import LocalError
from meter_drivers.base import MeterError

IFNAMSIZ = 16  # the kernel's limit, including the terminating NUL
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,30}$")
TABLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
COUNTER_PREFIX = "bw_"
_TIMEOUT_S = 10.0


class NftError(MeterError):
    """nft failed or is unusable; the message says what nft said (its stderr)."""


class NftConfigError(NftError, LocalError):
    """A client or table definition is invalid (bad name, bad or overlapping address)."""


Network = ipaddress.IPv4Network


@dataclass(frozen=True, slots=True)
class BandwidthClient:
    """One neighbour whose forwarded traffic is metered (and can be cut)."""

    name: str
    """Meter name, ``[a-z0-9][a-z0-9_-]{0,30}``; names the client's nft counter."""
    addresses: tuple[str, ...]
    """IPv4 addresses or CIDR prefixes (host bits zero) on the client's side; at least one."""


def _networks(client: BandwidthClient) -> tuple[Network, ...]:
    if not isinstance(client.name, str) or not NAME_RE.fullmatch(client.name):
        raise NftConfigError(str(client.name),
                             "bad client name: use [a-z0-9][a-z0-9_-]{0,30}")
    if isinstance(client.addresses, str) or not client.addresses:
        raise NftConfigError(client.name, "needs a tuple of at least one IPv4 address or prefix")
    nets: list[Network] = []
    for a in client.addresses:
        try:
            net = ipaddress.ip_network(a, strict=True)
        except (ValueError, TypeError) as e:
            raise NftConfigError(client.name, f"bad address {a!r}: {e}") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise NftConfigError(client.name, f"bad address {a!r}: only IPv4 is metered")
        nets.append(net)
    return tuple(nets)


def check_interface(name: object) -> None:
    """Raise ``NftConfigError`` unless ``name`` can name a guarded interface: the kernel's
    dev_valid_name(), plus what cannot be written into an nft rule verbatim."""
    ok = (isinstance(name, str) and 0 < len(name) < IFNAMSIZ and name not in (".", "..")
          and name.isprintable() and not any(ch.isspace() or ch in '/:"\\*' for ch in name))
    if not ok:
        raise NftConfigError(str(name), f"bad interface name {name!r}: 1-15 printable "
                                        "characters, no '/', ':', '\"', '\\', '*' or "
                                        "whitespace, not '.' or '..'")


def _interfaces(guard: Sequence[str]) -> tuple[str, ...]:
    if isinstance(guard, str):
        raise NftConfigError(guard, "guard must be a sequence of interface names, not one string")
    out: list[str] = []
    for name in guard:
        check_interface(name)
        if name in out:
            raise NftConfigError(name, "interface guarded twice")
        out.append(name)
    return tuple(out)


def _check_overlaps(nets: dict[str, tuple[Network, ...]]) -> None:
    flat = sorted(((n, name) for name, ns in nets.items() for n in ns),
                  key=lambda x: (int(x[0].network_address), -x[0].prefixlen))
    # Sorted by start address, b overlaps a exactly when it starts before a ends (few
    # addresses per node: quadratic in the worst case is fine).
    for i, (a, an) in enumerate(flat):
        for b, bn in flat[i + 1:]:
            if int(b.network_address) > int(a.broadcast_address):
                break
            who = f"client {an!r}" if an == bn else f"clients {an!r} and {bn!r}"
            raise NftConfigError(bn, f"address {b} overlaps {a} ({who}): a byte is billed to "
                                     "one client only")


def _elem_network(elem: Any) -> Network | None:
    """A set element from ``nft -j`` (``"1.2.3.4"``, ``{"prefix": ...}``) as a network."""
    try:
        if isinstance(elem, dict) and "elem" in elem:  # element with per-element options
            elem = elem["elem"]["val"]
        if isinstance(elem, str):
            return ipaddress.IPv4Network(elem)
        if isinstance(elem, dict) and "prefix" in elem:
            p = elem["prefix"]
            return ipaddress.IPv4Network(f"{p['addr']}/{p['len']}")
        if isinstance(elem, dict) and "range" in elem:
            lo, hi = (ipaddress.IPv4Address(x) for x in elem["range"])
            nets = list(ipaddress.summarize_address_range(lo, hi))
            return nets[0] if len(nets) == 1 else None
    except (ValueError, KeyError, TypeError):
        return None
    return None


class NftBandwidth:
    """The kernel side: install, read, cut and restore per-client byte counters."""

    def __init__(self, clients: Sequence[BandwidthClient], *, table: str = "eschaton_bw",
                 nft: Sequence[str] = ("nft",), guard: Sequence[str] = ()) -> None:
        if not isinstance(table, str) or not TABLE_RE.fullmatch(table):
            raise NftConfigError(str(table), "bad table name: use [a-z][a-z0-9_]{0,30}")
        if isinstance(nft, str) or not nft:
            raise NftConfigError(table, "nft must be a non-empty command prefix sequence")
        nets: dict[str, tuple[Network, ...]] = {}
        for c in clients:
            if not isinstance(c, BandwidthClient):
                raise NftConfigError(table, f"not a BandwidthClient: {c!r}")
            if c.name in nets:
                raise NftConfigError(c.name, "client configured twice")
            nets[c.name] = _networks(c)
        _check_overlaps(nets)
        self.guard = _interfaces(guard)
        """Interfaces on which only metered, uncut clients are forwarded (see the rules)."""
        self.table = table
        self.nft = tuple(nft)
        self.clients = tuple(clients)
        self._nets = nets
        self.created: frozenset[str] = frozenset()
        """Clients whose counters the last ``ensure()`` created (did not exist before it)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._nets)

    # -- the nft CLI -----------------------------------------------------------------------
    def _run(self, args: Sequence[str], script: str | None = None) -> str:
        cmd = [*self.nft, *args]
        try:
            p = subprocess.run(cmd, input=script, capture_output=True, text=True,
                               timeout=_TIMEOUT_S, check=False)
        except FileNotFoundError as e:
            raise NftError(self.table, f"cannot run {cmd[0]!r}: {e.strerror}") from None
        except PermissionError as e:
            raise NftError(self.table, f"cannot run {cmd[0]!r}: {e.strerror}") from None
        except subprocess.TimeoutExpired:
            raise NftError(self.table, f"{' '.join(cmd)} did not finish in {_TIMEOUT_S:g} s") \
                from None
        if p.returncode != 0:
            msg = " | ".join(line.strip() for line in p.stderr.splitlines() if line.strip())
            raise NftError(self.table, f"nft failed (exit {p.returncode}): "
                                       f"{msg or 'no error message'}")
        return p.stdout

    def _json(self, args: Sequence[str]) -> list[dict[str, Any]]:
        out = self._run(["-j", *args])
        try:
            doc = json.loads(out)
            items = doc["nftables"]
            if not isinstance(items, list):
                raise TypeError("nftables is not a list")
        except (ValueError, KeyError, TypeError) as e:
            raise NftError(self.table, f"unreadable JSON from nft -j {' '.join(args)}: {e}") \
                from None
        return [i for i in items if isinstance(i, dict)]

    def _counters(self) -> dict[str, int]:
        """Every ``bw_*`` counter of the table, by client name: ONE nft call."""
        out: dict[str, int] = {}
        for item in self._json(["list", "counters", "table", "inet", self.table]):
            c = item.get("counter")
            if not isinstance(c, dict):
                continue
            name = c.get("name")
            if isinstance(name, str) and name.startswith(COUNTER_PREFIX):
                b = c.get("bytes")
                if not isinstance(b, int) or b < 0:
                    raise NftError(self.table, f"counter {name!r} has no byte count: {c!r}")
                out[name[len(COUNTER_PREFIX):]] = b
        return out

    def _cut_set(self) -> set[Network]:
        out: set[Network] = set()
        for item in self._json(["list", "set", "inet", self.table, "cut"]):
            s = item.get("set")
            if isinstance(s, dict):
                for e in s.get("elem", []) or []:
                    n = _elem_network(e)
                    if n is not None:
                        out.add(n)
        return out

    def _addrs(self, name: str) -> tuple[Network, ...]:
        try:
            return self._nets[name]
        except KeyError:
            raise NftConfigError(name, "no such bandwidth client") from None

    # -- API -------------------------------------------------------------------------------
    def script(self) -> str:
        """The ``nft -f`` script ``ensure()`` applies (for inspection and the bench)."""
        t = f"inet {self.table}"
        lines = [f"add table {t}"]
        lines += [f"add counter {t} {COUNTER_PREFIX}{n}" for n in self._nets]
        lines += [
            f"add set {t} cut {{ type ipv4_addr; flags interval; }}",
            f"add map {t} clients {{ type ipv4_addr : counter; flags interval; }}",
            f"add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}",
            f"flush chain {t} forward",
            f"flush map {t} clients",
        ]
        elems = [f'{net} : "{COUNTER_PREFIX}{n}"' for n, nets in self._nets.items() for net in nets]
        if elems:
            lines.append(f"add element {t} clients {{ {', '.join(elems)} }}")
        if self.guard:
            lines += [f"add set {t} metered {{ type ipv4_addr; flags interval; }}",
                      f"flush set {t} metered"]
            nets = [net for ns in self._nets.values() for net in ns]
            if nets:
                lines.append(f"add element {t} metered {{ {self._elements(nets)} }}")
        lines += [
            f"add rule {t} forward ip saddr @cut drop",
            f"add rule {t} forward ip daddr @cut drop",
            f"add rule {t} forward counter name ip saddr map @clients",
            f"add rule {t} forward counter name ip daddr map @clients",
        ]
        for dev in self.guard:  # after the counting rules: metered clients are counted as ever
            lines += [
                f'add rule {t} forward iifname "{dev}" ip saddr != @metered drop',
                f'add rule {t} forward oifname "{dev}" ip daddr != @metered drop',
                f'add rule {t} forward iifname "{dev}" meta nfproto ipv6 drop',
                f'add rule {t} forward oifname "{dev}" meta nfproto ipv6 drop',
            ]
        return "\n".join(lines) + "\n"

    def ensure(self) -> dict[str, int]:
        """Create the table or complete an existing one (keeping its counts); current bytes."""
        try:
            before = set(self._counters())
        except NftError as e:
            # Only "no such table" may mean "all counters are new": calling an existing counter
            # new would make BandwidthMeters count its bytes twice. (If nft itself is missing,
            # the message differs and we raise here; a missing namespace reads ENOENT too, and
            # the script below fails with the same message.)
            if "No such file or directory" not in str(e):
                raise
            before = set()
        self._run(["-f", "-"], self.script())
        self.created = frozenset(n for n in self._nets if n not in before)
        return self.read()

    def read(self) -> dict[str, int]:
        """Bytes counted so far for every configured client (ONE ``nft -j list counters``)."""
        counters = self._counters()
        missing = [n for n in self._nets if n not in counters]
        if missing:
            raise NftError(self.table, f"no counter for {', '.join(missing)} "
                                       "(table changed under us? call ensure())")
        return {n: counters[n] for n in self._nets}

    def _elements(self, nets: Iterable[Network]) -> str:
        return ", ".join(str(n) if n.prefixlen < 32 else str(n.network_address) for n in nets)

    def cut(self, name: str) -> None:
        """Drop the client's forwarded traffic both ways (idempotent)."""
        nets = self._addrs(name)
        # Re-adding an existing element is accepted by nft (add, not create).
        self._run(["-f", "-"], f"add element inet {self.table} cut {{ {self._elements(nets)} }}\n")

    def restore(self, name: str) -> None:
        """Let the client's traffic through again (idempotent: absent elements are fine)."""
        nets = self._addrs(name)
        present = self._cut_set()
        gone = [n for n in nets if n in present]
        if gone:  # deleting an absent element is an error in nft 1.0.6 (no `destroy` yet)
            self._run(["-f", "-"],
                      f"delete element inet {self.table} cut {{ {self._elements(gone)} }}\n")

    def is_cut(self, name: str) -> bool:
        """True when every address of the client is in the cut set."""
        nets = self._addrs(name)
        present = self._cut_set()
        return all(n in present for n in nets)

    def remove(self) -> None:
        """Delete the whole table (uninstall; tests). Counts and cuts are gone with it."""
        self._run(["delete", "table", "inet", self.table])
