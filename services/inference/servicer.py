"""kiln.inference.v1.Inference: protobuf <-> core; thin.

Generate streams one chunk per decoded token batch and ends with a complete message. Each
running generation holds a slot; Abort (by request_id) or the client cancelling the stream
stops its decode loop and frees the slot. PlanKV and KV compression answer UNIMPLEMENTED
until the compressed cache lands.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2 as pb
from kiln.inference.v1 import inference_pb2_grpc
from services.common.errors import InvalidInput, Unimplemented
from services.common.jobs import JobManager
from services.common.models import fetch_checkpoint, resolve_local
from services.common.settings import Settings
from services.inference.core.registry import ModelRegistry
from services.llm.base import Prompt, SamplingParams, truncate_at_stop

_DONE = object()


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
        logprobs=sampling.return_logprobs,
    ).validate()


def require_uncompressed(kv: pb.KVCompression) -> None:
    if kv.method not in ("", "none") or kv.bits not in (0, 16) or kv.WhichOneof("budget"):
        raise Unimplemented("KV cache compression is not available in this build")


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(
        self, settings: Settings, jobs: JobManager, registry: ModelRegistry | None = None
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.registry = registry or ModelRegistry(settings.models_dir)
        self.slots = asyncio.Semaphore(settings.max_concurrent_generations)
        self.running: dict[str, threading.Event] = {}

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        if not request.request_id:
            raise InvalidInput("request_id", "required: it names the request for Abort")
        prompt = prompt_from_pb(request, "input")
        params = sampling_from_pb(request.sampling)
        require_uncompressed(request.kv)
        if request.engine not in ("", "hf"):
            raise Unimplemented(f"engine {request.engine!r} does not stream; use hf")
        model = self.registry.get(request.model)
        if model.engine != "hf":
            raise Unimplemented(
                f"model {model.name!r} runs on {model.engine}, which does not "
                "stream; load it with engine hf"
            )
        if request.request_id in self.running:
            raise InvalidInput("request_id", "a generation with this id is already running")
        abort = threading.Event()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def decode() -> None:
            try:
                for item in model.backend.stream(prompt, params, abort):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # delivered to the RPC, which maps it
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        tokenizer = model.backend.tokenizer
        async with self.slots:
            self.running[request.request_id] = abort
            worker = loop.run_in_executor(None, decode)
            tokens: list[int] = []
            logprobs: list[float] = []
            sent_text, sent_tokens, finish = "", 0, "length"
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise item
                    token, logprob = item
                    tokens.append(token)
                    logprobs.append(logprob)
                    text, stopped = truncate_at_stop(
                        tokenizer.decode(tokens, skip_special_tokens=True), params.stop
                    )
                    if stopped or token == tokenizer.eos_token_id:
                        finish = "stop"
                        abort.set()
                    if text != sent_text and not text.endswith("\ufffd"):
                        yield pb.GenerateResponse(
                            chunk=pb.GenerateChunk(
                                text=text[len(sent_text) :],
                                token_ids=tokens[sent_tokens:],
                                logprobs=logprobs[sent_tokens:] if params.logprobs else [],
                            )
                        )
                        sent_text, sent_tokens = text, len(tokens)
                    if finish == "stop":
                        break
                if abort.is_set() and finish != "stop":
                    finish = "abort"
                yield pb.GenerateResponse(
                    complete=pb.GenerateComplete(
                        text=sent_text,
                        token_ids=tokens,
                        logprobs=logprobs if params.logprobs else [],
                        finish_reason=finish,
                        usage=common_pb2.Usage(
                            prompt_tokens=self._prompt_tokens(model, prompt),
                            completion_tokens=len(tokens),
                            calls=1,
                        ),
                        engine=model.engine,
                    )
                )
            finally:
                abort.set()
                self.running.pop(request.request_id, None)
                await worker

    @staticmethod
    def _prompt_tokens(model: Any, prompt: Prompt) -> int:
        from services.llm.tokens import encode_prompt

        return len(encode_prompt(model.backend.tokenizer, prompt))

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
        async with self.slots:
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
        which = request.WhichOneof("source")
        if which == "local_path":
            folder = resolve_local(request.local_path)
            source = request.local_path
        elif which == "checkpoint":
            folder = await asyncio.to_thread(fetch_checkpoint, request.checkpoint)
            source = f"s3://{self.settings.bucket}/{request.checkpoint}"
        else:
            raise InvalidInput("source", "set local_path or checkpoint")
        loaded = await asyncio.to_thread(
            self.registry.load,
            request.name,
            folder,
            source,
            request.engine or "hf",
            request.dtype or "float32",
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
