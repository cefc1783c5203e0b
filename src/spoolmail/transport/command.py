"""Hand each message to a command (e.g. a local Exim: exim4 -odq -oi -f {sender} -- {recipients}).

No shell: the argv template's {sender} and {recipients} expand to separate
arguments. The message goes to stdin with LF line endings. Exit status is
read as sysexits: temporary codes and signals defer, other failures bounce.
"""

from __future__ import annotations

import asyncio
import os

from spoolmail import sysexits
from spoolmail.transport.base import DEFER, FAIL, SENT, Attempt, Outcome, all_of

TEMPORARY = {
    sysexits.EX_TEMPFAIL, sysexits.EX_OSERR, sysexits.EX_IOERR, sysexits.EX_CANTCREAT,
}


def expand(template: tuple[str, ...], sender: str, recipients: list[str]) -> list[str]:
    argv: list[str] = []
    for arg in template:
        if arg == "{recipients}":
            argv.extend(recipients)
        else:
            argv.append(arg.replace("{sender}", sender or "<>"))
    return argv


class CommandTransport:
    def __init__(self, template: tuple[str, ...], timeout: float) -> None:
        self.template = template
        self.timeout = timeout

    async def deliver(self, attempt: Attempt) -> dict[str, Outcome]:
        argv = expand(self.template, attempt.sender, attempt.recipients)
        relay = f"command:{os.path.basename(argv[0])}"
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return all_of(attempt.recipients, Outcome(
                DEFER, f"cannot run {argv[0]}: {exc.strerror}", "4.3.0", relay))
        data = attempt.message.replace(b"\r\n", b"\n")
        try:
            output, _ = await asyncio.wait_for(proc.communicate(data), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return all_of(attempt.recipients, Outcome(
                DEFER, f"{argv[0]} did not finish within {self.timeout:.0f}s", "4.4.1", relay))
        text = " / ".join(output.decode("utf-8", "replace").split("\n")[:5]).strip(" /")
        code = proc.returncode if proc.returncode is not None else -1
        if code == 0:
            outcome = Outcome(SENT, f"exit 0 {text}".strip(), "2.0.0", relay)
        elif code < 0:
            outcome = Outcome(DEFER, f"killed by signal {-code} {text}".strip(), "4.3.0", relay)
        elif code in TEMPORARY:
            outcome = Outcome(DEFER, f"exit {code} {text}".strip(), "4.3.0", relay)
        else:
            outcome = Outcome(FAIL, f"exit {code} {text}".strip(), "5.3.0", relay)
        return all_of(attempt.recipients, outcome)

    async def close(self) -> None:
        return None
