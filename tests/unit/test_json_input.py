"""Malformed and deeply nested JSON in requests is the caller's field error."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidInput
from services.common.json_input import load_json
from services.toolsynth.core.grader import parse_calls
from services.trainer.core.data import read_rows

DEEP = "[" * 100_000 + "]" * 100_000


def test_deep_json_is_a_field_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_json(DEEP, "functions_json")
    assert (caught.value.field, caught.value.reason) == ("functions_json", "JSON nested too deeply")
    with pytest.raises(InvalidInput) as caught:
        parse_calls(DEEP)
    assert caught.value.field == "calls"


def test_a_bad_dataset_line_is_named_by_its_number() -> None:
    data = b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "compl\n'
    with pytest.raises(InvalidInput) as caught:
        read_rows(data, "datasets[0]")
    assert caught.value.field == "datasets[0][line 2]"
    with pytest.raises(InvalidInput) as caught:
        read_rows(b"\xff\xfe", "datasets[0]")
    assert "not UTF-8" in caught.value.reason
    with pytest.raises(InvalidInput, match="each a JSON object"):
        read_rows(b"[1, 2]", "datasets[0]")
