"""The public data sets in the repository's data/ folder (upstream and licenses in
data/README.md): the one place tests find them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
BFCL_DIR = DATA_DIR / "tools" / "bfcl"
JUDGE_DIR = DATA_DIR / "judge"
GSM8K_TRAIN = DATA_DIR / "math" / "gsm8k_train.jsonl"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file (BFCL's .json files are JSON Lines too)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def judge_set(name: str) -> list[dict[str, Any]]:
    """A pairwise judge set (llmbar_natural, mtbench_human_200, evalbiasbench) as raw rows."""
    return json.loads((JUDGE_DIR / f"{name}.json").read_text())
