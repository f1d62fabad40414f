"""A call grader with the semantics of the Berkeley Function Calling Leaderboard's AST
checker (bfcl_eval/eval_checker/ast_eval/ast_checker.py, BFCL v4), written from its rules.

Per call (against the function doc and the possible answer {param: [acceptable values]}):
- the name must be the answer's; every parameter the doc requires must be present; every
  given parameter must be both in the doc and in the answer; an answer parameter may be left
  out only when "" is among its acceptable values;
- types: the doc's BFCL type names map to Python types (integer, float, string, boolean,
  array, tuple, dict; `any` is a string), exact (a bool is not an integer); an int is promoted
  where a float is declared (not inside arrays); a value whose type is not the declared one
  is still accepted when it has the type of the answer's acceptable values (BFCL's "variable"
  rule: an explicit None where the answer lists None, 'dontcare' for an integer whose answer
  lists it), and is then compared exactly. Array and tuple items are checked against
  `items.type` under the same rule, against each list among the acceptable values;
- values: strings compare after lower-casing and removing spaces and , . / - _ * ^ (and '
  read as "); lists compare in order, their string items standardized; dicts key by key
  against the answer's acceptable values, lists of dicts dict by dict; other values by
  equality.
Per question (live_ categories grade as their non-live ones): `simple` and `multiple` need
exactly one matching call; `parallel` and `parallel_multiple` need as many calls as the
answer, matched in any order; `irrelevance` needs no call, and a text answer that decodes to
no call counts as none; `relevance` needs at least one well-formed call to an offered
function (BFCL itself only asks that the answer decode to a call).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput
from services.toolsynth.core.calls import ToolCall, from_bfcl, parse_python_calls

KINDS = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance", "relevance")
CATEGORIES = (
    *KINDS[:5],
    *(f"live_{kind}" for kind in KINDS),
)
PY_TYPES: dict[str, type] = {
    "integer": int,
    "float": float,
    "string": str,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
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
NO_CALL_WHEN_RELEVANT = "relevance:no_call"
NOT_OFFERED = "relevance:not_offered"
DECODE_ERROR = "decode_error"


@dataclass
class Grade:
    valid: bool
    errors: list[str] = field(default_factory=list)
    detail: str = ""


def category_of(question_id: str) -> str:
    """BFCL ids: simple_python_3, multiple_12, parallel_7, parallel_multiple_2, irrelevance_0,
    live_simple_0-0-0, live_multiple_12-4-0, live_relevance_3-3-0, ..."""
    live = question_id.startswith("live_")
    rest = question_id.removeprefix("live_")
    for kind in ("parallel_multiple", "parallel", "multiple", "irrelevance", "relevance"):
        if rest.startswith(kind):
            return f"live_{kind}" if live else kind
    if rest.startswith("simple"):
        return "live_simple" if live else "simple"
    raise ValueError(f"no BFCL category in id {question_id!r}")


def kind_of(category: str) -> str:
    """The checking rule of a category: live_simple grades as simple, and so on."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
    return category.removeprefix("live_")


def standardize(text: str) -> str:
    return _STRIP.sub("", text).lower().replace("'", '"')


def _standard(value: Any) -> Any:
    return standardize(value) if isinstance(value, str) else value


def _answer_type(options: list[Any]) -> type | None:
    """The type of the first acceptable value other than "" (None: only "")."""
    return next((type(o) for o in options if o != ""), None)


def _type_error(
    value: Any, options: list[Any], declared: type, items: type | None
) -> tuple[str | None, bool]:
    """(error code or None, whether the value is taken as a "variable": of the answer's type
    rather than the declared one, compared exactly)."""
    answer_type = _answer_type(options)
    variable = answer_type is not None and answer_type is not declared
    if type(value) is declared:
        if items is None:
            return None, variable
        for option in options:
            if not isinstance(option, list) or all(
                _type_error(item, option, items, None)[0] is None for item in value
            ):
                return None, variable
        return NESTED_TYPE_ERROR, False
    if answer_type is not None and type(value) is answer_type:
        return None, True
    return TYPE_ERROR, False


def _dict_matches(value: dict[str, Any], options: list[Any]) -> bool:
    """Some acceptable dict {key: [acceptable values]} ("" among them: the key may be left
    out) takes every key of value with a matching value and misses no required key."""
    for option in options:
        if option == "" or not isinstance(option, dict):
            continue
        if set(value) - set(option):
            continue
        if all(_standard(v) in [_standard(o) for o in option[k]] for k, v in value.items()) and all(
            k in value or "" in acceptable for k, acceptable in option.items()
        ):
            return True
    return False


def _list_of_dicts_matches(value: list[Any], options: list[Any]) -> bool:
    for option in options:
        if len(value) == len(option) and all(
            isinstance(v, dict) and _dict_matches(v, [o])
            for v, o in zip(value, option, strict=True)
        ):
            return True
    return False


def _list_matches(value: list[Any], options: list[Any]) -> bool:
    standard = [_standard(v) for v in value]
    return any(
        standard == [_standard(o) for o in option]
        for option in options
        if isinstance(option, list) or option == ""
    )


def _value_error(value: Any, options: list[Any], declared: type, items: type | None) -> str | None:
    if declared is dict:
        return None if _dict_matches(value, options) else VALUE_DICT
    if declared is list and items is dict:
        return None if _list_of_dicts_matches(value, options) else VALUE_DICT
    if declared is str:
        standard = [standardize(o) for o in options if isinstance(o, str)]
        return None if standardize(value) in standard else VALUE_STRING
    if declared is list:
        return None if _list_matches(value, options) else VALUE_LIST
    return None if value in options else VALUE_OTHER


def check_call(doc: dict[str, Any], call: ToolCall, answer: dict[str, Any]) -> Grade:
    """One call against one function doc and one possible answer {name: {param: [values]}}."""
    ((name, expected),) = answer.items()
    if call.name != name:
        return Grade(False, [WRONG_NAME], f"called {call.name}, expected {name}")
    parameters = doc.get("parameters") or {}
    properties = parameters.get("properties", {})
    for param in parameters.get("required", []):
        if param not in call.arguments:
            return Grade(False, [MISSING_REQUIRED], f"{name}: required {param} is missing")
    for param, value in call.arguments.items():
        if param not in properties or param not in expected:
            return Grade(False, [UNEXPECTED_PARAM], f"{name}: unexpected parameter {param}")
        spec, options = properties[param], expected[param]
        declared = PY_TYPES.get(spec.get("type", "any"))
        if declared is None:  # a type name BFCL's Python checker does not know: unchecked
            if value not in options:
                return Grade(False, [VALUE_OTHER], f"{name}.{param}: {value!r} not in {options!r}")
            continue
        items = None
        if spec.get("type") in ("array", "tuple"):
            items = PY_TYPES.get((spec.get("items") or {}).get("type", "any"))
        if declared is float and type(value) is int:
            value = float(value)
        error, variable = _type_error(value, options, declared, items)
        if error:
            return Grade(False, [error], f"{name}.{param}: {value!r} is not a {spec.get('type')}")
        error = VALUE_OTHER if variable and value not in options else None
        if not variable:
            error = _value_error(value, options, declared, items)
        if error:
            return Grade(False, [error], f"{name}.{param}: {value!r} not in {options!r}")
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
    kind = kind_of(category)
    if kind == "irrelevance":
        if calls:
            return Grade(False, [CALLED_WHEN_IRRELEVANT], f"{len(calls)} call(s), expected none")
        return Grade(True)
    if kind == "relevance":
        if not calls:
            return Grade(False, [NO_CALL_WHEN_RELEVANT], "no call, expected at least one")
        offered = {f.get("name") for f in functions}
        if stray := [c.name for c in calls if c.name not in offered]:
            return Grade(False, [NOT_OFFERED], f"{', '.join(stray)} not offered")
        return Grade(True)
    if len(calls) != len(answers) or (kind in ("simple", "multiple") and len(calls) != 1):
        return Grade(False, [WRONG_COUNT], f"{len(calls)} call(s), expected {len(answers)}")
    if kind in ("simple", "multiple"):
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


def grade_text(
    functions: list[dict[str, Any]], text: str, answers: list[dict[str, Any]], category: str
) -> Grade:
    """grade() on a model's raw output. Output that does not decode to calls is a text answer:
    right on irrelevance (no call made), wrong elsewhere (`decode_error`)."""
    try:
        calls = parse_calls(text)
    except InvalidInput as exc:
        if kind_of(category) == "irrelevance":
            return Grade(True, detail=f"a text answer: {exc.reason}")
        return Grade(False, [DECODE_ERROR], str(exc))
    return grade(functions, calls, answers, category)


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
        decoded = json.loads(stripped)
    except json.JSONDecodeError:
        return parse_python_calls(stripped, where)
    except RecursionError:
        raise InvalidInput(where, "JSON nested too deeply") from None
    return from_bfcl(decoded, where)


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
    {id, result} (result: BFCL JSON calls or bracket-Python text; irrelevance and relevance
    questions have no answers). A result that does not parse is a text answer (grade_text)."""
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
        text = raw if isinstance(raw, str) else json.dumps(raw)
        result = grade_text(question["function"], text, truth.get(qid, []), category)
        tally = out.by_category.setdefault(category, [0, 0])
        tally[1] += 1
        out.graded += 1
        if result.valid:
            tally[0] += 1
            out.correct += 1
        for code in result.errors:  # a parallel miss lists cannot_find_match and its causes
            out.errors[code] = out.errors.get(code, 0) + 1
    return out
