"""Sans-IO trade channels: Hearn-style refund-transaction channels with escrow and bets.

See ``channel.py`` (the state machine), ``ledger.py`` (versions and their rules) and
docs/channels.md.
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
from eschaton.core.channel.ledger import ACCEPTOR, OPENER, Version, version_outputs, version_tx
from eschaton.core.channel.oracle import Announcement, FraudProof, Oracle, verify_fraud_proof
from eschaton.core.channel.params import ChannelParams, Policy
from eschaton.core.channel.state import ChannelState

__all__ = [
    "STATIC_KEYS", "ACCEPTOR", "OPENER", "Action", "Announcement", "Broadcast", "Channel", "ChannelParams",
    "ChannelState", "ChannelStatus", "FraudProof", "FundingInput", "NotMyTurn", "Notify", "Oracle",
    "PersistThenSend", "Policy", "Send", "SignFunding", "StoredVersion", "Version",
    "verify_fraud_proof", "version_outputs", "version_tx",
]
