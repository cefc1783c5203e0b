"""Front → relay → scripted SMTP server: every failure the next hop can produce.

Each scenario submits with the installed front, runs `spoolmail relay --once`, and
checks the relay's decision from three sides: the bytes the server received
(tests/support/smtpserver.py), the private queue's state files, and the relay's log
lines. The rules (design.md "Guarantees the relay keeps", issue 3):

- 4xx, dropped connections, timeouts, TLS and AUTH failures: keep queued, retry on the
  schedule — never at once, never a bounce.
- 5xx: bounce at once with an RFC 3464 DSN from MAIL FROM:<> to the envelope sender.
- Nothing accepted is lost; a recipient the server accepted is never sent again.

No sleeping for retries: the schedule is 1 h, a second run must not touch the server,
and `spoolmail flush` (the operator's retry-now) makes the next run try again.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import os
import pwd
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from spoolmail.relay.queue import Entry
from tests.support.exim import free_port
from tests.support.relay import HOSTNAME
from tests.support.relayharness import (
    RelayHarness,
    check_wire_rules,
    header_values,
    parse_dsn,
)
from tests.support.smtpserver import (
    DROP,
    RESET,
    Script,
    ScriptedSMTPServer,
    Transaction,
    script_from_harness,
)
from tests.support.tlscert import shared_certificate

CASES = Path(__file__).parent / "cases" / "bugs"
SENDER = "app@example.com"
RCPT = "user@example.org"
ARGS = ["-i", "-f", SENDER, "--", RCPT]
MESSAGE = (
    b"From: app@example.com\n"
    b"To: user@example.org\n"
    b"Subject: relay scenario\n"
    b"\n"
    b"hello\n"
    b".a line that needs dot-stuffing\n"
)
RETRY = 3600.0  # the harness's retry_schedule
LOCAL_SENDER = f"{pwd.getpwuid(os.getuid()).pw_name}@{HOSTNAME}"  # "{user}" in the oracles


@contextmanager
def relay_with(
    tmp_path: Path,
    scripts: Script | Sequence[Script],
    *,
    implicit_tls: bool = False,
    **harness: Any,
) -> Iterator[tuple[ScriptedSMTPServer, RelayHarness]]:
    with ScriptedSMTPServer(scripts, implicit_tls=implicit_tls) as server:
        try:
            yield server, RelayHarness(tmp_path, smtp_port=server.port, **harness)
        except BaseException as exc:
            exc.add_note("scripted server transcript:\n" + server.transcript())
            raise


def originals(server: ScriptedSMTPServer, sender: str = SENDER) -> list[Transaction]:
    return [t for t in server.transactions() if t.sender == sender]


def bounces(server: ScriptedSMTPServer) -> list[Transaction]:
    return [t for t in server.transactions() if t.sender == ""]


def check_all_delivered(server: ScriptedSMTPServer) -> None:
    for txn in server.delivered():
        check_wire_rules(txn)


def assert_deferred(
    relay: RelayHarness, run_started: float, *recipients: str, reply: str | None = None
) -> Entry:
    """One original message queued, these recipients pending, next try a schedule step away."""
    [entry] = [e for e in relay.queue() if not e.is_bounce]
    pending = sorted(r.address for r in entry.pending())
    assert pending == sorted(recipients or (RCPT,)), entry
    assert not entry.held
    assert entry.next_attempt >= run_started + RETRY * 0.9, "retried too soon"
    for rcpt in entry.pending():
        assert rcpt.last_reply, rcpt
        if reply is not None:
            assert reply in rcpt.last_reply, rcpt
    return entry


def retry_now(relay: RelayHarness) -> None:
    relay.flush()
    relay.run_once()


# ------------------------------------------------------------------ temporary failures

TEMPORARY = {
    "greeting-421": (Script(greeting="421 4.3.2 Service shutting down"), "421"),
    "greeting-dropped": (Script(greeting=DROP), None),
    "ehlo-and-helo-refused": (
        Script(ehlo=None, ehlo_refused="502 5.5.2 no EHLO", helo="421 4.7.0 go away"),
        "421",
    ),
    "mail-451": (Script(by_sender={SENDER: {"mail": "451 4.3.0 try later"}}), "451 4.3.0"),
    "mail-421": (Script(by_sender={SENDER: {"mail": "421 4.4.5 too busy"}}), "421 4.4.5"),
    "rcpt-450": (Script(rcpt={RCPT: "450 4.2.1 mailbox busy"}), "450 4.2.1"),
    "rcpt-421": (Script(rcpt={RCPT: "421 4.7.0 closing"}), "421 4.7.0"),
    "data-451": (Script(by_sender={SENDER: {"data": "451 4.3.0 not now"}}), "451 4.3.0"),
    "dot-451": (Script(by_sender={SENDER: {"dot": "451 4.3.0 spool full"}}), "451 4.3.0"),
    "dot-452-multiline": (
        Script(by_sender={SENDER: {"dot": ["452-4.3.1 insufficient", "452 4.3.1 storage"]}}),
        "storage",
    ),
    "dot-421": (Script(by_sender={SENDER: {"dot": "421 4.3.2 shutting down"}}), "421 4.3.2"),
    "drop-mid-data": (Script(data_drop_after_bytes=40), None),
    "drop-after-dot": (Script(dot=DROP), None),
    "reset-after-dot": (Script(dot=RESET), None),
}


@pytest.mark.parametrize("name", list(TEMPORARY))
def test_temporary_failure_defers_then_delivers_once(tmp_path: Path, name: str) -> None:
    failing, reply = TEMPORARY[name]
    with relay_with(tmp_path, [failing, Script()]) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        first = relay.run_once()
        server.wait_idle()
        assert server.delivered() == [], server.transcript()
        assert bounces(server) == [], "a temporary failure must never bounce"
        assert_deferred(relay, started, reply=reply)
        assert any("status=deferred" in line for line in first.attempt_lines()), first.log

        relay.run_once()  # not due yet: the retry is not immediate
        server.wait_idle()
        assert len(server.connections) == 1, "retried before the schedule said so"

        retry_now(relay)
        server.wait_idle()
        [delivered] = server.delivered()
        assert delivered.connection == 2
        assert server.delivered_recipients() == {RCPT: 1}
        assert relay.queue() == [], "delivered but still queued"
        assert bounces(server) == []
        check_all_delivered(server)
        # The retry sends the same queued message, not a regenerated one.
        assert delivered.data is not None
        for txn in originals(server)[:-1]:
            assert txn.data is None or delivered.data.startswith(txn.data)


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data"])
def test_a_hung_server_times_out_and_defers(tmp_path: Path, stage: str) -> None:
    """Every phase has a finite timeout (BC-35 notes; nullmailer #75): 1 s here, 2 s silence.

    The wait for DATA's 354 is governed by data_timeout (aiosmtplib's data() uses one
    timeout for the 354 and the final reply), so that one is cut to 1 s as well.
    """
    smtp = {"connect_timeout": "1s", "command_timeout": "1s", "data_timeout": "1s"}
    with relay_with(tmp_path, [Script(delays={stage: 2}), Script()], smtp=smtp) as (
        server,
        relay,
    ):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        run = relay.run_once()
        assert_deferred(relay, started)
        assert any("status=deferred" in line for line in run.attempt_lines()), run.log
        server.wait_idle()
        assert server.delivered() == []
        retry_now(relay)
        server.wait_idle()
        assert server.delivered_recipients() == {RCPT: 1}
        assert relay.queue() == []


def test_connection_refused_defers(tmp_path: Path) -> None:
    relay = RelayHarness(tmp_path, smtp_port=free_port())  # nothing listens there
    relay.submit(ARGS, MESSAGE)
    started = time.time()
    run = relay.run_once()
    assert_deferred(relay, started)
    assert "status=deferred" in run.log


# ------------------------------------------------------------------ permanent failures

PERMANENT = {
    "mail-550": (
        Script(by_sender={SENDER: {"mail": "550 5.7.1 <app@example.com>: sender rejected"}}),
        "5.7.1",
        ["sender rejected"],
    ),
    "rcpt-550-multiline": (
        Script(
            rcpt={
                RCPT: [
                    "550-5.1.1 <user@example.org>: Recipient address rejected:",
                    "550 5.1.1 User unknown in virtual mailbox table",
                ]
            }
        ),
        "5.1.1",
        ["Recipient address rejected", "User unknown in virtual mailbox table"],
    ),
    "data-554": (
        Script(by_sender={SENDER: {"data": "554 5.7.0 transaction refused"}}),
        "5.7.0",
        ["transaction refused"],
    ),
    "dot-554": (
        Script(by_sender={SENDER: {"dot": "554 5.6.0 content rejected"}}),
        "5.6.0",
        ["content rejected"],
    ),
    "dot-552": (
        Script(by_sender={SENDER: {"dot": "552 5.3.4 message size exceeds limit"}}),
        "5.3.4",
        ["message size exceeds limit"],
    ),
}


@pytest.mark.parametrize("name", list(PERMANENT))
def test_permanent_failure_bounces_at_once(tmp_path: Path, name: str) -> None:
    script, status, diagnostic = PERMANENT[name]
    with relay_with(tmp_path, script) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        run = relay.run_once()
        server.wait_idle()
        assert [t for t in originals(server) if t.delivered] == []
        assert relay.queue() == [], "bounced, so nothing may stay queued"
        assert any("status=bounced" in line for line in run.attempt_lines()), run.log

        [bounce] = bounces(server)
        assert bounce.delivered and bounce.accepted_recipients == [SENDER]
        check_wire_rules(bounce)
        dsn = parse_dsn(bounce)
        assert dsn.message["To"] and SENDER in dsn.message["To"]
        assert dsn.per_message["Reporting-MTA"] == f"dns; {HOSTNAME}"
        fields = dsn.recipient(RCPT)
        assert fields["Action"] == "failed"
        assert fields["Status"] == status
        code = " ".join(str(fields["Diagnostic-Code"]).split())
        assert code.startswith("smtp; 5"), code
        for text in diagnostic:
            assert text in code, f"{text!r} missing from Diagnostic-Code: {code}"
        assert "Subject: relay scenario" in dsn.returned
        assert RCPT in dsn.text

        retry_now(relay)  # nothing left to try
        server.wait_idle()
        assert len(server.transactions()) == len(originals(server)) + 1


# ------------------------------------------------------------------------- case files


def harness_of(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES / case / "harness.json").read_text())
    return data


def case_submission(case: str) -> tuple[list[str], bytes]:
    lines = (CASES / case / "argv").read_text("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines[1:], (CASES / case / "stdin.eml").read_bytes()


def test_bc32_partial_rcpt_refusal(tmp_path: Path) -> None:
    harness = harness_of("BC-32")
    expect = harness["expect_relay"]
    with relay_with(tmp_path, script_from_harness(harness["smtp_server"])) as (server, relay):
        args, stdin = case_submission("BC-32")
        relay.submit(args, stdin)
        relay.run_once()
        server.wait_idle()
        mine = originals(server)
        assert len(mine) == expect["transactions"]
        assert [t.data is not None for t in mine].count(True) == expect["data_sent"]
        assert sorted(r for t in mine if t.delivered for r in t.accepted_recipients) == (
            expect["delivered_to"]
        )
        assert sorted(r.address for r in mine[0].rcpts) == [
            "bad@example.org", "good1@example.org", "good2@example.org"
        ]
        [bounce] = bounces(server)
        assert bounce.sender == expect["dsn"]["envelope_from"]
        assert bounce.accepted_recipients == [expect["dsn"]["to"]]
        dsn = parse_dsn(bounce)
        assert [f["Final-Recipient"].split(";")[1].strip() for f in dsn.per_recipient] == (
            expect["dsn"]["failed"]
        )
        assert dsn.recipient("bad@example.org")["Status"] == expect["dsn"]["status"]
        code = " ".join(str(dsn.recipient("bad@example.org")["Diagnostic-Code"]).split())
        assert "Recipient address rejected: User unknown" in code
        assert (relay.queue() == []) is expect["queue_empty_after"]
        check_all_delivered(server)

        retry_now(relay)  # good1/good2 were accepted: never again
        server.wait_idle()
        assert server.delivered_recipients()["good1@example.org"] == 1
        assert len(originals(server)) == 1


def test_bc33_450_then_550_across_attempts(tmp_path: Path) -> None:
    harness = harness_of("BC-33")
    expect = harness["expect_relay"]
    with relay_with(tmp_path, script_from_harness(harness["smtp_server"])) as (server, relay):
        args, stdin = case_submission("BC-33")
        relay.submit(args, stdin)
        started = time.time()
        relay.run_once()
        server.wait_idle()
        state = assert_deferred(relay, started, "user@example.org", reply="450 4.2.0")
        assert bounces(server) == []

        relay.run_once()
        server.wait_idle()
        assert len(server.connections) == 1, "the retry must not be immediate"
        assert state.next_attempt - started >= RETRY * 0.9

        retry_now(relay)
        server.wait_idle()
        assert len(originals(server)) == expect["attempts"]
        [bounce] = bounces(server)
        assert bounce.accepted_recipients == [expect["dsn"]["to"]]
        dsn = parse_dsn(bounce)
        fields = dsn.recipient("user@example.org")
        assert fields["Status"] == expect["dsn"]["status"]
        assert "user unknown" in " ".join(str(fields["Diagnostic-Code"]).split())
        assert (relay.queue() == []) is expect["queue_empty_after"]

        retry_now(relay)  # no third attempt
        server.wait_idle()
        assert len(originals(server)) == expect["attempts"]


def bc35(name: str) -> dict[str, Any]:
    [scenario] = [s for s in harness_of("BC-35")["scenarios"] if s["name"] == name]
    assert isinstance(scenario, dict)
    return scenario


def test_bc35_slow_final_reply_is_waited_for(tmp_path: Path) -> None:
    """120 s in the case; here 3 s with every other command's timeout cut to 1 s."""
    scenario = bc35("slow-final-reply")
    [script] = script_from_harness(scenario["smtp_server"])
    assert script.dot_delay_seconds == 120
    script = dataclasses.replace(script, dot_delay_seconds=3)
    smtp = {"command_timeout": "1s", "data_timeout": "30s"}
    with relay_with(tmp_path, script, smtp=smtp) as (server, relay):
        args, stdin = case_submission("BC-35")
        relay.submit(args, stdin)
        run = relay.run_once()
        server.wait_idle()
        expect = scenario["expect_relay"]
        assert len(originals(server, LOCAL_SENDER)) == expect["transactions"]
        assert len(server.delivered()) == expect["deliveries"]
        assert relay.queue() == [], "the relay gave up before the server's late 250"
        assert [line for line in run.attempt_lines() if "status=deferred" in line] == []
        assert len(server.connections) == 1 + expect["retries"]
        check_all_delivered(server)


def test_bc35_control_a_data_timeout_shorter_than_the_reply_defers(tmp_path: Path) -> None:
    """The counter-check of the test above: the delay really is longer than a timeout."""
    script = dataclasses.replace(Script(), dot_delay_seconds=3)
    with relay_with(tmp_path, script, smtp={"data_timeout": "1s"}) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        relay.run_once()
        assert_deferred(relay, started)
        server.wait_idle()


def test_bc35_drop_after_dot_is_retried_later(tmp_path: Path) -> None:
    scenario = bc35("drop-after-dot")
    expect = scenario["expect_relay"]
    with relay_with(tmp_path, script_from_harness(scenario["smtp_server"])) as (server, relay):
        args, stdin = case_submission("BC-35")
        relay.submit(args, stdin)
        started = time.time()
        relay.run_once()
        server.wait_idle()
        assert [t.outcome for t in server.transactions()] == ["dropped after dot"]
        assert_deferred(relay, started, "customer@example.org")
        relay.run_once()
        server.wait_idle()
        assert len(server.connections) == 1, "retried immediately"
        retry_now(relay)
        server.wait_idle()
        assert len(server.connections) == expect["attempts"]
        assert [t.outcome for t in server.transactions()] == ["dropped after dot", "delivered"]
        assert relay.queue() == []
        first, second = server.transactions()
        assert first.data == second.data  # the same message, sent again (RFC 1047 duplicate)
        check_all_delivered(server)


# ------------------------------------------------------------------------- TLS and AUTH


def tls_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    password = tmp_path / "smtp-password"
    password.write_text("s3cret pass\n")
    password.chmod(0o600)
    return {
        "tls": "starttls",
        "username": "relayuser",
        "password_file": str(password),
        "ca_file": str(shared_certificate().ca),
        **extra,
    }


def assert_nothing_in_clear(server: ScriptedSMTPServer, allowed: set[str]) -> None:
    for conn in server.connections:
        clear = set(conn.commands(tls=False))
        assert clear <= allowed, f"sent in plaintext: {clear - allowed}\n{conn.transcript()}"
        assert [a for a in conn.auth if not a.tls] == []


@pytest.mark.parametrize("name", ["starttls-454", "starttls-stripped"])
def test_bc36_tls_required_never_falls_back_to_plaintext(tmp_path: Path, name: str) -> None:
    harness = harness_of("BC-36")
    [scenario] = [s for s in harness["scenarios"] if s["name"] == name]
    assert harness["relay_config"] == {"tls": "required", "auth": True}
    scripts = script_from_harness(scenario["smtp_server"])
    with relay_with(tmp_path, scripts, smtp=tls_config(tmp_path)) as (server, relay):
        args, stdin = case_submission("BC-36")
        relay.submit(args, stdin)
        started = time.time()
        run = relay.run_once()
        server.wait_idle()
        forbidden = set(harness["expect_relay"]["plaintext_commands_forbidden"])
        assert_nothing_in_clear(server, {"EHLO", "HELO", "STARTTLS", "QUIT", "RSET", "NOOP"})
        assert not forbidden & set(server.connections[0].commands())
        assert server.transactions() == []
        assert_deferred(relay, started, "bob@example.org")
        assert bounces(server) == []  # "dsn": null
        [line] = run.attempt_lines()
        assert "status=deferred" in line and "TLS" in line, line


def test_starttls_and_auth_deliver(tmp_path: Path) -> None:
    script = Script(ehlo=("PIPELINING", "8BITMIME", "STARTTLS", "AUTH PLAIN LOGIN"))
    with relay_with(tmp_path, script, smtp=tls_config(tmp_path)) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        relay.run_once()
        server.wait_idle()
        [conn] = server.connections
        assert conn.commands(tls=False) == ["EHLO", "STARTTLS"]
        [auth] = conn.auth
        assert (auth.username, auth.password, auth.tls) == ("relayuser", "s3cret pass", True)
        [txn] = server.delivered()
        assert txn.tls and txn.accepted_recipients == [RCPT]
        assert relay.queue() == []
        check_all_delivered(server)


def test_implicit_tls_delivers(tmp_path: Path) -> None:
    smtp = tls_config(tmp_path, tls="tls")
    script = Script(ehlo=("PIPELINING", "AUTH PLAIN"))
    with relay_with(tmp_path, script, implicit_tls=True, smtp=smtp) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        relay.run_once()
        server.wait_idle()
        [conn] = server.connections
        assert conn.tls and conn.commands(tls=False) == []
        assert [(a.username, a.tls) for a in conn.auth] == [("relayuser", True)]
        assert [t.accepted_recipients for t in server.delivered()] == [[RCPT]]
        assert relay.queue() == []


def test_untrusted_certificate_defers_without_plaintext(tmp_path: Path) -> None:
    script = Script(ehlo=("STARTTLS", "AUTH PLAIN"))
    smtp = tls_config(tmp_path, ca_file=None)  # the system CAs do not know the test CA
    with relay_with(tmp_path, script, smtp=smtp) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        relay.run_once()
        server.wait_idle()
        assert server.connections[0].end == "tls handshake failed"
        assert_nothing_in_clear(server, {"EHLO", "STARTTLS"})
        assert_deferred(relay, started)
        assert bounces(server) == []


def test_auth_535_defers_and_never_bounces(tmp_path: Path) -> None:
    script = Script(
        ehlo=("STARTTLS", "AUTH PLAIN LOGIN"),
        auth="535 5.7.8 Authentication credentials invalid",
    )
    with relay_with(tmp_path, [script, Script(ehlo=script.ehlo)], smtp=tls_config(tmp_path)) as (
        server,
        relay,
    ):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        run = relay.run_once()
        server.wait_idle()
        [conn] = server.connections
        # one mechanism, one try: aiosmtplib's login() would also try LOGIN after PLAIN
        assert [a.reply[:3] for a in conn.auth] == ["535"], "one AUTH try per attempt"
        assert all(a.tls for a in conn.auth)
        assert "MAIL" not in conn.commands()
        assert_deferred(relay, started, reply="535")
        assert bounces(server) == []
        assert "status=bounced" not in run.log
        retry_now(relay)  # credentials fixed on the server side: delivered
        server.wait_idle()
        assert server.delivered_recipients() == {RCPT: 1}
        assert relay.queue() == []


def test_auth_is_never_sent_without_tls(tmp_path: Path) -> None:
    script = Script(ehlo=("PIPELINING", "AUTH PLAIN LOGIN"))
    smtp = tls_config(tmp_path, tls="none", ca_file=None)
    with relay_with(tmp_path, script, smtp=smtp) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        relay.run_once()
        server.wait_idle()
        assert_nothing_in_clear(server, {"EHLO", "QUIT"})
        assert server.connections[0].auth == []
        assert_deferred(relay, started)


def test_auth_configured_but_not_offered_defers(tmp_path: Path) -> None:
    """A smarthost that needs our login but offers no AUTH: do not send unauthenticated."""
    script = Script(ehlo=("PIPELINING", "8BITMIME", "STARTTLS"))
    with relay_with(tmp_path, script, smtp=tls_config(tmp_path)) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        started = time.time()
        relay.run_once()
        server.wait_idle()
        assert server.transactions() == []
        assert_deferred(relay, started)
        assert bounces(server) == []


# ---------------------------------------------------------------- recipients, bounces


def test_accepted_recipient_is_never_sent_again(tmp_path: Path) -> None:
    a, b, c = "a@example.org", "b@example.org", "c@example.org"
    first = Script(rcpt={b: "450 4.2.1 try later", c: "550 5.1.1 no such user"})
    with relay_with(tmp_path, [first, Script()]) as (server, relay):
        relay.submit(["-i", "-f", SENDER, "--", a, b, c], MESSAGE)
        started = time.time()
        relay.run_once()
        server.wait_idle()
        assert server.delivered_recipients() == {a: 1, SENDER: 1}  # SENDER: the DSN for c
        [bounce] = bounces(server)
        assert [f["Final-Recipient"] for f in parse_dsn(bounce).per_recipient] == [
            f"rfc822; {c}"
        ]
        assert_deferred(relay, started, b)

        retry_now(relay)
        server.wait_idle()
        retry = originals(server)[-1]
        assert [r.address for r in retry.rcpts] == [b], "only the deferred recipient is retried"
        assert server.delivered_recipients() == {a: 1, b: 1, SENDER: 1}
        assert relay.queue() == []
        assert len(bounces(server)) == 1
        check_all_delivered(server)


def test_expired_message_bounces_with_4_4_7(tmp_path: Path) -> None:
    script = Script(rcpt={RCPT: "450 4.2.0 mailbox busy"})
    with relay_with(tmp_path, script, delivery={"max_queue_age": "0s"}) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        relay.run_once()
        server.wait_idle()
        [bounce] = bounces(server)
        fields = parse_dsn(bounce).recipient(RCPT)
        assert fields["Action"] == "failed"
        assert fields["Status"] == "4.4.7"
        assert "450 4.2.0 mailbox busy" in " ".join(str(fields["Diagnostic-Code"]).split())
        assert relay.queue() == []


def test_null_sender_failure_is_held_not_bounced(tmp_path: Path) -> None:
    script = Script(rcpt={RCPT: "550 5.1.1 no such user"})
    with relay_with(tmp_path, script) as (server, relay):
        relay.submit(["-i", "-f", "", "--", RCPT], MESSAGE)
        relay.run_once()
        server.wait_idle()
        [txn] = server.transactions()
        assert txn.sender == "" and txn.refused_recipients == [RCPT]
        [state] = relay.queue()
        assert state.held, "undeliverable with a null sender: held for the operator"
        assert not state.is_bounce


def test_null_sender_failure_goes_to_admin(tmp_path: Path) -> None:
    script = Script(rcpt={RCPT: "550 5.1.1 no such user"})
    admin = "ops@example.net"
    with relay_with(tmp_path, script, top={"admin": admin}) as (server, relay):
        relay.submit(["-i", "-f", "", "--", RCPT], MESSAGE)
        relay.run_once()
        server.wait_idle()
        notice = [t for t in server.delivered() if t.accepted_recipients == [admin]]
        assert len(notice) == 1, server.transcript()
        assert notice[0].sender == ""
        assert parse_dsn(notice[0]).recipient(RCPT)["Status"] == "5.1.1"
        assert relay.queue() == []


def test_a_bounce_that_fails_does_not_loop(tmp_path: Path) -> None:
    script = Script(rcpt={RCPT: "550 5.1.1 no such user", SENDER: "550 5.1.1 gone too"})
    with relay_with(tmp_path, script) as (server, relay):
        relay.submit(ARGS, MESSAGE)
        relay.run_once()
        retry_now(relay)
        server.wait_idle()
        assert [t.sender for t in server.transactions()] == [SENDER, ""]
        [state] = relay.queue()
        assert state.is_bounce and state.held


# -------------------------------------------------------------------- content, reuse


def test_8bit_message_uses_8bitmime_when_offered(tmp_path: Path) -> None:
    message = "Subject: caf\u00e9\n\nna\u00efve r\u00e9sum\u00e9\n".encode()
    with relay_with(tmp_path, Script()) as (server, relay):
        relay.submit(ARGS, message)
        relay.run_once()
        server.wait_idle()
        [txn] = server.delivered()
        assert "BODY=8BITMIME" in txn.mail_params.split()
        assert "na\u00efve r\u00e9sum\u00e9".encode() in (txn.data or b"")
        check_all_delivered(server)


def test_8bit_message_is_made_7bit_without_8bitmime(tmp_path: Path) -> None:
    message = "Subject: test\n\nna\u00efve r\u00e9sum\u00e9\n".encode()
    with relay_with(tmp_path, Script(ehlo=("PIPELINING",))) as (server, relay):
        relay.submit(ARGS, message)
        relay.run_once()
        server.wait_idle()
        [txn] = server.delivered()
        assert txn.data is not None and txn.data_wire is not None
        assert all(b < 0x80 for b in txn.data_wire), "8-bit bytes to a 7-bit server"
        assert "BODY=" not in txn.mail_params.upper()
        parsed = email.message_from_bytes(txn.data, policy=email.policy.default)
        body = parsed.get_body()
        assert body is not None
        assert "na\u00efve r\u00e9sum\u00e9" in body.get_content()
        check_wire_rules(txn, server_offers_8bitmime=False)


def test_consecutive_messages_reuse_one_connection(tmp_path: Path) -> None:
    with relay_with(tmp_path, Script(), delivery={"concurrency": 1}) as (server, relay):
        for n in range(3):
            relay.submit(["-i", "-f", SENDER, "--", f"r{n}@example.org"], MESSAGE)
        relay.run_once()
        server.wait_idle()
        assert len(server.connections) == 1
        assert sorted(server.delivered_recipients()) == [f"r{n}@example.org" for n in range(3)]
        assert relay.queue() == []


def test_lone_dot_line_with_i_arrives_intact(tmp_path: Path) -> None:
    message = b"Subject: dots\n\nbefore\n.\n..two\nafter\n"
    with relay_with(tmp_path, Script()) as (server, relay):
        relay.submit(["-i", "-f", SENDER, "--", RCPT], message)
        relay.run_once()
        server.wait_idle()
        [txn] = server.delivered()
        assert txn.data is not None and txn.data_wire is not None
        assert b"\r\nbefore\r\n.\r\n..two\r\nafter\r\n" in txn.data
        assert b"\r\nbefore\r\n..\r\n...two\r\nafter\r\n" in txn.data_wire
        check_all_delivered(server)


def test_front_headers_reach_the_server(tmp_path: Path) -> None:
    """`sendmail -t` with Bcc: the Bcc recipient gets it, nobody sees the Bcc field."""
    message = (
        b"To: Someone <to@example.org>\n"
        b"Cc: cc@example.org\n"
        b"Bcc: hidden@example.org\n"
        b"Subject: -t through the relay\n"
        b"\n"
        b"body\n"
    )
    with relay_with(tmp_path, Script()) as (server, relay):
        relay.submit(["-t"], message)
        relay.run_once()
        server.wait_idle()
        [txn] = server.delivered()
        assert sorted(txn.accepted_recipients) == [
            "cc@example.org", "hidden@example.org", "to@example.org"
        ]
        assert txn.sender == LOCAL_SENDER
        assert header_values(txn.data or b"", "Bcc") == []
        check_all_delivered(server)




def test_utf8_address_is_not_sent_to_a_server_without_smtputf8(tmp_path: Path) -> None:
    with relay_with(tmp_path, Script()) as (server, relay):  # no SMTPUTF8 in EHLO
        relay.submit(["-i", "-f", SENDER, "--", "j\u00fcrgen@example.org"], MESSAGE)
        relay.run_once()
        server.wait_idle()
        sent = [e.text for c in server.connections for e in c.events if e.direction == "C"]
        assert all(text.isascii() for text in sent), sent
        # not lost: still queued, or bounced to the sender
        assert relay.queue() or bounces(server)


def test_utf8_address_uses_the_smtputf8_parameter(tmp_path: Path) -> None:
    script = Script(ehlo=("PIPELINING", "8BITMIME", "SMTPUTF8"))
    with relay_with(tmp_path, script) as (server, relay):
        relay.submit(["-i", "-f", SENDER, "--", "j\u00fcrgen@example.org"], MESSAGE)
        relay.run_once()
        server.wait_idle()
        [txn] = server.delivered()
        assert "SMTPUTF8" in txn.mail_params.upper().split()
