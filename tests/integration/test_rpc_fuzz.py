"""Property-based fuzzing of every kiln RPC: requests drawn from each method's protobuf
descriptor (every field, nested messages, repeated fields, maps, Structs; hostile strings)
are sent over gRPC to real servers; no answer may be INTERNAL, UNKNOWN or DATA_LOSS, and the
servers stay SERVING.

Strings mix random text with values that reach deep paths: the name of a loaded tiny model
(inference RPCs), traversal and absolute keys, huge and control-character strings, and JSON
that is 100,000 levels deep or holds NaN and Infinity. Every float, in a field or a Struct,
may be NaN or infinite."""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.inference.v1 import inference_pb2 as ipb
from services.common.clients import SERVICE_NAMES, KilnClient
from services.common.settings import SERVICES, Settings, get_settings

# CI replays the same 40 examples per RPC (derandomized); KILN_FUZZ_EXAMPLES=N explores N
# fresh random ones per run
EXPLORE = "KILN_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("KILN_FUZZ_EXAMPLES", "40"))

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
HOSTILE = [
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "checkpoints/../../x",
    "datasets/a/../../b",
    "\x00",
    "\u202e\ufffd",
    "x" * 5000,
    "{not json",
    "[1, 2",
    "NaN",
    # JSON a parser may choke on: 100,000 levels deep, non-finite numbers
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 5_000 + "1" + "}" * 5_000,
    '[{"x": NaN, "y": Infinity, "z": 1e999}]',
]
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _strings(models: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=24),
        st.sampled_from(HOSTILE + models),
        st.integers(0, 40).map(str),
    )


def _scalar(field: FieldDescriptor, models: list[str]) -> st.SearchStrategy[Any]:
    if field.type in INT_RANGES:
        low, high = INT_RANGES[field.type]
        small = st.integers(-3, 70)
        return st.one_of(small, st.integers(low, high)).filter(lambda v: low <= v <= high)
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if field.type == FieldDescriptor.TYPE_FLOAT:
        finite = st.floats(-1e6, 1e6, width=32)
        return st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 2.5]))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name == "model" and models:  # half the requests reach the model's code
            return st.one_of(st.sampled_from(models), _strings(models))
        return _strings(models)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [999])
    raise AssertionError(f"unhandled field type {field.type}")


def message(descriptor: Descriptor, models: list[str], depth: int = 0) -> st.SearchStrategy[dict]:
    """A dict of field name -> value for descriptor (at most one member per oneof)."""
    if descriptor.full_name == "google.protobuf.Struct":
        return st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.just({})
    optional = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                key = _scalar(field.message_type.fields_by_name["key"], models)
                value_field = field.message_type.fields_by_name["value"]
                value = _scalar(value_field, models)
                optional[field.name] = st.dictionaries(key, value, max_size=4)
                continue
            if depth >= 3:
                continue
            inner = message(field.message_type, models, depth + 1)
        else:
            inner = _scalar(field, models)
        if field.is_repeated:
            optional[field.name] = st.lists(inner, max_size=4)
        else:
            optional[field.name] = inner
    oneofs = [[f.name for f in o.fields] for o in descriptor.oneofs if not o.name.startswith("_")]

    def one_per_oneof(values: dict) -> dict:
        for members in oneofs:
            for extra in [m for m in members if m in values][1:]:
                del values[extra]
        return values

    return st.fixed_dictionaries({}, optional=optional).map(one_per_oneof)


def build(cls: type, values: dict) -> Any:
    out = cls()
    _fill(out, values)
    return out


def _fill(msg: Any, values: dict) -> None:
    if msg.DESCRIPTOR.full_name == "google.protobuf.Struct":
        msg.update(values)
        return
    for name, value in values.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(msg, name)
            for k, v in value.items():
                target[k] = v
        elif field.message_type is not None:
            if field.is_repeated:
                for item in value:
                    _fill(getattr(msg, name).add(), item)
            else:
                sub = getattr(msg, name)
                sub.SetInParent()
                _fill(sub, value)
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)


def _methods() -> list[tuple[str, bool, MethodDescriptor]]:
    """(service, whether it is a Jobs method, method) for every RPC; Jobs once, on judge."""
    from kiln.common.v1 import common_pb2

    jobs = common_pb2.DESCRIPTOR.services_by_name["Jobs"]
    out = [("judge", True, m) for m in jobs.methods]
    for service in SERVICES:
        module = importlib.import_module(f"kiln.{service}.v1.{service}_pb2")
        name = SERVICE_NAMES[service].rsplit(".", 1)[1]
        out += [(service, False, m) for m in module.DESCRIPTOR.services_by_name[name].methods]
    return out


@pytest.fixture
def targets(grpc_server, kiln_env: Settings, tiny_model: Path, monkeypatch) -> dict[str, str]:
    """All five servers; the remote backend of judge and prober reaches this inference
    server, which serves the tiny model as "tiny"."""
    inference = grpc_server("inference", kiln_env)
    monkeypatch.setenv("KILN_INFERENCE_PORT", str(inference.port))
    get_settings.cache_clear()
    out = {s: grpc_server(s, get_settings()).target for s in SERVICES if s != "inference"}
    out["inference"] = inference.target
    with KilnClient("inference", target=inference.target) as client:
        client.stub.LoadModel(ipb.LoadModelRequest(name="tiny", local_path=str(tiny_model)))
    return out


@pytest.mark.parametrize(
    "service,is_jobs,method",
    _methods(),
    ids=[f"{s}.{m.name}" for s, _, m in _methods()],
)
def test_fuzzed_requests_never_fail_internally(
    targets: dict[str, str], service: str, is_jobs: bool, method: MethodDescriptor
) -> None:
    request_class = GetMessageClass(method.input_type)
    models = ["tiny"] if service == "inference" else []
    codes: list[grpc.StatusCode] = []
    with KilnClient(service, target=targets[service], deadline_s=5) as client:
        call = getattr(client.jobs if is_jobs else client.stub, method.name)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=not EXPLORE,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None,
        )
        @given(message(method.input_type, models))
        def send(values: dict) -> None:
            request = build(request_class, values)
            try:
                reply = call(request, timeout=5)
                if method.server_streaming:
                    for _ in zip(range(50), reply, strict=False):
                        pass
                    reply.cancel()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                assert exc.code() not in FORBIDDEN, (exc.code(), exc.details(), request)

        send()
        assert client.health_status() == "SERVING"
    assert codes  # hypothesis really sent requests (one, for a message with no fields)


def test_a_downstream_verdict_keeps_its_code(targets: dict[str, str]) -> None:
    """The prober asks inference for a model it does not serve: NOT_FOUND (found by the
    fuzzer: it was INTERNAL), naming the service that said so."""
    from kiln.prober.v1 import prober_pb2

    with KilnClient("prober", target=targets["prober"]) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Select(
                prober_pb2.SelectRequest(
                    model="absent",
                    question="2 + 2?",
                    options=["3", "4"],
                    candidates=["2 + 2 = 4.\nSo B."],
                ),
                timeout=30,
            )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details().startswith("inference: model 'absent' is not loaded")
