"""ToolACE's self-guided dialog generation (Sec. 2.2): a user agent, an assistant agent and a
tool agent write a dialog over a sampled tool set, following a ToolFlow dialogue plan
(services.toolsynth.core.plans), one plan item per user turn, until the plan is done.

- The assistant answers in ToolACE's format: a bracket-Python call list
  `[f(a=1), g(b="x")]` (several calls = parallel) or plain text. It is sampled k times
  (seeds seed_0..seed_{k-1} at the configured temperature); the action is kept only when all
  k samples agree (same calls, order-insensitive, or all text), otherwise the dialog is
  rejected with `assistant:disagreement`.
- After calls, the tool agent answers each call (an LLM simulating the API from its
  definition, or an executable MockTool), and the assistant acts again, up to `max_steps`
  actions per user turn; a turn ends with a text answer.
- A conversation is a generator: it yields the LLM requests it needs (a list of Request) and
  receives their texts, so that `drive` can run many dialogs in lockstep and send every
  pending request of a stage in one batch. Template agents (no model) never yield.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidInput
from services.llm.base import Prompt, SamplingParams
from services.toolsynth.core.calls import ToolCall, parse_python_calls, render_python_calls
from services.toolsynth.core.dialogs import Dialog, Turn, canonical_ids, result_text
from services.toolsynth.core.mock_tools import MockTool, sample
from services.toolsynth.core.plans import (
    DialogPlan,
    PlanItem,
    dependent_pair,
    parse_plan,
    plan_prompt,
    template_plan,
    tools_block,
)
from services.toolsynth.core.tools import Tool, json_schema


@dataclass(frozen=True)
class Request:
    stage: str  # plan | user | assistant | tool (usage is counted per stage)
    prompt: Prompt
    params: SamplingParams


Conversation = Generator[list[Request], list[str], Dialog]


class Rejected(Exception):
    """A dialog given up during generation; code names the reason (e.g. plan:unparseable)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class AgentConfig:
    agents: str = "llm"  # llm | template (no model: plans, requests and calls from templates)
    tool_agent: str = "auto"  # llm | mock (executable, from the return schema) | auto: llm
    # for LLM agents, mock for template agents
    agreement_k: int = 3
    temperature: float = 0.7
    max_tokens: int = 256
    max_turns: int = 4  # user turns of a plan
    max_steps: int = 3  # assistant actions per user turn, the last one must be text

    @property
    def llm_tools(self) -> bool:
        return self.tool_agent == "llm" or (self.tool_agent == "auto" and self.agents == "llm")

    def __post_init__(self) -> None:
        if self.agents not in ("llm", "template"):
            raise ValueError("agents must be llm or template")
        if self.tool_agent not in ("auto", "llm", "mock"):
            raise ValueError("tool_agent must be auto, llm or mock")
        if self.agents == "template" and self.tool_agent == "llm":
            raise ValueError("template agents use mock tools (tool_agent auto or mock)")
        if not 1 <= self.agreement_k <= 16:
            raise ValueError("agreement_k must be in 1..16")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be in 0..2")
        if not 16 <= self.max_tokens <= 4096:
            raise ValueError("max_tokens must be in 16..4096")
        if not 1 <= self.max_turns <= 16 or not 2 <= self.max_steps <= 8:
            raise ValueError("max_turns must be in 1..16 and max_steps in 2..8")


def derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


ASSISTANT_SYSTEM = (
    "You are an assistant that can call functions. Given the conversation and the functions "
    "below, make the function calls that achieve what the user asks. To call functions, "
    "reply with nothing but a list in the format [func_name1(param1=value1, param2=value2), "
    "func_name2(param=value)], with every required parameter; calls that do not depend on "
    "each other go in the same list. When no call is needed, or the results are in, reply "
    "to the user in plain text.\n"
    "Functions (JSON):\n{tools}"
)


def user_prompt(item: PlanItem, history: list[Turn]) -> str:
    lines = "\n".join(f"{t.role}: {_shown(t)}" for t in history if t.role != "tool") or "(none)"
    return (
        "You are the user in a conversation with an AI assistant.\n"
        f"Conversation so far:\n{lines}\n\n"
        f"What you want in this turn: {item.requirement}\n"
        "Write your next message only: natural, with the concrete values the assistant "
        "needs, never naming functions."
    )


def tool_prompt(tool: Tool, call: ToolCall) -> str:
    return (
        f"You simulate the API below. Definition:\n{json.dumps(tool.to_dict(), indent=1)}\n\n"
        f"Arguments of this call: {json.dumps(call.arguments, sort_keys=True)}\n"
        "Reply with the API's result only, as JSON that follows its return schema, with "
        "realistic values."
    )


def _shown(turn: Turn) -> str:
    return render_python_calls(list(turn.calls)) if turn.calls else turn.content


def assistant_messages(tools: list[Tool], history: list[Turn]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": ASSISTANT_SYSTEM.format(tools=tools_block(tools))}]
    return messages + [{"role": t.role, "content": _shown(t)} for t in history]


def parse_action(text: str) -> list[ToolCall] | str:
    """Calls, if the reply is a bracket-Python call list; else the text itself."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            return parse_python_calls(stripped)
        except InvalidInput:
            return stripped
    return stripped


def action_key(action: list[ToolCall] | str) -> tuple[str, ...]:
    if isinstance(action, str):
        return ("text",)
    return tuple(sorted(json.dumps([c.name, c.arguments], sort_keys=True) for c in action))


def agreed(actions: Sequence[list[ToolCall] | str]) -> list[ToolCall] | str:
    """The action all samples agree on (the first sample's form); Rejected otherwise."""
    if len({action_key(a) for a in actions}) != 1:
        raise Rejected("assistant:disagreement")
    return actions[0]


def _parse_result(text: str) -> Any:
    try:
        return json.loads(text.strip())
    except json.JSONDecodeError as exc:
        raise Rejected("tool:invalid_json") from exc


class LLMAgents:
    """The three agents as LLM prompts (the tool agent can be mock tools instead). Sampling
    seeds derive from sampling_seed, which a synthesis round shares across its dialogs so
    that their requests batch together (the prompts differ, so the samples do too)."""

    def __init__(
        self, tools: list[Tool], config: AgentConfig, seed: int, sampling_seed: int = 0
    ) -> None:
        self.tools = tools
        self.by_name = {t.name: t for t in tools}
        self.config = config
        self.seed = seed
        self.sampling_seed = sampling_seed

    def _params(self, sample_index: int = 0, temperature: float | None = None) -> SamplingParams:
        temperature = self.config.temperature if temperature is None else temperature
        seed = derive_seed(self.sampling_seed, sample_index) if temperature > 0 else None
        return SamplingParams(self.config.max_tokens, temperature, seed=seed)

    def plan(self, dialog_type: str) -> Generator[list[Request], list[str], DialogPlan]:
        prompt = plan_prompt(self.tools, dialog_type, self.config.max_turns)
        (text,) = yield [Request("plan", prompt, self._params())]
        plan = parse_plan(text, self.tools, dialog_type, self.config.max_turns)
        if isinstance(plan, str):
            raise Rejected(plan)
        return plan

    def user(self, item: PlanItem, history: list[Turn]) -> Generator[list[Request], list[str], str]:
        (text,) = yield [Request("user", user_prompt(item, history), self._params())]
        if not text.strip():
            raise Rejected("user:empty")
        return text.strip()

    def assistant(
        self, item: PlanItem, history: list[Turn]
    ) -> Generator[list[Request], list[str], list[ToolCall] | str]:
        messages = assistant_messages(self.tools, history)
        k = self.config.agreement_k
        texts = yield [Request("assistant", messages, self._params(j)) for j in range(k)]
        return agreed([parse_action(t) for t in texts])

    def tool(self, calls: list[ToolCall]) -> Generator[list[Request], list[str], list[Any]]:
        if any(c.name not in self.by_name for c in calls):
            raise Rejected("call:unknown_tool")
        if not self.config.llm_tools:
            return [MockTool(self.by_name[c.name], self.seed)(c.arguments) for c in calls]
        greedy = self._params(temperature=0.0)
        prompts = [tool_prompt(self.by_name[c.name], c) for c in calls]
        texts = yield [Request("tool", p, greedy) for p in prompts]
        return [_parse_result(t) for t in texts]


def _phrase(description: str) -> str:
    text = description.strip().rstrip(".") or "do this"
    return text[0].lower() + text[1:]


def _arguments(tool: Tool, rng: random.Random, fixed: dict[str, Any]) -> dict[str, Any]:
    """Every required parameter (fixed ones kept) and each optional one with probability 1/3,
    values sampled from the parameter schema."""
    schema = json_schema(tool.parameters)
    required = set(schema.get("required", []))
    out = {}
    for name, spec in schema.get("properties", {}).items():
        if name in fixed:
            out[name] = fixed[name]
        elif name in required or rng.random() < 1 / 3:
            out[name] = sample(spec, rng, depth=1)
    return out


def _mentions(arguments: dict[str, Any], skip: str = "") -> str:
    parts = [
        f"{k.replace('_', ' ')} {json.dumps(v, ensure_ascii=False)}"
        for k, v in arguments.items()
        if k != skip
    ]
    return " with " + ", ".join(parts) if parts else ""


_REPLIES = (
    "Happy to help with that.",
    "Of course! Let me know whenever you need anything else.",
    "Glad it helped. Anything else I can do?",
    "Sure. I can look things up and run the tools available to me for you.",
)


class TemplateAgents:
    """Agents without a model (the no-LLM mode): the user's request names the values the
    calls use, the assistant issues the planned calls (for dependent items, the second call
    takes the first call's result field), and answers from the results. Tools are mocks."""

    def __init__(
        self, tools: list[Tool], config: AgentConfig, seed: int, sampling_seed: int = 0
    ) -> None:
        self.tools = tools
        self.by_name = {t.name: t for t in tools}
        self.rng = random.Random(seed)
        self.seed = seed
        self.dialog_type = ""
        self.steps: list[Callable[[list[Any]], list[ToolCall]]] = []
        self.results: list[Any] = []

    def plan(self, dialog_type: str) -> Generator[list[Request], list[str], DialogPlan]:
        yield from ()  # a generator that asks nothing
        self.dialog_type = dialog_type
        plan = template_plan(self.tools, dialog_type, self.rng)
        if isinstance(plan, str):
            raise Rejected(plan)
        return plan

    def user(self, item: PlanItem, history: list[Turn]) -> Generator[list[Request], list[str], str]:
        yield from ()
        self.steps, self.results = [], []
        if item.kind == "chitchat":
            return item.requirement
        tools = [self.by_name[n] for n in item.tools]
        if self.dialog_type == "dependent":
            pair = dependent_pair(tools)
            if pair is None:
                raise Rejected("plan:infeasible")
            return self._dependent(*pair)
        calls = [ToolCall(t.name, _arguments(t, self.rng, {})) for t in tools]
        self.steps = [lambda _results, calls=calls: calls]
        asks = [
            f"{_phrase(t.description)}{_mentions(c.arguments)}"
            for t, c in zip(tools, calls, strict=True)
        ]
        return "Could you " + " and also ".join(asks) + "?"

    def _dependent(self, first: Tool, second: Tool, field: str, param: str) -> str:
        call = ToolCall(first.name, _arguments(first, self.rng, {}))
        rest = _arguments(second, self.rng, {param: None})

        def then(results: list[Any]) -> list[ToolCall]:
            return [ToolCall(second.name, {**rest, param: results[-1][0][field]})]

        self.steps = [lambda _results: [call], then]
        return (
            f"Could you {_phrase(first.description)}{_mentions(call.arguments)}, then use the "
            f"{field.replace('_', ' ')} you get to {_phrase(second.description)}"
            f"{_mentions(rest, skip=param)}?"
        )

    def assistant(
        self, item: PlanItem, history: list[Turn]
    ) -> Generator[list[Request], list[str], list[ToolCall] | str]:
        yield from ()
        if self.steps:
            return self.steps.pop(0)(self.results)
        if item.kind == "chitchat":
            return self.rng.choice(_REPLIES)
        found = "; ".join(result_text(r) for batch in self.results for r in batch)
        return f"Here is what I found: {found}"

    def tool(self, calls: list[ToolCall]) -> Generator[list[Request], list[str], list[Any]]:
        yield from ()
        results = [MockTool(self.by_name[c.name], self.seed)(c.arguments) for c in calls]
        self.results.append(results)
        return results


def conversation(
    tools: list[Tool], dialog_type: str, seed: int, config: AgentConfig, sampling_seed: int = 0
) -> Conversation:
    """One dialog: plan, then per plan item a user turn and assistant actions (each call
    answered by the tool agent) until a text answer. Raises Rejected. seed drives the
    dialog's own choices (templates, mock tools); sampling_seed the LLM's sampling."""
    agents_cls = LLMAgents if config.agents == "llm" else TemplateAgents
    agents = agents_cls(tools, config, seed, sampling_seed)
    plan = yield from agents.plan(dialog_type)
    turns: list[Turn] = []
    for item in plan.items:
        turns.append(Turn("user", (yield from agents.user(item, turns))))
        for _ in range(config.max_steps):
            action = yield from agents.assistant(item, turns)
            if isinstance(action, str):
                turns.append(Turn("assistant", action))
                break
            ids = tuple(f"call_{len(turns)}_{i}" for i in range(len(action)))
            turns.append(Turn("assistant", calls=tuple(action), call_ids=ids))
            results = yield from agents.tool(action)
            turns += [
                Turn("tool", result_text(r), call_id=i, name=c.name)
                for i, c, r in zip(ids, action, results, strict=True)
            ]
        else:
            raise Rejected("assistant:no_final_response")
    meta = {"plan": plan.to_dict(), "seed": seed}
    return Dialog(tools, canonical_ids(turns), dialog_type, meta)
