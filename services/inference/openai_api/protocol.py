"""The request bodies of the OpenAI-compatible API (the subset kiln serves), as pydantic models.

Fields OpenAI defines and kiln cannot honour (penalties, logit_bias, structured output, echo)
are declared so that a non-default value gets a 400 naming the field instead of being silently
dropped; fields that change nothing here (`user`, `metadata`, `parallel_tool_calls`, ...) are
ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.llm.base import MAX_TOP_LOGPROBS

MAX_CHOICES = 16


class KVCompressionBody(BaseModel):
    """kiln's extension (`extra_body={"kv_compression": {...}}`): the KVCompression message."""

    model_config = ConfigDict(extra="forbid")

    method: str = "none"
    bits: int = 0
    budget_bytes: int | None = None
    budget_fp16_tokens: float | None = None
    group_size: int = 0
    residual_length: int = 0
    window_size: int = 0
    kernel_size: int = 0
    sink_tokens: int = 0
    compress_decode: bool = False
    pooling: str = ""
    pyramid_beta: int = 0
    query_agnostic: bool = False
    question_tokens: int = 0

    @model_validator(mode="after")
    def _one_budget(self) -> KVCompressionBody:
        if self.budget_bytes is not None and self.budget_fp16_tokens is not None:
            raise ValueError("set budget_bytes or budget_fp16_tokens, not both")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class FunctionDef(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolDef(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessageBody(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class SamplingBody(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # OpenAI's default is 1
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    kv_compression: KVCompressionBody | None = None

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value:
            raise ValueError("penalties are not supported; leave it 0")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionBody(SamplingBody):
    messages: list[ChatMessageBody] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type") != "text":
            raise ValueError("only {'type': 'text'} is supported")
        return value

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionBody:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs: true")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionBody(SamplingBody):
    prompt: str | list[str] = Field(min_length=1)
    logprobs: int | None = Field(None, ge=0, le=5)  # the legacy API's top-k count
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported; score continuations with the Score RPC")
        return value

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionBody:
        if self.best_of not in (None, 1):
            raise ValueError("best_of is not supported")
        if self.suffix:
            raise ValueError("suffix is not supported")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class JudgeBody(BaseModel):
    """POST /v1/judge: one pairwise judgment through the judge service (JudgeRequest)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    instruction: str
    response_a: str
    response_b: str
    strategy: str = "vanilla"
    k: int | None = None
    single_order: bool = False
    combine: str = ""
    verdict_format: str = ""
    max_tokens: int = Field(0, ge=0)
    seed: int = 0
    max_calls: int = Field(0, ge=0)
    parameters: dict[str, Any] = Field(default_factory=dict)
