"""An unprivileged user and the shared incoming/ directory (mode 3733, relay-owned).

Needs root to create the relay-owned directory and to become `nobody`.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.front import PYTHON, make_spool, run_front, run_front_as
from tests.support.require import require_root

MESSAGE = b"To: bob@example.org\nSubject: from nobody\n\nbody\n"


class Ids:
    def __init__(self) -> None:
        self.user = pwd.getpwnam("nobody").pw_uid
        self.group = grp.getgrnam("nogroup").gr_gid
        # A stand-in for the relay's user and group: any other system account.
        relay = pwd.getpwnam("daemon")
        self.relay_uid, self.relay_gid = relay.pw_uid, relay.pw_gid


@pytest.fixture
def ids() -> Ids:
    require_root("creating a relay-owned spool and running the front as nobody")
    return Ids()


@pytest.fixture
def spool_root() -> Iterator[Path]:
    """A directory nobody can search (pytest's tmp_path lives under a 0700 directory)."""
    root = Path(tempfile.mkdtemp(prefix="spoolmail-perm-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


def relay_spool(root: Path, ids: Ids, mode: int = 0o3733) -> Path:
    spool = make_spool(root, mode)
    os.chown(spool / "incoming", ids.relay_uid, ids.relay_gid)
    (spool / "incoming").chmod(mode)  # chown clears set-group-ID
    return spool


def as_user(ids: Ids, code: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    drop = f"import os, sys\nos.setgroups([]); os.setgid({ids.group}); os.setuid({ids.user})\n"
    return subprocess.run([PYTHON, "-c", drop + code, *args], capture_output=True, cwd="/")


def test_nobody_submits_into_a_3733_dir_it_cannot_list(ids: Ids, spool_root: Path) -> None:
    spool = relay_spool(spool_root, ids)
    incoming = spool / "incoming"
    listing = as_user(ids, "os.listdir(sys.argv[1])", str(incoming))
    assert listing.returncode != 0 and b"PermissionError" in listing.stderr

    result = run_front_as(ids.user, ids.group, ["-oi", "bob@example.org"], stdin=MESSAGE,
                          spool=spool)
    assert result.code == 0, result.stderr
    spooled = result.only_file
    assert (spooled.uid, spooled.gid, spooled.mode) == (ids.user, ids.relay_gid, 0o640)
    assert spooled.envelope.recipients == ["bob@example.org"]
    assert spooled.envelope.sender is None  # identity is the owner, not a claim
    assert spooled.message == MESSAGE
    assert result.temps == []


def test_nobody_cannot_read_or_remove_another_users_spool_file(
    ids: Ids, spool_root: Path
) -> None:
    spool = relay_spool(spool_root, ids)
    by_root = run_front(["-oi", "bob@example.org"], stdin=MESSAGE, spool=spool)
    assert by_root.code == 0, by_root.stderr
    path = str(spool / "incoming" / by_root.only_file.name)
    for action in ("open(sys.argv[1], 'rb')", "os.unlink(sys.argv[1])",
                   "os.rename(sys.argv[1], sys.argv[1] + 'x')"):
        attempt = as_user(ids, action, path)
        assert attempt.returncode != 0, action
        assert b"PermissionError" in attempt.stderr, attempt.stderr
    assert os.path.exists(path)


def test_spool_dir_without_write_access_is_73_naming_the_mode(
    ids: Ids, spool_root: Path
) -> None:
    spool = relay_spool(spool_root, ids, mode=0o755)
    result = run_front_as(ids.user, ids.group, ["bob@example.org"], stdin=MESSAGE, spool=spool)
    assert result.code == 73
    line = result.error_line()
    assert "permission denied" in line and "mode 0755" in line and "3733" in line
    result.assert_nothing_left()
