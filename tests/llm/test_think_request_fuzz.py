"""Any JSON in any THINK field is a ThinkArgs or an InvalidArgument, never another exception."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentos.errors import InvalidArgument
from agentos.llm.request import FIELDS, parse_json

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["user", "model", "system", "text", "auto", "low"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["role", "parts", "content", "text", "name", "args", "response",
                                       "parameters", "type", "properties"]), children, max_size=3),
    max_leaves=12)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), _JSON, max_size=5))
def test_any_field_values_are_parsed_or_refused(args: dict[str, Any]) -> None:
    try:
        parse_json(args)
    except InvalidArgument:
        pass
