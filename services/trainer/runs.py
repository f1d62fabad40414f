"""A training run end to end: rows -> examples -> steps -> checkpoints, resumable.

A run is identified by its run name; its checkpoints carry a fingerprint of what was asked
(objective, hyperparameters, base, dataset digests). A redelivered job finds the latest
checkpoint with its fingerprint and continues from there; a different run that reuses the
name is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.common.objectstore import ObjectStore
from services.trainer.checkpoints import (
    CheckpointInfo,
    list_checkpoints,
    restore_checkpoint,
    save_checkpoint,
)
from services.trainer.core.data import pair_example, sft_example
from services.trainer.core.training import StepResult, TrainConfig, Trainer, load_policy


def run_fingerprint(config: TrainConfig, base_source: str, dataset_digests: Sequence[str]) -> str:
    spec = {"config": config.to_dict(), "base": base_source, "datasets": list(dataset_digests)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def tokenize_rows(
    tokenizer: Any, rows: Sequence[dict[str, Any]], config: TrainConfig, field: str = "datasets"
) -> list[Any]:
    make = pair_example if config.preference else sft_example
    return [
        make(tokenizer, row, config.max_length, f"{field}[row {i}]") for i, row in enumerate(rows)
    ]


def build_trainer(
    base_folder: Path, rows: Sequence[dict[str, Any]], config: TrainConfig, rank: int = 0
) -> Trainer:
    """The base model's tokenizer and a fresh LoRA policy, with the rows' examples: what every
    rank of a run starts from."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    examples = tokenize_rows(tokenizer, rows, config)
    return Trainer(load_policy(base_folder, config), tokenizer, examples, config, rank)


@dataclass
class RunOutcome:
    checkpoints: list[CheckpointInfo]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0
    total_steps: int = 0
    examples: int = 0

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {
            "total_steps": self.total_steps,
            "examples": self.examples,
            "resumed_from_step": self.resumed_from,
            "final": last,
            "checkpoints": [c.prefix for c in self.checkpoints],
        }


def run_training(
    store: ObjectStore,
    run_name: str,
    base_source: str,
    base_folder: Path,
    rows: Sequence[dict[str, Any]],
    config: TrainConfig,
    fingerprint: str,
    cache_dir: Path,
    on_step: Callable[[StepResult, int], None] | None = None,
    join_group: Callable[[str | None], None] | None = None,
) -> RunOutcome:
    """join_group (a run of config.world_size > 1 processes): starts the other ranks from the
    checkpoint this run resumes from (its prefix; None: from scratch) and joins their process
    group as rank 0, which alone reports progress and writes checkpoints."""
    trainer = build_trainer(base_folder, rows, config)
    model, tokenizer = trainer.model, trainer.tokenizer
    model.peft_config["default"].base_model_name_or_path = base_source
    outcome = RunOutcome([], total_steps=trainer.total, examples=len(trainer.examples))

    existing = list_checkpoints(store, run_name)
    foreign = [c for c in existing if c.meta.get("fingerprint") != fingerprint]
    if foreign:
        raise FailedPrecondition(
            f"run name {run_name!r} already has checkpoints of a different run "
            f"({foreign[0].prefix}); choose another run_name"
        )
    resumed_prefix = None
    if existing:
        latest = existing[-1]
        state = restore_checkpoint(store, latest.prefix, model, cache_dir)
        resumed_prefix = latest.prefix
        trainer.load_state_dict(state)
        outcome.history = list(state.get("history", []))
        outcome.resumed_from = trainer.step
        outcome.checkpoints = list(existing)
        if trainer.step >= trainer.total:
            return outcome
    if config.world_size > 1:
        if join_group is None:
            raise ValueError("a run of several processes needs join_group")
        join_group(resumed_prefix)
        if config.fsdp:
            trainer.shard()

    meta = {"fingerprint": fingerprint, "objective": config.objective, "base": base_source}

    def save(final: bool) -> None:
        weights = trainer.trainable_state()  # with FSDP gathered from every rank
        state = {**trainer.state_dict(), "history": outcome.history, "config": config.to_dict()}
        info = save_checkpoint(
            store, run_name, model, tokenizer, state, meta, final and config.merge, weights
        )
        outcome.checkpoints.append(info)

    def after_step(result: StepResult) -> None:
        outcome.history.append({"step": result.step, **result.report()})
        if on_step:
            on_step(result, trainer.total)
        done = trainer.step >= trainer.total
        if done and trainer.flat:
            trainer.flat.remove()  # the saved (and merged) model is plain LoRA
        if trainer.saves_now():
            save(final=done)

    trainer.run(after_step)
    return outcome
