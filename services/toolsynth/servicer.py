"""kiln.toolsynth.v1.ToolSynth: protobuf <-> core; thin."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import grpc

from kiln.toolsynth.v1 import toolsynth_pb2 as pb
from kiln.toolsynth.v1 import toolsynth_pb2_grpc
from services.common.errors import InvalidInput
from services.common.jobs import JobManager
from services.common.jobs_servicer import job_to_pb
from services.common.json_input import load_json
from services.common.objectstore import ObjectRef, validate_name
from services.common.protobuf import ref_from_pb, struct_to_dict
from services.common.settings import Settings
from services.toolsynth.core.grader import CATEGORIES, grade, grade_text, kind_of, parse_calls
from services.toolsynth.core.spec import SynthesisSpec, parse_tools


def _json_list(text: str, field: str) -> list[Any]:
    value = load_json(text, field)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInput(field, "must be a JSON list of objects")
    return value


class ToolSynthServicer(toolsynth_pb2_grpc.ToolSynthServicer):
    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs

    async def SubmitSynthesis(self, request: pb.SynthesisRequest, context: Any) -> Any:
        spec = SynthesisSpec(
            count=request.count,
            seed=request.seed,
            dialog_mix=dict(request.dialog_mix),
            model=request.model,
            backend=request.backend or "remote",
            export_format=request.export_format or "openai",
            has_tools=bool(request.tools.key),
            parameters=struct_to_dict(request.parameters, "parameters"),
        ).validate()
        payload = {
            "spec": dataclasses.asdict(spec),
            "dataset_name": validate_name(request.dataset_name or "toolsynth", "dataset_name"),
            "tools": await asyncio.to_thread(self._tools, request.tools, "tools"),
            "benchmark_tools": await asyncio.to_thread(
                self._tools, request.benchmark_tools, "benchmark_tools"
            ),
        }
        record = await asyncio.to_thread(
            self.jobs.submit, "synthesize", payload, request.request_id
        )
        return job_to_pb(record)

    def _tools(self, ref: Any, field: str) -> dict[str, Any] | None:
        """A tools file checked at submit: KILN_MAX_TOOLS_BYTES, then valid tools, at most
        KILN_MAX_TOOLS of them."""
        if not ref.key:
            return None
        limits = self.settings
        checked = self.jobs.input(
            ref_from_pb(ref), field, limits.max_tools_bytes, "KILN_MAX_TOOLS_BYTES"
        )
        count = len(parse_tools(self.jobs.objects.get_bytes(ObjectRef.from_dict(checked)), field))
        if count > limits.max_tools:
            raise InvalidInput(
                field, f"{count:,} tools, over the limit of {limits.max_tools:,} (KILN_MAX_TOOLS)"
            )
        return checked

    async def Verify(self, request: pb.VerifyRequest, context: Any) -> pb.VerifyResponse:
        if request.category not in CATEGORIES:
            raise InvalidInput("category", f"must be one of {', '.join(CATEGORIES)}")
        functions = _json_list(request.functions_json, "functions_json")
        answers = _json_list(request.answer_json or "[]", "answer_json")
        detects_relevance = kind_of(request.category) in ("irrelevance", "relevance")
        if not detects_relevance and not answers:
            raise InvalidInput("answer_json", "the possible answer is required")
        for i, answer in enumerate(answers):
            if len(answer) != 1 or not isinstance(next(iter(answer.values())), dict):
                raise InvalidInput(f"answer_json[{i}]", "must be {name: {param: [values]}}")
        if detects_relevance:  # a text answer is an answer here: no call made
            result = grade_text(functions, request.calls, answers, request.category)
        else:
            result = grade(functions, parse_calls(request.calls), answers, request.category)
        return pb.VerifyResponse(valid=result.valid, errors=result.errors, detail=result.detail)


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    toolsynth_pb2_grpc.add_ToolSynthServicer_to_server(ToolSynthServicer(settings, jobs), server)
    return [pb.DESCRIPTOR.services_by_name["ToolSynth"].full_name]
