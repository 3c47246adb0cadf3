"""Every host program and file the tests use comes from a Debian package that ``make setup``
installs (tests/host_packages.py), so a fresh machine runs what a developer's machine runs."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.host_packages import FILES, PROGRAMS
from tests.integration.image.qemu import BUILD_TOOLS, VIRTIO_NET_ROM

REPO = Path(__file__).resolve().parents[2]
# Packages every Debian system has (priority 'required'): nobody installs them, nobody can lack them.
BASE_SYSTEM = {"coreutils", "mount", "dpkg"}


def makefile_packages() -> set[str]:
    text = (REPO / "Makefile").read_text()
    m = re.search(r"^APT_PKGS\s*:=\s*((?:.*\\\n)*.*)$", text, re.M)
    assert m, "the Makefile has no APT_PKGS list"
    return set(m.group(1).replace("\\\n", " ").split())


def test_every_listed_package_is_installed_by_the_makefile() -> None:
    apt = makefile_packages()
    assert "ipxe-qemu" in apt, "qemu-system-arm only recommends ipxe-qemu; install it explicitly"
    missing = {name: pkg for name, pkg in {**PROGRAMS, **FILES}.items()
               if pkg not in apt and pkg not in BASE_SYSTEM}
    assert not missing, f"the Makefile's APT_PKGS lacks the packages of {missing}"


def _literal_calls(func: str) -> set[str]:
    """The literal first arguments of every ``func("...")`` call in the test tree."""
    found: set[str] = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == func and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.add(node.args[0].value)
    return found


def _subprocess_programs() -> set[str]:
    """Programs that tests and benchmarks start by a literal name (``subprocess.run(["ip", ...``)."""
    pattern = re.compile(r"subprocess\.(?:run|Popen|check_output|check_call)\(\s*\[\s*\"([\w.+-]+)\"")
    found: set[str] = set()
    for top in ("tests", "bench"):
        for path in (REPO / top).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def test_every_program_the_tests_use_is_listed() -> None:
    used = _literal_calls("need_tool") | set(BUILD_TOOLS) | _subprocess_programs()
    # image/build.sh checks its own tools up front; they must be listed too.
    build = (REPO / "image" / "build.sh").read_text()
    m = re.search(r"^for tool in ([^;]+); do\s*$\s*command -v", build, re.M)
    assert m, "image/build.sh no longer checks its tools with 'for tool in ...; do command -v'"
    used |= set(m.group(1).split())
    assert "ip" in used and "qemu-system-aarch64" in used  # the scan itself works
    unlisted = sorted(used - set(PROGRAMS))
    assert not unlisted, f"programs used but not in tests/host_packages.py: {unlisted}"
    unlisted_files = sorted((_literal_calls("need_file") | {VIRTIO_NET_ROM}) - set(FILES))
    assert not unlisted_files, f"files used but not in tests/host_packages.py: {unlisted_files}"


def _dpkg_owner(path: str) -> str | None:
    """The package that installed ``path``; with merged /usr, dpkg may have recorded either
    /usr/bin/x or /bin/x."""
    real = os.path.realpath(path)
    candidates = [path, real]
    for p in (path, real):
        candidates.append(p.removeprefix("/usr") if p.startswith("/usr/") else "/usr" + p)
    for c in dict.fromkeys(candidates):
        r = subprocess.run(["dpkg-query", "-S", c], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_comes_from_its_package(name: str) -> None:
    package = PROGRAMS[name]
    need(shutil.which("dpkg-query") is not None, "not a Debian machine")
    path = shutil.which(name)
    need(path is not None, f"'{name}' is missing: install Debian package '{package}' "
                           "(make setup does, as root)")
    assert path is not None
    assert _dpkg_owner(path) == package, f"{path} comes from '{_dpkg_owner(path)}', not '{package}'"


@pytest.mark.parametrize("path", sorted(FILES))
def test_file_comes_from_its_package(path: str) -> None:
    package = FILES[path]
    need(shutil.which("dpkg-query") is not None, "not a Debian machine")
    need(os.path.exists(path), f"{path} is missing: install Debian package '{package}' "
                               "(make setup does, as root)")
    assert _dpkg_owner(path) == package
