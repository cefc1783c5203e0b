"""Run the installed front (`spoolmail-sendmail`) as a subprocess; read what it spooled.

argv[0] matters to the front (`mailq`, `newaliases`), and a `#!` script never
sees the argv[0] it was executed with, only the path it was found at. So the
front is run through a symlink whose path ends with the requested argv[0]
(`/usr/sbin/sendmail` becomes `<tmp>/usr/sbin/sendmail`), which is also how a
package installs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spoolmail import envelope


def installed_script(name: str) -> Path:
    """A script under test: the virtualenv's, else the first on PATH.

    A Debian package build (pybuild) is no virtualenv; it puts the scripts it
    just built first on PATH, ahead of any spoolmail installed on the machine.
    """
    scripts = Path(sysconfig.get_path("scripts")) / name
    if sys.prefix != sys.base_prefix:
        return scripts
    found = shutil.which(name)
    return Path(found) if found else scripts


FRONT = installed_script("spoolmail-sendmail")
PYTHON = sys.executable
QUEUE_ID_LENGTH = 19
HEX_UPPER = frozenset("0123456789ABCDEF")

Arg = str | bytes
# A line holding only "." (bytes patterns: ^ and $ work at LF boundaries only).
LONE_DOT_LINE = re.compile(rb"^\.\r?$", re.MULTILINE)


@dataclass(frozen=True)
class SpoolFile:
    """One spooled message: its name, inode facts and decoded content."""

    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    envelope: envelope.Envelope
    message: bytes


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str
    entries: list[str] = field(default_factory=list)
    files: list[SpoolFile] = field(default_factory=list)

    @property
    def temps(self) -> list[str]:
        return [n for n in self.entries if n.startswith(".tmp.")]

    @property
    def flushes(self) -> list[str]:
        return [n for n in self.entries if n.startswith("flush-")]

    @property
    def only_file(self) -> SpoolFile:
        assert len(self.files) == 1, f"expected one spooled message, found {self.entries}"
        return self.files[0]

    def error_line(self) -> str:
        """The single stderr line of a failed run (asserts there is exactly one)."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.stderr!r}"
        assert lines[0].startswith("sendmail: "), lines[0]
        return lines[0]

    def assert_nothing_left(self) -> None:
        assert self.entries == [], f"files left in incoming/: {self.entries}"


def is_queue_id(name: str) -> bool:
    return len(name) == QUEUE_ID_LENGTH and set(name) <= HEX_UPPER


def read_spool_file(path: Path) -> SpoolFile:
    st = path.lstat()
    data = path.read_bytes()
    env, offset = envelope.decode(data)
    return SpoolFile(
        name=path.name,
        mode=st.st_mode & 0o7777,
        uid=st.st_uid,
        gid=st.st_gid,
        nlink=st.st_nlink,
        envelope=env,
        message=data[offset:],
    )


def read_incoming(incoming: Path) -> tuple[list[str], list[SpoolFile]]:
    """Every entry of incoming/ (sorted) and the decoded message files among them.

    With a relay running, a file may be picked up between the listing and the
    read; it is then left out of the files (its name stays in the entries).
    """
    if not incoming.is_dir():
        return [], []
    entries = sorted(os.listdir(incoming))
    files = []
    for name in entries:
        if is_queue_id(name):
            with contextlib.suppress(FileNotFoundError):
                files.append(read_spool_file(incoming / name))
    return entries, files


def make_spool(root: Path, mode: int = 0o3733) -> Path:
    """A spool directory with the layout the relay creates; returns the spool path."""
    spool = root / "spool"
    incoming = spool / "incoming"
    incoming.mkdir(parents=True)
    incoming.chmod(mode)
    for private in ("queue", "quarantine", "control"):
        (spool / private).mkdir(mode=0o700)
    return spool


def front_env(
    spool: Path | None, config: Path | None, extra: Mapping[str, str] | None, scratch: Path
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        # A missing file is "no config": the machine's /etc/spoolmail must not leak in.
        "SPOOLMAIL_CONFIG": str(config if config is not None else scratch / "no-config.toml"),
    }
    if "PYTHONPATH" in os.environ:  # a package build (pybuild) imports spoolmail from there
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if spool is not None:
        env["SPOOLMAIL_SPOOL"] = str(spool)
    if extra:
        env.update(extra)
    return env


def argv0_link(scratch: Path, argv0: str) -> Path:
    """A symlink to the installed front at a path that ends with argv0."""
    link = scratch / "argv0" / argv0.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(FRONT)
    return link


def run_front(
    args: Sequence[Arg],
    *,
    stdin: bytes = b"",
    spool: Path | None,
    argv0: str = "sendmail",
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    umask: int = 0o022,
    wrapper: Sequence[str] = (),
    inspect: Path | None = None,
    timeout: float = 60,
) -> Result:
    """Run the installed front with argv0 and args, feeding stdin.

    wrapper: a command prefix that ends by exec'ing "$@" (e.g. unshare);
    inspect: the directory to read the outcome from when incoming/ is only
    visible inside such a wrapper (it copies incoming/ there); default
    spool/incoming.
    """
    if not FRONT.exists():
        raise AssertionError(f"{FRONT} is not installed: run ./dev test")
    with tempfile.TemporaryDirectory(prefix="front-") as tmp:
        scratch = Path(tmp)
        cmd: list[Arg] = [*wrapper, str(argv0_link(scratch, argv0)), *args]
        proc = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            env=front_env(spool, config, env, scratch),
            umask=umask,
            timeout=timeout,
        )
    incoming = inspect if inspect is not None else (spool / "incoming" if spool else None)
    entries, files = read_incoming(incoming) if incoming is not None else ([], [])
    return Result(
        code=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr.decode("utf-8", "replace"),
        entries=entries,
        files=files,
    )


# Runs main() as another user: the modules are imported first (as root, like an
# installed interpreter whose files anyone may read), then privileges are
# dropped for good before main() touches the spool. A `#!` console script
# cannot be used here: a pyenv interpreter under /root is not executable by
# `nobody`, while the code under test is the same either way.
_AS_USER = """\
import os, sys
from spoolmail.sendmail.main import main
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
assert os.getuid() == os.geteuid() == uid and os.getgroups() == []
sys.exit(main(sys.argv[3:]))
"""


def run_front_as(
    uid: int,
    gid: int,
    args: Sequence[str],
    *,
    stdin: bytes,
    spool: Path,
    argv0: str = "sendmail",
) -> Result:
    """Run the front's main() as uid:gid with no supplementary groups (needs root).

    The spool's parent directory must be searchable by uid; the (absent)
    config file is looked for there, so that the user sees ENOENT, not EACCES.
    """
    proc = subprocess.run(
        [PYTHON, "-c", _AS_USER, str(uid), str(gid), argv0, *args],
        input=stdin,
        capture_output=True,
        env=front_env(spool, spool.parent / "no-config.toml", None, spool.parent),
        cwd="/",
        timeout=60,
    )
    entries, files = read_incoming(spool / "incoming")
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"),
                  entries, files)


def after_dot_rule(data: bytes, ignore_dots: bool) -> bytes:
    """The reference model of the front's end-of-input rule (outside -bs).

    With -i/-oi the message is stdin as given. Without, the first line that
    holds only '.' (optionally followed by CR, then LF or the end of input)
    ends it; that line and everything after it are dropped.
    """
    if ignore_dots:
        return data
    found = LONE_DOT_LINE.search(data)
    return data if found is None else data[: found.start()]
