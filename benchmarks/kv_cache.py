"""KV-cache compression benchmark: the paper's trade-off in miniature, measured bytes, decode
speed alone and continuously batched, and how many sequences fit in a fixed memory. Prints
tables; run

    python benchmarks/kv_cache.py [--model DIR] [--samples 100]

(`pip install -e ".[bench]"` adds optimum-quanto for the QuantizedCache row; its first use
compiles a C++ extension for about a minute. HQQ's package does not import beside
transformers 5.19, so its row reports unavailable.)

The accuracy table uses kiln's reference retrieval model (trained on first use, a few minutes
on CPU, into $KILN_HOME/cache/kv-retrieval) in bfloat16, so the 16-bit cache is 2 bytes per
element like the paper's fp16 baseline. Budgets are fractions of the full 16-bit cache of each
prompt (131 tokens: 128 facts, "?", the key); quantization uses group size 16 and a 16-token
residual.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.inference.core.retrieval_task import (
    RetrievalTask,
    TrainConfig,
    build_tokenizer,
    prompt_tokens,
    train_reference_model,
)
from services.kv.budget import (
    CacheGeometry,
    KVConfig,
    QuantSpec,
    cache_bytes,
)
from services.kv.decoder import DecodeBatch, compressed_stream, geometry_of

console = Console()
METHODS = ("streamingllm", "h2o", "snapkv", "pyramidkv")
FRACTIONS = (4, 8, 16, 32, 64)
REFERENCE_TASK = RetrievalTask()
REFERENCE_TRAIN = TrainConfig()


def reference_model(folder: Path) -> Path:
    if not (folder / "config.json").exists():
        console.print(f"training the reference retrieval model into {folder} ...")
        train_reference_model(folder, REFERENCE_TASK, REFERENCE_TRAIN, log=console.print)
    return folder


def greedy(logprobs: torch.Tensor) -> int:
    return int(logprobs.argmax())


def accuracy_table(folder: Path, samples: int) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    tokenizer = build_tokenizer(REFERENCE_TASK)
    rng = random.Random(1234)
    items = []
    for _ in range(samples):
        words, qa = REFERENCE_TASK.sample(rng)
        key, value = qa[0]
        ids = tokenizer.convert_tokens_to_ids(prompt_tokens(words, key))
        items.append((ids, tokenizer.convert_tokens_to_ids(value)))

    def accuracy(config: KVConfig) -> float | None:
        correct = 0
        for ids, answer in items:
            try:
                ((token, *_),) = compressed_stream(model, ids, 1, greedy, config, None)
            except Exception:  # the budget cannot hold this configuration
                return None
            correct += token == answer
        return correct / len(items)

    full = accuracy(KVConfig("none", bits=16, query_aware=False, question_tokens=2))
    table = Table(
        "budget",
        "setting",
        *METHODS,
        title=f"retrieval accuracy at equal KV memory (full cache: {full:.2f})",
    )
    # the context is compressed before the question ("? Kx", 2 tokens) is read: the cache
    # cannot know which fact will be asked (query-agnostic, as kvpress evaluates)
    quant = {"group_size": 16, "residual_length": 16, "query_aware": False, "question_tokens": 2}
    for fraction in FRACTIONS:
        tokens = (len(items[0][0]) - 2) / fraction  # of the context, in fp16 tokens
        rows = [
            ("pruning only (16-bit)", 16),
            ("quantized pruning 8-bit", 8),
            ("quantized pruning 4-bit", 4),
            ("quantized pruning 2-bit", 2),
        ]
        quant_only = [
            accuracy(KVConfig("none", bits=b, budget_fp16_tokens=tokens, **quant))
            for b in (8, 4, 2)
        ]
        best = max((a for a in quant_only if a is not None), default=None)
        table.add_row(
            f"1/{fraction}", "quantization only (best of 8/4/2)", *([_fmt(best)] * len(METHODS))
        )
        for label, bits in rows:
            cells = [
                _fmt(
                    accuracy(
                        KVConfig(
                            m,
                            bits=bits,
                            budget_fp16_tokens=tokens,
                            window_size=4,
                            sink_tokens=2,
                            **quant,
                        )
                    )
                )
                for m in METHODS
            ]
            table.add_row(f"1/{fraction}", label, *cells)
    console.print(table)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def bytes_table(model: torch.nn.Module, prompt_len: int) -> None:
    geometry = geometry_of(model)
    ids = [5 + i % 400 for i in range(prompt_len)]
    table = Table(
        "config",
        "tokens/layer",
        "measured bytes",
        "formula bytes",
        "equal",
        "vs full",
        title="measured KV bytes against the formula (tiny model)",
    )
    for config in (
        KVConfig("none", bits=8),
        KVConfig("none", bits=4),
        KVConfig("none", bits=2, group_size=16, residual_length=16),
        KVConfig("snapkv", budget_fp16_tokens=prompt_len / 8),
        KVConfig("pyramidkv", budget_fp16_tokens=prompt_len / 8),
        KVConfig("streamingllm", bits=16, budget_fp16_tokens=prompt_len / 4),
        KVConfig("h2o", bits=2, budget_fp16_tokens=prompt_len / 16),
    ):
        stats: list = []
        list(compressed_stream(model, ids, 1, greedy, config, None, stats=stats))
        s = stats[0]
        formula = cache_bytes(s.plan.tokens_per_layer, s.plan.spec, geometry, s.plan.pruned)
        table.add_row(
            f"{config.method} {s.plan.bits}-bit",
            str(s.plan.tokens_kept),
            f"{s.bytes_used:,}",
            f"{formula:,}",
            str(s.bytes_used == formula),
            f"{s.bytes_used / s.bytes_full:.3f}",
        )
    console.print(table)


def decode_speed_table(model: torch.nn.Module, prompt_len: int, new_tokens: int) -> None:
    from transformers import DynamicCache

    ids = torch.tensor([[5 + i % 400 for i in range(prompt_len)]])
    rows = []

    def hf_decode(cache: object) -> float:
        with torch.inference_mode():
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _ in range(new_tokens):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
        return new_tokens / (time.perf_counter() - start)

    def kiln_decode(config: KVConfig) -> float:
        stream = compressed_stream(model, ids[0].tolist(), new_tokens + 1, greedy, config, None)
        next(stream)  # prefill
        start = time.perf_counter()
        for _ in stream:
            pass
        return new_tokens / (time.perf_counter() - start)

    baseline = hf_decode(DynamicCache())
    rows.append(("transformers DynamicCache (baseline)", baseline))
    for backend in ("quanto", "HQQ"):
        try:
            from transformers import QuantizedCache

            cache = QuantizedCache(
                backend=backend, config=model.config, nbits=4, q_group_size=64, residual_length=32
            )
            rows.append((f"transformers QuantizedCache {backend} int4", hf_decode(cache)))
        except Exception as exc:  # optional packages (optimum-quanto, hqq)
            rows.append(
                (
                    f"transformers QuantizedCache {backend} int4 "
                    f"(unavailable: {type(exc).__name__})",
                    float("nan"),
                )
            )
    rows.append(("kiln cache 16-bit, no pruning", kiln_decode(KVConfig("none", bits=16))))
    rows.append(("kiln cache int4 (KIVI), no pruning", kiln_decode(KVConfig("none", bits=4))))
    rows.append(
        (
            "kiln cache int4 + SnapKV 1/8",
            kiln_decode(KVConfig("snapkv", bits=4, budget_fp16_tokens=prompt_len / 8)),
        )
    )
    table = Table(
        "cache",
        "decode tokens/s",
        "vs DynamicCache",
        title=f"decode speed, batch 1, prompt {prompt_len}, {new_tokens} new tokens",
    )
    for name, speed in rows:
        table.add_row(name, f"{speed:.1f}", f"{speed / baseline:.2f}x")
    console.print(table)


def batched_decode_table(
    model: torch.nn.Module, prompt_len: int, new_tokens: int, sizes: tuple[int, ...] = (1, 4, 16)
) -> None:
    """Aggregate decode tokens/s of n sequences (int4 SnapKV at 1/8 of the full cache, and
    4-bit H2O with decode-time eviction) decoded one after another (baseline) vs together in
    one continuously batched DecodeBatch."""
    prompts = [[5 + (7 * i + j) % 400 for j in range(prompt_len)] for i in range(max(sizes))]
    configs = {
        "int4 SnapKV 1/8": KVConfig("snapkv", bits=4, budget_fp16_tokens=prompt_len / 8),
        "int4 H2O 1/4, decode eviction": KVConfig(
            "h2o",
            bits=4,
            group_size=16,
            residual_length=16,
            budget_fp16_tokens=prompt_len / 4,
            compress_decode=True,
        ),
    }

    def tokens_per_second(n: int, config: KVConfig, together: bool) -> float:
        batch = DecodeBatch(model)
        plans = [batch.plan(config, p) for p in prompts[:n]]
        seqs = [batch.sequence(plan, new_tokens + 1, greedy, None) for plan in plans]
        groups = [seqs] if together else [[seq] for seq in seqs]
        elapsed = 0.0
        for group in groups:
            for seq in group:
                batch.admit(seq)  # prefill is not timed
            start = time.perf_counter()
            while batch.live:
                batch.step()
            elapsed += time.perf_counter() - start
        return n * new_tokens / elapsed

    table = Table(
        "cache",
        "sequences",
        "one at a time tok/s",
        "batched tok/s",
        "ratio",
        title=f"continuous batching, prompt {prompt_len}, {new_tokens} new tokens each",
    )
    for name, config in configs.items():
        for n in sizes:
            alone = tokens_per_second(n, config, together=False)
            batched = tokens_per_second(n, config, together=True)
            table.add_row(name, str(n), f"{alone:.1f}", f"{batched:.1f}", f"{batched / alone:.2f}x")
    console.print(table)


def concurrency_table(model: torch.nn.Module) -> None:
    """Sequences of 4096 tokens that fit in 16 GiB of KV memory (Llama-3-8B geometry, formula)
    and in 64 MiB on the tiny model (measured by allocating kiln caches)."""
    table = Table(
        "setting",
        "fp16 sequences",
        "int4 sequences",
        "int4 / fp16",
        title="concurrent sequences in a fixed KV memory",
    )
    llama = CacheGeometry(32, 8, 128)
    memory = 16 * 1024**3
    fp16 = memory // cache_bytes([4096] * 32, QuantSpec(16), llama, False)
    for group in (32, 64, 128):
        int4 = memory // cache_bytes([4096] * 32, QuantSpec(4, group, 128), llama, False)
        table.add_row(
            f"Llama-3-8B, 16 GiB, 4096 tokens, G={group} (formula)",
            str(fp16),
            str(int4),
            f"{int4 / fp16:.2f}x",
        )
    budget = 64 * 1024**2
    ids = [5 + i % 400 for i in range(1024)]
    counts = {}
    for bits in (16, 4):
        config = KVConfig("none", bits=bits, group_size=64, residual_length=128)
        stats: list = []
        list(compressed_stream(model, ids, 1, greedy, config, None, stats=stats))
        counts[bits] = budget // stats[0].bytes_used
    table.add_row(
        "tiny model (bf16), 64 MiB, 1024 tokens, G=64 (measured)",
        str(counts[16]),
        str(counts[4]),
        f"{counts[4] / counts[16]:.2f}x",
    )
    console.print(table)


def main() -> None:
    from services.common.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", type=Path, default=get_settings().effective_cache_dir / "kv-retrieval"
    )
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.skip_accuracy:
        accuracy_table(reference_model(args.model), args.samples)
    from services.llm.tiny import build_tiny_model

    tiny = get_settings().effective_cache_dir / "tiny-bench"
    if not (tiny / "config.json").exists():
        build_tiny_model(tiny, seed=0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16).eval()
    bytes_table(model, 512)
    decode_speed_table(model, 512, 64)
    batched_decode_table(model, 512, 64)
    concurrency_table(model)


if __name__ == "__main__":
    main()
