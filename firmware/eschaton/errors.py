"""The exception root of Eschaton, split by fault (who is to blame decides what happens next).

- ``LocalError``: our caller asked for something invalid (bad CLI input, bad config). Report and exit.
- ``RemoteError``: a peer, a meter or the chain sent something invalid. Refuse it, keep running.
- ``TransientError``: something may work if retried (a timeout, a vanished serial device).
"""
from __future__ import annotations


class EschatonError(Exception):
    """Root of every error Eschaton raises on purpose."""


class LocalError(EschatonError):
    """Invalid input from our own side: CLI arguments, configuration, API calls."""


class RemoteError(EschatonError):
    """Invalid input from outside: a peer message, a meter reading, chain data."""


class TransientError(EschatonError):
    """A failure that may go away on retry."""
