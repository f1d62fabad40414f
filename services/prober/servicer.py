"""kiln.prober.v1.Prober: protobuf <-> core; thin. The model is served by the inference
service and reached through the `remote` backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from kiln.prober.v1 import prober_pb2 as pb
from kiln.prober.v1 import prober_pb2_grpc
from services.common.errors import InvalidInput
from services.common.jobs import JobManager
from services.common.jobs_servicer import job_to_pb
from services.common.protobuf import ref_from_pb
from services.common.settings import Settings
from services.llm.base import Backend
from services.prober.core.dataplane import (
    ResampleConfig,
    probe_config,
    probe_items,
    select,
    validate_item,
)
from services.prober.core.probing import ProbeItem
from services.prober.core.trajectory import Trajectory


def remote_backend_factory(settings: Settings) -> Callable[[str], Backend]:
    def create(model: str) -> Backend:
        from services.llm.remote import RemoteBackend

        return RemoteBackend(model, target=settings.target("inference"))

    return create


def trajectory_to_pb(t: Trajectory) -> pb.Trajectory:
    return pb.Trajectory(
        steps=[
            pb.ProbeStep(
                step=s.step, answer=s.answer, confidence=s.confidence, option_probs=s.distribution
            )
            for s in t.steps
        ],
        early_answer=t.early_answer,
        mind_changes=t.mind_changes,
        change_positions=t.change_positions,
        final_answer=t.final_answer,
        final_confidence=t.final_confidence,
        graded=t.correct is not None,
        correct=bool(t.correct),
        unstable=t.unstable,
    )


def require_model(model: str) -> str:
    if not model:
        raise InvalidInput("model", "name a model loaded on the inference service")
    return model


class ProberServicer(prober_pb2_grpc.ProberServicer):
    def __init__(
        self,
        settings: Settings,
        jobs: JobManager,
        backend_for: Callable[[str], Backend] | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.backend_for = backend_for or remote_backend_factory(settings)

    async def Probe(
        self, request: pb.ProbeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ProbeResponse:
        item = validate_item(
            ProbeItem(
                request.item.question,
                request.item.reasoning,
                tuple(request.item.options),
                request.item.gold or None,
            )
        )
        config = probe_config(request.step_mode, request.raw_prompt)
        backend = self.backend_for(require_model(request.model))
        (trajectory,) = await asyncio.to_thread(probe_items, backend, [item], config)
        return pb.ProbeResponse(trajectory=trajectory_to_pb(trajectory))

    async def Select(
        self, request: pb.SelectRequest, context: grpc.aio.ServicerContext
    ) -> pb.SelectResponse:
        config = probe_config(request.step_mode, request.raw_prompt)
        backend = self.backend_for(require_model(request.model))
        resample = ResampleConfig(
            rounds=request.resample_rounds, temperature=request.resample_temperature or 0.8
        )
        result = await asyncio.to_thread(
            select,
            backend,
            request.question,
            list(request.options),
            list(request.candidates),
            request.scorer,
            config,
            resample,
        )
        return pb.SelectResponse(
            ranked=[
                pb.RankedCandidate(index=r.index, answer=r.answer, score=r.score)
                for r in result.ranked
            ],
            majority_answer=result.majority,
            trajectories=[trajectory_to_pb(t) for t in result.trajectories],
            chains=result.chains,
            resampled=result.resampled,
        )

    async def SubmitProbe(
        self, request: pb.SubmitProbeRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        probe_config(request.step_mode)
        if not request.dataset.key:
            raise InvalidInput("dataset", "an ObjectRef to a JSON Lines dataset is required")
        model = require_model(request.model)
        dataset = await asyncio.to_thread(self.jobs.input, ref_from_pb(request.dataset), "dataset")
        payload = {
            "model": model,
            "dataset": dataset,
            "step_mode": request.step_mode or "lines",
            "raw_prompt": request.raw_prompt,
        }
        record = await asyncio.to_thread(self.jobs.submit, "probe", payload, request.request_id)
        return job_to_pb(record)


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    prober_pb2_grpc.add_ProberServicer_to_server(ProberServicer(settings, jobs), server)
    return [pb.DESCRIPTOR.services_by_name["Prober"].full_name]
