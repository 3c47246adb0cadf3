"""Sans-IO trade channels: Hearn-style refund-transaction channels with escrow and bets.

See ``channel.py`` (the state machine), ``versions.py`` (the versions), ``ops.py`` and
``rules.py`` (the operations and the rules that make the next version), ``transactions.py``
(the transactions a version, a close and a re-anchor are) and docs/channels.md.
"""
from __future__ import annotations

from eschaton.core.channel.channel import (
    STATIC_KEYS,
    Action,
    Broadcast,
    Channel,
    ChannelStatus,
    FundingInput,
    Notify,
    NotMyTurn,
    PersistThenSend,
    Send,
    SignFunding,
    StoredVersion,
)
from eschaton.core.channel.oracle import Announcement, FraudProof, Oracle, verify_fraud_proof
from eschaton.core.channel.params import ChannelParams, Policy
from eschaton.core.channel.state import ChannelState
from eschaton.core.channel.transactions import version_outputs, version_tx
from eschaton.core.channel.versions import ACCEPTOR, OPENER, Version

__all__ = [
    "STATIC_KEYS", "ACCEPTOR", "OPENER", "Action", "Announcement", "Broadcast", "Channel", "ChannelParams",
    "ChannelState", "ChannelStatus", "FraudProof", "FundingInput", "NotMyTurn", "Notify", "Oracle",
    "PersistThenSend", "Policy", "Send", "SignFunding", "StoredVersion", "Version",
    "verify_fraud_proof", "version_outputs", "version_tx",
]
