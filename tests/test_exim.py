"""`sendmail -t` → spoolmail relay → a real Exim on loopback → the users' Maildirs.

The Exim is tests/support/exim.py's fixture (its own config, spool and Maildirs in a
temporary directory; root needed, so skipped on a developer machine without root or
Exim and failing in CI). Both ways of handing mail to a local Exim are covered: SMTP
to 127.0.0.1 and the command transport (`exim4 -odi -oi -f {sender} -- {recipients}`).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exim import EximServer
from tests.support.relay import HOSTNAME, current_login
from tests.support.relayharness import RelayHarness, parse_dsn
from tests.support.smtpserver import Transaction

pytestmark = pytest.mark.exim

USERS = ("alice", "bob", "carol", "postmaster")


@pytest.fixture(scope="module")
def exim() -> Iterator[EximServer]:
    with EximServer(users=USERS) as server:
        yield server


def parse(path: Path) -> email.message.Message:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)


def newest(exim: EximServer, user: str, count: int) -> email.message.Message:
    """The user's newest message, once the Maildir holds count messages."""
    return parse(exim.wait_for_mail(user, count)[-1])


def test_sendmail_t_reaches_every_users_maildir_through_exim(
    exim: EximServer, tmp_path: Path
) -> None:
    before = {u: len(exim.messages(u)) for u in ("alice", "bob", "postmaster")}
    message = (
        b"From: root (Cron Daemon)\n"
        b"To: alice@exim.test\n"
        b"Cc: Bob <bob@exim.test>\n"
        b"Bcc: postmaster@exim.test\n"
        b"Subject: spoolmail to Exim over SMTP\n"
        b"\n"
        b"hello from spoolmail\n"
        b".a leading dot survives\n"
    )
    relay = RelayHarness(tmp_path, smtp_port=exim.port)
    relay.submit(["-t"], message)
    run = relay.run_once()
    sent = [line for line in run.attempt_lines() if "status=sent" in line]
    assert len(sent) == 3, run.log
    assert relay.queue() == []

    sender = f"{current_login()}@{HOSTNAME}"
    copies = {u: newest(exim, u, before[u] + 1) for u in before}
    message_ids = {m["Message-ID"] for m in copies.values()}
    assert len(message_ids) == 1 and None not in message_ids  # one message, three copies
    for user, copy in copies.items():
        assert copy["Return-path"] == f"<{sender}>", user
        assert copy["Envelope-to"] == f"{user}@exim.test"
        assert copy["Subject"] == "spoolmail to Exim over SMTP"
        assert copy.get_all("Bcc") is None, f"{user} can see the Bcc field"
        assert len(copy.get_all("Date", [])) == 1 and len(copy.get_all("From", [])) == 1
        assert "Cron Daemon" in copy["From"]
        received = copy.get_all("Received", [])
        assert "from [127.0.0.1] (helo=host.example.org)" in received[0], received[0]
        assert "by exim.test with esmtp" in received[0]
        assert "(spoolmail, from userid" in received[1]
        body = copy.get_payload()
        assert isinstance(body, str)
        assert "hello from spoolmail\n.a leading dot survives\n" in body

    log = exim.wait_for_log(f"<= {sender} H=(host.example.org) [127.0.0.1]")
    exim_ids = re.findall(r"status=sent \(250 OK id=(\S+)\)", run.log)
    assert exim_ids and all(f"{i} <= {sender}" in log for i in exim_ids), (run.log, log)


def test_a_user_exim_does_not_know_bounces_into_the_senders_maildir(
    exim: EximServer, tmp_path: Path
) -> None:
    before = len(exim.messages("alice"))
    message = b"To: nobody@exim.test, carol@exim.test\nSubject: half wrong\n\nbody\n"
    relay = RelayHarness(tmp_path, smtp_port=exim.port)
    relay.submit(["-t", "-f", "alice@exim.test"], message)
    run = relay.run_once()
    assert any("to=<nobody@exim.test>" in x and "status=bounced" in x for x in run.attempt_lines())
    assert relay.queue() == []

    [*_, carol_copy] = exim.wait_for_mail("carol")
    assert b"Subject: half wrong" in carol_copy.read_bytes()

    dsn_file = exim.wait_for_mail("alice", before + 1)[-1]
    dsn_message = parse(dsn_file)
    assert dsn_message["Return-path"] == "<>"
    data = dsn_file.read_bytes().replace(b"\n", b"\r\n")
    dsn = parse_dsn(
        Transaction(
            connection=0, number=0, tls=False, mail_raw="FROM:<>", sender="",
            mail_params="", mail_reply="250", data=data,
        )
    )  # fmt: skip
    fields = dsn.recipient("nobody@exim.test")
    assert fields["Action"] == "failed"
    assert fields["Status"].startswith("5.")
    assert "Unrouteable address" in " ".join(str(fields["Diagnostic-Code"]).split())
    assert [f["Final-Recipient"] for f in dsn.per_recipient] == ["rfc822; nobody@exim.test"]
    assert "Subject: half wrong" in dsn.returned


def test_command_transport_hands_the_message_to_exim(exim: EximServer, tmp_path: Path) -> None:
    before = len(exim.messages("bob"))
    argv = [exim.exim, "-C", str(exim.config), "-odi", "-oi", "-f", "{sender}", "--",
            "{recipients}"]  # fmt: skip
    relay = RelayHarness(tmp_path, transport="command", tables={"command": {"argv": argv}})
    args = ["-i", "-f", "alice@exim.test", "--", "bob@exim.test"]
    relay.submit(args, b"Subject: by command\n\nhi\n")
    run = relay.run_once()
    assert any("status=sent" in line for line in run.attempt_lines()), run.log
    assert relay.queue() == []
    copy = newest(exim, "bob", before + 1)
    assert copy["Subject"] == "by command"
    assert copy["Return-path"] == "<alice@exim.test>"
    assert "with local" in copy.get_all("Received", [])[0]
