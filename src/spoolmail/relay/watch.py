"""Wake the relay when something lands in incoming/ (watchdog, i.e. inotify)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("spoolmail")


class _Waker(FileSystemEventHandler):  # type: ignore[misc,unused-ignore]
    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self.loop = loop
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Created, moved (the front's rename) or closed: any of them means "look again".
        if event.event_type in ("created", "moved", "closed", "modified"):
            self.loop.call_soon_threadsafe(self.event.set)


class IncomingWatcher:
    """Runs watchdog's observer thread; the periodic rescan covers anything it misses."""

    def __init__(self, path: str, event: asyncio.Event) -> None:
        self.path = path
        self.event = event
        self.observer: Any = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        observer = Observer()
        observer.schedule(_Waker(loop, self.event), self.path, recursive=False)
        try:
            observer.start()
        except OSError as exc:
            log.warning("cannot watch %s (%s); relying on the periodic rescan", self.path, exc)
            return
        self.observer = observer

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
