"""Failure paths of the front on real file systems: exit code, the one line, nothing left.

The tests that need a read-only or a full file system mount it in a private
mount namespace (`unshare --mount`), so nothing is visible outside the test.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

from tests.support.front import Result, make_spool, run_front
from tests.support.require import missing, require_program, require_root

MESSAGE = b"To: bob@example.org\nSubject: failure paths\n\nbody\n"

# Runs "$@" (the front) after $setup, in the namespace; then copies what the
# front left in incoming/ to $inspect, since the mount vanishes with the namespace.
NAMESPACE_SCRIPT = """\
set -e
spool=$1 inspect=$2 setup=$3
shift 3
eval "$setup"
set +e
"$@"
rc=$?
cp -a "$spool/incoming/." "$inspect/" || rc=99
exit $rc
"""

TMPFS_SPOOL = (
    'mount -t tmpfs -o "$opts,mode=0755" spoolmail-test "$spool"; '
    'mkdir "$spool/incoming"; chmod 3733 "$spool/incoming"'
)


@functools.cache
def namespace_problem(unshare: str) -> str | None:
    """Why a private mount namespace with a tmpfs cannot be made here, or None."""
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=64k spoolmail-probe /mnt"],
        capture_output=True, text=True,
    )
    if probe.returncode == 0:
        return None
    return probe.stderr.strip() or f"exit {probe.returncode}"


def in_namespace(tmp_path: Path, setup: str, args: list[str], *, stdin: bytes = MESSAGE,
                 config: Path | None = None) -> Result:
    require_root("mounting a read-only or a full file system in a private namespace")
    unshare = require_program("unshare", "util-linux")
    require_program("mount", "mount")
    problem = namespace_problem(unshare)
    if problem:
        missing(f"cannot mount a tmpfs in a private mount namespace here ({problem}); "
                "a container needs CAP_SYS_ADMIN")
    spool = make_spool(tmp_path)
    inspect = tmp_path / "inspect"
    inspect.mkdir()
    wrapper = [unshare, "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT,
               "sh", str(spool), str(inspect), setup]
    return run_front(args, stdin=stdin, spool=spool, config=config, wrapper=wrapper,
                     inspect=inspect)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spoolmail.toml"
    path.write_text(text)
    return path


# --- read-only, full, missing --------------------------------------------------


def test_read_only_spool_is_73_naming_read_write_paths(tmp_path: Path) -> None:
    setup = 'mount --bind "$spool" "$spool"; mount -o remount,bind,ro "$spool"'
    result = in_namespace(tmp_path, setup, ["-t"])
    assert result.code == 73, result.stderr
    line = result.error_line()
    assert "read-only file system" in line
    assert f"ReadWritePaths={tmp_path / 'spool' / 'incoming'}" in line
    result.assert_nothing_left()


def test_read_only_tmpfs_spool_is_73(tmp_path: Path) -> None:
    setup = TMPFS_SPOOL.replace('"$opts,', '"size=1m,') + '; mount -o remount,ro "$spool"'
    result = in_namespace(tmp_path, setup, ["-t"], config=write_config(tmp_path,
                                                                       "min_free_space = 0\n"))
    assert result.code == 73, result.stderr
    assert "ReadWritePaths=" in result.error_line()
    result.assert_nothing_left()


def test_spool_that_fills_up_while_writing_is_75(tmp_path: Path) -> None:
    """64 KiB tmpfs, no floor: the size check passes, the envelope pushes the write over."""
    config = write_config(tmp_path, "min_free_space = 0\n")
    body = b"To: bob@example.org\n\n" + b"x" * (64 * 1024 - 8 - 21)
    setup = TMPFS_SPOOL.replace("$opts", "size=64k")
    result = in_namespace(tmp_path, setup, ["-oi", "-t"], stdin=body, config=config)
    assert result.code == 75, result.stderr
    line = result.error_line()
    assert "no space left" in line and "try again later" in line
    result.assert_nothing_left()


def test_spool_without_free_inodes_is_75(tmp_path: Path) -> None:
    config = write_config(tmp_path, "min_free_space = 0\n")
    setup = TMPFS_SPOOL.replace("$opts", "size=1m,nr_inodes=2")  # the root and incoming/
    result = in_namespace(tmp_path, setup, ["-t"], config=config)
    assert result.code == 75, result.stderr
    assert "no space left" in result.error_line()
    result.assert_nothing_left()


def test_spool_below_the_default_free_space_floor_is_75(tmp_path: Path) -> None:
    setup = TMPFS_SPOOL.replace("$opts", "size=1m")  # default floor: 16 MiB
    result = in_namespace(tmp_path, setup, ["-t"])
    assert result.code == 75, result.stderr
    line = result.error_line()
    assert "below its free-space floor" in line and "16384 KiB kept in reserve" in line
    result.assert_nothing_left()


def test_spool_below_a_configured_floor_is_75(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"min_free_space = {1 << 60}\n")
    result = run_front(["-t"], stdin=MESSAGE, spool=make_spool(tmp_path), config=config)
    assert result.code == 75
    assert "free-space floor" in result.error_line()
    result.assert_nothing_left()


@pytest.mark.parametrize("missing", ["spool", "incoming"])
def test_missing_spool_is_73_naming_the_fix(tmp_path: Path, missing: str) -> None:
    spool = tmp_path / "spool"
    if missing == "incoming":
        spool.mkdir()
    result = run_front(["-t"], stdin=MESSAGE, spool=spool)
    assert result.code == 73
    line = result.error_line()
    assert f"{spool / 'incoming'} does not exist" in line
    assert "spoolmail-relay" in line and f"ReadWritePaths={spool / 'incoming'}" in line
    assert not (spool / "incoming").exists()


# --- umask, size limit, input ----------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o777, 0o000])
def test_file_mode_is_0640_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    result = run_front(["-t"], stdin=MESSAGE, spool=make_spool(tmp_path), umask=umask)
    assert result.code == 0, result.stderr
    assert result.only_file.mode == 0o640


@pytest.mark.parametrize("flags", [["-i"], []])
def test_message_over_the_configured_limit_is_65(tmp_path: Path, flags: list[str]) -> None:
    config = write_config(tmp_path, "message_size_limit = 1000\n")
    spool = make_spool(tmp_path)
    exact = b"x" * 999 + b"\n"
    fits = run_front([*flags, "bob"], stdin=exact, spool=spool, config=config)
    assert fits.code == 0 and fits.only_file.message == exact
    over = run_front([*flags, "bob"], stdin=exact + b"y", spool=spool, config=config)
    assert over.code == 65
    assert "larger than the limit of 1000 bytes" in over.error_line()
    assert over.entries == fits.entries  # nothing new


def test_message_over_the_default_limit_is_65(tmp_path: Path) -> None:
    limit = 25 * 1024 * 1024
    line = b"y" * 1023 + b"\n"
    result = run_front(["-i", "bob"], stdin=line * (limit // 1024) + b"z",
                       spool=make_spool(tmp_path))
    assert result.code == 65
    assert f"limit of {limit} bytes" in result.error_line()
    result.assert_nothing_left()


def test_closed_stdin_is_66(tmp_path: Path) -> None:
    result = run_front(["bob"], spool=make_spool(tmp_path),
                       wrapper=["sh", "-c", 'exec "$@" <&-', "sh"])
    assert result.code == 66
    assert "standard input is closed" in result.error_line()
    result.assert_nothing_left()


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('spool = "relative/path"\n', "spool must be an absolute path"),
        ("message_size_limit = -1\n", "message_size_limit must be a whole number"),
        ('min_free_space = "lots"\n', "min_free_space must be a whole number"),
        ("spool = [unclosed\n", "spoolmail.toml"),
    ],
)
def test_bad_config_is_78(tmp_path: Path, text: str, named: str) -> None:
    result = run_front(["-t"], stdin=MESSAGE, spool=make_spool(tmp_path),
                       config=write_config(tmp_path, text))
    assert result.code == 78
    assert named in result.error_line()
    result.assert_nothing_left()


def test_unreadable_config_is_78(tmp_path: Path) -> None:
    result = run_front(["-t"], stdin=MESSAGE, spool=make_spool(tmp_path), config=tmp_path)
    assert result.code == 78
    assert f"cannot read {tmp_path}" in result.error_line()


def test_spool_comes_from_the_config_unless_the_environment_says_otherwise(
    tmp_path: Path,
) -> None:
    from_config = make_spool(tmp_path / "a")
    from_env = make_spool(tmp_path / "b")
    text = f'# front settings\nspool = "{from_config}"\n\n[relay]\nx = 1\n'
    config = write_config(tmp_path, text)
    result = run_front(["-t"], stdin=MESSAGE, spool=None, config=config)
    assert result.code == 0, result.stderr
    assert len(list((from_config / "incoming").iterdir())) == 1
    result = run_front(["-t"], stdin=MESSAGE, spool=from_env, config=config)
    assert result.code == 0 and len(result.files) == 1
    assert len(list((from_config / "incoming").iterdir())) == 1
