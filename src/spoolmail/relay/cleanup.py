"""Cleanup: turn a submitted message into what leaves the machine.

Recipients (-t, argv, Resent-*), Bcc removal, line endings, long lines,
Date/Message-ID/From when missing, qualification of bare addresses, admin
rewriting of local recipients, and a Received field naming the submitting uid.
"""

from __future__ import annotations

import email.header
import email.utils
from dataclasses import dataclass

from spoolmail import addresses, headerblock
from spoolmail.config import Config
from spoolmail.envelope import Envelope
from spoolmail.relay import wiresafe

DROPPED_FIELDS = {"bcc", "resent-bcc", "content-length", "return-path"}
ADDRESS_FIELDS = {
    "from", "to", "cc", "sender", "reply-to",
    "resent-from", "resent-to", "resent-cc", "resent-sender",
}
LOCAL_DOMAINS = {"localhost", "localhost.localdomain"}


@dataclass(frozen=True)
class Cleaned:
    sender: str
    recipients: list[str]
    message: bytes  # CRLF line endings, legal line lengths
    eight_bit: bool


def qualify(address: str, domain: str) -> str:
    address = address.strip()
    if not address or "@" in address:
        return address
    return f"{address}@{domain}"


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def _is_local(address: str, cfg: Config) -> bool:
    domain = _domain_of(address)
    return not domain or domain == cfg.hostname.lower() or domain in LOCAL_DOMAINS


def envelope_recipients(env: Envelope, fields: list[headerblock.Field], cfg: Config) -> list[str]:
    found = list(env.recipients)
    if env.extract_recipients:
        for field in headerblock.recipient_fields(fields):
            found.extend(addresses.addresses(field.value()))
    result: list[str] = []
    seen: set[tuple[str, str]] = set()
    for raw in found:
        address = addresses.strip_angles(raw)
        if not address:
            continue
        if cfg.admin and _is_local(address, cfg):
            address = cfg.admin
        address = qualify(address, cfg.domain)
        local, _, domain = address.rpartition("@")
        key = (local, domain.lower())
        if key not in seen:
            seen.add(key)
            result.append(address)
    return result


def _qualify_field(raw: bytes, domain: str) -> bytes:
    """Insert @domain after every bare local part; everything else stays as written."""
    text = raw.decode("utf-8", "surrogateescape")
    colon = text.index(":") + 1
    value = text[colon:]
    boxes = [b for b in addresses.parse(value) if not b.domain]
    for box in reversed(boxes):
        value = value[: box.insert_at] + "@" + domain + value[box.insert_at :]
    return (text[:colon] + value).encode("utf-8", "surrogateescape")


def _fold_long(raw: bytes) -> bytes:
    """Fold header lines over 998 octets at white space where there is some."""
    out: list[bytes] = []
    for line in raw.split(b"\n"):
        while len(line) > wiresafe.MAX_LINE:
            cut = max(line.rfind(b" ", 1, 990), line.rfind(b"\t", 1, 990))
            if cut <= 0:
                break
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return b"\n".join(out)


def _display_name(name: str) -> str:
    """A phrase for a From field: as is, quoted, or RFC 2047-encoded."""
    if not name.isascii():
        return email.header.Header(name, "utf-8").encode()
    if all(c.isalnum() or c in " !#$%&'*+-/=?^_`{|}~" for c in name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_from(cfg: Config, env: Envelope, sender: str, login: str) -> str:
    # Not email.utils.formataddr: it refuses an address that is not ASCII (SMTPUTF8).
    address = sender or qualify(login, cfg.domain)
    if env.fullname:
        return f"{_display_name(env.fullname)} <{address}>"
    return address


def received_field(cfg: Config, uid: int, login: str, queue_id: str, when: float) -> bytes:
    date = email.utils.formatdate(when, localtime=True)
    return (
        f"Received: by {cfg.hostname} (spoolmail, from userid {uid} {login})\n"
        f"\tid {queue_id}; {date}"
    ).encode()


def cleanup(
    env: Envelope,
    data: bytes,
    *,
    uid: int,
    login: str,
    cfg: Config,
    queue_id: str,
    now: float,
) -> Cleaned:
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    fields, body_start = headerblock.split(text)
    body = text[body_start:]

    if env.sender is None:
        sender = qualify(login, cfg.domain)
    else:
        sender = qualify(addresses.strip_angles(env.sender), cfg.domain)
    recipients = envelope_recipients(env, fields, cfg)

    header: list[bytes] = [received_field(cfg, uid, login, queue_id, now)]
    present: set[str] = set()
    for field in fields:
        name = field.lname
        present.add(name)
        if name in DROPPED_FIELDS:
            continue
        raw = field.raw.rstrip(b"\n")
        if name in ADDRESS_FIELDS:
            raw = _qualify_field(raw, cfg.domain)
        header.append(_fold_long(raw))
    if "from" not in present:
        header.append(b"From: " + _format_from(cfg, env, sender, login).encode())
    if "date" not in present:
        header.append(b"Date: " + email.utils.formatdate(now, localtime=True).encode())
    if "message-id" not in present:
        header.append(f"Message-ID: <{queue_id}@{cfg.hostname}>".encode())

    lines = [*b"\n".join(header).split(b"\n"), b""]
    body_lines = body.split(b"\n")
    if body_lines and body_lines[-1] == b"":
        body_lines.pop()
    lines = wiresafe.make_safe(lines + body_lines, seven_bit=False)
    message = b"\r\n".join(lines) + b"\r\n"
    return Cleaned(
        sender=sender,
        recipients=recipients,
        message=message,
        eight_bit=wiresafe.has_8bit(lines),
    )
