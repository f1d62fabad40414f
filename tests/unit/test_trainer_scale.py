"""The trainer at scale on a tiny Llama: gradient accumulation, packing and two gloo processes
give the gradients of one large batch; a two-process run resumed from its state ends where
the uninterrupted one ends.

Gradients are compared where the optimizer would read them (AdamW's first steps amplify
rounding differences of near-zero gradients into sign flips, so weights after a step are not
a fair comparison of two summation orders). Tolerances: float32 sums in another order.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from services.trainer.core.data import (
    SFTExample,
    collate_packed,
    collate_sft,
    pack_examples,
    sft_example,
)
from services.trainer.core.logprobs import token_logps
from services.trainer.core.training import TrainConfig, Trainer, load_policy
from services.trainer.runs import build_trainer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "dog", "ran", "to", "park"]
WORDS += ["where", "birds", "sing", "all", "day"]


def rows(count: int, preference: bool = False, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    if preference:
        return [
            {"prompt": text(2, 9), "chosen": text(1, 8), "rejected": text(1, 8)}
            for _ in range(count)
        ]
    return [{"prompt": text(2, 12), "completion": text(1, 10)} for _ in range(count)]


def gradients_of_steps(trainer: Trainer, steps: int) -> tuple[list[list[torch.Tensor]], list]:
    """The gradients the optimizer is given at each step (the step itself is skipped, so every
    step starts from the same weights), and the step results."""
    seen: list[list[torch.Tensor]] = []

    def whole(grad: torch.Tensor) -> torch.Tensor:  # an FSDP shard is gathered (a collective)
        return grad.full_tensor() if hasattr(grad, "full_tensor") else grad.clone()

    trainer.optimizer.step = lambda: seen.append([whole(p.grad) for p in trainer.trainable])
    results = [trainer.train_step() for _ in range(steps)]
    return seen, results


def assert_same_gradients(got: list, want: list) -> None:
    """Step by step, parameter by parameter (float32 sums in another order)."""
    assert len(got) == len(want)
    for step_got, step_want in zip(got, want, strict=True):
        for b, a in zip(step_got, step_want, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


BASE = {"max_grad_norm": 0.0, "lora_r": 4, "max_length": 64, "seed": 3}


@pytest.mark.parametrize("objective", ["sft", "dpo", "rise_dpo"])
def test_accumulating_4_micro_batches_of_2_equals_one_batch_of_8(
    tiny_model: Path, objective: str
) -> None:
    data = rows(24, preference=objective != "sft")
    extra = {"nll_alpha": 0.5} if objective == "rise_dpo" else {}
    big = TrainConfig(objective=objective, batch_size=8, **BASE, **extra)
    small = dataclasses.replace(big, batch_size=2, gradient_accumulation_steps=4)
    assert big.global_batch == small.global_batch == 8
    want, want_results = gradients_of_steps(build_trainer(tiny_model, data, big), 2)
    got, got_results = gradients_of_steps(build_trainer(tiny_model, data, small), 2)
    assert_same_gradients(got, want)
    for a, b in zip(want_results, got_results, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-5) and b.tokens == a.tokens
        for name, value in a.metrics.items():
            if name != "peak_memory_mb":
                assert b.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_packed_rows_keep_attention_within_each_example(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = TrainConfig(**BASE)
    examples = [sft_example(tokenizer, row, 64, "row") for row in rows(9, seed=5)]
    packed = pack_examples(examples, 64)
    assert len(packed) < len(examples) and sorted(map(len, packed)) != [1] * len(packed)
    assert all(sum(len(e.input_ids) for e in row) <= 64 for row in packed)
    model = load_policy(tiny_model, config).eval()
    with torch.no_grad():
        alone = token_logps(model, **collate_sft(examples, 0))
        together = token_logps(model, **collate_packed(packed, 0))
    # the same per-example log-probs, read back from the packed rows
    index = {id(e): i for i, e in enumerate(examples)}
    for r, row in enumerate(packed):
        offset = 0
        for example in row:
            size = len(example.input_ids)
            i = index[id(example)]
            torch.testing.assert_close(
                together[r, offset : offset + size - 1], alone[i, : size - 1], rtol=1e-4, atol=1e-5
            )
            assert together[r, offset - 1].item() == 0.0 if offset else True  # boundary masked
            offset += size


def test_packed_sft_loss_and_gradients_equal_the_unpacked(tiny_model: Path) -> None:
    data = rows(16, seed=7)
    padded = TrainConfig(batch_size=8, **BASE)
    packed = dataclasses.replace(padded, packing=True)  # the same 8 examples, in fewer rows
    want, want_results = gradients_of_steps(build_trainer(tiny_model, data, padded), 2)
    got, got_results = gradients_of_steps(build_trainer(tiny_model, data, packed), 2)
    assert_same_gradients(got, want)
    for a, b in zip(want_results, got_results, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-5) and b.tokens == a.tokens


def test_example_targets_count_the_trained_tokens() -> None:
    assert SFTExample([1, 2, 3, 4], 2).targets == 2
    assert SFTExample([1, 2, 3], 0).targets == 2  # the first token has nothing before it
    batch = collate_sft([SFTExample([1, 2, 3, 4], 2), SFTExample([5, 6, 7], 0)], 0)
    assert int(batch["completion_mask"][:, 1:].sum()) == 4


def _rank(rank: int, folder: str, port: int, out: str, phase: str, fsdp: bool) -> None:
    from services.trainer.core.distributed import init_process_group

    torch.set_num_threads(1)
    init_process_group(rank, 2, "127.0.0.1", port)
    config = TrainConfig(batch_size=2, world_size=2, learning_rate=1e-3, fsdp=fsdp, **BASE)
    trainer = build_trainer(Path(folder), rows(16, seed=11), config, rank)
    if phase == "grads":
        if fsdp:
            trainer.shard()
        seen, _ = gradients_of_steps(trainer, 2)
        torch.save(seen, f"{out}/grads-{rank}.pt")
    else:
        if phase == "second_half":
            state = torch.load(f"{out}/state.pt", weights_only=False)
            trainer.model.load_state_dict(state["weights"], strict=False)
            trainer.load_state_dict(state["trainer"])
        if fsdp:
            trainer.shard()
        steps = {"whole": 4, "first_half": 2, "second_half": 2}[phase]
        for _ in range(steps):
            trainer.train_step()
        weights = _trainable_weights(trainer)
        state = trainer.state_dict()  # with FSDP a collective: every rank gathers
        if phase == "first_half" and rank == 0:
            torch.save({"weights": weights, "trainer": state}, f"{out}/state.pt")
        torch.save(weights, f"{out}/{phase}-{rank}.pt")
    torch.distributed.destroy_process_group()


def _trainable_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The LoRA weights by name, whole (gathered from the shards with FSDP)."""
    gathered = trainer.trainable_state()
    if gathered is not None:
        return gathered
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _two_ranks(folder: Path, out: Path, phase: str, fsdp: bool = False) -> None:
    from services.cli.embedded import free_port

    mp.spawn(_rank, args=(str(folder), free_port(), str(out), phase, fsdp), nprocs=2, join=True)


@pytest.mark.parametrize("fsdp", [False, True], ids=["data-parallel", "fsdp"])
def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(
    tiny_model: Path, tmp_path: Path, fsdp: bool
) -> None:
    _two_ranks(tiny_model, tmp_path, "grads", fsdp)
    single = TrainConfig(batch_size=4, **{**BASE, "seed": 3})
    want, _ = gradients_of_steps(build_trainer(tiny_model, rows(16, seed=11), single), 2)
    for rank in (0, 1):
        assert_same_gradients(torch.load(tmp_path / f"grads-{rank}.pt"), want)


@pytest.mark.parametrize("fsdp", [False, True], ids=["data-parallel", "fsdp"])
def test_a_two_process_run_resumed_from_its_state_equals_the_uninterrupted_run(
    tiny_model: Path, tmp_path: Path, fsdp: bool
) -> None:
    for phase in ("whole", "first_half", "second_half"):
        _two_ranks(tiny_model, tmp_path, phase, fsdp)
    whole = torch.load(tmp_path / "whole-0.pt")
    assert whole and all("lora_" in name for name in whole)
    # the ranks agree (with FSDP only rank 0 gathers the weights), and the resumed run ends
    # where the whole one does
    for rank in (0,) if fsdp else (0, 1):
        resumed = torch.load(tmp_path / f"second_half-{rank}.pt")
        assert resumed.keys() == whole.keys()
        for name, weight in whole.items():
            assert torch.equal(weight, resumed[name]), name


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model: Path) -> None:
    data = rows(8, seed=2)
    plain = TrainConfig(batch_size=8, **BASE)
    want, _ = gradients_of_steps(build_trainer(tiny_model, data, plain), 1)
    checkpointed = dataclasses.replace(plain, gradient_checkpointing=True)
    got, _ = gradients_of_steps(build_trainer(tiny_model, data, checkpointed), 1)
    assert_same_gradients(got, want)


def test_bf16_autocast_trains_close_to_fp32(tiny_model: Path) -> None:
    data = rows(8, seed=2)
    fp32 = TrainConfig(batch_size=8, **BASE)
    _, want = gradients_of_steps(build_trainer(tiny_model, data, fp32), 1)
    bf16 = dataclasses.replace(fp32, mixed_precision="bf16")
    grads, got = gradients_of_steps(build_trainer(tiny_model, data, bf16), 1)
    assert got[0].loss == pytest.approx(want[0].loss, rel=2e-2)  # bf16 keeps 8 mantissa bits
    assert all(torch.isfinite(g).all() for g in grads[0])
    assert got[0].metrics["peak_memory_mb"] > 0
