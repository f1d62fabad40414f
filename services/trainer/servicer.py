"""kiln.trainer.v1.Trainer: protobuf <-> core; thin. Training and data preparation run as
jobs on the trainer queue (services/trainer/tasks.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from kiln.trainer.v1 import trainer_pb2 as pb
from kiln.trainer.v1 import trainer_pb2_grpc
from services.common.errors import InvalidInput, NotFound
from services.common.jobs import JobManager
from services.common.jobs_servicer import job_to_pb
from services.common.objectstore import validate_key, validate_name
from services.common.protobuf import ref_from_pb, ref_to_pb, struct_to_dict
from services.common.settings import Settings
from services.trainer.checkpoints import list_checkpoints
from services.trainer.core.prepare import prepare_config
from services.trainer.core.training import TrainConfig


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs

    def _check_base(self, base_model: str) -> str:
        if not base_model:
            raise InvalidInput(
                "base_model", "a model folder or checkpoints/<run>/<step> is required"
            )
        if base_model.startswith("checkpoints/"):
            prefix = validate_key(base_model.strip("/"), "base_model")
            if not self.jobs.objects.is_committed(prefix):
                raise InvalidInput("base_model", f"{prefix} is not a committed checkpoint")
        return base_model

    async def SubmitTraining(self, request: pb.TrainingRequest, context: Any) -> Any:
        run_name = validate_name(request.run_name, "run_name")
        config = TrainConfig.from_hyperparameters(
            request.objective, struct_to_dict(request.hyperparameters, "hyperparameters")
        )
        if not request.datasets:
            raise InvalidInput("datasets", "at least one dataset ObjectRef is required")
        for i, ref in enumerate(request.datasets):
            if not ref.key:
                raise InvalidInput(f"datasets[{i}].key", "required")
        base = await asyncio.to_thread(self._check_base, request.base_model)
        datasets = [
            await asyncio.to_thread(self.jobs.input, ref_from_pb(r), f"datasets[{i}]")
            for i, r in enumerate(request.datasets)
        ]
        payload = {
            "run_name": run_name,
            "base_model": base,
            "datasets": datasets,
            "config": config.to_dict(),
        }
        record = await asyncio.to_thread(self.jobs.submit, "train", payload, request.request_id)
        return job_to_pb(record)

    async def PrepareData(self, request: pb.PrepareDataRequest, context: Any) -> Any:
        parameters = struct_to_dict(request.parameters, "parameters")
        prepare_config(request.method, parameters)
        if not request.model:
            raise InvalidInput("model", "name a model loaded on the inference service")
        if not request.dataset.key:
            raise InvalidInput("dataset", "an ObjectRef to a JSON Lines dataset is required")
        output_name = validate_name(request.output_name or request.method, "output_name")
        payload = {
            "method": request.method,
            "model": request.model,
            "dataset": await asyncio.to_thread(
                self.jobs.input, ref_from_pb(request.dataset), "dataset"
            ),
            "output_name": output_name,
            "parameters": parameters,
        }
        record = await asyncio.to_thread(self.jobs.submit, "prepare", payload, request.request_id)
        return job_to_pb(record)

    async def ListCheckpoints(
        self, request: pb.ListCheckpointsRequest, context: Any
    ) -> pb.ListCheckpointsResponse:
        found = await asyncio.to_thread(list_checkpoints, self.jobs.objects, request.run_name)
        if not found:
            raise NotFound(f"run {request.run_name!r} has no committed checkpoints")
        return pb.ListCheckpointsResponse(
            checkpoints=[
                pb.Checkpoint(
                    run_name=c.run_name,
                    step=c.step,
                    prefix=c.prefix,
                    manifest=ref_to_pb(c.manifest),
                    objective=c.meta.get("objective", ""),
                    merged=bool(c.meta.get("merged_weights")),
                )
                for c in found
            ]
        )


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(settings, jobs), server)
    return [pb.DESCRIPTOR.services_by_name["Trainer"].full_name]
