"""The judge's dataplane (KServe's term; the servicer only converts protobuf around it): its
use cases over any services.llm Backend, shared by the servicer and the Celery tasks: a
validated JudgeSpec, the strategy it names, the call estimate and budget, one pair, an
evaluation and crowd rejection sampling."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.configs import config_from_dict
from services.common.errors import FailedPrecondition, InvalidInput
from services.judge.core.cce import CCEConfig, CCEJudge
from services.judge.core.criteria import CriteriaConfig, CriteriaJudge
from services.judge.core.datasets import PairItem
from services.judge.core.evaluation import ItemResult, judge_items
from services.judge.core.judging import JudgeContext, JudgeSettings, Strategy
from services.judge.core.majority import MajorityConfig, MajorityJudge
from services.judge.core.metrics import COMBINE_RULES
from services.judge.core.prompts import PAIRWISE_FORMATS
from services.judge.core.reviseval import References, RevisEvalConfig, RevisEvalJudge
from services.judge.core.vanilla import VanillaConfig, VanillaJudge
from services.llm.base import Backend, Usage
from services.llm.cache import ResponseCache

STRATEGIES = ("vanilla", "majority", "criteria", "cce", "reviseval", "cce+reviseval")
BACKENDS = ("remote", "openai", "vllm", "hf")
MAX_TEXT_CHARS = 200_000


@dataclass(frozen=True)
class JudgeSpec:
    """A judge run. parameters: the strategy's own settings (CCEConfig, RevisEvalConfig, ...;
    for cce+reviseval, the fields of both), checked by name and type."""

    strategy: str = "vanilla"
    model: str = ""
    backend: str = "remote"
    k: int | None = None  # cce: crowd judgments kept; majority: votes; None: the default
    both_orders: bool = True
    combine: str = "net_vote"
    verdict_format: str = "mtbench"
    max_tokens: int = 512
    seed: int = 0
    max_calls: int = 0  # 0: no budget
    parameters: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> JudgeSpec:
        if self.strategy not in STRATEGIES:
            raise InvalidInput("config.strategy", f"must be one of {', '.join(STRATEGIES)}")
        if not self.model:
            raise InvalidInput("config.model", "name the judge model")
        if self.backend not in BACKENDS:
            raise InvalidInput("config.backend", f"must be one of {', '.join(BACKENDS)}")
        if self.combine not in COMBINE_RULES:
            raise InvalidInput("config.combine", f"must be one of {', '.join(COMBINE_RULES)}")
        if self.verdict_format not in PAIRWISE_FORMATS:
            raise InvalidInput(
                "config.verdict_format", f"must be one of {', '.join(PAIRWISE_FORMATS)}"
            )
        if self.k is not None and not 0 <= self.k <= 64:
            raise InvalidInput("config.k", "must be in 0..64")
        if not 1 <= self.max_tokens <= 32768:
            raise InvalidInput("config.max_tokens", "must be in 1..32768")
        if self.max_calls < 0:
            raise InvalidInput("config.max_calls", "must be >= 0 (0: no budget)")
        build_strategy(JudgeContext(_no_backend, self.model), self)  # checks the parameters
        return self

    @property
    def settings(self) -> JudgeSettings:
        return JudgeSettings(self.verdict_format, self.max_tokens, 0.0, self.seed)


def _no_backend(model: str) -> Backend:
    raise AssertionError("validation builds no backend")


def _split(parameters: dict[str, Any], *classes: type) -> list[dict[str, Any]]:
    """The parameters of a combined strategy, each to the config that has the name."""
    names = [{f.name for f in dataclasses.fields(c)} for c in classes]
    out: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in parameters.items():
        owner = next((i for i, n in enumerate(names) if key in n), 0)
        out[owner][key] = value
    return out


def build_strategy(ctx: JudgeContext, spec: JudgeSpec) -> Strategy:
    where = "config.parameters"
    params = dict(spec.parameters)
    k = {"k": spec.k} if spec.k is not None else {}
    if spec.strategy == "vanilla":
        return VanillaJudge(ctx, config_from_dict(VanillaConfig, params, where))
    if spec.strategy == "majority":
        return MajorityJudge(ctx, config_from_dict(MajorityConfig, params, where, k))
    if spec.strategy == "criteria":
        return CriteriaJudge(ctx, config_from_dict(CriteriaConfig, params, where))
    if spec.strategy == "reviseval":
        return RevisEvalJudge(ctx, config_from_dict(RevisEvalConfig, params, where))
    if spec.strategy == "cce":
        return CCEJudge(ctx, config_from_dict(CCEConfig, params, where, k))
    cce_params, revise_params = _split(params, CCEConfig, RevisEvalConfig)
    revise = config_from_dict(RevisEvalConfig, revise_params, where)
    if revise.judge_by != "llm":
        raise InvalidInput(f"{where}.judge_by", "cce+reviseval judges with the llm")
    return CCEJudge(ctx, config_from_dict(CCEConfig, cce_params, where, k), References(ctx, revise))


def make_context(
    spec: JudgeSpec, backend_for: Callable[[str], Backend], cache: ResponseCache | None
) -> JudgeContext:
    usage = Usage(max_calls=spec.max_calls or None)
    return JudgeContext(backend_for, spec.model, spec.settings, cache, usage)


def planned_calls(spec: JudgeSpec, items: Sequence[PairItem]) -> dict[str, int]:
    strategy = build_strategy(JudgeContext(_no_backend, spec.model), spec)
    distinct = len({(it.instruction, it.response_a, it.response_b) for it in items})
    instructions = len({it.instruction for it in items})
    return strategy.planned_calls(distinct, instructions, 2 if spec.both_orders else 1)


def check_budget(spec: JudgeSpec, planned: dict[str, int]) -> None:
    total = sum(planned.values())
    if spec.max_calls and total > spec.max_calls:
        raise FailedPrecondition(
            f"the run plans {total} backend calls ({planned}) but config.max_calls is "
            f"{spec.max_calls}; raise the budget, lower k, or judge fewer items (cached calls "
            "cost nothing, so a repeated run may fit)"
        )


def validate_pair(item: PairItem, where: str = "") -> PairItem:
    prefix = f"{where}." if where else ""
    for name in ("instruction", "response_a", "response_b"):
        text = getattr(item, name)
        if not text.strip():
            raise InvalidInput(f"{prefix}{name}", "must not be empty")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"{prefix}{name}", f"longer than {MAX_TEXT_CHARS} characters")
    return item


def judge_pair(ctx: JudgeContext, spec: JudgeSpec, item: PairItem) -> ItemResult:
    strategy = build_strategy(ctx, spec)
    (result,) = judge_items(strategy, [validate_pair(item)], spec.both_orders, spec.combine)
    return result
