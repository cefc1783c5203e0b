"""sendmail's argv grammar, end to end: the installed front, its exit code and its spool file."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.support.front import Result, make_spool, run_front

MESSAGE = b"From: app@example.com\nTo: hdr@example.org\nSubject: argv\n\nbody\n.\nafter the dot\n"
HEAD = b"From: app@example.com\nTo: hdr@example.org\nSubject: argv\n\nbody\n"


def submit(tmp_path: Path, *args: str | bytes, stdin: bytes = MESSAGE, argv0: str = "sendmail"
           ) -> Result:
    return run_front(args, stdin=stdin, spool=make_spool(tmp_path), argv0=argv0)


def accepted(result: Result) -> tuple[str | None, str | None, str, list[str]]:
    """(sender, fullname, flags, recipients) of the one file an accepted run spooled."""
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    env = result.only_file.envelope
    return env.sender, env.fullname, env.flags, env.recipients


# argv -> (sender, fullname, flags, recipients)
ACCEPTED = {
    # -f / -r: value attached or separate, brackets stripped, '' and <> = null sender
    "-f a@example.com bob": ("a@example.com", None, "", ["bob"]),
    "-fa@example.com bob": ("a@example.com", None, "", ["bob"]),
    "-r a@example.com bob": ("a@example.com", None, "", ["bob"]),
    "-ra@example.com bob": ("a@example.com", None, "", ["bob"]),
    "-f <a@example.com> bob": ("a@example.com", None, "", ["bob"]),
    "-f <> bob": ("", None, "", ["bob"]),
    "-f<> bob": ("", None, "", ["bob"]),
    "-f '' bob": ("", None, "", ["bob"]),
    "-f '<>' bob": ("", None, "", ["bob"]),
    # -F: full name, attached or separate, spaces kept
    "-FCronDaemon bob": (None, "CronDaemon", "", ["bob"]),
    "-F 'Cron Daemon' bob": (None, "Cron Daemon", "", ["bob"]),
    # -o: the letter attached or separate; only -oi means something
    "-oi bob": (None, None, "i", ["bob"]),
    "-o i bob": (None, None, "i", ["bob"]),
    "-oem -odq -odi -oee -om -oo bob": (None, None, "", ["bob"]),
    "-o em bob": (None, None, "", ["bob"]),
    "-O IgnoreDots=true bob": (None, None, "i", ["bob"]),
    "-OIgnoreDots bob": (None, None, "i", ["bob"]),
    "-O DeliveryMode=b bob": (None, None, "", ["bob"]),
    # flags, alone and bundled
    "-t": (None, None, "t", []),
    "-i bob": (None, None, "i", ["bob"]),
    "-ti": (None, None, "it", []),
    "-it -fa@example.com": ("a@example.com", None, "it", []),
    "-tif a@example.com": ("a@example.com", None, "it", []),
    "-G -U -n -m -s bob": (None, None, "", ["bob"]),
    # options that take a value and are ignored: attached or separate, never a recipient
    "-B8BITMIME -B 7BIT bob": (None, None, "", ["bob"]),
    "-N never -Nsuccess,failure bob": (None, None, "", ["bob"]),
    "-R hdrs -Rfull bob": (None, None, "", ["bob"]),
    "-V envid -Venv2 bob": (None, None, "", ["bob"]),
    "-L label -C /etc/mail/sendmail.cf -X /tmp/log bob": (None, None, "", ["bob"]),
    "-h 17 -p smtp bob": (None, None, "", ["bob"]),
    "-bm bob": (None, None, "", ["bob"]),
    # permutation: options after recipients are honoured until --
    "bob -f a@example.com": ("a@example.com", None, "", ["bob"]),
    "bob -i carol -t": (None, None, "it", ["bob", "carol"]),
    "-- bob -i -t": (None, None, "", ["bob", "-i", "-t"]),
    "-i -- -f bob": (None, None, "i", ["-f", "bob"]),
    "-i -f a@example.com -- bob carol": ("a@example.com", None, "i", ["bob", "carol"]),
    "-oem -oi -- bob": (None, None, "i", ["bob"]),
    # repeated flags are harmless; the last -f wins
    "-t -i -oi -fa@example.com -t": ("a@example.com", None, "it", []),
    "-f a@example.com -f b@example.com bob": ("b@example.com", None, "", ["bob"]),
    # recipient lists in one argument
    "'a@example.org, b@example.org'": (None, None, "", ["a@example.org", "b@example.org"]),
    "a@example.org,b@example.org c": (None, None, "", ["a@example.org", "b@example.org", "c"]),
    "'Alice <a@example.org>, \"Doe, Jane\" <j@example.org>'":
        (None, None, "", ["a@example.org", "j@example.org"]),
    "'<a@example.org>'": (None, None, "", ["a@example.org"]),
    "'a@example.org,' bob": (None, None, "", ["a@example.org", "bob"]),
    # real callers (issue 2)
    "-FCronDaemon -i -B8BITMIME -oem alice": (None, "CronDaemon", "i", ["alice"]),
    "-FAnacron -odi alice": (None, "Anacron", "", ["alice"]),
}


def split_argv(line: str) -> list[str]:
    return shlex.split(line)


@pytest.mark.parametrize("line", list(ACCEPTED))
def test_accepted_form(tmp_path: Path, line: str) -> None:
    assert accepted(submit(tmp_path, *split_argv(line))) == ACCEPTED[line]


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("-Z bob", "unknown option -Z"),
        ("-tZ bob", "unknown option -Z"),
        ("bob -Q", "unknown option -Q"),
        ("--frobnicate bob", "unknown option --frobnicate"),
        ("-d0.1 bob", "unknown option -d"),
        ("-bX bob", "-bX"),
        ("-bv bob", "-bv"),
        ("-bd", "-bd"),
        ("-bt", "-bt"),
        ("-b bob", "-b needs a mode"),
        ("bob -f", "-f needs a value"),
        ("bob -F", "-F needs a value"),
        ("bob -o", "-o needs a value"),
        ("-q -Z", "unknown option -Z"),
        ("-q30m -bX", "-bX"),
        ("-q -f", "-f needs a value"),
    ],
)
def test_usage_error_names_the_option(tmp_path: Path, line: str, named: str) -> None:
    result = submit(tmp_path, *split_argv(line))
    assert result.code == 64
    assert named in result.error_line()
    result.assert_nothing_left()


def test_no_recipient_without_t_is_64(tmp_path: Path) -> None:
    for i, args in enumerate(([], ["-i"], ["--"], [""], ["-f", "a@example.com", "--"], [","])):
        result = submit(tmp_path / str(i), *args)
        assert result.code == 64, args
        assert "no recipients" in result.error_line()
        result.assert_nothing_left()


def test_t_without_any_recipient_is_65(tmp_path: Path) -> None:
    result = submit(tmp_path, "-t", stdin=b"From: a@example.com\nSubject: none\n\nbody\n")
    assert result.code == 65
    assert "-t found no recipient" in result.error_line()
    result.assert_nothing_left()


def test_t_header_group_without_members_is_no_recipient(tmp_path: Path) -> None:
    result = submit(tmp_path, "-t", stdin=b"To: undisclosed-recipients:;\n\nbody\n")
    assert result.code == 65
    result.assert_nothing_left()


def test_t_with_argv_recipients_keeps_both(tmp_path: Path) -> None:
    sender, _, flags, rcpts = accepted(submit(tmp_path, "-t", "extra@example.net"))
    assert (sender, flags, rcpts) == (None, "t", ["extra@example.net"])


def test_q_flushes_and_never_takes_the_next_argument(tmp_path: Path) -> None:
    for i, args in enumerate((["-q"], ["-q30m"], ["-q", "-v"], ["-qf", "-i"])):
        result = submit(tmp_path / str(i), *args, stdin=b"")
        assert result.code == 0, (args, result.stderr)
        assert result.files == []
        assert len(result.flushes) == 1 and result.entries == result.flushes


def test_non_utf8_argument_is_64(tmp_path: Path) -> None:
    result = submit(tmp_path, b"b\xffb@example.org")
    assert result.code == 64
    assert "not valid UTF-8" in result.error_line()
    result.assert_nothing_left()


def test_verbose_prints_the_queue_id(tmp_path: Path) -> None:
    result = submit(tmp_path, "-v", "bob")
    assert result.code == 0
    assert result.stderr == f"sendmail: queued as {result.only_file.name}\n"


def test_help_and_version_spool_nothing(tmp_path: Path) -> None:
    for i, arg in enumerate(("--help", "--version")):
        result = submit(tmp_path / str(i), arg, "bob")
        assert result.code == 0
        assert result.stdout.startswith(b"usage: sendmail" if i == 0 else b"spoolmail")
        result.assert_nothing_left()


def test_dot_rule_applies_without_i(tmp_path: Path) -> None:
    plain = submit(tmp_path / "plain", "bob")
    ignoring = submit(tmp_path / "i", "-oi", "bob")
    assert plain.only_file.message == HEAD
    assert ignoring.only_file.message == MESSAGE


@pytest.mark.parametrize("argv0", ["sendmail", "/usr/sbin/sendmail", "/usr/lib/sendmail",
                                   "spoolmail-sendmail", "/usr/libexec/spoolmail/sendmail"])
def test_argv0_sendmail_variants_deliver(tmp_path: Path, argv0: str) -> None:
    result = submit(tmp_path, "-oi", "bob", argv0=argv0)
    assert accepted(result) == (None, None, "i", ["bob"])
    assert result.only_file.message == MESSAGE


@pytest.mark.parametrize("args", [["-bi"], ["-bi", "-t"], ["-I"]])
@pytest.mark.parametrize("argv0", ["sendmail", "/usr/sbin/sendmail"])
def test_bi_is_newaliases(tmp_path: Path, argv0: str, args: list[str]) -> None:
    result = submit(tmp_path, *args, argv0=argv0)
    assert (result.code, result.stderr, result.stdout) == (0, "", b"")
    result.assert_nothing_left()


def test_postfix_options_that_mean_nothing_here_are_ignored(tmp_path: Path) -> None:
    result = submit(tmp_path, "-Am", "-c", "-x", "-e", "m", "-Ac", "-oi", "bob")
    assert accepted(result) == (None, None, "i", ["bob"])
