"""protobuf <-> kiln's own types, in one place: ObjectRefs and JSON-like Structs."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format, struct_pb2

from kiln.common.v1 import common_pb2
from services.common.errors import InvalidInput
from services.common.objectstore import ObjectRef


def ref_to_pb(ref: ObjectRef) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(bucket=ref.bucket, key=ref.key, sha256=ref.sha256, size=ref.size)


def ref_from_pb(ref: common_pb2.ObjectRef) -> ObjectRef:
    return ObjectRef(ref.bucket, ref.key, ref.sha256, ref.size)


def struct_from_dict(value: dict) -> struct_pb2.Struct:
    """A JSON-like dict as a protobuf Struct."""
    out = struct_pb2.Struct()
    json_format.ParseDict(value, out)
    return out


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
