"""Shared fixtures: a tiny model, real redis-server and S3 (nanio) on loopback, in-process
gRPC servers, and Celery worker processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli.embedded import free_port, spawn, start_redis, start_s3, stop_pid
from services.common.errors import FailedPrecondition
from services.common.settings import Settings, get_settings


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from services.llm.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("redis")
    proc, _ = start_redis(free_port(), base / "data", base, persist=False)
    yield f"redis://127.0.0.1:{proc.port}/0"
    stop_pid(proc.pid, grace=3)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("s3")
    proc, _, _ = start_s3(free_port(), base / "data", base)
    yield f"127.0.0.1:{proc.port}"
    stop_pid(proc.pid, grace=3)


@pytest.fixture
def kiln_env(
    redis_url: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """KILN_* pointing at the session's Redis and S3, a fresh bucket and home per test."""
    import redis

    from services.common.objectstore import ObjectStore

    bucket = f"kiln-{uuid.uuid4().hex[:10]}"
    env = {
        "KILN_REDIS_URL": redis_url,
        "KILN_S3_ENDPOINT": s3_endpoint,
        "KILN_BUCKET": bucket,
        "KILN_HOME": str(tmp_path / "home"),
        "KILN_LOG_JSON": "true",
        "KILN_S3_RETRIES": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    redis.Redis.from_url(redis_url).flushdb()
    settings = get_settings()
    ObjectStore(settings).ensure_bucket()
    yield settings
    get_settings.cache_clear()


@dataclass
class RunningServer:
    port: int
    target: str
    loop: asyncio.AbstractEventLoop
    server: object


@contextmanager
def server_starter() -> Iterator[Callable[..., RunningServer]]:
    """Starts kiln servers in-process (own event loop thread) on free ports; stops them after."""
    from services.common.server import build_server

    started: list[tuple[RunningServer, threading.Thread]] = []

    def start(service: str, settings: Settings, registrar: Callable | None = None) -> RunningServer:
        import importlib

        registrar = registrar or importlib.import_module(f"services.{service}.servicer").register
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        holder: dict[str, object] = {}

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def main() -> None:
                kiln_server = build_server(service, registrar, settings, "127.0.0.1:0")
                await kiln_server.start()
                holder["server"] = kiln_server
                ready.set()

            loop.run_until_complete(main())
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(30), "server did not start"
        kiln_server = holder["server"]
        running = RunningServer(
            kiln_server.port, f"127.0.0.1:{kiln_server.port}", loop, kiln_server
        )
        started.append((running, thread))
        return running

    try:
        yield start
    finally:
        for running, thread in started:
            future = asyncio.run_coroutine_threadsafe(running.server.stop(0.5), running.loop)
            future.result(10)
            running.loop.call_soon_threadsafe(running.loop.stop)
            thread.join(10)


@pytest.fixture
def grpc_server() -> Iterator[Callable[..., RunningServer]]:
    with server_starter() as start:
        yield start


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Starts `python -m services.<svc> worker` processes with the test's KILN_* environment."""
    procs: list[int] = []

    def start(service: str) -> int:
        proc, _ = spawn(
            f"{service}-worker-{len(procs)}",
            [sys.executable, "-m", f"services.{service}", "worker"],
            tmp_path / "logs",
            dict(os.environ),
        )
        procs.append(proc.pid)
        return proc.pid

    yield start
    for pid in procs:
        stop_pid(pid, grace=5)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (random A and B, so it changes the outputs) on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=16,
            init_lora_weights=False,
            target_modules=["q_proj", "v_proj", "o_proj"],
        ),
    )
    folder = tmp_path_factory.mktemp("adapters") / "lora"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `kiln models smollm2` writes (setup.sh makes it), else a fresh conversion."""
    from services.llm.smollm2 import MODEL_NAME, build_smollm2, is_built

    installed = Settings().effective_models_dir / MODEL_NAME
    if is_built(installed):
        return installed
    folder = tmp_path_factory.mktemp("models") / MODEL_NAME
    try:
        build_smollm2(folder)
    except FailedPrecondition as exc:  # the package is not installed (deploy/dev/setup.sh does)
        pytest.skip(str(exc))
    return folder
