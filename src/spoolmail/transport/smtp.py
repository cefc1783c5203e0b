"""SMTP delivery with aiosmtplib, driven command by command.

The relay issues MAIL/RCPT itself (aiosmtplib's helpers re-parse addresses
with email.utils, which breaks quoted local parts and turns <> into <<>>),
keeps STARTTLS mandatory when configured (never a silent plaintext fallback),
sends AUTH only over TLS, waits RFC 5321's 10 minutes after the final dot,
and reuses a connection for consecutive messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import aiosmtplib

from spoolmail.config import SmtpConfig
from spoolmail.relay import wiresafe
from spoolmail.transport.base import DEFER, FAIL, SENT, Attempt, Outcome, all_of, from_reply

# aiosmtplib >= 3.0 raises SMTPConnectResponseError (with the reply code) for a
# greeting that is not 220; 2.0 (Debian 12) raises SMTPConnectError, handled
# below with the connection errors.
CONNECT_RESPONSE_ERRORS: tuple[type[aiosmtplib.SMTPResponseException], ...] = tuple(
    getattr(aiosmtplib, name) for name in ("SMTPConnectResponseError",)
    if hasattr(aiosmtplib, name)
)

CONNECTION_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectError,
    OSError,
    ssl.SSLError,
    asyncio.TimeoutError,
)


class Deferred(Exception):
    """The connection cannot be used: every recipient is deferred with outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reply)
        self.outcome = outcome


def _defer(text: str, relay: str, dsn: str = "4.4.1") -> Deferred:
    return Deferred(Outcome(DEFER, text, dsn, relay))


def needs_smtputf8(attempt: Attempt) -> bool:
    return not attempt.sender.isascii() or not all(r.isascii() for r in attempt.recipients)


def _no_smtputf8(relay: str) -> Outcome:
    return Outcome(FAIL, f"address is not ASCII and {relay} does not offer SMTPUTF8",
                   "5.6.7", relay)


def _as_defer(outcome: Outcome) -> Outcome:
    return Outcome(DEFER, outcome.reply, "4" + outcome.dsn_status[1:], outcome.relay)


class SmtpTransport:
    def __init__(self, smtp: SmtpConfig, helo_name: str) -> None:
        self.cfg = smtp
        self.helo_name = helo_name
        self.idle: list[tuple[aiosmtplib.SMTP, float, str]] = []
        self.reaper: asyncio.TimerHandle | None = None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cfg.ca_file)
        if not self.cfg.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _ehlo(self, client: aiosmtplib.SMTP, relay: str) -> None:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            try:
                await client.helo()
            except aiosmtplib.SMTPHeloError as exc:
                raise Deferred(_as_defer(from_reply(exc.code, exc.message, relay))) from None

    async def _open(self) -> tuple[aiosmtplib.SMTP, str]:
        cfg = self.cfg
        relay = f"{cfg.host}:{cfg.port}"
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            local_hostname=self.helo_name,
            timeout=cfg.command_timeout,
            use_tls=cfg.tls == "tls",
            start_tls=False,
            tls_context=self._tls_context() if cfg.tls != "none" else None,
        )
        try:
            await client.connect(timeout=cfg.connect_timeout)
        except CONNECT_RESPONSE_ERRORS as exc:
            raise Deferred(_as_defer(from_reply(exc.code, exc.message, relay))) from None
        except Exception as exc:  # refused, unreachable, timed out, or not speaking SMTP
            client.close()
            raise _defer(f"connect to {relay} failed: {type(exc).__name__}: {exc}",
                         relay) from None
        peer = client.transport.get_extra_info("peername") if client.transport else None
        if peer:
            relay = f"{cfg.host}[{peer[0]}]:{cfg.port}"
        try:
            await self._ehlo(client, relay)
            if cfg.tls == "starttls":
                await self._starttls(client, relay)
            if cfg.username:
                await self._login(client, relay)
        except Deferred:
            await self._quit(client)
            raise
        except aiosmtplib.SMTPResponseException as exc:
            await self._quit(client)
            raise Deferred(_as_defer(from_reply(exc.code, exc.message, relay))) from None
        except Exception as exc:  # lost connection, or a greeting/EHLO that is not SMTP
            client.close()
            raise _defer(f"cannot open an SMTP session with {relay}: "
                         f"{type(exc).__name__}: {exc}", relay) from None
        return client, relay

    async def _starttls(self, client: aiosmtplib.SMTP, relay: str) -> None:
        if not client.supports_extension("starttls"):
            raise _defer(f"{relay} does not offer STARTTLS and tls = starttls requires it",
                         relay, "4.7.0")
        await client.starttls(tls_context=self._tls_context())
        await self._ehlo(client, relay)

    async def _login(self, client: aiosmtplib.SMTP, relay: str) -> None:
        if self.cfg.tls == "none":
            raise _defer("AUTH refused: the connection is not encrypted (set smtp.tls)",
                         relay, "4.7.0")
        password = self.cfg.password()
        if password is None:
            raise _defer("smtp.username is set but no password was found "
                          "(password_file or the smtp-password credential)", relay, "4.7.0")
        offered = [m.lower() for m in client.server_auth_methods]
        # One mechanism, one try: aiosmtplib's login() would try each offered
        # mechanism in turn, and two failures per attempt can trip a lockout.
        if "plain" in offered:
            authenticate = client.auth_plain
        elif "login" in offered:
            authenticate = client.auth_login
        elif "cram-md5" in offered:
            authenticate = client.auth_crammd5
        else:
            raise _defer(f"{relay} offers no AUTH mechanism spoolmail supports (PLAIN, LOGIN, "
                         f"CRAM-MD5): {' '.join(offered) or 'none'}", relay, "4.7.0")
        try:
            await authenticate(self.cfg.username or "", password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise _defer(f"authentication failed: {exc.code} {exc.message}", relay,
                         "4.7.0") from None
        except aiosmtplib.SMTPException as exc:
            raise _defer(f"authentication failed: {exc}", relay, "4.7.0") from None

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.execute_command(b"QUIT"), 5)
        client.close()

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, str]:
        while self.idle:
            client, since, relay = self.idle.pop()
            if time.monotonic() - since > self.cfg.idle_timeout:
                await self._quit(client)
                continue
            with contextlib.suppress(*CONNECTION_ERRORS, aiosmtplib.SMTPException):
                response = await client.execute_command(b"RSET")
                if response.code == 250:
                    return client, relay
            client.close()
        return await self._open()

    def _checkin(self, client: aiosmtplib.SMTP, relay: str) -> None:
        self.idle.append((client, time.monotonic(), relay))
        if self.reaper is None:
            loop = asyncio.get_running_loop()
            self.reaper = loop.call_later(self.cfg.idle_timeout, self._reap)

    def _reap(self) -> None:
        self.reaper = None
        if self.idle:
            asyncio.get_running_loop().create_task(self.close())

    async def deliver(self, attempt: Attempt) -> dict[str, Outcome]:
        try:
            client, relay = await self._checkout()
        except Deferred as exc:
            return all_of(attempt.recipients, exc.outcome)
        results: dict[str, Outcome] = {}
        try:
            reusable = await self._transaction(client, relay, attempt, results)
        except Deferred as exc:
            reusable = False
            for rcpt in attempt.recipients:
                results.setdefault(rcpt, exc.outcome)
        except CONNECTION_ERRORS as exc:
            reusable = False
            outcome = Outcome(DEFER, f"connection to {relay} lost: {exc or type(exc).__name__}",
                              "4.4.2", relay)
            for rcpt in attempt.recipients:
                results.setdefault(rcpt, outcome)
        except Exception as exc:  # e.g. a reply that is not SMTP: outcome unknown, retry later
            reusable = False
            outcome = Outcome(DEFER, f"unexpected answer from {relay} (outcome unknown, will "
                              f"retry): {type(exc).__name__}: {exc}", "4.5.0", relay)
            for rcpt in attempt.recipients:
                results.setdefault(rcpt, outcome)
        if reusable and client.is_connected:
            self._checkin(client, relay)
        else:
            client.close()
        return results

    def _wire_message(self, client: aiosmtplib.SMTP, attempt: Attempt, relay: str) -> tuple[
            bytes, list[bytes]]:
        options: list[bytes] = []
        message = attempt.message
        if attempt.eight_bit:
            if client.supports_extension("8bitmime"):
                options.append(b"BODY=8BITMIME")
            else:
                lines = message.split(b"\r\n")
                if lines and lines[-1] == b"":
                    lines.pop()
                try:
                    lines = wiresafe.make_safe(lines, seven_bit=True)
                except wiresafe.CannotEncode as exc:
                    raise _defer(f"{exc}; cannot convert to 7-bit", relay, "4.6.3") from None
                message = b"\r\n".join(lines) + b"\r\n"
        if client.supports_extension("size"):
            options.append(b"SIZE=%d" % len(message))
        if needs_smtputf8(attempt) and client.supports_extension("smtputf8"):
            options.append(b"SMTPUTF8")
        return message, options

    async def _transaction(
        self, client: aiosmtplib.SMTP, relay: str, attempt: Attempt,
        results: dict[str, Outcome],
    ) -> bool:
        """Run one MAIL/RCPT/DATA transaction; return whether the connection is reusable."""
        message, options = self._wire_message(client, attempt, relay)
        recipients = attempt.recipients
        if needs_smtputf8(attempt) and not client.supports_extension("smtputf8"):
            # RFC 6531 s3.2: an address that is not ASCII cannot be sent at all.
            refused = _no_smtputf8(relay)
            if not attempt.sender.isascii():
                results.update(all_of(recipients, refused))
                return True
            recipients = [r for r in recipients if r.isascii()]
            results.update({r: refused for r in attempt.recipients if not r.isascii()})
            if not recipients:
                return True
        sender = attempt.sender.encode("utf-8")
        response = await client.execute_command(b"MAIL", b"FROM:<" + sender + b">", *options)
        if response.code != 250:
            outcome = from_reply(response.code, response.message, relay)
            if response.code == 421:
                raise Deferred(_as_defer(outcome))
            results.update(all_of(recipients, outcome))
            return (await client.execute_command(b"RSET")).code == 250
        accepted: list[str] = []
        for rcpt in recipients:
            response = await client.execute_command(b"RCPT", b"TO:<" + rcpt.encode("utf-8") + b">")
            if response.code in (250, 251):
                accepted.append(rcpt)
            elif response.code == 421:
                raise Deferred(_as_defer(from_reply(response.code, response.message, relay)))
            else:
                results[rcpt] = from_reply(response.code, response.message, relay)
        if not accepted:
            return (await client.execute_command(b"RSET")).code == 250
        try:
            response = await client.data(message, timeout=self.cfg.data_timeout)
        except aiosmtplib.SMTPDataError as exc:
            outcome = from_reply(exc.code, exc.message, relay)
            if exc.code == 421:
                raise Deferred(_as_defer(outcome)) from None
            results.update(all_of(accepted, outcome))
            return client.is_connected
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            raise _defer(f"{relay} did not confirm the message (outcome unknown, will retry): "
                         f"{exc}", relay, "4.4.2") from None
        outcome = from_reply(response.code, response.message, relay)
        if outcome.status != SENT:
            outcome = _as_defer(outcome) if response.code < 500 else outcome
        results.update(all_of(accepted, outcome))
        return True

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for client, _, _ in idle:
            await self._quit(client)
