"""kiln.trainer.v1.Trainer: protobuf <-> core; thin."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from kiln.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.common.jobs import JobManager
from services.common.settings import Settings


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class)."""

    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(settings, jobs), server)
    return [trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name]
