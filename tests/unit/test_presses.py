"""Token selection of StreamingLLM, H2O, SnapKV on hand-built inputs."""

from __future__ import annotations

import pytest
import torch

from services.kv.presses import h2o, snapkv, streamingllm


def test_streamingllm_keeps_sinks_and_window() -> None:
    kept = streamingllm.keep_indices(20, 8, streamingllm.StreamingLLMConfig(4), num_heads=2)
    assert kept.tolist() == [[0, 1, 2, 3, 16, 17, 18, 19]] * 2
    assert streamingllm.keep_indices(5, 8, streamingllm.StreamingLLMConfig(4), 1).tolist() == [
        [0, 1, 2, 3, 4]
    ]


def test_h2o_accumulated_attention_by_hand() -> None:
    # zero keys: query i attends uniformly to keys 0..i
    scores = h2o.accumulated_attention(torch.randn(1, 3, 4), torch.zeros(1, 3, 4), 0.5)
    assert scores[0].tolist() == pytest.approx([1 + 1 / 2 + 1 / 3, 1 / 2 + 1 / 3, 1 / 3])
    kept = h2o.select(torch.tensor([[5.0, 1.0, 4.0, 0.0, 0.0, 0.0]]), 4, h2o.H2OConfig())
    assert kept.tolist() == [[0, 2, 4, 5]]  # 2 heavy hitters + 2 recent


def test_snapkv_keeps_what_the_window_attends_to() -> None:
    t, d = 12, 4
    key = torch.zeros(1, t, d)
    for position, strength in ((2, 3.0), (5, 2.0), (7, 1.0)):
        key[0, position, 0] = strength
    query = torch.zeros(2, t, d)  # two query heads share the KV head
    query[:, 10:, 0] = 4.0  # the observation window (last 2 tokens) looks along channel 0
    config = snapkv.SnapKVConfig(window_size=2, kernel_size=1)
    assert snapkv.select(query, key, 5, config, 1.0).tolist() == [[2, 5, 7, 10, 11]]
    assert snapkv.select(query, key, 4, config, 1.0).tolist() == [[2, 5, 10, 11]]
    assert snapkv.select(query, key, 20, config, 1.0).tolist() == [list(range(12))]


def test_snapkv_query_agnostic_window_ends_before_the_question() -> None:
    t, d = 12, 4
    key = torch.zeros(1, t, d)
    key[0, 1, 1] = 3.0  # what the context window (tokens 8, 9) looks for
    key[0, 4, 0] = 3.0  # what the question (tokens 10, 11) looks for
    query = torch.zeros(1, t, d)
    query[0, 8:10, 1] = 4.0
    query[0, 10:, 0] = 4.0
    aware = snapkv.SnapKVConfig(window_size=2, kernel_size=1, question_tokens=2)
    assert snapkv.select(query, key, 3, aware, 1.0).tolist() == [[4, 10, 11]]
    agnostic = snapkv.SnapKVConfig(
        window_size=2, kernel_size=1, query_aware=False, question_tokens=2
    )
    assert snapkv.select(query, key, 5, agnostic, 1.0).tolist() == [[1, 8, 9, 10, 11]]


def test_pooling_by_hand() -> None:
    votes = torch.tensor([[0.0, 3.0, 0.0, 0.0]])
    assert snapkv.pool(votes, 3, "avgpool").tolist() == [[1.5, 1.0, 1.0, 0.0]]
    assert snapkv.pool(votes, 3, "maxpool").tolist() == [[3.0, 3.0, 3.0, 0.0]]


@pytest.mark.parametrize(
    "config",
    [snapkv.SnapKVConfig(8), snapkv.SnapKVConfig(8, query_aware=False, question_tokens=5)],
)
def test_snapkv_selects_the_same_from_the_prompts_last_queries(config) -> None:
    """A chunked prefill keeps only the window's queries (and the question's after it): the
    selection equals the one made from all T queries."""
    torch.manual_seed(0)
    query, key = torch.randn(6, 100, 16), torch.randn(2, 100, 16)
    full = snapkv.select(query, key, 30, config, 0.25)
    assert torch.equal(snapkv.select(query[:, -13:], key, 30, config, 0.25), full)


def test_h2o_press_reads_its_recent_share_from_the_request() -> None:
    from services.kv.budget import KVConfig
    from services.kv.presses import PRESSES

    scores = torch.tensor([[9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 0.5, 0.4]])  # [Hkv=1, T=8]
    press = PRESSES["h2o"]
    half = press.select(None, torch.zeros(1, 8, 4), 4, 1.0, scores, KVConfig("h2o"))
    quarter = press.select(
        None, torch.zeros(1, 8, 4), 4, 1.0, scores, KVConfig("h2o", recent_ratio=0.25)
    )
    assert half.tolist() == [[0, 2, 6, 7]]  # 2 recent, then the 2 heaviest of the rest
    assert quarter.tolist() == [[0, 2, 4, 7]]  # 1 recent, 3 heavy
