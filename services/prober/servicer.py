"""kiln.prober.v1.Prober: protobuf <-> core; thin."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from kiln.prober.v1 import prober_pb2, prober_pb2_grpc
from services.common.jobs import JobManager
from services.common.settings import Settings


class ProberServicer(prober_pb2_grpc.ProberServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class)."""

    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    prober_pb2_grpc.add_ProberServicer_to_server(ProberServicer(settings, jobs), server)
    return [prober_pb2.DESCRIPTOR.services_by_name["Prober"].full_name]
