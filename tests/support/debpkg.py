"""Build spoolmail's Debian packages from a copy of the tree, and look inside them.

The build runs ``dpkg-buildpackage -us -uc -b`` in a copy of the repository (so
the developer's tree gets no build products), with a clean environment: the
system's Python and tools first on PATH, no virtualenv, and no CI variable, so
the unit tests that run during the build skip what they cannot do there.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import require

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# (program, Debian package) needed to build and check the packages; the build
# dependencies themselves are checked with dpkg-checkbuilddeps.
TOOLS: tuple[tuple[str, str], ...] = (
    ("dpkg-buildpackage", "dpkg-dev"),
    ("dpkg-checkbuilddeps", "dpkg-dev"),
    ("dh", "debhelper"),
    ("lintian", "lintian"),
)

# Not copied into the build tree: caches, virtualenvs, earlier build products.
_SKIP_EVERYWHERE = frozenset(
    {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
     ".hypothesis", ".pybuild", ".cache"}
)
_SKIP_AT_TOP = frozenset({"build", "dist", "demo"})
_SKIP_IN_DEBIAN = frozenset(
    {".debhelper", "tmp", "spoolmail", "spoolmail-mta", "files", "debhelper-build-stamp", "man"}
)


class BuildError(Exception):
    """dpkg-buildpackage failed; the message holds the end of its log."""


@dataclass(frozen=True)
class Built:
    """The result of one package build."""

    outdir: Path
    changes: Path
    debs: dict[str, Path]  # binary package name -> .deb
    log: str


@dataclass(frozen=True)
class Entry:
    """One member of a .deb's data archive."""

    path: str  # absolute, e.g. /usr/sbin/sendmail
    mode: int  # permission bits
    kind: str  # "file", "dir" or "symlink"
    target: str  # symlink target, "" otherwise
    data: bytes  # file content, b"" otherwise


def clean_env(home: Path) -> dict[str, str]:
    """The environment for the Debian tools: no venv, no CI, the system's PATH."""
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": str(home), "TERM": "dumb"}


def require_build_tools() -> None:
    """Skip (or fail under CI=true) when the packages cannot be built here."""
    for program, package in TOOLS:
        if shutil.which(program, path=SYSTEM_PATH) is None:
            require.missing(f"{program} is not installed (Debian package {package})")
    proc = subprocess.run(
        ["dpkg-checkbuilddeps", str(REPO / "debian" / "control")],
        capture_output=True,
        text=True,
        env=clean_env(REPO),
        cwd=REPO,
    )
    if proc.returncode != 0:
        unmet = proc.stderr.strip().rpartition("Unmet build dependencies:")[2].strip()
        require.missing(f"build dependencies of the Debian package are missing: {unmet}")


def _ignore(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    skipped = {n for n in names if n in _SKIP_EVERYWHERE or n.endswith(".egg-info")}
    if here == REPO:
        skipped |= {n for n in names if n in _SKIP_AT_TOP}
    elif here == REPO / "debian":
        skipped |= {
            n for n in names
            if n in _SKIP_IN_DEBIAN or n.endswith((".substvars", ".debhelper.log", ".debhelper"))
        }
    return skipped


def copy_tree(dest: Path) -> Path:
    """Copy the repository to dest (which must not exist), without build products."""
    shutil.copytree(REPO, dest, symlinks=True, ignore=_ignore)
    return dest


def build(workdir: Path, *, nocheck: bool = False, timeout: float = 1500.0) -> Built:
    """Build both binary packages in workdir/spoolmail; results land in workdir.

    nocheck: skip the test suite that runs during the build (DEB_BUILD_OPTIONS).
    """
    tree = copy_tree(workdir / "spoolmail")
    log_path = workdir / "build.log"
    env = clean_env(workdir)
    if nocheck:
        env["DEB_BUILD_OPTIONS"] = "nocheck"
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            ["dpkg-buildpackage", "-us", "-uc", "-b"],
            cwd=tree,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
        )
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise BuildError(f"dpkg-buildpackage failed (exit {proc.returncode}):\n{text[-6000:]}")
    changes = sorted(workdir.glob("spoolmail_*.changes"))
    debs = {p.name.split("_", 1)[0]: p for p in workdir.glob("*.deb")}
    if len(changes) != 1:
        raise BuildError(f"expected one .changes file in {workdir}, found {changes}")
    return Built(outdir=workdir, changes=changes[0], debs=debs, log=text)


TAG_LINE = re.compile(r"^(?P<severity>[EWIPX]): (?P<package>[^:\s]+)(?: [a-z]+)?: (?P<tag>\S+)")


def lintian(changes: Path) -> tuple[list[str], str]:
    """Run lintian on a .changes file: (the error and warning lines, the whole output)."""
    proc = subprocess.run(
        ["lintian", "--no-cfg", "--fail-on", "none", "--display-info", str(changes)],
        capture_output=True,
        text=True,
        env=clean_env(changes.parent),
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise BuildError(f"lintian itself failed (exit {proc.returncode}):\n{output}")
    bad = [
        line for line in proc.stdout.splitlines()
        if (m := TAG_LINE.match(line)) and m["severity"] in "EW"
    ]
    return bad, output


def contents(deb: Path) -> dict[str, Entry]:
    """The files, directories and symlinks a .deb installs, by absolute path."""
    raw = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    found: dict[str, Entry] = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            path = os.path.normpath("/" + name)
            if member.issym():
                found[path] = Entry(path, member.mode, "symlink", member.linkname, b"")
            elif member.isdir():
                found[path] = Entry(path, member.mode, "dir", "", b"")
            else:
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                found[path] = Entry(path, member.mode, "file", "", data)
    return found


def resolve(entries: dict[str, Entry], path: str) -> str:
    """Follow symlinks (relative or absolute) within a package's paths."""
    for _ in range(10):
        entry = entries.get(path)
        if entry is None or entry.kind != "symlink":
            return path
        base = "/" if entry.target.startswith("/") else os.path.dirname(path)
        path = os.path.normpath(os.path.join(base, entry.target))
    raise ValueError(f"symlink loop at {path}")


def control_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def control_file(deb: Path, name: str) -> str:
    """A file of the control archive (postinst, conffiles, ...), or "" if absent."""
    proc = subprocess.run(
        ["dpkg-deb", "--info", str(deb), name], capture_output=True, text=True
    )
    return proc.stdout if proc.returncode == 0 else ""
