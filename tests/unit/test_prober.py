"""Chain-of-Probe: steps, trajectories, dataset counters, selection, probing a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.common.reasoning import split_steps
from services.llm.hf import HFBackend
from services.llm.scripted import ScriptedBackend
from services.llm.tokens import encode_prompt
from services.prober.core.probing import ProbeConfig, ProbeItem, probe_batch, probe_prefixes
from services.prober.core.selection import SelectionConfig, majority_answer, rank
from services.prober.core.trajectory import ProbeStep, build_trajectory, summarize


def steps_of(answers: str, confidences: list[float]) -> list[ProbeStep]:
    return [ProbeStep(k, a, c) for k, (a, c) in enumerate(zip(answers, confidences, strict=True))]


def test_split_steps() -> None:
    text = "First, add 2 and 3.\n\n  So we get 5. Then double it.\nAnswer: 10"
    assert split_steps(text) == [
        "First, add 2 and 3.",
        "So we get 5. Then double it.",
        "Answer: 10",
    ]
    assert split_steps(text, "sentences") == [
        "First, add 2 and 3.",
        "So we get 5.",
        "Then double it.",
        "Answer: 10",
    ]


def test_trajectory_counters() -> None:
    t = build_trajectory(steps_of("BAACC", [0.6, 0.5, 0.7, 0.8, 0.9]), gold="C")
    assert (t.early_answer, t.mind_changes, t.change_positions) == (False, 2, [1, 3])
    assert t.final_answer == "C" and t.correct and t.unstable and t.flagged
    assert t.final_confidence == [0.0, 0.0, 0.0, 0.8, 0.9]
    steady = build_trajectory(steps_of("AAA", [0.7, 0.8, 0.9]), gold="A")
    assert (steady.early_answer, steady.mind_changes, steady.flagged) == (True, 0, False)
    dip = build_trajectory(
        [
            ProbeStep(0, "A", 0.9, {"A": 0.9, "B": 0.1}),
            ProbeStep(1, "A", 0.55, {"A": 0.55, "B": 0.45}),
            ProbeStep(2, "A", 0.95, {"A": 0.95, "B": 0.05}),
        ],
        gold="A",
    )
    assert dip.mind_changes == 0 and dip.unstable and dip.flagged  # fell by 0.35 > 0.2
    assert dip.final_confidence == [0.9, 0.55, 0.95]
    wrong = build_trajectory(steps_of("AB", [0.9, 0.9]), gold="A")
    assert not wrong.correct and not wrong.flagged


def test_dataset_summary() -> None:
    trajectories = [
        build_trajectory(steps_of("AA", [0.9, 0.9]), gold="A"),  # early, 1 step
        build_trajectory(steps_of("BA", [0.5, 0.9]), gold="A"),  # changed, 1 step, flagged
        build_trajectory(steps_of("CCC", [0.5, 0.6, 0.7]), gold="A"),  # early, 2 steps, wrong
        build_trajectory(steps_of("DDD", [0.5, 0.6, 0.7])),  # early, ungraded
    ]
    summary = summarize(trajectories)
    assert summary["early_answering_rate"] == 0.75
    assert summary["early_answering_by_steps"] == {
        "1": {"items": 2, "rate": 0.5},
        "2": {"items": 2, "rate": 1.0},
    }
    assert summary["mean_mind_changes"] == 0.25
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["correct_but_unstable"] == 1 and summary["correct_but_unstable_rate"] == 0.5


def test_selection_ranks_the_steady_chain_first() -> None:
    wavering = build_trajectory(steps_of("BCBA", [0.4, 0.5, 0.5, 0.95]))  # lucky, confident
    steady = build_trajectory(steps_of("AAAA", [0.5, 0.7, 0.8, 0.85]))
    wrong = build_trajectory(steps_of("BBBB", [0.6, 0.6, 0.7, 0.8]))
    ranked = rank([wavering, wrong, steady])
    assert [r.index for r in ranked] == [2, 1, 0]
    assert ranked[0].score == pytest.approx(0.85)
    assert ranked[2].score == pytest.approx(0.95 - 0.5 * 3 / 3)
    assert rank([wavering, wrong, steady], SelectionConfig("final_confidence"))[0].index == 0
    assert majority_answer([wavering, wrong, steady]) == "A"
    lucky1 = build_trajectory(steps_of("ABCB", [0.3, 0.4, 0.5, 0.9]))
    lucky2 = build_trajectory(steps_of("BAAB", [0.4, 0.6, 0.5, 0.9]))
    assert majority_answer([lucky1, lucky2, steady]) == "B"
    assert rank([lucky1, lucky2, steady])[0].index == 2  # CoP overrules the majority


def test_ties_break_by_support_then_index() -> None:
    a1 = build_trajectory(steps_of("AA", [0.8, 0.8]))
    b = build_trajectory(steps_of("BB", [0.8, 0.8]))
    a2 = build_trajectory(steps_of("AA", [0.8, 0.8]))
    assert [r.index for r in rank([b, a1, a2])] == [1, 2, 0]  # A has two supporters
    assert majority_answer([b, a1]) == "B"  # equal support: the first seen


def test_letter_trajectory_equals_direct_option_logits(tiny_model: Path) -> None:
    backend = HFBackend(tiny_model)
    item = ProbeItem(
        "Which is larger?", "Compare the numbers.\n12 is less than 30.\nSo 30.", ("12", "30", "7")
    )
    config = ProbeConfig()
    (steps,) = probe_batch(backend, [item], config)
    prefixes = probe_prefixes(item, config)
    assert len(steps) == len(prefixes) == 4
    tokenizer = backend.tokenizer
    letter_ids = [tokenizer("ABC"[i], add_special_tokens=False)["input_ids"] for i in range(3)]
    assert all(len(ids) == 1 for ids in letter_ids)
    assert prefixes[2] == [
        {"role": "user", "content": "Which is larger?\n(A) 12\n(B) 30\n(C) 7"},
        {
            "role": "assistant",
            "content": "Compare the numbers.\n12 is less than 30.\nTherefore, the answer is (",
        },
    ]
    raw = probe_prefixes(item, ProbeConfig(chat=False))
    assert (
        raw[0] == "Which is larger?\n(A) 12\n(B) 30\n(C) 7\nReasoning:\nTherefore, the answer is ("
    )
    for k, prefix in enumerate(prefixes):
        ids = encode_prompt(tokenizer, prefix)  # the chat template, the assistant turn continued
        assert tokenizer.decode(ids).endswith("Therefore, the answer is (")
        with torch.no_grad():
            logits = backend.hf_model(torch.tensor([ids])).logits[0, -1]
        expected = logits[[i[0] for i in letter_ids]].softmax(-1).tolist()
        got = [steps[k].distribution[L] for L in "ABC"]
        assert got == pytest.approx(expected, abs=1e-5)
        assert steps[k].answer == "ABC"[max(range(3), key=lambda i: expected[i])]


def test_batched_probing_makes_one_score_call(tiny_model: Path) -> None:
    calls: list[int] = []
    backend = HFBackend(tiny_model)
    inner = backend.score

    def counting(prompts, continuations):
        calls.append(len(prompts))
        return inner(prompts, continuations)

    backend.score = counting
    items = [ProbeItem("q1?", "a\nb", ("x", "y")), ProbeItem("q2?", "c\nd\ne", ("x", "y", "z"))]
    results = probe_batch(backend, items, ProbeConfig())
    assert calls == [3 * 2 + 4 * 3] and [len(r) for r in results] == [3, 4]


def test_free_form_probing_normalizes_answers() -> None:
    def answer(text: str) -> str:
        return " 42.0.\nmore" if "Double" in text else " 1,000"

    backend = ScriptedBackend(responder=answer)
    item = ProbeItem("What is 21 * 2?", "Take 21.\nDouble it.", gold="42")
    (steps,) = probe_batch(backend, [item], ProbeConfig())
    assert [s.answer for s in steps] == ["1000", "1000", "42"]
    assert steps[2].confidence == pytest.approx(256.0**-5)  # 5 bytes " 42.0" at 1/256 each


def letter_in_last_step(rendered: str, continuation: str) -> list[float]:
    """A scripted model whose letter follows the word A or B in the last reasoning line."""
    last = rendered.split("\n")[-2].split()
    return [-0.1 if continuation in last else -3.0]


def test_resample_replaces_unstable_chains() -> None:
    from services.prober.core.dataplane import ResampleConfig, select

    backend = ScriptedBackend(responder=lambda text: "says A\nso A", scorer=letter_in_last_step)
    chains = ["says A\nno B\nthen A", "says A\nstill A"]
    plain = select(backend, "Pick", ["x", "y"], chains, "cop", ProbeConfig())
    assert [t.mind_changes for t in plain.trajectories] == [2, 0] and plain.resampled == []
    fixed = select(
        backend, "Pick", ["x", "y"], chains, "cop", ProbeConfig(), ResampleConfig(rounds=2)
    )
    assert fixed.resampled == [0] and fixed.chains == ["says A\nso A", "says A\nstill A"]
    assert [t.mind_changes for t in fixed.trajectories] == [0, 0]
    assert fixed.ranked[0].score > plain.ranked[-1].score
