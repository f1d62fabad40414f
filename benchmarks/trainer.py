"""Trainer benchmarks, each against its baseline in the same run:

1. Flat-LoRA vs plain LoRA: median step time (goal <= 1.15x) and extra memory (goal < 1% of
   the trainable + frozen parameters): the persistent state (row scales) and, reported
   apart, the transient perturbed weight of the one layer being computed.
2. kiln's SFT loop vs TRL's SFTTrainer on the same model, LoRA config, data, batch size and
   max length: training tokens per second (median step).

Run `python benchmarks/trainer.py` (about two minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.llm.tiny import TinyConfig, build_tiny_model
from services.trainer.core.flat_lora import lora_layers
from services.trainer.core.training import TrainConfig, Trainer
from services.trainer.runs import build_trainer

console = Console()
MODEL = TinyConfig(
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
)


def rows(count: int, words: int) -> list[dict[str, str]]:
    return [
        {
            "prompt": f"Write the numbers from {i} on:",
            "completion": " ".join(str(i + j) for j in range(words)),
        }
        for i in range(count)
    ]


def kiln_steps(folder: Path, data: list[dict], config: TrainConfig) -> tuple[list[float], Trainer]:
    trainer = build_trainer(folder, data, config)
    results = trainer.run()
    return [r.seconds for r in results[1:]], trainer  # the first step warms up


def tokens_per_step(trainer: Trainer) -> float:
    return statistics.mean(len(e.input_ids) for e in trainer.examples) * trainer.config.batch_size


def trl_steps(folder: Path, data: list[dict], config: TrainConfig) -> tuple[list[float], float]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.started, self.seconds = 0.0, []

        def on_step_begin(self, *args, **kwargs) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *args, **kwargs) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    timer = StepTimer()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(config.seed)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        args=SFTConfig(
            output_dir=tempfile.mkdtemp(),
            per_device_train_batch_size=config.batch_size,
            max_steps=config.max_steps,
            learning_rate=config.learning_rate,
            max_length=config.max_length,
            report_to=[],
            use_cpu=True,
            bf16=False,  # TRL defaults: bf16 and gradient checkpointing; kiln runs fp32 without
            gradient_checkpointing=False,
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
        ),
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
        ),
        callbacks=[timer],
    )
    mean_length = statistics.mean(len(ids) for ids in trainer.train_dataset["input_ids"])
    trainer.train()
    return timer.seconds[1:], mean_length * config.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--words", type=int, default=120)
    parser.add_argument("--sigma", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    folder = Path(tempfile.mkdtemp()) / "model"
    info = build_tiny_model(folder, seed=0, config=MODEL)
    data = rows(args.batch_size * 4, args.words)
    base = {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": 512,
        "learning_rate": 1e-4,
    }

    lora_times, lora = kiln_steps(folder, data, TrainConfig.from_hyperparameters("sft", base))
    flat_config = TrainConfig.from_hyperparameters("sft", {**base, "flat_lora_sigma": args.sigma})
    flat_times, flat = kiln_steps(folder, data, flat_config)
    trl_times, trl_tokens = trl_steps(folder, data, TrainConfig.from_hyperparameters("sft", base))

    parameters = sum(p.numel() * p.element_size() for p in flat.model.parameters())
    persistent = flat.flat.extra_state_bytes() if flat.flat else 0
    largest = max(m.base_layer.weight.numel() * 4 for _, m in lora_layers(flat.model))
    lora_step, flat_step = statistics.median(lora_times), statistics.median(flat_times)
    kiln_tps = tokens_per_step(lora) / lora_step
    trl_tps = trl_tokens / statistics.median(trl_times)

    length = tokens_per_step(lora) / args.batch_size
    console.print(
        f"model: {info['parameters']:,} parameters, {MODEL.num_hidden_layers} layers, hidden "
        f"{MODEL.hidden_size}; batch {args.batch_size} x ~{length:.0f} tokens; "
        f"median of {args.steps - 1} steps after one warm-up; "
        f"{torch.get_num_threads()} threads"
    )
    table = Table("comparison", "baseline", "kiln", "ratio", "goal")
    table.add_row(
        "step time, Flat-LoRA vs LoRA",
        f"{lora_step * 1000:.0f} ms",
        f"{flat_step * 1000:.0f} ms",
        f"{flat_step / lora_step:.3f}x",
        "<= 1.15x",
    )
    table.add_row(
        "Flat-LoRA persistent extra memory",
        f"{parameters / 2**20:.1f} MiB params",
        f"{persistent / 1024:.1f} KiB",
        f"{persistent / parameters:.5%}",
        "< 1%",
    )
    table.add_row(
        "Flat-LoRA transient (one layer's W + eps)",
        f"{parameters / 2**20:.1f} MiB params",
        f"{largest / 2**20:.2f} MiB",
        f"{largest / parameters:.3%}",
        "",
    )
    table.add_row(
        "SFT tokens/s, kiln vs TRL SFTTrainer",
        f"{trl_tps:,.0f}",
        f"{kiln_tps:,.0f}",
        f"{kiln_tps / trl_tps:.2f}x",
        "",
    )
    console.print(table)


if __name__ == "__main__":
    main()
