"""Property tests: the argv parser, main() as a whole, the '.' rule and -bs dot-unstuffing."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spoolmail import sysexits
from spoolmail.sendmail import argv, main
from spoolmail.sendmail.message import TooBig, read_message
from spoolmail.sendmail.smtpmode import Session
from tests.support.front import after_dot_rule, make_spool

TOKENS = [
    "-t", "-i", "-oi", "-o", "i", "-oem", "-odq", "-f", "-fa@example.com", "-r", "<>", "",
    "-F", "-FCron", "-bm", "-bs", "-bi", "-bX", "-b", "-q", "-q1h", "--", "-v", "-B", "-N",
    "-R", "-V", "-L", "-O", "IgnoreDots", "-C", "-X", "-h", "-p", "-G", "-U", "-n", "-m",
    "-Z", "-", "--help", "--version", "--long", "-tif", "bob", "a@example.org, b@example.org",
    "\udcff@example.org", ",",
]
# Arguments as the kernel hands them to Python: any bytes but NUL, decoded with
# surrogateescape, so invalid UTF-8 shows up as it does in real life.
RAW_ARG = st.binary(max_size=12).filter(lambda b: b"\0" not in b).map(os.fsdecode)
KNOWN = st.sampled_from(TOKENS)
ARG = st.one_of(KNOWN, KNOWN, KNOWN, KNOWN, RAW_ARG, st.text(max_size=12))  # mostly real options
ARGS = st.lists(ARG, max_size=8)
ALLOWED_EXITS = {sysexits.EX_OK, sysexits.EX_USAGE, sysexits.EX_DATAERR, sysexits.EX_NOINPUT,
                 sysexits.EX_CANTCREAT, sysexits.EX_TEMPFAIL, sysexits.EX_CONFIG}


@given(ARGS)
def test_parser_raises_only_usage_error(args: list[str]) -> None:
    try:
        inv = argv.parse(args)
    except argv.UsageError as exc:
        assert "\n" not in str(exc)
        return
    assert all(r in args for r in inv.recipients)
    assert inv.mode in argv.MODES.values()


@given(st.lists(st.text(max_size=12).filter(lambda a: not a.startswith("-")), max_size=6))
def test_arguments_that_are_not_options_are_recipients(args: list[str]) -> None:
    assert argv.parse(args).recipients == args


@contextmanager
def front_process(spool: Path, stdin: bytes) -> Iterator[tuple[io.BytesIO, io.StringIO]]:
    """main()'s world: its environment variables and standard streams, restored after."""
    saved_env = {k: os.environ.get(k) for k in ("SPOOLMAIL_SPOOL", "SPOOLMAIL_CONFIG")}
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    out, err = io.BytesIO(), io.StringIO()
    os.environ["SPOOLMAIL_SPOOL"] = str(spool)
    os.environ["SPOOLMAIL_CONFIG"] = str(spool / "no-config.toml")
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout = io.TextIOWrapper(out, write_through=True)
    sys.stderr = err
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def lists_the_queue(args: list[str]) -> bool:
    try:
        return argv.parse(args[1:]).mode == "list"
    except argv.UsageError:
        return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    argv0=st.sampled_from(["sendmail", "/usr/sbin/sendmail", "newaliases", "x"]),
    args=ARGS,
    stdin=st.one_of(st.binary(max_size=300),
                    st.just(b"To: a@example.org\n\nbody\n.\n"),
                    st.just(b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\n.\r\nQUIT\r\n")),
)
def test_main_exits_with_a_sysexits_code_and_one_line(
    argv0: str, args: list[str], stdin: bytes
) -> None:
    """No traceback escapes main(); a failure is one 'sendmail: ' line on stderr."""
    full = [argv0, *args]
    assume(not lists_the_queue(full))  # delegated to the admin CLI: test_front_mailq.py
    with tempfile.TemporaryDirectory() as tmp:
        spool = make_spool(Path(tmp))
        with front_process(spool, stdin) as (_out, err):
            code = main.main(full)
        entries = sorted(os.listdir(spool / "incoming"))
    assert code in ALLOWED_EXITS
    lines = err.getvalue().splitlines()
    assert all(line.startswith("sendmail: ") for line in lines)
    if code != 0:
        assert len(lines) == 1
        assert entries == []
    assert not any(name.startswith(".tmp.") for name in entries)


DOTTY = st.lists(
    st.sampled_from([b".", b"\n", b"\r", b".\n", b".\r\n", b"..", b"x", b"\r\n", b" ."]),
    max_size=30,
).map(b"".join)


@given(data=st.one_of(DOTTY, st.binary(max_size=200)), ignore_dots=st.booleans(),
       limit=st.one_of(st.integers(0, 64), st.just(1 << 20)))
def test_dot_rule_matches_the_reference_model(data: bytes, ignore_dots: bool, limit: int) -> None:
    expected = after_dot_rule(data, ignore_dots)
    try:
        got = read_message(io.BytesIO(data), ignore_dots, limit)
    except TooBig:
        assert len(expected) > limit
        return
    assert got == expected
    assert len(got) <= limit


LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(lines=st.lists(LINE, max_size=12))
def test_bs_data_round_trips_through_dot_stuffing(lines: list[bytes]) -> None:
    """What a client dot-stuffs, the -bs session unstuffs to the original lines."""
    message = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n"
                       for line in lines)
    dialogue = (b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                + stuffed + b".\r\nQUIT\r\n")
    spooled: list[tuple[str, list[str], bytes]] = []

    def submit(sender: str, recipients: list[str], data: bytes) -> str:
        spooled.append((sender, recipients, data))
        return "ID"

    out = io.BytesIO()
    assert Session(io.BytesIO(dialogue), out, submit, 1 << 20).run() == 0
    assert spooled == [("a@example.com", ["b@example.org"], message)]
    assert out.getvalue().endswith(b"250 2.0.0 Ok: queued as ID\r\n221 2.0.0 Bye\r\n")
