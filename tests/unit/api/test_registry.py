"""The command registry refuses values no command can use, before any command runs."""
from __future__ import annotations

import math
from typing import Any

import pytest

from eschaton.api.registry import ApiError, Command, Param


async def _never(node: Any, **kw: Any) -> Any:
    raise AssertionError("validation should have refused the call")


CMD = Command("t.cmd", "test", (Param("n", int, "an integer"), Param("x", float, "a number",
                                                                      required=False)), _never)


@pytest.mark.parametrize("args,words", [
    ({"n": 1 << 63}, "out of range"),
    ({"n": -(1 << 63) - 1}, "out of range"),
    ({"n": 10 ** 4000}, "out of range"),
    ({"n": 1, "x": math.nan}, "finite"),
    ({"n": 1, "x": math.inf}, "finite"),
    ({"n": True}, "integer"),
])
def test_out_of_range_and_non_finite_values_are_refused(args: dict[str, Any], words: str) -> None:
    with pytest.raises(ApiError, match=words):
        CMD.validate(args)


def test_the_64_bit_range_itself_is_accepted() -> None:
    assert CMD.validate({"n": (1 << 63) - 1})["n"] == (1 << 63) - 1
    assert CMD.validate({"n": -(1 << 63), "x": 1.5}) == {"n": -(1 << 63), "x": 1.5}
