"""`sendmail -bs`: the SMTP dialogue on stdin/stdout, through the installed front."""

from __future__ import annotations

from pathlib import Path

from tests.support.front import Result, make_spool, run_front
from tests.test_front_cases import reply_codes


def session(tmp_path: Path, *lines: bytes, config: Path | None = None,
            spool: Path | None = None) -> Result:
    dialogue = b"".join(line + b"\r\n" for line in lines)
    return run_front(["-bs"], stdin=dialogue, spool=spool or make_spool(tmp_path), config=config)


def replies(result: Result) -> list[bytes]:
    return result.stdout.split(b"\r\n")[:-1]


MESSAGE = (b"From: app@example.com", b"To: user@example.org", b"Subject: s", b"", b"hello")


def test_one_message_with_dot_unstuffing(tmp_path: Path) -> None:
    result = session(
        tmp_path, b"EHLO client.example.com", b"MAIL FROM:<app@example.com> SIZE=100",
        b"RCPT TO:<user@example.org>", b"RCPT TO:<other@example.net> NOTIFY=NEVER", b"DATA",
        b"Subject: s", b"", b"..dot-stuffed", b"...two", b".", b"QUIT",
    )
    assert result.code == 0
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 250, 354, 250, 221]
    env = result.only_file.envelope
    assert (env.sender, env.recipients, env.flags) == (
        "app@example.com", ["user@example.org", "other@example.net"], "")
    assert result.only_file.message == b"Subject: s\r\n\r\n.dot-stuffed\r\n..two\r\n"
    queued = [r for r in replies(result) if r.startswith(b"250 2.0.0 Ok: queued as ")]
    assert queued == [b"250 2.0.0 Ok: queued as " + result.only_file.name.encode()]


def test_ehlo_advertises_size_and_8bitmime(tmp_path: Path) -> None:
    result = session(tmp_path, b"EHLO x", b"QUIT")
    ehlo = [r for r in replies(result) if r.startswith(b"250")]
    assert ehlo[-1].startswith(b"250 ")
    assert all(r.startswith(b"250-") for r in ehlo[:-1])
    assert b"250-8BITMIME" in ehlo and b"250-PIPELINING" in ehlo
    assert b"250-SIZE %d" % (25 * 1024 * 1024) in ehlo
    result.assert_nothing_left()


def test_two_messages_rset_noop_vrfy_and_null_sender(tmp_path: Path) -> None:
    result = session(
        tmp_path, b"HELO [127.0.0.1]",
        b"MAIL FROM:<a@example.com>", b"RCPT TO:<x@example.org>", b"RSET",
        b"MAIL FROM:<>", b"RCPT TO:<b@example.org>", b"NOOP", b"DATA", *MESSAGE, b".",
        b"VRFY root",
        b"mail from:<c@example.com>", b"rcpt to:<d@example.org>", b"data", b"second", b".",
        b"QUIT",
    )
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 250, 250, 250, 250, 354, 250,
                                          252, 250, 250, 354, 250, 221]
    got = sorted((f.envelope.sender, f.envelope.recipients, f.message) for f in result.files)
    assert got == [("", ["b@example.org"], b"\r\n".join(MESSAGE) + b"\r\n"),
                   ("c@example.com", ["d@example.org"], b"second\r\n")]


def test_out_of_order_and_unknown_commands(tmp_path: Path) -> None:
    result = session(
        tmp_path, b"RCPT TO:<a@example.org>", b"DATA", b"MAIL FROM:<s@example.com>",
        b"MAIL FROM:<t@example.com>", b"DATA", b"RCPT TO:<>", b"MAIL TO:x", b"BDAT 10",
        b"STARTTLS", b"QUIT",
    )
    assert reply_codes(result.stdout) == [220, 503, 503, 250, 503, 503, 501, 503, 502, 502, 221]
    result.assert_nothing_left()


def test_end_of_input_inside_data_spools_nothing(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    dialogue = b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhalf"
    result = run_front(["-bs"], stdin=dialogue, spool=spool)
    assert result.code == 0
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 354]
    result.assert_nothing_left()


def test_message_over_the_limit_gets_552(tmp_path: Path) -> None:
    config = tmp_path / "spoolmail.toml"
    config.write_text("message_size_limit = 100\nmin_free_space = 0\n")
    result = session(
        tmp_path, b"EHLO x", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>",
        b"DATA", b"x" * 200, b".", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>",
        b"DATA", b"small", b".", b"QUIT", config=config,
    )
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 354, 552, 250, 250, 354, 250, 221]
    assert b"250-SIZE 100" in result.stdout
    assert result.only_file.message == b"small\r\n"


def test_spool_failures_become_smtp_replies(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = session(tmp_path, b"HELO x", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>",
                     b"DATA", b"hi", b".", b"QUIT", spool=missing)
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 354, 554, 221]
    assert b"554 5.3.0 spool directory" in result.stdout
    floor = tmp_path / "floor.toml"
    floor.write_text(f"min_free_space = {1 << 60}\n")
    result = session(tmp_path, b"HELO x", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>",
                     b"DATA", b"hi", b".", b"QUIT", config=floor)
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 354, 451, 221]
    assert b"451 4.3.0 spool " in result.stdout and b"free-space floor" in result.stdout
    result.assert_nothing_left()


def test_data_line_longer_than_the_read_chunk_keeps_its_dots(tmp_path: Path) -> None:
    """A line longer than the server's read size must not be split into 'lines'."""
    long_line = b"x" * (1 << 16) + b".\r\n"  # a chunk boundary falls just before ".\r\n"
    stuffed = b"y" * (1 << 16) + b"..z\r\n"  # ... and just before ".."
    dialogue = (b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                + long_line + stuffed + b"end\r\n.\r\nQUIT\r\n")
    result = run_front(["-bs"], stdin=dialogue, spool=make_spool(tmp_path))
    assert reply_codes(result.stdout) == [220, 250, 250, 250, 354, 250, 221]
    assert result.only_file.message == long_line + stuffed + b"end\r\n"


def test_verbose_bs_reports_each_queue_id(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    dialogue = (b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                b"hi\r\n.\r\nQUIT\r\n")
    result = run_front(["-bs", "-v"], stdin=dialogue, spool=spool)
    assert result.stderr == f"sendmail: queued as {result.only_file.name}\n"


def test_overlong_command_line_gets_one_reply(tmp_path: Path) -> None:
    result = session(tmp_path, b"HELO x", b"MAIL FROM:<" + b"a" * 10000 + b"@example.com>",
                     b"NOOP", b"QUIT")
    assert reply_codes(result.stdout) == [220, 250, 500, 250, 221]
    result.assert_nothing_left()
