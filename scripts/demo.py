#!/usr/bin/env python3
"""The main job end to end: a message through the front and the relay into a Maildir.

Runs the relay with the embedded default transport (a local Maildir) on a spool
under ./demo/, pipes a message into `spoolmail-sendmail -t -i` as a daemon
would, and prints where it landed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
BIN = Path(sys.executable).parent
MESSAGE = b"""To: alice@example.org
Subject: ALERT webservers/ping: web01 ping failed
X-Mailer: spoolmail demo (like mon's mail.alert)

Group   : webservers
Service : ping
web01: 100% packet loss
"""


def wait_for(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    sys.exit(f"demo: timed out waiting for {what}")


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    config = DEMO / "spoolmail.toml"
    config.write_text(f'spool = "{DEMO / "spool"}"\nstate_dir = "{DEMO}"\n')
    env = {**os.environ, "SPOOLMAIL_CONFIG": str(config)}
    env.pop("SPOOLMAIL_SPOOL", None)
    maildir_new = DEMO / "Maildir" / "new"
    before = set(maildir_new.iterdir()) if maildir_new.exists() else set()

    relay = subprocess.Popen([str(BIN / "spoolmail"), "relay"], env=env)
    try:
        wait_for(lambda: (DEMO / "spool" / "relay.status").exists(), 20, "the relay to start")
        front = subprocess.run([str(BIN / "spoolmail-sendmail"), "-t", "-i", "-v"],
                               input=MESSAGE, env=env, check=False)
        if front.returncode != 0:
            print(f"demo: the front exited {front.returncode}", file=sys.stderr)
            return front.returncode

        def arrived() -> bool:
            return maildir_new.exists() and bool(set(maildir_new.iterdir()) - before)

        wait_for(arrived, 20, "the message in the Maildir")
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=30)
    (landed,) = sorted(set(maildir_new.iterdir()) - before)
    print()
    print(landed.read_text(errors="replace"))
    print(f"delivered: {landed.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
