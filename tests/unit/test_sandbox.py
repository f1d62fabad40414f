"""The sandbox contains network, file writes outside its directory, processes, ctypes,
runaway CPU and memory, and truncates output."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=6, memory_bytes=256 * 1024**2, output_bytes=1000)


def test_ordinary_code_runs_and_may_use_its_directory() -> None:
    result = run_python(
        "open('notes.txt', 'w').write('42')\nprint(open('notes.txt').read())", LIMITS
    )
    assert result.ok and result.stdout == "42\n"


@pytest.mark.parametrize(
    "code,denied",
    [
        ("import socket\nsocket.socket().connect(('127.0.0.1', 9))", "socket"),
        ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')", "socket"),
        ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
        ("import os\nos.system('true')", "os.system"),
        ("import os\nos.fork()", "os.fork"),
        ("import os\nwhile True: os.fork()", "os.fork"),
        ("import ctypes", "import ctypes"),
        ("__import__('ctypes')", "import ctypes"),
        ("import multiprocessing", "import multiprocessing"),
    ],
)
def test_denied(code: str, denied: str) -> None:
    result = run_python(code, LIMITS)
    assert not result.ok and denied in result.stderr and "sandbox: " in result.stderr


def test_no_writes_outside(tmp_path: Path) -> None:
    target = tmp_path / "evil.txt"
    for code in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.open({str(target)!r}, os.O_CREAT | os.O_WRONLY)",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"open('../{target.name}', 'w').write('x')",
    ):
        result = run_python(code, LIMITS)
        assert not result.ok and "outside the sandbox directory" in result.stderr, code
    assert not target.exists() and tmp_path.exists()


def test_runaway_cpu_is_killed() -> None:
    result = run_python("while True:\n    pass", LIMITS)
    assert result.timed_out and not result.ok


def test_sleeping_forever_hits_the_wall_clock() -> None:
    result = run_python("import time\ntime.sleep(60)", SandboxLimits(wall_seconds=1))
    assert result.timed_out


def test_memory_bomb_fails() -> None:
    result = run_python("x = bytearray(2 * 1024**3)", LIMITS)
    assert not result.ok and "MemoryError" in result.stderr


def test_output_truncated() -> None:
    result = run_python("print('a' * 100000)", LIMITS)
    assert result.truncated and result.stdout.startswith("a" * 1000)
    assert len(result.stdout) < 1100
