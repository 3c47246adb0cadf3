"""The bare baseline the channel and node benchmarks compare against, measured in the same run:
ECDSA sign + verify of a 32-byte digest with coincurve (libsecp256k1), the floor of one update."""
from __future__ import annotations

import hashlib
import time

import coincurve


def sign_verify_rate(n: int) -> float:
    key = coincurve.PrivateKey(hashlib.sha256(b"eschaton-bench-baseline").digest())
    pub = key.public_key
    digests = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    t = time.perf_counter()
    for d in digests:
        sig = key.sign(d, hasher=None)
        assert pub.verify(sig, d, hasher=None)
    return n / (time.perf_counter() - t)
