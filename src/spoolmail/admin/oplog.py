"""Operator actions are told to the relay, which logs them with the message id.

`journalctl -u spoolmail-relay | grep ID` then tells a message's whole story,
including who deleted or held it. The note is a small file in control/; a
flush request in incoming/ wakes the relay to read it.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import time

from spoolmail.relay.queue import write_atomic
from spoolmail.sendmail.spoolwrite import FLUSH_PREFIX, WAKE_PREFIX, new_queue_id

log = logging.getLogger("spoolmail")


def operator() -> str:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid-{uid}"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (uid {uid}{', via sudo from ' + sudo if sudo else ''})"


def record(control_dir: str, incoming: str, action: str, queue_id: str, detail: str = "") -> None:
    os.makedirs(control_dir, mode=0o700, exist_ok=True)
    note = {"action": action, "id": queue_id, "by": operator(), "detail": detail,
            "time": time.time()}
    write_atomic(os.path.join(control_dir, new_queue_id() + ".json"),
                 json.dumps(note).encode() + b"\n")
    wake(incoming)


def wake(incoming: str, flush: bool = False) -> None:
    """Make the relay look at the queue and control/ now (flush: and retry everything)."""
    path = os.path.join(incoming, (FLUSH_PREFIX if flush else WAKE_PREFIX) + new_queue_id())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    os.close(fd)


def consume(control_dir: str) -> None:
    """Relay side: log each note as one line with the message id, then remove it."""
    try:
        names = sorted(os.listdir(control_dir))
    except FileNotFoundError:
        return
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(control_dir, name)
        try:
            with open(path, "rb") as f:
                note = json.loads(f.read())
            log.info("%s: %s by %s%s", note.get("id", "?"), note.get("action", "?"),
                     note.get("by", "?"), f" ({note['detail']})" if note.get("detail") else "")
        except (OSError, ValueError) as exc:
            log.warning("control/%s: unreadable operator note: %s", name, exc)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
