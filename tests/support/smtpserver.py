"""A scripted SMTP server for tests: answers anything at any stage and records everything.

Why hand-written and not aiosmtpd: the tests need failure injections that aiosmtpd's
handler hooks cannot express, or only through private internals that changed between
its releases — a 421 or a dropped connection instead of the greeting, closing the
connection after the final dot *without* a reply, closing mid-DATA after N bytes, a
delay before any reply, EHLO refused so the client must fall back to HELO, STARTTLS
answered 454, a per-connection script — and they need the DATA bytes exactly as they
crossed the wire, before dot-unstuffing, which aiosmtpd never exposes. A few hundred
lines of asyncio are easier to read and to trust than patches over someone else's
state machine, and depend on nothing but the standard library (plus `openssl` for a
certificate when STARTTLS or implicit TLS is used).

The server runs its own asyncio loop in a background thread, so synchronous pytest
tests (and subprocesses such as the relay) can talk to it; nothing here needs
pytest-asyncio.

    script = Script(rcpt={"bad@example.org": "550 5.1.1 User unknown"})
    with ScriptedSMTPServer(script) as server:
        smtplib.SMTP(server.host, server.port)...  # or run the relay against it
        server.wait_idle()
        [txn] = server.transactions()
        assert txn.accepted_recipients == ["good@example.org"]

A reply (`Reply`) is one line ("250 2.1.5 Ok"), several lines as a list or separated
by "\\n" (the continuation dashes are added), or `DROP` (close the connection without
replying) or `RESET` (close with a TCP RST). Tokens replaced in replies: `{hostname}`,
`{conn}` (connection number, from 1), `{queue_id}` (unique per transaction). Any
reply whose code is 421 closes the connection after it is sent, as RFC 5321 requires.

Scripts are per connection ("attempt"): give a list and connection N uses script N,
the last one for every later connection. `script_from_harness()` builds that list from
a case's harness.json `smtp_server` object (tests/cases/README.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import copy
import dataclasses
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tests.support.tlscert import TestCertificate, shared_certificate

DROP = "<close connection without reply>"
RESET = "<reset connection>"

Reply = str | Sequence[str]

DEFAULT_EHLO: tuple[str, ...] = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN")

# Stages that take a delay (Script.delays keys) — one per kind of reply the server sends.
STAGES = (
    "greeting",
    "ehlo",
    "helo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "dot",
    "rset",
    "noop",
    "vrfy",
    "quit",
    "unknown",
)

SENDER_STAGES = ("mail", "rcpt_default", "data", "dot")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Script:
    """What the server answers on one connection. Every field has a well-behaved default."""

    greeting: Reply = "220 {hostname} ESMTP spoolmail scripted test server"
    # EHLO keywords after the greeting line; None refuses EHLO with `ehlo_refused`.
    ehlo: Sequence[str] | None = DEFAULT_EHLO
    ehlo_refused: Reply = "502 5.5.2 Error: command not recognized"
    helo: Reply = "250 {hostname}"
    starttls: Reply = "220 2.0.0 Ready to start TLS"
    auth: Reply = "235 2.7.0 Authentication successful"
    mail: Reply = "250 2.1.0 Ok"
    # Per recipient address (exact, else case-insensitive match); others get rcpt_default.
    rcpt: Mapping[str, Reply] = field(default_factory=dict)
    rcpt_default: Reply = "250 2.1.5 Ok"
    data: Reply = "354 End data with <CR><LF>.<CR><LF>"
    dot: Reply = "250 2.0.0 Ok: queued as {queue_id}"
    rset: Reply = "250 2.0.0 Ok"
    noop: Reply = "250 2.0.0 Ok"
    vrfy: Reply = "252 2.0.0 Cannot VRFY user"
    quit: Reply = "221 2.0.0 Bye"
    unknown: Reply = "502 5.5.2 Error: command not recognized"
    # Per envelope sender ("" = null sender): replies for that sender's transactions
    # only, keyed "mail", "rcpt_default", "data" or "dot". E.g. refuse the original
    # message at DATA while its bounce (MAIL FROM:<>) is accepted.
    by_sender: Mapping[str, Mapping[str, Reply]] = field(default_factory=dict)
    # Seconds to wait before sending the reply of a stage (keys from STAGES).
    delays: Mapping[str, float] = field(default_factory=dict)
    dot_delay_seconds: float = 0.0  # added to delays["dot"] (harness.json spelling)
    # Close the connection once this many bytes of message data were received (mid-DATA).
    data_drop_after_bytes: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.delays) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) in delays: {sorted(unknown)}; stages: {STAGES}")
        for sender, overrides in self.by_sender.items():
            bad = set(overrides) - set(SENDER_STAGES)
            if bad:
                raise ValueError(
                    f"by_sender[{sender!r}]: unknown key(s) {sorted(bad)}; keys: {SENDER_STAGES}"
                )

    def for_sender(self, sender: str, stage: str) -> Reply:
        """The reply of a transaction stage ("mail", "rcpt_default", "data", "dot")."""
        overrides = self.by_sender.get(sender)
        if overrides is not None and stage in overrides:
            return overrides[stage]
        reply: Reply = getattr(self, stage)
        return reply

    def delay(self, stage: str) -> float:
        extra = self.dot_delay_seconds if stage == "dot" else 0.0
        return float(self.delays.get(stage, 0.0)) + extra

    def rcpt_reply(self, address: str, sender: str | None = None) -> Reply:
        if address in self.rcpt:
            return self.rcpt[address]
        folded = address.lower()
        for key, reply in self.rcpt.items():
            if key.lower() == folded:
                return reply
        if sender is not None:
            return self.for_sender(sender, "rcpt_default")
        return self.rcpt_default


_SCRIPT_FIELDS = {f.name for f in dataclasses.fields(Script)}
_MERGED_FIELDS = ("rcpt", "delays", "by_sender")


def _script_kwargs(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(obj) - _SCRIPT_FIELDS
    if unknown:
        raise ValueError(
            f"{where}: unknown smtp_server key(s) {sorted(unknown)}; "
            f"known: {sorted(_SCRIPT_FIELDS)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "ehlo" and value is not None:
            value = tuple(value)
        elif key == "by_sender":
            value = {k: dict(v) for k, v in value.items()}
        elif key in _MERGED_FIELDS:
            value = dict(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return kwargs


def script_from_harness(smtp_server: Mapping[str, Any]) -> list[Script]:
    """Scripts (one per connection, the last repeating) from a harness.json `smtp_server`.

    Top-level keys are Script fields and apply to every connection; `attempts` is a list
    of per-connection overrides merged over them (`rcpt`, `delays`, `by_sender` merged key by
    key, everything else replaced). Unknown keys are errors, so a typo cannot silently
    turn a failure scenario into a success.
    """
    base_obj = {k: v for k, v in smtp_server.items() if k != "attempts"}
    base = Script(**_script_kwargs(base_obj, "smtp_server"))
    attempts = smtp_server.get("attempts")
    if not attempts:
        return [base]
    scripts = []
    for index, attempt in enumerate(attempts, 1):
        kwargs = _script_kwargs(attempt, f"smtp_server.attempts[{index}]")
        for name in _MERGED_FIELDS:
            if name in kwargs:
                kwargs[name] = {**getattr(base, name), **kwargs[name]}
        scripts.append(dataclasses.replace(base, **kwargs))
    return scripts


# --------------------------------------------------------------------------- records


@dataclass
class Event:
    """One transcript entry: "C" a client line, "S" a server reply, "*" a note."""

    direction: str
    text: str
    tls: bool
    at: float  # time.monotonic()


@dataclass
class Rcpt:
    raw: str  # the argument as received, e.g. "TO:<a@example.org> NOTIFY=FAILURE"
    address: str  # between the angle brackets
    params: str  # what follows the address
    reply: str

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")


@dataclass
class Transaction:
    connection: int
    number: int  # within the connection, from 1
    tls: bool
    mail_raw: str  # "FROM:<a@example.com> BODY=8BITMIME"
    sender: str  # between the angle brackets; "" for the null sender
    mail_params: str  # "BODY=8BITMIME SIZE=123"
    mail_reply: str
    rcpts: list[Rcpt] = field(default_factory=list)
    data_reply: str | None = None
    data_wire: bytes | None = None  # every byte after the 354, up to and incl. ".\r\n"
    data: bytes | None = None  # the message: dot-unstuffed, without the terminating line
    dot_reply: str | None = None
    # "open" | "mail refused" | "no valid recipients" | "data refused" | "delivered" |
    # "refused at dot" | "dropped mid-data" | "dropped after dot" | "client closed" |
    # "reset" | "server stopped" | "interrupted" (the connection ended at one of its
    # replies: see Connection.end)
    outcome: str = "open"

    @property
    def accepted_recipients(self) -> list[str]:
        return [r.address for r in self.rcpts if r.accepted]

    @property
    def refused_recipients(self) -> list[str]:
        return [r.address for r in self.rcpts if not r.accepted]

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


@dataclass
class AuthAttempt:
    mechanism: str
    username: str | None
    password: str | None
    tls: bool
    reply: str


@dataclass
class Connection:
    number: int
    peer: str
    implicit_tls: bool
    events: list[Event] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    auth: list[AuthAttempt] = field(default_factory=list)
    helo: str | None = None  # last EHLO/HELO argument
    tls: bool = False  # TLS was established (STARTTLS or implicit)
    # "open" | "quit" | "client closed" | "server dropped" | "server closed (421)" |
    # "tls handshake failed" | "server stopped" | "error: ..."
    end: str = "open"

    def commands(self, *, tls: bool | None = None) -> list[str]:
        """Verbs the client sent (upper case), optionally only those in or out of TLS."""
        verbs = []
        for event in self.events:
            if event.direction != "C" or (tls is not None and event.tls != tls):
                continue
            if event.text.startswith("<"):  # data/auth placeholders
                continue
            verbs.append(event.text.split(" ", 1)[0].upper())
        return verbs

    def replies(self) -> list[str]:
        return [e.text for e in self.events if e.direction == "S"]

    def transcript(self) -> str:
        lines = [f"--- connection {self.number} from {self.peer} (end: {self.end})"]
        for event in self.events:
            mark = "[tls] " if event.tls else ""
            for line in event.text.split("\n"):
                lines.append(f"{event.direction}: {mark}{line}")
        return "\n".join(lines)


# ------------------------------------------------------------------------ protocol

_CODE = re.compile(r"^(\d{3})(?:[ -](.*))?$", re.DOTALL)
_PATH = re.compile(r"^(FROM|TO):\s*<([^>]*)>\s*(.*)$", re.IGNORECASE | re.DOTALL)


def render_reply(reply: Reply, substitutions: Mapping[str, str]) -> list[str]:
    """The reply's lines with continuation marks: ["250-a", "250 b"]."""
    lines = reply.split("\n") if isinstance(reply, str) else list(reply)
    if not lines:
        raise ValueError("empty reply")
    out: list[str] = []
    code: str | None = None
    for index, raw in enumerate(lines):
        text = raw.rstrip("\r")
        for token, value in substitutions.items():
            text = text.replace("{" + token + "}", value)
        match = _CODE.match(text)
        if match:
            code, text = match.group(1), match.group(2) or ""
        elif code is None:
            raise ValueError(f"reply {reply!r} does not start with a 3-digit code")
        sep = " " if index == len(lines) - 1 else "-"
        out.append(f"{code}{sep}{text}")
    return out


class _Closed(Exception):
    """The session is over (already recorded in Connection.end)."""


class _Session:
    def __init__(
        self,
        server: ScriptedSMTPServer,
        script: Script,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.script = script
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.greeted = False
        self.authenticated = False
        self.txn: Transaction | None = None
        self.conn.tls = conn.implicit_tls

    # -- helpers

    def note(self, direction: str, text: str) -> None:
        self.conn.events.append(Event(direction, text, self.conn.tls, time.monotonic()))
        self.server._changed()

    def subs(self) -> dict[str, str]:
        txn_no = len(self.conn.transactions)
        return {
            "hostname": self.server.hostname,
            "conn": str(self.conn.number),
            "queue_id": f"C{self.conn.number}T{txn_no}",
        }

    async def read_line(self) -> bytes | None:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.note("C", exc.partial.decode("utf-8", "backslashreplace"))
            return None
        except asyncio.LimitOverrunError:
            self.note("*", "line longer than the read limit; dropping the connection")
            self.conn.end = "server dropped"
            raise _Closed from None
        except (ConnectionError, ssl.SSLError) as exc:
            self.note("*", f"read failed: {exc!r}")
            return None

    def close_by_client(self) -> None:
        if self.txn is not None:
            self.txn.outcome = "client closed"
            self.txn = None
        self.conn.end = "client closed"
        self.note("*", "client closed the connection")

    async def reply(self, stage: str, reply: Reply) -> str:
        """Send a scripted reply after the stage's delay; returns the text sent.

        Raises _Closed when the script drops the connection or the reply was a 421.
        """
        delay = self.script.delay(stage)
        if delay > 0:
            await asyncio.sleep(delay)
        if isinstance(reply, str) and reply in (DROP, RESET):
            self.drop(f"at {stage}", reset=reply == RESET)
            raise _Closed
        lines = render_reply(reply, self.subs())
        try:
            self.writer.write("".join(line + "\r\n" for line in lines).encode("utf-8"))
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError) as exc:
            self.note("*", f"write failed: {exc!r}")
            self.conn.end = "client closed"
            raise _Closed from None
        text = "\n".join(lines)
        self.note("S", text)
        if lines[0].startswith("421"):
            self.conn.end = "server closed (421)"
            self.writer.close()
            raise _Closed
        return text

    def drop(self, where: str, *, reset: bool = False) -> None:
        how = "reset" if reset else "closed"
        self.note("*", f"server {how} the connection {where} without a reply")
        self.conn.end = "server dropped"
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()

    # -- the dialogue

    async def run(self) -> None:
        await self.reply("greeting", self.script.greeting)
        while True:
            raw = await self.read_line()
            if raw is None:
                self.close_by_client()
                return
            line = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            handler = _HANDLERS.get(verb)
            # Never record AUTH credentials verbatim in the transcript.
            self.note("C", f"AUTH {arg.split(' ', 1)[0]} ..." if verb == "AUTH" else line)
            if handler is None:
                await self.reply("unknown", self.script.unknown)
                continue
            if not await handler(self, arg):
                return

    async def on_ehlo(self, arg: str) -> bool:
        if self.script.ehlo is None:
            await self.reply("ehlo", self.script.ehlo_refused)
            return True
        self.abort_txn("reset")
        keywords = [
            k for k in self.script.ehlo if not (self.conn.tls and k.upper() == "STARTTLS")
        ]
        await self.reply("ehlo", [f"250 {self.server.hostname} Hello {arg}", *keywords])
        self.greeted = True
        self.conn.helo = arg
        return True

    async def on_helo(self, arg: str) -> bool:
        self.abort_txn("reset")
        text = await self.reply("helo", self.script.helo)
        if text.startswith("2"):
            self.greeted = True
            self.conn.helo = arg
        return True

    async def on_starttls(self, arg: str) -> bool:
        if self.conn.tls:
            await self.reply("starttls", "503 5.5.1 Error: TLS already active")
            return True
        text = await self.reply("starttls", self.script.starttls)
        if not text.startswith("2"):
            return True
        try:
            await self.writer.start_tls(self.server.certificate().server_context())
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.note("*", f"TLS handshake failed: {exc!r}")
            self.conn.end = "tls handshake failed"
            self.writer.transport.abort()
            return False
        self.conn.tls = True
        self.greeted = False
        self.authenticated = False
        self.abort_txn("reset")
        self.note("*", "TLS established")
        return True

    async def on_auth(self, arg: str) -> bool:
        if not self.greeted:
            await self.reply("auth", "503 5.5.1 Error: send HELO/EHLO first")
            return True
        if self.authenticated:
            await self.reply("auth", "503 5.5.1 Error: already authenticated")
            return True
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        username: str | None = None
        password: str | None = None
        try:
            if mechanism == "PLAIN":
                response = initial or await self.challenge("")
                if response is None:
                    return False
                parts = _b64(response).split("\0")
                if len(parts) != 3:
                    raise ValueError("PLAIN response needs three NUL-separated fields")
                username, password = parts[1], parts[2]
            elif mechanism == "LOGIN":
                user_b64 = initial or await self.challenge("VXNlcm5hbWU6")
                if user_b64 is None:
                    return False
                username = _b64(user_b64)
                pass_b64 = await self.challenge("UGFzc3dvcmQ6")
                if pass_b64 is None:
                    return False
                password = _b64(pass_b64)
            else:
                await self.reply("auth", "504 5.5.4 Unrecognized authentication type")
                return True
        except _Cancelled:
            await self.reply("auth", "501 5.7.0 Authentication cancelled")
            return True
        except ValueError as exc:
            await self.reply("auth", f"501 5.5.2 Cannot decode response: {exc}")
            return True
        record = AuthAttempt(mechanism, username, password, self.conn.tls, "")
        self.conn.auth.append(record)
        record.reply = await self.reply("auth", self.script.auth)
        self.authenticated = record.reply.startswith("2")
        return True

    async def challenge(self, text: str) -> str | None:
        self.writer.write(f"334 {text}\r\n".encode("ascii"))
        await self.writer.drain()
        self.note("S", f"334 {text}")
        raw = await self.read_line()
        if raw is None:
            self.close_by_client()
            return None
        line = raw.rstrip(b"\r\n").decode("ascii", "backslashreplace")
        self.note("C", "<auth response>")
        if line == "*":
            raise _Cancelled
        return line

    async def on_mail(self, arg: str) -> bool:
        if not self.greeted:
            await self.reply("mail", "503 5.5.1 Error: send HELO/EHLO first")
            return True
        if self.txn is not None:
            await self.reply("mail", "503 5.5.1 Error: nested MAIL command")
            return True
        match = _PATH.match(arg)
        if not match or match.group(1).upper() != "FROM":
            await self.reply("mail", "501 5.5.4 Syntax: MAIL FROM:<address>")
            return True
        txn = Transaction(
            connection=self.conn.number,
            number=len(self.conn.transactions) + 1,
            tls=self.conn.tls,
            mail_raw=arg,
            sender=match.group(2),
            mail_params=match.group(3).strip(),
            mail_reply="",
        )
        self.conn.transactions.append(txn)
        self.txn = txn
        txn.mail_reply = await self.reply("mail", self.script.for_sender(txn.sender, "mail"))
        if not txn.mail_reply.startswith("2"):
            self.abort_txn("mail refused")
        return True

    async def on_rcpt(self, arg: str) -> bool:
        if self.txn is None:
            await self.reply("rcpt", "503 5.5.1 Error: need MAIL command")
            return True
        match = _PATH.match(arg)
        if not match or match.group(1).upper() != "TO":
            await self.reply("rcpt", "501 5.5.4 Syntax: RCPT TO:<address>")
            return True
        rcpt = Rcpt(raw=arg, address=match.group(2), params=match.group(3).strip(), reply="")
        self.txn.rcpts.append(rcpt)
        reply = self.script.rcpt_reply(rcpt.address, self.txn.sender)
        rcpt.reply = await self.reply("rcpt", reply)
        return True

    async def on_data(self, arg: str) -> bool:
        txn = self.txn
        if txn is None:
            await self.reply("data", "503 5.5.1 Error: need MAIL command")
            return True
        if not txn.accepted_recipients:
            txn.data_reply = await self.reply("data", "554 5.5.1 Error: no valid recipients")
            txn.outcome = "no valid recipients"
            self.txn = None
            return True
        txn.data_reply = await self.reply("data", self.script.for_sender(txn.sender, "data"))
        if not txn.data_reply.startswith("3"):
            self.abort_txn("data refused")
            return True
        wire = bytearray()
        unstuffed = bytearray()
        limit = self.script.data_drop_after_bytes
        while True:
            if limit is not None and len(wire) >= limit:
                txn.data_wire, txn.data = bytes(wire), bytes(unstuffed)
                txn.outcome = "dropped mid-data"
                self.txn = None
                self.drop(f"mid-DATA after {len(wire)} bytes")
                return False
            line = await self.read_line()
            if line is None:
                txn.data_wire, txn.data = bytes(wire), bytes(unstuffed)
                self.close_by_client()
                return False
            at_line_start = not wire or wire.endswith(b"\r\n")
            wire += line
            if line == b".\r\n" and at_line_start:
                break
            unstuffed += line[1:] if line.startswith(b".") else line
        txn.data_wire, txn.data = bytes(wire), bytes(unstuffed)
        self.note("C", f"<{len(wire) - 3} bytes of message data, then .>")
        try:
            txn.dot_reply = await self.reply("dot", self.script.for_sender(txn.sender, "dot"))
        except _Closed:
            if self.conn.end == "server dropped":
                self.abort_txn("dropped after dot")
            elif self.conn.end.startswith("server closed (421)"):
                self.abort_txn("refused at dot")
            raise
        self.txn = None
        txn.outcome = "delivered" if txn.dot_reply.startswith("2") else "refused at dot"
        return True

    def abort_txn(self, outcome: str) -> None:
        if self.txn is not None:
            self.txn.outcome = outcome
            self.txn = None

    async def on_rset(self, arg: str) -> bool:
        self.abort_txn("reset")
        await self.reply("rset", self.script.rset)
        return True

    async def on_noop(self, arg: str) -> bool:
        await self.reply("noop", self.script.noop)
        return True

    async def on_vrfy(self, arg: str) -> bool:
        await self.reply("vrfy", self.script.vrfy)
        return True

    async def on_quit(self, arg: str) -> bool:
        self.abort_txn("reset")
        await self.reply("quit", self.script.quit)
        self.conn.end = "quit"
        return False


class _Cancelled(Exception):
    pass


def _b64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None


_HANDLERS: dict[str, Callable[[_Session, str], Any]] = {
    "EHLO": _Session.on_ehlo,
    "HELO": _Session.on_helo,
    "STARTTLS": _Session.on_starttls,
    "AUTH": _Session.on_auth,
    "MAIL": _Session.on_mail,
    "RCPT": _Session.on_rcpt,
    "DATA": _Session.on_data,
    "RSET": _Session.on_rset,
    "NOOP": _Session.on_noop,
    "VRFY": _Session.on_vrfy,
    "QUIT": _Session.on_quit,
}


# -------------------------------------------------------------------------- server


class ScriptedSMTPServer:
    """The server. Use as a context manager (or start()/stop()); inspect the records after.

    Record accessors return deep copies taken inside the server's loop, so they are
    consistent snapshots even while clients are still talking.
    """

    def __init__(
        self,
        script: Script | Sequence[Script] | None = None,
        *,
        hostname: str = "scripted.test",
        implicit_tls: bool = False,
        certificate: TestCertificate | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if script is None:
            scripts: list[Script] = [Script()]
        elif isinstance(script, Script):
            scripts = [script]
        else:
            scripts = list(script)
        if not scripts:
            raise ValueError("at least one script")
        self.scripts = scripts
        self.hostname = hostname
        self.implicit_tls = implicit_tls
        self.host = host
        self.port = 0
        self._certificate = certificate
        self._connections: list[Connection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._version = 0
        self._condition = threading.Condition()

    @classmethod
    def from_harness(cls, smtp_server: Mapping[str, Any], **kwargs: Any) -> ScriptedSMTPServer:
        return cls(script_from_harness(smtp_server), **kwargs)

    # -- lifecycle

    def certificate(self) -> TestCertificate:
        if self._certificate is None:
            self._certificate = shared_certificate()
        return self._certificate

    def start(self) -> ScriptedSMTPServer:
        if self._loop is not None:
            raise RuntimeError("already started")
        needs_tls = self.implicit_tls or any(
            s.ehlo is not None and any(k.upper() == "STARTTLS" for k in s.ehlo)
            for s in self.scripts
        )
        if needs_tls:
            self.certificate()  # made here, not inside the loop
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"scripted-smtp-{id(self):x}", daemon=True
        )
        self._thread.start()
        self._in_loop(self._listen())
        return self

    async def _listen(self) -> None:
        context = self.certificate().server_context() if self.implicit_tls else None
        self._server = await asyncio.start_server(
            self._handle, self.host, 0, ssl=context, limit=4 * 1024 * 1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            self._in_loop(self._shutdown(), timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(30)
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> ScriptedSMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _in_loop(self, coro: Any, timeout: float = 30) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Implicit-TLS handshake failures happen before a connection is handed to us.
        self._errors.append(str(context.get("exception") or context.get("message")))
        self._changed()

    def _changed(self) -> None:
        with self._condition:
            self._version += 1
            self._condition.notify_all()

    # -- connections

    def _script_for(self, number: int) -> Script:
        return self.scripts[min(number, len(self.scripts)) - 1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = Connection(
            number=len(self._connections) + 1,
            peer=f"{peer[0]}:{peer[1]}" if peer else "?",
            implicit_tls=self.implicit_tls,
        )
        self._connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = _Session(self, self._script_for(conn.number), conn, reader, writer)
        session.note("*", f"connection {conn.number} accepted")
        try:
            await session.run()
        except _Closed:
            session.abort_txn("interrupted")
        except asyncio.CancelledError:
            session.abort_txn("server stopped")
            if conn.end == "open":
                conn.end = "server stopped"
        except Exception as exc:  # record, never kill the loop
            conn.end = f"error: {exc!r}"
            session.note("*", f"server error: {exc!r}")
        finally:
            if not writer.is_closing():
                writer.close()
            self._tasks.discard(task)
            self._changed()

    def _snapshot(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return copy.deepcopy(fn())

        async def take() -> _T:
            return copy.deepcopy(fn())

        result: _T = self._in_loop(take())
        return result

    # -- records

    @property
    def connections(self) -> list[Connection]:
        return self._snapshot(lambda: self._connections)

    @property
    def errors(self) -> list[str]:
        """Loop-level errors, e.g. failed implicit-TLS handshakes."""
        return self._snapshot(lambda: self._errors)

    def transactions(self) -> list[Transaction]:
        return [t for c in self.connections for t in c.transactions]

    def delivered(self) -> list[Transaction]:
        """Transactions whose final dot was answered 2xx."""
        return [t for t in self.transactions() if t.delivered]

    def delivered_recipients(self) -> collections.Counter[str]:
        """How many times each recipient was in a delivered transaction (accepted at RCPT)."""
        counts: collections.Counter[str] = collections.Counter()
        for txn in self.delivered():
            counts.update(txn.accepted_recipients)
        return counts

    def transcript(self) -> str:
        return "\n".join(c.transcript() for c in self.connections) or "(no connections)"

    def active(self) -> int:
        """Connections still being served."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return 0

        async def count() -> int:
            return sum(1 for t in self._tasks if not t.done())

        result: int = self._in_loop(count())
        return result

    # -- waiting (bounded; for clients in other threads or processes)

    def wait_for(
        self, predicate: Callable[[ScriptedSMTPServer], bool], timeout: float = 30, what: str = ""
    ) -> None:
        """Wait until predicate(self) holds; TimeoutError with the transcript otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            with self._condition:
                version = self._version
            if predicate(self):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"scripted SMTP server: timed out after {timeout}s waiting for "
                    f"{what or predicate!r}\n{self.transcript()}"
                )
            with self._condition:
                if self._version == version:
                    self._condition.wait(min(remaining, 0.5))

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until every connection so far has ended (the server saw QUIT or a close)."""
        self.wait_for(lambda s: s.active() == 0, timeout, "all connections to end")

    def wait_connections(self, count: int, timeout: float = 30) -> None:
        self.wait_for(lambda s: len(s.connections) >= count, timeout, f"{count} connection(s)")
