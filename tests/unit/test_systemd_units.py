"""The shipped unit files pass ``systemd-analyze verify``."""
from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need_tool

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"


def test_service_unit_verifies(tmp_path: Path) -> None:
    need_tool("systemd-analyze")
    unit = (SYSTEMD / "eschaton.service").read_text()
    # verify checks that ExecStart exists; point it at this venv's console script.
    exe = Path(sys.executable).parent / "eschaton"
    assert exe.exists()
    assert "ExecStart=/opt/eschaton/venv/bin/eschaton " in unit
    unit = unit.replace("/opt/eschaton/venv/bin/eschaton", str(exe))
    (tmp_path / "eschaton.service").write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "eschaton.service")],
                       capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "eschaton.service" in line and "Failed to" not in line.split(":", 1)[0]]
    assert r.returncode == 0, r.stdout + r.stderr
    assert not problems, "\n".join(problems)


def test_sysusers_and_tmpfiles_parse(tmp_path: Path) -> None:
    need_tool("systemd-sysusers")
    r = subprocess.run(["systemd-sysusers", "--dry-run", f"--root={tmp_path}",
                        str(SYSTEMD / "eschaton.sysusers.conf")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if shutil.which("systemd-tmpfiles"):
        # --root keeps it off the host; it must not complain about the syntax.
        r = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                            str(SYSTEMD / "eschaton.tmpfiles.conf")], capture_output=True, text=True, timeout=60)
        assert "Failed to parse" not in r.stderr and "Unknown" not in r.stderr, r.stderr


def _unit_values(key: str) -> list[str]:
    """Every ``key=`` value of the service unit, in order (systemd's simple line syntax)."""
    out = []
    for line in (SYSTEMD / "eschaton.service").read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            out.append(v.strip())
    return out


def exposure(unit: Path) -> float:
    """``systemd-analyze security --offline=yes``'s overall exposure of ``unit`` (0 best, 10 worst)."""
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m is not None, r.stdout + r.stderr
    return float(m.group(1))


def test_service_sandbox_exposure_is_at_most_2_5() -> None:
    need_tool("systemd-analyze")
    score = exposure(SYSTEMD / "eschaton.service")
    print(f"systemd-analyze security: {score}")
    assert score <= 2.5


def test_sandbox_keeps_what_the_node_needs() -> None:
    """Each hardening line has a feature that depends on it staying open."""
    assert _unit_values("DevicePolicy") == ["closed"]
    allowed = {v.split()[0] for v in _unit_values("DeviceAllow")}
    # GPIO chips and every serial port kind a Modbus meter or a serial:// link uses.
    assert {"char-gpiochip", "char-ttyS", "char-ttyAMA", "char-ttyUSB", "char-ttyACM"} <= allowed
    families = set(" ".join(_unit_values("RestrictAddressFamilies")).split())
    # Links and discovery, the local API socket, nftables (netlink) for bandwidth metering,
    # ble:// links (the HCI user channel is an AF_BLUETOOTH socket).
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_BLUETOOTH"} <= families
    assert "CAP_NET_ADMIN" in " ".join(_unit_values("AmbientCapabilities"))
    assert _unit_values("Type") == ["notify"] and _unit_values("WatchdogSec")
    assert _unit_values("NotifyAccess") == ["main"]
    assert int(_unit_values("LimitNOFILE")[0]) >= 4096  # the default soft limit is 1024
    # /proc/device-tree and /proc/cpuinfo tell a Pi and its board: ProcSubset=pid hides them.
    assert not _unit_values("ProcSubset")
    # lgpio creates a FIFO in the working directory on import: a writable tmpfs one.
    assert _unit_values("WorkingDirectory") == [f"/run/{_unit_values('RuntimeDirectory')[0]}"]


def test_exec_stop_post_is_the_safe_state_command() -> None:
    """ExecStopPost runs after every way the node can end; it must be our safe-state command with
    the node's own config, and must not have systemd's "-" (ignore failure) prefix."""
    start = shlex.split(_unit_values("ExecStart")[0])
    (post,) = _unit_values("ExecStopPost")
    argv = shlex.split(post)
    assert argv[0] == start[0]  # the same installed console script
    assert argv[1:3] == ["hw", "safe-state"]
    assert argv[argv.index("--config") + 1] == start[start.index("--config") + 1]
    # And the CLI knows the command (argparse exits 0 on --help).
    r = subprocess.run([sys.executable, "-m", "eschaton", *argv[1:3], "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_watchdog_drop_in_and_module() -> None:
    conf = configparser.ConfigParser()
    conf.read(SYSTEMD / "eschaton-watchdog.conf")
    timeout = conf["Manager"]["RuntimeWatchdogSec"]
    m = re.fullmatch(r"(\d+)s", timeout)
    assert m is not None, timeout
    # bcm2835_wdt counts at most ~15 s; a longer timeout is refused by the driver.
    assert 0 < int(m.group(1)) <= 15
    mods = [ln.strip() for ln in (SYSTEMD / "eschaton-modules.conf").read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    assert mods == ["bcm2835_wdt", "batman_adv"]


def test_gpio_udev_rule_names_the_unit_s_group() -> None:
    rule = (SYSTEMD / "60-eschaton-gpio.rules").read_text()
    m = re.search(r'KERNEL=="gpiochip\*".*GROUP="(\w+)".*MODE="0660"', rule)
    assert m is not None, rule
    assert m.group(1) in _unit_values("SupplementaryGroups")[0].split()
    assert f"g {m.group(1)} -" in (SYSTEMD / "eschaton.sysusers.conf").read_text()


def test_image_installs_unit_watchdog_and_module() -> None:
    """image/build.sh installs every file of systemd/ at the path systemd reads it from."""
    build = (SYSTEMD.parent / "image" / "build.sh").read_text().replace("\\\n", " ")
    installs = {}
    for m in re.finditer(r'install (?:-D )?-m 0644 "\$REPO/systemd/([^"]+)"\s+"\$ROOTFS([^"]+)"', build):
        installs[m.group(1)] = m.group(2)
    assert installs == {
        "eschaton.service": "/usr/lib/systemd/system/eschaton.service",
        "eschaton.sysusers.conf": "/usr/lib/sysusers.d/eschaton.conf",
        "eschaton.tmpfiles.conf": "/usr/lib/tmpfiles.d/eschaton.conf",
        "eschaton-watchdog.conf": "/usr/lib/systemd/system.conf.d/50-eschaton-watchdog.conf",
        "eschaton-modules.conf": "/usr/lib/modules-load.d/eschaton.conf",
        "60-eschaton-gpio.rules": "/usr/lib/udev/rules.d/60-eschaton-gpio.rules",
        "eschaton-field.service": "/usr/lib/systemd/system/eschaton-field.service",
        "eschaton-mesh.service": "/usr/lib/systemd/system/eschaton-mesh.service",
    }
    assert set(installs) == {p.name for p in SYSTEMD.iterdir()}
    # The unit's config path is where the image puts image/node.toml.
    assert '"$ROOTFS/etc/eschaton/node.toml"' in build
    assert "/etc/eschaton/node.toml" in _unit_values("ExecStopPost")[0]


def test_image_builder_sets_its_own_umask() -> None:
    """image/build.sh fixes its umask before it makes anything: an image built from a shell (or a
    test process) with umask 0077 had a venv that the node's user could not execute."""
    lines = (SYSTEMD.parent / "image" / "build.sh").read_text().splitlines()
    umask = next(i for i, line in enumerate(lines) if line.strip() == "umask 022")
    first_made = next(i for i, line in enumerate(lines)
                      if line.lstrip().startswith(("mkdir", "install ", "debootstrap", "cp ", "truncate")))
    assert umask < first_made


def test_configuration_directory_mode_matches_tmpfiles() -> None:
    unit = (SYSTEMD / "eschaton.service").read_text()
    tmpfiles = (SYSTEMD / "eschaton.tmpfiles.conf").read_text()
    mode = next(line.split()[2] for line in tmpfiles.splitlines() if line.startswith("d /etc/eschaton "))
    assert f"ConfigurationDirectoryMode={mode}\n" in unit
