"""Read-only views of the queue: `spoolmail queue`, `mailq`, `spoolmail show`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from spoolmail import headerblock
from spoolmail.relay.queue import Entry, QueueStore


def entries(store: QueueStore) -> list[Entry]:
    found: list[Entry] = []
    for queue_id in store.ids():
        try:
            found.append(store.load(queue_id))
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            continue  # removed or being rewritten meanwhile
    return sorted(found, key=lambda e: (e.arrival, e.id))


def _when(ts: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S", time.localtime(ts))


def state_of(entry: Entry) -> str:
    if entry.held:
        return "held"
    if entry.attempts == 0:
        return "new"
    return "deferred" if entry.next_attempt > time.time() else "due"


def format_text(items: list[Entry]) -> str:
    if not items:
        return "queue is empty"
    lines: list[str] = []
    total = 0
    for e in items:
        total += e.size
        sender = e.sender or "<>"
        flag = "!" if e.held else " "
        lines.append(f"{e.id}{flag} {e.size:>8} {_when(e.arrival)}  {sender}")
        extra = state_of(e)
        if not e.held and e.attempts:
            extra += f", next attempt {_when(e.next_attempt)}"
        lines.append(f"    ({extra}; {e.attempts} attempts)")
        for r in e.recipients:
            detail = f" [{r.last_reply}]" if r.last_reply and r.status != "sent" else ""
            lines.append(f"        {r.address}  {r.status}{detail}")
        lines.append("")
    count = len(items)
    lines.append(f"-- {total // 1024} KiB in {count} message{'s' if count != 1 else ''}")
    return "\n".join(lines)


def as_json(items: list[Entry]) -> str:
    data: list[dict[str, Any]] = []
    for e in items:
        record = asdict(e)
        record["state"] = state_of(e)
        data.append(record)
    return json.dumps(data, indent=1)


def show(store: QueueStore, queue_id: str, body: bool) -> str:
    entry = store.load(queue_id)
    message = store.read_message(queue_id)
    lines = [
        f"id:           {entry.id}",
        f"state:        {state_of(entry)}",
        f"arrival:      {_when(entry.arrival)}",
        f"submitted by: uid {entry.uid} ({entry.login})",
        f"sender:       <{entry.sender}>",
        f"size:         {entry.size}",
        f"attempts:     {entry.attempts}",
    ]
    if entry.attempts and not entry.held:
        lines.append(f"next attempt: {_when(entry.next_attempt)}")
    if entry.last_error:
        lines.append(f"last error:   {entry.last_error}")
    for r in entry.recipients:
        lines.append(f"recipient:    <{r.address}> {r.status}, {r.attempts} attempts"
                     + (f": {r.last_reply}" if r.last_reply else ""))
    lines.append("")
    text = message.replace(b"\r\n", b"\n")
    if body:
        lines.append(text.decode("utf-8", "replace"))
    else:
        _, start = headerblock.split(text)
        lines.append(text[:start].decode("utf-8", "replace").rstrip("\n"))
    return "\n".join(lines)
