"""The relay's configuration: /etc/spoolmail/spoolmail.toml, read with tomllib.

Unknown keys and wrong types are errors naming the key and the file. No file
at all is fine: the embedded default delivers into a Maildir under state_dir.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoolmail.sendmail.frontconfig import (
    DEFAULT_CONFIG,
    DEFAULT_MESSAGE_SIZE_LIMIT,
    DEFAULT_MIN_FREE_SPACE,
    DEFAULT_SPOOL,
)

DEFAULT_STATE_DIR = "/var/lib/spoolmail"
# Postfix/Exim-like: first retries after minutes, then hours; give up after 5 days.
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (300, 900, 1800, 3600, 7200, 14400)
DEFAULT_MAX_QUEUE_AGE = 5 * 86400
TRANSPORTS = ("smtp", "command", "maildir")
MIN_MESSAGE_SIZE_LIMIT = 1
MAX_CONCURRENCY = 100
TLS_MODES = ("none", "starttls", "tls")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (one line)."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    tls: str = "none"
    username: str | None = None
    password_file: str | None = None
    password_credential: str = "smtp-password"
    ca_file: str | None = None
    verify_certificate: bool = True
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    idle_timeout: float = 5.0

    def password(self) -> str | None:
        """Read the password from password_file or the systemd credential."""
        candidates: list[str] = []
        if self.password_file:
            candidates.append(self.password_file)
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            candidates.append(os.path.join(cred_dir, self.password_credential))
        for path in candidates:
            try:
                return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the SMTP password from {path}: {exc.strerror}"
                ) from None
        return None


@dataclass(frozen=True)
class Config:
    source: str | None = None
    spool: str = DEFAULT_SPOOL
    state_dir: str = DEFAULT_STATE_DIR
    hostname: str = "localhost"
    domain: str = "localhost"
    admin: str | None = None
    message_size_limit: int = DEFAULT_MESSAGE_SIZE_LIMIT
    min_free_space: int = DEFAULT_MIN_FREE_SPACE
    transport: str = "maildir"
    concurrency: int = 4
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    max_queue_age: float = DEFAULT_MAX_QUEUE_AGE
    rescan_interval: float = 60.0
    stale_temp_age: float = 86400.0
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    maildir_path: str = ""
    command_argv: tuple[str, ...] = ()
    command_timeout: float = 600.0

    @property
    def incoming(self) -> str:
        return os.path.join(self.spool, "incoming")

    @property
    def queue_dir(self) -> str:
        return os.path.join(self.spool, "queue")

    @property
    def quarantine_dir(self) -> str:
        return os.path.join(self.spool, "quarantine")

    @property
    def control_dir(self) -> str:
        return os.path.join(self.spool, "control")

    @property
    def status_file(self) -> str:
        return os.path.join(self.spool, "relay.status")


def machine_fqdn() -> str:
    name = socket.gethostname()
    if "." not in name:
        try:
            fqdn = socket.getfqdn(name)
        except OSError:
            fqdn = name
        if "." in fqdn and not fqdn.startswith("localhost"):
            name = fqdn
    return name or "localhost"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Typed access to one TOML table, remembering which keys were used."""

    def __init__(self, table: dict[str, Any], where: str, path: str) -> None:
        self.table = table
        self.where = where
        self.path = path
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self._name(key)} {what}")

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.table.get(key)

    def string(self, key: str, default: str | None) -> str | None:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def integer(self, key: str, default: int, minimum: int = 0,
                maximum: int | None = None) -> int:
        value = self.get(key)
        if value is None:
            return default
        if (not isinstance(value, int) or isinstance(value, bool) or value < minimum
                or (maximum is not None and value > maximum)):
            upto = f" and <= {maximum}" if maximum is not None else ""
            raise self.fail(key, f"must be a whole number >= {minimum}{upto}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def duration(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            raise self.fail(key, 'must be seconds or a duration such as "90s", "5m", "2h", "5d"')
        return seconds

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key)
        if value is None:
            return default
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}")
        return str(value)

    def table_at(self, key: str) -> _Reader:
        value = self.get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return _Reader(value, self._name(key), self.path)

    def check_unknown(self) -> None:
        for key in self.table:
            if key not in self.used:
                raise ConfigError(f"{self.path}: unknown key {self._name(key)!r}")


def parse_duration(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str) and len(value) >= 2 and value[-1] in UNITS:
        number = value[:-1].strip()
        try:
            amount = float(number)
        except ValueError:
            return None
        return amount * UNITS[value[-1]] if amount >= 0 else None
    return None


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get("SPOOLMAIL_CONFIG") or DEFAULT_CONFIG


def load(explicit: str | None = None) -> Config:
    """Load the configuration; a missing file (not named explicitly) gives the defaults."""
    path = config_path(explicit)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such file") from None
        return from_table({}, None)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_table(table, path)


def from_table(table: dict[str, Any], path: str | None) -> Config:
    top = _Reader(table, "", path or "(defaults)")
    spool = top.string("spool", DEFAULT_SPOOL) or DEFAULT_SPOOL
    state_dir = top.string("state_dir", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR
    for key, value in (("spool", spool), ("state_dir", state_dir)):
        if not value.startswith("/"):
            raise top.fail(key, "must be an absolute path")
    spool = os.path.abspath(os.environ.get("SPOOLMAIL_SPOOL") or spool)
    hostname = top.string("hostname", None) or machine_fqdn()
    domain = top.string("domain", None) or hostname
    admin = top.string("admin", None)

    delivery = top.table_at("delivery")
    transport = delivery.choice("transport", "maildir", TRANSPORTS)
    schedule_value = delivery.get("retry_schedule")
    schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    if schedule_value is not None:
        parsed = (
            [parse_duration(v) for v in schedule_value] if isinstance(schedule_value, list) else []
        )
        if not parsed or any(p is None or p < 1 for p in parsed):
            raise delivery.fail("retry_schedule",
                                "must be a non-empty list of durations of at least 1s")
        schedule = tuple(p for p in parsed if p is not None)

    smtp_table = top.table_at("smtp")
    smtp_host = smtp_table.string("host", "127.0.0.1") or "127.0.0.1"
    smtp = SmtpConfig(
        host=smtp_host,
        port=smtp_table.integer("port", 25, 1),
        tls=smtp_table.choice("tls", "none" if is_loopback(smtp_host) else "starttls", TLS_MODES),
        username=smtp_table.string("username", None),
        password_file=smtp_table.string("password_file", None),
        password_credential=smtp_table.string("password_credential", "smtp-password")
        or "smtp-password",
        ca_file=smtp_table.string("ca_file", None),
        verify_certificate=smtp_table.boolean("verify_certificate", True),
        connect_timeout=smtp_table.duration("connect_timeout", 30.0),
        command_timeout=smtp_table.duration("command_timeout", 300.0),
        data_timeout=smtp_table.duration("data_timeout", 600.0),
        idle_timeout=smtp_table.duration("idle_timeout", 5.0),
    )
    if smtp.port > 65535:
        raise smtp_table.fail("port", "must be at most 65535")

    maildir = top.table_at("maildir")
    maildir_path = maildir.string("path", os.path.join(state_dir, "Maildir")) or ""

    command = top.table_at("command")
    argv_value = command.get("argv")
    argv: tuple[str, ...] = ()
    if argv_value is not None:
        if not isinstance(argv_value, list) or not argv_value or not all(
            isinstance(a, str) for a in argv_value
        ):
            raise command.fail("argv", "must be a non-empty list of strings")
        argv = tuple(argv_value)
    if transport == "command" and not argv:
        raise ConfigError(f"{path}: transport 'command' needs command.argv")

    config = Config(
        source=path,
        spool=spool,
        state_dir=state_dir,
        hostname=hostname,
        domain=domain,
        admin=admin,
        message_size_limit=top.integer("message_size_limit", DEFAULT_MESSAGE_SIZE_LIMIT,
                                       MIN_MESSAGE_SIZE_LIMIT),
        min_free_space=top.integer("min_free_space", DEFAULT_MIN_FREE_SPACE),
        transport=transport,
        concurrency=delivery.integer("concurrency", 4, 1, MAX_CONCURRENCY),
        retry_schedule=schedule,
        max_queue_age=delivery.duration("max_queue_age", DEFAULT_MAX_QUEUE_AGE),
        rescan_interval=delivery.duration("rescan_interval", 60.0),
        stale_temp_age=delivery.duration("stale_temp_age", 86400.0),
        smtp=smtp,
        maildir_path=maildir_path,
        command_argv=argv,
        command_timeout=command.duration("timeout", 600.0),
    )
    for reader in (top, delivery, smtp_table, maildir, command):
        reader.check_unknown()
    return config
