"""The chain layer: the ``ChainBackend`` interface (``backend``), the embedded regtest chain
(``embedded``), Electrum sharing (``electrum``), and ``open_chain`` (``open``).

``open_chain`` is importable from here lazily, so that importing ``eschaton.chain.backend`` does
not load libbitcoinkernel.
"""
from __future__ import annotations

from typing import Any

__all__ = ["open_chain", "resolve_datadir"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from eschaton.chain import open as _open

        return getattr(_open, name)
    raise AttributeError(name)
