"""Fault points: a crash test arms one named step, and the node SIGKILLs itself there.

Rules / theory of operation:
- ``point(name)`` marks a step between two durable effects (a record committed, a message not
  yet sent). It does nothing unless ``$ESCHATON_FAULT_FILE`` is set when the node starts.
- With it set, every ``point`` reads that file (absent: nothing armed). Its content is one line,
  ``NAME`` or ``NAME N``: the N-th time (1 by default) the node passes ``NAME`` after the file
  appeared, the file is removed and the process sends itself SIGKILL: no flush, no clean-up,
  exactly what a power cut leaves (what is durable survives, nothing else). The file is removed
  first so that the restarted node does not die at the same step again.
- The crash harness (``tests/integration/node/test_multihop_crash.py``) writes the file to pick
  a random step on a random node, many trials per node process; production nodes never set the
  variable, and then a point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

_FILE = os.environ.get("ESCHATON_FAULT_FILE", "")
_hits: dict[str, int] = {}
_armed: str = ""


def point(name: str) -> None:
    """Die here if a crash test armed ``name`` (see the module rules)."""
    global _armed
    if not _FILE:
        return
    try:
        with open(_FILE, encoding="utf-8") as f:
            spec = f.read().split()
    except FileNotFoundError:
        _armed = ""
        _hits.clear()
        return
    if not spec:
        return
    key = " ".join(spec)
    if key != _armed:  # a new arming: count from zero
        _armed = key
        _hits.clear()
    if spec[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= (int(spec[1]) if len(spec) > 1 and spec[1].isdigit() else 1):
        os.unlink(_FILE)
        os.kill(os.getpid(), signal.SIGKILL)
