"""Chain-of-Probe probing: before the first step and after each step k of a chain of thought,
read the model's answer distribution (Chain-of-Probe Sec. 3).

A probe prompt is the question (and its lettered options), the first k steps, then the answer
cue. For a chat model (`chat`, the default) the question is the user's turn and the steps and
cue are the assistant's turn, continued (the model reads its own reasoning, as it wrote it);
otherwise one raw text holds them, after a reasoning header.

Multiple choice: the probability of each option letter right after the answer cue,
normalized over the letters. Free form: the greedy short answer after the cue and its
probability (the product of its token probabilities). All prefixes of an item (and of a
batch of items) go to the backend in one Score or Generate call.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.reasoning import canonical, split_steps
from services.llm.base import Backend, Prompt, SamplingParams
from services.prober.core.trajectory import ProbeStep


@dataclass(frozen=True)
class ProbeItem:
    question: str
    reasoning: str
    options: tuple[str, ...] = ()  # lettered A, B, ... in order; empty: free form
    gold: str | None = None  # a letter, or the free-form answer


@dataclass(frozen=True)
class ProbeConfig:
    step_mode: str = "lines"  # lines | sentences
    reasoning_header: str = "\nReasoning:"
    answer_cue: str = "\nTherefore, the answer is ("  # free form: "\nTherefore, the answer is"
    free_form_cue: str = "\nTherefore, the answer is"
    free_form_max_tokens: int = 16
    chat: bool = True  # the model's chat template; False: raw text


def letters_for(options: Sequence[str]) -> list[str]:
    if len(options) > 26:
        raise ValueError("at most 26 options")
    return list(string.ascii_uppercase[: len(options)])


def question_text(item: ProbeItem) -> str:
    """The question and its lettered options."""
    return item.question + "".join(
        f"\n({letter}) {option}"
        for letter, option in zip(letters_for(item.options), item.options, strict=True)
    )


def chain_prompt(item: ProbeItem, config: ProbeConfig) -> Prompt:
    """What a chain of thought for item is drawn from (Select's resampling)."""
    if config.chat:
        return [{"role": "user", "content": question_text(item)}]
    return question_text(item) + config.reasoning_header + "\n"


def probe_prefixes(item: ProbeItem, config: ProbeConfig) -> list[Prompt]:
    """K + 1 prompts: the question (and options), the first k steps, then the answer cue."""
    steps = split_steps(item.reasoning, config.step_mode)
    cue = config.answer_cue if item.options else config.free_form_cue
    reasoning = ["".join(f"\n{s}" for s in steps[:k]) + cue for k in range(len(steps) + 1)]
    if not config.chat:
        head = question_text(item) + config.reasoning_header
        return [head + text for text in reasoning]
    question = {"role": "user", "content": question_text(item)}
    return [[question, {"role": "assistant", "content": text.lstrip("\n")}] for text in reasoning]


def probe_batch(
    backend: Backend, items: Sequence[ProbeItem], config: ProbeConfig
) -> list[list[ProbeStep]]:
    """Probes every item; one Score call for all multiple-choice prefixes x letters and one
    Generate call for all free-form prefixes."""
    prefixes = [probe_prefixes(item, config) for item in items]
    results: list[list[ProbeStep]] = [[] for _ in items]
    choice = [i for i, item in enumerate(items) if item.options]
    free = [i for i, item in enumerate(items) if not item.options]
    if choice:
        prompts, continuations = [], []
        for i in choice:
            for prefix in prefixes[i]:
                for letter in letters_for(items[i].options):
                    prompts.append(prefix)
                    continuations.append(letter)
        scores = iter(backend.score(prompts, continuations))
        for i in choice:
            letters = letters_for(items[i].options)
            for k in range(len(prefixes[i])):
                logps = [next(scores).total for _ in letters]
                top = max(logps)
                weights = [math.exp(lp - top) for lp in logps]
                norm = sum(weights)
                distribution = {L: w / norm for L, w in zip(letters, weights, strict=True)}
                answer = max(letters, key=lambda L: (distribution[L], -letters.index(L)))
                results[i].append(ProbeStep(k, answer, distribution[answer], distribution))
    if free:
        prompts = [p for i in free for p in prefixes[i]]
        params = SamplingParams(max_tokens=config.free_form_max_tokens, stop=("\n",), logprobs=True)
        completions = iter(backend.generate(prompts, params))
        for i in free:
            for k in range(len(prefixes[i])):
                done = next(completions)
                probability = math.exp(sum(done.logprobs or [0.0]))
                results[i].append(ProbeStep(k, canonical(done.text), probability))
    return results
