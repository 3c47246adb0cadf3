"""Shared test helpers.

Environment-dependent tests (root, namespaces, ptys, QEMU) may skip on a developer's laptop, but
in CI (``CI=true``) such a skip is a failure: ``need()`` turns it into ``pytest.fail``.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.host_packages import package_of

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) when an environment requirement is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires this test to run, but: {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


def need_tool(name: str) -> str:
    """The path of a host program listed in ``tests/host_packages.py``; skip (or fail in CI)
    naming the Debian package when it is missing."""
    package = package_of(name)
    path = shutil.which(name)
    need(path is not None, f"needs the '{name}' program (Debian package '{package}', which "
                           "`make setup` installs as root)")
    assert path is not None
    return path


def need_file(path: str) -> str:
    """A host data file (a QEMU option ROM, say) listed in ``tests/host_packages.py``."""
    package = package_of(path)
    need(os.path.exists(path), f"needs {path} (Debian package '{package}', which `make setup` "
                               "installs as root)")
    return path


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """The CLI's ``main()`` makes its process umask 0077 (store.private); a test that calls it
    in-process must not hand that to later tests and the programs they start (an image built
    under it had a venv its node's user could not execute)."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)
