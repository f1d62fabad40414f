"""A call grader with the semantics of the Berkeley Function Calling Leaderboard's AST
checker, written from its documented rules.

Per call (against the function doc and the possible answer {param: [acceptable values]}):
- the name must be the answer's; every parameter the doc requires must be present; every
  given parameter must appear in the answer; an answer parameter may be left out only when
  "" is among its acceptable values;
- types follow the doc's BFCL type names (integer, float, string, boolean, array, tuple,
  dict, any): exact Python types (a bool is not an integer), an int is accepted where a float
  is declared (not the reverse), tuples are lists, `any` is not checked, array/tuple items
  are checked against `items.type`;
- values: strings compare after lower-casing and removing spaces and , . / - _ * ^ (and '
  read as "); lists compare element-wise in order; dicts compare key by key against the
  answer's acceptable values; other values by equality.
Per question: `simple` and `multiple` need exactly one matching call; `parallel` and
`parallel_multiple` need as many calls as the answer, matched in any order; `irrelevance`
needs no call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput
from services.toolsynth.core.calls import ToolCall, from_bfcl, parse_python_calls

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
PY_TYPES: dict[str, type] = {
    "integer": int,
    "float": float,
    "string": str,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
}
_STRIP = re.compile(r"[ ,./\-_*^]")

WRONG_NAME = "wrong_func_name"
MISSING_REQUIRED = "missing_required"
UNEXPECTED_PARAM = "unexpected_param"
MISSING_ANSWER_PARAM = "missing_optional"  # left out, but the answer has no "" for it
TYPE_ERROR = "type_error:simple"
NESTED_TYPE_ERROR = "type_error:nested"
VALUE_STRING = "value_error:string"
VALUE_LIST = "value_error:list/tuple"
VALUE_DICT = "value_error:dict"
VALUE_OTHER = "value_error:others"
WRONG_COUNT = "wrong_count"
NO_MATCH = "cannot_find_match"
CALLED_WHEN_IRRELEVANT = "irrelevance:called"


@dataclass
class Grade:
    valid: bool
    errors: list[str] = field(default_factory=list)
    detail: str = ""


def category_of(question_id: str) -> str:
    """BFCL ids: simple_python_3, multiple_12, parallel_7, parallel_multiple_2, irrelevance_0."""
    for name in ("parallel_multiple", "parallel", "multiple", "irrelevance", "simple"):
        if question_id.startswith(name):
            return name
    raise ValueError(f"no BFCL category in id {question_id!r}")


def standardize(text: str) -> str:
    return _STRIP.sub("", text).lower().replace("'", '"')


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        return isinstance(value, str) and standardize(value) == standardize(expected)
    if isinstance(expected, list):
        return (
            isinstance(value, list)
            and len(value) == len(expected)
            and all(_same(v, e) for v, e in zip(value, expected, strict=True))
        )
    if isinstance(expected, dict):
        return _dict_matches(value, expected)
    if isinstance(expected, bool) or isinstance(value, bool):
        return type(value) is type(expected) and value == expected
    return type(value) in (int, float) and value == expected


def _dict_matches(value: Any, expected: dict[str, Any]) -> bool:
    """expected: {key: [acceptable values]} ("" in the list: the key may be left out)."""
    if not isinstance(value, dict) or set(value) - set(expected):
        return False
    for key, options in expected.items():
        options = options if isinstance(options, list) else [options]
        if key not in value:
            if "" not in options:
                return False
        elif not any(_same(value[key], o) for o in options if o != ""):
            return False
    return True


def _type_error(value: Any, spec: dict[str, Any]) -> tuple[str | None, Any]:
    """(error code or None, the value after BFCL's int -> float promotion)."""
    declared = spec.get("type", "any")
    expected = PY_TYPES.get(declared)
    if expected is None:  # any, or a type BFCL does not check
        return None, value
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        return TYPE_ERROR, value
    item_type = PY_TYPES.get((spec.get("items") or {}).get("type", "any"))
    if expected is list and item_type is not None:
        promoted = []
        for item in value:
            if item_type is float and type(item) is int:
                item = float(item)
            if type(item) is not item_type:
                return NESTED_TYPE_ERROR, value
            promoted.append(item)
        value = promoted
    return None, value


def _value_error(value: Any) -> str:
    if isinstance(value, str):
        return VALUE_STRING
    if isinstance(value, list):
        return VALUE_LIST
    if isinstance(value, dict):
        return VALUE_DICT
    return VALUE_OTHER


def check_call(doc: dict[str, Any], call: ToolCall, answer: dict[str, Any]) -> Grade:
    """One call against one function doc and one possible answer {name: {param: [values]}}."""
    ((name, expected),) = answer.items()
    if call.name != name:
        return Grade(False, [WRONG_NAME], f"called {call.name}, expected {name}")
    properties = doc.get("parameters", {}).get("properties", {})
    for param in doc.get("parameters", {}).get("required", []):
        if param not in call.arguments:
            return Grade(False, [MISSING_REQUIRED], f"{name}: required {param} is missing")
    for param, value in call.arguments.items():
        if param not in expected:
            return Grade(False, [UNEXPECTED_PARAM], f"{name}: unexpected parameter {param}")
        error, value = _type_error(value, properties.get(param, {}))
        if error:
            declared = properties.get(param, {}).get("type")
            return Grade(False, [error], f"{name}.{param}: {value!r} is not a {declared}")
        options = [o for o in expected[param] if o != ""]
        if not any(_same(value, o) for o in options):
            return Grade(
                False, [_value_error(value)], f"{name}.{param}: {value!r} not in {options!r}"
            )
    for param, options in expected.items():
        if param not in call.arguments and "" not in options:
            return Grade(False, [MISSING_ANSWER_PARAM], f"{name}: {param} is expected")
    return Grade(True)


def _doc(functions: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((f for f in functions if f.get("name") == name), None)


def grade(
    functions: list[dict[str, Any]],
    calls: list[ToolCall],
    answers: list[dict[str, Any]],
    category: str,
) -> Grade:
    """A model's calls for one BFCL question (answers: the possible-answer list)."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
    if category == "irrelevance":
        if calls:
            return Grade(False, [CALLED_WHEN_IRRELEVANT], f"{len(calls)} call(s), expected none")
        return Grade(True)
    if len(calls) != len(answers) or (category in ("simple", "multiple") and len(calls) != 1):
        return Grade(False, [WRONG_COUNT], f"{len(calls)} call(s), expected {len(answers)}")
    if category in ("simple", "multiple"):
        (answer,) = answers
        return check_call(_doc(functions, next(iter(answer))) or {}, calls[0], answer)
    unmatched = list(range(len(calls)))
    for answer in answers:
        doc = _doc(functions, next(iter(answer))) or {}
        grades = {i: check_call(doc, calls[i], answer) for i in unmatched}
        match = next((i for i, g in grades.items() if g.valid), None)
        if match is None:
            errors = sorted({e for g in grades.values() for e in g.errors})
            return Grade(
                False,
                [NO_MATCH, *errors],
                f"no call matches {next(iter(answer))}: "
                + "; ".join(g.detail for g in grades.values()),
            )
        unmatched.remove(match)
    return Grade(True)


def answer_as_calls(
    answers: list[dict[str, Any]], functions: Sequence[dict[str, Any]] = ()
) -> list[ToolCall]:
    """The answer as calls: a parameter the answer lets be left out ("" among its values) is
    left out unless its function doc requires it; others take their first value other than
    ""."""
    calls = []
    for answer in answers:
        for name, params in answer.items():
            doc = _doc(functions, name) or {}
            required = set((doc.get("parameters") or {}).get("required", []))
            arguments = {
                p: _first(value)
                for p, options in params.items()
                if (value := _chosen(options)) != "" and ("" not in options or p in required)
            }
            calls.append(ToolCall(name, arguments))
    return calls


def _chosen(options: Any) -> Any:
    if not isinstance(options, list):
        return options
    return next((o for o in options if o != ""), "")


def _first(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _first(v) for k, o in value.items() if (v := _chosen(o)) != ""}
    if isinstance(value, list):
        return [_first(v) for v in value]
    return value


def parse_calls(text: str, where: str = "calls") -> list[ToolCall]:
    """A model's calls as BFCL JSON ([{name: {args}}]) or bracket-Python text."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        return from_bfcl(json.loads(stripped), where)
    except json.JSONDecodeError:
        return parse_python_calls(stripped, where)


@dataclass
class DatasetGrade:
    graded: int = 0
    correct: int = 0
    by_category: dict[str, list[int]] = field(default_factory=dict)  # [correct, graded]
    errors: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # question ids without calls

    @property
    def accuracy(self) -> float:
        return self.correct / self.graded if self.graded else 0.0


def grade_dataset(
    questions: list[dict[str, Any]], answers: list[dict[str, Any]], results: list[dict[str, Any]]
) -> DatasetGrade:
    """BFCL files: questions {id, function}, answers {id, ground_truth}, model results
    {id, result} (result: BFCL JSON calls or bracket-Python text; irrelevance needs none).
    A result that does not parse counts as wrong with error `decode_error`."""
    truth = {a["id"]: a["ground_truth"] for a in answers}
    given = {r["id"]: r.get("result", "") for r in results}
    out = DatasetGrade()
    for question in questions:
        qid = question["id"]
        if qid not in given:
            out.missing.append(qid)
            continue
        category = category_of(qid)
        raw = given[qid]
        try:
            calls = parse_calls(raw if isinstance(raw, str) else json.dumps(raw), f"{qid}.result")
            result = grade(question["function"], calls, truth.get(qid, []), category)
        except InvalidInput as exc:
            result = Grade(False, ["decode_error"], str(exc))
        tally = out.by_category.setdefault(category, [0, 0])
        tally[1] += 1
        out.graded += 1
        if result.valid:
            tally[0] += 1
            out.correct += 1
        for code in result.errors:  # a parallel miss lists cannot_find_match and its causes
            out.errors[code] = out.errors.get(code, 0) + 1
    return out
