"""Create the spool's directories with the right modes, or refuse unsafe ones."""

from __future__ import annotations

import os
import stat

from spoolmail.config import Config, ConfigError

INCOMING_MODE = 0o3733
PRIVATE_MODE = 0o700


def _ensure(path: str, mode: int) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, mode)  # mkdir's mode is cut by the umask and drops set-group-ID
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    return os.lstat(path)


def _check(path: str, st: os.stat_result, private: bool) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"unsafe spool: {path} is not a directory (or is a symbolic link)")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"unsafe spool: {path} is owned by uid {st.st_uid}, not by the relay "
                          f"(uid {os.geteuid()}); chown it to the relay's user")
    if private and mode & 0o077:
        raise ConfigError(f"unsafe spool: {path} is mode {mode:04o}; it must be private (0700)")
    if not private:
        if mode & 0o004:
            raise ConfigError(f"unsafe spool: {path} is mode {mode:04o}, readable by others "
                              f"(other users could read queued mail); use 3733")
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise ConfigError(f"unsafe spool: {path} is mode {mode:04o}, writable without the "
                              f"sticky bit (users could delete each other's mail); use 3733")


def prepare(cfg: Config) -> None:
    """Make sure spool/, incoming/, queue/, quarantine/ and control/ exist and are safe."""
    top = _ensure(cfg.spool, 0o755)
    if stat.S_IMODE(top.st_mode) & 0o022:
        raise ConfigError(f"unsafe spool: {cfg.spool} is writable by others")
    _check(cfg.incoming, _ensure(cfg.incoming, INCOMING_MODE), private=False)
    for path in (cfg.queue_dir, cfg.quarantine_dir, cfg.control_dir):
        _check(path, _ensure(path, PRIVATE_MODE), private=True)
