"""Timestamping (sans-IO): Merkle aggregation of digests, OpenTimestamps proofs and their codec."""
