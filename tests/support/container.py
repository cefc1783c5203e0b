"""Boot a real systemd in a throw-away container, for the system tests.

The host needs root, ``systemd-nspawn`` (Debian package systemd-container),
``mmdebstrap``, ``nsenter`` and ``unshare`` (util-linux). The host's PID 1 need not
be systemd: the container gets cgroups of its own that this module creates.

API (kept stable: the Debian packaging tests use it too)
--------------------------------------------------------

``unavailable() -> str | None``
    Why containers cannot run here, or None. ``require_containers()`` turns that reason into
    a skip (developer machine) or a failure (``CI=true``), via tests/support/require.

``rootfs(packages=DEFAULT_PACKAGES) -> Path``
    A Debian root file system (``mmdebstrap --variant=minbase``, the host's suite
    and mirror) with ``packages`` installed. Built once and cached, keyed on the
    sorted package list, the suite and ``ROOTFS_FORMAT``, under
    ``$SPOOLMAIL_TEST_CACHE`` (default ``/var/cache/spoolmail-tests``). Concurrent
    builders wait on a lock; a build that fails leaves nothing behind. Containers
    never write into it (they boot with ``--volatile=overlay``).

``Container(root, *, binds=(), binds_ro=(), name=None)``
    ``binds``/``binds_ro`` are (host path, container path) pairs bound at boot.
    ``start()`` boots systemd and waits until the boot finished ("running" or
    "degraded"); ``stop()`` halts it and kills whatever is left, by recorded PID
    only; the object is also a context manager. Every boot starts from the
    pristine rootfs: nothing written in a container survives it. The container
    has its own network namespace holding only a loopback interface, so it
    cannot download anything: put every package a test needs (including the
    dependencies of a .deb under test) in ``rootfs(packages)``, and install a
    local .deb with ``dpkg -i`` or ``apt-get install /path/x.deb``.

    ``run(argv, *, input=None, check=True, timeout=120.0) -> Result``
        Run a command inside (all namespaces of the container's PID 1, a clean
        environment). ``Result`` has ``returncode``, ``stdout``, ``stderr`` (text)
        and ``output`` (both); ``check=True`` raises ``ContainerError`` with the
        output on a non-zero exit.
    ``sh(script, **kw)``: ``run(["sh", "-ec", script])``.
    ``write_file(path, data, *, mode=0o644, owner="root:root")``,
    ``read_file(path) -> bytes``, ``exists(path) -> bool``,
    ``copy_tree(host_dir, container_dir, *, exclude=("__pycache__",))``.
    ``systemctl(*args, check=True)``, ``journal(unit) -> str``,
    ``wait_for(script, *, timeout=60.0) -> Result``: poll a shell condition
    inside until it exits 0 (raises ``ContainerError`` with its last output).
    ``console_log() -> str``: what the container printed on its console.

``install_spoolmail_from_source(container, src_dir)``
    Copy the repository's ``src/spoolmail`` into the container's Python path and
    write the wrappers ``/usr/bin/spoolmail`` and ``/usr/libexec/spoolmail/sendmail``
    (what the Debian package installs), for tests that run before the package
    exists. Needs python3-aiosmtplib, python3-watchdog and python3-click in the
    rootfs (``SPOOLMAIL_DEPENDS``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.support import require

# Bump when the way the rootfs is built changes, so cached trees are rebuilt.
ROOTFS_FORMAT = 1

BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "passwd",
    "python3",
    "procps",
    "iproute2",
)
SPOOLMAIL_DEPENDS: tuple[str, ...] = ("python3-aiosmtplib", "python3-watchdog", "python3-click")
DEFAULT_PACKAGES: tuple[str, ...] = BASE_PACKAGES + SPOOLMAIL_DEPENDS

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_PATH = CONTAINER_PATH
BOOT_TIMEOUT = 120.0
HALT_TIMEOUT = 20.0


class ContainerError(Exception):
    """A container could not be built, booted or driven; the message has the output."""


class Result:
    """What a command run inside the container did."""

    __slots__ = ("argv", "returncode", "stderr", "stdout")

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return (
            f"Result({shlex.join(self.argv)!r}, rc={self.returncode}, "
            f"stdout={self.stdout!r}, stderr={self.stderr!r})"
        )


# -- can it run here? ---------------------------------------------------------


def _cgroup_roots() -> list[Path]:
    """The cgroup hierarchies a container's launcher must be moved into."""
    base = Path("/sys/fs/cgroup")
    if (base / "unified" / "cgroup.procs").exists():  # hybrid: v1 name=systemd + v2
        roots = [base / "unified"]
        if (base / "systemd" / "cgroup.procs").exists():
            roots.append(base / "systemd")
        return roots
    if (base / "cgroup.controllers").exists():  # pure cgroup v2
        return [base]
    return []


def unavailable() -> str | None:
    """Why containers cannot be booted on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "booting a systemd container needs root"
    for program, package in (
        ("systemd-nspawn", "systemd-container"),
        ("mmdebstrap", "mmdebstrap"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(program, path=HOST_PATH) is None:
            return f"{program} is not installed (Debian package {package})"
    if not _cgroup_roots():
        return "no cgroup hierarchy under /sys/fs/cgroup to give a container"
    return None


def require_containers() -> None:
    """Skip (or fail under CI=true) when containers cannot run here."""
    reason = unavailable()
    if reason is not None:
        require.missing(reason)


# -- root file system ---------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("SPOOLMAIL_TEST_CACHE") or "/var/cache/spoolmail-tests")


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/etc/os-release", encoding="utf-8") as f:
        for line in f:
            key, eq, value = line.strip().partition("=")
            if eq:
                values[key] = value.strip('"')
    return values


def host_suite() -> str:
    return os.environ.get("SPOOLMAIL_TEST_SUITE") or _os_release().get(
        "VERSION_CODENAME", "bookworm"
    )


def host_mirror() -> str:
    """The Debian mirror the host's own apt uses (the only one reachable here)."""
    configured = os.environ.get("SPOOLMAIL_TEST_MIRROR")
    if configured:
        return configured
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris = line.split()[1:]
                if uris and "security" not in uris[0]:
                    return uris[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1]:
                return words[2] if words[1].startswith("[") else words[1]
    return "http://deb.debian.org/debian"


def rootfs_key(packages: Sequence[str], suite: str) -> str:
    text = "\n".join([f"format={ROOTFS_FORMAT}", f"suite={suite}", *sorted(set(packages))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs(packages: Sequence[str] = DEFAULT_PACKAGES) -> Path:
    """Return a cached root file system with packages installed, building it once."""
    suite = host_suite()
    wanted = sorted(set(packages) | set(BASE_PACKAGES))
    key = rootfs_key(wanted, suite)
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    target = base / f"rootfs-{suite}-{key}"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".spoolmail-rootfs").exists():
            return target
        building = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=base))
        tree = building / "root"
        # The base goes in with --include; the rest in a second apt run, once
        # PAM and adduser are configured (some maintainer scripts need them:
        # mon's preinst runs chfn, which fails before libpam-runtime is set up).
        extra = [p for p in wanted if p not in BASE_PACKAGES]
        argv = [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--include=" + ",".join(BASE_PACKAGES),
        ]
        if extra:
            argv.append(
                '--customize-hook=chroot "$1" env DEBIAN_FRONTEND=noninteractive '
                "apt-get install --yes --no-install-recommends " + shlex.join(extra)
            )
        argv += ["--customize-hook=chroot \"$1\" apt-get clean", suite, str(tree), host_mirror()]
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=_host_env(),
                timeout=1200,
            )
            if proc.returncode != 0:
                raise ContainerError(
                    f"{shlex.join(argv)} failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
                )
            (tree / ".spoolmail-rootfs").write_text("\n".join(wanted) + "\n")
            if target.exists():  # left by a build interrupted before this point
                shutil.rmtree(target)
            os.rename(tree, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return target


def _host_env() -> dict[str, str]:
    return {"PATH": HOST_PATH, "LANG": "C.UTF-8", "HOME": "/root"}


# -- containers ---------------------------------------------------------------


_counter = itertools.count(1)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class Container:
    """One booted systemd; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        binds: Sequence[tuple[str, str]] = (),
        binds_ro: Sequence[tuple[str, str]] = (),
        name: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.binds = list(binds)
        self.binds_ro = list(binds_ro)
        self.name = name or f"spoolmail-t{os.getpid()}-{next(_counter)}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self._launcher: subprocess.Popen[bytes] | None = None
        self._console: Path = self.workdir / "console.log"
        self._cgroups: list[Path] = []
        self.leader: int | None = None  # host PID of the container's PID 1

    # context manager
    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # boot and halt
    def _nspawn_argv(self) -> list[str]:
        argv = [
            "systemd-nspawn",
            "--quiet",
            "-D", str(self.root),
            "-M", self.name,
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--console=read-only",
            "--link-journal=no",
            "--system-call-filter=bpf",
        ]
        argv += [f"--bind={h}:{c}" for h, c in self.binds]
        argv += [f"--bind-ro={h}:{c}" for h, c in self.binds_ro]
        argv.append("--boot")
        return argv

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        if self._launcher is not None:
            raise ContainerError(f"{self.name} is already started")
        for hierarchy in _cgroup_roots():
            group = hierarchy / self.name
            group.mkdir()
            self._cgroups.append(group)
        self.workdir.mkdir(parents=True, exist_ok=True)
        nspawn = self._nspawn_argv()
        script = (
            "set -e\n"
            'for procs in "$@"; do echo $$ > "$procs"; done\n'
            "mount -t tmpfs -o mode=0755 spoolmail-test-run /run\n"
            f"exec {shlex.join(nspawn)}\n"
        )
        env = _host_env() | {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        procs = [str(g / "cgroup.procs") for g in self._cgroups]
        with open(self._console, "wb") as console:
            self._launcher = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                 "launcher", *procs],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_booted(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_booted(self, timeout: float) -> None:
        assert self._launcher is not None
        deadline = time.monotonic() + timeout
        while self.leader is None:
            if self._launcher.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited with {self._launcher.returncode}:\n"
                    + self.console_log()
                )
            for child in _children(self._launcher.pid):
                if _comm(child) == "systemd":
                    self.leader = child
            if time.monotonic() > deadline:
                raise ContainerError("the container's systemd did not start:\n"
                                     + self.console_log())
            time.sleep(0.05)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ContainerError("the container did not finish booting:\n"
                                     + self.console_log())
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                             timeout=left)
            if state.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.2)

    def stop(self) -> None:
        launcher, self._launcher = self._launcher, None
        leader, self.leader = self.leader, None
        if launcher is not None and launcher.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(launcher.pid, signal.SIGTERM)  # nspawn halts the container
            try:
                launcher.wait(HALT_TIMEOUT)
            except subprocess.TimeoutExpired:
                for pid in (leader, launcher.pid):
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                launcher.wait(HALT_TIMEOUT)
        if leader is not None and Path(f"/proc/{leader}").exists() and _comm(leader) == "systemd":
            # nspawn is gone but the container's init is not: it is still ours.
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader, signal.SIGKILL)
        for group in self._cgroups:
            self._remove_cgroup(group)
        self._cgroups = []
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _remove_cgroup(group: Path) -> None:
        deadline = time.monotonic() + HALT_TIMEOUT
        while group.exists():
            try:
                for dirpath, _dirs, _files in os.walk(group, topdown=False):
                    os.rmdir(dirpath)
            except OSError:
                if time.monotonic() > deadline:
                    return  # left behind: processes we did not start live there
                time.sleep(0.1)

    def console_log(self) -> str:
        try:
            return self._console.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    # running things inside
    def _nsenter(self) -> list[str]:
        if self.leader is None:
            raise ContainerError(f"{self.name} is not running")
        return [
            "nsenter", "--target", str(self.leader),
            "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--root", "--wd",
        ]

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> Result:
        data = input.encode() if isinstance(input, str) else input
        env = {
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
        }
        proc = subprocess.run(
            [*self._nsenter(), *argv],
            input=data if data is not None else b"",
            capture_output=True,
            env=env,
            timeout=timeout,
        )
        result = Result(
            argv,
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )
        if check and result.returncode != 0:
            raise ContainerError(f"in {self.name}: {result!r}")
        return result

    def sh(
        self,
        script: str,
        *,
        input: bytes | str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> Result:
        return self.run(["sh", "-ec", script], input=input, check=check, timeout=timeout)

    def write_file(
        self, path: str, data: bytes | str, *, mode: int = 0o644, owner: str = "root:root"
    ) -> None:
        self.run(
            ["sh", "-ec",
             'mkdir -p "$(dirname "$1")"; cat > "$1.tmp"; chown "$3" "$1.tmp"; '
             'chmod "$2" "$1.tmp"; mv -f "$1.tmp" "$1"',
             "write_file", path, f"{mode:o}", owner],
            input=data,
        )

    def read_file(self, path: str) -> bytes:
        proc = subprocess.run(
            [*self._nsenter(), "cat", "--", path],
            capture_output=True,
            env={"PATH": CONTAINER_PATH},
            timeout=60,
        )
        if proc.returncode != 0:
            raise ContainerError(f"cannot read {path} in {self.name}: {proc.stderr.decode()}")
        return proc.stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def copy_tree(
        self, host_dir: str | Path, container_dir: str, *, exclude: Sequence[str] = ("__pycache__",)
    ) -> None:
        """Copy a host directory's contents into container_dir (created), owned by root."""
        tar = ["tar", "-C", str(host_dir), "--owner=0", "--group=0"]
        tar += [f"--exclude={pattern}" for pattern in exclude]
        tar += ["-cf", "-", "."]
        packed = subprocess.run(tar, capture_output=True, check=True, env=_host_env()).stdout
        self.run(["sh", "-ec", 'mkdir -p "$1"; tar -C "$1" --no-same-owner -xf -', "copy_tree",
                  container_dir], input=packed)

    def systemctl(self, *args: str, check: bool = True) -> Result:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def journal(self, unit: str) -> str:
        return self.run(
            ["journalctl", "--no-pager", "-o", "cat", "-u", unit], check=False
        ).output

    def wait_for(self, script: str, *, timeout: float = 60.0, interval: float = 0.2) -> Result:
        """Poll a shell condition inside until it exits 0; raise with its last output."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.sh(script, check=False)
            if result.returncode == 0:
                return result
            if time.monotonic() > deadline:
                raise ContainerError(f"gave up after {timeout:.0f}s waiting for: {result!r}")
            time.sleep(interval)


# -- spoolmail from the source tree ----------------------------------------------

_WRAPPER = """#!/usr/bin/python3 -I
import sys
from {module} import main
sys.exit(main())
"""


def install_spoolmail_from_source(container: Container, src_dir: str | Path) -> None:
    """Install src/spoolmail into the container the way the Debian package lays it out."""
    site = "/usr/lib/python3/dist-packages/spoolmail"
    container.copy_tree(Path(src_dir) / "spoolmail", site)
    container.write_file(
        "/usr/bin/spoolmail", _WRAPPER.format(module="spoolmail.cli"), mode=0o755
    )
    container.write_file(
        "/usr/libexec/spoolmail/sendmail",
        _WRAPPER.format(module="spoolmail.sendmail.main"),
        mode=0o755,
    )
