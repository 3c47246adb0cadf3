"""Eschaton: friend-to-friend Bitcoin trade channels and paid network services for mesh nodes."""

__version__ = "0.1.0"
