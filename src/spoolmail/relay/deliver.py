"""One delivery attempt for one queued message, and what follows from it."""

from __future__ import annotations

import logging
import time

from spoolmail.config import Config
from spoolmail.envelope import has_control
from spoolmail.relay import bounce
from spoolmail.relay.queue import (
    BOUNCED,
    FAILED,
    PENDING,
    SENT,
    Entry,
    QueueStore,
    Recipient,
)
from spoolmail.transport import base
from spoolmail.transport.base import Attempt, Outcome, Transport

log = logging.getLogger("spoolmail")


def retry_delay(cfg: Config, attempts: int) -> float:
    schedule = cfg.retry_schedule
    return schedule[min(max(attempts, 1), len(schedule)) - 1]


def _refuse_control_characters(sender: str, recipients: list[str]) -> dict[str, Outcome]:
    if has_control(sender):
        bad = Outcome(base.FAIL, "the sender address contains a control character", "5.1.7")
        return base.all_of(recipients, bad)
    bad = Outcome(base.FAIL, "the address contains a control character", "5.1.3")
    return {r: bad for r in recipients if has_control(r)}


class Deliverer:
    def __init__(self, cfg: Config, store: QueueStore, transport: Transport) -> None:
        self.cfg = cfg
        self.store = store
        self.transport = transport
        self.last_error: str | None = None
        # Outcomes that could not be written (ENOSPC…), kept until they can be.
        self.unsaved: dict[str, Entry] = {}

    async def attempt(self, queue_id: str) -> list[str]:
        """Try the message's pending recipients once; return ids of bounces it queued."""
        with self.store.locked(queue_id):
            unsaved = self.unsaved.pop(queue_id, None)
            entry = unsaved or self.store.load(queue_id)
            if entry.held and unsaved is None:
                return []
            message = self.store.read_message(queue_id)
            try:
                # A state the disk has not recorded yet (disk full) is written out
                # before anything is sent again: an accepted recipient is never re-sent.
                pending = entry.pending() if unsaved is None else []
                if pending:
                    await self._try(entry, pending, message)
                return self._settle(entry, message)
            except OSError:
                self.unsaved[queue_id] = entry
                raise

    def _settle(self, entry: Entry, message: bytes) -> list[str]:
        """Expire, bounce, and record the outcome: save, or remove when done."""
        queue_id = entry.id
        now = time.time()
        if now - entry.arrival > self.cfg.max_queue_age:
            self._expire(entry, now)
        created = self._bounce_failures(entry, message, now)
        if entry.unfinished() and not entry.held:
            entry.next_attempt = now + retry_delay(self.cfg, entry.attempts)
            self.store.save(entry)
            log.info("%s: deferred, next attempt in %ds", queue_id, entry.next_attempt - now)
        elif entry.unfinished():
            self.store.save(entry)
        else:
            self.store.remove(queue_id)
            log.info("%s: removed", queue_id)
        return created

    async def _try(self, entry: Entry, pending: list[Recipient], message: bytes) -> None:
        # Control characters would inject SMTP commands or header fields; the front
        # and pickup refuse them, but header-derived (-t) addresses are checked here.
        results = _refuse_control_characters(entry.sender, [r.address for r in pending])
        sendable = [r.address for r in pending if r.address not in results]
        attempt = Attempt(entry.id, entry.sender, sendable, message, entry.eight_bit)
        try:
            if sendable:
                results.update(await self.transport.deliver(attempt))
        except Exception as exc:  # a transport bug must not become a tight retry loop
            log.exception("%s: the %s transport failed unexpectedly", entry.id,
                          self.cfg.transport)
            results.update(base.all_of(sendable, Outcome(
                base.DEFER, f"internal error in the transport: {type(exc).__name__}: {exc}",
                "4.3.0")))
        entry.attempts += 1
        now = time.time()
        for rcpt in pending:
            outcome = results.get(rcpt.address) or Outcome(
                base.DEFER, "no result from the transport", "4.0.0")
            rcpt.attempts += 1
            rcpt.last_reply = outcome.reply
            rcpt.dsn_status = outcome.dsn_status
            rcpt.remote = outcome.relay
            rcpt.status = {base.SENT: SENT, base.FAIL: FAILED}.get(outcome.status, PENDING)
            if outcome.status != base.SENT:
                entry.last_error = f"<{rcpt.address}>: {outcome.reply}"
                self.last_error = f"{entry.id}: {entry.last_error}"
            status = {base.SENT: "sent", base.FAIL: "bounced"}.get(outcome.status, "deferred")
            log.info("%s: to=<%s>, relay=%s, delay=%.2f, attempts=%d, status=%s (%s)",
                     entry.id, rcpt.address, outcome.relay, now - entry.arrival,
                     rcpt.attempts, status, outcome.reply)
        # Accepted recipients must never be sent again: record them before anything else.
        self.store.save(entry)

    def _expire(self, entry: Entry, now: float) -> None:
        days = self.cfg.max_queue_age / 86400
        for rcpt in entry.pending():
            rcpt.status = FAILED
            rcpt.last_reply = (f"gave up after {days:g} days in the queue; "
                               f"last error: {rcpt.last_reply or 'none'}")
            rcpt.dsn_status = "4.4.7"
            log.info("%s: to=<%s>, status=expired (%s)", entry.id, rcpt.address,
                     rcpt.last_reply)

    def _bounce_failures(self, entry: Entry, message: bytes, now: float) -> list[str]:
        failed = [r for r in entry.recipients if r.status == FAILED]
        if not failed:
            return []
        expired = all(r.dsn_status == "4.4.7" for r in failed)
        target = entry.sender
        if not target or entry.is_bounce or has_control(target):
            # Never bounce to <>; a failed bounce goes to the admin once, else stays held.
            if self.cfg.admin and not entry.extra.get("admin_notice"):
                target = self.cfg.admin
            else:
                entry.held = True
                why = ("the notice to the admin failed too" if self.cfg.admin
                       else "set admin to receive these")
                log.warning("%s: undeliverable and no sender to return it to; held for the "
                            "operator (%s)", entry.id, why)
                return []
        bounce_id = bounce.queue(self.cfg, self.store, entry, failed, message, target, now,
                                 expired)
        for rcpt in failed:
            rcpt.status = BOUNCED
        return [bounce_id]
