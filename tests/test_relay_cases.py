"""Every real-world case, end to end: front → relay → SMTP server on loopback, and → Maildir.

The oracle is each case's expect.json (tests/cases/README.md). Cases whose
harness.json scripts a failing server are run here against a well-behaved
server (their envelope/header/body expectations still hold); the failure
scripts themselves are exercised in test_relay_scenarios.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import oracle
from tests.support.relay import RelayEnv, current_login
from tests.support.smtpserver import ScriptedSMTPServer

CASES = oracle.all_cases()


def _domain_folded(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}" if at else address


def _expected_rcpts(case: oracle.Case) -> list[str]:
    return sorted({_domain_folded(a) for a in case.expect["envelope_to"]})


def _submit(case: oracle.Case, env: RelayEnv) -> bool:
    """Run the front; return whether something was spooled that the relay must deliver."""
    result = env.submit(case.args, case.stdin, argv0=case.argv0)
    assert result.code == case.expect["exit_code"], result.stderr
    if case.expect["envelope_from"] is None:
        assert result.files == [], "nothing may be spooled"
        return False
    return True


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_over_smtp(case: oracle.Case, tmp_path: Path) -> None:
    user = current_login()
    with ScriptedSMTPServer() as server:
        env = RelayEnv(tmp_path, "smtp", smtp={"host": "127.0.0.1", "port": server.port})
        if not _submit(case, env):
            return
        log = env.run_once()
        server.wait_idle()
        delivered = server.delivered()
    assert delivered, f"nothing delivered; relay log:\n{log}"
    senders = {t.sender for t in delivered}
    assert senders == {oracle.substitute(case.expect["envelope_from"], user)}
    rcpts = sorted({_domain_folded(r) for t in delivered for r in t.accepted_recipients})
    assert rcpts == [_domain_folded(oracle.substitute(r, user)) for r in _expected_rcpts(case)]
    for txn in delivered:
        assert txn.data is not None and txn.data_wire is not None
        assert oracle.check_message(case, txn.data, user) == []
        assert oracle.check_wire(txn.data_wire, txn.mail_params) == []
    assert env.queue() == [], "the queue must be empty after delivery"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_into_maildir(case: oracle.Case, tmp_path: Path) -> None:
    user = current_login()
    env = RelayEnv(tmp_path, "maildir")
    if not _submit(case, env):
        return
    log = env.run_once()
    files = env.maildir_files()
    assert files, f"nothing delivered; relay log:\n{log}"
    delivered_to: set[str] = set()
    for path in files:
        data = path.read_bytes()
        return_path, delivered, message = data.split(b"\n", 2)
        sender = oracle.substitute(case.expect["envelope_from"], user)
        assert return_path == f"Return-Path: <{sender}>".encode()
        delivered_to.add(_domain_folded(delivered.decode().split(": ", 1)[1]))
        assert b"\r" not in message, "a Maildir file uses LF line ends"
        assert oracle.check_message(case, message, user) == []
    assert sorted(delivered_to) == [
        _domain_folded(oracle.substitute(r, user)) for r in _expected_rcpts(case)
    ]
    assert env.queue() == []
