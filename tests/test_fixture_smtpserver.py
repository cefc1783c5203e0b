"""Self-tests of the scripted SMTP server (tests/support/smtpserver.py).

Each failure mode is driven by a real client (smtplib, aiosmtplib, or a raw socket
when the exact bytes matter) and checked on both sides: what the client saw and what
the server recorded.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.support.smtpserver import (
    DROP,
    RESET,
    Script,
    ScriptedSMTPServer,
    render_reply,
    script_from_harness,
)

CASES = Path(__file__).parent / "cases" / "bugs"
MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n.leading dot\r\n"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ScriptedSMTPServer]:
    """A running server; its script(s) come from `scripted(...)` (indirect parametrize)."""
    with ScriptedSMTPServer(getattr(request, "param", None)) as srv:
        yield srv


def scripted(scripts: Script | list[Script]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("server", [scripts], indirect=True, ids=["scripted"])


def client(server: ScriptedSMTPServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=30)


def raw_dialogue(server: ScriptedSMTPServer, lines: list[bytes]) -> list[bytes]:
    """Send each chunk after reading one reply; return every reply (as raw bytes)."""
    replies = []
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        replies.append(_read_reply(reader))
        for chunk in lines:
            sock.sendall(chunk)
            replies.append(_read_reply(reader))
    return replies


def _read_reply(reader: Any) -> bytes:
    out = b""
    while True:
        line: bytes = reader.readline()
        out += line
        if not line or line[3:4] != b"-":
            return out


# ----------------------------------------------------------------- happy path + records


def test_records_envelope_params_and_exact_wire_bytes(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        refused = smtp.sendmail(
            "a@example.com",
            ["b@example.org", "c@example.org"],
            MESSAGE,
            mail_options=["BODY=8BITMIME"],
            rcpt_options=["NOTIFY=FAILURE"],
        )
    assert refused == {}
    server.wait_idle()
    [conn] = server.connections
    assert conn.end == "quit"
    assert conn.helo == "client.test"
    assert conn.commands() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    [txn] = conn.transactions
    assert txn.sender == "a@example.com"
    assert "BODY=8BITMIME" in txn.mail_params.split()
    assert txn.mail_raw.startswith("FROM:<a@example.com>")
    assert [r.address for r in txn.rcpts] == ["b@example.org", "c@example.org"]
    assert all(r.params == "NOTIFY=FAILURE" for r in txn.rcpts)
    assert txn.accepted_recipients == ["b@example.org", "c@example.org"]
    # smtplib dot-stuffs: the wire has "..leading", the message as received has ".leading".
    assert txn.data_wire == MESSAGE.replace(b"\r\n.leading", b"\r\n..leading") + b".\r\n"
    assert txn.data == MESSAGE
    assert txn.delivered and txn.dot_reply == "250 2.0.0 Ok: queued as C1T1"
    assert server.delivered_recipients() == {"b@example.org": 1, "c@example.org": 1}
    assert "S: 250 2.0.0 Ok: queued as C1T1" in server.transcript()


def test_raw_data_kept_byte_for_byte_including_bare_lf(server: ScriptedSMTPServer) -> None:
    data = b"Subject: x\r\n\r\nbare\nlf\r\n..stuffed\r\n.\r\n"
    replies = raw_dialogue(
        server,
        [b"EHLO raw\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<r@example.org>\r\n", b"DATA\r\n", data],
    )
    assert replies[-1].startswith(b"250 ")
    [txn] = server.transactions()
    assert txn.sender == ""
    assert txn.data_wire == data
    assert txn.data == b"Subject: x\r\n\r\nbare\nlf\r\n.stuffed\r\n"


def test_default_ehlo_keywords_are_advertised(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        smtp.ehlo()
        assert set(smtp.esmtp_features) == {"pipelining", "8bitmime", "enhancedstatuscodes", "dsn"}


@scripted(Script(ehlo=("SIZE 1000", "AUTH PLAIN LOGIN", "8BITMIME")))
def test_custom_ehlo_keywords(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "1000"
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert "pipelining" not in smtp.esmtp_features


# ------------------------------------------------------------------------ greeting


@scripted(Script(greeting="421 4.3.2 Service not available, closing channel"))
def test_greeting_421_closes(server: ScriptedSMTPServer) -> None:
    with pytest.raises(smtplib.SMTPConnectError) as info:
        client(server)
    assert info.value.smtp_code == 421
    server.wait_idle()
    [conn] = server.connections
    assert conn.end == "server closed (421)"
    assert conn.commands() == []


@scripted(Script(greeting="421 4.3.2 try later"))
def test_greeting_421_with_aiosmtplib(server: ScriptedSMTPServer) -> None:
    async def go() -> None:
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await smtp.connect()

    with pytest.raises(aiosmtplib.SMTPConnectError, match="421"):
        asyncio.run(go())


@scripted(Script(greeting=DROP))
def test_greeting_dropped(server: ScriptedSMTPServer) -> None:
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client(server)
    server.wait_idle()
    assert server.connections[0].end == "server dropped"


@scripted(Script(greeting=["220-first line", "220-second line", "220 last"]))
def test_multiline_greeting(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        code, _ = smtp.noop()
        assert code == 250
    server.wait_idle()
    assert server.connections[0].replies()[0] == "220-first line\n220-second line\n220 last"


# ---------------------------------------------------------------------- EHLO / HELO


@scripted(Script(ehlo=None))
def test_ehlo_refused_forces_helo(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        assert smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE) == {}
        assert not smtp.does_esmtp
    server.wait_idle()
    [conn] = server.connections
    assert conn.commands()[:2] == ["EHLO", "HELO"]
    assert conn.replies()[1].startswith("502 ")
    assert server.delivered()


def test_mail_before_helo_is_refused(server: ScriptedSMTPServer) -> None:
    replies = raw_dialogue(server, [b"MAIL FROM:<a@example.com>\r\n", b"QUIT\r\n"])
    assert replies[1].startswith(b"503 ")
    assert server.transactions() == []


# -------------------------------------------------------------------- MAIL / RCPT


@pytest.mark.parametrize("reply", ["451 4.3.0 try again", "550 5.7.1 sender rejected"])
def test_mail_refused(reply: str) -> None:
    with ScriptedSMTPServer(Script(mail=reply)) as server:
        with client(server) as smtp, pytest.raises(smtplib.SMTPSenderRefused) as info:
            smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert info.value.smtp_code == int(reply[:3])
        server.wait_idle()
        [txn] = server.transactions()
        assert txn.outcome == "mail refused"
        assert txn.mail_reply == reply
        assert txn.rcpts == [] and txn.data_wire is None


BC32_RCPT = {
    "good1@example.org": "250 2.1.5 Ok",
    "bad@example.org": [
        "550-5.1.1 <bad@example.org>: Recipient address rejected:",
        "550 5.1.1 User unknown in virtual mailbox table",
    ],
}


@scripted(Script(rcpt=BC32_RCPT))
def test_partial_rcpt_refusal_with_aiosmtplib(server: ScriptedSMTPServer) -> None:
    async def go() -> dict[str, Any]:
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await smtp.connect()
        errors, _ = await smtp.sendmail(
            "app@example.com",
            ["good1@example.org", "bad@example.org", "good2@example.org"],
            MESSAGE,
        )
        await smtp.quit()
        return dict(errors)

    errors = asyncio.run(go())
    assert list(errors) == ["bad@example.org"]
    assert errors["bad@example.org"].code == 550
    assert "User unknown in virtual mailbox table" in errors["bad@example.org"].message
    server.wait_idle()
    [txn] = server.transactions()
    assert txn.accepted_recipients == ["good1@example.org", "good2@example.org"]
    assert txn.refused_recipients == ["bad@example.org"]
    assert txn.rcpts[1].reply.startswith("550-5.1.1 <bad@example.org>")
    assert server.connections[0].commands().count("DATA") == 1
    assert server.delivered_recipients() == {"good1@example.org": 1, "good2@example.org": 1}


@scripted(Script(rcpt_default="450 4.2.0 mailbox busy"))
def test_all_rcpt_refused_means_no_data(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
    server.wait_idle()
    [txn] = server.transactions()
    assert "DATA" not in server.connections[0].commands()
    assert txn.outcome == "reset"  # smtplib sends RSET
    assert txn.refused_recipients == ["b@example.org"]
    assert server.delivered() == []


def test_rcpt_key_matches_case_insensitively() -> None:
    script = Script(rcpt={"Bad@Example.ORG": "550 no"})
    assert script.rcpt_reply("bad@example.org") == "550 no"
    assert script.rcpt_reply("good@example.org") == script.rcpt_default


def test_data_without_valid_recipient_is_554_even_when_pipelined() -> None:
    script = Script(rcpt_default="550 5.1.1 nobody here")
    with ScriptedSMTPServer(script) as server, socket.create_connection(
        (server.host, server.port), timeout=30
    ) as sock:
        reader = sock.makefile("rb")
        _read_reply(reader)
        sock.sendall(b"EHLO p\r\n")
        _read_reply(reader)
        sock.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n")
        replies = [_read_reply(reader) for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"550", b"554"]
        sock.sendall(b"QUIT\r\n")
        _read_reply(reader)
    [txn] = server.transactions()
    assert txn.outcome == "no valid recipients"


@scripted(Script(rcpt={"x@example.org": "421 4.7.0 too many errors, bye"}))
def test_421_at_rcpt_closes_connection(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp, pytest.raises(
        (smtplib.SMTPRecipientsRefused, smtplib.SMTPServerDisconnected)
    ):
        smtp.sendmail("a@example.com", ["x@example.org"], MESSAGE)
    server.wait_idle()
    [conn] = server.connections
    assert conn.end == "server closed (421)"
    assert conn.transactions[0].outcome == "interrupted"


# ----------------------------------------------------------------------- DATA / dot


@pytest.mark.parametrize("reply", ["451 4.3.0 not now", "554 5.5.1 no thanks"])
def test_data_command_refused(reply: str) -> None:
    with ScriptedSMTPServer(Script(data=reply)) as server:
        with client(server) as smtp, pytest.raises(smtplib.SMTPDataError) as info:
            smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert info.value.smtp_code == int(reply[:3])
        server.wait_idle()
        [txn] = server.transactions()
        assert txn.outcome == "data refused"
        assert txn.data_wire is None


@pytest.mark.parametrize("reply", ["452 4.3.1 insufficient storage", "552 5.3.4 too big"])
def test_final_dot_refused(reply: str) -> None:
    with ScriptedSMTPServer(Script(dot=reply)) as server:
        with client(server) as smtp, pytest.raises(smtplib.SMTPDataError) as info:
            smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        assert info.value.smtp_code == int(reply[:3])
        server.wait_idle()
        [txn] = server.transactions()
        assert txn.outcome == "refused at dot"
        assert txn.data == MESSAGE  # everything arrived; only the reply refused it
        assert server.delivered() == []


@scripted(Script(dot=DROP))
def test_drop_after_dot_without_reply(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp, pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
    server.wait_idle()
    [conn] = server.connections
    assert conn.end == "server dropped"
    [txn] = conn.transactions
    assert txn.outcome == "dropped after dot"
    assert txn.data == MESSAGE and txn.dot_reply is None
    assert conn.replies()[-1].startswith("354 ")  # nothing was sent after the data


@scripted(Script(dot=RESET))
def test_reset_after_dot(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp, pytest.raises(
        (smtplib.SMTPServerDisconnected, ConnectionResetError)
    ):
        smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
    server.wait_idle()
    assert server.transactions()[0].outcome == "dropped after dot"


def test_drop_mid_data() -> None:
    body = b"".join(b"line %05d of a long message\r\n" % i for i in range(20000))
    message = b"Subject: big\r\n\r\n" + body
    with ScriptedSMTPServer(Script(data_drop_after_bytes=4096)) as server:
        with client(server) as smtp, pytest.raises(
            (smtplib.SMTPServerDisconnected, ConnectionError)
        ):
            smtp.sendmail("a@example.com", ["b@example.org"], message)
        server.wait_idle()
        [txn] = server.transactions()
        assert txn.outcome == "dropped mid-data"
        assert txn.data_wire is not None
        assert 4096 <= len(txn.data_wire) < len(message)
        assert message.startswith(txn.data_wire)
        assert server.connections[0].end == "server dropped"


@scripted(Script(dot_delay_seconds=1.5))
def test_slow_final_reply_times_out_a_short_client_timeout(server: ScriptedSMTPServer) -> None:
    async def go(timeout: float) -> str:
        smtp = aiosmtplib.SMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=timeout
        )
        await smtp.connect()
        try:
            _, message = await smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
            await smtp.quit()
        finally:
            smtp.close()  # aiosmtplib 2.0 leaves the connection open after a timeout
        return message

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        asyncio.run(go(timeout=0.3))
    # The same delay with a patient client: the reply arrives and is the scripted one.
    assert asyncio.run(go(timeout=30)).startswith("2.0.0 Ok: queued as C2T1")
    server.wait_idle()
    first, second = server.connections
    assert first.transactions[0].data == MESSAGE
    assert first.transactions[0].dot_reply is not None  # the server did answer, late
    assert second.transactions[0].delivered


@scripted(Script(delays={"greeting": 1.0}))
def test_delay_before_greeting(server: ScriptedSMTPServer) -> None:
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(server.host, server.port, timeout=0.2)
    server.wait_idle()


def test_unknown_delay_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        Script(delays={"helo_typo": 1})


# ------------------------------------------------------------------- STARTTLS / AUTH

TLS_EHLO = ("PIPELINING", "8BITMIME", "STARTTLS", "AUTH PLAIN LOGIN")


@scripted(Script(ehlo=TLS_EHLO))
def test_starttls_then_auth_then_mail(server: ScriptedSMTPServer) -> None:
    async def go() -> None:
        smtp = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            start_tls=True,
            tls_context=server.certificate().client_context(),
        )
        await smtp.connect()
        await smtp.login("user", "sec ret")
        await smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        await smtp.quit()

    asyncio.run(go())
    server.wait_idle()
    [conn] = server.connections
    assert conn.tls
    assert conn.commands(tls=False) == ["EHLO", "STARTTLS"]
    assert conn.commands(tls=True)[:3] == ["EHLO", "AUTH", "MAIL"]
    [auth] = conn.auth
    assert (auth.mechanism, auth.username, auth.password, auth.tls) == (
        "PLAIN", "user", "sec ret", True
    )
    assert "sec ret" not in conn.transcript()
    [txn] = conn.transactions
    assert txn.tls and txn.delivered
    # STARTTLS is not advertised again inside TLS (RFC 3207 s4.2)
    ehlo_in_tls = next(e.text for e in conn.events if e.direction == "S" and e.tls)
    assert "STARTTLS" not in ehlo_in_tls and "AUTH PLAIN LOGIN" in ehlo_in_tls


@scripted(Script(ehlo=("STARTTLS", "AUTH LOGIN")))
def test_auth_login_mechanism_with_smtplib(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        smtp.starttls(context=server.certificate().client_context())
        smtp.login("alice", "pw")
    server.wait_idle()
    [auth] = server.connections[0].auth
    assert (auth.mechanism, auth.username, auth.password) == ("LOGIN", "alice", "pw")
    assert auth.tls


@scripted(
    Script(ehlo=TLS_EHLO, starttls="454 4.7.0 TLS not available due to temporary reason")
)
def test_starttls_454(server: ScriptedSMTPServer) -> None:
    async def go() -> None:
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await smtp.connect()
        try:
            await smtp.starttls(tls_context=server.certificate().client_context())
        finally:
            await smtp.quit()

    with pytest.raises(aiosmtplib.SMTPResponseException) as info:
        asyncio.run(go())
    assert info.value.code == 454
    server.wait_idle()
    [conn] = server.connections
    assert not conn.tls
    assert conn.commands(tls=False) == ["EHLO", "STARTTLS", "QUIT"]


@scripted(Script(ehlo=("STARTTLS",), starttls="220 go ahead"))
def test_tls_handshake_failure_is_recorded(server: ScriptedSMTPServer) -> None:
    strict = ssl.create_default_context()  # does not trust the test CA
    with client(server) as smtp, pytest.raises(ssl.SSLError):
        smtp.starttls(context=strict)
    server.wait_idle()
    assert server.connections[0].end == "tls handshake failed"


@scripted(Script(ehlo=("PIPELINING", "AUTH PLAIN LOGIN")))
def test_plaintext_commands_are_visible(server: ScriptedSMTPServer) -> None:
    """The record a BC-36 test relies on: what was sent before any TLS."""
    with client(server) as smtp:
        smtp.login("u", "p")
        smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
    server.wait_idle()
    [conn] = server.connections
    assert not conn.tls
    assert {"AUTH", "MAIL", "RCPT", "DATA"} <= set(conn.commands(tls=False))
    assert conn.auth[0].tls is False


@scripted(Script(ehlo=TLS_EHLO, auth="535 5.7.8 Authentication credentials invalid"))
def test_auth_535(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        smtp.starttls(context=server.certificate().client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.login("user", "wrong")
        assert info.value.smtp_code == 535
    server.wait_idle()
    [conn] = server.connections
    assert [a.reply for a in conn.auth][-1] == "535 5.7.8 Authentication credentials invalid"
    assert "MAIL" not in conn.commands()


def test_implicit_tls() -> None:
    async def go(server: ScriptedSMTPServer) -> None:
        smtp = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=True,
            tls_context=server.certificate().client_context(),
        )
        await smtp.connect()
        await smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)
        await smtp.quit()

    with ScriptedSMTPServer(implicit_tls=True) as server:
        asyncio.run(go(server))
        server.wait_idle()
        [conn] = server.connections
        assert conn.tls and conn.commands(tls=False) == []
        assert conn.transactions[0].delivered


# ----------------------------------------------------------------- per-attempt scripts


@scripted(
    [
        Script(greeting="421 4.3.2 busy"),
        Script(rcpt={"u@example.org": "450 4.2.0 later"}),
        Script(),
    ]
)
def test_scripts_apply_per_connection_and_the_last_repeats(server: ScriptedSMTPServer) -> None:
    outcomes = []
    for _ in range(4):
        try:
            with client(server) as smtp:
                smtp.sendmail("a@example.com", ["u@example.org"], MESSAGE)
            outcomes.append("sent")
        except smtplib.SMTPConnectError:
            outcomes.append("greeting")
        except smtplib.SMTPRecipientsRefused:
            outcomes.append("rcpt")
    assert outcomes == ["greeting", "rcpt", "sent", "sent"]
    server.wait_idle()
    assert [c.number for c in server.connections] == [1, 2, 3, 4]
    assert server.delivered_recipients() == {"u@example.org": 2}
    assert [t.dot_reply for t in server.delivered()] == [
        "250 2.0.0 Ok: queued as C3T1",
        "250 2.0.0 Ok: queued as C4T1",
    ]


def test_rset_aborts_the_transaction(server: ScriptedSMTPServer) -> None:
    with client(server) as smtp:
        smtp.ehlo()
        smtp.mail("a@example.com")
        smtp.rcpt("b@example.org")
        smtp.rset()
        smtp.sendmail("c@example.com", ["d@example.org"], MESSAGE)
    server.wait_idle()
    first, second = server.transactions()
    assert (first.outcome, first.sender) == ("reset", "a@example.com")
    assert (second.outcome, second.sender) == ("delivered", "c@example.com")
    assert [t.number for t in server.transactions()] == [1, 2]


# --------------------------------------------------------------------- harness.json


def load_harness(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES / case / "harness.json").read_text())
    return data


def test_harness_bc32_builds_partial_refusal() -> None:
    [script] = script_from_harness(load_harness("BC-32")["smtp_server"])
    assert tuple(script.ehlo or ()) == ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES")
    assert str(script.rcpt_reply("bad@example.org")).startswith("550 5.1.1")
    with ScriptedSMTPServer(script) as server, client(server) as smtp:
        refused = smtp.sendmail(
            "app@example.com",
            ["good1@example.org", "bad@example.org", "good2@example.org"],
            MESSAGE,
        )
        assert list(refused) == ["bad@example.org"]
        assert smtp.esmtp_features.keys() == {"pipelining", "8bitmime", "enhancedstatuscodes"}


def test_harness_bc33_attempts_merge_over_the_base() -> None:
    first, second = script_from_harness(load_harness("BC-33")["smtp_server"])
    assert str(first.rcpt_reply("user@example.org")).startswith("450 4.2.0")
    assert str(second.rcpt_reply("user@example.org")).startswith("550 5.1.1")
    assert first.dot == Script().dot
    with ScriptedSMTPServer([first, second]) as server:
        codes = []
        for _ in range(3):
            with client(server) as smtp:
                try:
                    smtp.sendmail("app@example.com", ["user@example.org"], MESSAGE)
                except smtplib.SMTPRecipientsRefused as exc:
                    codes.append(exc.recipients["user@example.org"][0])
        assert codes == [450, 550, 550]  # the last attempt's script repeats


def test_harness_bc35_scenarios() -> None:
    slow, drop = load_harness("BC-35")["scenarios"]
    [slow_script] = script_from_harness(slow["smtp_server"])
    assert slow_script.delay("dot") == 120
    first, second = script_from_harness(drop["smtp_server"])
    assert first.dot == DROP and second.dot == "250 2.0.0 Ok: queued"
    with ScriptedSMTPServer([first, second]) as server:
        with client(server) as smtp, pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.sendmail("a@example.com", ["customer@example.org"], MESSAGE)
        with client(server) as smtp:
            smtp.sendmail("a@example.com", ["customer@example.org"], MESSAGE)
        server.wait_idle()
        assert [t.outcome for t in server.transactions()] == ["dropped after dot", "delivered"]


def test_harness_bc36_scenarios() -> None:
    refused, stripped = load_harness("BC-36")["scenarios"]
    [script] = script_from_harness(refused["smtp_server"])
    with ScriptedSMTPServer(script) as server, client(server) as smtp:
        with pytest.raises(smtplib.SMTPResponseException) as info:
            smtp.starttls(context=server.certificate().client_context())
        assert info.value.smtp_code == 454
    [script] = script_from_harness(stripped["smtp_server"])
    with ScriptedSMTPServer(script) as server, client(server) as smtp:
        smtp.ehlo()
        assert "starttls" not in smtp.esmtp_features
        assert "auth" in smtp.esmtp_features


def test_harness_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="dot_dely_seconds"):
        script_from_harness({"dot_dely_seconds": 5})
    with pytest.raises(ValueError, match=r"attempts\[2\]"):
        script_from_harness({"attempts": [{}, {"rcp": {}}]})


def test_render_reply() -> None:
    assert render_reply("250 ok", {}) == ["250 ok"]
    assert render_reply("550 a\n550 b", {}) == ["550-a", "550 b"]
    assert render_reply(["451-x", "more"], {}) == ["451-x", "451 more"]
    assert render_reply("250 {conn}", {"conn": "3"}) == ["250 3"]
    with pytest.raises(ValueError):
        render_reply("hello", {})


def test_wait_for_times_out_with_the_transcript(server: ScriptedSMTPServer) -> None:
    with pytest.raises(TimeoutError, match="no connections"):
        server.wait_connections(1, timeout=0.2)


@scripted(
    Script(
        by_sender={
            "app@example.com": {"data": "554 5.6.0 content rejected"},
            "": {"dot": "250 2.0.0 bounce accepted"},
        }
    )
)
def test_by_sender_replies_apply_to_that_senders_transactions_only(
    server: ScriptedSMTPServer,
) -> None:
    with client(server) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as info:
            smtp.sendmail("app@example.com", ["b@example.org"], MESSAGE)
        assert info.value.smtp_code == 554
        smtp.sendmail("", ["app@example.com"], MESSAGE)
        smtp.sendmail("other@example.com", ["b@example.org"], MESSAGE)
    server.wait_idle()
    first, bounce, other = server.transactions()
    assert first.outcome == "data refused"
    assert (bounce.sender, bounce.dot_reply) == ("", "250 2.0.0 bounce accepted")
    assert other.delivered and other.dot_reply == "250 2.0.0 Ok: queued as C1T3"


def test_by_sender_unknown_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="by_sender"):
        Script(by_sender={"": {"quit": "221 bye"}})
