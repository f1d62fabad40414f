"""Tool calls and their text forms.

A call is a name (dotted names allowed, as in BFCL's `math.factorial`) and keyword arguments
of JSON-like values. The bracket-Python form of ToolACE and BFCL, `[f(a=1, b='x'), g()]`, is
parsed with Python's ast (literals only: no names, no calls inside arguments, no positional
arguments) and rendered back losslessly; BFCL's decoded form is a list of {name: arguments}.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_bfcl(self) -> dict[str, dict[str, Any]]:
        return {self.name: dict(self.arguments)}


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _literal(node: ast.expr, where: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise InvalidInput(where, f"argument is not a literal: {ast.unparse(node)}") from exc
    return _plain(value)


def _plain(value: Any) -> Any:
    """Tuples become lists (JSON has no tuples); containers recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse_python_calls(text: str, where: str = "calls") -> list[ToolCall]:
    """`[f(a=1), g.h(b="x")]`, or one bare call `f(a=1)`; an empty list means no call."""
    source = text.strip()
    if source.startswith("```"):
        source = source.strip("`").removeprefix("python").strip()
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise InvalidInput(where, f"not a Python call list: {exc.msg}") from exc
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    calls = []
    for i, node in enumerate(nodes):
        name = _dotted(node.func) if isinstance(node, ast.Call) else None
        if name is None:
            raise InvalidInput(f"{where}[{i}]", "expected name(keyword=value, ...)")
        if node.args or any(k.arg is None for k in node.keywords):
            raise InvalidInput(f"{where}[{i}]", f"{name}: only keyword arguments are allowed")
        arguments = {k.arg: _literal(k.value, f"{where}[{i}].{k.arg}") for k in node.keywords}
        calls.append(ToolCall(name, arguments))
    return calls


def render_python_calls(calls: list[ToolCall]) -> str:
    """The bracket-Python form; parse_python_calls(render_python_calls(c)) == c."""
    parts = [f"{c.name}({', '.join(f'{k}={v!r}' for k, v in c.arguments.items())})" for c in calls]
    return f"[{', '.join(parts)}]"


def from_bfcl(rows: Any, where: str = "calls") -> list[ToolCall]:
    """BFCL's decoded form: a list of single-key objects {name: {argument: value}}."""
    if not isinstance(rows, list):
        raise InvalidInput(where, "must be a list of {name: arguments} objects")
    calls = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or len(row) != 1:
            raise InvalidInput(f"{where}[{i}]", "must be one {name: arguments} object")
        ((name, arguments),) = row.items()
        if not isinstance(arguments, dict):
            raise InvalidInput(f"{where}[{i}].{name}", "arguments must be an object")
        calls.append(ToolCall(name, _plain(arguments)))
    return calls
