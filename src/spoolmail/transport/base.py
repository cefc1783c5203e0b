"""What every transport takes and returns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

SENT = "sent"
DEFER = "defer"
FAIL = "fail"

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Attempt:
    queue_id: str
    sender: str  # "" is the null sender
    recipients: list[str]
    message: bytes  # CRLF line endings
    eight_bit: bool


@dataclass(frozen=True)
class Outcome:
    status: str  # SENT, DEFER or FAIL
    reply: str  # the server's reply or our own diagnosis, one line per reply line joined by " / "
    dsn_status: str  # RFC 3463 status, e.g. "5.1.1"
    relay: str = "none"  # where it went, for the log line


def from_reply(code: int, text: str, relay: str) -> Outcome:
    """Classify an SMTP-style reply: 2xx sent, 4xx deferred, 5xx failed."""
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    first = text.split(" ", 1)[0] if text else ""
    klass = str(code)[0] if 200 <= code < 600 else "4"
    dsn = first if _ENHANCED.match(first) and first[0] == klass else f"{klass}.0.0"
    status = {"2": SENT, "4": DEFER, "5": FAIL}.get(klass, DEFER)
    return Outcome(status, f"{code} {text}".strip(), dsn, relay)


def all_of(recipients: list[str], outcome: Outcome) -> dict[str, Outcome]:
    return dict.fromkeys(recipients, outcome)


class Transport(Protocol):
    async def deliver(self, attempt: Attempt) -> dict[str, Outcome]:
        """Try every recipient of attempt once; return an Outcome for each."""
        ...

    async def close(self) -> None: ...
