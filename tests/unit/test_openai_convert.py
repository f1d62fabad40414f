"""OpenAI bodies -> kiln requests, and Hermes tool calls back: exact strings."""

from __future__ import annotations

import json

import pytest

from kiln.inference.v1 import inference_pb2 as pb
from services.common.errors import InvalidInput
from services.inference.openai_api.convert import (
    TextLogprobs,
    chat_messages,
    generate_request,
    parse_tool_calls,
    tools_prompt,
)
from services.inference.openai_api.protocol import ChatCompletionBody, CompletionBody, ToolDef

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_hermes_tool_call_becomes_an_openai_call() -> None:
    text = (
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    content, calls = parse_tool_calls(text)
    assert content == "Sure."
    ((call),) = calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_two_calls_an_unclosed_last_one_and_broken_json() -> None:
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
        "<tool_call>{not json}</tool_call>"
        '<tool_call>\n{"name": "b", "arguments": {"x": 1}}'
    )
    content, calls = parse_tool_calls(text)
    assert content is None
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", "{}"),
        ("b", '{"x": 1}'),
    ]


def test_text_without_a_call_is_content_unchanged() -> None:
    assert parse_tool_calls("It is sunny in <b>Paris</b>.") == ("It is sunny in <b>Paris</b>.", [])
    assert parse_tool_calls('<tool_call>["name"]</tool_call>') == (
        '<tool_call>["name"]</tool_call>',
        [],
    )


def test_tools_join_the_system_message_and_calls_are_written_back_the_hermes_way() -> None:
    body = ChatCompletionBody(
        model="m",
        tools=[WEATHER],
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather in "},
                    {"type": "text", "text": "Paris?"},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ],
    )
    messages = chat_messages(body)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[0]["content"] == "Be brief.\n\n" + tools_prompt([ToolDef(**WEATHER)])
    assert json.dumps(WEATHER) in messages[0]["content"]
    assert messages[1]["content"] == "Weather in Paris?"
    assert messages[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert messages[3]["content"] == "<tool_response>\n18 C\n</tool_response>"
    none = body.model_copy(update={"tool_choice": "none"})
    assert chat_messages(none)[0]["content"] == "Be brief."


def test_image_parts_are_refused_naming_the_part() -> None:
    body = ChatCompletionBody(
        model="m",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    )
    with pytest.raises(InvalidInput) as caught:
        chat_messages(body)
    assert caught.value.field == "messages[0].content[0]"


def test_generate_request_seeds_each_choice_and_carries_kv() -> None:
    body = CompletionBody(
        model="smollm2",
        prompt="hi",
        seed=10,
        stop="\n",
        temperature=0.5,
        kv_compression={"method": "snapkv", "bits": 4, "budget_fp16_tokens": 64},
    )
    request = generate_request(body, "cmpl-x", 2, "hi", 16, True, 3)
    assert request.request_id == "cmpl-x-2" and request.prompt == "hi"
    assert request.sampling.seed == 12 and list(request.sampling.stop) == ["\n"]
    assert (request.sampling.max_tokens, request.sampling.top_logprobs) == (16, 3)
    assert request.kv == pb.KVCompression(method="snapkv", bits=4, budget_fp16_tokens=64)


def test_text_logprobs_offsets_follow_the_tokens() -> None:
    logprobs = TextLogprobs()
    first = logprobs.add(pb.GenerateChunk(tokens=[" Par", "is"], logprobs=[-0.5, -0.25]))
    logprobs.add(pb.GenerateChunk(tokens=["."], logprobs=[-1.0]))
    assert first["text_offset"] == [0, 4] and first["top_logprobs"] is None
    assert logprobs.since() == {
        "tokens": [" Par", "is", "."],
        "token_logprobs": [-0.5, -0.25, -1.0],
        "top_logprobs": None,
        "text_offset": [0, 4, 6],
    }


def test_a_refused_call_is_429_with_the_servers_retry_hint() -> None:
    import grpc

    from services.inference.openai_api.app import APIError

    refused = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("kiln-retry-after-ms", "1500")),
        details="16 decoding slots are taken",
    )
    response = APIError.from_rpc(refused, "inference").response()
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert json.loads(response.body)["error"]["type"] == "rate_limit_error"
