"""kiln.inference.v1.Inference: protobuf <-> core; thin."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from kiln.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.jobs import JobManager
from services.common.settings import Settings


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class)."""

    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(settings, jobs), server)
    return [inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name]
