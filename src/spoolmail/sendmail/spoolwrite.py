"""Write one spool file into incoming/ atomically, or fail leaving nothing behind."""

from __future__ import annotations

import errno
import os
import time

from spoolmail import sysexits

# Group-readable for the relay (incoming/ is set-group-ID, so the file gets the
# relay's group); set with fchmod because the caller's umask may be 0077.
SPOOL_FILE_MODE = 0o640
TEMP_PREFIX = ".tmp."
FLUSH_PREFIX = "flush-"  # zero-length: retry every deferred message now (sendmail -q)
WAKE_PREFIX = "wake-"  # zero-length: look at the queue and control/ now
DROP_IN = "/usr/share/spoolmail/spoolmail-client.conf"


class SpoolError(Exception):
    """Submission failed: a one-line message and the sysexits code to leave with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def new_queue_id() -> str:
    """Time-ordered and unique without coordination: seconds, then 40 random bits."""
    return f"{int(time.time()):09X}{os.urandom(5).hex().upper()}"


def _describe_dir(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f" (mode {st.st_mode & 0o7777:04o}, owner uid {st.st_uid} gid {st.st_gid})"


def explain(exc: OSError, incoming: str) -> SpoolError:
    """Turn an OSError on the spool into the one line that says what to fix."""
    spool = os.path.dirname(incoming.rstrip("/"))
    code = exc.errno
    if code == errno.EROFS:
        return SpoolError(
            f"cannot write to {incoming}: read-only file system here; in a systemd unit "
            f"add ReadWritePaths={incoming} (or the drop-in {DROP_IN})",
            sysexits.EX_CANTCREAT,
        )
    if code == errno.ENOENT:
        return SpoolError(
            f"spool directory {incoming} does not exist here: install and start "
            f"spoolmail-relay (it creates it), or in a systemd unit that hides /var "
            f"make it visible with ReadWritePaths={incoming} (or the drop-in {DROP_IN})",
            sysexits.EX_CANTCREAT,
        )
    if code in (errno.EACCES, errno.EPERM):
        return SpoolError(
            f"permission denied creating a file in {incoming}{_describe_dir(incoming)}: "
            f"it must be mode 3733 owned by the relay's user (systemd-tmpfiles --create, "
            f"or run 'spoolmail relay' once), or your user must be in its group",
            sysexits.EX_CANTCREAT,
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return SpoolError(
            f"no space left for the message in {spool} ({exc.strerror}); try again later",
            sysexits.EX_TEMPFAIL,
        )
    return SpoolError(
        f"cannot write to {incoming}: {exc.strerror or exc}", sysexits.EX_TEMPFAIL
    )


def check_free_space(incoming: str, floor: int, size: int) -> None:
    try:
        st = os.statvfs(incoming)
    except OSError as exc:
        raise explain(exc, incoming) from exc
    free = st.f_bavail * st.f_frsize
    if free - size < floor:
        raise SpoolError(
            f"spool {incoming} is below its free-space floor "
            f"({free // 1024} KiB free, {floor // 1024} KiB kept in reserve); try again later",
            sysexits.EX_TEMPFAIL,
        )


def write(incoming: str, queue_id: str, parts: list[bytes]) -> str:
    """Write parts as incoming/<queue_id>, durably; return the final path."""
    temp = os.path.join(incoming, TEMP_PREFIX + queue_id)
    final = os.path.join(incoming, queue_id)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o600)
    except OSError as exc:
        raise explain(exc, incoming) from exc
    try:
        try:
            os.fchmod(fd, SPOOL_FILE_MODE)
            for part in parts:
                view = memoryview(part)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
            os.rename(temp, final)
            _sync_directory(incoming, fd)
        finally:
            os.close(fd)
    except OSError as exc:
        for leftover in (temp, final):
            try:
                os.unlink(leftover)
            except OSError:
                pass
        raise explain(exc, incoming) from exc
    return final


def _sync_directory(incoming: str, file_fd: int) -> None:
    """Make the rename durable."""
    try:
        dfd = os.open(incoming, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        # incoming/ is mode 3733: others may write but not list it, so an
        # unprivileged caller cannot open it. On journalling file systems
        # (ext4, xfs) an fsync of the renamed file commits the rename with it.
        os.fsync(file_fd)
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
