"""`kiln up`, `kiln status`, the README's client snippet, `kiln down` (real processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai

from services.cli.embedded import Proc, Stack, free_port, load_stack, pid_alive, state_file
from services.common.objectstore import ObjectStore
from services.common.settings import SERVICES, Settings
from tests.toolsynth_fixtures import TOOLS

ROOT = Path(__file__).resolve().parents[2]
KILN = [sys.executable, "-m", "services.cli.main"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def proc_of(stack: Stack, name: str) -> Proc:
    (proc,) = [p for p in stack.procs if p.name == name]
    return proc


def readme_client_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "KilnClient" in b]
    return snippet


def test_up_status_snippet_down(tmp_path: Path, tiny_model: Path) -> None:
    env = {**os.environ, "KILN_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.update({f"KILN_{s.upper()}_PORT": str(free_port()) for s in SERVICES})
    env["KILN_HTTP_PORT"] = str(free_port())
    env["KILN_AUTH_TOKEN"] = "stack-token"
    for key in ("KILN_REDIS_URL", "KILN_S3_ENDPOINT", "KILN_BUCKET"):
        env.pop(key, None)

    def kiln(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*KILN, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )

    up = kiln("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = kiln("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("SERVING") == 5 and status.stdout.count(" up ") == 5
        stack = load_stack(tmp_path / "home")
        assert stack is not None and len(stack.procs) == 14
        api = f"http://127.0.0.1:{env['KILN_HTTP_PORT']}/v1"
        assert f"OpenAI-compatible API: {api} (up)" in status.stdout
        metrics_url = f"http://127.0.0.1:{stack.metrics_ports['judge']}/metrics"
        assert metrics_url in status.stdout
        with urllib.request.urlopen(metrics_url, timeout=5) as reply:
            metrics = reply.read().decode()
        health = 'method="/grpc.health.v1.Health/Check",service="judge"'
        assert f'kiln_rpc_requests_total{{code="OK",{health}}}' in metrics
        assert 'kiln_queue_depth{service="judge"} 0.0' in metrics
        exported = kiln("env")  # a new shell's `eval "$(kiln env)"` carries the token
        assert "export KILN_AUTH_TOKEN=stack-token" in exported.stdout
        assert oct(state_file(tmp_path / "home").stat().st_mode & 0o777) == "0o600"
        snippet_env = {**env, **stack.env()}
        run = subprocess.run(
            [sys.executable, "-c", readme_client_snippet()],
            env=snippet_env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
        assert "JOB_STATE_SUCCEEDED 100%" in run.stdout
        assert "manifest: runs/" in run.stdout and "models loaded: []" in run.stdout

        assert kiln("models", "load", "tiny", str(tiny_model)).returncode == 0
        kv = ("--method", "h2o", "--bits", "4", "--budget-fp16-tokens", "100", "--compress-decode")
        plan = kiln("kv", "plan", "tiny", "--seq-len", "500", *kv)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        # 6 blocks of 32 + a 16-bit residual of 31: 84Q + 8060 <= 25,600 bytes per head and layer
        assert "at most 223 while decoding" in plan.stdout
        snap = ("--method", "snapkv", "--bits", "16", "--budget-fp16-tokens", "100")
        wide = ("--kv", "window_size=200", "--kv", "adakv=true")  # any field, by name
        refused = kiln("kv", "plan", "tiny", "--seq-len", "500", *snap, *wide)
        assert refused.returncode != 0 and "snapkv needs at least 201" in refused.stdout
        generated = kiln("generate", "tiny", "the answer is " * 40, "--max-tokens", "40", *kv)
        assert generated.returncode == 0, generated.stdout + generated.stderr
        assert re.search(r"KV h2o 4-bit, [\d,]+ of [\d,]+ bytes", generated.stdout)
        openai_client = openai.OpenAI(base_url=api, api_key="stack-token", max_retries=0)
        completion = openai_client.completions.create(
            model="tiny", prompt="the answer is", max_tokens=5, temperature=0, logprobs=1
        )
        assert completion.model_extra is not None and completion.choices[0].model_extra["kiln"]
        assert len(completion.choices[0].logprobs.tokens) == completion.usage.completion_tokens

        tools = tmp_path / "tools.json"
        tools.write_text(json.dumps([t.to_openai() for t in TOOLS]))
        synth = kiln(
            *("toolsynth", "run", "--tools", str(tools), "--count", "4", "--format", "hermes"),
            *("--set", "agents.agents=template", "--mix", "single=1", "--mix", "parallel=1"),
            timeout=300,
        )
        assert synth.returncode == 0, synth.stdout + synth.stderr
        assert re.search(r"rules\s+│\s+\d+\s+│", synth.stdout), synth.stdout
        assert '"dialogs": 4' in synth.stdout and '"calls": 0' in synth.stdout

        pids = {p.name: p.pid for p in stack.procs}
        os.killpg(pids["trainer-worker"], signal.SIGKILL)  # main process and pool child
        revived = wait_for(
            lambda: (s := load_stack(tmp_path / "home")) and proc_of(s, "trainer-worker").restarts,
            30,
            "the supervisor to restart the trainer worker",
        )
        assert revived == 1
        assert "trainer-worker (pid" in (tmp_path / "home/logs/supervisor.log").read_text()
        for name in ("supervisor", "inference-openai"):
            os.killpg(pids[name], signal.SIGKILL)
        again = kiln("up")  # on a running stack: only the dead come back; state stays
        assert again.returncode == 0, again.stdout + again.stderr
        stack = load_stack(tmp_path / "home")
        assert stack is not None
        after = {p.name: p.pid for p in stack.procs}
        restarted = {name for name in pids if after[name] != pids[name]}
        assert restarted == {"supervisor", "inference-openai", "trainer-worker"}
        assert "tiny" in kiln("models", "list").stdout, "the inference server kept its model"
    finally:
        down = kiln("down")
    assert down.returncode == 0 and "stopped 14 processes" in down.stdout
    assert not any(pid_alive(p.pid) for p in stack.procs), "kiln down left a process behind"
    assert load_stack(tmp_path / "home") is None
    assert kiln("status").returncode == 1

    (manifest,) = re.findall(r"manifest: (runs/\S+)", run.stdout)
    up = kiln("up")  # Redis and S3 kept their data on disk
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        jobs = kiln("jobs", "get", manifest.split("/")[1], "--service", "trainer")
        assert '"JOB_STATE_SUCCEEDED"' in jobs.stdout, jobs.stdout + jobs.stderr
        stack = load_stack(tmp_path / "home")
        assert stack is not None
        store = ObjectStore(Settings(**{k[5:].lower(): v for k, v in stack.env().items()}))
        assert store.is_committed(manifest.removesuffix("/MANIFEST.json"))
    finally:
        assert kiln("down").returncode == 0


def test_demo_runs_every_stage_and_commits_its_artifacts(tmp_path: Path) -> None:
    """`kiln demo --tiny` (the README's main command on tiny models, for speed) end to end;
    the stack is kept up so the test can read what each stage committed, then stopped."""
    from services.common.objectstore import ObjectStore
    from services.common.settings import Settings

    home = tmp_path / "home"
    env = {**os.environ, "KILN_HOME": str(home), "COLUMNS": "200"}
    env.update({f"KILN_{s.upper()}_PORT": str(free_port()) for s in SERVICES})
    env["KILN_HTTP_PORT"] = str(free_port())
    for key in ("KILN_REDIS_URL", "KILN_S3_ENDPOINT", "KILN_BUCKET"):
        env.pop(key, None)
    demo = subprocess.run(
        [*KILN, "demo", "--tiny", "--keep-running", "--dialogs", "5", "--train-steps", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    stack = load_stack(home)
    try:
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        for stage in ("stack", "models", "toolsynth", "judge", "trainer", "inference", "prober"):
            assert re.search(rf"│ {stage}\s+│", out), (stage, out)
        assert "5 verified dialogs" in out and "5 SFT labels by crowd rejection sampling" in out
        assert re.search(r"SFT of tiny-demo, 4 steps on 10 examples: mean loss \d", out), out
        saved = re.search(r"\(([\d]+)% saved\)", out)
        assert saved and int(saved.group(1)) > 50, out
        assert "4 reasoning chains probed" in out
        (report,) = (home / "demo").glob("*/report.html")
        page = report.read_text()
        for section in ("A synthesized dialog", "Flat-LoRA SFT loss", "Chain-of-Probe"):
            assert section in page
        run = report.parent.name

        store = ObjectStore(Settings(**_settings_from(stack.env())))
        (checkpoint,) = re.findall(rf"checkpoints/demo-{run}/\d+", out)[:1]
        assert {f["path"] for f in store.read_manifest(checkpoint)["files"]} >= {
            "adapter_model.safetensors"
        }
        assert store.get_bytes(f"runs/demo-{run}/report.html") == report.read_bytes()
    finally:
        subprocess.run([*KILN, "down"], env=env, capture_output=True, timeout=120, cwd=ROOT)
    assert stack is not None and not any(pid_alive(p.pid) for p in stack.procs)

    def kiln(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*KILN, *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
        )

    assert kiln("up").returncode == 0  # `kiln down && kiln up`: the checkpoint is still there
    try:
        listed = kiln("train", "checkpoints", f"demo-{run}")
        assert listed.returncode == 0 and checkpoint in listed.stdout, listed.stdout
        loaded = kiln("models", "load", "restored", checkpoint)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert loaded.stdout.startswith("loaded restored on hf")
    finally:
        assert kiln("down").returncode == 0


def _settings_from(env: dict[str, str]) -> dict[str, str]:
    return {
        "s3_endpoint": env["KILN_S3_ENDPOINT"],
        "s3_access_key": env["KILN_S3_ACCESS_KEY"],
        "s3_secret_key": env["KILN_S3_SECRET_KEY"],
        "home": env["KILN_HOME"],
    }


def test_up_on_a_busy_port_names_the_server_and_starts_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "KILN_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.update({f"KILN_{s.upper()}_PORT": str(free_port()) for s in SERVICES})
    env["KILN_HTTP_PORT"] = str(free_port())
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["KILN_JUDGE_PORT"])))
        squatter.listen()
        up = subprocess.run(
            [*KILN, "up"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    assert up.returncode == 1
    assert up.stdout.strip().splitlines()[-1] == (
        f"StartFailed: judge-server cannot start: 127.0.0.1:{env['KILN_JUDGE_PORT']} is in "
        "use by another process (another kiln stack? `kiln down`, or `kiln up --base-port N` "
        "elsewhere)"
    )
    assert "Traceback" not in up.stdout + up.stderr
    assert load_stack(tmp_path / "home") is None
    assert not (tmp_path / "home" / "logs").exists(), "nothing was started"
