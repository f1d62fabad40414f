"""Tool definitions: import from OpenAI tools JSON and BFCL function docs, and the rule-layer
checks of an API definition (ToolACE's API checks, APIGen's format checks).

A Tool keeps its parameters as written (BFCL type names allowed); `json_schema` maps them to
standard JSON Schema (dict -> object, float -> number, tuple -> array, any -> no
constraint) for validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from services.common.errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array"}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    returns: dict[str, Any] | None = None  # JSON Schema of the result, when known

    def to_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": self.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.returns is not None:
            out["returns"] = self.returns
        return out


def json_schema(schema: Any) -> Any:
    """BFCL type names -> JSON Schema, recursively; `optional` and `default` hints dropped."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            if value == "any":
                continue
            out[key] = _BFCL_TYPES.get(value, value)
        elif key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {k: json_schema(v) for k, v in value.items()}
        elif key == "optional":
            continue
        else:
            out[key] = json_schema(value)
    return out


def tool_from_dict(data: Any, where: str = "tools") -> Tool:
    """An OpenAI tool ({"type": "function", "function": {...}}), a bare function object, or
    a BFCL function doc."""
    if not isinstance(data, dict):
        raise InvalidInput(where, "must be an object")
    function = data.get("function", data) if data.get("type") == "function" else data
    name, description = function.get("name"), function.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise InvalidInput(where, "needs a string name and description")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    returns = function.get("returns") or function.get("response")
    return Tool(name, description, parameters, returns)


def load_tools(data: Any, where: str = "tools") -> list[Tool]:
    if not isinstance(data, list) or not data:
        raise InvalidInput(where, "must be a non-empty JSON list of tools")
    tools = [tool_from_dict(t, f"{where}[{i}]") for i, t in enumerate(data)]
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidInput(where, "tool names must be unique")
    return tools


def check_tool(tool: Tool) -> list[str]:
    """Error codes of one API definition (empty: valid)."""
    errors = []
    if not _NAME.match(tool.name):
        errors.append("api:bad_name")
    if not tool.description.strip():
        errors.append("api:no_description")
    schema = json_schema(tool.parameters)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        errors.append("api:invalid_schema")
        return errors
    if schema.get("type") != "object":
        errors.append("api:parameters_not_object")
    properties = schema.get("properties", {})
    if any(r not in properties for r in schema.get("required", [])):
        errors.append("api:required_not_defined")
    if any(not (p.get("description") or "").strip() for p in properties.values()):
        errors.append("api:parameter_without_description")
    if tool.returns is not None:
        try:
            Draft202012Validator.check_schema(json_schema(tool.returns))
        except SchemaError:
            errors.append("api:invalid_return_schema")
    return errors
