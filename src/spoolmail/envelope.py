"""The spool file's envelope: encode (front) and decode (relay).

The format is specified in docs/spool-format.md; this module is its reference
implementation. It imports nothing, because the front pays for every import.
"""

from __future__ import annotations

MAGIC = b"SPOOLMAIL 1\n"
MAX_ENVELOPE_BYTES = 1 << 20
KNOWN_FLAGS = frozenset("ti")


class EnvelopeError(ValueError):
    """The spool file is not a valid version-1 envelope."""


def has_control(value: str) -> bool:
    """Control characters (CR, LF, NUL, DEL, C1, U+2028/9…) have no place in an address
    or a name: they would inject header fields or SMTP commands."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"
               for c in value)


class Envelope:
    """The submitter's claims about one message; none of them is identity."""

    __slots__ = ("flags", "fullname", "recipients", "sender", "time")

    def __init__(
        self,
        *,
        time: int,
        sender: str | None = None,
        fullname: str | None = None,
        flags: str = "",
        recipients: list[str] | None = None,
    ) -> None:
        self.time = time
        # None: no -f given (the relay uses the file owner's login); "": null sender.
        self.sender = sender
        self.fullname = fullname
        self.flags = flags
        self.recipients = recipients if recipients is not None else []

    @property
    def extract_recipients(self) -> bool:
        return "t" in self.flags

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Envelope({fields})"


def _escape(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if not any(b < 0x20 or b == 0x25 or b == 0x7F for b in raw):
        return raw
    out = bytearray()
    for b in raw:
        if b < 0x20 or b == 0x25 or b == 0x7F:
            out += b"%%%02X" % b
        else:
            out.append(b)
    return bytes(out)


def _unescape(raw: bytes) -> str:
    if b"%" in raw:
        out = bytearray()
        i = 0
        while i < len(raw):
            b = raw[i]
            if b == 0x25:
                hexpart = raw[i + 1 : i + 3]
                if len(hexpart) != 2 or not all(c in b"0123456789ABCDEFabcdef" for c in hexpart):
                    raise EnvelopeError("bad %-escape in envelope")
                out.append(int(hexpart, 16))
                i += 3
            else:
                out.append(b)
                i += 1
        raw = bytes(out)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("envelope value is not UTF-8") from exc


def _checked(value: str, what: str) -> str:
    if has_control(value):
        raise EnvelopeError(f"control character in the envelope's {what}")
    return value


def encode(env: Envelope) -> bytes:
    """Return the envelope block, ending with the blank line before the message."""
    lines = [MAGIC, b"time %d\n" % env.time]
    if env.sender is not None:
        lines.append(b"sender " + _escape(env.sender) + b"\n")
    if env.fullname is not None:
        lines.append(b"fullname " + _escape(env.fullname) + b"\n")
    for flag in sorted(set(env.flags)):
        lines.append(b"flag " + flag.encode("ascii") + b"\n")
    for rcpt in env.recipients:
        lines.append(b"rcpt " + _escape(rcpt) + b"\n")
    lines.append(b"\n")
    return b"".join(lines)


def decode(data: bytes) -> tuple[Envelope, int]:
    """Parse the envelope at the start of data; return it and the message offset."""
    if not data.startswith(MAGIC):
        if data.startswith(b"SPOOLMAIL "):
            version = data[10:].split(b"\n", 1)[0][:20].decode("ascii", "replace")
            raise EnvelopeError(f"unknown spool format version {version!r}")
        raise EnvelopeError("not a spoolmail spool file (no 'SPOOLMAIL 1' line)")
    end = data.find(b"\n\n", len(MAGIC) - 1, MAX_ENVELOPE_BYTES)
    if end < 0:
        raise EnvelopeError("envelope has no terminating blank line")
    time: int | None = None
    sender: str | None = None
    fullname: str | None = None
    flags: set[str] = set()
    recipients: list[str] = []
    seen: set[bytes] = set()
    for line in data[len(MAGIC) : end].split(b"\n"):
        key, sep, raw = line.partition(b" ")
        if not sep:
            raise EnvelopeError(f"envelope line without a value: {line[:40]!r}")
        if key in (b"time", b"sender", b"fullname"):
            if key in seen:
                raise EnvelopeError(f"envelope repeats {key.decode()!r}")
            seen.add(key)
        if key == b"time":
            if not raw.isdigit() or len(raw) > 12:
                raise EnvelopeError("envelope time is not a number of seconds")
            time = int(raw)
        elif key == b"sender":
            sender = _checked(_unescape(raw), "sender")
        elif key == b"fullname":
            fullname = _checked(_unescape(raw), "fullname")
        elif key == b"flag":
            flag = raw.decode("ascii", "replace")
            if flag not in KNOWN_FLAGS:
                raise EnvelopeError(f"unknown envelope flag {flag!r}")
            flags.add(flag)
        elif key == b"rcpt":
            rcpt = _checked(_unescape(raw), "recipient")
            if not rcpt:
                raise EnvelopeError("empty recipient in envelope")
            recipients.append(rcpt)
        else:
            raise EnvelopeError(f"unknown envelope key {key[:40].decode('ascii', 'replace')!r}")
    if time is None:
        raise EnvelopeError("envelope has no time line")
    env = Envelope(
        time=time,
        sender=sender,
        fullname=fullname,
        flags="".join(sorted(flags)),
        recipients=recipients,
    )
    return env, end + 2
