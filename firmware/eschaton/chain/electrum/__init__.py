"""Sharing one embedded chain among processes over the Electrum protocol (see ``server``)."""
