"""Runs model-written Python in a separate, limited process.

Layers, each enough on its own for its threat: a fresh interpreter (`-I`, empty environment)
in a private temporary directory; rlimits on CPU seconds, address space, file size and open
files; a wall-clock kill of the whole process group; a network namespace when the kernel
lets us make one; and a Python audit hook (it cannot be removed once added) that refuses
sockets, subprocesses, fork/exec, ctypes, and any write, delete or rename outside the
directory. Output is truncated to a byte limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_GUARD = r"""
import os, resource, sys
_cpu, _memory, _file, _files = (int(v) for v in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (_memory, _memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (_file, _file))
resource.setrlimit(resource.RLIMIT_NOFILE, (_files, _files))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
try:  # an empty network namespace where the kernel allows one; the audit hook covers the rest
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        _libc.unshare(0x10000000 | 0x40000000)  # with CLONE_NEWUSER when unprivileged
    del ctypes, _libc
except OSError:
    pass
for _name in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
    del sys.modules[_name]  # so that user code importing ctypes goes through the hook
_ROOT = os.path.realpath(os.getcwd())
_code = sys.stdin.read()
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "os.kill", "os.killpg", "ctypes.", "winreg.", "pty.")
_PATHS = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
          "os.symlink", "os.link", "os.truncate", "os.utime", "shutil.rmtree", "os.listdir")

def _inside(path):
    try:
        path = os.fsdecode(path)
    except TypeError:
        return False
    real = os.path.realpath(os.path.join(_ROOT, path))
    return real == _ROOT or real.startswith(_ROOT + os.sep)

def _hook(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "multiprocessing"):
        raise PermissionError(f"sandbox: import {args[0]} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode and any(c in str(mode) for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing and not isinstance(path, int) and not _inside(path):
            raise PermissionError(f"sandbox: writing {path} outside the sandbox directory")
    if event in _PATHS and event != "os.listdir":
        for value in args:
            if isinstance(value, (str, bytes, os.PathLike)) and not _inside(value):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")

sys.addaudithook(_hook)
del _hook
exec(compile(_code, "<sandbox>", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 512 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024
    open_files: int = 64
    output_bytes: int = 8192


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    truncated: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def _clip(data: bytes, limit: int, keep_tail: bool = False) -> tuple[str, bool]:
    """Head of stdout (what the program printed first), tail of stderr (where errors are)."""
    if len(data) <= limit:
        return data.decode(errors="replace"), False
    if keep_tail:
        return "[output truncated] ...\n" + data[-limit:].decode(errors="replace"), True
    return data[:limit].decode(errors="replace") + "\n... [output truncated]", True


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Runs code in a fresh limited interpreter; returns its (truncated) output."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="kiln-sandbox-") as workdir:
        process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _GUARD,
                str(limits.cpu_seconds),
                str(limits.memory_bytes),
                str(limits.file_bytes),
                str(limits.open_files),
            ],
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": workdir,
                "PYTHONHASHSEED": "0",
                "OPENBLAS_NUM_THREADS": "1",
                "OMP_NUM_THREADS": "1",
            },
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = process.communicate(code.encode(), timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        if process.returncode is not None and process.returncode < 0:
            timed_out = timed_out or -process.returncode in (signal.SIGXCPU, signal.SIGKILL)
        stdout, cut_out = _clip(out, limits.output_bytes)
        stderr, cut_err = _clip(err, limits.output_bytes, keep_tail=True)
        return SandboxResult(stdout, stderr, process.returncode, timed_out, cut_out or cut_err)
