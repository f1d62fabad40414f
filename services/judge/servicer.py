"""kiln.judge.v1.Judge: protobuf <-> core; thin."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from kiln.judge.v1 import judge_pb2, judge_pb2_grpc
from services.common.jobs import JobManager
from services.common.settings import Settings


class JudgeServicer(judge_pb2_grpc.JudgeServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class)."""

    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    judge_pb2_grpc.add_JudgeServicer_to_server(JudgeServicer(settings, jobs), server)
    return [judge_pb2.DESCRIPTOR.services_by_name["Judge"].full_name]
