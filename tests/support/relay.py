"""A relay under test: its own spool, state and config under a temp dir.

    env = RelayEnv(tmp_path, transport="smtp", smtp={"port": server.port})
    env.submit(["-t", "-i"], stdin=b"To: a@example.org\\n\\nhi\\n")
    env.run_once()                      # `spoolmail relay --once`
    with env.running() as relay: ...    # the daemon in the background; relay.log()

The front is run with tests/support/front.py's run_front (the installed
console script), the relay as the installed `spoolmail` console script.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from spoolmail.relay.queue import Entry
from tests.support.front import Arg, Result, installed_script, run_front

SPOOLMAIL = installed_script("spoolmail")
HOSTNAME = "host.example.org"


def current_login() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(table: Mapping[str, Any]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, Mapping)]
    for name, sub in table.items():
        if isinstance(sub, Mapping):
            lines.append(f"\n[{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in sub.items())
    return "\n".join(lines) + "\n"


class RunningRelay:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"relay log never showed {text!r}:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=90)


class RelayEnv:
    def __init__(self, root: Path, transport: str = "maildir", **sections: Any) -> None:
        self.root = root
        self.spool = root / "spool"
        self.state = root / "state"
        self.config = root / "spoolmail.toml"
        self.settings: dict[str, Any] = {
            "spool": str(self.spool),
            "state_dir": str(self.state),
            "hostname": HOSTNAME,
            "delivery": {"transport": transport},
        }
        self.configure(**sections)

    def configure(self, **sections: Any) -> None:
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(self.settings.get(key), dict):
                self.settings[key].update(value)
            else:
                self.settings[key] = value
        self.config.write_text(to_toml(self.settings))

    @property
    def maildir(self) -> Path:
        return self.state / "Maildir"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOLMAIL_")}
        env["SPOOLMAIL_CONFIG"] = str(self.config)
        return env

    def prepare(self) -> None:
        """Create the spool as the relay would (the relay checks its modes)."""
        proc = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=self.env(),
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()

    def submit(self, args: Sequence[Arg], stdin: bytes, argv0: str = "sendmail") -> Result:
        if not (self.spool / "incoming").is_dir():
            self.prepare()
        return run_front(args, stdin=stdin, spool=self.spool, argv0=argv0, config=self.config)

    def run_once(self, timeout: float = 120) -> str:
        """Run `spoolmail relay --once`; return its log (asserts exit 0)."""
        proc = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=self.env(),
                              capture_output=True, timeout=timeout)
        log = proc.stderr.decode(errors="replace")
        assert proc.returncode == 0, log
        return log

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(SPOOLMAIL), "--config", str(self.config), *args],
                              env=self.env(), capture_output=True, text=True, timeout=60)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    @contextlib.contextmanager
    def running(self) -> Iterator[RunningRelay]:
        if not (self.spool / "incoming").is_dir():
            self.prepare()
        log_path = self.root / f"relay-{time.monotonic_ns()}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(SPOOLMAIL), "relay"], env=self.env(),
                                    stdout=log, stderr=log)
        relay = RunningRelay(proc, log_path)
        try:
            relay.wait_log("relay started")
            yield relay
        finally:
            relay.stop()

    def queue(self) -> list[Entry]:
        entries = []
        for path in sorted((self.spool / "queue").glob("*.json")):
            with contextlib.suppress(FileNotFoundError):  # a running relay removed it
                entries.append(Entry.from_json(path.read_bytes()))
        return entries

    def maildir_files(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def quarantined(self) -> list[str]:
        return sorted(p.name for p in (self.spool / "quarantine").iterdir()
                      if p.name.endswith(".reason"))


def wait_until(predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")
