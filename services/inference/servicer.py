"""kiln.inference.v1.Inference: protobuf <-> core; thin.

Generate streams chunks and ends with a complete message carrying usage, the engine that ran
it and, when the KV cache was compressed, KV stats. A request with KV compression runs on hf
(the kiln cache); others run on the model's engine. Each running generation holds a slot;
Abort (by request_id) or the client cancelling the stream stops its decode loop and frees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
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
from services.common.sandbox import SandboxLimits
from services.common.settings import Settings
from services.inference.core.tool_integrated import TIRConfig, generate_with_tools
from services.inference.registry import DEFAULT_DTYPE, ModelRegistry, check_model_name
from services.kv.budget import KVConfig, plan_kv
from services.kv.decoder import KVStats
from services.llm.base import Prompt, SamplingParams, TokenStep, truncate_at_stop
from services.llm.tokens import encode_prompt


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


def kv_from_pb(kv: pb.KVCompression) -> KVConfig | None:
    """None when the request asks for no compression at all."""
    budget = kv.WhichOneof("budget")
    if kv.method in ("", "none") and kv.bits in (0, 16) and not budget:
        return None
    return KVConfig(
        method=kv.method or "none",
        bits=kv.bits,
        budget_bytes=kv.budget_bytes,
        budget_fp16_tokens=kv.budget_fp16_tokens,
        group_size=kv.group_size or 32,
        residual_length=kv.residual_length or 32,
        window_size=kv.window_size,
        kernel_size=kv.kernel_size or 7,
        pooling=kv.pooling or "avgpool",
        sink_tokens=kv.sink_tokens if kv.HasField("sink_tokens") else 4,
        recent_ratio=kv.recent_ratio if kv.HasField("recent_ratio") else 0.5,
        pyramid_beta=kv.pyramid_beta or 20,
        query_aware=not kv.query_agnostic,
        question_tokens=kv.question_tokens,
        compress_decode=kv.compress_decode,
    )


def kv_stats_to_pb(stats: KVStats) -> pb.KVStats:
    return pb.KVStats(
        bytes_used=stats.bytes_used,
        bytes_full=stats.bytes_full,
        tokens_kept_per_layer=stats.plan.tokens_per_layer,
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


def _chunk(
    text: str, steps: list[TokenStep], tokenizer: Any, params: SamplingParams
) -> pb.GenerateChunk:
    chunk = pb.GenerateChunk(text=text, token_ids=[token for token, _, _ in steps])
    if params.logprobs:
        chunk.logprobs.extend(logprob for _, logprob, _ in steps)
        chunk.tokens.extend(tokenizer.decode([token]) for token, _, _ in steps)
    for _, _, top in steps if params.top_logprobs else ():
        chunk.top_logprobs.add(
            token_ids=[token for token, _ in top],
            tokens=[tokenizer.decode([token]) for token, _ in top],
            logprobs=[logprob for _, logprob in top],
        )
    return chunk


async def _responses(
    decoded: AsyncIterator[TokenStep],
    tokenizer: Any,
    prompt: Prompt,
    params: SamplingParams,
    abort: threading.Event,
) -> AsyncIterator[pb.GenerateResponse]:
    """Decoded tokens as Generate chunks of new text (held back while the text ends inside a
    UTF-8 sequence; cut at a stop string), then the complete message (its engine and KV stats
    are the caller's to set)."""
    steps: list[TokenStep] = []
    tokens: list[int] = []
    sent_text, sent_tokens, finish = "", 0, "length"
    async for step in decoded:
        steps.append(step)
        tokens.append(step[0])
        text, stopped = truncate_at_stop(
            tokenizer.decode(tokens, skip_special_tokens=True), params.stop
        )
        if stopped or step[0] == tokenizer.eos_token_id:
            finish = "stop"
        if text != sent_text and not text.endswith("\ufffd"):
            chunk = _chunk(text[len(sent_text) :], steps[sent_tokens:], tokenizer, params)
            yield pb.GenerateResponse(chunk=chunk)
            sent_text, sent_tokens = text, len(tokens)
        if finish == "stop":
            break
    if abort.is_set() and finish != "stop":
        finish = "abort"
    yield pb.GenerateResponse(
        complete=pb.GenerateComplete(
            text=sent_text,
            token_ids=tokens,
            logprobs=[logprob for _, logprob, _ in steps] if params.logprobs else [],
            finish_reason=finish,
            usage=common_pb2.Usage(
                prompt_tokens=len(encode_prompt(tokenizer, prompt)),
                completion_tokens=len(tokens),
                calls=1,
            ),
        )
    )


_END = object()


async def _in_thread(make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
    """The items of a blocking iterator, produced in a worker thread and yielded on the event
    loop. Closing early stops the thread after its current item and closes the iterator there."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def put(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed
            loop.call_soon_threadsafe(items.put_nowait, item)

    def run() -> None:
        iterator = make()
        try:
            for item in iterator:
                put(item)
                if stop.is_set():
                    break
        except BaseException as exc:
            put(exc)
        finally:
            getattr(iterator, "close", lambda: None)()
            put(_END)

    worker = loop.run_in_executor(None, run)
    try:
        while (item := await items.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        await worker


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
        self.admission = Admission(
            settings.max_concurrent_generations or default_generation_slots(),
            settings.max_waiting_generations,
            "Score, vLLM and tool-use calls",
            "KILN_MAX_WAITING_GENERATIONS",
        )
        self.running: dict[str, threading.Event] = {}

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        if not request.request_id:
            raise InvalidInput("request_id", "required: it names the request for Abort")
        prompt = prompt_from_pb(request, "input")
        params = sampling_from_pb(request.sampling)
        kv = kv_from_pb(request.kv)
        if request.engine not in ("", "hf", "vllm"):
            raise InvalidInput("engine", "must be empty (auto), hf or vllm")
        if request.engine == "vllm" and kv is not None:
            raise InvalidInput(
                "engine",
                "vLLM has no token eviction or KIVI cache; KV "
                "compression runs on hf (leave engine empty)",
            )
        model = self.registry.get(request.model)
        if request.engine == "vllm" and model.engine != "vllm":
            raise InvalidInput(
                "engine",
                f"model {request.model!r} is loaded on {model.engine}; load it with engine vllm",
            )
        if kv is not None:
            kv.validate(model.geometry.head_dim)
        if request.request_id in self.running:
            raise InvalidInput("request_id", "a generation with this id is already running")
        use_vllm = model.engine == "vllm" and kv is None and request.engine != "hf"
        abort = threading.Event()
        self.running[request.request_id] = abort
        try:
            if request.tools.max_rounds:
                if kv is not None:
                    raise InvalidInput("tools", "tool use and KV compression do not combine")
                stream = self._in_slot(
                    self._generate_with_tools(model, prompt, params, request.tools)
                )
            elif use_vllm:
                stream = self._in_slot(self._generate_vllm(model, prompt, params, abort))
            else:  # the model's continuous batcher admits it
                stream = self._generate_hf(model, prompt, params, kv, abort)
            started = time.perf_counter()
            async for response in stream:
                if response.WhichOneof("kind") == "complete":
                    record_generation(
                        request.model,
                        response.complete.usage.completion_tokens,
                        time.perf_counter() - started,
                        response.complete.kv_stats,
                    )
                yield response
        finally:
            abort.set()
            self.running.pop(request.request_id, None)

    async def _in_slot(
        self, stream: AsyncIterator[pb.GenerateResponse]
    ) -> AsyncIterator[pb.GenerateResponse]:
        """stream, run while holding one of the server's generation slots (or refused at once
        when the slots are taken and KILN_MAX_WAITING_GENERATIONS calls wait)."""
        async with self.admission.slot():
            async for response in stream:
                yield response

    async def _generate_with_tools(
        self, model: Any, prompt: Prompt, params: SamplingParams, tools: pb.ToolUse
    ) -> AsyncIterator[pb.GenerateResponse]:
        """Tool-integrated generation: one chunk per model turn and per output block."""
        if not 1 <= tools.max_rounds <= 16:
            raise InvalidInput("tools.max_rounds", "must be in 1..16")
        if not 0 <= tools.timeout_s <= 120:
            raise InvalidInput("tools.timeout_s", "must be in 0..120 seconds")
        limits = SandboxLimits(
            cpu_seconds=max(1, int(tools.timeout_s or 10)),
            wall_seconds=tools.timeout_s or 10,
            memory_bytes=tools.memory_bytes or SandboxLimits().memory_bytes,
        )
        result = await asyncio.to_thread(
            generate_with_tools, model.backend, prompt, params, TIRConfig(tools.max_rounds, limits)
        )
        yield pb.GenerateResponse(chunk=pb.GenerateChunk(text=result.text))
        yield pb.GenerateResponse(
            complete=pb.GenerateComplete(
                text=result.text,
                finish_reason=result.finish_reason,
                engine=model.engine,
                tool_rounds=len(result.rounds),
                usage=common_pb2.Usage(
                    completion_tokens=result.completion_tokens, calls=len(result.rounds) + 1
                ),
            )
        )

    async def _generate_vllm(
        self, model: Any, prompt: Prompt, params: SamplingParams, abort: threading.Event
    ) -> AsyncIterator[pb.GenerateResponse]:
        """vLLM's engine, one step at a time in a worker thread: tokens stream as they come."""
        backend = model.backend
        decoded = _in_thread(lambda: backend.stream(prompt, params, abort))
        async with aclosing(decoded):
            async for response in _responses(decoded, backend.tokenizer, prompt, params, abort):
                if response.WhichOneof("kind") == "complete":
                    response.complete.engine = "vllm"
                yield response

    async def _generate_hf(
        self,
        model: Any,
        prompt: Prompt,
        params: SamplingParams,
        kv: KVConfig | None,
        abort: threading.Event,
    ) -> AsyncIterator[pb.GenerateResponse]:
        backend = self.registry.hf_backend(model)
        seq = backend.sequence(prompt, params, abort, kv)
        async with aclosing(backend.batcher.run_async(seq)) as decoded:
            async for response in _responses(decoded, backend.tokenizer, prompt, params, abort):
                if response.WhichOneof("kind") == "complete":
                    response.complete.engine = "hf"
                    if kv is not None and seq.stats is not None:
                        response.complete.kv_stats.CopyFrom(kv_stats_to_pb(seq.stats))
                yield response

    async def PlanKV(
        self, request: pb.PlanKVRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlanKVResponse:
        model = self.registry.get(request.model)
        kv = kv_from_pb(request.kv) or KVConfig()
        plan = plan_kv(kv, request.sequence_length, model.geometry)
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
        if not request.items:
            raise InvalidInput("items", "at least one item")
        model = self.registry.get(request.model)
        prompts = [
            prompt_from_pb(item, f"items[{i}].input") for i, item in enumerate(request.items)
        ]
        continuations = [item.continuation for item in request.items]
        for i, continuation in enumerate(continuations):
            if not continuation:
                raise InvalidInput(f"items[{i}].continuation", "must not be empty")
        async with self.admission.slot():
            results = await asyncio.to_thread(model.backend.score, prompts, continuations)
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
        event = self.running.get(request.request_id)
        if event is not None:
            event.set()
        return pb.AbortResponse(aborted=event is not None)

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
