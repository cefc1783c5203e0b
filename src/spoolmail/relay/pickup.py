"""Pickup: the security boundary between local users and the relay.

Each file in incoming/ is opened without following links and without
blocking, accepted only as a regular file with one link within the size
limit, attributed to its owner uid (never to the envelope's claims), cleaned
up, copied into the private queue (fsynced), and only then unlinked.
Anything else goes to quarantine/ with a reason; it never stops the relay.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import time
from dataclasses import dataclass

from spoolmail import envelope
from spoolmail.config import Config
from spoolmail.relay import bounce
from spoolmail.relay.cleanup import cleanup, qualify
from spoolmail.relay.identity import login_for_uid
from spoolmail.relay.queue import Entry, QueueStore, Recipient, fsync_dir, write_atomic
from spoolmail.sendmail.spoolwrite import FLUSH_PREFIX, TEMP_PREFIX, WAKE_PREFIX, new_queue_id

log = logging.getLogger("spoolmail")
SAFE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")
ENVELOPE_SLACK = envelope.MAX_ENVELOPE_BYTES


class Rejected(Exception):
    """The file is not acceptable; the message says why (for the quarantine log)."""


@dataclass(frozen=True)
class Picked:
    kind: str  # "queued", "flush", "wake", "quarantined", "skipped"
    queue_id: str | None = None


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise Rejected(f"larger than the limit of {limit} bytes")
        chunks.append(chunk)


def quarantine(cfg: Config, name: str, reason: str, uid: int | None) -> str:
    """Move incoming/name into quarantine/ with a record of why; return its new name."""
    qname = f"{int(time.time())}{os.urandom(3).hex()}-{name}"
    os.rename(os.path.join(cfg.incoming, name), os.path.join(cfg.quarantine_dir, qname))
    record = {"name": name, "reason": reason, "uid": uid, "time": time.time()}
    write_atomic(os.path.join(cfg.quarantine_dir, qname + ".reason"),
                 json.dumps(record).encode() + b"\n")
    log.warning("%s: quarantined as %s: %s (uid %s)", name, qname, reason,
                "unknown" if uid is None else uid)
    return qname


def _open_checked(cfg: Config, path: str) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Rejected("is a symbolic link") from None
        if exc.errno == errno.EACCES:
            raise Rejected("is not readable by the relay (the front writes mode 0640)") from None
        raise
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links"
    elif st.st_size > cfg.message_size_limit + ENVELOPE_SLACK:
        problem = f"larger than the limit of {cfg.message_size_limit} bytes"
    if problem:
        os.close(fd)
        raise Rejected(problem)
    return fd, st


def _owner_of(path: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.lstat(path).st_uid
    return None


def pickup_file(cfg: Config, store: QueueStore, name: str) -> Picked:
    path = os.path.join(cfg.incoming, name)
    if name.startswith(TEMP_PREFIX) or name.startswith("."):
        _clean_stale(cfg, name)
        return Picked("skipped")
    if name.startswith((FLUSH_PREFIX, WAKE_PREFIX)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return Picked("flush" if name.startswith(FLUSH_PREFIX) else "wake")
    try:
        fd, st = _open_checked(cfg, path)
        try:
            data = _read_all(fd, cfg.message_size_limit + ENVELOPE_SLACK)
        finally:
            os.close(fd)
        env, offset = envelope.decode(data)
        if len(data) - offset > cfg.message_size_limit:
            raise Rejected(f"larger than the limit of {cfg.message_size_limit} bytes")
    except FileNotFoundError:
        return Picked("skipped")  # taken by another pass
    except (Rejected, envelope.EnvelopeError) as exc:
        quarantine(cfg, name, str(exc), _owner_of(path))
        return Picked("quarantined")
    uid = st.st_uid
    login = login_for_uid(uid)
    queue_id = name if SAFE_ID.match(name) and not store.exists(name) else new_queue_id()
    now = time.time()
    try:
        cleaned = cleanup(env, data[offset:], uid=uid, login=login, cfg=cfg,
                          queue_id=queue_id, now=now)
    except Exception as exc:  # a message cleanup cannot handle must not come back every pass
        reason = f"cleanup failed: {type(exc).__name__}: {exc}"
        qname = quarantine(cfg, name, reason, uid)
        _tell_submitter(cfg, store, env, data[offset:], uid, login, qname, reason, now)
        return Picked("quarantined")
    if not cleaned.recipients:
        quarantine(cfg, name, "no recipients (none given and none found in the header)", uid)
        return Picked("quarantined")
    entry = Entry(
        id=queue_id,
        arrival=now,  # the relay's own clock: the envelope's time is only a claim
        uid=uid,
        login=login,
        sender=cleaned.sender,
        recipients=[Recipient(a) for a in cleaned.recipients],
        size=len(cleaned.message),
        eight_bit=cleaned.eight_bit,
        next_attempt=now,
    )
    store.create(entry, cleaned.message)
    os.unlink(path)
    log.info("%s: uid=%d (%s) from=<%s> size=%d nrcpt=%d: accepted", queue_id, uid, login,
             cleaned.sender, entry.size, len(entry.recipients))
    return Picked("queued", queue_id)


def _tell_submitter(cfg: Config, store: QueueStore, env: envelope.Envelope, message: bytes,
                    uid: int, login: str, qname: str, reason: str, now: float) -> None:
    """An accepted message that cannot be processed is not lost silently: it stays in
    quarantine for the operator, and its submitter gets a DSN saying so."""
    if env.sender is None:
        target = qualify(login, cfg.domain)
    elif env.sender:
        target = qualify(env.sender, cfg.domain)
    else:
        target = cfg.admin or ""
    if not target:
        return
    text = f"the mail system could not process the message ({reason}); it is kept as {qname}"
    failed = [Recipient(r, status="failed", last_reply=text, dsn_status="5.6.0")
              for r in env.recipients or ["(recipients in the message header)"]]
    original = Entry(id=qname, arrival=now, uid=uid, login=login, sender=env.sender or "",
                     recipients=failed)
    try:
        bounce.queue(cfg, store, original, failed, message, target, now)
    except Exception as exc:
        log.error("%s: cannot notify <%s>: %s", qname, target, exc)


def _clean_stale(cfg: Config, name: str) -> None:
    path = os.path.join(cfg.incoming, name)
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if time.time() - st.st_mtime > cfg.stale_temp_age:
            os.unlink(path)
            log.warning("%s: removed unfinished submission older than %ds (uid %d)",
                        name, cfg.stale_temp_age, st.st_uid)


def scan(cfg: Config, store: QueueStore, stuck: set[str] | None = None) -> list[Picked]:
    """Pick up every file in incoming/; one bad file never stops the others.

    stuck: names that could neither be picked up nor quarantined (say, a
    directory another user made there); each is logged once, not every pass.
    """
    results: list[Picked] = []
    stuck = set() if stuck is None else stuck
    with os.scandir(cfg.incoming) as entries:
        names = sorted(e.name for e in entries)
    stuck.intersection_update(names)
    for name in names:
        try:
            results.append(pickup_file(cfg, store, name))
        except Exception as exc:
            if name not in stuck:
                log.error("%s: pickup failed, left in incoming/ (it will be retried, and "
                          "logged again only if it changes): %s: %s",
                          name, type(exc).__name__, exc)
            stuck.add(name)
    if any(p.kind == "queued" for p in results):
        fsync_dir(cfg.incoming)
    return results
