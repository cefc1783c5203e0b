"""A real Exim (Debian's exim4-daemon-light) on a loopback port, as a test fixture.

Everything lives in one temporary directory: the configuration (our own, never
/etc/exim4), the spool, the logs and the Maildirs. Nothing global is touched; the
daemon listens on 127.0.0.1 only, accepts mail for one local domain and a fixed list
of users (RCPT to anyone else: 550), delivers into TMP/Maildir/<user>/ and has no
router that could send mail anywhere else.

How it copes with Exim's rules (all found by running it):
- A `-C` file outside TRUSTED_CONFIG_LIST makes Exim drop root privilege for its
  re-executions ("exim user lost privilege for using -C option"), so every delivery
  runs as the Exim user (Debian-exim). The transport therefore runs as that user, and
  the spool, log and Maildir directories belong to it; the directory above them is
  0755 (pytest's own temporary directories are 0700 and not traversable for it).
- The configuration file is written by root and not group/world writable.
- File names built from `$local_part` are tainted and refused; the router lists the
  users, so the transport can use the untainted `$local_part_data`.
- Debian builds Exim with FIXED_NEVER_USERS=root: no delivery may run as root.
- Needs root (binding as another user, chown); tests skip on a developer machine
  without root or Exim and fail in CI (tests/support/require.py).

    with EximServer(users=("alice",)) as exim:
        smtplib.SMTP(exim.host, exim.port).sendmail("a@example.com", ["alice@exim.test"], msg)
        [path] = exim.wait_for_mail("alice")
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.require import require_program, require_root


class EximError(RuntimeError):
    """Exim refused to start or misbehaved; the message includes its logs."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


_CONFIG = """\
# spoolmail test fixture: a loopback-only Exim that delivers into Maildirs.
primary_hostname = {domain}
qualify_domain = {domain}
domainlist local_domains = {domain}
local_interfaces = <; 127.0.0.1
daemon_smtp_ports = {port}
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
smtp_banner = $smtp_active_hostname ESMTP Exim $version_number (spoolmail test fixture)
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment =
check_spool_space = 0
check_log_space = 0
daemon_startup_retries = 0
message_size_limit = {size_limit}
timeout_frozen_after = 1h
log_selector = +smtp_connection +received_recipients +deliver_time \\
               +smtp_protocol_error +smtp_syntax_error +sender_on_delivery
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  deny    message = relay not permitted
          !domains = +local_domains
  require verify = recipient
  accept

begin routers

local_maildir:
  driver = accept
  domains = +local_domains
  local_parts = {local_parts}
  transport = maildir_delivery

begin transports

maildir_delivery:
  driver = appendfile
  directory = {root}/Maildir/${{local_part_data}}
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = {user}
  group = {group}
  mode = 0640

begin retry

*  *  F,1h,5m

begin rewrite
"""


class EximServer:
    """One Exim daemon. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        *,
        domain: str = "exim.test",
        users: Sequence[str] = ("alice", "bob", "postmaster"),
        size_limit: str = "50M",
        keep: bool = False,
        start_timeout: float = 30,
        port: int | None = None,
    ) -> None:
        if not users or any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", u) for u in users):
            raise ValueError(f"users must be simple local parts: {users!r}")
        self.domain = domain
        self.users = tuple(users)
        self.size_limit = size_limit
        self.keep = keep
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.fixed_port = port
        self.root = Path()
        self.exim = ""
        self.exim_user = ""
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths

    @property
    def config(self) -> Path:
        return self.root / "exim.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def maildir_root(self) -> Path:
        return self.root / "Maildir"

    def maildir(self, user: str) -> Path:
        return self.maildir_root / user

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    # -- lifecycle

    def start(self) -> EximServer:
        self.exim = require_program("exim4", "exim4-daemon-light")
        require_root("the Exim fixture binds as root and chowns its spool to the Exim user")
        self.root = Path(tempfile.mkdtemp(prefix="spoolmail-exim-"))
        try:
            self.root.chmod(0o755)
            self._write_config(port=0)  # to ask this Exim which user it runs as
            self.exim_user = self._query("exim_user")
            try:
                account = pwd.getpwnam(self.exim_user)
            except KeyError:
                raise EximError(f"Exim's user {self.exim_user!r} does not exist") from None
            for name in ("spool", "log", "Maildir"):
                path = self.root / name  # `exim -bP` may already have made spool/
                path.mkdir(exist_ok=True)
                for item in [path, *path.rglob("*")]:
                    os.chown(item, account.pw_uid, account.pw_gid, follow_symlinks=False)
                path.chmod(0o750)
            last_error: EximError | None = None
            for _ in range(3):  # another process may grab the port between probe and bind
                self.port = self.fixed_port or free_port()
                self._write_config(port=self.port)
                self._check_config()
                try:
                    self._launch()
                    return self
                except EximError as exc:
                    last_error = exc
                    if self.fixed_port or "Address already in use" not in str(exc):
                        raise
            assert last_error is not None
            raise last_error
        except BaseException:
            self.stop()
            raise

    def _write_config(self, port: int) -> None:
        text = _CONFIG.format(
            domain=self.domain,
            port=port or 25,
            root=self.root,
            size_limit=self.size_limit,
            local_parts=" : ".join(self.users),
            user=self.exim_user or "root",
            group=self.exim_user or "root",
        )
        self.config.write_text(text)
        self.config.chmod(0o644)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.exim, "-C", str(self.config), *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )

    def _query(self, option: str) -> str:
        result = self._run("-bP", option)
        prefix = f"{option} = "
        if result.returncode != 0 or not result.stdout.startswith(prefix):
            raise EximError(
                f"`exim4 -C {self.config} -bP {option}` failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout[len(prefix):].strip()

    def _check_config(self) -> None:
        result = self._run("-bV")
        if result.returncode != 0:
            raise EximError(
                f"Exim rejects its test configuration {self.config} "
                f"(exit {result.returncode}):\n{result.stdout}{result.stderr}\n{self.logs()}"
            )

    def _launch(self) -> None:
        output = open(self.root / "daemon.out", "wb")  # noqa: SIM115 - outlives this call
        with output:
            self._process = subprocess.Popen(
                [self.exim, "-C", str(self.config), "-bdf", "-oX", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise EximError(
                    f"Exim exited with status {code} instead of listening on "
                    f"{self.host}:{self.port}.\n{self.logs()}"
                )
            banner = self._banner()
            if banner is not None:
                if not banner.startswith(b"220"):
                    raise EximError(f"Exim greeted with {banner!r}\n{self.logs()}")
                return
            if time.monotonic() > deadline:
                raise EximError(
                    f"Exim did not answer on {self.host}:{self.port} within "
                    f"{self.start_timeout}s.\n{self.logs()}"
                )
            time.sleep(0.05)

    def _banner(self) -> bytes | None:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                data = sock.recv(512)
                sock.sendall(b"QUIT\r\n")
                return data
        except OSError:
            return None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if not self.keep and self.root != Path() and self.root.is_dir():
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EximServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection

    def _read(self, name: str) -> str:
        path = self.log_dir / name
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def mainlog(self) -> str:
        return self._read("mainlog")

    def paniclog(self) -> str:
        return self._read("paniclog")

    def logs(self) -> str:
        """Everything that explains a failure: daemon output, panic, reject and main logs."""
        parts = []
        for label, text in (
            ("daemon output", _read_file(self.root / "daemon.out")),
            ("paniclog", self.paniclog()),
            ("rejectlog", self._read("rejectlog")),
            ("mainlog", self.mainlog()),
        ):
            parts.append(f"--- Exim {label} ---\n{text.rstrip() or '(empty)'}")
        return "\n".join(parts)

    def messages(self, user: str) -> list[Path]:
        """Delivered messages in the user's Maildir (new/ and cur/), oldest first."""
        found: list[Path] = []
        for sub in ("new", "cur"):
            directory = self.maildir(user) / sub
            if directory.is_dir():
                found.extend(p for p in directory.iterdir() if p.is_file())
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))

    def wait_for_mail(self, user: str, count: int = 1, timeout: float = 30) -> list[Path]:
        """Wait until the user's Maildir holds at least count messages; EximError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(user)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise EximError(
                    f"{len(found)} message(s) for {user} after {timeout}s, expected {count}.\n"
                    f"{self.logs()}"
                )
            time.sleep(0.05)

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        """Wait until the main log contains text; returns the log."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.mainlog()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise EximError(f"{text!r} not in Exim's main log after {timeout}s.\n{self.logs()}")
            time.sleep(0.05)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
