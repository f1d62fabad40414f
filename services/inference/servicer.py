"""kiln.inference.v1.Inference: protobuf <-> the inference engine (core/engine.py), nothing
else. Generate streams the engine's Deltas as chunks and its Finished as the complete message;
Abort, or the client cancelling the stream, stops the generation."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import grpc

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2 as pb
from kiln.inference.v1 import inference_pb2_grpc
from services.common.admission import Admission
from services.common.errors import InvalidInput
from services.common.jobs import JobManager
from services.common.metrics import record_generation
from services.common.models import resolve_model
from services.common.settings import Settings
from services.inference.core.engine import (
    Delta,
    Finished,
    GenerateRequest,
    InferenceEngine,
    Output,
    ToolUse,
)
from services.inference.registry import DEFAULT_DTYPE, ModelRegistry, check_model_name
from services.kv.budget import KVConfig
from services.kv.decoder import KVStats
from services.llm.base import Prompt, SamplingParams


def prompt_from_pb(message: Any, field: str) -> Prompt:
    which = message.WhichOneof("input")
    if which == "prompt":
        return message.prompt
    if which == "messages":
        return [{"role": m.role, "content": m.content} for m in message.messages.messages]
    raise InvalidInput(field, "set prompt or messages")


def sampling_from_pb(sampling: pb.SamplingParams) -> SamplingParams:
    return SamplingParams(
        max_tokens=sampling.max_tokens or 64,
        temperature=sampling.temperature,
        top_p=sampling.top_p or 1.0,
        top_k=sampling.top_k,
        seed=sampling.seed if sampling.HasField("seed") else None,
        stop=tuple(sampling.stop),
        logprobs=sampling.return_logprobs or sampling.top_logprobs > 0,
        top_logprobs=sampling.top_logprobs,
    ).validate()


KV_FIELDS = (  # KVCompression fields read as they are; 0 or "" leaves KVConfig's default
    "method",
    "bits",
    "budget_bytes",
    "budget_fp16_tokens",
    "group_size",
    "residual_length",
    "window_size",
    "kernel_size",
    "pooling",
    "pyramid_beta",
    "question_tokens",
    "compress_decode",
    "adakv",
)
KV_OPTIONAL = ("sink_tokens", "recent_ratio", "adakv_safeguard")  # proto3 optional: 0 is set


def kv_from_pb(kv: pb.KVCompression) -> KVConfig | None:
    """None when the request asks for no compression at all."""
    if kv.method in ("", "none") and kv.bits in (0, 16) and not kv.WhichOneof("budget"):
        return None
    settings: dict[str, Any] = {name: getattr(kv, name) for name in KV_FIELDS if getattr(kv, name)}
    settings.update({name: getattr(kv, name) for name in KV_OPTIONAL if kv.HasField(name)})
    return KVConfig(query_aware=not kv.query_agnostic, **settings)


def kv_stats_to_pb(stats: KVStats) -> pb.KVStats:
    return pb.KVStats(
        bytes_used=stats.bytes_used,
        bytes_full=stats.bytes_full,
        tokens_kept_per_layer=stats.plan.tokens_per_layer,
        tokens_kept_per_head=[n for layer in stats.kept_per_head for n in layer],
        bits=stats.plan.bits,
        method=stats.plan.method,
        bytes_planned=stats.plan.bytes,
        reason=stats.plan.reason,
    )


def default_generation_slots() -> int:
    """Concurrent Score, vLLM and tool-use calls per server (hf streams are batched instead):
    8 on a GPU; on CPU one per 4 cores, since their threads compete for the same cores and
    the GIL (benchmarks/load.py, 2 cores: 8 slots gave 0.45x the sequential throughput, 1
    slot 1.01x)."""
    import torch

    return 8 if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // 4)


def torch_device(configured: str) -> str:
    """The configured device, or cuda when a GPU is visible, else cpu."""
    import torch

    return configured or ("cuda" if torch.cuda.is_available() else "cpu")


def generate_request_from_pb(request: pb.GenerateRequest) -> GenerateRequest:
    tools = request.tools
    tool_use = None
    if tools.max_rounds:
        settings = {"timeout_s": tools.timeout_s, "memory_bytes": tools.memory_bytes}
        tool_use = ToolUse(tools.max_rounds, **{k: v for k, v in settings.items() if v})
    return GenerateRequest(
        request.request_id,
        request.model,
        prompt_from_pb(request, "input"),
        sampling_from_pb(request.sampling),
        kv_from_pb(request.kv),
        request.engine,
        tool_use,
    )


def output_to_pb(output: Output, params: SamplingParams) -> pb.GenerateResponse:
    if isinstance(output, Delta):
        chunk = pb.GenerateChunk(text=output.text, token_ids=[t for t, _, _ in output.steps])
        if params.logprobs:
            chunk.logprobs.extend(logprob for _, logprob, _ in output.steps)
            chunk.tokens.extend(output.token_texts)
        for (_, _, top), texts in zip(output.steps, output.top_texts, strict=False):
            chunk.top_logprobs.add(
                token_ids=[token for token, _ in top],
                tokens=texts,
                logprobs=[logprob for _, logprob in top],
            )
        return pb.GenerateResponse(chunk=chunk)
    complete = pb.GenerateComplete(
        text=output.text,
        token_ids=output.token_ids,
        logprobs=output.logprobs,
        finish_reason=output.finish_reason,
        engine=output.engine,
        tool_rounds=output.tool_rounds,
        usage=common_pb2.Usage(
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            calls=output.calls,
        ),
    )
    if output.kv_stats is not None:
        complete.kv_stats.CopyFrom(kv_stats_to_pb(output.kv_stats))
    return pb.GenerateResponse(complete=complete)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(
        self, settings: Settings, jobs: JobManager, registry: ModelRegistry | None = None
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.registry = registry or ModelRegistry(
            settings.effective_models_dir,
            torch_device(settings.device),
            settings.decode_batch,
            settings.vllm_kv_cache_bytes,
            settings.max_waiting_generations,
        )
        admission = Admission(
            settings.max_concurrent_generations or default_generation_slots(),
            settings.max_waiting_generations,
            "Score, vLLM and tool-use calls",
            "KILN_MAX_WAITING_GENERATIONS",
        )
        self.engine = InferenceEngine(self.registry, admission)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        generation = generate_request_from_pb(request)
        started = time.perf_counter()
        async with aclosing(self.engine.generate(generation)) as outputs:
            async for output in outputs:
                response = output_to_pb(output, generation.params)
                if isinstance(output, Finished):
                    record_generation(
                        request.model,
                        output.completion_tokens,
                        time.perf_counter() - started,
                        response.complete.kv_stats,
                    )
                yield response

    async def PlanKV(
        self, request: pb.PlanKVRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlanKVResponse:
        plan = self.engine.plan(
            request.model, kv_from_pb(request.kv) or KVConfig(), request.sequence_length
        )
        return pb.PlanKVResponse(
            bits=plan.bits,
            tokens_kept=plan.tokens_kept,
            tokens_kept_per_layer=plan.tokens_per_layer,
            bytes=plan.bytes,
            bytes_full=plan.bytes_full,
            reason=plan.reason,
        )

    async def Score(
        self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponse:
        prompts = [
            prompt_from_pb(item, f"items[{i}].input") for i, item in enumerate(request.items)
        ]
        continuations = [item.continuation for item in request.items]
        results = await self.engine.score(request.model, prompts, continuations)
        return pb.ScoreResponse(
            results=[
                pb.TokenScores(token_ids=r.token_ids, logprobs=r.logprobs, total_logprob=r.total)
                for r in results
            ],
            usage=common_pb2.Usage(
                prompt_tokens=sum(r.prompt_tokens + len(r.token_ids) for r in results),
                calls=len(results),
            ),
        )

    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        check_model_name(request.name)
        which = request.WhichOneof("source")
        if which is None:
            raise InvalidInput("source", "set local_path or checkpoint")
        source = getattr(request, which)
        resolved = await asyncio.to_thread(
            resolve_model, source, list(request.adapters), which, self.settings
        )
        if which == "checkpoint":
            source = f"s3://{self.settings.bucket}/{source}"
        loaded = await asyncio.to_thread(
            self.registry.load,
            request.name,
            resolved.base,
            source,
            request.engine or "hf",
            request.dtype or DEFAULT_DTYPE,
            request.kv_cache_dtype,
            resolved.adapters,
        )
        return self._info(loaded)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[self._info(m) for m in self.registry.list()])

    async def Abort(
        self, request: pb.AbortRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbortResponse:
        return pb.AbortResponse(aborted=self.engine.abort(request.request_id))

    @staticmethod
    def _info(model: Any) -> pb.ModelInfo:
        return pb.ModelInfo(
            name=model.name,
            source=model.source,
            engine=model.engine,
            dtype=model.dtype,
            adapters=model.adapters,
            **model.describe(),
        )


def register(server: grpc.aio.Server, settings: Settings, jobs: JobManager) -> Sequence[str]:
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(settings, jobs), server)
    return [pb.DESCRIPTOR.services_by_name["Inference"].full_name]
