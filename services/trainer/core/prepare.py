"""Data preparation methods run through a served model: RISE pairs, TATA selection, BMC
bridging. Each maps input rows to output rows plus statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from services.common.configs import config_from_dict
from services.common.errors import InvalidInput
from services.llm.base import Backend, SamplingParams
from services.trainer.core import bmc, rise, tata

CONFIGS: dict[str, type] = {"rise": rise.RISEConfig, "tata": tata.TATAConfig, "bmc": bmc.BMCConfig}
REQUIRED = {
    "rise": ("question", "answer"),
    "tata": ("question", "answer", "cot", "tir"),
    "bmc": ("prompt", "chosen", "rejected"),
}


def prepare_config(method: str, parameters: dict[str, Any]) -> Any:
    if method not in CONFIGS:
        raise InvalidInput("method", f"must be one of {', '.join(CONFIGS)}")
    return config_from_dict(CONFIGS[method], parameters, "parameters")


def check_rows(method: str, rows: Sequence[dict[str, Any]]) -> None:
    for i, row in enumerate(rows):
        for key in REQUIRED[method]:
            if key not in row:
                raise InvalidInput(
                    f"dataset[row {i}]",
                    f"missing '{key}' (a {method} row needs {', '.join(REQUIRED[method])})",
                )


def prepare(
    method: str,
    config: Any,
    rows: Sequence[dict[str, Any]],
    backend: Backend,
    tir_backend: Backend | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(output rows, stats). tata needs tir_backend: the same model with tool-integrated
    generation (the inference service's ToolUse)."""
    check_rows(method, rows)
    if method == "rise":
        out, stats = rise.build_pairs(
            backend, rows, config, on_stage=lambda m: on_progress and on_progress(0, 1, m)
        )
        return out, asdict(stats)
    if method == "bmc":
        bridged = bmc.bridge(backend, rows, config)
        out = [
            {**row, "chosen": new, "original_chosen": row["chosen"]}
            for row, new in zip(rows, bridged, strict=True)
            if new
        ]
        return out, {"pairs": len(rows), "bridged": len(out)}
    if tir_backend is None:
        raise InvalidInput("method", "tata needs tool-integrated generation")
    anchors = tata.select_anchors([r["question"] for r in rows], config)
    params = SamplingParams(max_tokens=config.max_tokens, temperature=0.0)

    def solver(engine: Backend) -> tata.Solver:
        return lambda prompts: [c.text for c in engine.generate(list(prompts), params)]

    cot, tir = tata.aptitude_scores(
        rows,
        anchors,
        solver(backend),
        solver(tir_backend),
        on_progress=lambda done, total: on_progress and on_progress(done, total, "scored"),
    )
    choices = tata.select(cot, tir, config)
    out = tata.sft_rows(rows, choices)
    stats = {
        "anchors": anchors,
        "cot_scores": cot,
        "tir_scores": tir,
        "kept_cot": sum(c for c, _ in choices),
        "kept_tir": sum(t for _, t in choices),
    }
    return out, stats
