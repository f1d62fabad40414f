"""Judge strategies end to end over scripted backends: the real judge sets for the baselines,
scripted crowds for CCE, identity and scripted revisers for RevisEval."""

import json
import re

import pytest

from services.common.errors import FailedPrecondition, InvalidInput, ResourceExhausted
from services.judge.core.cce import (
    CrowdJudgment,
    relabel,
    remove_outcome,
    select,
)
from services.judge.core.crowd_sampling import (
    SamplingConfig,
    crowd_rejection_sampling,
    distillation_rows,
    preference_rows,
    sft_rows,
)
from services.judge.core.dataplane import (
    JudgeSpec,
    build_strategy,
    check_budget,
    make_context,
    planned_calls,
)
from services.judge.core.datasets import PairItem, load_pairs
from services.judge.core.evaluation import evaluate, judge_items, report
from services.judge.core.judging import Pair
from services.judge.core.majority import majority
from services.judge.core.prompts import pairwise_prompt
from services.judge.core.verdicts import Winner
from services.llm.cache import MemoryStore, ResponseCache
from services.llm.scripted import ScriptedBackend
from tests.datasets import JUDGE_DIR

DATA = JUDGE_DIR
SLOT = {
    s: re.compile(
        rf"\[The Start of Assistant {s}'s Answer\]\n(.*?)\n\[The End of Assistant {s}'s Answer\]",
        re.S,
    )
    for s in "AB"
}
CROWD_BLOCK = re.compile(
    r"\[The Start of Crowd Judgments\](.*)\[The End of Crowd Judgments\]", re.S
)


def answers(text: str) -> tuple[str, str]:
    return SLOT["A"].findall(text)[-1], SLOT["B"].findall(text)[-1]


def longer_judge(text: str) -> str:
    a, b = answers(text)
    verdict = "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
    return f"Assistant A has {len(a)} characters and Assistant B {len(b)}.\n{verdict}"


def run(responder, items, strategy="vanilla", cache=None, backends=None, **spec_fields):
    spec = JudgeSpec(strategy=strategy, model="judge", **spec_fields).validate()
    backends = backends or {}
    ctx = make_context(
        spec,
        lambda m: backends.get(m) or ScriptedBackend(responder=responder, model=m),
        cache if cache is not None else ResponseCache(MemoryStore()),
    )
    results = evaluate(build_strategy(ctx, spec), items, spec.both_orders, spec.combine)
    return spec, ctx, results, report(items, results, ctx.usage)


def load(name: str):
    return load_pairs(json.loads((DATA / f"{name}.json").read_text()))


# --- baselines on the real sets ------------------------------------------------------------


def test_always_a_judge_has_no_order_agreement_on_evalbiasbench() -> None:
    items = load("evalbiasbench")
    _, _, _, r = run(lambda t: "A looks better.\n[[A]]", items)
    assert r["forward_accuracy"] == 1.0  # the original order alone looks perfect
    assert r["swapped_accuracy"] == 0.0
    assert r["order_agreement"] == 0.0 and r["first_slot_win_rate"] == 1.0
    # every combined verdict is a tie: no decided verdict, so accuracy without ties is undefined
    assert r["verdicts"]["tie"] == 80 and r["accuracy"] == 0.5 and r["accuracy_no_ties"] is None


@pytest.mark.parametrize(
    ("name", "expected", "ties"), [("llmbar_natural", 0.565, 1), ("mtbench_human_200", 0.6925, 5)]
)
def test_longer_answer_judge_floor(name: str, expected: float, ties: int) -> None:
    items = load(name)
    _, _, _, r = run(longer_judge, items)
    assert r["accuracy"] == pytest.approx(expected)  # ties (equal lengths) count half
    assert r["verdicts"]["tie"] == ties and r["order_agreement"] == 1.0
    low, high = r["accuracy_ci95"]
    assert low < expected < high


def test_disagreement_tie_rule_and_single_order() -> None:
    items = load("llmbar_natural")[:10]
    _, _, _, r = run(lambda t: "[[A]]", items, combine="disagreement_tie")
    assert r["verdicts"]["tie"] == 10
    _, ctx, results, r = run(lambda t: "[[A]]", items, both_orders=False)
    assert all(x.swapped is None for x in results) and ctx.usage.calls == 10
    assert r["first_slot_win_rate"] == 1.0 and "order_agreement" not in r


def test_unparseable_is_counted_never_graded() -> None:
    items = load("llmbar_natural")[:6]
    _, _, results, r = run(lambda t: "Both are fine, hard to say.", items)
    assert r["unparseable_rate"] == 1.0 and r["accuracy"] is None  # undefined, not 0
    assert {x.verdict for x in results} == {Winner.UNPARSEABLE}


def test_pointwise_vanilla_rates_each_response() -> None:
    def rater(text: str) -> str:
        response = re.search(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End", text, re.S)
        return f"Reasonable.\nRating: [[{min(10, len(response.group(1)) // 10)}]]"

    items = [PairItem("q", "x" * 95, "x" * 20, Winner.A)]
    _, ctx, (result,), _ = run(rater, items, parameters={"mode": "pointwise"})
    assert result.forward.details["scores"] == [9.0, 2.0]
    assert result.verdict == Winner.A
    assert ctx.usage.calls == 2  # each response rated once, shared by both orders


def test_majority_vote() -> None:
    assert majority([Winner.A, Winner.B, Winner.A]) == Winner.A
    assert majority([Winner.A, Winner.B, Winner.UNPARSEABLE]) == Winner.TIE
    assert majority([Winner.UNPARSEABLE] * 3) == Winner.UNPARSEABLE
    items = [PairItem("q", "long answer", "short", Winner.A)]
    _, ctx, (result,), _ = run(longer_judge, items, strategy="majority", k=3)
    assert result.forward.details["votes"] == ["A", "A", "A"]
    assert ctx.usage.by_stage["judge"]["calls"] == 6  # 3 seeded votes x 2 orders


def test_criteria_expansion_lists_criteria() -> None:
    items = [PairItem("q", "aa", "a", Winner.A)]
    _, _, (result,), _ = run(
        longer_judge, items, strategy="criteria", parameters={"criteria": ["Brevity", "Tone"]}
    )
    assert "[Criteria]\n- Brevity\n- Tone" in result.forward.prompt[1]["content"]
    assert result.verdict == Winner.A


# --- CCE ------------------------------------------------------------------------------------

GOOD, BAD_ANSWER = "A careful, correct and complete answer.", "Wrong."


def crowd_judge(text: str) -> str:
    """The judge: a candidate that is GOOD beats the crowd, BAD_ANSWER loses to it; the final
    judgment prefers GOOD."""
    a, b = answers(text)
    if CROWD_BLOCK.search(text) or {a, b} == {GOOD, BAD_ANSWER}:
        verdict = "[[A]]" if a == GOOD else "[[B]]"
        return f"Assistant A and Assistant B compared with the crowd.\nFinal verdict: {verdict}"
    verdict = "[[A]]" if a == GOOD else "[[B]]"
    return (
        f"Assistant A writes '{a[:20]}'; Assistant B writes '{b[:20]}'. Assistant B misses "
        f"details.\nMy final verdict is {verdict}"
    )


def crowd_backends(n: int) -> dict[str, ScriptedBackend]:
    return {
        f"crowd{i}": ScriptedBackend(responder=lambda t, i=i: f"Crowd answer number {i}.")
        for i in range(n)
    }


def cce_run(k: int, selection: str = "criticizing", **fields):
    items = [PairItem("Explain X.", GOOD, BAD_ANSWER, Winner.A)]
    models = [f"crowd{i}" for i in range(4)]
    return run(
        crowd_judge,
        items,
        strategy="cce",
        k=k,
        backends=crowd_backends(4),
        parameters={"crowd_size": 4, "crowd_models": models, "selection": selection, **fields},
    )


def test_cce_k0_is_vanilla() -> None:
    items = load("llmbar_natural")[:8]
    _, vctx, vanilla, _ = run(longer_judge, items)
    _, cctx, cce, _ = run(longer_judge, items, strategy="cce", k=0)
    for v, c in zip(vanilla, cce, strict=True):
        assert c.forward.prompt == v.forward.prompt and c.swapped.prompt == v.swapped.prompt
        assert c.verdict == v.verdict
    assert set(cctx.usage.by_stage) == {"judge"} and cctx.usage.calls == vctx.usage.calls


def test_cce_criticizing_keeps_floor_k_half_lost_judgments_without_verdicts() -> None:
    _, _, (result,), _ = cce_run(k=5)
    kept = result.forward.details["crowd_kept"]
    # GOOD beats every crowd response, so side A has nothing to criticize; BAD lost all 4
    assert [k["candidate"] for k in kept] == ["B", "B"]  # floor(5/2) = 2 per side at most
    assert all(k["winner"] == "B" for k in kept)  # only judgments the candidate lost
    block = CROWD_BLOCK.search(result.forward.prompt[1]["content"]).group(1)
    assert not re.search(r"\[\[|verdict", block, re.IGNORECASE)  # outcome removal
    assert "Assistant B writes 'Wrong.'" in block and "Assistant C misses details" in block
    assert "Assistant D misses details" in block  # crowd response 1 relabeled D
    assert result.verdict == Winner.A


def test_cce_selection_modes() -> None:
    judgments = [
        CrowdJudgment(0, Winner.B, "lost0"),
        CrowdJudgment(1, Winner.A, "won1"),
        CrowdJudgment(2, Winner.B, "lost2"),
        CrowdJudgment(3, Winner.UNPARSEABLE, "?"),
        CrowdJudgment(4, Winner.A, "won4"),
    ]
    import random

    rng = random.Random(0)
    pick = lambda mode, m: [j.crowd_index for j in select(judgments, m, mode, rng)]  # noqa: E731
    assert pick("criticizing", 4) == [0, 2]  # never padded with won judgments
    assert pick("praising", 1) == [1]
    assert pick("balanced", 3) == [0, 1, 2]  # 2 lost + 1 won, crowd order
    randomly = pick("random", 3)
    assert len(randomly) == 3 and 3 not in randomly  # only parsed judgments
    _, _, (result,), _ = cce_run(k=8, selection="praising")
    assert {k["candidate"] for k in result.forward.details["crowd_kept"]} == {"A"}


def test_cce_prompt_grows_with_k_and_calls_match_the_plan() -> None:
    lengths = []
    for k in (0, 2, 4, 8):
        spec, ctx, (result,), _ = cce_run(k=k, selection="balanced")
        lengths.append(len(result.forward.prompt[1]["content"]))
        items = [PairItem("Explain X.", GOOD, BAD_ANSWER, Winner.A)]
        planned = planned_calls(spec, items)
        assert planned == {s: v["calls"] for s, v in ctx.usage.by_stage.items()}
    assert lengths[0] < lengths[1] < lengths[2] < lengths[3]
    assert planned == {"judge": 2, "crowd": 4, "crowd_judgment": 8}


def test_outcome_removal_and_relabel() -> None:
    text = "Assistant A is precise, Assistant B's answer rambles.\nVerdict: [[B]]\nSo [[B]]."
    assert (
        remove_outcome(text, "mtbench") == "Assistant A is precise, Assistant B's answer rambles."
    )
    assert relabel("Assistant A beats Assistant B; Response (A) is terse", "B", 1) == (
        "Assistant B beats Assistant D; Response (B) is terse"
    )


def test_identical_second_run_costs_zero_backend_calls() -> None:
    cache = ResponseCache(MemoryStore())
    items = [PairItem("Explain X.", GOOD, BAD_ANSWER, Winner.A)]
    params = {"crowd_size": 4, "crowd_models": [f"crowd{i}" for i in range(4)]}
    first = run(crowd_judge, items, "cce", cache, crowd_backends(4), k=4, parameters=params)
    second = run(crowd_judge, items, "cce", cache, crowd_backends(4), k=4, parameters=params)
    assert first[1].usage.calls == 14 and second[1].usage.calls == 0
    assert second[1].usage.cached_calls >= 14
    assert [r.verdict for r in first[2]] == [r.verdict for r in second[2]]


def test_budget_cap() -> None:
    spec = JudgeSpec(strategy="cce", model="j", k=4, max_calls=10).validate()
    items = [PairItem("q", "a", "b", Winner.A)]
    with pytest.raises(FailedPrecondition, match="plans 14 backend calls"):
        check_budget(spec, planned_calls(spec, items))
    judge = ScriptedBackend(responder=lambda t: "[[A]]" if "[The Start" in t else "crowd")
    ctx = make_context(spec, lambda m: judge, None)
    with pytest.raises(ResourceExhausted, match="budget 10"):
        judge_items(build_strategy(ctx, spec), items)


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        JudgeSpec(strategy="cce", model="j", parameters={"selection": "loudest"}).validate()
    assert err.value.field == "config.parameters" and "selection" in err.value.reason
    with pytest.raises(InvalidInput) as err:
        JudgeSpec(strategy="cce", model="j", parameters={"crowd_sizes": 3}).validate()
    assert err.value.field == "config.parameters.crowd_sizes"
    with pytest.raises(InvalidInput) as err:
        JudgeSpec(strategy="best", model="j").validate()
    assert err.value.field == "config.strategy"


# --- RevisEval ------------------------------------------------------------------------------

REVISED = re.compile(r"\[The Start of Assistant's Response\]\n(.*?)\n\[The End", re.S)


def identity_reviser(text: str) -> str:
    match = REVISED.search(text)
    return match.group(1) if match else longer_judge(text)


def test_reviseval_identity_reviser_gives_bleu_100() -> None:
    items = [PairItem("Say hi.", "Hello there, friend.", "Hi!", None)]
    _, ctx, (result,), _ = run(
        identity_reviser, items, strategy="reviseval", parameters={"judge_by": "bleu"}
    )
    assert result.forward.details["scores"] == [pytest.approx(100.0), pytest.approx(100.0)]
    assert result.forward.details["references"] == ["Hello there, friend.", "Hi!"]
    assert result.verdict == Winner.TIE
    assert ctx.usage.calls == 2  # each response revised once, shared by both orders


def test_reviseval_metric_prefers_the_response_needing_fewer_edits() -> None:
    def reviser(text: str) -> str:
        response = REVISED.search(text).group(1)
        return response if response.startswith("Paris") else "Paris is the capital of France."

    items = [PairItem("Capital of France?", "Paris is the capital of France.", "Lyon.", Winner.A)]
    for metric in ("bleu", "rougeL", "bertscore"):
        _, _, (result,), _ = run(
            reviser, items, strategy="reviseval", parameters={"judge_by": metric}
        )
        first, second = result.forward.details["scores"]
        assert first == pytest.approx(100.0 if metric == "bleu" else 1.0, abs=1e-5)
        assert second < first and result.verdict == Winner.A


def test_reviseval_llm_judge_variants() -> None:
    seen: list[str] = []

    def model(text: str) -> str:
        seen.append(text)
        if "Write one revised response" in text:
            return "COMBINED REFERENCE"
        match = REVISED.search(text)
        if match:
            return f"REVISED({match.group(1)})"
        return longer_judge(text)

    items = [PairItem("q", "longer answer", "short", Winner.A)]
    for variant, reference in (
        ("single", "REVISED(longer answer)"),
        ("select_then_revise", "REVISED(longer answer)"),
        ("combine", "COMBINED REFERENCE"),
    ):
        _, ctx, (result,), _ = run(
            model, items, strategy="reviseval", parameters={"variant": variant}
        )
        assert result.forward.details["reference"] == reference
        assert (
            f"[The Start of Reference Answer]\n{reference}\n" in result.forward.prompt[1]["content"]
        )
        assert result.verdict == Winner.A
    assert ctx.usage.by_stage["revise"]["calls"] == 2  # combine: one per order


def test_cce_plus_reviseval_gives_both_contexts() -> None:
    items = [PairItem("Explain X.", GOOD, BAD_ANSWER, Winner.A)]
    _, ctx, (result,), _ = run(
        lambda t: identity_reviser(t) if REVISED.search(t) else crowd_judge(t),
        items,
        strategy="cce+reviseval",
        k=2,
        backends=crowd_backends(2),
        parameters={"crowd_models": ["crowd0", "crowd1"], "variant": "single"},
    )
    prompt = result.forward.prompt[1]["content"]
    assert (
        "[The Start of Reference Answer]" in prompt and "[The Start of Crowd Judgments]" in prompt
    )
    assert set(ctx.usage.by_stage) == {"crowd", "crowd_judgment", "revise", "judge"}


# --- crowd rejection sampling and distillation ----------------------------------------------


def test_crowd_rejection_sampling_picks_by_copeland() -> None:
    policies = {
        "p0": ScriptedBackend(responder=lambda t: "short"),
        "p1": ScriptedBackend(responder=lambda t: "a much longer answer"),
        "p2": ScriptedBackend(responder=lambda t: "medium one"),
    }
    spec = JudgeSpec(model="judge").validate()
    ctx = make_context(
        spec, lambda m: policies.get(m) or ScriptedBackend(responder=longer_judge), None
    )
    selections = crowd_rejection_sampling(
        ctx, build_strategy(ctx, spec), ["Say something."], list(policies), SamplingConfig()
    )
    (s,) = selections
    assert s.scores == [0.0, 2.0, 1.0] and s.best == 1 and s.worst == 0
    assert (s.judgments, s.parsed) == (6, 6)  # 3 matches x 2 orders, every verdict parsed
    assert sft_rows(selections) == [
        {
            "messages": [
                {"role": "user", "content": "Say something."},
                {"role": "assistant", "content": "a much longer answer"},
            ]
        }
    ]
    assert preference_rows(selections) == [
        {"prompt": "Say something.", "chosen": "a much longer answer", "rejected": "short"}
    ]
    assert ctx.usage.by_stage["policy"]["calls"] == 3 and ctx.usage.by_stage["judge"]["calls"] == 6


def test_distillation_keeps_parseable_judgments_that_agree_with_the_label() -> None:
    items = [
        PairItem("q1", "long answer", "short", Winner.A),
        PairItem("q2", "long answer", "short", Winner.B),  # the judge disagrees: dropped
        PairItem("q3", "same", "same", None),  # unlabeled: a tie is kept
    ]
    _, _, results, _ = run(longer_judge, items)
    rows = distillation_rows(items, results, "mtbench")
    assert len(rows) == 4  # q1 both orders, q3 both orders
    first = rows[0]["messages"]
    assert first[:2] == pairwise_prompt("q1", "long answer", "short")
    assert first[2]["content"].endswith("[[A]]")
    assert rows[1]["messages"][2]["content"].endswith("[[B]]")  # swapped order: B is longer
    assert Pair("q", "a", "b").first == "a"


def test_a_judge_that_parses_nothing_has_undefined_metrics() -> None:
    """0 of 8 x 2 verdicts parsed: the parse rate is 0 and every rate that needs a verdict is
    None (undefined), not 0.0."""
    items = load("llmbar_natural")[:8]
    _, _, _, summary = run(lambda text: "Both answers have merits.", items)
    assert next(iter(summary)) == "parse_rate" and summary["parse_rate"] == 0.0
    assert summary["unparseable_rate"] == 1.0 and summary["tie_rate"] == 0.0
    for metric in (
        "accuracy",
        "accuracy_no_ties",
        "accuracy_ci95",
        "cohen_kappa",
        "forward_accuracy",
        "swapped_accuracy",
        "order_agreement",
        "first_slot_win_rate",
        "single_order_tie_rate",
    ):
        assert summary[metric] is None, metric


def test_cce_says_when_no_crowd_judgment_parsed() -> None:
    """Crowd judgments without a verdict leave the final judge the vanilla prompt: each outcome
    and the report say so."""

    def judge(text: str) -> str:
        return "Final verdict: [[A]]" if "Crowd" not in text[-300:] else "I cannot decide."

    items = [PairItem("Explain X.", GOOD, BAD_ANSWER, Winner.A)]
    models = [f"crowd{i}" for i in range(4)]
    _, _, (result,), summary = run(
        lambda text: (
            "I cannot decide."
            if "[The Start of Assistant C" not in text and "Crowd answer" in text
            else "Final verdict: [[A]]"
        ),
        items,
        strategy="cce",
        k=4,
        backends=crowd_backends(4),
        parameters={"crowd_size": 4, "crowd_models": models},
    )
    assert result.forward.details["crowd_fallback"] is True
    assert result.forward.details["crowd_kept"] == []
    assert summary["crowd_fallback_rate"] == 1.0 and summary["parse_rate"] == 1.0
    _, _, (normal,), normal_summary = cce_run(k=4)
    assert normal.forward.details["crowd_fallback"] is False
    assert normal_summary["crowd_fallback_rate"] == 0.0
