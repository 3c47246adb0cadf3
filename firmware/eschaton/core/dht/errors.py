"""Typed errors of the DHT core, split by fault.

Everything decoded from a peer (a record, a query, a proof, a message) raises a ``DhtRemoteError``
subclass and nothing else: the service drops the request (or the peer) and keeps running. Our own
misuse (a bad CLI argument, a query we build wrong) is a ``DhtLocalError``.
"""
from __future__ import annotations

from eschaton.errors import LocalError, RemoteError


class DhtRemoteError(RemoteError):
    """A peer sent a DHT record, query, proof or message that is invalid."""


class RecordError(DhtRemoteError):
    """A record that does not decode, or whose content does not verify."""


class ProofError(DhtRemoteError):
    """A proof that is malformed (a proof that merely fails to verify returns False)."""


class QueryError(DhtRemoteError):
    """A query that does not decode, or exceeds its limits."""


class MessageError(DhtRemoteError):
    """A DHT wire message that does not decode."""


class Refused(DhtRemoteError):
    """A store or query refused by policy (quota, rate limit, expired, not ours to hold)."""


class DhtLocalError(LocalError):
    """We asked the DHT core for something invalid."""
