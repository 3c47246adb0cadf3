"""The query argument of ``dht.query`` (JSON from the CLI or the API): any text is the query's
wire form or one clear ``ApiError``, never a traceback."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.api.registry import ApiError
from eschaton.core.dht import query as q
from eschaton.daemon.dht import _query_bytes


def test_json_maps_to_the_query_language() -> None:
    data = _query_bytes('["and", [["has", ["data"]], ["eq", ["alg"], {"hex": "736861323536"}]]]')
    assert q.decode(data) == q.And((q.Has((b"data",)), q.Eq((b"alg",), b"sha256")))
    for text, msg in (("[", "not JSON"), ('["nope"]', "query refused"), ("[1.5]", "only lists"),
                      ('{"hex": "zz"}', "not hex"), ("true", "only lists"), ("[" * 5000 + "]" * 5000, "nested"),
                      ("[" * 20000, "longer than")):
        with pytest.raises(ApiError, match=msg):
            _query_bytes(text)


json_like = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**70) | st.text(max_size=8)
                         | st.floats(allow_nan=False),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                    max_size=2), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), json_like.map(lambda v: __import__("json").dumps(v))))
def test_any_text_is_a_query_or_one_line_error(text: str) -> None:
    try:
        data = _query_bytes(text)
    except ApiError as exc:
        assert "\n" not in str(exc)
    else:
        q.decode(data)  # what passes is a valid query
