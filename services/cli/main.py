"""`kiln`: the command line of the platform (typer + rich), one module per command group;
heavy imports stay inside the commands."""

from __future__ import annotations

import os

from services.cli import inference, jobs, judge, models, probe, stack, toolsynth, train
from services.cli.app import app, console

for command in (stack.up, stack.status, stack.health, stack.env, stack.down, stack.demo):
    app.command()(command)
app.command()(inference.generate)
app.add_typer(inference.kv_app, name="kv")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(probe.app, name="probe")
app.add_typer(train.app, name="train")
app.add_typer(judge.app, name="judge")
app.add_typer(toolsynth.app, name="toolsynth")


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
