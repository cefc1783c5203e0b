"""The relay's main loop: pickup, schedule, deliver, report; signals and reloads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from spoolmail import config as config_mod
from spoolmail.admin import oplog
from spoolmail.config import Config
from spoolmail.relay import pickup, sdnotify, spooldirs, status
from spoolmail.relay.deliver import Deliverer
from spoolmail.relay.queue import Busy, QueueStore
from spoolmail.relay.watch import IncomingWatcher
from spoolmail.transport.base import Transport
from spoolmail.transport.command import CommandTransport
from spoolmail.transport.maildir import MaildirTransport, ensure_maildir
from spoolmail.transport.smtp import SmtpTransport

log = logging.getLogger("spoolmail")
STOP_GRACE = 60.0


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
        self.wake = asyncio.Event()
        self.stopping = False
        self.reload_requested = False
        self.flush_requested = False
        self.semaphore = asyncio.Semaphore(cfg.concurrency)
        self.started = time.time()
        self.last_status = 0.0

    # -- lifecycle -------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self._stop), (signal.SIGINT, self._stop),
                             (signal.SIGHUP, self._reload)):
            loop.add_signal_handler(sig, handler)
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
        self.deliverer = Deliverer(cfg, self.store, transport)
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
            picked = await asyncio.to_thread(pickup.scan, self.cfg, self.store)
            oplog.consume(self.cfg.control_dir)
            for item in picked:
                if item.kind == "flush":
                    self.flush_requested = True
                elif item.kind == "queued" and item.queue_id:
                    self._start(item.queue_id)
            next_due = self._start_due(force=self.flush_requested)
            self.flush_requested = False
            self._write_status()
            if self.once:
                if not self.in_flight and not any(p.kind == "queued" for p in picked):
                    return
                await asyncio.wait(list(self.in_flight.values()))
                continue
            timeout = min(self.cfg.rescan_interval, max(0.0, next_due - time.time()),
                          status.HEARTBEAT_INTERVAL)
            if watchdog_every is not None:
                timeout = min(timeout, watchdog_every)
                sdnotify.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=max(timeout, 0.05))
            self.wake.clear()

    def _start_due(self, force: bool) -> float:
        """Start every due message; return when the next one falls due."""
        now = time.time()
        next_due = now + self.cfg.rescan_interval
        for queue_id, due in self.store.scan():
            if queue_id in self.in_flight or due >= 4e9:
                continue
            if due <= now or force:
                self._start(queue_id)
            else:
                next_due = min(next_due, due)
        return next_due

    def _start(self, queue_id: str) -> None:
        if queue_id in self.in_flight or self.stopping:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(queue_id))
        self.in_flight[queue_id] = task

    async def _deliver(self, queue_id: str) -> None:
        try:
            async with self.semaphore:
                created = await self.deliverer.attempt(queue_id)
        except Busy:
            log.info("%s: busy (an operator command holds it); will retry", queue_id)
            created = []
        except KeyError:
            created = []  # removed meanwhile (operator delete)
        except Exception:
            log.exception("%s: delivery attempt failed unexpectedly; it stays queued", queue_id)
            created = []
        finally:
            self.in_flight.pop(queue_id, None)
        for bounce_id in created:
            self._start(bounce_id)
        self.wake.set()

    def _write_status(self, force: bool = False, stopped: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_status < 1.0:
            return
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


def run(config_file: str | None, once: bool) -> int:
    cfg = config_mod.load(config_file)
    spooldirs.prepare(cfg)
    return asyncio.run(Relay(cfg, config_file, once).run())
