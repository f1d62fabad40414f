"""`python -m services.cli.supervisor <home>`: keeps the embedded stack's processes running.

Started by `kiln up`, stopped first by `kiln down`. Every POLL_S it looks for processes of
<home>/run/stack.json that died and starts them again with their command, environment and
port, after a backoff that doubles with each quick death (BACKOFF_S) and resets once a
process stayed up STABLE_S. Each death and restart is a line in logs/supervisor.log. A
restarted worker's lost job is requeued by its server (services.common.jobs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.embedded import load_stack, pid_alive, respawn, save_stack

log = logging.getLogger("kiln.supervisor")

POLL_S = 1.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
STABLE_S = 60.0


@dataclass
class Restarts:
    """When each dead process is due to start again and how many quick deaths it had."""

    quick_deaths: dict[str, int] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)

    def schedule(self, name: str, lived_s: float, now: float) -> float:
        """Records a death after lived_s of life; returns the backoff before the restart."""
        deaths = 0 if lived_s >= STABLE_S else self.quick_deaths.get(name, 0) + 1
        self.quick_deaths[name] = deaths
        delay = BACKOFF_S[min(deaths, len(BACKOFF_S) - 1)]
        self.due[name] = now + delay
        return delay


def supervise_once(home: Path, restarts: Restarts, now: float) -> list[str]:
    """One pass: schedules the newly dead and restarts those due; returns their names."""
    stack = load_stack(home)
    if stack is None:
        return []
    restarted = []
    for index, proc in enumerate(stack.procs):
        if proc.name == "supervisor":
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)  # reap the ones this process restarted
        if pid_alive(proc.pid):
            continue
        if proc.name not in restarts.due:
            lived = time.time() - proc.started_at
            delay = restarts.schedule(proc.name, lived, now)
            log.warning(
                "%s (pid %d) died after %.0f s; restarting in %.0f s",
                *(proc.name, proc.pid, lived, delay),
            )
        if now >= restarts.due[proc.name]:
            new, _ = respawn(proc)
            stack.procs[index] = new
            del restarts.due[proc.name]
            restarted.append(proc.name)
            log.warning("%s restarted as pid %d (restart %d)", new.name, new.pid, new.restarts)
    if restarted:
        save_stack(stack)
    return restarted


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    home = Path(argv[0])
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    restarts = Restarts()
    log.info("supervising the stack of %s", home)
    while not stopping:
        supervise_once(home, restarts, time.monotonic())
        time.sleep(POLL_S)
    log.info("stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
