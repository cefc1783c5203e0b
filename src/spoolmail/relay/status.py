"""relay.status: what `spoolmail status` reads to tell whether the relay is alive."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from spoolmail.relay.queue import HELD_MTIME, QueueStore, write_atomic

HEARTBEAT_INTERVAL = 15.0


@dataclass
class QueueCounts:
    total: int = 0
    deferred: int = 0
    held: int = 0
    active: int = 0
    oldest: float | None = None


def count(store: QueueStore, in_flight: int) -> QueueCounts:
    counts = QueueCounts(active=in_flight)
    now = time.time()
    for queue_id, due in store.scan():
        counts.total += 1
        if due >= HELD_MTIME:
            counts.held += 1
        elif due > now:
            counts.deferred += 1
        try:
            # The relay wrote the .msg at pickup and never touches it again, so its
            # mtime is the arrival by the relay's clock (the id is the submitter's).
            arrival = os.stat(store.msg_path(queue_id)).st_mtime
        except FileNotFoundError:
            continue
        if counts.oldest is None or arrival < counts.oldest:
            counts.oldest = arrival
    return counts


def count_quarantined(directory: str) -> int:
    try:
        return sum(1 for n in os.listdir(directory) if n.endswith(".reason"))
    except OSError:
        return 0


def write(path: str, *, started: float, counts: QueueCounts, quarantined: int,
          last_error: str | None, transport: str, stopped: bool = False) -> None:
    record = {
        "pid": os.getpid(),
        "stopped": stopped,
        "started": started,
        "heartbeat": time.time(),
        "heartbeat_interval": HEARTBEAT_INTERVAL,
        "transport": transport,
        "queue": asdict(counts),
        "quarantined": quarantined,
        "last_error": last_error,
    }
    write_atomic(path, json.dumps(record, indent=1).encode() + b"\n", mode=0o640)


def summary(counts: QueueCounts, quarantined: int) -> str:
    return (f"queue: {counts.total} messages ({counts.deferred} deferred, {counts.held} held, "
            f"{counts.active} in delivery); quarantined: {quarantined}")
