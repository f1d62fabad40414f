"""Classic reference-based text metrics, the second use of RevisEval's response-adapted
references: BLEU (sacrebleu's sentence BLEU, 0..100), ROUGE-1/2/L F1 (rouge-score, stemmed)
and BERTScore (Zhang et al. 2020, Eq. 1-3) on all-MiniLM-L6-v2 token embeddings.

BERTScore here: R = mean over reference tokens of the best cosine with a candidate token,
P = the same from the candidate side, F = 2PR / (P + R); no idf weighting and no baseline
rescaling, so an identical pair scores exactly 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from services.common.embeddings import SentenceEncoder, default_encoder

METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore")


def bleu(candidate: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(candidate, [reference]).score)


def rouge(candidate: str, reference: str) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = scorer.score(reference, candidate)
    return {name: float(score.fmeasure) for name, score in scores.items()}


@dataclass(frozen=True)
class BERTScore:
    precision: float
    recall: float
    f1: float


def bertscore(
    candidates: Sequence[str], references: Sequence[str], encoder: SentenceEncoder | None = None
) -> list[BERTScore]:
    encoder = encoder or default_encoder()
    cand = encoder.token_embeddings(candidates)
    refs = encoder.token_embeddings(references)
    out = []
    for c, r in zip(cand, refs, strict=True):
        if len(c) == 0 or len(r) == 0:
            out.append(BERTScore(0.0, 0.0, 0.0))
            continue
        c = torch.nn.functional.normalize(c, dim=-1)
        r = torch.nn.functional.normalize(r, dim=-1)
        sim = c @ r.T  # [T_c, T_r] cosine similarities
        precision = float(sim.max(dim=1).values.mean())
        recall = float(sim.max(dim=0).values.mean())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out.append(BERTScore(precision, recall, f1))
    return out


def score_all(
    candidates: Sequence[str], references: Sequence[str], metrics: Sequence[str] = METRICS
) -> list[dict[str, float]]:
    """For each (candidate, reference): the requested metrics by name."""
    rows: list[dict[str, float]] = [{} for _ in candidates]
    for row, c, r in zip(rows, candidates, references, strict=True):
        if "bleu" in metrics:
            row["bleu"] = bleu(c, r)
        if {"rouge1", "rouge2", "rougeL"} & set(metrics):
            row.update({k: v for k, v in rouge(c, r).items() if k in metrics})
    if "bertscore" in metrics:
        for row, score in zip(rows, bertscore(candidates, references), strict=True):
            row["bertscore"] = score.f1
    return rows
