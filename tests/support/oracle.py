"""The real-world cases (tests/cases/) and their oracle (tests/cases/README.md)."""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spoolmail import headerblock

CASES = Path(__file__).resolve().parent.parent / "cases"
MAX_WIRE_LINE = 998


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    argv0: str
    args: list[str]
    stdin: bytes
    expect: dict[str, Any]
    harness: dict[str, Any] | None
    meta: dict[str, Any] | None

    @property
    def options(self) -> list[str]:
        return self.args[: self.args.index("--")] if "--" in self.args else self.args

    @property
    def smtp(self) -> bool:
        return "-bs" in self.options

    @property
    def flags(self) -> str:
        opts = self.options
        return ("i" if "-i" in opts or "-oi" in opts else "") + ("t" if "-t" in opts else "")

    @property
    def fullname(self) -> str | None:
        for i, arg in enumerate(self.options):
            if arg.startswith("-F"):
                return arg[2:] or self.options[i + 1]
        return None

    @property
    def sender(self) -> str | None:
        """The envelope sender the front records: the -f value, else none (the file owner's)."""
        expected = self.expect["envelope_from"]
        assert isinstance(expected, str)
        return None if "{user}" in expected else expected


def all_cases() -> list[Case]:
    found = []
    for path in sorted(CASES.glob("*/*/expect.json")):
        found.append(load(path.parent))
    return found


def load(path: Path) -> Case:
    argv = path.joinpath("argv").read_text(encoding="utf-8").split("\n")
    if argv and argv[-1] == "":
        argv.pop()
    harness = path / "harness.json"
    meta = path / "meta.json"
    return Case(
        name=f"{path.parent.name}/{path.name}",
        path=path,
        argv0=argv[0],
        args=argv[1:],
        stdin=(path / "stdin.eml").read_bytes(),
        expect=json.loads((path / "expect.json").read_text(encoding="utf-8")),
        harness=json.loads(harness.read_text(encoding="utf-8")) if harness.exists() else None,
        meta=json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else None,
    )


def substitute(text: str, user: str) -> str:
    return text.replace("{user}", user)


def _fields(message: bytes) -> tuple[list[headerblock.Field], bytes]:
    text = message.replace(b"\r\n", b"\n")
    fields, start = headerblock.split(text)
    return fields, text[start:]


def _matches(fields: list[headerblock.Field], entry: str) -> bool:
    name, sep, text = entry.partition(":")
    name = name.strip().lower()
    text = text.strip()
    for field in fields:
        if name != "*" and field.lname != name:
            continue
        if not sep or text in field.value():
            return True
    return False


def _top_cte(fields: list[headerblock.Field]) -> str:
    for field in fields:
        if field.lname == "content-transfer-encoding":
            return field.value().lower()
    return "7bit"


def decoded_body(received: bytes, submitted: bytes) -> str:
    """The body as the checker reads it: LF line ends, relay-added encoding undone."""
    fields, body = _fields(received)
    original, _ = _fields(submitted)
    cte = _top_cte(fields)
    if cte != _top_cte(original):
        if cte == "quoted-printable":
            body = binascii.a2b_qp(body)
        elif cte == "base64":
            body = binascii.a2b_base64(body)
    return body.decode("utf-8", "replace")


def check_message(case: Case, received: bytes, user: str) -> list[str]:
    """Everything expect.json says about the received message; returns the failures."""
    problems: list[str] = []
    fields, _ = _fields(received)
    exp = case.expect
    for entry in exp.get("headers_present", []):
        entry = substitute(entry, user)
        if not _matches(fields, entry):
            problems.append(f"header missing: {entry!r}")
    for entry in exp.get("headers_absent", []):
        entry = substitute(entry, user)
        if _matches(fields, entry):
            problems.append(f"header present but must not be: {entry!r}")
    body = decoded_body(received, case.stdin)
    for text in exp.get("body_contains", []):
        if substitute(text, user) not in body:
            problems.append(f"body lacks {text!r}")
    for text in exp.get("body_not_contains", []):
        if substitute(text, user) in body:
            problems.append(f"body contains {text!r}")
    problems += check_invariants(received)
    return problems


def check_invariants(received: bytes) -> list[str]:
    """Checked on every delivered message (tests/cases/README.md)."""
    problems: list[str] = []
    fields, _ = _fields(received)
    names = [f.lname for f in fields]
    for name in ("date", "from"):
        if names.count(name) != 1:
            problems.append(f"{names.count(name)} {name} fields (want exactly one)")
    if "message-id" not in names:
        problems.append("no Message-ID")
    for name in ("bcc", "resent-bcc"):
        if name in names:
            problems.append(f"{name} field present")
    return problems


def check_wire(data_wire: bytes, mail_params: str) -> list[str]:
    """CRLF only, no over-long line, dot-stuffed, 8-bit only with BODY=8BITMIME."""
    problems: list[str] = []
    if re.search(rb"\r(?!\n)", data_wire) or re.search(rb"(?<!\r)\n", data_wire):
        problems.append("bare CR or LF on the wire")
    lines = data_wire.split(b"\r\n")
    if any(len(line) > MAX_WIRE_LINE for line in lines):
        problems.append("line over 998 octets on the wire")
    body_lines = lines[:-2] if data_wire.endswith(b"\r\n.\r\n") else lines
    if any(line.startswith(b".") and not line.startswith(b"..") for line in body_lines):
        problems.append("a leading dot not doubled (dot-stuffing) inside the data")
    if any(b >= 0x80 for b in data_wire) and "BODY=8BITMIME" not in mail_params.upper():
        problems.append("8-bit data without BODY=8BITMIME")
    return problems
