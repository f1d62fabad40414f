"""Executable mock tools: values sampled from a JSON Schema, seeded, so that a tool's answer
to the same arguments is always the same and always valid against its return schema (the
alternative to an LLM tool agent)."""

from __future__ import annotations

import hashlib
import json
import random
import string
from typing import Any

from services.toolsynth.core.tools import Tool, json_schema

_WORDS = ("alpha", "delta", "harbor", "maple", "orbit", "quartz", "river", "summit", "tango")
DEFAULT_RETURNS = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
    "required": ["status"],
}


def sample(schema: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A value valid for schema (type, enum, const, required/optional properties, min/max,
    minItems/maxItems, minLength/maxLength, formats date, date-time, email, uri)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample(schema[key][0], rng, depth)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return {
            name: sample(sub, rng, depth + 1)
            for name, sub in properties.items()
            if name in required or (depth < 3 and rng.random() < 0.5)
        }
    if kind == "array":
        low = schema.get("minItems", 1)
        high = max(low, min(schema.get("maxItems", 3), low + 3))
        items = schema.get("items", {"type": "string"})
        return [sample(items, rng, depth + 1) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum", 100)
        return rng.randint(int(low), int(high))
    if kind == "number":
        low, high = schema.get("minimum", 0.0), schema.get("maximum", 100.0)
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt in ("date", "date-time"):
        day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        return day if fmt == "date" else f"{day}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "email":
        return f"{rng.choice(_WORDS)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(_WORDS)}"
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    while len(text) < low:
        text += rng.choice(string.ascii_lowercase)
    return text[:high] if high is not None else text


class MockTool:
    """Answers calls of one tool: the result is sampled from its return schema with a seed
    derived from (seed, tool name, arguments)."""

    def __init__(self, tool: Tool, seed: int = 0) -> None:
        self.tool = tool
        self.seed = seed
        self.returns = json_schema(tool.returns) if tool.returns else DEFAULT_RETURNS

    def __call__(self, arguments: dict[str, Any]) -> Any:
        key = json.dumps([self.seed, self.tool.name, arguments], sort_keys=True)
        rng = random.Random(hashlib.sha256(key.encode()).hexdigest())
        return sample(self.returns, rng)
