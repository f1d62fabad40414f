"""The hf and scripted backends, the response cache and usage accounting."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from services.common.errors import InvalidInput
from services.llm import CachingBackend, MemoryStore, ResponseCache, SamplingParams
from services.llm.hf import HFBackend
from services.llm.scripted import ScriptedBackend

PROMPTS = ["the answer is", "12 + 30 =", [{"role": "user", "content": "weather in Paris?"}]]


@pytest.fixture(scope="module")
def hf(tiny_model: Path) -> HFBackend:
    return HFBackend(tiny_model)


def test_hf_batched_greedy_equals_one_by_one_and_stream(hf: HFBackend) -> None:
    params = SamplingParams(max_tokens=12, logprobs=True)
    batched = hf.generate(PROMPTS, params)
    for prompt, completion in zip(PROMPTS, batched, strict=True):
        (alone,) = hf.generate([prompt], params)
        assert alone.token_ids == completion.token_ids
        streamed = list(hf.stream(prompt, params))
        assert [t for t, *_ in streamed] == completion.token_ids
        # the stream's kiln cache stores keys and values at 16 bits (fp16 beside these float32
        # weights), generate()'s cache at 32: the same tokens, log-probs within fp16 rounding
        assert [lp for _, lp, _ in streamed] == pytest.approx(completion.logprobs, abs=1e-3)
        assert completion.finish_reason == "length" and len(completion.token_ids) == 12


def test_hf_score_equals_model_log_probs(hf: HFBackend) -> None:
    import torch

    (scores,) = hf.score(["the answer is"], [" yes it is"])
    tok = hf.tokenizer
    prompt_ids = tok("the answer is")["input_ids"]
    cont_ids = tok(" yes it is", add_special_tokens=False)["input_ids"]
    assert scores.token_ids == cont_ids
    with torch.no_grad():
        logits = hf.hf_model(torch.tensor([prompt_ids + cont_ids])).logits[0]
    expected = [
        float(logits[len(prompt_ids) - 1 + i].log_softmax(-1)[t]) for i, t in enumerate(cont_ids)
    ]
    assert scores.logprobs == pytest.approx(expected, abs=1e-5)
    assert scores.total == pytest.approx(sum(expected), abs=1e-4)
    # a greedy continuation scores as the generate log-probs said
    (gen,) = hf.generate(["the answer is"], SamplingParams(max_tokens=5, logprobs=True))
    assert gen.logprobs is not None


def test_hf_seeded_sampling_is_reproducible(hf: HFBackend) -> None:
    params = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    first = [t for t, *_ in hf.stream("the answer is", params)]
    assert first == [t for t, *_ in hf.stream("the answer is", params)]
    other = SamplingParams(max_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=8)
    assert first != [t for t, *_ in hf.stream("the answer is", other)]


def test_hf_stream_abort_stops_early(hf: HFBackend) -> None:
    """The decoder runs ahead of its reader, so tokens in flight still arrive; then it stops."""
    abort = threading.Event()
    tokens = []
    for token, *_ in hf.stream("the answer is", SamplingParams(max_tokens=1000), abort):
        tokens.append(token)
        if len(tokens) == 3:
            abort.set()
    assert 3 <= len(tokens) < 1000
    assert list(hf.stream("the answer is", SamplingParams(max_tokens=9), abort)) == []


def test_hf_refuses_a_prompt_with_no_tokens(hf: HFBackend) -> None:
    """The tiny tokenizer adds no BOS, so "" is no tokens: nothing to condition on (the
    fuzzer found this as INTERNAL from torch)."""
    with pytest.raises(InvalidInput, match="prompt: encodes to no tokens"):
        hf.generate([""], SamplingParams(max_tokens=2))
    with pytest.raises(InvalidInput, match="prompt: encodes to no tokens"):
        list(hf.stream("", SamplingParams(max_tokens=2)))
    with pytest.raises(InvalidInput, match="prompt: encodes to no tokens"):
        hf.score([""], ["ab cd"])
    assert len(hf.score(["x"], ["ab"])[0].logprobs) >= 1


def test_scripted_is_deterministic_with_bytes_as_tokens() -> None:
    backend = ScriptedBackend(
        rules=[(r"capital of (\w+)", r"The capital of \1 is unknown."), (r"hello", "hi there")]
    )
    params = SamplingParams(max_tokens=100, logprobs=True)
    out = backend.generate(["what is the capital of Peru", "hello"], params)
    assert [c.text for c in out] == ["The capital of Peru is unknown.", "hi there"]
    assert out[1].token_ids == list(b"hi there")
    assert out[1].logprobs == [-math.log(256)] * 8
    assert backend.generate(["hello"], params)[0].text == "hi there"
    (short,) = backend.generate(["hello"], SamplingParams(max_tokens=2))
    assert (short.text, short.finish_reason) == ("hi", "length")
    (stopped,) = backend.generate(["hello"], SamplingParams(stop=(" ",)))
    assert (stopped.text, stopped.finish_reason) == ("hi", "stop")
    with pytest.raises(InvalidInput):
        backend.generate(["nothing matches"], params)
    (scores,) = backend.score(["x"], ["abc"])
    assert scores.total == pytest.approx(-3 * math.log(256))


class CountingBackend(ScriptedBackend):
    def __init__(self) -> None:
        super().__init__(responder=lambda text: text.upper())
        self.generate_calls: list[int] = []
        self.score_calls: list[int] = []

    def generate(self, prompts, params):
        self.generate_calls.append(len(prompts))
        return super().generate(prompts, params)

    def score(self, prompts, continuations):
        self.score_calls.append(len(prompts))
        return super().score(prompts, continuations)


def test_second_identical_call_is_a_cache_hit_with_zero_backend_calls() -> None:
    inner = CountingBackend()
    backend = CachingBackend(inner, ResponseCache(MemoryStore()), stage="judge")
    params = SamplingParams(max_tokens=32)
    first = backend.generate(["a", "b", "c"], params)
    assert inner.generate_calls == [3]
    second = backend.generate(["a", "b", "c"], params)
    assert inner.generate_calls == [3], "no backend call on the second run"
    assert [c.text for c in second] == [c.text for c in first] == ["A", "B", "C"]
    assert all(c.cached for c in second) and not any(c.cached for c in first)
    mixed = backend.generate(["c", "d"], params)  # one hit, one miss sent alone
    assert inner.generate_calls == [3, 1] and [c.cached for c in mixed] == [True, False]
    backend.score(["p"], ["q"])
    backend.score(["p"], ["q"])
    assert inner.score_calls == [1]
    usage = backend.usage
    assert (usage.calls, usage.cached_calls) == (5, 5)
    assert usage.by_stage["judge"]["completion_tokens"] == 4  # "A", "B", "C", "D": 1 byte each
    sampled = SamplingParams(max_tokens=32, temperature=0.8)  # not reproducible: never cached
    backend.generate(["a"], sampled)
    backend.generate(["a"], sampled)
    assert inner.generate_calls == [3, 1, 1, 1]


def test_cache_key_depends_on_params_and_model() -> None:
    cache = ResponseCache(MemoryStore())
    a = CachingBackend(CountingBackend(), cache)
    a.generate(["x"], SamplingParams(max_tokens=8))
    a.generate(["x"], SamplingParams(max_tokens=9))
    a.generate(["x"], SamplingParams(max_tokens=8, temperature=0.7, seed=3))
    a.generate(["x"], SamplingParams(max_tokens=8, temperature=0.7, seed=3))
    assert a.inner.generate_calls == [1, 1, 1]
    other_model = CachingBackend(ScriptedBackend(rules=[("x", "other")]), cache)
    assert other_model.generate(["x"], SamplingParams(max_tokens=8))[0].text == "other"


@pytest.mark.parametrize(
    "field,params",
    [
        ("sampling.max_tokens", SamplingParams(max_tokens=0)),
        ("sampling.temperature", SamplingParams(temperature=-1)),
        ("sampling.top_p", SamplingParams(top_p=0)),
        ("sampling.top_k", SamplingParams(top_k=-2)),
        ("sampling.stop", SamplingParams(stop=("",))),
    ],
)
def test_bad_sampling_names_the_field(field: str, params: SamplingParams) -> None:
    with pytest.raises(InvalidInput) as err:
        params.validate()
    assert err.value.field == field
