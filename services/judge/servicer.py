"""kiln.judge.v1.Judge: protobuf <-> core; thin. One pair is judged in the server; datasets
are evaluated and crowd-sampled as jobs on the judge queue (services/judge/tasks.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import grpc

from kiln.common.v1 import common_pb2
from kiln.judge.v1 import judge_pb2 as pb
from kiln.judge.v1 import judge_pb2_grpc
from services.common.admission import Admission
from services.common.errors import InvalidInput
from services.common.jobs import JobManager
from services.common.jobs_servicer import job_to_pb
from services.common.objectstore import ObjectRef, validate_name
from services.common.protobuf import ref_from_pb, struct_from_dict, struct_to_dict
from services.common.settings import Settings
from services.judge.core.dataplane import (
    JudgeSpec,
    check_budget,
    judge_pair,
    make_context,
    planned_calls,
)
from services.judge.core.datasets import PairItem, load_pairs, parse_file
from services.judge.core.evaluation import ItemResult
from services.judge.core.judging import Outcome
from services.judge.core.metrics import unswap
from services.llm.base import Usage
from services.llm.runtime import backend_factory, response_cache


def spec_from_pb(config: pb.JudgeConfig, default_strategy: str = "vanilla") -> JudgeSpec:
    return JudgeSpec(
        strategy=config.strategy or default_strategy,
        model=config.model,
        backend=config.backend or "remote",
        k=config.k if config.HasField("k") else None,
        both_orders=not config.single_order,
        combine=config.combine or "net_vote",
        verdict_format=config.verdict_format or "mtbench",
        max_tokens=config.max_tokens or 512,
        seed=config.seed,
        max_calls=config.max_calls,
        parameters=struct_to_dict(config.parameters, "config.parameters"),
    ).validate()


def _order_pb(outcome: Outcome, swapped: bool) -> pb.OrderJudgment:
    return pb.OrderJudgment(
        winner=str(unswap(outcome.winner) if swapped else outcome.winner),
        text=outcome.text,
        details=struct_from_dict(outcome.details),
    )


def judge_response(result: ItemResult, usage: Usage) -> pb.JudgeResponse:
    response = pb.JudgeResponse(
        verdict=str(result.verdict),
        forward=_order_pb(result.forward, False),
        usage=common_pb2.Usage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            calls=usage.calls,
            cached_calls=usage.cached_calls,
        ),
        usage_by_stage=struct_from_dict(usage.by_stage),
    )
    if result.swapped is not None:
        response.swapped.CopyFrom(_order_pb(result.swapped, True))
    return response


def _limit(limit: int) -> int:
    if limit < 0:
        raise InvalidInput("limit", "must be >= 0 (0: every item)")
    return limit


class JudgeServicer(judge_pb2_grpc.JudgeServicer):
    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs
        self._cache = None
        self.admission = Admission(
            settings.max_concurrent_judgments,
            settings.max_waiting_judgments,
            "Judge calls",
            "KILN_MAX_WAITING_JUDGMENTS",
        )

    async def Judge(self, request: pb.JudgeRequest, context: Any) -> pb.JudgeResponse:
        spec = spec_from_pb(request.config)
        item = PairItem(request.instruction, request.response_a, request.response_b, None)
        if self._cache is None:
            self._cache = response_cache(self.settings)
        ctx = make_context(spec, backend_factory(self.settings, spec.backend), self._cache)
        check_budget(spec, planned_calls(spec, [item]))
        async with self.admission.slot():
            result = await asyncio.to_thread(judge_pair, ctx, spec, item)
        return judge_response(result, ctx.usage)

    def _items(self, request: pb.EvaluationRequest) -> tuple[dict[str, Any], list[PairItem]]:
        """The checked dataset ref (payload JSON) and its pairs, cut to request.limit."""
        if not request.dataset.key:
            raise InvalidInput("dataset", "an ObjectRef to a pair dataset is required")
        dataset = self.jobs.input(ref_from_pb(request.dataset), "dataset")
        items = load_pairs(parse_file(self.jobs.objects.get_bytes(ObjectRef.from_dict(dataset))))
        return dataset, items[: _limit(request.limit)] if request.limit else items

    async def EstimateEvaluation(
        self, request: pb.EvaluationRequest, context: Any
    ) -> pb.EvaluationEstimate:
        spec = spec_from_pb(request.config)
        _, items = await asyncio.to_thread(self._items, request)
        planned = planned_calls(spec, items)
        total = sum(planned.values())
        return pb.EvaluationEstimate(
            items=len(items),
            calls=total,
            calls_by_stage=struct_from_dict(planned),
            within_budget=not spec.max_calls or total <= spec.max_calls,
        )

    async def SubmitEvaluation(self, request: pb.EvaluationRequest, context: Any) -> Any:
        spec = spec_from_pb(request.config)
        if request.distill and spec.strategy not in ("cce", "cce+reviseval"):
            raise InvalidInput("distill", "distillation exports CCE judgments: use strategy cce")
        if not 0 <= request.batch_size <= 1024:
            raise InvalidInput("batch_size", "must be in 0..1024 (0: 32)")
        dataset, items = await asyncio.to_thread(self._items, request)
        check_budget(spec, planned_calls(spec, items))
        payload = {
            "spec": dataclasses.asdict(spec),
            "dataset": dataset,
            "limit": request.limit,
            "distill": request.distill,
            "batch_size": request.batch_size or 32,
        }
        record = await asyncio.to_thread(self.jobs.submit, "evaluate", payload, request.request_id)
        return job_to_pb(record)

    async def SubmitCrowdSampling(self, request: pb.CrowdSamplingRequest, context: Any) -> Any:
        spec = spec_from_pb(request.config, default_strategy="cce")
        if not request.prompts.key:
            raise InvalidInput(
                "prompts", "an ObjectRef to a JSON Lines file of prompts is required"
            )
        if not 2 <= len(request.policies) <= 16 or any(not p for p in request.policies):
            raise InvalidInput("policies", "name 2..16 policy models")
        if not 0.0 <= request.temperature <= 2.0:
            raise InvalidInput("temperature", "must be in 0..2")
        if not 0 <= request.max_tokens <= 32768:
            raise InvalidInput("max_tokens", "must be in 0..32768 (0: 512)")
        name = validate_name(request.dataset_name or "crowd-sampling", "dataset_name")
        payload = {
            "spec": dataclasses.asdict(spec),
            "prompts": await asyncio.to_thread(
                self.jobs.input, ref_from_pb(request.prompts), "prompts"
            ),
            "policies": list(request.policies),
            "dataset_name": name,
            "sampling": {
                "max_tokens": request.max_tokens or 512,
                "temperature": request.temperature,
            },
        }
        record = await asyncio.to_thread(
            self.jobs.submit, "crowd_sampling", payload, request.request_id
        )
        return job_to_pb(record)


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    judge_pb2_grpc.add_JudgeServicer_to_server(JudgeServicer(settings, jobs), server)
    return [pb.DESCRIPTOR.services_by_name["Judge"].full_name]
