"""kiln's BFCL grader against BFCL's own AST checker, on every BFCL v4 Python category, live
ones included: per category, how many ground-truth variants (the answer's first acceptable
values, then each other acceptable value of each parameter in turn) each grader accepts, how
many mutations (a dropped required parameter, a renamed function, a changed value, an extra
parameter, a duplicated call) each rejects, and on how many of all those calls the two agree.
Relevance and irrelevance: a text answer and an offered call, graded by both rules.

    pip install --no-deps bfcl-eval==2026.3.23   # BFCL's data and checker (1.9 MB)
    python benchmarks/bfcl_agreement.py [--bfcl-dir DIR]

BFCL's checker module is loaded from the package with one stand-in: its model-config table
(whose import pulls every model handler) answers "no underscore-to-dot renaming", which is
what the checker assumes for a model that keeps dotted names.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.toolsynth.core.calls import ToolCall
from services.toolsynth.core.grader import answer_as_calls, category_of, grade, grade_text

CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
)


def bfcl_root() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bfcl_eval is not installed: pip install --no-deps bfcl-eval==2026.3.23")
    return Path(next(iter(spec.submodule_search_locations)))


def load_bfcl_checker(root: Path) -> Any:
    """BFCL's ast_checker module, its model-config import stood in for (see the docstring)."""
    config = types.ModuleType("bfcl_eval.constants.model_config")
    config.MODEL_CONFIG_MAPPING = defaultdict(
        lambda: types.SimpleNamespace(underscore_to_dot=False)
    )
    sys.modules["bfcl_eval.constants.model_config"] = config
    sys.path.insert(0, str(root.parent))
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval import ast_checker

    return ast_checker, Language.PYTHON


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def variants(answers: list[dict[str, Any]], functions: list[dict]) -> list[list[ToolCall]]:
    """The ground truth with its first acceptable values, then with each other acceptable
    value of each parameter in turn."""
    base = answer_as_calls(answers, functions)
    out = [base]
    for i, answer in enumerate(answers):
        ((name, params),) = answer.items()
        for param, options in params.items():
            for option in options[1:] if isinstance(options, list) else []:
                if option == "":
                    continue
                calls = copy.deepcopy(base)
                calls[i] = ToolCall(name, {**calls[i].arguments, param: option})
                out.append(calls)
    return out


def mutations(calls: list[ToolCall], functions: list[dict]) -> list[list[ToolCall]]:
    first = calls[0]
    doc = next((f for f in functions if f["name"] == first.name), {})
    required = [p for p in doc.get("parameters", {}).get("required", []) if p in first.arguments]
    out = [[ToolCall(first.name + "_renamed", first.arguments), *calls[1:]]]
    if required:
        dropped = {k: v for k, v in first.arguments.items() if k != required[0]}
        out.append([ToolCall(first.name, dropped), *calls[1:]])
    if first.arguments:
        key, value = next(iter(first.arguments.items()))
        changed = {**first.arguments, key: _changed(value)}
        out.append([ToolCall(first.name, changed), *calls[1:]])
    out.append([ToolCall(first.name, {**first.arguments, "kiln_extra_param": 1}), *calls[1:]])
    out.append([*calls, calls[0]])
    return out


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7919
    if isinstance(value, str):
        return value + " kiln-mutated"
    if isinstance(value, list):
        return [*value, "kiln-mutated"]
    return "kiln-mutated"


def bfcl_accepts(checker: Any, language: Any, functions, calls, answers, category) -> bool:
    output = [{c.name: c.arguments} for c in calls]
    try:
        result = checker.ast_checker(functions, output, answers, language, category, "kiln")
    except Exception:  # BFCL's checker raises on some inputs it does not expect: a rejection
        return False
    return bool(result["valid"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bfcl-dir", type=Path, help="bfcl_eval/data (default: installed)")
    args = parser.parse_args()
    root = bfcl_root()
    data = args.bfcl_dir or root / "data"
    checker, language = load_bfcl_checker(root)
    table = Table(
        "category",
        "items",
        "truth calls",
        "kiln accepts",
        "BFCL accepts",
        "items kiln refuses",
        "mutations",
        "kiln rejects",
        "BFCL rejects",
        "agreement",
        title="kiln's BFCL grader vs BFCL's ast_checker (Python)",
    )
    for name in CATEGORIES:
        questions = rows(data / f"BFCL_v4_{name}.json")
        truth = {
            r["id"]: r["ground_truth"]
            for r in rows(data / "possible_answer" / f"BFCL_v4_{name}.json")
        }
        counts = defaultdict(int)
        for question in questions:
            qid, functions, answers = question["id"], question["function"], truth[question["id"]]
            category = category_of(qid)
            refused = False
            for calls in variants(answers, functions):
                kiln = grade(functions, calls, answers, category).valid
                bfcl = bfcl_accepts(checker, language, functions, calls, answers, category)
                counts["truth"] += 1
                counts["kiln_ok"] += kiln
                counts["bfcl_ok"] += bfcl
                counts["agree"] += kiln == bfcl
                refused |= not kiln
            counts["refused_items"] += refused
            for calls in mutations(answer_as_calls(answers, functions), functions):
                kiln = grade(functions, calls, answers, category).valid
                bfcl = bfcl_accepts(checker, language, functions, calls, answers, category)
                counts["mutations"] += 1
                counts["kiln_rejects"] += not kiln
                counts["bfcl_rejects"] += not bfcl
                counts["agree"] += kiln == bfcl
        total = counts["truth"] + counts["mutations"]
        table.add_row(
            name,
            str(len(questions)),
            str(counts["truth"]),
            str(counts["kiln_ok"]),
            str(counts["bfcl_ok"]),
            str(counts["refused_items"]),
            str(counts["mutations"]),
            str(counts["kiln_rejects"]),
            str(counts["bfcl_rejects"]),
            f"{counts['agree']}/{total} ({counts['agree'] / total:.2%})",
        )
    console = Console(width=200)
    console.print(table)
    relevance_table(console, data)


def relevance_table(console: Console, data: Path) -> None:
    """Irrelevance: a refusal in words is right, any call wrong; relevance the reverse."""
    table = Table(
        "category",
        "items",
        "text answer right",
        "offered call right",
        title="relevance and irrelevance (BFCL: decodes to a call or not)",
    )
    for name in ("irrelevance", "live_irrelevance", "live_relevance"):
        questions = rows(data / f"BFCL_v4_{name}.json")
        text_ok = call_ok = 0
        for question in questions:
            functions, category = question["function"], category_of(question["id"])
            text = "I cannot help with that using the functions I have."
            text_ok += grade_text(functions, text, [], category).valid
            call = f"[{functions[0]['name'] if functions else 'search'}()]"
            call_ok += grade_text(functions, call, [], category).valid
        table.add_row(name, str(len(questions)), str(text_ok), str(call_ok))
    console.print(table)


if __name__ == "__main__":
    main()
