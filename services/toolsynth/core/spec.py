"""A synthesis request as plain data, validated once (the servicer at submit time, the task
again on the worker) into the method configs; transport-free."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from services.common.configs import config_from_dict
from services.common.errors import InvalidInput
from services.toolsynth.core.agents import AgentConfig
from services.toolsynth.core.api_pool import PoolConfig
from services.toolsynth.core.complexity import ComplexityConfig
from services.toolsynth.core.dialogs import DIALOG_TYPES
from services.toolsynth.core.formats import FORMATS
from services.toolsynth.core.synthesis import SynthesisConfig
from services.toolsynth.core.tools import Tool, load_tools

BACKENDS = ("remote", "openai", "vllm", "hf")
SECTIONS = {"agents": AgentConfig, "pool": PoolConfig, "complexity": ComplexityConfig}


@dataclass(frozen=True)
class SynthesisSpec:
    count: int
    seed: int = 0
    dialog_mix: dict[str, float] = field(default_factory=dict)
    model: str = ""
    backend: str = "remote"
    export_format: str = "openai"
    has_tools: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def mix(self) -> dict[str, float]:
        return self.dialog_mix or {t: 1.0 for t in DIALOG_TYPES}

    @cached_property
    def configs(self) -> tuple[SynthesisConfig, AgentConfig, PoolConfig, ComplexityConfig]:
        """The method configs, parsed (and type-checked) once."""
        sections = {}
        for name, cls in SECTIONS.items():
            values = self.parameters.get(name, {})
            if not isinstance(values, dict):
                raise InvalidInput(f"parameters.{name}", "must be an object")
            sections[name] = config_from_dict(cls, values, f"parameters.{name}")
        rest = {k: v for k, v in self.parameters.items() if k not in SECTIONS}
        synthesis = config_from_dict(
            SynthesisConfig, rest, "parameters", fixed={"count": self.count, "seed": self.seed}
        )
        return synthesis, sections["agents"], sections["pool"], sections["complexity"]

    def needs_model(self) -> bool:
        synthesis, agents, _, complexity = self.configs
        return (
            agents.agents == "llm"
            or not self.has_tools
            or synthesis.model_checks
            or complexity.measure == "model"
        )

    def validate(self) -> SynthesisSpec:
        if not 1 <= self.count <= 100_000:
            raise InvalidInput("count", "must be in 1..100000")
        for name, share in self.dialog_mix.items():
            if name not in DIALOG_TYPES:
                raise InvalidInput(f"dialog_mix.{name}", f"must be one of {DIALOG_TYPES}")
            if not 0 <= share < math.inf:  # NaN fails too
                raise InvalidInput(f"dialog_mix.{name}", "must be a finite number >= 0")
        if self.dialog_mix and sum(self.dialog_mix.values()) <= 0:
            raise InvalidInput("dialog_mix", "the shares must not all be 0")
        if self.backend not in BACKENDS:
            raise InvalidInput("backend", f"must be one of {', '.join(BACKENDS)}")
        if self.export_format not in FORMATS:
            raise InvalidInput("export_format", f"must be one of {', '.join(FORMATS)}")
        _, agents, _, _ = self.configs
        if agents.agents == "template" and not self.has_tools:
            raise InvalidInput(
                "tools", "template agents need a tool source (no model to evolve one)"
            )
        if self.needs_model() and not self.model:
            raise InvalidInput(
                "model",
                "required: LLM agents, an evolved API pool, model checks and model complexity "
                "call a model",
            )
        return self


def parse_tools(data: bytes, where: str = "tools") -> list[Tool]:
    """A JSON list of tools, or JSON Lines with one tool (or one list of tools) per line."""
    text = data.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{where}:{i + 1}", f"not JSON: {exc.msg}") from exc
            value += row if isinstance(row, list) else [row]
    return load_tools(value if isinstance(value, list) else [value], where)
