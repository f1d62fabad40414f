"""`kiln demo`: the main job on the embedded stack, end to end over gRPC and the queues.

    models     SmolLM2-135M-Instruct (the real model, from its PyPI package) and a tiny random
               Llama as a second, weak policy
    toolsynth  synthesize verified tool-calling dialogs (template agents, Hermes format)
    judge      crowd rejection sampling: both policies answer each dialog's request, SmolLM2 as
               a CCE judge keeps the best answer (Copeland score) as the SFT label
    trainer    Flat-LoRA SFT of SmolLM2 on the synthesized dialogs + the crowd's labels;
               checkpoints committed to the object store
    inference  load the adapter, answer GSM8K questions step by step over a quantized-pruned
               KV cache (SnapKV at 4 bits under an fp16-token budget), streamed
    prober     Chain-of-Probe over SmolLM2's own reasoning: per-step answers, early
               answering, mind changes

`--tiny` runs the same pipeline on two tiny random models (seconds, text is noise).

Every stage runs as a job or an RPC on the services `kiln up` started; the client only moves
rows between the stages' datasets. It ends with a summary table and an HTML report
(<home>/demo/<run>/report.html, also uploaded next to the run's artifacts).
"""

from __future__ import annotations

import html
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.cli.app import progress_bar, request_id, submit_and_follow

TINY_POLICIES = ("tiny-demo", "tiny-demo-b")
DEMO_TOOLS = [
    {
        "name": "search_flights",
        "description": "Search flights between two cities on a date.",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": {"type": "string", "description": "Departure city"},
                "destination": {"type": "string", "description": "Arrival city"},
                "date": {"type": "string", "description": "Travel date, YYYY-MM-DD"},
            },
            "required": ["origin", "destination", "date"],
        },
        "returns": {
            "type": "object",
            "properties": {
                "flight_id": {"type": "string", "description": "Flight identifier"},
                "price": {"type": "number", "description": "Fare in euros"},
            },
            "required": ["flight_id", "price"],
        },
    },
    {
        "name": "book_flight",
        "description": "Book seats on a flight.",
        "parameters": {
            "type": "object",
            "properties": {
                "flight_id": {"type": "string", "description": "Flight identifier"},
                "passengers": {
                    "type": "integer",
                    "description": "Number of passengers",
                    "minimum": 1,
                    "maximum": 9,
                },
            },
            "required": ["flight_id", "passengers"],
        },
        "returns": {
            "type": "object",
            "properties": {"confirmation": {"type": "string", "description": "Booking code"}},
            "required": ["confirmation"],
        },
    },
    {
        "name": "get_weather",
        "description": "Get the weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
        "returns": {
            "type": "object",
            "properties": {"temperature": {"type": "number", "description": "Celsius"}},
            "required": ["temperature"],
        },
    },
    {
        "name": "convert_currency",
        "description": "Convert an amount of money between currencies.",
        "parameters": {
            "type": "object",
            "properties": {
                "amount": {"type": "number", "description": "Amount to convert"},
                "source": {"type": "string", "description": "Currency code, e.g. EUR"},
                "target": {"type": "string", "description": "Currency code, e.g. USD"},
            },
            "required": ["amount", "source", "target"],
        },
        "returns": {
            "type": "object",
            "properties": {"amount": {"type": "number", "description": "Converted amount"}},
            "required": ["amount"],
        },
    },
]
# GSM8K training items (data/math/gsm8k_train.jsonl, MIT): question and gold answer
QUESTIONS = [
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?",
        "72",
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
        "babysitting. How much did she earn?",
        "10",
    ),
    (
        "Betty is saving money for a new wallet which costs $100. Betty has only half of the "
        "money she needs. Her parents decided to give her $15 for that purpose, and her "
        "grandparents twice as much as her parents. How much more money does Betty need to "
        "buy the wallet?",
        "5",
    ),
    (
        "James writes a 3-page letter to 2 different friends twice a week. How many pages "
        "does he write a year?",
        "624",
    ),
]
CAVEAT = (
    "SmolLM2-135M-Instruct is a 135M-parameter model: it answers simple chat questions and "
    "finds a fact in a long context, but it rarely solves a multi-step GSM8K problem, often "
    "fails to state a verdict as a judge (see the parse rate) and changes its mind along its "
    "own reasoning; a few LoRA steps on 2 CPU cores show the training loop, not a better model."
)
TINY_CAVEAT = (
    "The models are tiny and randomly initialized, so their text is noise and the judge's "
    "verdicts are mostly unparseable (ties, which Copeland scoring breaks toward the first "
    "policy); the numbers show the pipeline's mechanics, not model quality."
)


@dataclass(frozen=True)
class DemoConfig:
    """The size of each stage; the defaults finish in a few minutes on 2 CPU cores."""

    tiny: bool = False  # two tiny random models instead of SmolLM2 (seconds; text is noise)
    dialogs: int = 4
    policy_max_tokens: int = 48
    judge_k: int = 2  # CCE crowd judgments in the judge's context
    judge_max_tokens: int = 96
    train_steps: int = 8  # two epochs of 8 examples
    batch_size: int = 2
    max_length: int = 256
    learning_rate: float = 1e-3
    flat_lora_sigma: float = 0.05
    kv_budget_fp16_tokens: float = 64.0
    reasoning_tokens: int = 96
    seed: int = 0

    @classmethod
    def tiny_models(cls, **sizes: Any) -> DemoConfig:
        """The pre-SmolLM2 demo: tiny models, shorter generations, more steps."""
        return cls(
            tiny=True,
            dialogs=8,
            policy_max_tokens=24,
            judge_max_tokens=24,
            train_steps=12,
            batch_size=4,
            max_length=384,
            learning_rate=3e-3,
            kv_budget_fp16_tokens=48.0,
            reasoning_tokens=32,
        ).with_sizes(**sizes)

    def with_sizes(self, **sizes: Any) -> DemoConfig:
        return replace(self, **{k: v for k, v in sizes.items() if v is not None})

    @property
    def policies(self) -> tuple[str, str]:
        return TINY_POLICIES if self.tiny else ("smollm2", TINY_POLICIES[0])

    @property
    def tuned(self) -> str:
        return f"{self.policies[0]}-demo-sft"

    @property
    def caveat(self) -> str:
        return TINY_CAVEAT if self.tiny else CAVEAT


@dataclass
class StageResult:
    stage: str
    produced: str
    where: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def _summary(job: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(job.summary)


def _output(job: Any, name: str) -> Any:
    """The job's output ObjectRef whose key ends with /name."""
    (ref,) = [o for o in job.outputs if o.key.endswith(f"/{name}")]
    return ref


class Pipeline:
    """The demo's stages, in order, against the running stack (KILN_* in the environment)."""

    def __init__(self, home: Path, config: DemoConfig) -> None:
        from services.common.objectstore import ObjectStore

        self.home, self.config = home, config
        self.run = uuid.uuid4().hex[:8]
        self.store = ObjectStore()
        self.bar = progress_bar()

    def models(self) -> StageResult:
        from kiln.inference.v1 import inference_pb2 as pb
        from services.common.clients import KilnClient
        from services.llm.smollm2 import MODEL_NAME, build_smollm2
        from services.llm.tiny import build_tiny_model

        t0 = time.perf_counter()
        policies = self.config.policies
        self.base = self.home / "models" / policies[0]
        loaded = []
        with KilnClient("inference") as client:
            for seed, name in enumerate(policies):
                folder = self.home / "models" / name
                if name == MODEL_NAME:
                    build_smollm2(folder)  # once; a second run only checks
                elif not (folder / "config.json").exists():
                    build_tiny_model(folder, seed=seed)
                info = client.stub.LoadModel(
                    pb.LoadModelRequest(request_id=request_id(), name=name, local_path=str(folder)),
                    timeout=300,
                )
                loaded.append(f"{name} ({info.parameters:,} parameters, {info.dtype})")
        return StageResult(
            "models",
            "loaded " + " and ".join(loaded),
            str(self.home / "models"),
            time.perf_counter() - t0,
        )

    def synthesize(self) -> StageResult:
        from kiln.toolsynth.v1 import toolsynth_pb2 as pb
        from services.common.protobuf import ref_to_pb, struct_from_dict

        t0 = time.perf_counter()
        tools = self.store.put_json(f"datasets/demo-tools/{self.run}/tools.json", DEMO_TOOLS)
        request = pb.SynthesisRequest(
            request_id=request_id(),
            count=self.config.dialogs,
            seed=self.config.seed,
            tools=ref_to_pb(tools),
            dialog_mix={"single": 2, "parallel": 1, "dependent": 1, "non_tool": 1},
            dataset_name="demo-dialogs",
            parameters=struct_from_dict({"agents": {"agents": "template"}}),
            export_format="hermes",
        )
        self.dialogs_job = submit_and_follow(
            "toolsynth", lambda client: client.stub.SubmitSynthesis(request), bar=self.bar
        )
        summary = _summary(self.dialogs_job)
        stats = self.store.get_json(summary["dataset"].rsplit("/", 1)[0] + "/stats.json")
        rejected = sum(s["failed"] for s in stats.values() if isinstance(s, dict) and "failed" in s)
        self.dialogs = self.store.get_jsonl(summary["dataset"])
        types = Counter(row["dialog_type"] for row in self.dialogs)
        mix = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
        return StageResult(
            "toolsynth",
            f"{len(self.dialogs)} verified dialogs ({mix}); {rejected} checks failed and retried",
            f"s3://{self.store.bucket}/{summary['dataset']}",
            time.perf_counter() - t0,
            {"example": self.dialogs[0]["messages"][1:]},
        )

    def crowd_sample(self) -> StageResult:
        from kiln.judge.v1 import judge_pb2 as pb
        from services.common.protobuf import ref_to_pb, struct_from_dict

        t0 = time.perf_counter()
        requests = [
            next(m["content"] for m in row["messages"] if m["role"] == "user")
            for row in self.dialogs
        ]
        prompts = self.store.put_jsonl(
            f"datasets/demo-prompts/{self.run}/prompts.jsonl", [{"prompt": r} for r in requests]
        )
        policies = self.config.policies
        config = pb.JudgeConfig(
            model=policies[0],
            strategy="cce",
            k=self.config.judge_k,
            max_tokens=self.config.judge_max_tokens,
            seed=self.config.seed,
            parameters=struct_from_dict({"crowd_max_tokens": self.config.judge_max_tokens}),
        )
        request = pb.CrowdSamplingRequest(
            request_id=request_id(),
            prompts=ref_to_pb(prompts),
            policies=list(policies),
            config=config,
            dataset_name="demo-crowd",
            max_tokens=self.config.policy_max_tokens,
            temperature=0.7,
        )
        self.crowd_job = submit_and_follow(
            "judge", lambda client: client.stub.SubmitCrowdSampling(request), bar=self.bar
        )
        summary = _summary(self.crowd_job)
        wins = ", ".join(f"{p} {int(n)}" for p, n in summary["chosen_by_policy"].items())
        parse_rate = summary.get("parse_rate")
        parsed = "n/a" if parse_rate is None else f"{parse_rate:.0%}"
        if parse_rate == 0:
            parsed += ", so every match is a tie and Copeland's tie-break keeps the first policy"
        return StageResult(
            "judge",
            f"{int(summary['rows'])} SFT labels by crowd rejection sampling with "
            f"{policies[0]} judging (chosen: {wins}; judge verdicts parsed: {parsed}); "
            f"{int(summary['pairs'])} DPO pairs; {int(summary['calls'])} LLM calls",
            f"s3://{self.store.bucket}/{summary['dataset']}",
            time.perf_counter() - t0,
            {"chosen_by_policy": summary["chosen_by_policy"]},
        )

    def train(self) -> StageResult:
        from kiln.trainer.v1 import trainer_pb2 as pb
        from services.common.protobuf import struct_from_dict

        t0 = time.perf_counter()
        steps = self.config.train_steps
        hyperparameters = {
            "max_steps": steps,
            "batch_size": self.config.batch_size,
            "learning_rate": self.config.learning_rate,
            "max_length": self.config.max_length,
            "save_every": max(1, steps // 2),
            "flat_lora_sigma": self.config.flat_lora_sigma,
            "seed": self.config.seed,
        }
        request = pb.TrainingRequest(
            request_id=request_id(),
            run_name=f"demo-{self.run}",
            objective="sft",
            base_model=str(self.base),
            datasets=[
                _output(self.dialogs_job, "data.jsonl"),
                _output(self.crowd_job, "data.jsonl"),
            ],
            hyperparameters=struct_from_dict(hyperparameters),
        )
        self.train_job = submit_and_follow(
            "trainer", lambda client: client.stub.SubmitTraining(request), bar=self.bar
        )
        summary = _summary(self.train_job)
        history = self.store.get_jsonl(_output(self.train_job, "metrics.jsonl").key)
        self.checkpoint = summary["checkpoints"][-1]
        losses = [h["loss"] for h in history]
        half = max(1, len(losses) // 2)  # each step sees other examples: compare halves
        early, late = sum(losses[:half]) / half, sum(losses[half:]) / max(1, len(losses) - half)
        return StageResult(
            "trainer",
            f"Flat-LoRA (sigma {self.config.flat_lora_sigma}) SFT of {self.config.policies[0]}, "
            f"{steps} steps on {int(summary['examples'])} examples: mean loss {early:.3f} "
            f"(first half) -> {late:.3f} (second half); "
            f"{len(summary['checkpoints'])} checkpoints",
            f"s3://{self.store.bucket}/{self.checkpoint}",
            time.perf_counter() - t0,
            {"losses": losses},
        )

    def generate(self) -> StageResult:
        from kiln.inference.v1 import inference_pb2 as pb
        from services.common.clients import KilnClient

        t0 = time.perf_counter()
        kv = pb.KVCompression(
            method="snapkv", bits=4, budget_fp16_tokens=self.config.kv_budget_fp16_tokens
        )
        self.answers: list[dict[str, Any]] = []
        used = full = 0
        tuned = self.config.tuned
        with KilnClient("inference") as client:
            client.stub.LoadModel(
                pb.LoadModelRequest(
                    request_id=request_id(), name=tuned, checkpoint=self.checkpoint
                ),
                timeout=300,
            )
            task = self.bar.add_task("inference", total=len(QUESTIONS))
            for question, gold in QUESTIONS:
                content = (
                    f"{question}\nThink step by step, one short step per line, and end with "
                    "'The answer is N.'"
                )
                request = pb.GenerateRequest(
                    request_id=request_id(),
                    model=tuned,
                    messages=pb.Messages(messages=[pb.ChatMessage(role="user", content=content)]),
                    sampling=pb.SamplingParams(
                        max_tokens=self.config.reasoning_tokens, seed=self.config.seed
                    ),
                    kv=kv,
                )
                text = ""
                for response in client.stub.Generate(request):
                    if response.WhichOneof("kind") == "chunk":
                        text += response.chunk.text
                        self.bar.update(task, description=f"inference: {len(text)} characters")
                    else:
                        stats = response.complete.kv_stats
                used, full = used + stats.bytes_used, full + stats.bytes_full
                self.answers.append(
                    {
                        "question": question,
                        "gold": gold,
                        "reasoning": text.strip(),
                        "kv": f"{stats.bits}-bit, {stats.bytes_used:,} of {stats.bytes_full:,} B",
                    }
                )
                self.bar.advance(task)
        return StageResult(
            "inference",
            f"{len(QUESTIONS)} GSM8K answers from the tuned adapter streamed over a SnapKV "
            f"4-bit KV cache: {used:,} of {full:,} bytes ({1 - used / full:.0%} saved)",
            f"model {tuned} <- {self.checkpoint}",
            time.perf_counter() - t0,
            {"answers": self.answers},
        )

    def probe(self) -> StageResult:
        from kiln.prober.v1 import prober_pb2 as pb
        from services.common.protobuf import ref_to_pb

        t0 = time.perf_counter()
        rows = [{k: a[k] for k in ("question", "gold", "reasoning")} for a in self.answers]
        items = self.store.put_jsonl(f"datasets/demo-probe/{self.run}/items.jsonl", rows)
        request = pb.SubmitProbeRequest(
            request_id=request_id(),
            model=self.config.policies[0],  # the base model reads its adapter's chains
            dataset=ref_to_pb(items),
            step_mode="lines",
        )
        final = submit_and_follow(
            "prober", lambda client: client.stub.SubmitProbe(request), bar=self.bar
        )
        summary = _summary(final)
        accuracy = summary.get("accuracy")
        return StageResult(
            "prober",
            f"{int(summary['items'])} reasoning chains probed on {self.config.policies[0]}: "
            f"accuracy {accuracy if accuracy is None else f'{accuracy:.2f}'}, early answering "
            f"{summary['early_answering_rate']:.2f}, mean mind changes "
            f"{summary['mean_mind_changes']:.2f}",
            f"s3://{self.store.bucket}/{_output(final, 'report.html').key}",
            time.perf_counter() - t0,
            {"summary": summary},
        )


def run_demo(
    home: Path,
    console: Console,
    keep_running: bool = False,
    config: DemoConfig | None = None,
) -> tuple[list[StageResult], Path]:
    """Starts the embedded stack, runs the pipeline, writes the HTML report; returns the
    stage results and the report's path."""
    from services.cli.embedded import down, up
    from services.common.settings import get_settings

    config = config or DemoConfig()
    started = time.perf_counter()
    with console.status(
        "starting the embedded stack (Redis, S3, 5 servers, 5 workers, HTTP API)..."
    ):
        stack = up(home)
    os.environ.update(stack.env())
    get_settings.cache_clear()
    results = [
        StageResult(
            "stack",
            f"5 servers + 5 workers, HTTP API, Redis, S3 via {stack.s3_kind}",
            f"{home}/logs",
            time.perf_counter() - started,
        )
    ]
    try:
        pipeline = Pipeline(home, config)
        with pipeline.bar:
            for stage in (
                pipeline.models,
                pipeline.synthesize,
                pipeline.crowd_sample,
                pipeline.train,
                pipeline.generate,
                pipeline.probe,
            ):
                results.append(stage())
        report = home / "demo" / pipeline.run / "report.html"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(html_report(results, pipeline.run, config.caveat))
        pipeline.store.put_file(f"runs/demo-{pipeline.run}/report.html", report)
    finally:
        if not keep_running:
            with console.status("stopping the stack..."):
                down(home)
    return results, report


def summary_table(results: list[StageResult]) -> Table:
    table = Table("stage", "produced", title="kiln demo")
    table.add_column("where", overflow="fold")
    table.add_column("seconds", justify="right")
    for r in results:
        table.add_row(r.stage, r.produced, r.where, f"{r.seconds:.1f}")
    return table


def _loss_svg(losses: list[float], width: int = 360, height: int = 120) -> str:
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    step = width / max(1, len(losses) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - (loss - low) / span * (height - 10) - 5:.1f}"
        for i, loss in enumerate(losses)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="training loss">'
        f'<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{points}"/></svg>'
    )


def html_report(results: list[StageResult], run: str, caveat: str = CAVEAT) -> str:
    """A self-contained page: the summary table, then each stage's details."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r.stage)}</td><td>{e(r.produced)}</td><td><code>{e(r.where)}</code></td>"
        f"<td>{r.seconds:.1f}</td></tr>"
        for r in results
    )
    sections = []
    for r in results:
        if "example" in r.details:
            turns = "".join(
                f"<p><b>{e(m['role'])}</b>: {e(m['content'])}</p>" for m in r.details["example"]
            )
            sections.append(f"<h2>A synthesized dialog</h2>{turns}")
        if "chosen_by_policy" in r.details:
            chosen = ", ".join(
                f"{e(p)}: {int(n)}" for p, n in r.details["chosen_by_policy"].items()
            )
            sections.append(
                f"<h2>Crowd rejection sampling</h2><p>labels chosen per policy: {chosen}</p>"
            )
        if "losses" in r.details:
            losses = r.details["losses"]
            sections.append(
                f"<h2>Flat-LoRA SFT loss</h2>{_loss_svg(losses)}"
                f"<p>{len(losses)} steps, {losses[0]:.3f} &rarr; {losses[-1]:.3f}</p>"
            )
        if "answers" in r.details:
            answers = "".join(
                f"<tr><td>{e(a['question'])}</td><td><pre>{e(a['reasoning'])}</pre></td>"
                f"<td>{e(a['kv'])}</td></tr>"
                for a in r.details["answers"]
            )
            sections.append(
                "<h2>Generations over the compressed KV cache</h2><table><tr><th>question</th>"
                f"<th>reasoning</th><th>KV cache</th></tr>{answers}</table>"
            )
        if "summary" in r.details:
            pretty = e(json.dumps(r.details["summary"], indent=2))
            sections.append(f"<h2>Chain-of-Probe</h2><pre>{pretty}</pre>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;text-align:left}pre{white-space:pre-wrap;margin:0}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>kiln demo {e(run)}</title>"
        f"<style>{style}</style></head><body><h1>kiln demo {e(run)}</h1>"
        f"<p>{e(caveat)}</p><table><tr>"
        f"<th>stage</th><th>produced</th><th>where</th><th>seconds</th></tr>{rows}</table>"
        f"{''.join(sections)}</body></html>"
    )
