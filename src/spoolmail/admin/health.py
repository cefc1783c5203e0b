"""`spoolmail status`: is the relay alive, is the queue moving (exit 0/1/2 for monitors)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from spoolmail.config import Config

OK, WARNING, CRITICAL = 0, 1, 2
LABEL = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}


@dataclass
class Report:
    level: int = OK
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def raise_to(self, level: int, problem: str) -> None:
        self.level = max(self.level, level)
        self.problems.append(problem)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def check(cfg: Config, warn_age: float, crit_age: float) -> Report:
    report = Report()
    now = time.time()
    try:
        with open(cfg.status_file, "rb") as f:
            state = json.loads(f.read())
    except FileNotFoundError:
        report.raise_to(CRITICAL, f"relay has never run ({cfg.status_file} missing)")
        state = None
    except PermissionError:
        raise  # not a state of the relay: the caller may not look
    except (OSError, ValueError) as exc:
        report.raise_to(CRITICAL, f"cannot read {cfg.status_file}: {exc}")
        state = None
    if state is not None:
        beat = now - float(state.get("heartbeat", 0))
        interval = float(state.get("heartbeat_interval", 15))
        running = beat <= 3 * interval + 5 and not state.get("stopped")
        report.lines.append(f"relay: {'running' if running else 'NOT running'} "
                            f"(pid {state.get('pid')}, last heartbeat {_age(beat)} ago, "
                            f"delivery by {state.get('transport')})")
        if not running:
            report.raise_to(CRITICAL, "relay is not running")
        queue = state.get("queue", {})
        report.lines.append(f"queue: {queue.get('total', 0)} messages, "
                            f"{queue.get('deferred', 0)} deferred, {queue.get('held', 0)} held, "
                            f"{queue.get('active', 0)} in delivery")
        oldest = queue.get("oldest")
        if oldest:
            age = now - float(oldest)
            report.lines.append(f"oldest message: {_age(age)}")
            if age >= crit_age:
                report.raise_to(CRITICAL, f"oldest message is {_age(age)} old")
            elif age >= warn_age:
                report.raise_to(WARNING, f"oldest message is {_age(age)} old")
        quarantined = int(state.get("quarantined", 0))
        report.lines.append(f"quarantined: {quarantined}")
        if quarantined:
            report.raise_to(WARNING, f"{quarantined} file(s) in quarantine")
        if state.get("last_error"):
            report.lines.append(f"last delivery error: {state['last_error']}")
    try:
        st = os.statvfs(cfg.spool)
        free = st.f_bavail * st.f_frsize
        report.lines.append(f"free space on the spool: {free // (1024 * 1024)} MiB")
        if free < cfg.min_free_space:
            report.raise_to(CRITICAL, "spool below its free-space floor")
    except OSError as exc:
        report.raise_to(CRITICAL, f"cannot stat {cfg.spool}: {exc.strerror}")
    return report
