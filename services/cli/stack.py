"""`kiln up | status | health | env | down | demo`: the embedded stack and the main job."""

from __future__ import annotations

import typer
from rich.table import Table

from services.cli.app import JobFailed, apply_stack_env, connect, console, home


def up(
    base_port: int = typer.Option(
        0, help="first of a contiguous port range; 0: servers on KILN_<SERVICE>_PORT"
    ),
) -> None:
    """Start Redis, an S3 endpoint, the five servers and their workers, and the
    OpenAI-compatible HTTP API on loopback."""
    from services.cli.embedded import up as start

    with console.status("starting the embedded stack..."):
        stack = start(home(), base_port)
    console.print(f"S3 ({stack.s3_kind}) on 127.0.0.1:{stack.s3_port}, objects in {stack.home}/s3")
    console.print(f"Redis on 127.0.0.1:{stack.redis_port}; logs in {stack.home}/logs")
    print_status()


def print_status() -> None:
    from services.cli.embedded import load_stack, pid_alive
    from services.common.jobs import redis_client

    stack = load_stack(home())
    if stack is None:
        console.print("no embedded stack is running (`kiln up` starts one)")
        raise typer.Exit(1)
    apply_stack_env()
    procs = {p.name: p for p in stack.procs}
    redis = redis_client()
    table = Table("service", "address", "health", "worker", "queued", "metrics")
    healthy = True
    for service, port in stack.grpc_ports.items():
        with connect(service) as client:
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


def status() -> None:
    """Health of each server and state of each worker of the embedded stack."""
    print_status()


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


def env() -> None:
    """Print `export KILN_...` lines for the running embedded stack (eval "$(kiln env)")."""
    from services.cli.embedded import load_stack

    stack = load_stack(home())
    if stack is None:
        console.print("no embedded stack is running (`kiln up` starts one)")
        raise typer.Exit(1)
    for key, value in stack.env().items():
        print(f"export {key}={value}")


def down() -> None:
    """Stop every process `kiln up` started."""
    from services.cli.embedded import down as stop

    stopped = stop(home())
    console.print(f"stopped {len(stopped)} processes" if stopped else "nothing was running")


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
        results, report = run_demo(home(), console, keep_running, config)
    except JobFailed as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(summary_table(results))
    console.print(f"[dim]{config.caveat}[/]")
    console.print(f"report: {report}")
