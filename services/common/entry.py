"""`python -m services.<svc> serve|worker`: the two processes of every service, plus the
commands a service adds (inference: `openai`, its HTTP API)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable

from services.common.logs import setup_logging
from services.common.settings import Settings, get_settings

Command = Callable[[Settings, argparse.Namespace], None]


def main(
    service: str,
    argv: list[str] | None = None,
    commands: dict[str, tuple[str, Command]] | None = None,
) -> None:
    """Runs services.<service>.servicer:register's server, services.<service>.tasks' worker,
    or one of the service's own `commands` (name -> (help, run(settings, args)); each takes
    --port)."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--port", type=int, help=f"default: KILN_{service.upper()}_PORT")
    worker = sub.add_parser("worker", help=f"run a Celery worker on the {service!r} queue")
    worker.add_argument("--concurrency", type=int, help="default: KILN_WORKER_CONCURRENCY")
    for name, (help_text, _) in (commands or {}).items():
        sub.add_parser(name, help=help_text).add_argument("--port", type=int, help="its port")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])

    settings = get_settings()
    setup_logging(service, settings.log_level, settings.log_json)
    if settings.torch_threads:  # read by torch at import, here and in forked worker children
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(settings.torch_threads)
    if args.command == "serve":
        from services.common.server import serve as run_server

        if args.port:
            settings = settings.model_copy(update={f"{service}_port": args.port})
        registrar = importlib.import_module(f"services.{service}.servicer").register
        asyncio.run(run_server(service, registrar, settings))
    elif args.command in (commands or {}):
        commands[args.command][1](settings, args)  # type: ignore[index]
    else:
        app = importlib.import_module(f"services.{service}.tasks").app
        concurrency = args.concurrency or settings.worker_concurrency
        app.worker_main(
            [
                "worker",
                "-Q",
                service,
                "--pool",
                "prefork",
                "-c",
                str(concurrency),
                "-n",
                f"{service}@%h",
                "--loglevel",
                settings.log_level,
                "--without-gossip",
                "--without-mingle",
            ]
        )
