"""Decode speed at long context on the real model, SmolLM2-135M-Instruct (bfloat16), batch 1:
kiln's cache (int4 full length, int4 SnapKV at 1/8 of the 16-bit bytes, 16-bit SnapKV 1/8;
decode attention reads the int4 codes, services/kv/quantized_attention.py) against
transformers' DynamicCache and, when optimum-quanto is installed (`pip install -e ".[bench]"`),
transformers' QuantizedCache (quanto) at 4 bits, on the same prompt in the same run. Then the
peak resident memory of a prefill in chunks of 512 against one unchunked pass, each in a fresh
process.

    python benchmarks/kv_long_context.py [--contexts 1024 4096 8192] [--new-tokens 32]

Prints decode tokens/s (prefill excluded) and the ratios to DynamicCache and to quanto.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.kv.budget import KVConfig
from services.kv.decoder import DecodeBatch
from services.llm.smollm2 import MODEL_NAME, build_smollm2

console = Console()
TEXT = (
    "The history of the city begins with a small market by the river, where traders from the "
    "hills met fishermen from the coast. Over the centuries the market grew into a town. "
)


def model_and_ids(context: int) -> tuple[torch.nn.Module, list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.common.settings import get_settings

    folder = get_settings().effective_models_dir / MODEL_NAME
    build_smollm2(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    ids = tokenizer(TEXT * (context // 30 + 1))["input_ids"][:context]
    return model, ids


def hf_rate(model: torch.nn.Module, ids: list[int], new_tokens: int, cache: object) -> float:
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
    return new_tokens / (time.perf_counter() - start)


def kiln_rate(model: torch.nn.Module, ids: list[int], new_tokens: int, kv: KVConfig) -> float:
    batch = DecodeBatch(model)
    seq = batch.sequence(batch.plan(kv, ids), new_tokens + 1, lambda lp: int(lp.argmax()), None)
    batch.admit(seq)
    start = time.perf_counter()
    while batch.live:
        batch.step()
    return new_tokens / (time.perf_counter() - start)


def speed_table(context: int, new_tokens: int) -> None:
    from transformers import DynamicCache

    model, ids = model_and_ids(context)
    baseline = hf_rate(model, ids, new_tokens, DynamicCache())
    rows = [("transformers DynamicCache (baseline)", baseline)]
    quanto = None
    try:
        from transformers import QuantizedCache

        cache = QuantizedCache(
            backend="quanto", config=model.config, nbits=4, q_group_size=32, residual_length=32
        )
        warm = QuantizedCache(
            backend="quanto", config=model.config, nbits=4, q_group_size=32, residual_length=32
        )
        hf_rate(model, ids[:64], 2, warm)  # quanto compiles its extension on first use
        quanto = hf_rate(model, ids, new_tokens, cache)
        rows.append(("transformers QuantizedCache quanto int4", quanto))
    except Exception as exc:  # optional: optimum-quanto
        rows.append((f"transformers QuantizedCache quanto int4 ({type(exc).__name__})", None))
    eighth = context / 8
    for name, kv in (
        ("kiln int4, full length", KVConfig("none", bits=4)),
        ("kiln int4 SnapKV 1/8", KVConfig("snapkv", bits=4, budget_fp16_tokens=eighth)),
        ("kiln 16-bit SnapKV 1/8", KVConfig("snapkv", bits=16, budget_fp16_tokens=eighth)),
    ):
        rows.append((name, kiln_rate(model, ids, new_tokens, kv)))
    table = Table(
        "cache",
        "decode tokens/s",
        "vs DynamicCache",
        "vs quanto int4",
        title=f"SmolLM2-135M bf16, context {context}, {new_tokens} new tokens, batch 1",
    )
    for name, rate in rows:
        if rate is None:
            table.add_row(name, "n/a", "", "")
            continue
        versus = f"{rate / quanto:.2f}x" if quanto else ""
        table.add_row(name, f"{rate:.1f}", f"{rate / baseline:.2f}x", versus)
    console.print(table)


def prefill_peak(context: int, chunk: int) -> float:
    """Peak resident MiB of this process after prefilling `context` tokens in `chunk`s
    (run in a fresh process by peak_table)."""
    model, ids = model_and_ids(context)
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    loaded = _status_mib("VmHWM")
    batch = DecodeBatch(model, prefill_chunk=chunk)
    kv = KVConfig("snapkv", bits=4, budget_fp16_tokens=context / 8)
    batch.admit(batch.sequence(batch.plan(kv, ids), 1, lambda lp: int(lp.argmax()), None))
    return _status_mib("VmHWM") - loaded


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (kB) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_table(context: int) -> None:
    peaks = {}
    for chunk in (512, context):
        out = subprocess.run(
            [sys.executable, __file__, "--peak", str(context), str(chunk)],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[chunk] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    table = Table(
        "prefill",
        "peak MiB above the loaded model",
        title=f"SnapKV int4 1/8 prefill of {context} tokens, fresh process each",
    )
    table.add_row("chunks of 512", f"{peaks[512]:.0f}")
    table.add_row("one pass", f"{peaks[context]:.0f}")
    table.add_row("ratio", f"{peaks[512] / peaks[context]:.2f}x")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--peak", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        print(json.dumps({"peak_mib": prefill_peak(*args.peak)}))
        return
    torch.manual_seed(0)
    for context in args.contexts:
        speed_table(context, args.new_tokens)
    peak_table(max(args.contexts))


if __name__ == "__main__":
    main()
