"""The OpenAI-compatible HTTP API with the real `openai` client, against real inference and
judge gRPC servers serving SmolLM2 over sockets, with a bearer token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from kiln.inference.v1 import inference_pb2 as pb
from kiln.judge.v1 import judge_pb2
from services.cli.embedded import free_port
from services.common.clients import KilnClient
from services.common.settings import Settings
from services.inference.openai_api.app import create_app
from tests.conftest import server_starter

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "openai-test-token"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@contextmanager
def http_api(settings: Settings) -> Iterator[str]:
    """The HTTP API on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the HTTP API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def stack(redis_url: str, smollm2: Path) -> Iterator[tuple[str, Settings]]:
    """Inference and judge gRPC servers serving SmolLM2, and the HTTP API in front of them;
    yields (base_url, settings)."""
    with server_starter() as start:
        settings = Settings(redis_url=redis_url, auth_token=TOKEN)
        inference = start("inference", settings)
        settings = settings.model_copy(update={"inference_port": inference.port})
        judge = start("judge", settings)
        settings = settings.model_copy(update={"judge_port": judge.port})
        with KilnClient("inference", settings=settings) as client:
            client.stub.LoadModel(
                pb.LoadModelRequest(name="smollm2", local_path=str(smollm2)), timeout=300
            )
        with http_api(settings) as base_url:
            yield base_url, settings


@pytest.fixture(scope="module")
def client(stack: tuple[str, Settings]) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack[0], api_key=TOKEN, max_retries=0)


def test_chat_answers_and_reports_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=24
    )
    (choice,) = reply.choices
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert 0 < reply.usage.completion_tokens <= 24
    assert choice.model_extra["kiln"] == {"engine": "hf"}  # no compression: no KV stats


def test_stream_carries_the_same_text_and_a_final_usage_chunk(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=24
    )
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices]) > 3  # token by token, not one piece
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_completion_with_top_logprobs(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=6, logprobs=3
    )
    (choice,) = reply.choices
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.tokens) == reply.usage.completion_tokens == 6
    assert logprobs.text_offset == [sum(map(len, logprobs.tokens[:i])) for i in range(6)]
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(top) == 3
        best = max(top, key=top.get)  # greedy: the chosen token is the most likely one
        assert best == token and top[best] == pytest.approx(logprob, abs=1e-6)
        assert logprob < 0


def test_chat_logprobs_match_the_chosen_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=2,
    )
    content = reply.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == reply.choices[0].message.content
    for entry in content:
        assert entry.bytes == list(entry.token.encode())
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob


def test_kv_compression_extension_reports_the_cache(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        temperature=0,
        max_tokens=12,
        extra_body={"kv_compression": {"method": "snapkv", "budget_fp16_tokens": 16, "bits": 4}},
    )
    kiln = reply.choices[0].model_extra["kiln"]
    stats = kiln["kv_stats"]
    assert kiln["engine"] == "hf" and (stats["method"], stats["bits"]) == ("snapkv", 4)
    assert len(stats["tokens_kept_per_layer"]) == 30
    assert 0 < stats["bytes_used"] < stats["bytes_full"]


def test_n_seeded_samples_count_the_prompt_once(client: openai.OpenAI) -> None:
    def sample() -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model="smollm2", messages=QUESTION, temperature=1.0, seed=7, n=3, max_tokens=8
        )

    first, again = sample(), sample()
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    single = client.chat.completions.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=1
    )
    assert first.usage.prompt_tokens == single.usage.prompt_tokens


def test_models_are_listed_and_unknown_ones_are_404(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2"]
    assert client.models.retrieve("smollm2").model_extra["kiln"]["num_layers"] == 30
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)
    assert "no-such-model" in caught.value.body["message"]


def test_bad_fields_are_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smollm2", messages=QUESTION, temperature=5, max_tokens=4
        )
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "word " * 9000}],
            max_tokens=4,
        )
    assert caught.value.body["param"] == "prompt"
    assert "exceed the model's context of 8192 tokens" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            max_tokens=4,
            extra_body={"kv_compression": {"method": "snapkv", "bits": 3}},
        )
    assert caught.value.body["param"] == "kv.bits"


def test_wrong_token_is_401(stack: tuple[str, Settings]) -> None:
    wrong = openai.OpenAI(base_url=stack[0], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=4)
    assert httpx.get(stack[0].removesuffix("/v1") + "/health").json() == {"status": "ok"}


def test_tool_offer_reaches_the_model_and_its_answer_comes_back(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.chat.completions.create(
        model="smollm2", messages=messages, tools=tools, temperature=0, max_tokens=48
    )
    message = reply.choices[0].message
    if message.tool_calls:  # the Hermes block parsed into a call
        assert reply.choices[0].finish_reason == "tool_calls"
        assert json.loads(message.tool_calls[0].function.arguments) is not None
    else:
        assert message.content
    offered = client.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=48
    )
    assert offered.usage.prompt_tokens < reply.usage.prompt_tokens  # the tools were rendered


def test_judge_endpoint_equals_the_judge_rpc(stack: tuple[str, Settings]) -> None:
    base, settings = stack
    body = {
        "model": "smollm2",
        "instruction": "What is 2 + 2?",
        "response_a": "4",
        "response_b": "5",
        "single_order": True,
        "max_tokens": 24,
    }
    reply = httpx.post(
        f"{base}/judge", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=300
    )
    assert reply.status_code == 200, reply.text
    judged = reply.json()
    with KilnClient("judge", settings=settings) as judge:
        direct = judge.stub.Judge(
            judge_pb2.JudgeRequest(
                request_id="direct",
                instruction=body["instruction"],
                response_a="4",
                response_b="5",
                config=judge_pb2.JudgeConfig(model="smollm2", single_order=True, max_tokens=24),
            ),
            timeout=300,
        )
    assert judged["verdict"] == direct.verdict
    assert judged["forward"]["text"] == direct.forward.text
    bad = httpx.post(
        f"{base}/judge",
        json={**body, "strategy": "nonsense"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"]


def test_unreachable_inference_is_503_and_a_huge_body_is_413() -> None:
    settings = Settings(inference_port=free_port(), judge_port=free_port(), max_message_bytes=999)
    with http_api(settings) as base_url:
        models = httpx.get(f"{base_url}/models", timeout=30)
        ready = httpx.get(base_url.removesuffix("/v1") + "/ready", timeout=30)
        huge = httpx.post(f"{base_url}/completions", json={"model": "m", "prompt": "x" * 999})
    assert huge.status_code == 413 and "exceed KILN_MAX_MESSAGE_BYTES" in huge.text
    assert models.status_code == 503
    assert models.json()["error"]["type"] == "service_unavailable"
    assert ready.status_code == 503 and ready.json()["inference"] == "UNAVAILABLE"


def test_lm_evaluation_harness_scores_through_the_api(
    stack: tuple[str, Settings], tmp_path: Path
) -> None:
    """lm-eval's own `local-chat-completions` model runs a five-question task (a local file)
    against the API; SmolLM2 names each capital, so every answer matches."""
    tasks = ROOT / "benchmarks" / "lm_eval_tasks" / "kiln_capitals"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "lm_eval", "--model", "local-chat-completions"),
            "--model_args",
            f"model=smollm2,base_url={stack[0]}/chat/completions,num_concurrent=1,max_retries=1",
            *("--tasks", "kiln_capitals", "--include_path", str(tasks)),
            *("--apply_chat_template", "--output_path", str(tmp_path / "out")),
        ],
        env={**os.environ, "OPENAI_API_KEY": TOKEN, "HF_DATASETS_OFFLINE": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    scores = json.loads(results.read_text())["results"]["kiln_capitals"]
    assert scores["exact_match,city"] == 1.0
