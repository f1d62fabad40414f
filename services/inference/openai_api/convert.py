"""OpenAI request bodies -> kiln GenerateRequests, and Generate streams -> OpenAI responses.

Tools follow the Hermes function-calling format (NousResearch Hermes 2 Pro, the format vLLM's
`hermes` tool parser reads): the tool signatures go into the system message inside
<tools></tools>, the model answers with <tool_call>{"name": ..., "arguments": {...}}</tool_call>
blocks, and tool results come back inside <tool_response></tool_response>. The messages are then
rendered by the model's own chat template on the inference service.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from kiln.inference.v1 import inference_pb2 as pb
from services.common.errors import InvalidInput
from services.inference.openai_api.protocol import (
    ChatCompletionBody,
    ChatMessageBody,
    KVCompressionBody,
    SamplingBody,
    ToolDef,
)

TOOLS_PREAMBLE = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. Don't make assumptions about what values to plug into functions. Here are the "
    "available tools: <tools>\n{tools}\n</tools>\nFor each function call return a json object "
    "with function name and arguments within <tool_call></tool_call> XML tags as follows:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-dict>}}\n</tool_call>'
)
TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def tools_prompt(tools: list[ToolDef]) -> str:
    """The Hermes system text offering tools (one JSON signature per line)."""
    lines = "\n".join(json.dumps(t.model_dump(), ensure_ascii=False) for t in tools)
    return TOOLS_PREAMBLE.format(tools=lines)


def _text(message: ChatMessageBody, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for j, part in enumerate(message.content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidInput(
                f"messages[{index}].content[{j}]", "only text parts are supported by kiln"
            )
        parts.append(part["text"])
    return "".join(parts)


def chat_messages(body: ChatCompletionBody) -> list[dict[str, str]]:
    """The request's messages as kiln ChatMessages: `developer` is a system message, an
    assistant's tool calls and a tool's result are written the Hermes way, and the offered
    tools (unless tool_choice is "none") join the system message, or open one."""
    messages = []
    for i, message in enumerate(body.messages):
        text = _text(message, i)
        if message.role == "assistant" and message.tool_calls:
            calls = [
                "<tool_call>\n"
                + json.dumps(
                    {"name": c.function.name, "arguments": _arguments(c.function.arguments, i)},
                    ensure_ascii=False,
                )
                + "\n</tool_call>"
                for c in message.tool_calls
            ]
            text = "\n".join(([text] if text else []) + calls)
        elif message.role == "tool":
            text = f"<tool_response>\n{text}\n</tool_response>"
        role = "system" if message.role == "developer" else message.role
        messages.append({"role": role, "content": text})
    if body.tools and body.tool_choice != "none":
        offer = tools_prompt(body.tools)
        if messages[0]["role"] == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n\n{offer}".lstrip()
        else:
            messages.insert(0, {"role": "system", "content": offer})
    return messages


def _arguments(text: str, index: int) -> Any:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"messages[{index}].tool_calls", f"arguments are not JSON: {exc.msg}"
        ) from None


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of a Hermes-format answer: every <tool_call> block whose body is
    a JSON object with a string `name` becomes an OpenAI tool call; with none, the text is the
    content unchanged."""
    calls = []
    for match in TOOL_CALL.finditer(text):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        arguments = call.get("arguments", call.get("parameters", {}))
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(arguments)},
            }
        )
    if not calls:
        return text, []
    content = TOOL_CALL.sub("", text).strip()
    return content or None, calls


def kv_to_pb(kv: KVCompressionBody) -> pb.KVCompression:
    message = pb.KVCompression(
        **kv.model_dump(exclude={"budget_bytes", "budget_fp16_tokens"}, exclude_defaults=True)
    )
    if kv.budget_bytes is not None:
        message.budget_bytes = kv.budget_bytes
    if kv.budget_fp16_tokens is not None:
        message.budget_fp16_tokens = kv.budget_fp16_tokens
    return message


def generate_request(
    body: SamplingBody,
    request_id: str,
    choice: int,
    prompt: str | list[dict[str, str]],
    max_tokens: int | None,
    logprobs: bool,
    top_logprobs: int,
) -> pb.GenerateRequest:
    """One choice's GenerateRequest. Seeded choices use seed + choice, so n seeded samples
    differ from one another and repeat across calls."""
    sampling = pb.SamplingParams(
        max_tokens=max_tokens or 0,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_strings,
        return_logprobs=logprobs,
        top_logprobs=top_logprobs,
    )
    if body.seed is not None:
        sampling.seed = body.seed + choice
    request = pb.GenerateRequest(
        request_id=f"{request_id}-{choice}", model=body.model, sampling=sampling
    )
    if isinstance(prompt, str):
        request.prompt = prompt
    else:
        request.messages.messages.extend(pb.ChatMessage(**m) for m in prompt)
    if body.kv_compression is not None:
        request.kv.CopyFrom(kv_to_pb(body.kv_compression))
    return request


def kiln_extension(complete: pb.GenerateComplete) -> dict[str, Any]:
    """The `kiln` object of a choice: the engine that ran it and its KV cache's stats."""
    extension: dict[str, Any] = {"engine": complete.engine}
    if complete.HasField("kv_stats"):
        stats = complete.kv_stats
        extension["kv_stats"] = {
            "method": stats.method,
            "bits": stats.bits,
            "bytes_used": stats.bytes_used,
            "bytes_full": stats.bytes_full,
            "bytes_planned": stats.bytes_planned,
            "tokens_kept_per_layer": list(stats.tokens_kept_per_layer),
            "reason": stats.reason,
        }
    return extension


def _token_bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_logprobs(chunk: pb.GenerateChunk) -> list[dict[str, Any]]:
    """A chunk's tokens as entries of OpenAI's `logprobs.content`."""
    entries = []
    for i, (token, logprob) in enumerate(zip(chunk.tokens, chunk.logprobs, strict=True)):
        top = []
        if chunk.top_logprobs:
            alternatives = chunk.top_logprobs[i]
            top = [
                {"token": t, "logprob": lp, "bytes": _token_bytes(t)}
                for t, lp in zip(alternatives.tokens, alternatives.logprobs, strict=True)
            ]
        entries.append(
            {"token": token, "logprob": logprob, "bytes": _token_bytes(token), "top_logprobs": top}
        )
    return entries


@dataclass
class TextLogprobs:
    """The legacy completions API's `logprobs` object, built chunk by chunk."""

    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    offset: int = 0

    def add(self, chunk: pb.GenerateChunk) -> dict[str, Any]:
        """Appends chunk's tokens; returns the part they form (a streamed chunk's logprobs)."""
        start = len(self.tokens)
        for i, (token, logprob) in enumerate(zip(chunk.tokens, chunk.logprobs, strict=True)):
            self.tokens.append(token)
            self.token_logprobs.append(logprob)
            if chunk.top_logprobs:
                alternatives = chunk.top_logprobs[i]
                self.top_logprobs.append(
                    dict(zip(alternatives.tokens, alternatives.logprobs, strict=True))
                )
            self.text_offset.append(self.offset)
            self.offset += len(token)
        return self.since(start)

    def since(self, start: int = 0) -> dict[str, Any]:
        return {
            "tokens": self.tokens[start:],
            "token_logprobs": self.token_logprobs[start:],
            "top_logprobs": self.top_logprobs[start:] if self.top_logprobs else None,
            "text_offset": self.text_offset[start:],
        }
