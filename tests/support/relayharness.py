"""Front → relay → server, for end-to-end relay tests.

A RelayHarness owns one temporary spool and one TOML config; it submits messages
with the installed front (`spoolmail-sendmail`), runs the installed relay
(`spoolmail relay --config FILE --once`) as a subprocess, and reads the private
queue's state files (queue/<id>.json, docs/architecture.md) to see what the relay
decided. Every relay run's stderr is kept: the relay logs one line per attempt.

Retries are driven without sleeping: the retry schedule is long (1 h), so a second
`--once` run right after a deferral must not touch the server (the retry is not
immediate), and `spoolmail flush` (the operator's "retry now") makes the next run
attempt again.

    with ScriptedSMTPServer(script) as server:
        relay = RelayHarness(tmp_path, smtp_port=server.port)
        relay.submit(["-i", "-f", "app@example.com", "--", "u@example.org"], MESSAGE)
        relay.run_once()
        assert relay.queue() == []
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import json
import os
import re
import subprocess
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spoolmail.config import load as load_config
from spoolmail.relay import spooldirs
from tests.support.front import Result, run_front
from tests.support.smtpserver import Transaction

SCRIPTS = Path(sysconfig.get_path("scripts"))
SPOOLMAIL = SCRIPTS / "spoolmail"
HOSTNAME = "host.example.org"  # the oracles' hostname and domain (tests/cases/README.md)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(top: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items() if v is not None]
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RelayRun:
    code: int
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def attempt_lines(self) -> list[str]:
        """The one-line-per-attempt log lines: `<id>: to=<…>, relay=…, status=…`."""
        return [line for line in self.lines if ": to=<" in line and ", status=" in line]


class RelayHarness:
    def __init__(
        self,
        root: Path,
        *,
        smtp_port: int | None = None,
        transport: str = "smtp",
        top: Mapping[str, Any] | None = None,
        delivery: Mapping[str, Any] | None = None,
        smtp: Mapping[str, Any] | None = None,
        tables: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.spool = root / "spool"
        self.config = root / "spoolmail.toml"
        self.env_extra = dict(env or {})
        self.runs: list[RelayRun] = []
        top_table: dict[str, Any] = {
            "spool": str(self.spool),
            "state_dir": str(root / "state"),
            "hostname": HOSTNAME,
            "domain": HOSTNAME,
            **(top or {}),
        }
        delivery_table: dict[str, Any] = {
            "transport": transport,
            "retry_schedule": ["1h"],
            **(delivery or {}),
        }
        all_tables: dict[str, Mapping[str, Any]] = {"delivery": delivery_table}
        if transport == "smtp":
            smtp_table: dict[str, Any] = {"host": "127.0.0.1", "port": smtp_port, "tls": "none"}
            smtp_table.update(smtp or {})
            all_tables["smtp"] = smtp_table
        all_tables.update(tables or {})
        self.config.write_text(toml_text(top_table, all_tables))
        # The relay creates these on start; doing it here lets the front run first.
        spooldirs.prepare(load_config(str(self.config)))

    # -- running things

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "SPOOLMAIL_CONFIG": str(self.config),
            **self.env_extra,
        }

    def submit(
        self, args: Sequence[str], message: bytes, *, argv0: str = "sendmail"
    ) -> Result:
        before = set(self.incoming())
        result = run_front(args, stdin=message, spool=self.spool, argv0=argv0, config=self.config)
        assert result.code == 0, f"front exited {result.code}: {result.stderr}"
        added = [f for f in result.files if f.name not in before]
        assert len(added) == 1, f"expected one new spooled message: {result.entries}"
        return result

    def spoolmail(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        if not SPOOLMAIL.exists():
            raise AssertionError(f"{SPOOLMAIL} is not installed: run ./dev test")
        return subprocess.run(
            [str(SPOOLMAIL), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )

    def run_once(self, timeout: float = 120) -> RelayRun:
        """`spoolmail relay --config FILE --once`; asserts it exits 0."""
        proc = self.spoolmail("relay", "--config", str(self.config), "--once", timeout=timeout)
        run = RelayRun(proc.returncode, proc.stderr)
        self.runs.append(run)
        assert run.code == 0, f"relay --once exited {run.code}:\n{run.stderr}"
        return run

    def flush(self) -> None:
        """The operator's `spoolmail flush`: retry every deferred message on the next run."""
        proc = self.spoolmail("--config", str(self.config), "flush")
        assert proc.returncode == 0, f"spoolmail flush exited {proc.returncode}: {proc.stderr}"

    @property
    def log(self) -> str:
        return "".join(run.stderr for run in self.runs)

    # -- the queue

    def queue(self) -> list[dict[str, Any]]:
        """Every queued message's state (queue/<id>.json), by id."""
        queue_dir = self.spool / "queue"
        states = []
        for path in sorted(queue_dir.glob("*.json")):
            state: dict[str, Any] = json.loads(path.read_text())
            assert (queue_dir / f"{state['id']}.msg").is_file(), f"{path} has no .msg beside it"
            states.append(state)
        return states

    def queued_message(self, queue_id: str) -> bytes:
        return (self.spool / "queue" / f"{queue_id}.msg").read_bytes()

    def quarantine(self) -> list[str]:
        return sorted(os.listdir(self.spool / "quarantine"))

    def incoming(self) -> list[str]:
        return sorted(os.listdir(self.spool / "incoming"))


# ----------------------------------------------------------------- checking messages


def header_values(message: bytes, name: str) -> list[str]:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    return [str(v) for v in parsed.get_all(name, [])]


def check_wire_rules(txn: Transaction, server_offers_8bitmime: bool = True) -> None:
    """What tests/cases/README.md checks on every delivered message."""
    wire = txn.data_wire
    data = txn.data
    assert wire is not None and data is not None, "no DATA was received"
    where = f"transaction {txn.connection}.{txn.number} from <{txn.sender}>"
    assert re.search(rb"(?<!\r)\n", wire) is None, f"bare LF on the wire in {where}"
    assert re.search(rb"\r(?!\n)", wire) is None, f"bare CR on the wire in {where}"
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""], f"not terminated by CRLF.CRLF in {where}"
    for line in lines[:-2]:
        assert len(line) <= 998, f"line of {len(line)} octets on the wire in {where}"
        assert not line.startswith(b".") or line.startswith(b".."), (
            f"line not dot-stuffed in {where}: {line[:60]!r}"
        )
    if any(b > 0x7F for b in wire):
        assert "BODY=8BITMIME" in txn.mail_params.upper().split(), (
            f"8-bit data without BODY=8BITMIME in {where}"
        )
        assert server_offers_8bitmime, f"8-bit data to a server without 8BITMIME in {where}"
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    for name, count in (("Date", 1), ("From", 1), ("Message-ID", 1)):
        found = header_values(head, name)
        assert len(found) == count, f"{len(found)} {name} field(s) in {where}"
    for name in ("Bcc", "Resent-Bcc"):
        assert header_values(head, name) == [], f"{name} left in {where}"
    if txn.sender == "":
        assert header_values(head, "Auto-Submitted") == ["auto-replied"], where


@dataclass(frozen=True)
class DSN:
    """A delivered RFC 3464 report, taken apart."""

    txn: Transaction
    message: email.message.Message
    text: str  # the human-readable part
    per_message: email.message.Message
    per_recipient: list[email.message.Message]
    returned: str  # the returned headers (text/rfc822-headers) or message

    def recipient(self, address: str) -> email.message.Message:
        for fields in self.per_recipient:
            final = fields.get("Final-Recipient", "").split(";", 1)[-1].strip()
            if final.lower() == address.lower():
                return fields
        raise AssertionError(f"no Final-Recipient {address} in the DSN: {self.per_recipient}")


def parse_dsn(txn: Transaction) -> DSN:
    """Check the DSN's structure (RFC 3464/6522) and return its parts."""
    assert txn.data is not None
    assert txn.sender == "", f"a bounce must use MAIL FROM:<>, got <{txn.sender}>"
    message = email.message_from_bytes(txn.data, policy=email.policy.compat32)
    assert message.get_content_type() == "multipart/report", message.get_content_type()
    assert message.get_param("report-type") == "delivery-status"
    assert message.get("Auto-Submitted") == "auto-replied"
    sender = email.utils.parseaddr(message.get("From", ""))[1]
    assert sender.lower().startswith("mailer-daemon@"), f"DSN From: {message.get('From')}"
    parts = message.get_payload()
    assert isinstance(parts, list) and len(parts) >= 2, "a report has at least two parts"
    first, status = parts[0], parts[1]
    assert isinstance(first, email.message.Message)
    assert isinstance(status, email.message.Message)
    assert first.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, "per-message and per-recipient fields"
    fields = [b for b in blocks if isinstance(b, email.message.Message)]
    assert len(fields) == len(blocks)
    returned = ""
    if len(parts) > 2:
        third = parts[2]
        assert isinstance(third, email.message.Message)
        assert third.get_content_type() in ("text/rfc822-headers", "message/rfc822")
        payload = third.get_payload(decode=False)
        returned = payload if isinstance(payload, str) else str(payload)
    text = first.get_payload(decode=True)
    assert isinstance(text, bytes)
    return DSN(
        txn=txn,
        message=message,
        text=text.decode("utf-8", "replace"),
        per_message=fields[0],
        per_recipient=fields[1:],
        returned=returned,
    )


def wait_until(predicate: Any, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)
