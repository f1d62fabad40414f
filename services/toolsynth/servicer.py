"""kiln.toolsynth.v1.ToolSynth: protobuf <-> core; thin."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from kiln.toolsynth.v1 import toolsynth_pb2, toolsynth_pb2_grpc
from services.common.jobs import JobManager
from services.common.settings import Settings


class ToolSynthServicer(toolsynth_pb2_grpc.ToolSynthServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (the generated base class)."""

    def __init__(self, settings: Settings, jobs: JobManager) -> None:
        self.settings = settings
        self.jobs = jobs


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    toolsynth_pb2_grpc.add_ToolSynthServicer_to_server(ToolSynthServicer(settings, jobs), server)
    return [toolsynth_pb2.DESCRIPTOR.services_by_name["ToolSynth"].full_name]
