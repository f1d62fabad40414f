"""Synthesis: ToolFlow plans, ToolACE agents (k-sample agreement, lockstep batching), the API
pool's self-evolution, complexity, the model layer, and the whole pipeline's determinism."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
import torch

from services.common.errors import InvalidInput
from services.llm.base import SamplingParams
from services.llm.cache import CachingBackend, MemoryStore, ResponseCache
from services.llm.scripted import ScriptedBackend
from services.toolsynth.core.agents import AgentConfig, Rejected, agreed, parse_action
from services.toolsynth.core.api_pool import ContextTree, PoolConfig, evolve, speciation
from services.toolsynth.core.calls import ToolCall
from services.toolsynth.core.complexity import model_complexity, proxy_complexity
from services.toolsynth.core.dialogs import Dialog, Turn
from services.toolsynth.core.formats import from_openai, to_openai
from services.toolsynth.core.model_checks import model_errors
from services.toolsynth.core.plans import dependent_pair, parse_plan, template_plan
from services.toolsynth.core.rules import dialog_errors, observed_type
from services.toolsynth.core.spec import SynthesisSpec, parse_tools
from services.toolsynth.core.synthesis import SynthesisConfig, quotas, slot_types, synthesize
from tests.toolsynth_fixtures import ALL_TYPES, TOOLS, Player


@pytest.fixture(scope="module")
def embed():
    from services.common.embeddings import default_encoder

    return default_encoder().encode


def test_quotas_are_largest_remainder() -> None:
    assert quotas({"single": 0.5, "parallel": 0.25, "non_tool": 0.25}, 7) == {
        "single": 3,
        "parallel": 2,
        "non_tool": 2,
    }
    # equal remainders go to the types in DIALOG_TYPES order
    assert quotas({"dependent": 1, "single": 1, "parallel": 1}, 10) == {
        "dependent": 3,
        "single": 4,
        "parallel": 3,
    }
    types = slot_types(ALL_TYPES, 8, seed=3)
    assert sorted(types) == sorted(["single", "parallel", "dependent", "non_tool"] * 2)
    assert types == slot_types(ALL_TYPES, 8, seed=3) != slot_types(ALL_TYPES, 8, seed=4)


def test_parse_plan_accepts_a_plan_and_names_each_failure() -> None:
    good = json.dumps(
        [
            {"kind": "chitchat", "requirement": "hi"},
            {"kind": "tool", "tools": ["get_weather"], "requirement": "weather in Faro"},
        ]
    )
    plan = parse_plan(f"Sure!\n{good}", TOOLS, "single", 4)
    assert [(i.kind, i.tools) for i in plan.items] == [("chitchat", ()), ("tool", ("get_weather",))]
    assert parse_plan("no list here", TOOLS, "single", 4) == "plan:unparseable"
    assert parse_plan(good, TOOLS, "single", 1) == "plan:unparseable"  # more turns than allowed
    unknown = '[{"kind": "tool", "tools": ["fly"], "requirement": "fly"}]'
    assert parse_plan(unknown, TOOLS, "single", 4) == "plan:unknown_tool"
    assert parse_plan(good, TOOLS, "non_tool", 4) == "plan:type"
    chat = '[{"kind": "chitchat", "requirement": "hi"}]'
    assert parse_plan(chat, TOOLS, "single", 4) == "plan:type"


def test_dependent_pair_joins_a_result_field_to_a_parameter() -> None:
    first, second, field, param = dependent_pair(TOOLS)
    assert (first.name, second.name, field, param) == (
        "find_restaurant",
        "book_table",
        "restaurant_id",
        "restaurant_id",
    )
    assert dependent_pair([TOOLS[2]]) is None
    assert template_plan([TOOLS[2]], "dependent", random.Random(0)) == "plan:infeasible"


def test_k_samples_must_agree() -> None:
    a = parse_action('[book_table(restaurant_id="r1", guests=2), get_weather(city="Faro")]')
    b = parse_action('[get_weather(city="Faro"), book_table(guests=2, restaurant_id="r1")]')
    assert [c.name for c in a] == ["book_table", "get_weather"]
    assert agreed([a, b]) == a  # the same calls in another order agree
    assert agreed(["Hello!", "Hi there."]) == "Hello!"  # text answers agree on the action
    with pytest.raises(Rejected) as info:
        agreed([a, parse_action('[get_weather(city="Lisbon")]')])
    assert info.value.code == "assistant:disagreement"
    with pytest.raises(Rejected):
        agreed([a, "I cannot do that."])
    assert parse_action("[not python(") == "[not python("


def test_llm_agents_in_lockstep_with_cache_and_checks(embed) -> None:
    mix = {"single": 2.0, "parallel": 1.0, "non_tool": 1.0}
    config = SynthesisConfig(count=8, seed=5, model_checks=True, dedup_threshold=1.0)
    agents = AgentConfig(agreement_k=3, temperature=0.7)
    store = MemoryStore()

    def run() -> tuple[list[Dialog], dict, CachingBackend]:
        backend = CachingBackend(ScriptedBackend(responder=Player()), ResponseCache(store))
        result = synthesize(mix, config, agents, embed, backend, TOOLS)
        return result.dialogs, result.stats, backend

    dialogs, stats, backend = run()
    assert len(dialogs) == 8
    # a round shares its sampling seeds (so requests batch): two slots with the same tool walk
    # and type get the same plan, and the duplicate's slot is tried again in round 2
    assert stats["rules"] == {"passed": 9, "failed": 0, "errors": {}}
    assert stats["model"] == {"passed": 9, "failed": 0, "errors": {}}
    assert stats["selection"]["exact_duplicate"] == 1
    assert {d: m["achieved"] for d, m in stats["quality"]["mix"].items()} == {
        "single": 0.5,
        "parallel": 0.25,
        "non_tool": 0.25,
    }
    for d in dialogs:
        assert not dialog_errors(d) and observed_type(d) == d.dialog_type
    totals = {s: v["calls"] + v["cached_calls"] for s, v in backend.usage.by_stage.items()}
    # 9 dialogs, 7 with tools: a tool dialog has 2 user turns and 3 assistant actions (the
    # greeting, the call(s), the final text), a chit-chat one 1 and 1; k = 3 samples per
    # action; 9 tool calls (5 single, 2 parallel x 2); checks: 7 call turns + 9 tool turns + 9
    # dialogs
    assert totals == {"plan": 9, "user": 16, "assistant": 3 * 23, "tool": 9, "verify": 25}
    parallel = next(d for d in dialogs if d.dialog_type == "parallel")
    assert [len(t.calls) for t in parallel.turns if t.calls] == [2]
    assert [t.call_id for t in parallel.turns if t.role == "tool"] == ["call_0", "call_1"]

    rows = [json.dumps(to_openai(d)) for d in dialogs]
    again, _, cached = run()  # same seed, cached responses: no backend call, same bytes
    assert cached.usage.calls == 0 and cached.usage.cached_calls > 0
    assert [json.dumps(to_openai(d)) for d in again] == rows
    assert [from_openai(json.loads(r)).turns for r in rows] == [d.turns for d in dialogs]


def test_template_agents_make_every_type_without_a_model(embed) -> None:
    config = SynthesisConfig(count=12, seed=1)
    agents = AgentConfig(agents="template")
    result = synthesize(ALL_TYPES, config, agents, embed, None, TOOLS)
    assert len(result.dialogs) == 12
    assert result.stats["rules"]["failed"] == 0
    assert {d.dialog_type for d in result.dialogs} == set(ALL_TYPES)
    for d in result.dialogs:
        assert observed_type(d) == d.dialog_type
    for d in (d for d in result.dialogs if d.dialog_type == "dependent"):
        (_, _, first), (_, _, second) = d.calls()
        found = json.loads(next(t.content for t in d.turns if t.role == "tool"))
        assert (first.name, second.name) == ("find_restaurant", "book_table")
        assert second.arguments["restaurant_id"] == found["restaurant_id"]
    same = synthesize(ALL_TYPES, config, agents, embed, None, TOOLS)
    assert [d.to_dict() for d in same.dialogs] == [d.to_dict() for d in result.dialogs]
    other = synthesize(ALL_TYPES, SynthesisConfig(count=12, seed=2), agents, embed, None, TOOLS)
    assert [d.to_dict() for d in other.dialogs] != [d.to_dict() for d in result.dialogs]


def test_failed_dialogs_are_retried_and_reported(embed) -> None:
    """Tools of one kind cannot make a dependent dialog: every attempt is rejected."""
    config = SynthesisConfig(count=2, seed=0, max_attempts=3)
    agents = AgentConfig(agents="template")
    result = synthesize({"dependent": 1.0}, config, agents, embed, None, [TOOLS[2]])
    assert result.dialogs == []
    assert result.stats["generation"] == {
        "passed": 0,
        "failed": 6,
        "errors": {"plan:infeasible": 6},
    }
    assert sorted((r["slot"], r["attempt"]) for r in result.rejected) == [
        (s, a) for s in range(2) for a in range(3)
    ]


def test_complexity_model_loss_and_proxy() -> None:
    call = ToolCall("get_weather", {"city": "Faro"})
    dialog = Dialog(
        TOOLS,
        [
            Turn("user", "weather in Faro?"),
            Turn("assistant", calls=(call,), call_ids=("call_0",)),
            Turn("tool", '{"temperature": 20}', call_id="call_0", name="get_weather"),
            Turn("assistant", "It is 20 degrees."),
        ],
    )
    # the scripted backend's score is a uniform byte model: NLL = ln 256 per token
    (loss,) = model_complexity([dialog], ScriptedBackend())
    assert loss == pytest.approx(math.log(256))

    vectors = {
        "weather in Faro?": [1.0, 0.0],
        "get_weather: Get the weather in a city.": [0.6, 0.8],
    }

    def fake_embed(texts):
        return torch.tensor([vectors[t] for t in texts])

    # 3 candidates + 1 tool used + (1 - 0.6) dissimilarity, with weights 1, 2, 10
    (proxy,) = proxy_complexity([dialog], fake_embed, (1.0, 2.0, 10.0))
    assert proxy == pytest.approx(3 + 2 + 4.0)
    chat = Dialog(TOOLS, [Turn("user", "hi"), Turn("assistant", "hello")], "non_tool")
    assert proxy_complexity([chat], fake_embed) == [3.0]


def test_model_layer_codes() -> None:
    call = ToolCall("book_table", {"restaurant_id": "r9", "guests": 2})
    dialog = Dialog(
        TOOLS,
        [
            Turn("user", "book for 2"),
            Turn("assistant", calls=(call,), call_ids=("call_0",)),
            Turn("tool", '{"confirmation": "x"}', call_id="call_0", name="book_table"),
            Turn("assistant", "Booked."),
        ],
    )
    backend = ScriptedBackend(
        rules=[
            ("hallucinated", 'Verdict: {"grounded": false}'),
            ("tool's response", "it looks fine"),
            ("did what the user asked", '{"fulfilled": true}'),
        ]
    )
    assert model_errors([dialog], backend, check_responses=True) == [
        ["model:ungrounded_argument", "model:unparseable"]
    ]
    assert model_errors([dialog], backend, check_responses=False) == [["model:ungrounded_argument"]]


def test_api_pool_evolution() -> None:
    def responder(text: str) -> str:
        if "application domains" in text:
            return '["travel", "finance"]'
        if "capabilities an API" in text:
            domain = re.search(r"domain '(\w+)'", text).group(1)
            return json.dumps([f"{domain} search", f"{domain} booking", f"{domain} alerts"])
        caps = re.search(r"Capabilities it must offer: (.*)\n", text).group(1)
        if "alerts" in caps and "booking" in caps:
            return "I would rather not."  # unparseable
        name = re.sub(r"\W+", "_", caps.lower())
        return json.dumps(
            {
                "name": name if "travel" in caps else "get_weather_forecast",
                "description": f"Offers {caps}.",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string", "description": "What"}},
                    "required": ["query"],
                },
            }
        )

    backend = ScriptedBackend(responder=responder)
    config = PoolConfig(domains=2, capabilities=3, apis=6, subtree=2, batch=3)
    tree = speciation(backend, config, seed=0)
    assert tree.domains == {
        "travel": ["travel search", "travel booking", "travel alerts"],
        "finance": ["finance search", "finance booking", "finance alerts"],
    }
    assert len(tree.subtrees(2)) == 6
    pool, stats = evolve(backend, tree, [], config, seed=0)
    # 6 subtrees: the 2 travel ones without alerts+booking are new APIs; each finance reply
    # reuses one name (the first joins the pool); the 2 alerts+booking replies are unparseable
    assert sorted(t.name for t in pool) == sorted(
        ["get_weather_forecast", "travel_search_travel_booking", "travel_search_travel_alerts"]
    )
    assert stats["asked"] == 18 and stats["accepted"] == 3
    assert stats["rejected"] == {"api:duplicate_name": 9, "api:unparseable": 6}
    assert ContextTree({"a": ["x"]}).subtrees(2) == [("a", ("x",))]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"count": 0}, "count"),
        ({"dialog_mix": {"nested": 1.0}}, "dialog_mix.nested"),
        ({"dialog_mix": {"single": 0.0}}, "dialog_mix"),
        ({"backend": "magic"}, "backend"),
        ({"export_format": "xml"}, "export_format"),
        ({"model": ""}, "model"),
        ({"has_tools": False, "parameters": {"agents": {"agents": "template"}}}, "tools"),
        ({"parameters": {"agents": {"agreement_k": 0}}}, "parameters.agents"),
        ({"parameters": {"agents": {"k": 3}}}, "parameters.agents.k"),
        ({"parameters": {"tau": "high"}}, "parameters.tau"),
    ],
)
def test_spec_errors_name_the_field(changes, field) -> None:
    base = {"count": 4, "model": "m", "has_tools": True, **changes}
    with pytest.raises(InvalidInput) as info:
        SynthesisSpec(**base).validate()
    assert info.value.field == field


def test_template_spec_needs_no_model_and_tools_parse_from_jsonl() -> None:
    spec = SynthesisSpec(count=2, has_tools=True, parameters={"agents": {"agents": "template"}})
    assert spec.validate().needs_model() is False
    lines = "\n".join(json.dumps(t.to_openai()) for t in TOOLS).encode()
    assert parse_tools(lines) == TOOLS
    assert parse_tools(json.dumps([t.to_dict() for t in TOOLS]).encode()) == TOOLS
    with pytest.raises(InvalidInput):
        parse_tools(b"[]")


def test_sampling_is_seeded_per_sample() -> None:
    from services.toolsynth.core.agents import LLMAgents

    agents = LLMAgents(TOOLS, AgentConfig(agreement_k=3), seed=7)
    seeds = {agents._params(j).seed for j in range(3)}
    assert len(seeds) == 3 and agents._params(0) == agents._params(0)
    assert agents._params(temperature=0.0) == SamplingParams(256, 0.0)
