"""The private queue: queue/<id>.msg (final bytes) and queue/<id>.json (state).

The state file's mtime is set to the message's next attempt time, so the
scheduler finds due messages with one scandir and a stat per file, without
reading every state file: memory does not grow with the queue.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

HELD_MTIME = 4102444800.0  # 2100-01-01: "never due" for held messages
PENDING = "pending"
SENT = "sent"
FAILED = "failed"  # permanent failure, DSN not yet queued
BOUNCED = "bounced"  # permanent failure, DSN queued (or none possible)


@dataclass
class Recipient:
    address: str
    status: str = PENDING
    attempts: int = 0
    last_reply: str | None = None
    dsn_status: str | None = None
    remote: str | None = None


@dataclass
class Entry:
    id: str
    arrival: float
    uid: int
    login: str
    sender: str
    recipients: list[Recipient]
    size: int = 0
    eight_bit: bool = False
    attempts: int = 0
    next_attempt: float = 0.0
    held: bool = False
    is_bounce: bool = False
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == PENDING]

    def unfinished(self) -> bool:
        return any(r.status in (PENDING, FAILED) for r in self.recipients)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Entry:
        raw = json.loads(data)
        raw["recipients"] = [Recipient(**r) for r in raw["recipients"]]
        return cls(**raw)


class Busy(Exception):
    """Another process (the relay or an operator command) holds the message."""


def fsync_dir(path: str) -> None:
    """Make renames and unlinks in the directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mtime: float | None = None, mode: int = 0o600) -> None:
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the unit's UMask=0077 must not narrow relay.status
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, path)


class QueueStore:
    def __init__(self, directory: str) -> None:
        self.dir = directory

    def msg_path(self, queue_id: str) -> str:
        return os.path.join(self.dir, queue_id + ".msg")

    def state_path(self, queue_id: str) -> str:
        return os.path.join(self.dir, queue_id + ".json")

    def exists(self, queue_id: str) -> bool:
        return os.path.exists(self.state_path(queue_id))

    def sweep(self) -> list[str]:
        """Remove what a crash can leave: a .msg without its state, half-written temps.

        A .msg without .json is never the only copy: create() writes the state
        before the incoming file goes, and remove() drops the state first.
        """
        removed: list[str] = []
        with os.scandir(self.dir) as entries:  # streamed: memory stays flat
            for item in entries:
                name = item.name
                orphan = name.endswith(".msg") and not os.path.exists(
                    self.state_path(name[:-4]))
                if orphan or (name.startswith(".") and name.endswith(".tmp")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item.path)
                    removed.append(name)
        return removed

    def create(self, entry: Entry, message: bytes) -> None:
        """Store a new message durably: bytes first, then its state."""
        write_atomic(self.msg_path(entry.id), message)
        self.save(entry, sync_dir=False)
        fsync_dir(self.dir)

    def save(self, entry: Entry, sync_dir: bool = True) -> None:
        due = HELD_MTIME if entry.held else entry.next_attempt
        write_atomic(self.state_path(entry.id), entry.to_json(), mtime=due)
        if sync_dir:
            fsync_dir(self.dir)

    def load(self, queue_id: str) -> Entry:
        with open(self.state_path(queue_id), "rb") as f:
            return Entry.from_json(f.read())

    def read_message(self, queue_id: str) -> bytes:
        with open(self.msg_path(queue_id), "rb") as f:
            return f.read()

    def remove(self, queue_id: str) -> None:
        for path in (self.state_path(queue_id), self.msg_path(queue_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        fsync_dir(self.dir)

    def scan(self) -> Iterator[tuple[str, float]]:
        """(id, next attempt time) for every message, from the state files' mtimes."""
        with os.scandir(self.dir) as entries:
            for item in entries:
                name = item.name
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    due = item.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                yield name[:-5], due

    def ids(self) -> list[str]:
        return sorted(queue_id for queue_id, _ in self.scan())

    @contextlib.contextmanager
    def locked(self, queue_id: str, wait: bool = False) -> Iterator[None]:
        """Hold the message's lock (flock on its .msg, which is never replaced)."""
        try:
            fd = os.open(self.msg_path(queue_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyError(queue_id) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise Busy(queue_id) from None
                raise
            if not os.path.exists(self.state_path(queue_id)):
                raise KeyError(queue_id)
            yield
        finally:
            os.close(fd)
