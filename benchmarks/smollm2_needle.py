"""The paper's equal-memory table on the real model ("More Tokens, Lower Precision", Table 1 in
miniature): needle-in-a-haystack on SmolLM2-135M-Instruct, accuracy of the full cache against
pruning only (16 bits) and quantized pruning (4 and 2 bits) at the same byte budgets, for
StreamingLLM, H2O, SnapKV and PyramidKV, query-aware and query-agnostic; --adakv adds each
scored method with AdaKV's per-head budgets (method+adakv columns).

    python benchmarks/smollm2_needle.py [--items 40] [--contexts 1536 4096] [--adakv]
        [--methods snapkv h2o] [--bits 16 4]

Each item hides one fact ("Alice lives in the city of Lisbon.") at a depth spread evenly over
the items in a haystack of GSM8K problems (data/math/gsm8k_train.jsonl), then asks for it; an
answer is right when it names the city. Budgets are fractions of the prompt's full 16-bit
cache. The prompt is prefilled once per item and setting family (query-aware: the whole
prompt; query-agnostic: the context without the question, which is then read through the
compressed cache): every method's selection is made from the same prefill (the prefill's
attention is exact, compression only changes what is stored), and the settings of an item
decode together in one continuous batch per budget (the full cache alone), so no sequence's
attention is padded to a much longer cache. --out keeps the running counts after every item.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from services.common.errors import InvalidInput
from services.kv.budget import KVConfig
from services.kv.cache import KilnCache
from services.kv.decoder import DecodeBatch
from services.kv.presses import PRESSES
from services.llm.smollm2 import MODEL_NAME, build_smollm2
from services.llm.tokens import encode_prompt, render_prompt

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jana"]
CITIES = [
    "Lisbon",
    "Oslo",
    "Nairobi",
    "Lima",
    "Hanoi",
    "Quito",
    "Dublin",
    "Tunis",
    "Riga",
    "Perth",
    "Cairo",
    "Seoul",
    "Porto",
    "Bergen",
    "Accra",
    "Malmo",
]
METHODS = ("streamingllm", "h2o", "snapkv", "pyramidkv")
FRACTIONS = (4, 8, 16)
BITS = (16, 4, 2)
ANSWER_TOKENS = 10  # SmolLM2 answers 'X lives in the city of Y.'


def haystack(rng: random.Random, questions: list[str], tokens: int, tokenizer) -> list[str]:
    """GSM8K problems, in a seeded order, until about `tokens` tokens."""
    picked, count = [], 0
    while count < tokens:
        text = rng.choice(questions)
        picked.append(text)
        count += len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
    return picked


def item_prompt(index: int, items: int, context: int, tokenizer, questions, rng) -> tuple:
    name, city = NAMES[index % len(NAMES)], CITIES[rng.randrange(len(CITIES))]
    parts = haystack(rng, questions, context - 60, tokenizer)
    depth = (index + 0.5) / items
    parts.insert(round(depth * len(parts)), f"{name} lives in the city of {city}.")
    question = f"In which city does {name} live?"
    messages = [{"role": "user", "content": "\n".join(parts) + "\n\n" + question}]
    ids = encode_prompt(tokenizer, messages)
    text = render_prompt(tokenizer, messages)  # the question and the assistant header after it
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    question_start = text.rindex(question)
    question_tokens = sum(start >= question_start for start, _ in offsets["offset_mapping"])
    return ids, city, question_tokens


class CapturingCache(KilnCache):
    """A full-precision prefill that keeps what every method's selection reads (keys, values,
    the prompt's last 64 queries, H2O's accumulated attention) instead of storing it."""

    captured: list[tuple]

    @property
    def query_window(self) -> int:
        return 64

    def store_prefill(self, layer_idx, query, key, value, scaling, scores=None) -> None:
        self.captured.append((query, key, value, scaling, scores))
        if layer_idx == self.geometry.num_layers - 1:
            self.seen_tokens, self.prefilling = key.shape[1], False


def shared_prefill(batch: DecodeBatch, ids: list[int]) -> tuple[list[tuple], torch.Tensor]:
    everything = KVConfig("h2o", bits=16, budget_fp16_tokens=len(ids) + 1)  # scores, no pruning
    seq = batch.sequence(batch.plan(everything, ids), 1, lambda lp: 0, None)
    cache = CapturingCache(seq.plan, seq.kv, batch.geometry, batch.dtype)
    cache.captured = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch.prefill_chunk):
            end = min(len(ids), start + batch.prefill_chunk)
            logits = batch._forward(
                torch.tensor([ids[start:end]]), torch.arange(start, end).unsqueeze(0), cache
            )
    return cache.captured, logits[0, -1]


def decode_all(batch, ids, captured, logits, configs, eos) -> dict[KVConfig, list[int]]:
    """Every config's compressed cache built from the one prefill, decoded together."""
    sequences = {}
    for config in configs:
        try:
            seq = batch.sequence(
                batch.plan(config, ids), ANSWER_TOKENS, lambda lp: int(lp.argmax()), eos
            )
        except InvalidInput:
            continue  # the budget cannot hold this method's minimum at these bits
        context = len(seq.prompt_ids)
        seq.cache = KilnCache(seq.plan, seq.kv, batch.geometry, batch.dtype)
        for layer, (query, key, value, scaling, scores) in enumerate(captured):
            assert key.shape[1] == context
            seq.cache.store_prefill(layer, query, key, value, scaling, scores)
        seq.advance(logits)
        batch.live.append(seq)
        sequences[config] = seq
    with torch.inference_mode():
        while batch.live:
            batch.step()
    return {config: seq.tokens for config, seq in sequences.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1536, 4096])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON of the running counts, after every item")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--bits", type=int, nargs="+", choices=BITS, default=list(BITS))
    parser.add_argument("--adakv", action="store_true", help="add method+adakv columns")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="run items in bit-reversed depth order: a stopped run's counts cover every depth",
    )
    args = parser.parse_args()
    columns = [(m, False) for m in args.methods]
    if args.adakv:
        columns += [(m, True) for m in args.methods if PRESSES[m].scored]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.common.settings import get_settings

    folder = args.model or get_settings().effective_models_dir / MODEL_NAME
    build_smollm2(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    batch = DecodeBatch(model)
    rows = (ROOT / "data" / "math" / "gsm8k_train.jsonl").read_text().splitlines()
    questions = [json.loads(r)["question"] for r in rows]
    console = Console(width=160)
    progress: dict[str, dict] = {}
    for context in args.contexts:
        rng = random.Random(args.seed)
        right: dict[str, int] = {}
        order = spread_order(args.items) if args.spread else range(args.items)
        for done, index in enumerate(order, 1):
            ids, city, question_tokens = item_prompt(
                index, args.items, context, tokenizer, questions, rng
            )
            budget_unit = len(ids)
            for aware in (True, False):
                prefix = ids if aware else ids[:-question_tokens]
                captured, logits = shared_prefill(batch, prefix)
                configs = [
                    KVConfig(
                        method,
                        bits=bits,
                        budget_fp16_tokens=budget_unit / fraction,
                        query_aware=aware,
                        question_tokens=0 if aware else question_tokens,
                        adakv=ada,
                    )
                    for method, ada in columns
                    for fraction in FRACTIONS
                    for bits in args.bits
                ]
                if aware:
                    configs.append(KVConfig())
                if not aware:  # the question is read through the compressed cache
                    configs = [replace(c, question_tokens=question_tokens) for c in configs]
                for group in by_budget(configs):
                    answers = decode_all(
                        batch, ids, captured, logits, group, tokenizer.eos_token_id
                    )
                    for config, tokens in answers.items():
                        key = label(config, budget_unit)
                        right[key] = right.get(key, 0) + (city in tokenizer.decode(tokens))
            console.print(f"context {context}: item {done}/{args.items}", end="\r")
            if args.out:
                progress[str(context)] = {"items": done, "right": right}
                args.out.write_text(json.dumps(progress, indent=1))
        names = [method + ("+adakv" if ada else "") for method, ada in columns]
        print_table(console, context, args.items, right, names, args.bits)


def spread_order(items: int) -> list[int]:
    """0..items-1 in bit-reversed order (0, 1/2, 1/4, 3/4, ... of the depths): every prefix
    spreads over the haystack's depths."""
    bits = max(1, (items - 1).bit_length())
    reversed_ = (int(f"{i:0{bits}b}"[::-1], 2) for i in range(1 << bits))
    return [i for i in reversed_ if i < items]


def by_budget(configs: list[KVConfig]) -> list[list[KVConfig]]:
    """configs grouped by budget, in order of first appearance."""
    groups: dict[float, list[KVConfig]] = {}
    for config in configs:
        groups.setdefault(config.budget_fp16_tokens, []).append(config)
    return list(groups.values())


def label(config: KVConfig, unit: int) -> str:
    if config.method == "none":
        return "full"
    fraction = round(unit / config.budget_fp16_tokens)
    mode = "aware" if config.query_aware else "agnostic"
    method = config.method + ("+adakv" if config.adakv else "")
    return f"{method}|{fraction}|{config.bits}|{mode}"


def print_table(
    console: Console,
    context: int,
    items: int,
    right: dict[str, int],
    methods: list[str],
    bits_list: list[int],
) -> None:
    table = Table(
        "budget, bits",
        *methods,
        title=f"needle accuracy (query-aware / query-agnostic), SmolLM2-135M-Instruct, "
        f"~{context}-token haystack, {items} items; full cache {right.get('full', 0) / items:.2f}",
    )

    def cell(method: str, fraction: int, bits: int) -> str:
        rates = []
        for mode in ("aware", "agnostic"):
            key = f"{method}|{fraction}|{bits}|{mode}"
            rates.append(f"{right[key] / items:.2f}" if key in right else "n/a")
        return " / ".join(rates)

    for fraction in FRACTIONS:
        for bits in bits_list:
            table.add_row(f"1/{fraction}, {bits}-bit", *(cell(m, fraction, bits) for m in methods))
    console.print(table)


if __name__ == "__main__":
    main()
