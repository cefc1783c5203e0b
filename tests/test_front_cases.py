"""Every case under tests/cases/ (format: tests/cases/README.md) through the installed front.

A new case directory is picked up automatically. The front's part of each
oracle is checked: the exit code, and the spool file's envelope (argv
recipients, -f sender or none, -t/-i flags, -F name) and message bytes
(stdin after the '.' rule; for -bs, the SMTP transactions of the dialogue).
Qualification, Bcc removal and delivery are the relay's part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import oracle
from tests.support.front import Result, SpoolFile, after_dot_rule, make_spool, run_front

CASES = oracle.all_cases()
DOMAIN = "host.example.org"  # the oracles' configured domain (cases/README.md)
Case = oracle.Case


def qualify(address: str) -> str:
    return address if "@" in address else f"{address}@{DOMAIN}"


def distinct(addresses: list[str]) -> list[str]:
    return sorted({qualify(a) for a in addresses})


def spooled_nothing(result: Result) -> bool:
    return result.entries == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(tmp_path: Path, case: oracle.Case) -> None:
    result = run_front(case.args, stdin=case.stdin, spool=make_spool(tmp_path), argv0=case.argv0)
    assert result.code == case.expect["exit_code"], result.stderr
    if case.expect["envelope_to"] == [] or case.expect["envelope_from"] is None:
        assert spooled_nothing(result), result.entries
        if result.code:
            result.error_line()
        return
    if case.smtp:
        check_smtp(case, result)
    else:
        check_pipe(case, result)


def check_spool_file(spooled: SpoolFile) -> None:
    assert spooled.mode == 0o640
    assert spooled.nlink == 1


def check_pipe(case: Case, result: Result) -> None:
    assert result.stderr == ""
    assert result.temps == []
    spooled = result.only_file
    check_spool_file(spooled)
    env = spooled.envelope
    assert env.flags == "".join(sorted(case.flags))
    assert env.sender == case.sender
    assert env.fullname == case.fullname
    expected_to = case.expect["envelope_to"]
    if "t" in case.flags:
        assert set(distinct(env.recipients)) <= set(expected_to)
    else:
        assert distinct(env.recipients) == expected_to
    if case.meta is not None:
        assert env.recipients == case.meta["argv_recipients"]
    assert spooled.message == after_dot_rule(case.stdin, "i" in case.flags)


# -bs ------------------------------------------------------------------------

SUCCESS = {"HELO": 250, "EHLO": 250, "MAIL": 250, "RCPT": 250, "RSET": 250, "NOOP": 250,
           "VRFY": 252, "HELP": 214, "QUIT": 221}


@dataclass(frozen=True)
class Transaction:
    sender: str
    recipients: tuple[str, ...]
    data: bytes


def angle_path(arg: bytes) -> str:
    """The address inside <...> of 'MAIL FROM:<a>' / 'RCPT TO:<a>' (parameters dropped)."""
    start = arg.index(b"<")
    return arg[start + 1 : arg.index(b">", start)].decode("utf-8")


def client_dialogue(stdin: bytes) -> tuple[list[int], list[Transaction]]:
    """What a well-behaved server answers to this client side, and what it accepts."""
    codes = [220]
    done: list[Transaction] = []
    sender = ""
    rcpts: list[str] = []
    lines = iter(stdin.split(b"\n"))
    for raw in lines:
        line = raw.removesuffix(b"\r")
        if not line:
            continue
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode("ascii")
        if verb == "DATA":
            codes.append(354)
            body: list[bytes] = []
            for data_line in lines:
                if data_line.removesuffix(b"\r") == b".":
                    break
                body.append(data_line[1:] if data_line.startswith(b".") else data_line)
            done.append(Transaction(sender, tuple(rcpts), b"\n".join(body) + b"\n"))
            rcpts = []
            codes.append(250)
            continue
        assert verb in SUCCESS, f"the case uses {verb}, which this oracle does not model"
        codes.append(SUCCESS[verb])
        if verb == "MAIL":
            sender, rcpts = angle_path(line), []
        elif verb == "RCPT":
            rcpts.append(angle_path(line))
        elif verb == "QUIT":
            break
    return codes, done


def reply_codes(stdout: bytes) -> list[int]:
    """The code of each complete reply (multi-line replies count once)."""
    return [int(line[:3]) for line in stdout.split(b"\r\n") if line[3:4] == b" "]


def case_transactions(case: Case) -> list[Transaction] | None:
    """smtp-envelope.json with its data-*.eml files, when the case has them."""
    spec = case.path / "smtp-envelope.json"
    if not spec.exists():
        return None
    found = []
    for entry in json.loads(spec.read_text("utf-8")):
        found.append(Transaction(
            angle_path(entry["mail_from"].encode()),
            tuple(angle_path(r.encode()) for r in entry["rcpt_to"]),
            (case.path / entry["data_file"]).read_bytes(),
        ))
    return found


def check_smtp(case: Case, result: Result) -> None:
    codes, expected = client_dialogue(case.stdin)
    assert reply_codes(result.stdout) == codes, result.stdout.decode("utf-8", "replace")
    recorded = case_transactions(case)
    if recorded is not None:
        assert sorted(recorded, key=repr) == sorted(expected, key=repr)
    spooled = []
    for f in result.files:
        check_spool_file(f)
        assert f.envelope.flags == ""
        assert f.envelope.sender is not None
        spooled.append(Transaction(f.envelope.sender, tuple(f.envelope.recipients), f.message))
    assert sorted(spooled, key=repr) == sorted(expected, key=repr)
    assert result.temps == []
    assert {t.sender for t in spooled} == {case.expect["envelope_from"]}
    assert distinct([r for t in spooled for r in t.recipients]) == case.expect["envelope_to"]
