"""BLEU, ROUGE and BERTScore on hand-checked pairs; kiln's MiniLM encoder against
sentence-transformers' own pipeline for the same offline weights."""

import pytest
import torch

from services.common.embeddings import default_encoder, minilm_folder
from services.judge.core.text_metrics import bertscore, bleu, rouge, score_all
from services.llm.base import SamplingParams, Usage
from services.llm.cache import CachingBackend, MemoryStore, ResponseCache
from services.llm.scripted import ScriptedBackend


def test_bleu_and_rouge_by_hand() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert bleu("completely different words", "the cat sat on the mat") == pytest.approx(0.0)
    scores = rouge("the cat sat", "the cat sat on the mat")
    # unigrams: P = 3/3, R = 3/6 -> F = 2/3; bigrams: P = 2/2, R = 2/5 -> F = 4/7
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)


def test_bertscore_identity_and_order() -> None:
    same, near, far = bertscore(
        ["Paris is the capital of France."] * 3,
        ["Paris is the capital of France.", "The capital of France is Paris.", "I like jazz."],
    )
    assert same.f1 == pytest.approx(1.0, abs=1e-5)
    assert far.f1 < near.f1 < same.f1
    assert score_all(["a b c"], ["a b c"], ("bleu", "bertscore")) == [
        {"bleu": pytest.approx(100.0), "bertscore": pytest.approx(1.0, abs=1e-5)}
    ]


def test_encoder_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["A tool that converts currencies.", "Weather forecast for a city", "x"]
    reference = SentenceTransformer(str(minilm_folder()), device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True
    )
    ours = default_encoder().encode(texts)
    assert ours.shape == (3, 384)
    assert torch.allclose(ours, reference.cpu(), atol=1e-5)


def test_cache_sends_identical_calls_in_a_batch_once() -> None:
    seen: list[str] = []
    backend = ScriptedBackend(responder=lambda t: seen.append(t) or "ok")
    usage = Usage()
    cached = CachingBackend(backend, ResponseCache(MemoryStore()), usage, "s")
    out = cached.generate(["p", "q", "p", "p"], SamplingParams(max_tokens=4))
    assert [c.text for c in out] == ["ok"] * 4 and [c.cached for c in out] == [
        False,
        False,
        True,
        True,
    ]
    assert len(seen) == 2 and usage.calls == 2 and usage.cached_calls == 2
