"""ToolACE's tool self-evolution synthesis (TSS, Sec. 2.1): an API pool built by the LLM.

1. Speciation: an API context tree. The LLM names `domains` domains, then for each domain
   `capabilities` capabilities (the tree's leaves: domain -> capability).
2. Adaptation: each new API gets a sampled subtree, a domain and `subtree` of its
   capabilities, drawn so that no two APIs get the same subtree while unused ones remain.
3. Evolution: the LLM writes a new API for the subtree, adapting an example drawn from the
   example buffer under a diversity operator (add parameters, add constraints, mutate a
   parameter's type, change the return schema, use nested types). APIs that pass the rule
   checks (services.toolsynth.core.tools.check_tool) and have a new name join the pool and
   the buffer (a full buffer replaces a random slot), so later generations build on them.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput
from services.llm.base import Backend, SamplingParams
from services.toolsynth.core.agents import derive_seed
from services.toolsynth.core.plans import embedded_json
from services.toolsynth.core.tools import Tool, check_tool, tool_from_dict

OPERATORS = {
    "add_parameters": "add new functionality or parameters beyond the example's",
    "add_constraints": "add constraints to parameters (enum, minimum/maximum, format, pattern)",
    "mutate_types": "use different parameter types than the example (integer, number, "
    "boolean, array, object)",
    "change_returns": "return a differently structured result than the example",
    "nested_types": "use nested types: an array of objects or an object with sub-fields",
}

SEED_APIS = (
    Tool(
        "get_weather_forecast",
        "Get the daily weather forecast for a city.",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Lisbon"},
                "days": {"type": "integer", "description": "Days ahead", "minimum": 1},
                "units": {
                    "type": "string",
                    "enum": ["metric", "imperial"],
                    "description": "Unit system",
                },
            },
            "required": ["city"],
        },
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City of the forecast"},
                "days": {
                    "type": "array",
                    "description": "One entry per day",
                    "items": {
                        "type": "object",
                        "properties": {
                            "date": {"type": "string", "format": "date"},
                            "high": {"type": "number"},
                            "low": {"type": "number"},
                        },
                    },
                },
            },
            "required": ["city", "days"],
        },
    ),
)


@dataclass(frozen=True)
class PoolConfig:
    domains: int = 4
    capabilities: int = 5  # per domain
    apis: int = 16  # APIs to evolve
    subtree: int = 2  # capabilities per API
    buffer: int = 8
    batch: int = 8  # APIs asked for per LLM batch
    operators: tuple[str, ...] = tuple(OPERATORS)
    temperature: float = 0.7
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if not 1 <= self.domains <= 64 or not 1 <= self.capabilities <= 64:
            raise ValueError("domains and capabilities must be in 1..64")
        if not 1 <= self.apis <= 5000 or not 1 <= self.batch <= 256:
            raise ValueError("apis must be in 1..5000 and batch in 1..256")
        if not 1 <= self.subtree <= self.capabilities:
            raise ValueError("subtree must be in 1..capabilities")
        if self.buffer < 1:
            raise ValueError("buffer must be >= 1")
        if not self.operators or any(o not in OPERATORS for o in self.operators):
            raise ValueError(f"operators must be among {', '.join(OPERATORS)}")


@dataclass
class ContextTree:
    domains: dict[str, list[str]] = field(default_factory=dict)

    def subtrees(self, size: int) -> list[tuple[str, tuple[str, ...]]]:
        return [
            (domain, combo)
            for domain, caps in self.domains.items()
            for combo in itertools.combinations(caps, min(size, len(caps)))
        ]


def _names(text: str, limit: int) -> list[str]:
    value = embedded_json(text, "[")
    if not isinstance(value, list):
        return []
    names = [v.strip() for v in value if isinstance(v, str) and v.strip()]
    return list(dict.fromkeys(names))[:limit]


def speciation(backend: Backend, config: PoolConfig, seed: int) -> ContextTree:
    """The context tree: 1 call for the domains, then one batched call for the capabilities."""
    params = SamplingParams(config.max_tokens, config.temperature, seed=derive_seed(seed, "tree"))
    (reply,) = backend.generate(
        [
            f"List {config.domains} distinct application domains in which software APIs are "
            "used (e.g. travel, finance). Answer with a JSON list of short names only."
        ],
        params,
    )
    domains = _names(reply.text, config.domains)
    if not domains:
        raise InvalidInput("pool", "the model did not answer a JSON list of domains")
    replies = backend.generate(
        [
            f"List {config.capabilities} distinct capabilities an API in the domain "
            f"'{d}' could offer (e.g. 'search flights by date'). Answer with a JSON list of "
            "short phrases only."
            for d in domains
        ],
        params,
    )
    tree = ContextTree(
        {d: _names(r.text, config.capabilities) for d, r in zip(domains, replies, strict=True)}
    )
    tree.domains = {d: caps for d, caps in tree.domains.items() if caps}
    if not tree.domains:
        raise InvalidInput("pool", "the model did not answer JSON lists of capabilities")
    return tree


def evolution_prompt(domain: str, capabilities: Sequence[str], example: Tool, operator: str) -> str:
    return (
        "Design a new API.\n"
        f"Domain: {domain}\nCapabilities it must offer: {'; '.join(capabilities)}\n"
        f"Diversity requirement: {OPERATORS[operator]}.\n"
        f"Example API (same JSON format, different purpose):\n{json.dumps(example.to_dict())}\n"
        "Write the new API as one JSON object with name (snake_case), description, parameters "
        "(a JSON Schema object; every property has a type and a description; list the "
        "required ones) and returns (a JSON Schema of the result). Answer with the JSON only."
    )


def evolve(
    backend: Backend,
    tree: ContextTree,
    examples: Sequence[Tool],
    config: PoolConfig,
    seed: int,
) -> tuple[list[Tool], dict[str, Any]]:
    """The evolved APIs (in order of acceptance) and counts: asked, accepted, rejected by
    code (api:unparseable, api:duplicate_name, and check_tool's api:* codes)."""
    rng = random.Random(derive_seed(seed, "evolve"))
    buffer = list(examples or SEED_APIS)[: config.buffer]
    subtrees = tree.subtrees(config.subtree)
    rng.shuffle(subtrees)
    names = {t.name for t in examples}
    pool: list[Tool] = []
    rejected: Counter[str] = Counter()
    asked = 0
    for round_index in itertools.count():
        if len(pool) >= config.apis or asked >= 3 * config.apis:
            break
        jobs = []
        for _ in range(min(config.batch, config.apis - len(pool))):
            domain, caps = subtrees[asked % len(subtrees)]
            example, operator = rng.choice(buffer), rng.choice(config.operators)
            jobs.append(evolution_prompt(domain, caps, example, operator))
            asked += 1
        params = SamplingParams(
            config.max_tokens, config.temperature, seed=derive_seed(seed, "evolve", round_index)
        )
        for reply in backend.generate(jobs, params):
            raw = embedded_json(reply.text, "{")
            try:
                tool = tool_from_dict(raw) if isinstance(raw, dict) else None
            except InvalidInput:
                tool = None
            if tool is None:
                rejected["api:unparseable"] += 1
                continue
            errors = check_tool(tool) or (["api:duplicate_name"] if tool.name in names else [])
            if errors:
                rejected.update(errors)
                continue
            names.add(tool.name)
            pool.append(tool)
            if len(buffer) < config.buffer:
                buffer.append(tool)
            else:
                buffer[rng.randrange(config.buffer)] = tool
    stats = {
        "domains": len(tree.domains),
        "capabilities": sum(len(c) for c in tree.domains.values()),
        "asked": asked,
        "accepted": len(pool),
        "rejected": dict(sorted(rejected.items())),
    }
    return pool[: config.apis], stats
