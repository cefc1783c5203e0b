"""Front → relay → scripted server: a thin layer over tests/support/relay.py's RelayEnv.

RelayEnv owns the spool, the config and the subprocesses; this adds what the failure
scenarios need: a retry schedule of 1 h (so a run right after a deferral must not
touch the server, and `spoolmail flush` is how a test says "retry now" without
sleeping), the relay's log lines per run, and checks on what the server received
(the wire rules of tests/cases/README.md, the structure of an RFC 3464 DSN).

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
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spoolmail.config import Config
from spoolmail.relay import spooldirs
from spoolmail.relay.queue import Entry
from tests.support import oracle
from tests.support.front import Result
from tests.support.relay import HOSTNAME, SPOOLMAIL, RelayEnv
from tests.support.smtpserver import Transaction

RETRY_SCHEDULE = ["1h"]


def _no_none(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if v is not None}


@dataclass(frozen=True)
class RelayRun:
    log: str

    def attempt_lines(self) -> list[str]:
        """The one-line-per-attempt log lines: `<id>: to=<…>, relay=…, status=…`."""
        return [line for line in self.log.splitlines() if ": to=<" in line and ", status=" in line]


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
    ) -> None:
        sections: dict[str, Any] = {"domain": HOSTNAME, **_no_none(top or {})}
        sections["delivery"] = _no_none({"retry_schedule": RETRY_SCHEDULE, **(delivery or {})})
        if transport == "smtp":
            sections["smtp"] = _no_none(
                {"host": "127.0.0.1", "port": smtp_port, "tls": "none", **(smtp or {})}
            )
        for name, table in (tables or {}).items():
            sections[name] = _no_none(table)
        self.env = RelayEnv(root, transport, **sections)
        self.runs: list[RelayRun] = []
        # What the relay does on start, done in-process: saves a relay run per test.
        spooldirs.prepare(Config(spool=str(self.env.spool)))

    @property
    def spool(self) -> Path:
        return self.env.spool

    def submit(self, args: Sequence[str], message: bytes, *, argv0: str = "sendmail") -> Result:
        """Run the front; asserts exit 0 and one new spooled message."""
        incoming = self.spool / "incoming"
        before = set(p.name for p in incoming.iterdir()) if incoming.is_dir() else set()
        result = self.env.submit(args, message, argv0=argv0)
        assert result.code == 0, f"front exited {result.code}: {result.stderr}"
        added = [f for f in result.files if f.name not in before]
        assert len(added) == 1, f"expected one new spooled message: {result.entries}"
        return result

    def run_once(self, timeout: float = 120) -> RelayRun:
        """`spoolmail relay --once` (asserts exit 0; a hang fails with the relay's stacks)."""
        env = {**self.env.env(), "PYTHONFAULTHANDLER": "1"}
        proc = subprocess.Popen(
            [str(SPOOLMAIL), "relay", "--once"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            _, err = proc.communicate(timeout=30)
            raise AssertionError(
                f"relay --once still running after {timeout}s; its log and stacks:\n"
                + err.decode(errors="replace")
            ) from None
        log = err.decode(errors="replace")
        assert proc.returncode == 0, f"relay --once exited {proc.returncode}:\n{log}"
        run = RelayRun(log)
        self.runs.append(run)
        return run

    def flush(self) -> None:
        """The operator's `spoolmail flush`: retry every deferred message on the next run."""
        self.env.cli("flush", check=True)

    def queue(self) -> list[Entry]:
        return self.env.queue()

    @property
    def log(self) -> str:
        return "".join(run.log for run in self.runs)


# ----------------------------------------------------------------- checking messages


def header_values(message: bytes, name: str) -> list[str]:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    return [str(v) for v in parsed.get_all(name, [])]


def check_wire_rules(txn: Transaction, server_offers_8bitmime: bool = True) -> None:
    """What tests/cases/README.md checks on every delivered message, and a bit more."""
    wire = txn.data_wire
    data = txn.data
    assert wire is not None and data is not None, "no DATA was received"
    where = f"transaction {txn.connection}.{txn.number} from <{txn.sender}>"
    problems = oracle.check_wire(wire, txn.mail_params) + oracle.check_invariants(data)
    assert problems == [], f"{where}: {problems}"
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""], f"not terminated by CRLF.CRLF in {where}"
    if any(b > 0x7F for b in wire):
        assert server_offers_8bitmime, f"8-bit data to a server without 8BITMIME in {where}"
    if txn.sender == "":
        head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
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
