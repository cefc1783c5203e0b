"""`sendmail -bs`: a minimal SMTP server on stdin/stdout that spools each message.

PHP mailers (Symfony, Swift), swaks and others speak SMTP to `sendmail -bs`
and wait for each reply, so every reply is flushed at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from spoolmail.addresses import strip_angles
from spoolmail.sendmail.spoolwrite import SpoolError

# submit(sender, recipients, message) -> queue id; raises SpoolError.
Submit = Callable[[str, list[str], bytes], str]

MAX_LINE = 4096


class Session:
    def __init__(self, rfile: BinaryIO, wfile: BinaryIO, submit: Submit, size_limit: int) -> None:
        self.rfile = rfile
        self.wfile = wfile
        self.submit = submit
        self.size_limit = size_limit
        self.hostname = os.uname().nodename or "localhost"
        self.sender: str | None = None
        self.recipients: list[str] = []

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode("utf-8", "replace") + b"\r\n")
        self.wfile.flush()

    def reset(self) -> None:
        self.sender = None
        self.recipients = []

    def run(self) -> int:
        self.reply(f"220 {self.hostname} ESMTP spoolmail (sendmail -bs)")
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return 0
            if not line.endswith(b"\n") and len(line) == MAX_LINE:
                while line and not line.endswith(b"\n"):  # one reply for the whole line
                    line = self.rfile.readline(MAX_LINE)
                self.reply("500 5.5.2 line too long")
                continue
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            handler = getattr(self, "cmd_" + verb.lower(), None) if verb.isalpha() else None
            if handler is None:
                self.reply("502 5.5.2 command not recognised")
                continue
            if handler(arg.strip()) is False:
                return 0

    def cmd_helo(self, arg: str) -> None:
        self.reset()
        self.reply(f"250 {self.hostname}")

    def cmd_ehlo(self, arg: str) -> None:
        self.reset()
        self.reply(f"250-{self.hostname}")
        self.reply("250-PIPELINING")
        self.reply(f"250-SIZE {self.size_limit}")
        self.reply("250-8BITMIME")
        self.reply("250 ENHANCEDSTATUSCODES")

    def cmd_mail(self, arg: str) -> None:
        if self.sender is not None:
            self.reply("503 5.5.1 nested MAIL command")
            return
        if not arg.upper().startswith("FROM:"):
            self.reply("501 5.5.4 syntax: MAIL FROM:<address>")
            return
        path = arg[5:].strip()
        address = path.split(">", 1)[0] + ">" if path.startswith("<") else path.split(" ", 1)[0]
        self.sender = strip_angles(address)
        self.recipients = []
        self.reply("250 2.1.0 Ok")

    def cmd_rcpt(self, arg: str) -> None:
        if self.sender is None:
            self.reply("503 5.5.1 need MAIL before RCPT")
            return
        if not arg.upper().startswith("TO:"):
            self.reply("501 5.5.4 syntax: RCPT TO:<address>")
            return
        path = arg[3:].strip()
        address = path.split(">", 1)[0] + ">" if path.startswith("<") else path.split(" ", 1)[0]
        rcpt = strip_angles(address)
        if not rcpt:
            self.reply("501 5.1.3 empty recipient")
            return
        self.recipients.append(rcpt)
        self.reply("250 2.1.5 Ok")

    def cmd_data(self, arg: str) -> bool | None:
        if self.sender is None or not self.recipients:
            self.reply("503 5.5.1 need MAIL and RCPT before DATA")
            return None
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        chunks: list[bytes] = []
        size = 0
        too_big = False
        line_start = True  # a long line arrives in several chunks; only its first is a start
        while True:
            line = self.rfile.readline(1 << 16)
            if not line:
                return False  # EOF inside DATA: the transaction is abandoned
            if line_start:
                if line in (b".\r\n", b".\n"):
                    break
                if line.startswith(b"."):
                    line = line[1:]
            line_start = line.endswith(b"\n")
            size += len(line)
            if size > self.size_limit:
                too_big = True
                chunks = []
            elif not too_big:
                chunks.append(line)
        sender, recipients = self.sender, self.recipients
        self.reset()
        if too_big:
            self.reply(f"552 5.3.4 message exceeds the size limit of {self.size_limit} bytes")
            return None
        try:
            queue_id = self.submit(sender, recipients, b"".join(chunks))
        except SpoolError as exc:
            code = "451 4.3.0" if exc.code == 75 else "554 5.3.0"
            self.reply(f"{code} {exc}")
            return None
        self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
        return None

    def cmd_rset(self, arg: str) -> None:
        self.reset()
        self.reply("250 2.0.0 Ok")

    def cmd_noop(self, arg: str) -> None:
        self.reply("250 2.0.0 Ok")

    def cmd_vrfy(self, arg: str) -> None:
        self.reply("252 2.5.2 cannot verify, but will accept and attempt delivery")

    def cmd_help(self, arg: str) -> None:
        self.reply("214 2.0.0 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT")

    def cmd_quit(self, arg: str) -> bool:
        self.reply("221 2.0.0 Bye")
        return False
