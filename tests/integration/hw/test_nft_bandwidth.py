"""Bandwidth meters on real nftables in network namespaces, with real forwarded UDP traffic.

The gw namespace forwards between a client and an upstream namespace and holds the table; the
counts are checked against the exact IPv4 bytes the datagrams carried both ways.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from eschaton.metering.bandwidth import BandwidthMeters
from eschaton.metering.journal import TotalsJournal, read_committed
from meter_drivers.nft_bandwidth import (
    BandwidthClient,
    NftBandwidth,
    NftConfigError,
    NftError,
)
from tests.conftest import need_root, need_tool

from .bw_netns import Topo, three_namespaces

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

ALICE = BandwidthClient("alice", ("10.91.1.2",))
BOB = BandwidthClient("bob", ("10.91.1.3", "10.91.3.0/24"))  # 10.91.1.3 exists nowhere
DROP = BandwidthClient("drop", ("10.91.4.0/24",))  # an nft keyword as a client name
CLIENTS = (ALICE, BOB, DROP)


@pytest.fixture
def topo():
    need_root()
    need_tool("nft")
    need_tool("sysctl")
    ip = need_tool("ip")
    with three_namespaces(ip) as t:
        yield t


def test_counts_the_l3_bytes_both_ways_for_the_client_only(topo: Topo) -> None:
    bw = NftBandwidth(CLIENTS, nft=topo.nft)
    assert bw.ensure() == {"alice": 0, "bob": 0, "drop": 0}
    assert bw.created == {"alice", "bob", "drop"}
    ex = topo.udp_exchange(20, 1000, 300)
    assert (ex.up, ex.down) == (20, 20)
    counts = bw.read()
    assert counts == {"alice": 20 * 1028 + 20 * 328, "bob": 0, "drop": 0}
    assert counts["alice"] == ex.l3_bytes
    # ensure() again (a node restart) keeps the counts and still counts afterwards
    again = NftBandwidth(CLIENTS, nft=topo.nft)
    assert again.ensure() == counts
    assert again.created == frozenset()
    ex2 = topo.udp_exchange(3, 1400, 10)
    assert again.read() == {"alice": counts["alice"] + ex2.l3_bytes, "bob": 0, "drop": 0}
    # a client added to the configuration gets its counter; the others keep theirs
    carol = BandwidthClient("carol", ("10.91.5.1",))
    more = NftBandwidth((*CLIENTS, carol), nft=topo.nft)
    assert more.ensure()["carol"] == 0 and more.created == {"carol"}
    assert more.read()["alice"] == counts["alice"] + ex2.l3_bytes


def test_cut_drops_the_clients_traffic_and_restore_lets_it_through(topo: Topo) -> None:
    bw = NftBandwidth(CLIENTS, nft=topo.nft)
    bw.ensure()
    assert not bw.is_cut("alice")
    bw.cut("alice")
    bw.cut("alice")  # idempotent
    assert bw.is_cut("alice") and not bw.is_cut("bob")
    ex = topo.udp_exchange(5, 500, 500, wait=0.2)
    assert (ex.up, ex.down) == (0, 0)
    assert bw.read()["alice"] == 0  # dropped before the counter: cut traffic is not billed
    bw.restore("alice")
    bw.restore("alice")  # idempotent: nothing left to delete
    assert not bw.is_cut("alice")
    ex = topo.udp_exchange(5, 500, 500)
    assert (ex.up, ex.down) == (5, 5)
    assert bw.read()["alice"] == ex.l3_bytes == 5 * 528 * 2
    bw.cut("bob")  # a prefix and an address; alice is unaffected
    assert bw.is_cut("bob") and not bw.is_cut("alice")
    bw.restore("bob")
    assert not bw.is_cut("bob")


def test_totals_survive_restarts_and_a_recreated_table(topo: Topo, tmp_path: Path) -> None:
    seen: list[int] = []

    def record(m: BandwidthMeters) -> int:
        t = m.poll()["alice"]
        assert t == m.total("alice")
        assert not seen or t >= seen[-1], f"total went backwards: {seen} then {t}"
        seen.append(t)
        return t

    journal = tmp_path / "bw"
    m1 = BandwidthMeters(CLIENTS, journal, nft=topo.nft, commit_interval_s=0.001)
    assert record(m1) == 0
    a = topo.udp_exchange(10, 800, 200).l3_bytes
    assert record(m1) == a
    m1.close()
    # counted by the kernel while no meter object exists
    b = topo.udp_exchange(4, 1200, 64).l3_bytes
    with BandwidthMeters(CLIENTS, journal, nft=topo.nft, commit_interval_s=0.001) as m2:
        assert m2.total("alice") == a + b  # made durable when it opened
        assert record(m2) == a + b
        assert m2.poll()["bob"] == 0
        m2.cut("alice")
        # the table vanishes under a running meter (nft flush ruleset, firewall reload) ...
        NftBandwidth(CLIENTS, nft=topo.nft).remove()
        lost = topo.udp_exchange(2, 100, 100)  # no table: forwarded, and counted by nobody
        assert (lost.up, lost.down) == (2, 2)
        # ... the next poll rebuilds it, cut included (fail closed), and keeps the total
        assert record(m2) == a + b
        assert m2.is_cut("alice")
        assert topo.udp_exchange(2, 100, 100, wait=0.2).up == 0
        m2.restore("alice")
        d = topo.udp_exchange(6, 300, 900).l3_bytes
        assert record(m2) == a + b + d
    # reboot: the table is gone while the node is down; the journal carries the total on
    NftBandwidth(CLIENTS, nft=topo.nft).remove()
    with BandwidthMeters(CLIENTS, journal, nft=topo.nft, commit_interval_s=0.001) as m3:
        assert m3.total("alice") == a + b + d
        assert not m3.is_cut("alice")
        e = topo.udp_exchange(3, 50, 50).l3_bytes
        assert record(m3) == a + b + d + e
        m3.cut("alice")
    # a cut made durable is applied again when the table was lost while the node was down
    NftBandwidth(CLIENTS, nft=topo.nft).remove()
    with BandwidthMeters(CLIENTS, journal, nft=topo.nft) as m4:
        assert m4.is_cut("alice")
        assert m4.total("alice") == a + b + d + e
        m4.restore("alice")
    with BandwidthMeters(CLIENTS, journal, nft=topo.nft) as m5:
        assert not m5.is_cut("alice")
        assert record(m5) == a + b + d + e


STRAY = "10.91.1.4"  # a second, unmetered address on the client's interface (BOB has .3)


def _free_ride(topo: Topo) -> None:
    """Without a guard the stray address is forwarded, billed to nobody (the hole)."""
    ex = topo.udp_exchange(2, 100, 100, src=STRAY)
    assert (ex.up, ex.down) == (2, 2)


def test_guard_forwards_only_metered_uncut_clients(topo: Topo, tmp_path: Path) -> None:
    topo.add_address(topo.client, topo.client_dev, f"{STRAY}/24")
    NftBandwidth(CLIENTS, nft=topo.nft).ensure()
    _free_ride(topo)
    assert NftBandwidth(CLIENTS, nft=topo.nft).read() == {"alice": 0, "bob": 0, "drop": 0}
    guard = (topo.gw_client_dev,)
    with BandwidthMeters(CLIENTS, tmp_path / "bw", nft=topo.nft, guard=guard,
                         commit_interval_s=0.001) as m:
        assert m.nft.guard == guard
        # the metered client passes both ways, from either end, and is counted as before
        a = topo.udp_exchange(4, 600, 60)
        assert (a.up, a.down) == (4, 4)
        b = topo.udp_exchange(3, 200, 900, sender=topo.upstream, src="10.91.2.2",
                              receiver=topo.client, dst="10.91.1.2")
        assert (b.up, b.down) == (3, 3)
        counts = {"alice": a.l3_bytes + b.l3_bytes, "bob": 0, "drop": 0}
        assert m.poll() == counts
        # the stray address gets nothing through, neither from it nor to it, and moves no counter
        ex = topo.udp_exchange(3, 500, 500, wait=0.2, src=STRAY)
        assert (ex.up, ex.down) == (0, 0)
        ex = topo.udp_exchange(3, 500, 500, wait=0.2, sender=topo.upstream, src="10.91.2.2",
                               receiver=topo.client, dst=STRAY)
        assert ex.up == 0
        assert m.poll() == counts
        # a cut client cannot escape its cut through another address
        m.cut("alice")
        for src in ("10.91.1.2", STRAY):
            assert topo.udp_exchange(2, 100, 100, wait=0.2, src=src).up == 0
        m.restore("alice")
        c = topo.udp_exchange(2, 100, 100)
        assert (c.up, c.down) == (2, 2)
        assert m.poll()["alice"] == counts["alice"] + c.l3_bytes
        # a poll that rebuilds a vanished table rebuilds the guard with it
        NftBandwidth(CLIENTS, nft=topo.nft).remove()
        m.poll()
        assert topo.udp_exchange(2, 100, 100, wait=0.2, src=STRAY).up == 0
    # the guard goes with the configuration: guard=() rebuilds the table as it was
    NftBandwidth(CLIENTS, nft=topo.nft).ensure()
    _free_ride(topo)


def test_guard_drops_forwarded_ipv6(topo: Topo) -> None:
    topo.add_ipv6()
    NftBandwidth(CLIENTS, nft=topo.nft).ensure()
    ex = topo.udp_exchange(3, 400, 40, src="fd91:1::2", dst="fd91:2::2")
    assert (ex.up, ex.down) == (3, 3)  # forwarded without a guard, and metered by nobody
    assert ex.l3_bytes == 3 * 448 + 3 * 88
    bw = NftBandwidth(CLIENTS, nft=topo.nft, guard=(topo.gw_client_dev,))
    assert bw.read() == {"alice": 0, "bob": 0, "drop": 0}
    bw.ensure()
    ex = topo.udp_exchange(3, 400, 40, wait=0.2, src="fd91:1::2", dst="fd91:2::2")
    assert (ex.up, ex.down) == (0, 0)
    ex = topo.udp_exchange(3, 400, 40, wait=0.2, sender=topo.upstream, src="fd91:2::2",
                           receiver=topo.client, dst="fd91:1::2")
    assert ex.up == 0
    a = topo.udp_exchange(2, 300, 30)  # IPv4 of the metered client still passes, counted
    assert (a.up, a.down) == (2, 2)
    assert bw.read() == {"alice": a.l3_bytes, "bob": 0, "drop": 0}


@pytest.mark.parametrize("guard, words", [
    (("",), "bad interface name"),
    (("a" * 16,), "bad interface name"),
    (("wlan/0",), "bad interface name"),
    (("wlan 0",), "bad interface name"),
    (("wlan0\n",), "bad interface name"),
    ((".",), "bad interface name"),
    (("..",), "bad interface name"),
    (("eth0:1",), "bad interface name"),
    (('eth"0',), "bad interface name"),
    (("eth*",), "bad interface name"),
    ((None,), "bad interface name"),
    ("eth0", "not one string"),
    (("eth0", "eth0"), "guarded twice"),
])
def test_bad_guard_interfaces_are_refused(guard: object, words: str, tmp_path: Path) -> None:
    with pytest.raises(NftConfigError) as e:
        NftBandwidth([ALICE], guard=guard)  # type: ignore[arg-type]
    assert words in str(e.value) and "\n" not in str(e.value).strip()
    with pytest.raises(NftConfigError):
        BandwidthMeters([ALICE], tmp_path / "bw", guard=guard)  # type: ignore[arg-type]
    assert not (tmp_path / "bw").exists()  # refused before anything touched the disk


def test_guard_names_and_the_unguarded_script() -> None:
    long = "a" * 15  # the kernel's longest name
    assert NftBandwidth([ALICE], guard=(long, "bat0", "mesh-wlan.5")).guard == \
        (long, "bat0", "mesh-wlan.5")
    script = NftBandwidth(CLIENTS).script()
    assert "metered" not in script and "ifname" not in script and "ipv6" not in script


CRASHER = """
import sys
from eschaton.metering.bandwidth import BandwidthMeters
from eschaton.metering.journal import TotalsJournal, read_committed
from meter_drivers.nft_bandwidth import BandwidthClient
m = BandwidthMeters([BandwidthClient("alice", ("10.91.1.2",))], sys.argv[1],
                    nft=sys.argv[2:], commit_interval_s=3600)
print(m.total("alice"), flush=True)
sys.stdin.readline()
print(m.poll()["alice"], flush=True)  # the interval holds the commit back: not durable
sys.stdin.readline()
"""


def test_a_crash_before_the_commit_neither_loses_nor_doubles(topo: Topo, tmp_path: Path) -> None:
    """SIGKILL with counted bytes not yet committed: the table kept counting, so the next open
    finds every byte exactly once."""
    journal = tmp_path / "bw"
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(journal), *topo.nft],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=root, env={**os.environ, "PYTHONPATH": f"{root / 'firmware'}:{root}"})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "0"
        a = topo.udp_exchange(5, 700, 70).l3_bytes
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "0"  # durable total: the commit is held back
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    b = topo.udp_exchange(2, 100, 10).l3_bytes
    with BandwidthMeters([ALICE], journal, nft=topo.nft) as m:
        assert m.total("alice") == a + b


@pytest.mark.parametrize("client, words", [
    (BandwidthClient("Alice", ("10.0.0.1",)), "bad client name"),
    (BandwidthClient("-x", ("10.0.0.1",)), "bad client name"),
    (BandwidthClient("a" * 32, ("10.0.0.1",)), "bad client name"),
    (BandwidthClient("a.b", ("10.0.0.1",)), "bad client name"),
    (BandwidthClient("alice\n", ("10.0.0.1",)), "bad client name"),
    (BandwidthClient("alice", ()), "at least one"),
    (BandwidthClient("alice", "10.0.0.1"), "at least one"),  # type: ignore[arg-type]
    (BandwidthClient("alice", ("10.0.0.300",)), "bad address '10.0.0.300'"),
    (BandwidthClient("alice", ("10.0.0.1/24",)), "has host bits set"),
    (BandwidthClient("alice", ("fe80::1",)), "only IPv4"),
    (BandwidthClient("alice", ("10.0.0.0/24", "10.0.0.7")), "overlaps"),
])
def test_bad_clients_are_refused_with_a_clear_message(client: BandwidthClient,
                                                      words: str) -> None:
    with pytest.raises(NftConfigError) as e:
        NftBandwidth([client])
    assert words in str(e.value) and "\n" not in str(e.value).strip()


def test_overlaps_and_duplicates_across_clients_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NftConfigError, match="overlaps .*clients 'big' and 'alice'"):
        NftBandwidth([BandwidthClient("alice", ("10.91.1.2",)),
                      BandwidthClient("big", ("10.91.0.0/16",))])
    with pytest.raises(NftConfigError, match="configured twice"):
        NftBandwidth([ALICE, ALICE])
    with pytest.raises(NftConfigError, match="bad table name"):
        NftBandwidth([ALICE], table="bad table")
    with pytest.raises(NftConfigError):
        BandwidthMeters([BandwidthClient("a b", ("10.0.0.1",))], tmp_path / "bw")
    assert not (tmp_path / "bw").exists()  # refused before anything touched the disk


def test_nft_missing_or_failing_raises_nft_error_with_its_message(tmp_path: Path) -> None:
    ip = need_tool("ip")
    need_root()
    with pytest.raises(NftError, match="cannot run '/nonexistent/nft'"):
        NftBandwidth([ALICE], nft=("/nonexistent/nft",)).ensure()
    gone = (ip, "netns", "exec", "escbw-no-such-namespace", "nft")
    with pytest.raises(NftError, match='Cannot open network namespace "escbw-no-such-namespace"'):
        NftBandwidth([ALICE], nft=gone).ensure()
    with pytest.raises(NftError, match="nft failed"):
        NftBandwidth([ALICE], nft=gone).read()
    with pytest.raises(NftError, match="Cannot open network namespace"):
        BandwidthMeters([ALICE], tmp_path / "bw", nft=gone)
    # the failed open released the journal: a second attempt gets the same nft error, not "in use"
    with pytest.raises(NftError, match="Cannot open network namespace"):
        BandwidthMeters([ALICE], tmp_path / "bw", nft=gone)


def test_unknown_client_and_missing_table(topo: Topo) -> None:
    bw = NftBandwidth([ALICE], nft=topo.nft)
    with pytest.raises(NftError, match="No such file or directory"):
        bw.read()  # nothing installed yet
    bw.ensure()
    with pytest.raises(NftConfigError, match="no such bandwidth client"):
        bw.cut("mallory")
    bw.remove()
    with pytest.raises(NftError, match="No such file or directory"):
        bw.is_cut("alice")


@pytest.fixture
def gw_ns():
    """One empty namespace: enough for the rules that need a table but no traffic."""
    need_root()
    need_tool("nft")
    ip = need_tool("ip")
    ns = f"escbw-{uuid.uuid4().hex[:6]}-r"
    subprocess.run([ip, "netns", "add", ns], check=True, capture_output=True, timeout=10)
    try:
        yield (ip, "netns", "exec", ns, "nft")
    finally:
        subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=10)


def _seed(journal: Path, totals: dict[str, int]) -> None:
    """A journal as a previous run (or a crash at a given point) left it."""
    with TotalsJournal(journal) as j:
        j.maybe_commit(totals, force=True)


def _kernel(nft: tuple[str, ...], nbytes: int) -> None:
    """A table whose counter already holds ``nbytes`` (it counted while no meter ran)."""
    subprocess.run([*nft, "add", "table", "inet", "eschaton_bw"], check=True, timeout=10)
    subprocess.run([*nft, "add", "counter", "inet", "eschaton_bw", "bw_alice",
                    f"{{ packets 1 bytes {nbytes} }}"], check=True, timeout=10)


@pytest.mark.parametrize("journal_state, kernel, total, base", [
    # same counter, it counted 100 bytes while the node was down: counted once
    ({"alice": 1000, "alice.base": 400}, 700, 1100, 400),
    # counter below what the journal saw: a new table; bytes since it was made are added
    ({"alice": 1000, "alice.base": 400}, 500, 1500, 1000),
    # no table at all (reboot): created now, the total carries on from the journal
    ({"alice": 1000, "alice.base": 400}, None, 1000, 1000),
    # a crash right after a rebase committed the new base alone: K_then = 0
    ({"alice": 1000, "alice.base": 1000}, 30, 1030, 1000),
    # a crash after step 1 of a rebase (total for the old counter durable, old base)
    ({"alice": 1000, "alice.base": 400}, 0, 1000, 1000),
    # a journal that never saw the client adopts the kernel's count
    ({}, 700, 700, 0),
    # an impossible journal (base above total) is read as a new counter, never backwards
    ({"alice": 1000, "alice.base": 1200}, 50, 1050, 1000),
])
def test_opening_rules(gw_ns: tuple[str, ...], tmp_path: Path, journal_state: dict[str, int],
                       kernel: int | None, total: int, base: int) -> None:
    journal = tmp_path / "bw"
    _seed(journal, journal_state)
    if kernel is not None:
        _kernel(gw_ns, kernel)
    with BandwidthMeters([ALICE], journal, nft=gw_ns) as m:
        assert m.total("alice") == total
        assert m.poll()["alice"] == total
    committed = read_committed(journal)
    assert committed["alice"].total == total
    assert committed["alice.base"].total == base
    assert committed["alice.cut"].total == 0


def test_a_counter_reset_under_a_running_meter_is_rebased(gw_ns: tuple[str, ...],
                                                          tmp_path: Path) -> None:
    _kernel(gw_ns, 700)
    with BandwidthMeters([ALICE], tmp_path / "bw", nft=gw_ns, commit_interval_s=0.001) as m:
        assert m.poll()["alice"] == 700
        subprocess.run([*gw_ns, "reset", "counter", "inet", "eschaton_bw", "bw_alice"],
                       check=True, capture_output=True, timeout=10)
        assert m.poll()["alice"] == 700  # 0 now: a new count from here, not a loss
        subprocess.run([*gw_ns, "delete", "table", "inet", "eschaton_bw"], check=True, timeout=10)
        _kernel(gw_ns, 50)  # someone else rebuilt it and it has counted 50 bytes since
        assert m.poll()["alice"] == 750
    assert read_committed(tmp_path / "bw")["alice"].total == 750
