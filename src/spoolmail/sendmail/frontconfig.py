"""The few settings the front needs, read without paying for tomllib.

The front runs once per message and its start-up is measured against a bare
interpreter, and tomllib alone costs several milliseconds. So the top of the
config file is scanned by hand; the first line this scanner is not certain
about (anything but comments and one-line `key = "string"`, `key = 123`,
`key = true` before the first table) hands the whole file to tomllib.
"""

from __future__ import annotations

import os

DEFAULT_CONFIG = "/etc/spoolmail/spoolmail.toml"
DEFAULT_SPOOL = "/var/spool/spoolmail"
DEFAULT_MESSAGE_SIZE_LIMIT = 25 * 1024 * 1024
DEFAULT_MIN_FREE_SPACE = 16 * 1024 * 1024

FRONT_KEYS = ("spool", "message_size_limit", "min_free_space")


class ConfigError(Exception):
    """The config file cannot be read or has a wrong value (exit 78)."""


class FrontConfig:
    __slots__ = ("message_size_limit", "min_free_space", "spool")

    def __init__(self, spool: str, message_size_limit: int, min_free_space: int) -> None:
        self.spool = spool
        self.message_size_limit = message_size_limit
        self.min_free_space = min_free_space


_NOT_SIMPLE = object()


def _simple_value(text: str) -> object:
    text = text.strip()
    if "#" in text and not text.startswith('"'):
        text = text.split("#", 1)[0].rstrip()
    if len(text) >= 2 and text[0] == '"':
        close = text.find('"', 1)
        tail = text[close + 1 :].strip() if close > 0 else "x"
        inner = text[1:close]
        if close > 0 and "\\" not in inner and (not tail or tail.startswith("#")):
            return inner
        return _NOT_SIMPLE
    if text in ("true", "false"):
        return text == "true"
    digits = text.replace("_", "")
    if digits.isdigit() and not text.startswith("_") and not text.endswith("_"):
        return int(digits)
    return _NOT_SIMPLE


def _scan_top(text: str) -> dict[str, object] | None:
    """Top-level keys of a simple TOML file, or None if it is not simple enough."""
    found: dict[str, object] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            return found
        key, eq, value = stripped.partition("=")
        key = key.strip()
        if not eq or not key or not all(c.isalnum() or c in "_-" for c in key):
            return None
        parsed = _simple_value(value)
        if parsed is _NOT_SIMPLE:
            return None
        found[key] = parsed
    return found


def _read_top_keys(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8") from exc
    found = _scan_top(text)
    if found is None:
        import tomllib

        try:
            found = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return found


def _positive_int(values: dict[str, object], key: str, default: int, path: str,
                  minimum: int = 0) -> int:
    value = values.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{path}: {key} must be a whole number of bytes >= {minimum}")
    return value


def load() -> FrontConfig:
    path = os.environ.get("SPOOLMAIL_CONFIG") or DEFAULT_CONFIG
    values = _read_top_keys(path)
    spool = values.get("spool", DEFAULT_SPOOL)
    if not isinstance(spool, str) or not spool.startswith("/"):
        raise ConfigError(f"{path}: spool must be an absolute path")
    env_spool = os.environ.get("SPOOLMAIL_SPOOL")
    if env_spool:
        spool = env_spool
    return FrontConfig(
        spool=spool,
        message_size_limit=_positive_int(
            values, "message_size_limit", DEFAULT_MESSAGE_SIZE_LIMIT, path, minimum=1
        ),
        min_free_space=_positive_int(values, "min_free_space", DEFAULT_MIN_FREE_SPACE, path),
    )
