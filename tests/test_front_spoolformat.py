"""The front's spool files, byte for byte, against docs/spool-format.md."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from spoolmail import envelope
from tests.support.front import make_spool, run_front

NAME = re.compile(r"^[0-9A-F]{19}$")
TIME_LINE = re.compile(rb"^SPOOLMAIL 1\ntime (\d{1,12})\n")


def raw_file(tmp_path: Path, args: list[str], stdin: bytes) -> tuple[str, bytes]:
    spool = make_spool(tmp_path)
    before = int(time.time())
    result = run_front(args, stdin=stdin, spool=spool)
    after = int(time.time())
    assert result.code == 0, result.stderr
    name = result.only_file.name
    data = (spool / "incoming" / name).read_bytes()
    stamp = TIME_LINE.match(data)
    assert stamp is not None, data[:40]
    assert before <= int(stamp.group(1)) <= after
    assert before <= int(name[:9], 16) <= after  # the name starts with the time in hex
    assert NAME.match(name)
    return name, data[stamp.end() :]


def test_exact_bytes_with_every_key(tmp_path: Path) -> None:
    message = b"Subject: x\r\n\r\nline\n\x00\xff8-bit\n"
    _, rest = raw_file(tmp_path, ["-F", "Cron Daemon", "-t", "-i", "-f", "<a@example.com>",
                                  "--", "b@example.org, <c@example.net>", "d"], message)
    assert rest == (b"sender a@example.com\nfullname Cron Daemon\nflag i\nflag t\n"
                    b"rcpt b@example.org\nrcpt c@example.net\nrcpt d\n\n" + message)


def test_absent_and_null_sender(tmp_path: Path) -> None:
    _, absent = raw_file(tmp_path / "a", ["bob"], b"x\n")
    _, null = raw_file(tmp_path / "n", ["-f", "<>", "bob"], b"x\n")
    assert absent == b"rcpt bob\n\nx\n"
    assert null == b"sender \nrcpt bob\n\nx\n"


def test_percent_is_escaped_and_non_ascii_kept(tmp_path: Path) -> None:
    _, rest = raw_file(tmp_path / "c", ["-F", "50% of it", "-o", "i", "ü@example.org"], b"x\n")
    assert rest == b"fullname 50%25 of it\nflag i\nrcpt \xc3\xbc@example.org\n\nx\n"
    _, only_percent = raw_file(tmp_path / "p", ["-F", "100%", "bob"], b"x\n")
    assert only_percent == b"fullname 100%25\nrcpt bob\n\nx\n"


def test_control_characters_are_escaped_by_the_encoder_and_refused_by_the_decoder() -> None:
    env = envelope.Envelope(time=1, fullname="a\tb", recipients=["x\r\ny@example.org"])
    raw = envelope.encode(env)
    assert b"fullname a%09b\n" in raw and b"rcpt x%0D%0Ay@example.org\n" in raw
    with pytest.raises(envelope.EnvelopeError, match="control character"):
        envelope.decode(raw + b"message")


def test_a_foreign_writer_following_the_document_is_read_back(tmp_path: Path) -> None:
    """Bytes written from the document alone, as a C or Go front would, decode as meant."""
    data = (b"SPOOLMAIL 1\nrcpt a%25b@example.org\nflag t\nflag t\ntime 1733236512\n"
            b"sender \nfullname 100%25 %e2%9c%93\n\nFrom: x\n\nbody\n")
    env, offset = envelope.decode(data)
    assert (env.time, env.sender, env.fullname, env.flags, env.recipients) == (
        1733236512, "", "100% \u2713", "t", ["a%b@example.org"])
    assert data[offset:] == b"From: x\n\nbody\n"
