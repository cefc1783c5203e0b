"""Queue actions for operators: flush, hold, release, delete, bounce, quarantine."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from spoolmail import sysexits
from spoolmail.admin import oplog
from spoolmail.config import Config
from spoolmail.relay.queue import FAILED, PENDING, Busy, Entry, QueueStore


class ActionError(Exception):
    """A one-line reason an action could not be done for one message."""

    def __init__(self, message: str, code: int = sysexits.EX_NOINPUT) -> None:
        super().__init__(message)
        self.code = code


def _change(cfg: Config, queue_id: str, action: str, mutate: Callable[[Entry], None],
            remove: bool = False) -> None:
    store = QueueStore(cfg.queue_dir)
    try:
        with store.locked(queue_id, wait=False):
            entry = store.load(queue_id)
            if remove:
                store.remove(queue_id)
            else:
                mutate(entry)
                store.save(entry)
    except KeyError:
        raise ActionError(f"{queue_id}: no such message in the queue") from None
    except Busy:
        raise ActionError(f"{queue_id}: being delivered right now; try again",
                          sysexits.EX_TEMPFAIL) from None
    oplog.record(cfg.control_dir, cfg.incoming, action, queue_id)


def hold(cfg: Config, queue_id: str) -> None:
    def mutate(e: Entry) -> None:
        e.held = True
    _change(cfg, queue_id, "held", mutate)


def release(cfg: Config, queue_id: str) -> None:
    def mutate(e: Entry) -> None:
        e.held = False
        e.next_attempt = time.time()
    _change(cfg, queue_id, "released", mutate)


def flush(cfg: Config, queue_id: str) -> None:
    def mutate(e: Entry) -> None:
        e.next_attempt = time.time()
    _change(cfg, queue_id, "flushed", mutate)


def delete(cfg: Config, queue_id: str) -> None:
    _change(cfg, queue_id, "deleted", lambda e: None, remove=True)


def bounce(cfg: Config, queue_id: str) -> None:
    def mutate(e: Entry) -> None:
        for rcpt in e.recipients:
            if rcpt.status == PENDING:
                rcpt.status = FAILED
                rcpt.dsn_status = "5.0.0"
                rcpt.last_reply = "returned to the sender by the mail system's operator"
        e.held = False
        e.next_attempt = time.time()
    _change(cfg, queue_id, "returned to sender", mutate)


def flush_all(cfg: Config) -> None:
    oplog.wake(cfg.incoming, flush=True)


# -- quarantine ---------------------------------------------------------------

def quarantined(cfg: Config) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for name in sorted(os.listdir(cfg.quarantine_dir)):
        if not name.endswith(".reason"):
            continue
        try:
            with open(os.path.join(cfg.quarantine_dir, name), "rb") as f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            record = {}
        record["qid"] = name[: -len(".reason")]
        items.append(record)
    return items


def _quarantine_path(cfg: Config, qid: str) -> str:
    if "/" in qid or qid.startswith("."):
        raise ActionError(f"{qid}: not a quarantine entry")
    path = os.path.join(cfg.quarantine_dir, qid)
    if not os.path.lexists(path + ".reason"):
        raise ActionError(f"{qid}: no such quarantine entry")
    return path


def quarantine_show(cfg: Config, qid: str, limit: int = 64 * 1024) -> bytes:
    path = _quarantine_path(cfg, qid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"(cannot show: {exc.strerror})".encode()
    try:
        if not os.path.isfile(f"/proc/self/fd/{fd}"):
            return b"(not a regular file)"
        return os.read(fd, limit)
    finally:
        os.close(fd)


def quarantine_release(cfg: Config, qid: str) -> None:
    path = _quarantine_path(cfg, qid)
    name = qid.split("-", 1)[1] if "-" in qid else qid
    target = os.path.join(cfg.incoming, name)
    try:
        os.link(path, target)  # unlike rename, never replaces a file of the same name
    except FileExistsError:
        raise ActionError(f"{qid}: incoming/{name} exists; release it later") from None
    os.unlink(path)
    os.unlink(path + ".reason")
    oplog.record(cfg.control_dir, cfg.incoming, "released from quarantine", name)


def quarantine_delete(cfg: Config, qid: str) -> None:
    path = _quarantine_path(cfg, qid)
    if os.path.lexists(path):
        os.unlink(path)
    os.unlink(path + ".reason")
    oplog.record(cfg.control_dir, cfg.incoming, "deleted from quarantine", qid)
