from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.channel.harness import Net


@pytest.fixture()
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()
