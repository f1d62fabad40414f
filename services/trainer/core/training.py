"""kiln's training loop: LoRA (optionally Flat-LoRA) SFT and DPO-family objectives.

One loop for every objective, deterministic per step so that a run resumed from a checkpoint
ends where an uninterrupted run ends: the data order is a seeded permutation per epoch, the
learning rate is a function of the step, dropout is seeded per step, Flat-LoRA's noise is
seeded per (step, layer), and the optimizer state is saved with the adapter.

A step's global batch of batch_size x gradient_accumulation_steps x world_size examples is
sorted by length (length-grouped batching) and cut into micro-batches of batch_size (with
packing, SFT examples are first packed into rows of at most max_length tokens, attention kept
within each example and positions restarting per example). Each process (rank) of a
distributed run takes every world_size-th micro-batch; every micro-batch loss is normalized by
the whole global batch (its target tokens for SFT, its pairs for the DPO family), so the
summed gradients, all-reduced across ranks, are the gradients of one large batch: the same
update whatever the accumulation, packing or number of processes.

Objectives:
- sft: mean token NLL of the completions.
- dpo: sigmoid DPO (core.dpo), reference = the base model (adapters disabled).
- bmc_dpo: DPO on token-weighted log-probs, lambda_t from core.bmc on the diff tokens.
- rise_dpo: DPO + nll_alpha * the length-normalized NLL of the chosen responses (core.rise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.common.configs import config_from_dict
from services.common.errors import InvalidInput
from services.trainer.core import distributed
from services.trainer.core.bmc import BMCConfig, token_weights
from services.trainer.core.data import (
    PairExample,
    SFTExample,
    collate_packed,
    collate_pairs,
    collate_sft,
    diff_token_mask,
    pack_examples,
)
from services.trainer.core.dpo import DPOConfig, dpo_loss, weighted_logps
from services.trainer.core.flat_lora import FlatLoRA, FlatLoRAConfig
from services.trainer.core.logprobs import token_logps

OBJECTIVES = ("sft", "dpo", "bmc_dpo", "rise_dpo")
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "sft"
    learning_rate: float = 2e-4
    epochs: int = 1
    max_steps: int = 0  # 0: epochs * ceil(examples / batch_size)
    batch_size: int = 4
    max_length: int = 512
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    seed: int = 0
    save_every: int = 0  # steps between checkpoints; 0: only the last step
    merge: bool = False  # also write merged full weights with the last checkpoint
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = LLAMA_LINEAR
    flat_lora_sigma: float = 0.0  # > 0 turns Flat-LoRA on
    flat_lora_schedule: str = "cosine"
    beta: float = 0.1  # DPO
    bmc_delta: float = 3.0
    bmc_confidence: str = "policy"
    nll_alpha: float = 0.0  # RISE's NLL term
    gradient_accumulation_steps: int = 1
    world_size: int = 1  # processes of a distributed run (one per device; gloo on CPU)
    nodes: int = 1  # machines the processes are spread over, world_size / nodes on each
    packing: bool = False  # SFT: several examples per row
    mixed_precision: str = "no"  # no | bf16 (autocast)
    gradient_checkpointing: bool = False
    fsdp: bool = False  # shard the model's weights over the ranks (PyTorch FSDP, fully_shard)

    @property
    def global_batch(self) -> int:
        """Examples per optimizer step, over accumulation and processes."""
        return self.batch_size * self.gradient_accumulation_steps * self.world_size

    @property
    def ranks_per_node(self) -> int:
        return self.world_size // self.nodes

    @property
    def preference(self) -> bool:
        return self.objective != "sft"

    @property
    def flat_lora(self) -> FlatLoRAConfig | None:
        if self.flat_lora_sigma <= 0:
            return None
        return FlatLoRAConfig(self.flat_lora_sigma, self.seed, self.flat_lora_schedule)

    @property
    def bmc(self) -> BMCConfig:
        return BMCConfig(self.bmc_delta, self.bmc_confidence)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """to_dict's result back (validated)."""
        values = dict(data)
        return cls.from_hyperparameters(values.pop("objective"), values)

    @classmethod
    def from_hyperparameters(cls, objective: str, values: dict[str, Any]) -> TrainConfig:
        """Validated config; every problem is an InvalidInput naming hyperparameters.<name>."""
        if objective not in OBJECTIVES:
            raise InvalidInput("objective", f"must be one of {', '.join(OBJECTIVES)}")
        config = config_from_dict(cls, values, "hyperparameters", {"objective": objective})
        config.validate()
        return config

    def validate(self) -> None:
        checks = [
            ("learning_rate", 0 <= self.learning_rate <= 1, "must be in [0, 1]"),
            ("epochs", 1 <= self.epochs <= 1000, "must be in 1..1000"),
            ("max_steps", 0 <= self.max_steps <= 10_000_000, "must be >= 0"),
            ("batch_size", 1 <= self.batch_size <= 4096, "must be in 1..4096"),
            ("max_length", 8 <= self.max_length <= 131072, "must be in 8..131072"),
            ("warmup_steps", self.warmup_steps >= 0, "must be >= 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0"),
            ("save_every", self.save_every >= 0, "must be >= 0"),
            ("lora_r", 1 <= self.lora_r <= 1024, "must be in 1..1024"),
            ("lora_alpha", self.lora_alpha > 0, "must be > 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("flat_lora_sigma", 0 <= self.flat_lora_sigma <= 1, "must be in [0, 1]"),
            (
                "flat_lora_schedule",
                self.flat_lora_schedule in ("cosine", "constant"),
                "must be cosine or constant",
            ),
            ("beta", self.beta > 0, "must be > 0"),
            ("bmc_delta", self.bmc_delta >= 0, "must be >= 0"),
            (
                "bmc_confidence",
                self.bmc_confidence in ("policy", "reference"),
                "must be policy or reference",
            ),
            ("nll_alpha", self.nll_alpha >= 0, "must be >= 0"),
            (
                "gradient_accumulation_steps",
                1 <= self.gradient_accumulation_steps <= 1024,
                "must be in 1..1024",
            ),
            ("world_size", 1 <= self.world_size <= 64, "must be in 1..64"),
            (
                "nodes",
                1 <= self.nodes <= self.world_size and self.world_size % self.nodes == 0,
                "must divide world_size (the same number of processes on each node)",
            ),
            ("packing", not (self.packing and self.preference), "applies to sft only"),
            ("mixed_precision", self.mixed_precision in ("no", "bf16"), "must be no or bf16"),
            ("fsdp", not self.fsdp or self.world_size > 1, "shards over ranks: world_size >= 2"),
            (
                "merge",
                not (self.fsdp and self.merge),
                "merged weights need the whole model in one process; with fsdp, load the "
                "adapter checkpoint instead",
            ),
        ]
        for name, ok, reason in checks:
            if not ok:
                raise InvalidInput(f"hyperparameters.{name}", reason)


def learning_rate_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup to learning_rate, then linear decay to 0 at `total` (step is 0-based)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    remaining = max(total - config.warmup_steps, 1)
    return config.learning_rate * max(0.0, 1 - (step - config.warmup_steps) / remaining)


def batch_indices(n: int, step: int, config: TrainConfig) -> list[int]:
    """The examples of a step: a seeded permutation per epoch, cut into global batches."""
    size = config.global_batch
    per_epoch = math.ceil(n / size)
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng(config.seed + epoch).permutation(n)
    return [int(i) for i in order[offset * size : (offset + 1) * size]]


def total_steps(n: int, config: TrainConfig) -> int:
    return config.max_steps or config.epochs * math.ceil(n / config.global_batch)


def micro_batches(
    examples: Sequence[SFTExample] | Sequence[PairExample], config: TrainConfig
) -> list[list[Any]]:
    """A global batch sorted by length and cut into micro-batches of batch_size examples (or,
    with packing, of batch_size packed rows, each row a list of examples)."""
    ordered = sorted(examples, key=_length)
    if config.packing:
        ordered = pack_examples(ordered, config.max_length)  # type: ignore[arg-type]
    size = config.batch_size
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _length(example: SFTExample | PairExample) -> int:
    if isinstance(example, SFTExample):
        return len(example.input_ids)
    return len(example.prompt_ids) + max(len(example.chosen_ids), len(example.rejected_ids))


def load_policy(base: Path, config: TrainConfig) -> Any:
    """The base model (float32) with a fresh LoRA adapter, adapters the only trainables."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise InvalidInput("hyperparameters.target_modules", str(exc)) from exc


@dataclass
class StepResult:
    step: int
    loss: float
    learning_rate: float
    tokens: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    def report(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            "lr": self.learning_rate,
            "tokens_per_s": self.tokens / self.seconds if self.seconds else 0.0,
            **self.metrics,
        }


class Trainer:
    """Trains `model` (a PEFT model) on tokenized examples, one deterministic step at a time.

    rank: this process's place in a distributed run of config.world_size processes (whose
    torch.distributed group is initialized by the caller)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        examples: Sequence[SFTExample] | Sequence[PairExample],
        config: TrainConfig,
        rank: int = 0,
    ) -> None:
        if not examples:
            raise InvalidInput("datasets", "no training examples")
        self.model = model
        self.tokenizer = tokenizer
        self.examples = examples
        self.config = config
        self.rank = rank
        self.device = next(model.parameters()).device
        self.total = total_steps(len(examples), config)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._take_trainables()
        flat = config.flat_lora
        self.flat = FlatLoRA(model, flat) if flat else None
        self.step = 0
        self.sharded = False
        self.pending_optimizer_state: dict[str, Any] | None = None

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The step and the optimizer state (with FSDP gathered whole: a collective)."""
        if self.sharded:
            state = distributed.full_optimizer_state(self.model, self.optimizer)
            return {"step": self.step, "optimizer": state}
        return {"step": self.step, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores state_dict()'s result; with FSDP before shard(), which applies it."""
        self.step = int(state["step"])
        if self.config.fsdp:
            self.pending_optimizer_state = state["optimizer"]
        else:
            self.optimizer.load_state_dict(state["optimizer"])

    def shard(self) -> None:
        """FSDP (config.fsdp): shards the model over the run's ranks, once the process group
        exists and before the first step; the optimizer then steps each rank's shard."""
        distributed.shard_model(self.model)
        self.sharded = True
        self._take_trainables()  # sharding replaced the parameters
        if self.pending_optimizer_state is not None:
            distributed.load_full_optimizer_state(
                self.model, self.optimizer, self.pending_optimizer_state
            )
            self.pending_optimizer_state = None

    def _take_trainables(self) -> None:
        """The model's trainable parameters and a fresh AdamW over them."""
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    def saves_now(self) -> bool:
        """Whether the step just taken ends with a checkpoint (the last step, or every
        save_every): every rank asks, since with FSDP saving gathers from all of them."""
        done = self.step >= self.total
        return done or bool(self.config.save_every and self.step % self.config.save_every == 0)

    def trainable_state(self) -> dict[str, torch.Tensor] | None:
        """With FSDP, the LoRA weights gathered whole for a checkpoint (a collective); None
        when every rank holds them already."""
        return distributed.full_trainable_state(self.model) if self.sharded else None

    # -- steps -----------------------------------------------------------------------------
    def run(self, on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
        results = []
        while self.step < self.total:
            result = self.train_step()
            results.append(result)
            if on_step:
                on_step(result)
        return results

    def train_step(self) -> StepResult:
        started = time.perf_counter()
        step, config = self.step, self.config
        self.model.train()
        torch.manual_seed(config.seed * 1_000_003 + step)
        if self.flat:
            self.flat.begin_step(step, self.total)
        lr = learning_rate_at(step, self.total, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = [self.examples[i] for i in batch_indices(len(self.examples), step, config)]
        # the DPO family averages over pairs, SFT over target tokens
        scale = len(batch) if config.preference else sum(e.targets for e in batch)  # type: ignore[union-attr]
        loss, tokens, metrics = 0.0, 0, {}
        if self.sharded:  # accumulate locally; one reduce-scatter after the last micro-batch
            self.model.set_requires_gradient_sync(False)
        for micro in micro_batches(batch, config)[self.rank :: config.world_size]:
            with torch.autocast(
                self.device.type, torch.bfloat16, enabled=config.mixed_precision == "bf16"
            ):
                if config.preference:
                    part, count, found = self.preference_loss(micro, scale)
                else:
                    part, count, found = self.sft_loss(micro, scale)
            part.backward()
            loss, tokens = loss + part.item(), tokens + count
            for name, value in found.items():
                metrics[name] = metrics.get(name, 0.0) + value
        if self.sharded:
            self._reduce_scatter_gradients()
        elif config.world_size > 1:
            distributed.sum_gradients(self.trainable)
        if config.world_size > 1:
            names = sorted(metrics)
            totals = distributed.sum_values([loss, float(tokens), *(metrics[n] for n in names)])
            loss, tokens = totals[0], int(totals[1])
            metrics = dict(zip(names, totals[2:], strict=True))
        if config.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)
            metrics["grad_norm"] = float(norm.full_tensor() if self.sharded else norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics["peak_memory_mb"] = distributed.peak_memory_mb(self.device)
        return StepResult(step + 1, loss, lr, tokens, time.perf_counter() - started, metrics)

    def _reduce_scatter_gradients(self) -> None:
        """FSDP: one backward of a zero loss through the whole model with gradient sync on,
        so every rank reduce-scatters its accumulated gradients in the same collective calls
        however many micro-batches it had (a rank may have none)."""
        self.model.set_requires_gradient_sync(True)
        ids = torch.tensor([[self.pad_id]], device=self.device)
        (self.model(input_ids=ids).logits.sum() * 0.0).backward()

    def sft_loss(self, micro: Sequence[Any], scale: int) -> tuple[torch.Tensor, int, dict]:
        """The micro-batch's summed completion NLL over `scale`, the global batch's target
        tokens (micro: examples, or packed rows of examples)."""
        if self.config.packing:
            batch = collate_packed(micro, self.pad_id)
        else:
            batch = collate_sft(micro, self.pad_id)
        logps = token_logps(self.model, **batch)
        return -logps.sum() / max(scale, 1), int(batch["attention_mask"].sum()), {}

    def preference_loss(
        self, examples: Sequence[PairExample], scale: int
    ) -> tuple[torch.Tensor, int, dict]:
        """The micro-batch's share of the global batch's mean loss: its mean times its pairs
        over `scale` (the global batch's pairs); metrics weighted the same way."""
        config = self.config
        share = len(examples) / scale
        batch = collate_pairs(examples, self.pad_id)
        completion = batch["completion_mask"][:, 1:].float()
        policy = token_logps(self.model, **batch)
        with torch.no_grad(), self.model.disable_adapter():
            reference = token_logps(self.model, **batch)
        weights = completion
        if config.objective == "bmc_dpo":
            bmc = config.bmc
            mask = diff_token_mask(
                self.tokenizer, examples, batch["input_ids"].shape[1], bmc.exclude_stopwords
            )
            confidence = policy if bmc.confidence == "policy" else reference
            weights = completion * token_weights(confidence, mask, bmc.delta)
        policy_sums = weighted_logps(policy, weights)
        reference_sums = weighted_logps(reference, weights)
        half = len(examples)
        out = dpo_loss(
            policy_sums[:half],
            policy_sums[half:],
            reference_sums[:half],
            reference_sums[half:],
            DPOConfig(config.beta),
        )
        loss = out.loss
        metrics = out.metrics()
        if config.objective == "rise_dpo" and config.nll_alpha:
            lengths = completion[:half].sum(-1).clamp(min=1)
            nll = (-policy[:half].sum(-1) / lengths).mean()
            loss = loss + config.nll_alpha * nll
            metrics["nll"] = nll.item()
        weighted = {name: value * share for name, value in metrics.items()}
        return loss * share, int(batch["attention_mask"].sum()), weighted
