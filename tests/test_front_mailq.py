"""argv[0] dispatch: `mailq` and -bp list the queue as `spoolmail queue`; `newaliases` no-op."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.support.front import FRONT, front_env, make_spool, run_front

SPOOLMAIL = FRONT.parent / "spoolmail"
NO_CLI = importlib.util.find_spec("spoolmail.cli") is None


@pytest.mark.parametrize("argv0", ["newaliases", "/usr/bin/newaliases", "/usr/sbin/newaliases"])
@pytest.mark.parametrize("args", [[], ["-v"], ["-Z", "--bogus"]])
def test_newaliases_exits_0_and_touches_nothing(tmp_path: Path, argv0: str, args: list[str]
                                                ) -> None:
    spool = make_spool(tmp_path)
    result = run_front(args, stdin=b"To: a@example.org\n\nbody\n", spool=spool, argv0=argv0)
    assert (result.code, result.stdout, result.stderr) == (0, b"", "")
    result.assert_nothing_left()


@pytest.mark.xfail(NO_CLI, strict=True,
                   reason="spoolmail.cli (the admin CLI, `spoolmail queue`) is not in this "
                          "branch yet; mailq and -bp delegate to it")
@pytest.mark.parametrize(("argv0", "args"), [("mailq", []), ("/usr/bin/mailq", []),
                                             ("sendmail", ["-bp"])])
def test_mailq_lists_the_queue_as_spoolmail_queue_does(
    tmp_path: Path, argv0: str, args: list[str]
) -> None:
    spool = make_spool(tmp_path)
    queued = run_front(["-oi", "bob@example.org"], stdin=b"Subject: q\n\nbody\n", spool=spool)
    assert queued.code == 0
    env = front_env(spool, tmp_path / "no-config.toml", None, tmp_path)
    reference = subprocess.run([str(SPOOLMAIL), "queue"], capture_output=True, env=env)
    assert reference.returncode == 0, reference.stderr
    result = run_front(args, spool=spool, argv0=argv0)
    assert (result.code, result.stdout) == (0, reference.stdout)
