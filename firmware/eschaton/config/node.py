"""``[node]``: where the node keeps its files and what it calls itself. Parsed first: every
relative path of the other sections hangs off its datadir."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eschaton.config import defaults as D
from eschaton.config.errors import ConfigContext
from eschaton.config.section import Section


@dataclass(frozen=True, slots=True)
class NodeSection:
    datadir: Path
    """Directory for the node key, databases, API socket (created 0700 if missing)."""
    name: str
    """Human-readable name announced to peers (``init`` and beacons); may be empty."""


def parse_node(doc: dict[str, Any], text: str, source: str) -> tuple[Section, NodeSection]:
    """``[node]`` of the document; returns the root section, its context now carrying the
    datadir, and the section."""
    root = Section(ConfigContext(source, text, Path(D.DATADIR)), (), doc)
    node_s = root.sub("node")
    datadir = Path(node_s.get_str("datadir", D.DATADIR)).expanduser()
    if not datadir.is_absolute():
        raise node_s.err("datadir", "must be an absolute path")
    ctx = ConfigContext(source, text, datadir)
    node_s.ctx = ctx
    name = node_s.get_str("name", D.NODE_NAME)
    if len(name.encode()) > 64:
        raise node_s.err("name", "must be at most 64 bytes")
    node_s.done()
    root.ctx = ctx
    return root, NodeSection(datadir, name)
