"""Self-tests of the Exim fixture (tests/support/exim.py): a real Exim on loopback.

Skipped on a developer machine without Exim or root; failing in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
import socket
from collections.abc import Iterator

import aiosmtplib
import pytest

from tests.support.exim import EximError, EximServer

pytestmark = pytest.mark.exim


@pytest.fixture(scope="module")
def exim() -> Iterator[EximServer]:
    with EximServer(users=("alice", "bob", "postmaster")) as server:
        yield server


def test_smtplib_message_lands_in_the_users_maildir(exim: EximServer) -> None:
    message = (
        b"From: Sender <sender@example.com>\r\n"
        b"To: alice@exim.test\r\n"
        b"Subject: fixture self-test smtplib\r\n"
        b"\r\n"
        b"first line\r\n"
        b".a line that needed dot-stuffing\r\n"
    )
    before = len(exim.messages("alice"))
    with smtplib.SMTP(exim.host, exim.port, timeout=30) as smtp:
        assert smtp.sendmail("sender@example.com", [exim.address("alice")], message) == {}
    paths = exim.wait_for_mail("alice", before + 1)
    delivered = paths[-1].read_bytes()
    parsed = email.message_from_bytes(delivered, policy=email.policy.default)
    assert parsed["Subject"] == "fixture self-test smtplib"
    assert parsed["Return-Path"] == "<sender@example.com>"
    assert parsed["Envelope-to"] == "alice@exim.test"
    assert "by exim.test with esmtp" in parsed["Received"]
    assert b"\n.a line that needed dot-stuffing\n" in delivered  # unstuffed, LF on disk
    assert paths[-1].parent.name == "new"
    assert paths[-1].parent.parent == exim.maildir("alice")
    log = exim.wait_for_log("=> alice <alice@exim.test>")
    assert "R=local_maildir T=maildir_delivery" in log


def test_aiosmtplib_to_two_users(exim: EximServer) -> None:
    async def send() -> None:
        smtp = aiosmtplib.SMTP(hostname=exim.host, port=exim.port, start_tls=False)
        await smtp.connect()
        errors, _ = await smtp.sendmail(
            "sender@example.com",
            [exim.address("bob"), exim.address("postmaster")],
            b"Subject: fixture self-test aiosmtplib\r\n\r\nbody\r\n",
        )
        assert errors == {}
        await smtp.quit()

    asyncio.run(send())
    for user in ("bob", "postmaster"):
        [*_, path] = exim.wait_for_mail(user)
        assert b"Subject: fixture self-test aiosmtplib" in path.read_bytes()


def test_unknown_user_and_other_domains_are_refused_at_rcpt(exim: EximServer) -> None:
    with smtplib.SMTP(exim.host, exim.port, timeout=30) as smtp:
        refused = smtp.sendmail(
            "sender@example.com",
            [exim.address("alice"), exim.address("nobody"), "someone@example.org"],
            b"Subject: partly refused\r\n\r\nbody\r\n",
        )
    assert refused[exim.address("nobody")][0] == 550
    assert refused["someone@example.org"] == (550, b"relay not permitted")
    assert exim.address("alice") not in refused
    exim.wait_for_log("rejected RCPT <someone@example.org>: relay not permitted")
    assert not exim.maildir("nobody").exists()


def test_exim_advertises_what_the_relay_will_meet(exim: EximServer) -> None:
    with smtplib.SMTP(exim.host, exim.port, timeout=30) as smtp:
        code, _ = smtp.ehlo("host.example.org")
        assert code == 250
        assert {"8bitmime", "pipelining", "size"} <= set(smtp.esmtp_features)
        assert "starttls" not in smtp.esmtp_features  # TLS is off in the fixture


def test_refusal_to_start_shows_exims_own_explanation() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = EximServer(port=busy.getsockname()[1])
        with pytest.raises(EximError) as info:
            server.start()
    text = str(info.value)
    assert "Address already in use" in text
    assert "--- Exim paniclog ---" in text
    assert server._process is None  # nothing left running
    assert not server.root.exists()  # and nothing left on disk


def test_bad_configuration_is_reported() -> None:
    with pytest.raises(EximError) as info:
        EximServer(size_limit="lots").start()
    assert 'invalid message_size_limit: integer expected but "lots" found' in str(info.value)


def test_user_names_are_validated() -> None:
    with pytest.raises(ValueError):
        EximServer(users=("al ice",))
