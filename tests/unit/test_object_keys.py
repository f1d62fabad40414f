"""Object keys are validated against traversal and odd characters."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidInput
from services.common.objectstore import validate_key


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "../x", "a//b", "a/./b", "a\\b", "a/b\n", "dir/", "x" * 1025]
)
def test_traversal_and_odd_keys_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        validate_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "datasets/toolsynth/v3/part-00000.jsonl",
        "checkpoints/run-1/100/adapter_model.safetensors",
        "a=b+c",
    ],
)
def test_ordinary_keys_pass(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("source", ["x" * 5000, "a\x00b", "~no-such-user-kiln/x", "/no/such/dir"])
def test_unusable_model_paths_are_invalid_input(source: str) -> None:
    from services.common.models import fetch_source

    with pytest.raises(InvalidInput) as err:
        fetch_source(source, "local_path")
    assert err.value.field == "local_path"
