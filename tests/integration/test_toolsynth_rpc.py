"""ToolSynth.Verify over real gRPC: BFCL grading and clear errors for bad requests."""

from __future__ import annotations

import json

import grpc
import pytest

from kiln.toolsynth.v1 import toolsynth_pb2 as pb
from services.common.clients import KilnClient
from services.common.settings import Settings

FUNCTIONS = json.dumps(
    [
        {
            "name": "calculate_triangle_area",
            "parameters": {
                "type": "dict",
                "properties": {
                    "base": {"type": "integer"},
                    "height": {"type": "integer"},
                    "unit": {"type": "string"},
                },
                "required": ["base", "height"],
            },
        }
    ]
)
ANSWER = json.dumps(
    [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
)


@pytest.fixture
def client(grpc_server, kiln_env: Settings):
    server = grpc_server("toolsynth", kiln_env)
    with KilnClient("toolsynth", target=server.target) as c:
        yield c


@pytest.mark.parametrize(
    ("calls", "valid", "errors"),
    [
        ("[calculate_triangle_area(base=10, height=5)]", True, []),
        ('[{"calculate_triangle_area": {"base": 10, "height": 5, "unit": "Units"}}]', True, []),
        ("[calculate_triangle_area(base=10.0, height=5)]", False, ["type_error:simple"]),
        ("[calculate_triangle_area(base=10)]", False, ["missing_required"]),
        ("[]", False, ["wrong_count"]),
    ],
)
def test_verify(client, calls, valid, errors) -> None:
    reply = client.stub.Verify(
        pb.VerifyRequest(
            functions_json=FUNCTIONS, answer_json=ANSWER, calls=calls, category="simple"
        )
    )
    assert reply.valid == valid and list(reply.errors) == errors


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.VerifyRequest(functions_json=FUNCTIONS, answer_json=ANSWER, category="easy"),
            "category",
        ),
        (
            pb.VerifyRequest(functions_json="{", answer_json=ANSWER, category="simple"),
            "functions_json",
        ),
        (pb.VerifyRequest(functions_json=FUNCTIONS, category="simple"), "answer_json"),
        (
            pb.VerifyRequest(
                functions_json=FUNCTIONS, answer_json=ANSWER, category="simple", calls="[f(1)]"
            ),
            "calls[0]",
        ),
    ],
)
def test_bad_verify_is_invalid_argument(client, request_, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Verify(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)
