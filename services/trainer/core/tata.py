"""TATA: aptitude-aware selection between chain-of-thought (CoT) and tool-integrated (TIR)
solutions for SFT (Xu et al., "Teaching LLMs According to Their Aptitude: Adaptive Reasoning
for Mathematical Problem Solving", Sec. 3).

1. Anchor set: k-means over the query embeddings of the training problems; the problem
   nearest each centroid is an anchor (K anchors).
2. One-shot aptitude: each candidate (q_i, CoT_i) is a one-shot demonstration for the base
   model on every anchor; S_CoT(i) is the accuracy over the anchors (answers checked by the
   shared math checker). S_TIR(i) likewise with (q_i, TIR_i), the model solving the anchors
   by tool-integrated generation.
3. Selection on Delta_i = S_CoT(i) - S_TIR(i): with quantile thresholds
   t_low = Q(Delta, low_quantile) and t_high = Q(Delta, high_quantile),
   Delta_i >= t_high keeps CoT_i, Delta_i <= t_low keeps TIR_i, and a problem in between
   (or on both thresholds) keeps both.

Query embeddings are L2-normalized TF-IDF vectors over word unigrams and bigrams (no model
download; `embed` can be replaced by any [N, D] embedding function).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.reasoning import is_correct
from services.llm.base import Message, Prompt

Solver = Callable[[Sequence[Prompt]], list[str]]  # prompts -> generated solutions

COT_INSTRUCTION = "Solve step by step and put the final answer in \\boxed{}."
TIR_INSTRUCTION = (
    "Solve by reasoning and writing python code in ```python blocks; the output of each "
    "block follows in an ```output block. Put the final answer in \\boxed{}."
)


@dataclass(frozen=True)
class TATAConfig:
    anchors: int = 8  # K
    kmeans_iterations: int = 50
    low_quantile: float = 1 / 3
    high_quantile: float = 2 / 3
    seed: int = 0
    max_tokens: int = 512  # per generated anchor solution

    def __post_init__(self) -> None:
        if self.anchors < 1 or self.max_tokens < 1:
            raise ValueError("anchors and max_tokens must be >= 1")
        if not 0.0 <= self.low_quantile <= self.high_quantile <= 1.0:
            raise ValueError("need 0 <= low_quantile <= high_quantile <= 1")


_WORD = re.compile(r"[a-z0-9]+")


def embed(texts: Sequence[str]) -> np.ndarray:
    """[N, V] L2-normalized TF-IDF over word unigrams and bigrams of the texts."""
    docs = []
    for text in texts:
        words = _WORD.findall(text.lower())
        docs.append(Counter(words + [f"{a} {b}" for a, b in itertools.pairwise(words)]))
    vocabulary = sorted({term for doc in docs for term in doc})
    column = {term: j for j, term in enumerate(vocabulary)}
    frequency = Counter(term for doc in docs for term in doc)
    matrix = np.zeros((len(docs), len(vocabulary)))
    for i, doc in enumerate(docs):
        for term, count in doc.items():
            matrix[i, column[term]] = count * (
                math.log((1 + len(docs)) / (1 + frequency[term])) + 1
            )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def kmeans(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Centroids [k, D] by Lloyd's algorithm from a k-means++ initialization."""
    rng = np.random.default_rng(seed)
    centroids = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        distance = np.min([((points - c) ** 2).sum(1) for c in centroids], axis=0)
        if distance.sum() == 0:
            centroids.append(points[rng.integers(len(points))])
            continue
        centroids.append(points[rng.choice(len(points), p=distance / distance.sum())])
    centers = np.stack(centroids)
    for _ in range(iterations):
        labels = ((points[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
        moved = np.stack(
            [points[labels == j].mean(0) if (labels == j).any() else centers[j] for j in range(k)]
        )
        if np.allclose(moved, centers):
            break
        centers = moved
    return centers


def select_anchors(
    queries: Sequence[str],
    config: TATAConfig,
    embed_fn: Callable[[Sequence[str]], np.ndarray] = embed,
) -> list[int]:
    """Indices of the K distinct queries nearest the k-means centroids, in centroid order."""
    k = min(config.anchors, len(queries))
    points = embed_fn(queries)
    centers = kmeans(points, k, config.kmeans_iterations, config.seed)
    anchors: list[int] = []
    for center in centers:
        order = np.argsort(((points - center) ** 2).sum(1), kind="stable")
        anchors.append(next(int(i) for i in order if int(i) not in anchors))
    return anchors


def one_shot_prompt(demo_question: str, demo_solution: str, question: str, tir: bool) -> Prompt:
    instruction = TIR_INSTRUCTION if tir else COT_INSTRUCTION
    messages: list[Message] = [
        {"role": "user", "content": f"{demo_question}\n{instruction}"},
        {"role": "assistant", "content": demo_solution},
        {"role": "user", "content": f"{question}\n{instruction}"},
    ]
    return messages


def aptitude_scores(
    problems: Sequence[dict[str, str]],
    anchors: Sequence[int],
    solve_cot: Solver,
    solve_tir: Solver,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[float], list[float]]:
    """S_CoT and S_TIR of every problem's candidate solutions over the anchors.

    problems: {question, answer, cot, tir}; an anchor never demonstrates on itself.
    """
    cot_scores, tir_scores = [], []
    for i, problem in enumerate(problems):
        targets = [a for a in anchors if a != i] or list(anchors)
        scores = []
        for solver, solution, tir in (
            (solve_cot, problem["cot"], False),
            (solve_tir, problem["tir"], True),
        ):
            prompts = [
                one_shot_prompt(problem["question"], solution, problems[a]["question"], tir)
                for a in targets
            ]
            outputs = solver(prompts)
            hits = [
                is_correct(out, problems[a]["answer"])
                for a, out in zip(targets, outputs, strict=True)
            ]
            scores.append(sum(hits) / len(targets))
        cot_scores.append(scores[0])
        tir_scores.append(scores[1])
        if on_progress:
            on_progress(i + 1, len(problems))
    return cot_scores, tir_scores


def select(
    cot_scores: Sequence[float], tir_scores: Sequence[float], config: TATAConfig
) -> list[tuple[bool, bool]]:
    """(keep CoT, keep TIR) per problem from Delta = S_CoT - S_TIR and the quantiles."""
    delta = np.asarray(cot_scores, dtype=float) - np.asarray(tir_scores, dtype=float)
    low = float(np.quantile(delta, config.low_quantile))
    high = float(np.quantile(delta, config.high_quantile))
    choices = []
    for d in delta:
        cot, tir = d >= high, d <= low
        choices.append((True, True) if cot == tir else (bool(cot), bool(tir)))
    return choices


def sft_rows(
    problems: Sequence[dict[str, str]], choices: Sequence[tuple[bool, bool]]
) -> list[dict[str, object]]:
    """The selected SFT set: {prompt (messages), completion, kind} rows."""
    rows: list[dict[str, object]] = []
    for problem, (cot, tir) in zip(problems, choices, strict=True):
        for keep, kind, instruction in (
            (cot, "cot", COT_INSTRUCTION),
            (tir, "tir", TIR_INSTRUCTION),
        ):
            if keep:
                prompt = [{"role": "user", "content": f"{problem['question']}\n{instruction}"}]
                rows.append({"prompt": prompt, "completion": problem[kind], "kind": kind})
    return rows
