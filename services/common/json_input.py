"""JSON from requests: every failure to read it is the caller's field error, never INTERNAL."""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import json_format, struct_pb2

from services.common.errors import InvalidInput


def load_json(text: str | bytes, field: str) -> Any:
    """json.loads, with malformed or too deeply nested input as InvalidInput naming field."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(field, f"not JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(field, "JSON nested too deeply") from None


def struct_to_dict(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A request's Struct as a dict; a NaN or infinite number (JSON has none) is InvalidInput
    naming its path, e.g. `parameters.pool.temperature`."""

    def check(value: struct_pb2.Value, path: str) -> None:
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            raise InvalidInput(path, f"must be a finite number, got {value.number_value}")
        if kind == "struct_value":
            for key, item in value.struct_value.fields.items():
                check(item, f"{path}.{key}")
        elif kind == "list_value":
            for index, item in enumerate(value.list_value.values):
                check(item, f"{path}[{index}]")

    for key, value in struct.fields.items():
        check(value, f"{field}.{key}")
    return json_format.MessageToDict(struct)
