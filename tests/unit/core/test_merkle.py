"""Merkle branches: every leaf of trees of every shape proves the root that the block codec's
own ``merkle_root`` computes, and a wrong leaf, sibling or position does not."""
from __future__ import annotations

import hashlib

import pytest

from eschaton.core.merkle import branch_and_root, from_hex, root_from_branch, to_hex
from eschaton.core.txcodec import merkle_root


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_leaf_proves_the_codec_root(n: int) -> None:
    leaves = _leaves(n)
    for i, leaf in enumerate(leaves):
        branch, root = branch_and_root(leaves, i)
        assert root == merkle_root(leaves)
        assert len(branch) == (n - 1).bit_length()
        assert root_from_branch(leaf, branch, i) == root


def test_a_wrong_leaf_sibling_or_position_proves_another_root() -> None:
    leaves = _leaves(9)
    branch, root = branch_and_root(leaves, 4)
    assert root_from_branch(leaves[5], branch, 4) != root
    assert root_from_branch(leaves[4], branch, 5) != root
    assert root_from_branch(leaves[4], [branch[0], b"\x00" * 32, *branch[2:]], 4) != root
    with pytest.raises(ValueError):
        root_from_branch(leaves[4], branch, 4 + (1 << len(branch)))
    with pytest.raises(ValueError):
        branch_and_root(leaves, 9)


def test_hex_is_display_order() -> None:
    h = bytes(range(32))
    assert to_hex(h) == h[::-1].hex() and from_hex(to_hex(h)) == h
