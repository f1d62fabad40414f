"""Concurrent streams share one continuously batched decoder and decode as they do alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from services.common.errors import InvalidInput
from services.kv.budget import KVConfig
from services.llm import SamplingParams
from services.llm.hf import HFBackend

PROMPTS = ["the answer is", "12 + 30 = 42 and " * 5, "the weather in Oslo is " * 8] * 2
CONFIGS = [
    None,
    KVConfig("snapkv", budget_fp16_tokens=24, window_size=8),
    KVConfig("h2o", budget_fp16_tokens=20, compress_decode=True),
    KVConfig("none", bits=4, group_size=16, residual_length=16),
    None,
    KVConfig("streamingllm", bits=8, budget_fp16_tokens=30),
]


def test_concurrent_streams_batch_and_match_decoding_alone(tiny_model: Path) -> None:
    alone_backend = HFBackend(tiny_model, decode_batch=1)
    params = SamplingParams(max_tokens=40, logprobs=True)
    alone = [
        list(alone_backend.stream(p, params, kv=c)) for p, c in zip(PROMPTS, CONFIGS, strict=True)
    ]
    assert alone_backend.batcher.largest_batch == 1

    shared = HFBackend(tiny_model, decode_batch=4)
    results: list = [None] * len(PROMPTS)
    stats: list[list] = [[] for _ in PROMPTS]
    start = threading.Barrier(len(PROMPTS))

    def client(i: int) -> None:
        start.wait()
        results[i] = list(shared.stream(PROMPTS[i], params, kv=CONFIGS[i], kv_stats=stats[i]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 2 <= shared.batcher.largest_batch <= 4  # joined a running batch, capped at 4
    for got, want, config, kv_stats in zip(results, alone, CONFIGS, stats, strict=True):
        assert [t for t, *_ in got] == [t for t, *_ in want]
        assert [lp for _, lp, _ in got] == pytest.approx([lp for _, lp, _ in want], abs=1e-4)
        assert len(kv_stats) == (config is not None)


def test_a_bad_request_is_refused_before_it_reaches_the_decoder(tiny_model: Path) -> None:
    backend = HFBackend(tiny_model)
    bad = KVConfig("snapkv", budget_fp16_tokens=8, query_aware=False, question_tokens=99)
    with pytest.raises(InvalidInput, match=r"kv\.question_tokens"):
        list(backend.stream("the answer is", SamplingParams(max_tokens=4), kv=bad))
    assert backend.batcher.largest_batch == 0  # the decoder never ran a step


def test_the_decoder_survives_a_failed_step(tiny_model: Path) -> None:
    backend = HFBackend(tiny_model)
    batcher = backend.batcher
    calls = []

    def failing(logprobs: torch.Tensor) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("sampling failed")
        return int(logprobs.argmax())

    seq = batcher.batch.sequence(batcher.batch.plan(KVConfig(), [5, 6, 7]), 10, failing, None)
    with pytest.raises(RuntimeError, match="sampling failed"):
        list(batcher.run(seq))
    assert len(calls) == 3 and seq.finished and not batcher.batch.live
    assert len(list(backend.stream("the answer is", SamplingParams(max_tokens=4)))) == 4


def test_a_full_waiting_queue_refuses_at_once(tiny_model: Path) -> None:
    """Admission control: with one decoding slot taken and max_waiting sequences queued, the
    next submit raises ResourceExhausted before queuing; once the queue drains, it is taken."""
    import time

    from services.common.errors import ResourceExhausted

    backend = HFBackend(tiny_model, decode_batch=1, max_waiting=2)
    batcher = backend.batcher

    def sequence(max_tokens: int):
        ids = backend.encode("the answer is", max_tokens)
        return backend.sequence(batcher.batch.plan(KVConfig(), ids), SamplingParams(max_tokens))

    running = sequence(2000)
    outputs: list[list] = []
    threads = [threading.Thread(target=lambda: outputs.append(list(batcher.run(running))))]
    threads[0].start()
    deadline = time.monotonic() + 60
    while not batcher.batch.live:  # the first sequence holds the only slot
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = [sequence(2) for _ in range(2)]
    for seq in queued:
        threads.append(threading.Thread(target=lambda s=seq: outputs.append(list(batcher.run(s)))))
        threads[-1].start()
    while batcher._waiting.qsize() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    refused = sequence(2)
    with pytest.raises(ResourceExhausted, match="1 decoding slots are taken and 2 generations"):
        batcher.submit(refused, lambda item: None)
    running.abort.set()
    for thread in threads:
        thread.join(60)
    assert len(outputs) == 3  # the running and the queued sequences all ended normally
    assert len(list(backend.stream("the answer is", SamplingParams(max_tokens=3)))) == 3


def test_a_long_prompt_is_prefilled_between_decoding_steps(tiny_model: Path) -> None:
    """While one sequence decodes, a 5-chunk prompt is prefilled one chunk per iteration: the
    model's forwards alternate prefill chunk, decoding step, ... (Sarathi-style), so the
    running sequence gets a token between every two chunks instead of waiting for all five."""
    import time

    from services.kv.batching import BatchingConfig, ContinuousBatcher

    backend = HFBackend(tiny_model)
    batcher = ContinuousBatcher(backend.hf_model, BatchingConfig(prefill_chunk=8))
    batch = batcher.batch
    forwards: list[str] = []
    inner = batch._forward

    def logged(ids, positions, cache):
        forwards.append("chunk" if ids.shape[0] == 1 and ids.shape[1] > 1 else "step")
        return inner(ids, positions, cache)

    def sequence(prompt_ids: list[int], max_tokens: int):
        return backend.sequence(batch.plan(KVConfig(), prompt_ids), SamplingParams(max_tokens))

    running = sequence(list(range(5, 13)), 2000)  # one chunk
    tokens: list = []
    thread = threading.Thread(target=lambda: tokens.extend(batcher.run(running)))
    thread.start()
    deadline = time.monotonic() + 60
    while not batch.live:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    batch._forward = logged
    long = sequence(list(range(20, 60)), 1)  # 40 tokens: 5 chunks of 8
    assert len(list(batcher.run(long))) == 1
    running.abort.set()
    thread.join(60)
    first = forwards.index("chunk")
    assert forwards[first : first + 9] == ["chunk", "step"] * 4 + ["chunk"]
