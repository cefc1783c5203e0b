"""Maildir delivery (the embedded default): tmp/ then new/, unique names, fsync."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time

from spoolmail.relay.queue import fsync_dir
from spoolmail.transport.base import DEFER, SENT, Attempt, Outcome

_counter = itertools.count()


def ensure_maildir(path: str) -> None:
    for sub in ("", "tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)


def unique_name() -> str:
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    return f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{next(_counter)}.{host}"


def deliver_one(maildir: str, data: bytes) -> str:
    """Write data into maildir/new durably and return the file's path."""
    ensure_maildir(maildir)
    name = unique_name()
    tmp = os.path.join(maildir, "tmp", name)
    new = os.path.join(maildir, "new", name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, new)
    os.unlink(tmp)
    fsync_dir(os.path.join(maildir, "new"))
    return new


class MaildirTransport:
    """One copy per recipient, with Return-Path and Delivered-To as a local LDA adds."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _deliver_sync(self, attempt: Attempt) -> dict[str, Outcome]:
        body = attempt.message.replace(b"\r\n", b"\n")
        results: dict[str, Outcome] = {}
        for rcpt in attempt.recipients:
            head = f"Return-Path: <{attempt.sender}>\nDelivered-To: {rcpt}\n".encode()
            try:
                where = deliver_one(self.path, head + body)
            except OSError as exc:
                results[rcpt] = Outcome(
                    DEFER, f"cannot write to Maildir {self.path}: {exc.strerror}", "4.3.0",
                    f"maildir:{self.path}",
                )
                continue
            results[rcpt] = Outcome(SENT, f"delivered to {where}", "2.0.0", f"maildir:{self.path}")
        return results

    async def deliver(self, attempt: Attempt) -> dict[str, Outcome]:
        return await asyncio.to_thread(self._deliver_sync, attempt)

    async def close(self) -> None:
        return None
