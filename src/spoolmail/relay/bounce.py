"""RFC 3464 delivery status notifications (bounces)."""

from __future__ import annotations

import email.utils
import logging
import os

from spoolmail import headerblock
from spoolmail.config import Config
from spoolmail.relay.identity import login_for_uid
from spoolmail.relay.queue import Entry, QueueStore, Recipient
from spoolmail.relay.wiresafe import has_8bit
from spoolmail.sendmail.spoolwrite import new_queue_id

log = logging.getLogger("spoolmail")

MAX_RETURNED_HEADER = 64 * 1024


def _diagnostic(rcpt: Recipient) -> str:
    reply = (rcpt.last_reply or "").replace("\r", " ").replace("\n", " ")
    kind = "smtp" if reply[:3].isdigit() else "x-spoolmail"
    return f"{kind}; {reply}"


def _fold(text: str, width: int = 76) -> str:
    """Fold a long DSN field at spaces so no line exceeds the wire limit."""
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = " " + word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


def build(cfg: Config, original: Entry, failed: list[Recipient], message: bytes,
          to: str, queue_id: str, now: float, expired: bool) -> bytes:
    """The DSN for original's failed recipients, addressed to `to`, with CRLF line ends."""
    boundary = f"{queue_id}/{cfg.hostname}"
    date = email.utils.formatdate(now, localtime=True)
    reason = ("could not be delivered before its maximum queue age"
              if expired else "was refused permanently")
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{cfg.hostname}>",
        f"To: <{to}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: <{queue_id}@{cfg.hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\n boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at host {cfg.hostname}.",
        "",
        f"Your message (queue id {original.id}) {reason} for these recipients:",
        "",
    ]
    for rcpt in failed:
        lines.append(_fold(f"<{rcpt.address}>: {rcpt.last_reply or 'failed'}"))
    lines += [
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {cfg.hostname}",
        f"X-Spoolmail-Queue-ID: {original.id}",
        f"Arrival-Date: {email.utils.formatdate(original.arrival, localtime=True)}",
    ]
    for rcpt in failed:
        lines += [
            "",
            f"Final-Recipient: rfc822; {rcpt.address}",
            "Action: failed",
            f"Status: {rcpt.dsn_status or ('4.4.7' if expired else '5.0.0')}",
        ]
        if rcpt.remote and not rcpt.remote.startswith(("maildir:", "command:", "none")):
            lines.append(f"Remote-MTA: dns; {rcpt.remote.split('[')[0].split(':')[0]}")
        lines.append(_fold(f"Diagnostic-Code: {_diagnostic(rcpt)}"))
        lines.append(f"Last-Attempt-Date: {date}")
    headers = _original_headers(message)
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", ""]
    text = "\n".join(lines).encode("utf-8") + b"\n" + headers + b"\n"
    text += f"--{boundary}--\n".encode()
    return text.replace(b"\n", b"\r\n")


def _original_headers(message: bytes) -> bytes:
    text = message.replace(b"\r\n", b"\n")
    _, body_start = headerblock.split(text)
    head = text[:body_start].rstrip(b"\n")
    if len(head) > MAX_RETURNED_HEADER:
        head = head[:MAX_RETURNED_HEADER].rsplit(b"\n", 1)[0]
    return head


def queue(cfg: Config, store: QueueStore, original: Entry, failed: list[Recipient],
          message: bytes, to: str, now: float, expired: bool = False) -> str:
    """Store the DSN for original's failed recipients in the queue; return its id."""
    bounce_id = new_queue_id()
    data = build(cfg, original, failed, message, to, bounce_id, now, expired)
    dsn = Entry(
        id=bounce_id, arrival=now, uid=os.geteuid(), login=login_for_uid(os.geteuid()),
        sender="", recipients=[Recipient(to)], size=len(data), eight_bit=has_8bit([data]),
        next_attempt=now, is_bounce=True,
        extra={"bounce_of": original.id, "admin_notice": to == cfg.admin},
    )
    store.create(dsn, data)
    log.info("%s: sender non-delivery notification: %s", original.id, bounce_id)
    return bounce_id
