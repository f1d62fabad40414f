"""kiln.toolsynth.v1.ToolSynth: protobuf <-> core; thin."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from kiln.toolsynth.v1 import toolsynth_pb2 as pb
from kiln.toolsynth.v1 import toolsynth_pb2_grpc
from services.common.errors import InvalidInput
from services.common.jobs import JobManager
from services.common.settings import Settings
from services.toolsynth.core.grader import CATEGORIES, grade, parse_calls


def _json_list(text: str, field: str) -> list[Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(field, f"not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInput(field, "must be a JSON list of objects")
    return value


class ToolSynthServicer(toolsynth_pb2_grpc.ToolSynthServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class)."""

    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs

    async def Verify(self, request: pb.VerifyRequest, context: Any) -> pb.VerifyResponse:
        if request.category not in CATEGORIES:
            raise InvalidInput("category", f"must be one of {', '.join(CATEGORIES)}")
        functions = _json_list(request.functions_json, "functions_json")
        answers = _json_list(request.answer_json or "[]", "answer_json")
        if request.category != "irrelevance" and not answers:
            raise InvalidInput("answer_json", "the possible answer is required")
        for i, answer in enumerate(answers):
            if len(answer) != 1 or not isinstance(next(iter(answer.values())), dict):
                raise InvalidInput(f"answer_json[{i}]", "must be {name: {param: [values]}}")
        result = grade(functions, parse_calls(request.calls), answers, request.category)
        return pb.VerifyResponse(valid=result.valid, errors=result.errors, detail=result.detail)


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    toolsynth_pb2_grpc.add_ToolSynthServicer_to_server(ToolSynthServicer(settings, jobs), server)
    return [pb.DESCRIPTOR.services_by_name["ToolSynth"].full_name]
