"""What broke the relay once (found by trying to break it) and must never again."""

from __future__ import annotations

import contextlib
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import fakemta
from tests.support.relay import SPOOLMAIL, RelayEnv, wait_until
from tests.support.require import missing, require_root
from tests.support.smtpserver import Script, ScriptedSMTPServer

MESSAGE = b"From: app@example.com\nTo: bob@example.org\nSubject: robust\n\nbody\n"


class _NotQuiteSMTP(socketserver.StreamRequestHandler):
    """Speaks SMTP until the final dot, then answers something that is not SMTP."""

    greeting = b"220 almost.test ESMTP\r\n"
    transactions = 0
    lock = threading.Lock()

    def handle(self) -> None:
        self.wfile.write(self.greeting)
        if not self.greeting.startswith(b"220"):
            return
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                with self.lock:
                    type(self).transactions += 1
                self.wfile.write(b"OK thanks\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"500 what\r\n")


@contextmanager
def not_quite_smtp(greeting: bytes) -> Iterator[tuple[int, type[_NotQuiteSMTP]]]:
    handler = type("Handler", (_NotQuiteSMTP,), {"greeting": greeting, "transactions": 0})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_reply_that_is_not_smtp_defers_instead_of_looping(tmp_path: Path) -> None:
    with not_quite_smtp(b"220 almost.test ESMTP\r\n") as (port, handler):
        env = RelayEnv(tmp_path, "smtp", smtp={"port": port})
        assert env.submit(["-t"], MESSAGE).code == 0
        log = env.run_once(timeout=60)
        assert handler.transactions == 1, "one attempt, not a tight retry loop"
    [entry] = env.queue()
    assert entry.attempts == 1 and entry.next_attempt > time.time() + 60
    assert "status=deferred (unexpected answer from 127.0.0.1" in log
    assert "Traceback" not in log


def test_a_next_hop_that_is_not_an_smtp_server_defers(tmp_path: Path) -> None:
    with not_quite_smtp(b"HTTP/1.1 400 Bad Request\r\n\r\n") as (port, _):
        env = RelayEnv(tmp_path, "smtp", smtp={"port": port, "connect_timeout": "5s"})
        assert env.submit(["-t"], MESSAGE).code == 0
        log = env.run_once(timeout=60)
    [entry] = env.queue()
    assert entry.attempts == 1 and "status=deferred" in log and "Traceback" not in log


def test_control_characters_never_reach_the_wire_or_a_header(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    refused = env.submit(["-f", "a@b.c>\r\nRCPT TO:<x@evil", "bob@example.org"], MESSAGE)
    assert refused.code == 64 and "control character" in refused.stderr
    refused = env.submit(["-F", "Evil\nX-Injected: yes", "bob@example.org"], MESSAGE)
    assert refused.code == 64
    planted = env.spool / "incoming" / "0000000001planted"
    planted.write_bytes(b"SPOOLMAIL 1\ntime 1\nrcpt a%0D%0AX-Injected: yes\n\n" + MESSAGE)
    header_rcpt = b"From: a@example.com\nTo: \"x\" <bo\x0bb@example.org>, ok@example.org\n\nhi\n"
    assert env.submit(["-t", "-f", "app@example.com"], header_rcpt).code == 0
    log = env.run_once()
    assert "control character in the envelope's recipient" in log
    delivered = [p.read_bytes() for p in env.maildir_files()]
    assert not any(b"X-Injected" in d for d in delivered)
    to_ok = [d for d in delivered if b"Delivered-To: ok@example.org" in d]
    dsn = [d for d in delivered if b"Delivered-To: app@example.com" in d]
    assert len(to_ok) == 1 and len(dsn) == 1
    assert b"Status: 5.1.3" in dsn[0]


def test_only_one_relay_runs_on_a_spool(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    with env.running():
        second = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=env.env(),
                                capture_output=True, text=True, timeout=60)
    assert second.returncode == 75
    assert "another relay (pid" in second.stderr and "spoolmail flush" in second.stderr


def test_what_an_interrupted_write_leaves_in_the_queue_is_swept(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    orphan = env.spool / "queue" / "06B1000000000000001.msg"
    orphan.write_bytes(b"half of a create()")
    temp = env.spool / "queue" / ".06B1000000000000002.json.tmp"
    temp.write_bytes(b"{")
    log = env.run_once()
    assert not orphan.exists() and not temp.exists()
    assert "queue/06B1000000000000001.msg: removed, left behind by an interrupted write" in log


def test_what_the_relay_cannot_move_is_reported_once(tmp_path: Path) -> None:
    require_root("sets the immutable attribute")
    chattr = shutil.which("chattr")
    if chattr is None:
        missing("chattr is not installed (Debian package e2fsprogs)")
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    stuck = env.spool / "incoming" / "0000000002dir"
    stuck.mkdir()
    made = subprocess.run([str(chattr), "+i", str(stuck)], capture_output=True, text=True)
    if made.returncode != 0:
        missing(f"this file system has no immutable attribute: {made.stderr.strip()}")
    try:
        with env.running() as relay:
            assert env.submit(["-t"], MESSAGE).code == 0
            relay.wait_log("status=sent")
            for n in range(3):
                (env.spool / "incoming" / f"wake-{n}").write_bytes(b"")
                relay.wait_log("removed")
                time.sleep(0.3)
            log = relay.log()
    finally:
        subprocess.run([str(chattr), "-i", str(stuck)], check=True)
    lines = [line for line in log.splitlines() if "0000000002dir" in line]
    assert len(lines) == 1, "a stuck entry is logged once, not every pass"
    assert "pickup failed, left in incoming/" in lines[0]
    assert len(env.maildir_files()) == 1, "other mail still flows"


def test_deeply_nested_mime_is_delivered_not_lost(tmp_path: Path) -> None:
    depth = 500
    head = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (n, n)
                    for n in range(depth))
    tail = b"".join(b"\n--b%d--\n" % n for n in reversed(range(depth)))
    message = (b"From: a@example.com\nTo: bob@example.org\nMIME-Version: 1.0\n" + head
               + b"Content-Type: text/plain\n\n" + b"x" * 1200 + tail)
    env = RelayEnv(tmp_path, "maildir")
    assert env.submit(["-t"], message).code == 0
    log = env.run_once()
    assert len(env.maildir_files()) == 1, log
    assert env.quarantined() == []


def test_a_full_spool_never_makes_the_relay_send_an_accepted_message_again(
        tmp_path: Path) -> None:
    require_root("mounts a small tmpfs as the spool")
    spool = tmp_path / "small"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=755", "tmpfs", str(spool)],
                   check=True)
    try:
        scripts = [Script(rcpt_default="450 4.2.0 try later"), Script()]
        with ScriptedSMTPServer(scripts) as server:
            env = RelayEnv(spool, "smtp", min_free_space=0,
                           smtp={"port": server.port, "idle_timeout": "0s"},
                           delivery={"retry_schedule": ["1s"]})
            with env.running() as relay:
                assert env.submit(["-t"], MESSAGE).code == 0
                wait_until(lambda: any(e.attempts for e in env.queue()), 20, "a deferral")
                filler = spool / "spool" / "filler"
                with open(filler, "wb") as f, contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                relay.wait_log("cannot record the attempt", timeout=30)
                time.sleep(3)
                assert len(server.delivered()) == 1
                filler.unlink()
                wait_until(lambda: env.queue() == [], 30, "the outcome to be recorded")
            assert len(server.delivered()) == 1, "accepted once, never sent again"
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def test_a_planted_queue_id_cannot_fake_the_queue_age(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "codes").write_text("75")
    argv = [sys.executable, fakemta.__file__, str(calls), "--", "{recipients}"]
    env = RelayEnv(tmp_path, "command", command={"argv": argv})
    env.prepare()
    (env.spool / "incoming" / "000000001AAAA").write_bytes(
        b"SPOOLMAIL 1\ntime 1\nrcpt bob@example.org\n\n" + MESSAGE)
    env.run_once()
    status = env.cli("status", "--warn-age", "1h")
    assert "oldest message: " in status.stdout and "d old" not in status.stdout
    assert "oldest message is" not in status.stdout
