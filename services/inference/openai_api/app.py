"""The OpenAI-compatible HTTP API: a FastAPI app that is a gRPC client of the inference and
judge services (so it scales on its own), in OpenAI's request, response, streaming and error
shapes.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models[/{id}]
    POST /v1/judge (kiln's)     GET /health (liveness)  GET /ready (inference reachable)

Each of the n choices of a request is one Generate stream; streamed responses are server-sent
events ending with `data: [DONE]`, with a usage chunk before it when
stream_options.include_usage is set. Every choice's final chunk (and every non-streamed
response) carries a `kiln` object with the engine and, for a compressed cache, its KV stats.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import grpc
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf.json_format import MessageToDict, ParseDict

from kiln.inference.v1 import inference_pb2 as pb
from kiln.inference.v1 import inference_pb2_grpc
from kiln.judge.v1 import judge_pb2, judge_pb2_grpc
from services.common.clients import call_metadata, open_aio_channel
from services.common.errors import InvalidInput
from services.common.settings import Settings
from services.inference.openai_api.convert import (
    TextLogprobs,
    chat_logprobs,
    chat_messages,
    generate_request,
    kiln_extension,
    parse_tool_calls,
)
from services.inference.openai_api.protocol import (
    ChatCompletionBody,
    CompletionBody,
    JudgeBody,
    SamplingBody,
)

DEFAULT_MAX_TOKENS = 512  # when a request sets neither max_tokens nor max_completion_tokens
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        param: str | None = None,
        code: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = (
            status,
            message,
            kind,
            param,
            code or None,
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @classmethod
    def from_rpc(cls, exc: grpc.aio.AioRpcError, service: str) -> APIError:
        status, kind = HTTP_STATUS.get(exc.code(), (500, "internal_error"))
        trailer = dict(exc.trailing_metadata() or ())
        param = trailer.get("kiln-error-field") or None
        code = "model_not_found" if status == 404 and "model" in (exc.details() or "") else ""
        retry_ms = trailer.get("kiln-retry-after-ms")
        headers = {"Retry-After": str(-(-int(retry_ms) // 1000))} if retry_ms else None
        return cls(status, f"{service}: {exc.details()}", kind, param, code, headers)


@dataclass
class Upstream:
    """The gRPC stubs the API calls, and the metadata every call carries."""

    settings: Settings
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        inference = open_aio_channel(self.settings.target("inference"), self.settings)
        judge = open_aio_channel(self.settings.target("judge"), self.settings)
        self.channels = [inference, judge]
        self.inference = inference_pb2_grpc.InferenceStub(inference)
        self.judge = judge_pb2_grpc.JudgeStub(judge)
        self.metadata = call_metadata(self.settings.auth_token)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def _upstream(request: Request) -> Upstream:
    return request.app.state.upstream


UpstreamDep = Annotated[Upstream, Depends(_upstream)]


def create_app(settings: Settings) -> FastAPI:
    """The app, with its gRPC channels opened on startup and closed on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.upstream = Upstream(settings)
        try:
            yield
        finally:
            await app.state.upstream.close()

    app = FastAPI(title="kiln OpenAI-compatible API", lifespan=lifespan)
    expected = f"Bearer {settings.auth_token}".encode()

    def authorize(request: Request) -> None:
        if not settings.auth_token:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise APIError(
                401,
                "missing or wrong bearer token",
                "authentication_error",
                None,
                "invalid_api_key",
            )

    @app.middleware("http")
    async def cap_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_message_bytes:
            message = f"the body's {int(length):,} bytes exceed KILN_MAX_MESSAGE_BYTES"
            return APIError(413, message, "invalid_request_error").response()
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(InvalidInput)
    async def invalid_input(_: Request, exc: InvalidInput) -> JSONResponse:
        return APIError(400, str(exc), "invalid_request_error", exc.field).response()

    @app.exception_handler(grpc.aio.AioRpcError)
    async def rpc_error(_: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        return APIError.from_rpc(exc, "inference").response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", "")
            return APIError(
                400, f"the body is not JSON: {reason}", "invalid_request_error"
            ).response()
        location = [str(part) for part in first["loc"] if part != "body"]
        param = ".".join(location) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return APIError(400, message, "invalid_request_error", param).response()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(up: UpstreamDep) -> JSONResponse:
        try:
            await up.inference.ListModels(pb.ListModelsRequest(), metadata=up.metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return JSONResponse({"status": "unavailable", "inference": exc.code().name}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models(up: UpstreamDep) -> dict[str, Any]:
        reply = await up.inference.ListModels(
            pb.ListModelsRequest(), metadata=up.metadata, timeout=settings.deadline_s
        )
        return {"object": "list", "data": [_model_card(m) for m in reply.models]}

    @app.get("/v1/models/{model_id}", dependencies=[Depends(authorize)])
    async def get_model(model_id: str, up: UpstreamDep) -> dict[str, Any]:
        reply = await up.inference.ListModels(
            pb.ListModelsRequest(), metadata=up.metadata, timeout=settings.deadline_s
        )
        for model in reply.models:
            if model.name == model_id:
                return _model_card(model)
        raise APIError(
            404, f"model {model_id!r} is not loaded", "not_found_error", "model", "model_not_found"
        )

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatCompletionBody, up: UpstreamDep) -> Any:
        messages = chat_messages(body)
        return await _complete(
            up, body, "chat", [messages], body.token_limit, body.logprobs, body.top_logprobs or 0
        )

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(body: CompletionBody, up: UpstreamDep) -> Any:
        k = body.logprobs
        return await _complete(
            up, body, "text", body.prompts, body.max_tokens, k is not None, k or 0
        )

    @app.post("/v1/judge", dependencies=[Depends(authorize)])
    async def judge(body: JudgeBody, up: UpstreamDep) -> dict[str, Any]:
        config = judge_pb2.JudgeConfig(
            strategy=body.strategy,
            model=body.model,
            single_order=body.single_order,
            combine=body.combine,
            verdict_format=body.verdict_format,
            max_tokens=body.max_tokens,
            seed=body.seed,
            max_calls=body.max_calls,
        )
        if body.k is not None:
            config.k = body.k
        ParseDict(body.parameters, config.parameters)
        request = judge_pb2.JudgeRequest(
            request_id=f"judge-{uuid.uuid4().hex}",
            instruction=body.instruction,
            response_a=body.response_a,
            response_b=body.response_b,
            config=config,
        )
        try:
            reply = await up.judge.Judge(request, metadata=up.metadata)
        except grpc.aio.AioRpcError as exc:
            raise APIError.from_rpc(exc, "judge") from None
        return {
            "object": "judgment",
            "model": body.model,
            "strategy": body.strategy,
            **MessageToDict(reply, preserving_proto_field_name=True),
        }

    return app


def _model_card(model: pb.ModelInfo) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": 0,
        "owned_by": "kiln",
        "kiln": {
            "source": model.source,
            "engine": model.engine,
            "parameters": model.parameters,
            "dtype": model.dtype,
            "num_layers": model.num_layers,
            "num_kv_heads": model.num_kv_heads,
            "head_dim": model.head_dim,
            "adapters": list(model.adapters),
        },
    }


@dataclass
class Choice:
    """One choice as its Generate stream fills it in."""

    index: int
    text: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    text_logprobs: TextLogprobs = field(default_factory=TextLogprobs)
    complete: pb.GenerateComplete | None = None


async def _first_then_rest(
    call: Any,
) -> tuple[pb.GenerateResponse, AsyncIterator[pb.GenerateResponse]]:
    """Reads a stream's first response now (a refused request fails here, before any HTTP
    response has started) and returns it with the rest."""
    iterator = call.__aiter__()
    return await iterator.__anext__(), iterator


async def _complete(
    up: Upstream,
    body: SamplingBody,
    kind: str,
    prompts: list[Any],
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int,
) -> Any:
    """Runs n choices per prompt as Generate streams; answers in one JSON or as SSE."""
    request_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
    calls, choices = [], []
    for p, prompt in enumerate(prompts):
        for c in range(body.n):
            index = p * body.n + c
            request = generate_request(
                body,
                request_id,
                index,
                prompt,
                max_tokens or DEFAULT_MAX_TOKENS,
                logprobs,
                top_logprobs,
            )
            calls.append(up.inference.Generate(request, metadata=up.metadata))
            choices.append(Choice(index))
    try:
        started = await asyncio.gather(*(_first_then_rest(call) for call in calls))
    except grpc.aio.AioRpcError as exc:
        for call in calls:
            call.cancel()
        raise APIError.from_rpc(exc, "inference") from None
    except StopAsyncIteration:
        for call in calls:
            call.cancel()
        raise APIError(
            503, "inference: the stream ended before it began", "service_unavailable"
        ) from None
    created = int(time.time())
    head = {"id": request_id, "created": created, "model": body.model}
    tools = kind == "chat" and bool(getattr(body, "tools", None))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        usage_n = body.n if include_usage else 0
        events = _events(head, kind, started, choices, calls, usage_n, tools)
        return StreamingResponse(events, media_type="text/event-stream")
    for (first, rest), choice in zip(started, choices, strict=True):
        _apply(choice, first, kind)
        async for response in rest:
            _apply(choice, response, kind)
    return _response(head, kind, choices, body.n, tools)


def _apply(choice: Choice, response: pb.GenerateResponse, kind: str) -> dict[str, Any] | None:
    """Adds response to choice; returns the logprobs of a chunk (None for the complete)."""
    if response.WhichOneof("kind") == "complete":
        choice.complete = response.complete
        return None
    chunk = response.chunk
    choice.text += chunk.text
    if not chunk.tokens:
        return None
    if kind == "chat":
        entries = chat_logprobs(chunk)
        choice.logprobs.extend(entries)
        return {"content": entries}
    return choice.text_logprobs.add(chunk)


def _finish(choice: Choice, tool_calls: list) -> str:
    assert choice.complete is not None
    return "tool_calls" if tool_calls else choice.complete.finish_reason


def _usage(choices: list[Choice], n: int) -> dict[str, int]:
    """Tokens of the whole request; the n choices of a prompt count its tokens once, as
    OpenAI counts them."""
    completion = sum(c.complete.usage.completion_tokens for c in choices if c.complete)
    prompt = sum(c.complete.usage.prompt_tokens for c in choices[::n] if c.complete)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _response(
    head: dict[str, Any], kind: str, choices: list[Choice], n: int, tools: bool
) -> dict[str, Any]:
    out = []
    for choice in choices:
        assert choice.complete is not None
        if kind == "chat":
            content, calls = parse_tool_calls(choice.text) if tools else (choice.text, [])
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            out.append(
                {
                    "index": choice.index,
                    "message": message,
                    "logprobs": {"content": choice.logprobs} if choice.logprobs else None,
                    "finish_reason": _finish(choice, calls),
                    "kiln": kiln_extension(choice.complete),
                }
            )
        else:
            logprobs = choice.text_logprobs.since() if choice.text_logprobs.tokens else None
            out.append(
                {
                    "index": choice.index,
                    "text": choice.text,
                    "logprobs": logprobs,
                    "finish_reason": choice.complete.finish_reason,
                    "kiln": kiln_extension(choice.complete),
                }
            )
    obj = "chat.completion" if kind == "chat" else "text_completion"
    return {**head, "object": obj, "choices": out, "usage": _usage(choices, n)}


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _events(
    head: dict[str, Any],
    kind: str,
    started: list[tuple[pb.GenerateResponse, AsyncIterator[pb.GenerateResponse]]],
    choices: list[Choice],
    calls: list[Any],
    usage_n: int,
    tools: bool,
) -> AsyncIterator[bytes]:
    """The choices' streams merged into server-sent events. With tools, a chat choice's text is
    held until it ends (a <tool_call> block is only known whole), then sent as content or as
    tool_calls. usage_n > 0 (the request's n) sends a usage chunk before [DONE]. A client that
    disconnects cancels every Generate call."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    queue: asyncio.Queue[tuple[Choice, pb.GenerateResponse | BaseException | None]]
    queue = asyncio.Queue()

    async def pump(choice: Choice, first: pb.GenerateResponse, rest: AsyncIterator) -> None:
        try:
            await queue.put((choice, first))
            async for response in rest:
                await queue.put((choice, response))
        except BaseException as exc:
            await queue.put((choice, exc))
        finally:
            await queue.put((choice, None))

    def event(
        choice: Choice, delta: dict[str, Any], finish: str | None, logprobs: Any = None
    ) -> bytes:
        """One choice's chunk: delta is the chat delta, or {"text": ...} for completions."""
        entry: dict[str, Any] = {"index": choice.index}
        if kind == "chat":
            entry["delta"] = delta
        else:
            entry["text"] = delta.get("text", "")
        entry["logprobs"] = logprobs
        entry["finish_reason"] = finish
        data = {**head, "object": obj, "choices": [entry]}
        if finish is not None:
            assert choice.complete is not None
            data["kiln"] = kiln_extension(choice.complete)
        return _sse(data)

    tasks = [
        asyncio.create_task(pump(choice, first, rest))
        for choice, (first, rest) in zip(choices, started, strict=True)
    ]
    try:
        if kind == "chat":
            for choice in choices:
                yield event(choice, {"role": "assistant", "content": ""}, None)
        open_streams = len(tasks)
        while open_streams:
            choice, item = await queue.get()
            if item is None:
                open_streams -= 1
                continue
            if isinstance(item, BaseException):
                error = (
                    APIError.from_rpc(item, "inference")
                    if isinstance(item, grpc.aio.AioRpcError)
                    else APIError(500, f"inference: {item}", "internal_error")
                )
                yield _sse(error.body())
                return
            chunk_logprobs = _apply(choice, item, kind)
            if choice.complete is not None:
                yield _closing_event(choice, kind, tools, event)
            elif item.chunk.text and not tools:
                key = "content" if kind == "chat" else "text"
                yield event(choice, {key: item.chunk.text}, None, chunk_logprobs)
        if usage_n:
            yield _sse({**head, "object": obj, "choices": [], "usage": _usage(choices, usage_n)})
        yield b"data: [DONE]\n\n"
    finally:
        for call in calls:
            call.cancel()
        for task in tasks:
            task.cancel()


def _closing_event(choice: Choice, kind: str, tools: bool, event: Any) -> bytes:
    """A choice's last chunk: its finish reason, and with tools its held text or calls."""
    delta: dict[str, Any] = {}
    calls: list = []
    logprobs = None
    if tools:
        content, calls = parse_tool_calls(choice.text)
        if calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        if content:
            delta["content"] = content
        if choice.logprobs:
            logprobs = {"content": choice.logprobs}
    return event(choice, delta, _finish(choice, calls), logprobs)


def serve(settings: Settings, args: Any) -> None:
    """`python -m services.inference openai [--port P]` (default KILN_HTTP_PORT) under uvicorn."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.listen_host,
        port=args.port or settings.http_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
