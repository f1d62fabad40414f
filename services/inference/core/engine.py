"""The inference engine (KServe's dataplane): generation, scoring and KV plans over the loaded
models, with no transport. The gRPC servicer only converts protobuf to these types and back.

A generation is routed here: tool use runs the tool-integrated loop; a request with KV
compression, or one that asks for hf, decodes on the model's continuous batcher over a kiln
cache; the rest runs on the model's own engine (vLLM streams its steps from a worker thread).
Each generation holds its request id until it ends, so Abort(request_id) stops it. Decoded
tokens become Deltas of new text (held back while the text ends inside a UTF-8 sequence, cut
at a stop string) and one Finished with usage and, when the cache was compressed, KV stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.common.admission import Admission
from services.common.errors import InvalidInput
from services.common.sandbox import SandboxLimits
from services.inference.core.tool_integrated import TIRConfig, generate_with_tools
from services.kv.budget import CacheGeometry, KVConfig, KVPlan, plan_kv, plan_prompt
from services.kv.decoder import KVStats
from services.llm.base import Prompt, SamplingParams, TokenScores, TokenStep, truncate_at_stop

ENGINES = ("", "hf", "vllm")  # "": the model's own, or hf when the cache is compressed


@dataclass(frozen=True)
class ToolUse:
    """Tool-integrated generation: up to max_rounds python blocks run in the sandbox."""

    max_rounds: int
    timeout_s: float = 10.0  # wall clock per block
    memory_bytes: int = SandboxLimits().memory_bytes

    def config(self) -> TIRConfig:
        if not 1 <= self.max_rounds <= 16:
            raise InvalidInput("tools.max_rounds", "must be in 1..16")
        if not 0 < self.timeout_s <= 120:
            raise InvalidInput("tools.timeout_s", "must be in 0..120 seconds")
        limits = SandboxLimits(
            cpu_seconds=max(1, int(self.timeout_s)),
            wall_seconds=self.timeout_s,
            memory_bytes=self.memory_bytes,
        )
        return TIRConfig(self.max_rounds, limits)


@dataclass(frozen=True)
class GenerateRequest:
    request_id: str  # names the generation for abort()
    model: str
    prompt: Prompt
    params: SamplingParams
    kv: KVConfig | None = None  # None: an uncompressed cache
    engine: str = ""  # one of ENGINES
    tools: ToolUse | None = None


@dataclass
class Delta:
    """New text and the tokens that made it. token_texts (with logprobs) and top_texts (with
    top_logprobs) hold each token decoded alone."""

    text: str
    steps: list[TokenStep]
    token_texts: list[str] = field(default_factory=list)
    top_texts: list[list[str]] = field(default_factory=list)


@dataclass
class Finished:
    text: str
    token_ids: list[int]
    logprobs: list[float]  # with params.logprobs, else empty
    finish_reason: str  # stop | length | abort
    engine: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 1
    kv_stats: KVStats | None = None
    tool_rounds: int = 0


Output = Delta | Finished


class Models(Protocol):
    """The loaded models (services.inference.registry.ModelRegistry)."""

    def get(self, name: str) -> Any: ...

    def hf_backend(self, model: Any) -> Any: ...


class InferenceEngine:
    def __init__(self, models: Models, admission: Admission) -> None:
        """admission bounds the Score, vLLM and tool-use calls running at once (hf
        generations queue on each model's continuous batcher instead)."""
        self.models = models
        self.admission = admission
        self.running: dict[str, threading.Event] = {}

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Output]:
        """Deltas of the generation, then one Finished."""
        if not request.request_id:
            raise InvalidInput("request_id", "required: it names the request for Abort")
        if request.engine not in ENGINES:
            raise InvalidInput("engine", "must be empty (auto), hf or vllm")
        kv = request.kv
        if request.engine == "vllm" and kv is not None:
            raise InvalidInput(
                "engine",
                "vLLM has no token eviction or KIVI cache; KV compression runs on hf "
                "(leave engine empty)",
            )
        if request.tools is not None and kv is not None:
            raise InvalidInput("tools", "tool use and KV compression do not combine")
        model = self.models.get(request.model)
        if request.engine == "vllm" and model.engine != "vllm":
            raise InvalidInput(
                "engine",
                f"model {request.model!r} is loaded on {model.engine}; load it with engine vllm",
            )
        if request.request_id in self.running:
            raise InvalidInput("request_id", "a generation with this id is already running")
        abort = self.running[request.request_id] = threading.Event()
        try:
            if request.tools is not None:
                outputs = self._with_tools(model, request.prompt, request.params, request.tools)
            elif model.engine == "vllm" and kv is None and request.engine != "hf":
                outputs = self._on_vllm(model, request.prompt, request.params, abort)
            else:
                outputs = self._on_hf(model, request.prompt, request.params, kv, abort)
            async with aclosing(outputs):
                async for output in outputs:
                    yield output
        finally:
            abort.set()
            self.running.pop(request.request_id, None)

    def abort(self, request_id: str) -> bool:
        """Stops the running generation request_id (False when none runs)."""
        event = self.running.get(request_id)
        if event is not None:
            event.set()
        return event is not None

    async def score(
        self, model_name: str, prompts: list[Prompt], continuations: list[str]
    ) -> list[TokenScores]:
        """Per-token log-probs of each continuation given its prompt."""
        if not prompts:
            raise InvalidInput("items", "at least one item")
        for i, continuation in enumerate(continuations):
            if not continuation:
                raise InvalidInput(f"items[{i}].continuation", "must not be empty")
        model = self.models.get(model_name)
        async with self.admission.slot():
            return await asyncio.to_thread(model.backend.score, prompts, continuations)

    def plan(self, model_name: str, kv: KVConfig, sequence_length: int) -> KVPlan:
        """The bits and tokens kv keeps of a prompt of sequence_length tokens."""
        return plan_kv(kv, sequence_length, self.geometry(model_name))

    def geometry(self, model_name: str) -> CacheGeometry:
        return self.models.get(model_name).geometry

    async def _on_hf(
        self,
        model: Any,
        prompt: Prompt,
        params: SamplingParams,
        kv: KVConfig | None,
        abort: threading.Event,
    ) -> AsyncIterator[Output]:
        """The kiln cache on the model's continuous batcher, which admits or refuses it."""
        backend = self.models.hf_backend(model)
        prompt_ids = backend.encode(prompt, params.max_tokens)
        planned = plan_prompt(kv or KVConfig(), prompt_ids, model.geometry)
        seq = backend.sequence(planned, params, abort)
        async with aclosing(backend.batcher.run_async(seq)) as decoded:
            outputs = detokenize(decoded, backend.tokenizer, params, abort)
            async for output in outputs:
                if isinstance(output, Finished):
                    output.engine, output.prompt_tokens = "hf", len(prompt_ids)
                    output.kv_stats = seq.stats if kv is not None else None
                yield output

    async def _on_vllm(
        self, model: Any, prompt: Prompt, params: SamplingParams, abort: threading.Event
    ) -> AsyncIterator[Output]:
        """vLLM's engine, one step at a time in a worker thread: tokens stream as they come."""
        backend = model.backend
        prompt_ids = backend.encode(prompt, params.max_tokens)
        async with self.admission.slot():
            decoded = in_thread(lambda: backend.stream_ids(prompt_ids, params, abort))
            async with aclosing(decoded):
                async for output in detokenize(decoded, backend.tokenizer, params, abort):
                    if isinstance(output, Finished):
                        output.engine, output.prompt_tokens = "vllm", len(prompt_ids)
                    yield output

    async def _with_tools(
        self, model: Any, prompt: Prompt, params: SamplingParams, tools: ToolUse
    ) -> AsyncIterator[Output]:
        """Tool-integrated generation: one Delta with the whole text (model turns and output
        blocks), then Finished."""
        config = tools.config()
        async with self.admission.slot():
            result = await asyncio.to_thread(
                generate_with_tools, model.backend, prompt, params, config
            )
        yield Delta(result.text, [])
        yield Finished(
            result.text,
            [],
            [],
            result.finish_reason,
            model.engine,
            completion_tokens=result.completion_tokens,
            calls=len(result.rounds) + 1,
            tool_rounds=len(result.rounds),
        )


async def detokenize(
    decoded: AsyncIterator[TokenStep], tokenizer: Any, params: SamplingParams, abort: Any
) -> AsyncIterator[Output]:
    """Decoded tokens as Deltas of new text, then Finished (whose engine, prompt_tokens and
    kv_stats are the caller's to set)."""
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
            yield delta(text[len(sent_text) :], steps[sent_tokens:], tokenizer, params)
            sent_text, sent_tokens = text, len(tokens)
        if finish == "stop":
            break
    if abort.is_set() and finish != "stop":
        finish = "abort"
    logprobs = [logprob for _, logprob, _ in steps] if params.logprobs else []
    yield Finished(sent_text, tokens, logprobs, finish, "", completion_tokens=len(tokens))


def delta(text: str, steps: list[TokenStep], tokenizer: Any, params: SamplingParams) -> Delta:
    out = Delta(text, steps)
    if params.logprobs:
        out.token_texts = [tokenizer.decode([token]) for token, _, _ in steps]
    if params.top_logprobs:
        out.top_texts = [[tokenizer.decode([token]) for token, _ in top] for _, _, top in steps]
    return out


_END = object()


async def in_thread(make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
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
