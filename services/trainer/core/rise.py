"""RISE: preference pairs from error-injected self-editing (Xu et al., "Subtle Errors Matter:
Preference Learning via Error-injected Self-editing", Sec. 3).

1. Self-sampling: the policy samples N solutions per problem; the shared answer checker
   splits them into correct and incorrect ones.
2. Self-editing: a step of a correct solution is rewritten by the same model to contain one
   subtle error; the error type is routed by the step's content (a step with an equation can
   get a wrong operator or numerical value, a step with several terms a deleted or swapped
   term, a step without numbers a substitution or a wording change).
3. Filters: edits that admit the error ("mistake", "incorrect", ...) are dropped, `\\boxed{}`
   is stripped from edits, and an edit must change between 1 and `max_edit_distance` words.
4. Pairs: full solutions (correct, incorrect) and edited-step pairs that share the correct
   prefix: prompt = problem + steps before k, chosen = step k, rejected = its edit.
5. Objective: DPO on both kinds of pairs plus alpha * the length-normalized NLL of the chosen
   response (Eq. 4; alpha = 0 disables it).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.common.reasoning import is_correct, split_steps, strip_boxed
from services.llm.base import Backend, Message, SamplingParams

ERROR_TYPES: dict[str, str] = {
    "numerical_value": "change one number so that the calculation gives a wrong value",
    "operator": "replace one arithmetic operator by another (for example + by -, * by /)",
    "deleted_term": "leave out one term of the calculation",
    "swapped_terms": "swap two terms or operands so that the result becomes wrong",
    "substitution": "use a wrong quantity from the problem in place of the right one",
    "wording": "change one word so that the statement becomes subtly wrong",
}

_EQUATION = re.compile(r"\d\s*[-+*/x×÷]\s*\d")
_NUMBER = re.compile(r"\d")
_TERMS = re.compile(r"\d[^+\-*/=]*[-+*/×÷][^+\-*/=]*\d[^+\-*/=]*[-+*/×÷]")
_ADMITS = re.compile(
    r"\b(mistake|error|incorrect|wrong|typo|oops|should be|actually|correction)\b", re.I
)

EDIT_TEMPLATE = (
    "Problem:\n{question}\n\nSolution so far:\n{prefix}\n\nNext step:\n{step}\n\n"
    "Rewrite the next step so that it contains exactly one subtle error: {instruction}. "
    "Keep everything else in the step the same, keep the same style, and do not mention, "
    "hint at or correct the error. Output only the rewritten step."
)


@dataclass(frozen=True)
class RISEConfig:
    samples_per_problem: int = 4
    sample_temperature: float = 0.8
    max_tokens: int = 384
    edits_per_solution: int = 1
    max_edit_distance: int = 6  # words changed by an edit, at most
    seed: int = 0
    step_mode: str = "lines"
    nll_alpha: float = 0.0  # weight of the NLL term in the RISE objective (0: plain DPO)
    error_types: tuple[str, ...] = field(default_factory=lambda: tuple(ERROR_TYPES))

    def __post_init__(self) -> None:
        unknown = set(self.error_types) - set(ERROR_TYPES)
        if unknown:
            raise ValueError(f"unknown error types {sorted(unknown)}; known: {list(ERROR_TYPES)}")
        if self.samples_per_problem < 1 or self.max_edit_distance < 1 or self.nll_alpha < 0:
            raise ValueError("samples_per_problem, max_edit_distance >= 1; nll_alpha >= 0")


def error_types_for(step: str, allowed: Sequence[str]) -> list[str]:
    """The error types that fit a step's content, in ERROR_TYPES order."""
    if _EQUATION.search(step):
        fits = ["numerical_value", "operator", "swapped_terms"]
        if _TERMS.search(step):
            fits.append("deleted_term")
    elif _NUMBER.search(step):
        fits = ["numerical_value", "substitution"]
    else:
        fits = ["wording", "substitution"]
    return [t for t in fits if t in allowed]


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance over whitespace-separated words."""
    x, y = a.split(), b.split()
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


def filter_edit(original: str, edited: str, config: RISEConfig) -> str | None:
    """The cleaned edit, or None when it admits the error or changes 0 or too many words."""
    cleaned = strip_boxed(edited).strip()
    if not cleaned or (_ADMITS.search(cleaned) and not _ADMITS.search(original)):
        return None
    distance = word_edit_distance(original, cleaned)
    return cleaned if 1 <= distance <= config.max_edit_distance else None


@dataclass(frozen=True)
class EditRequest:
    problem: int
    solution: str
    step_index: int
    error_type: str
    prompt: list[Message]


def plan_edits(
    question: str, problem: int, solution: str, config: RISEConfig, rng: random.Random
) -> list[EditRequest]:
    """Which steps of a correct solution to edit, with which error type (seeded choice)."""
    steps = split_steps(solution, config.step_mode)
    candidates = [(k, error_types_for(s, config.error_types)) for k, s in enumerate(steps)]
    candidates = [(k, types) for k, types in candidates if types]
    chosen = rng.sample(candidates, min(config.edits_per_solution, len(candidates)))
    requests = []
    for k, types in sorted(chosen):
        error_type = rng.choice(types)
        content = EDIT_TEMPLATE.format(
            question=question,
            prefix="\n".join(steps[:k]) or "(none)",
            step=steps[k],
            instruction=ERROR_TYPES[error_type],
        )
        requests.append(
            EditRequest(problem, solution, k, error_type, [{"role": "user", "content": content}])
        )
    return requests


def solution_prompt(question: str) -> list[Message]:
    return [
        {
            "role": "user",
            "content": f"{question}\nSolve step by step, one step per line, and put the final "
            "answer in \\boxed{}.",
        }
    ]


@dataclass
class RISEStats:
    problems: int = 0
    samples: int = 0
    correct_samples: int = 0
    edits_requested: int = 0
    edits_kept: int = 0
    full_pairs: int = 0
    step_pairs: int = 0
    by_error_type: dict[str, int] = field(default_factory=dict)


def build_pairs(
    backend: Backend,
    problems: Sequence[dict[str, str]],
    config: RISEConfig,
    on_stage: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, object]], RISEStats]:
    """Preference rows {prompt, chosen, rejected, kind, ...} from {question, answer} problems
    (answer: a GSM8K reference solution or a bare final answer). Prompts are chat messages;
    a step pair's prompt ends with the shared correct prefix as a partial assistant turn."""
    stats = RISEStats(problems=len(problems))
    rng = random.Random(config.seed)
    prompts = [solution_prompt(p["question"]) for p in problems]
    samples: list[list[str]] = [[] for _ in problems]
    for i in range(config.samples_per_problem):
        params = SamplingParams(
            max_tokens=config.max_tokens,
            temperature=config.sample_temperature,
            seed=config.seed + i,
        )
        for slot, done in zip(samples, backend.generate(prompts, params), strict=True):
            slot.append(done.text.strip())
        if on_stage:
            on_stage(f"sampled {i + 1}/{config.samples_per_problem}")
    rows: list[dict[str, object]] = []
    edits: list[EditRequest] = []
    for index, (problem, solutions) in enumerate(zip(problems, samples, strict=True)):
        stats.samples += len(solutions)
        correct = [s for s in solutions if is_correct(s, problem["answer"])]
        wrong = [s for s in solutions if not is_correct(s, problem["answer"])]
        stats.correct_samples += len(correct)
        prompt = prompts[index]
        for chosen, rejected in zip(correct, wrong, strict=False):
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "kind": "full"})
            stats.full_pairs += 1
        for solution in dict.fromkeys(correct):
            edits += plan_edits(problem["question"], index, solution, config, rng)
    stats.edits_requested = len(edits)
    if edits:
        params = SamplingParams(max_tokens=config.max_tokens, temperature=0.0)
        outputs = backend.generate([e.prompt for e in edits], params)
        for edit, done in zip(edits, outputs, strict=True):
            steps = split_steps(edit.solution, config.step_mode)
            kept = filter_edit(steps[edit.step_index], done.text, config)
            if kept is None:
                continue
            stats.edits_kept += 1
            stats.step_pairs += 1
            stats.by_error_type[edit.error_type] = stats.by_error_type.get(edit.error_type, 0) + 1
            prefix = "".join(f"{s}\n" for s in steps[: edit.step_index])
            rows.append(
                {
                    "prompt": [*prompts[edit.problem], {"role": "assistant", "content": prefix}],
                    "chosen": steps[edit.step_index],
                    "rejected": kept,
                    "kind": "step",
                    "error_type": edit.error_type,
                }
            )
        if on_stage:
            on_stage(f"edited {stats.edits_kept}/{len(edits)} steps kept")
    return rows, stats
