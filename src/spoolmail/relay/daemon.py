"""The relay's main loop: pickup, schedule, deliver, report; signals and reloads."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import resource
import signal
import time

from spoolmail import config as config_mod
from spoolmail.admin import oplog
from spoolmail.config import Config
from spoolmail.relay import pickup, sdnotify, spooldirs, status
from spoolmail.relay.deliver import Deliverer
from spoolmail.relay.queue import HELD_MTIME, Busy, QueueStore
from spoolmail.relay.watch import IncomingWatcher
from spoolmail.transport.base import Transport
from spoolmail.transport.command import CommandTransport
from spoolmail.transport.maildir import MaildirTransport, ensure_maildir
from spoolmail.transport.smtp import SmtpTransport

log = logging.getLogger("spoolmail")
STOP_GRACE = 60.0
LOOP_ERROR_PAUSE = 10
STATUS_EVERY = 2.0  # seconds between relay.status writes (each counts the queue)
DUE_BATCH = 1000


def make_transport(cfg: Config) -> Transport:
    if cfg.transport == "smtp":
        return SmtpTransport(cfg.smtp, cfg.hostname)
    if cfg.transport == "command":
        return CommandTransport(cfg.command_argv, cfg.command_timeout)
    ensure_maildir(cfg.maildir_path)
    return MaildirTransport(cfg.maildir_path)


def describe(cfg: Config) -> str:
    if cfg.transport == "smtp":
        return f"smtp to {cfg.smtp.host}:{cfg.smtp.port} (tls={cfg.smtp.tls})"
    if cfg.transport == "command":
        return f"command {cfg.command_argv[0]}"
    return f"maildir {cfg.maildir_path}"


class Relay:
    def __init__(self, cfg: Config, config_file: str | None = None, once: bool = False) -> None:
        self.cfg = cfg
        self.config_file = config_file
        self.once = once
        self.store = QueueStore(cfg.queue_dir)
        self.transport = make_transport(cfg)
        self.deliverer = Deliverer(cfg, self.store, self.transport)
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        # Messages not to start again before a time: busy with an operator command,
        # or their attempt failed unexpectedly (never a tight loop).
        self.not_before: dict[str, float] = {}
        self.stuck: set[str] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self.reload_requested = False
        # Due messages not yet started: a bounded batch from one queue scan, so
        # neither memory nor scanning grows with the queue (no task per message).
        self.due: collections.deque[str] = collections.deque()
        self.queued_due: set[str] = set()
        self.force_pending = False  # a flush: treat deferred messages as due
        self.rescan = True
        self.next_scan = 0.0
        self.started = time.time()
        self.last_status = 0.0

    # -- lifecycle -------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self._stop), (signal.SIGINT, self._stop),
                             (signal.SIGHUP, self._reload)):
            loop.add_signal_handler(sig, handler)
        for name in self.store.sweep():
            log.warning("queue/%s: removed, left behind by an interrupted write", name)
        watcher = IncomingWatcher(self.cfg.incoming, self.wake)
        if not self.once:
            watcher.start()
        log.info("relay started: spool %s, delivery by %s%s", self.cfg.spool,
                 describe(self.cfg), " (once)" if self.once else "")
        sdnotify.notify("READY=1\nSTATUS=started")
        watchdog_every = sdnotify.watchdog_interval()
        try:
            await self._loop(watchdog_every)
        finally:
            watcher.stop()
            await self._drain()
            await self.transport.close()
            self._write_status(force=True, stopped=True)
            log.info("relay stopped")
        return 0

    def _stop(self) -> None:
        if not self.stopping:
            log.info("stopping: waiting for deliveries in progress")
            sdnotify.notify("STOPPING=1")
        self.stopping = True
        self.wake.set()

    def _reload(self) -> None:
        self.reload_requested = True
        self.wake.set()

    async def _apply_reload(self) -> None:
        self.reload_requested = False
        sdnotify.notify("RELOADING=1")
        try:
            cfg = config_mod.load(self.config_file)
            spooldirs.prepare(cfg)
            transport = make_transport(cfg)
        except config_mod.ConfigError as exc:
            log.error("reload failed, keeping the old configuration: %s", exc)
            sdnotify.notify("READY=1")
            return
        old = self.transport
        self.cfg, self.transport = cfg, transport
        self.store = QueueStore(cfg.queue_dir)
        unsaved = self.deliverer.unsaved
        self.deliverer = Deliverer(cfg, self.store, transport)
        self.deliverer.unsaved = unsaved
        await old.close()
        log.info("configuration reloaded: delivery by %s", describe(cfg))
        sdnotify.notify("READY=1")

    async def _drain(self) -> None:
        tasks = list(self.in_flight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d deliveries did not finish in %ds; they stay queued",
                        len(pending), STOP_GRACE)
            await asyncio.wait(pending, timeout=5)

    # -- the loop --------------------------------------------------------------
    async def _loop(self, watchdog_every: float | None) -> None:
        while not self.stopping:
            if self.reload_requested:
                await self._apply_reload()
            try:
                picked = await asyncio.to_thread(pickup.scan, self.cfg, self.store, self.stuck)
                oplog.consume(self.cfg.control_dir)
            except OSError as exc:  # EMFILE, EIO…: temporary; never a reason to die
                log.error("cannot read %s: %s; trying again in %ds", self.cfg.incoming,
                          exc.strerror or exc, LOOP_ERROR_PAUSE)
                await asyncio.sleep(LOOP_ERROR_PAUSE)
                continue
            for item in picked:
                if item.kind == "flush":
                    self.force_pending = self.rescan = True
                elif item.kind in ("wake", "quarantined"):
                    self.rescan = True  # an operator action, or a notice to deliver
                elif item.kind == "queued" and item.queue_id:
                    self._queue_due(item.queue_id, first=True)
            if not self.due and (self.rescan or time.time() >= self.next_scan):
                self._scan_queue()
            self._start_more()
            status_written = self._write_status()
            if self.once:
                if not self.in_flight and not self.due:
                    return
                await asyncio.wait(list(self.in_flight.values()),
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            timeout = min(self.cfg.rescan_interval, max(0.0, self.next_scan - time.time()),
                          status.HEARTBEAT_INTERVAL if status_written else STATUS_EVERY)
            if watchdog_every is not None:
                timeout = min(timeout, watchdog_every)
                sdnotify.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(timeout, 0.05))
            self.wake.clear()

    def _queue_due(self, queue_id: str, first: bool = False) -> bool:
        """Put a message on the due list; False when the batch is full."""
        if queue_id in self.queued_due or queue_id in self.in_flight:
            return True
        if len(self.due) >= DUE_BATCH:
            return False
        if first:
            self.due.appendleft(queue_id)
        else:
            self.due.append(queue_id)
        self.queued_due.add(queue_id)
        return True

    def _scan_queue(self) -> None:
        """Collect up to DUE_BATCH due messages; note when to look again."""
        now = time.time()
        force = self.force_pending
        next_scan = now + self.cfg.rescan_interval
        complete = True
        for queue_id, due in self.store.scan():
            if due >= HELD_MTIME:
                continue
            wait_until = self.not_before.get(queue_id)
            if wait_until is not None:
                if wait_until > now:
                    next_scan = min(next_scan, wait_until)
                    continue
                del self.not_before[queue_id]
            if due <= now or force:
                if not self._queue_due(queue_id):
                    complete = False
                    break
            else:
                next_scan = min(next_scan, due)
        if complete:
            self.force_pending = False
        self.rescan = not complete
        self.next_scan = next_scan

    def _start_more(self) -> None:
        while self.due and len(self.in_flight) < self.cfg.concurrency and not self.stopping:
            queue_id = self.due.popleft()
            self.queued_due.discard(queue_id)
            self._start(queue_id)

    def _start(self, queue_id: str) -> None:
        if queue_id in self.in_flight or self.stopping:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(queue_id))
        self.in_flight[queue_id] = task

    async def _deliver(self, queue_id: str) -> None:
        try:
            created = await self.deliverer.attempt(queue_id)
        except Busy:
            log.info("%s: busy (another process holds its lock); will retry", queue_id)
            self.not_before[queue_id] = time.time() + 1.0
            created = []
        except KeyError:
            created = []  # removed meanwhile (operator delete)
        except OSError as exc:
            pause = max(min(self.cfg.retry_schedule), LOOP_ERROR_PAUSE)
            log.error("%s: cannot record the attempt (%s); nothing is sent again until it "
                      "is recorded; retrying in %ds", queue_id, exc.strerror or exc, pause)
            self.not_before[queue_id] = time.time() + pause
            created = []
        except Exception:
            pause = max(min(self.cfg.retry_schedule), LOOP_ERROR_PAUSE)
            log.exception("%s: delivery attempt failed unexpectedly; it stays queued and is "
                          "retried in %ds", queue_id, pause)
            self.not_before[queue_id] = time.time() + pause
            created = []
        finally:
            self.in_flight.pop(queue_id, None)
        for bounce_id in created:
            self._queue_due(bounce_id, first=True)
        # A deferred (or busy) message may now fall due before the next planned scan.
        soonest = time.time() + min(self.cfg.retry_schedule)
        self.next_scan = min(self.next_scan, self.not_before.get(queue_id, soonest), soonest)
        self.wake.set()

    def _write_status(self, force: bool = False, stopped: bool = False) -> bool:
        """Write relay.status unless one was written just now; return whether it was."""
        now = time.time()
        if not force and now - self.last_status < STATUS_EVERY:
            return False
        self.last_status = now
        counts = status.count(self.store, len(self.in_flight))
        quarantined = status.count_quarantined(self.cfg.quarantine_dir)
        try:
            status.write(self.cfg.status_file, started=self.started, counts=counts,
                         quarantined=quarantined, last_error=self.deliverer.last_error,
                         transport=describe(self.cfg), stopped=stopped)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.cfg.status_file, exc.strerror)
        sdnotify.notify("STATUS=" + status.summary(counts, quarantined))
        return True


class AlreadyRunning(Exception):
    """Another relay holds the spool's lock."""


def _lock_spool(cfg: Config) -> int:
    """One relay per spool: two would pick up and deliver the same mail twice."""
    path = os.path.join(cfg.spool, "relay.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(f"another relay (pid {holder}) is already running on {cfg.spool}; "
                             "use 'spoolmail flush' to make it retry now") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _raise_fd_limit() -> None:
    """Each delivery holds a connection or two: allow what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(config_file: str | None, once: bool) -> int:
    cfg = config_mod.load(config_file)
    _raise_fd_limit()
    spooldirs.prepare(cfg)
    lock = _lock_spool(cfg)
    try:
        return asyncio.run(Relay(cfg, config_file, once).run())
    finally:
        os.close(lock)
