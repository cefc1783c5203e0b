"""Entry point of the sendmail front (`spoolmail-sendmail`, `/usr/sbin/sendmail`).

It only writes one spool file. No click, no `email`, no asyncio on this path:
it is started once per message and its cost is measured (bench/front_latency).
"""

from __future__ import annotations

import os
import sys
import time

from spoolmail import envelope, headerblock, sysexits
from spoolmail.addresses import addresses
from spoolmail.sendmail import argv, frontconfig, spoolwrite
from spoolmail.sendmail.message import TooBig, read_message

USAGE = (
    "usage: sendmail [-t] [-i] [-f sender] [-F name] [-o option] [-b mode] "
    "[--] [recipient ...]"
)


TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the front milliseconds at start-up
    from typing import BinaryIO


class Fail(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _split_recipients(args: list[str]) -> list[str]:
    """Each argument may hold a comma-separated list of addresses."""
    found: list[str] = []
    for arg in args:
        found.extend(addresses(arg) if ("," in arg or "<" in arg or "(" in arg) else [arg])
    return [a for a in found if a]


def _stdin() -> BinaryIO:
    if sys.stdin is None:  # the caller closed file descriptor 0
        raise Fail("standard input is closed: pipe the message into sendmail",
                   sysexits.EX_NOINPUT)
    return sys.stdin.buffer


def _check_text(inv: argv.Invocation) -> None:
    for value in [*inv.recipients, inv.sender or "", inv.fullname or ""]:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Fail(f"argument {value!r} is not valid UTF-8", sysexits.EX_USAGE) from None


def _submit(
    cfg: frontconfig.FrontConfig,
    env: envelope.Envelope,
    message: bytes,
    verbose: bool,
) -> str:
    incoming = os.path.join(cfg.spool, "incoming")
    spoolwrite.check_free_space(incoming, cfg.min_free_space, len(message))
    queue_id = spoolwrite.new_queue_id()
    spoolwrite.write(incoming, queue_id, [envelope.encode(env), message])
    if verbose:
        sys.stderr.write(f"sendmail: queued as {queue_id}\n")
    return queue_id


def _deliver(inv: argv.Invocation, cfg: frontconfig.FrontConfig) -> int:
    recipients = _split_recipients(inv.recipients)
    if not recipients and not inv.extract:
        raise Fail(
            "no recipients: give them on the command line or use -t to read them "
            "from the To/Cc/Bcc header fields",
            sysexits.EX_USAGE,
        )
    try:
        message = read_message(_stdin(), inv.ignore_dots, cfg.message_size_limit)
    except TooBig:
        raise Fail(
            f"message is larger than the limit of {cfg.message_size_limit} bytes "
            "(message_size_limit in spoolmail.toml)",
            sysexits.EX_DATAERR,
        ) from None
    except OSError as exc:
        raise Fail(f"cannot read the message from standard input: {exc.strerror}",
                   sysexits.EX_NOINPUT) from None
    if inv.extract and not recipients:
        fields, _ = headerblock.split(message)
        if not any(addresses(f.value()) for f in headerblock.recipient_fields(fields)):
            raise Fail(
                "-t found no recipient in the To/Cc/Bcc header fields and none was given "
                "on the command line",
                sysexits.EX_DATAERR,
            )
    env = envelope.Envelope(
        time=int(time.time()),
        sender=inv.sender,
        fullname=inv.fullname,
        flags=("t" if inv.extract else "") + ("i" if inv.ignore_dots else ""),
        recipients=recipients,
    )
    _submit(cfg, env, message, inv.verbose)
    return sysexits.EX_OK


def _smtp(inv: argv.Invocation, cfg: frontconfig.FrontConfig) -> int:
    from spoolmail.sendmail.smtpmode import Session

    def submit(sender: str, recipients: list[str], message: bytes) -> str:
        env = envelope.Envelope(
            time=int(time.time()), sender=sender, fullname=inv.fullname, recipients=recipients
        )
        return _submit(cfg, env, message, inv.verbose)

    return Session(_stdin(), sys.stdout.buffer, submit, cfg.message_size_limit).run()


def _flush(cfg: frontconfig.FrontConfig) -> int:
    incoming = os.path.join(cfg.spool, "incoming")
    spoolwrite.write(incoming, spoolwrite.FLUSH_PREFIX + spoolwrite.new_queue_id(), [])
    return sysexits.EX_OK


def _list_queue() -> int:
    from spoolmail.cli import main as cli_main

    return cli_main(["queue"])


def run(args: list[str]) -> int:
    name = os.path.basename(args[0]) if args else "sendmail"
    if name == "mailq":
        return _list_queue()
    if name == "newaliases":
        return sysexits.EX_OK
    try:
        inv = argv.parse(args[1:])
    except argv.UsageError as exc:
        raise Fail(f"{exc}; {USAGE}", sysexits.EX_USAGE) from None
    if inv.show_help:
        sys.stdout.write(USAGE + "\n")
        return sysexits.EX_OK
    if inv.show_version:
        from spoolmail import __version__

        sys.stdout.write(f"spoolmail sendmail front {__version__}\n")
        return sysexits.EX_OK
    if inv.mode == "aliases":
        return sysexits.EX_OK
    if inv.mode == "list":
        return _list_queue()
    _check_text(inv)
    try:
        cfg = frontconfig.load()
    except frontconfig.ConfigError as exc:
        raise Fail(str(exc), sysexits.EX_CONFIG) from None
    if inv.flush:
        return _flush(cfg)
    if inv.mode == "smtp":
        return _smtp(inv, cfg)
    return _deliver(inv, cfg)


def main(args: list[str] | None = None) -> int:
    try:
        return run(sys.argv if args is None else args)
    except (Fail, spoolwrite.SpoolError) as exc:
        sys.stderr.write(f"sendmail: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("sendmail: interrupted; nothing was queued\n")
        return sysexits.EX_TEMPFAIL
    except Exception as exc:  # a traceback helps no caller; say what failed
        sys.stderr.write(f"sendmail: internal error ({type(exc).__name__}: {exc}); "
                         "nothing was queued\n")
        return sysexits.EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
