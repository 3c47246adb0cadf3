"""Shared test helpers.

Environment-dependent tests (root, namespaces, ptys, QEMU) may skip on a developer's laptop, but
in CI (``CI=true``) such a skip is a failure: ``need()`` turns it into ``pytest.fail``.
"""
from __future__ import annotations

import os
import shutil

import pytest

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
    path = shutil.which(name)
    need(path is not None, f"needs the '{name}' program")
    assert path is not None
    return path
