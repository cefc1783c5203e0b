"""The relay as a daemon: inotify pickup, retries, bounces, signals, crash safety."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

from tests.support import fakemta
from tests.support.relay import RelayEnv, wait_until
from tests.support.smtpserver import Script, ScriptedSMTPServer

MESSAGE = b"From: app@example.com\nTo: alice@example.org\nSubject: %s\n\nbody\n"


def _message(subject: str) -> bytes:
    return MESSAGE % subject.encode()


def _command_env(tmp_path: Path, codes: str = "0", **sections: object) -> tuple[RelayEnv, Path]:
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "codes").write_text(codes)
    argv = [sys.executable, fakemta.__file__, str(calls), "-f", "{sender}", "--", "{recipients}"]
    env = RelayEnv(tmp_path, "command", command={"argv": argv}, **sections)
    return env, calls


def _calls(calls: Path) -> list[tuple[list[str], bytes]]:
    found = []
    for n in range(1, 1000):
        argv = calls / f"{n}.argv"
        if not argv.exists():
            break
        found.append((argv.read_text().splitlines(), (calls / f"{n}.msg").read_bytes()))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_running_relay_picks_up_new_mail_at_once(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir", delivery={"rescan_interval": 3600})
    with env.running() as relay:
        assert env.submit(["-t"], _message("inotify")).code == 0
        wait_until(lambda: bool(env.maildir_files()), 10, "delivery via inotify")
        relay.wait_log("status=sent")
    assert b"Subject: inotify" in env.maildir_files()[0].read_bytes()


def test_temporary_failures_are_retried_on_the_schedule_then_delivered(tmp_path: Path) -> None:
    env, calls = _command_env(tmp_path, "75 75 0", delivery={"retry_schedule": ["1s", "2s"]})
    with env.running() as relay:
        assert env.submit(["-i", "bob@example.org"], _message("retry")).code == 0
        relay.wait_log("status=sent", timeout=30)
    made = _calls(calls)
    assert len(made) == 3
    times = [(calls / f"{n}.argv").stat().st_mtime for n in (1, 2, 3)]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9, "never an immediate retry"
    log = relay.log()
    assert log.count("status=deferred (exit 75") == 2
    assert "attempts=3, status=sent" in log
    assert env.queue() == []


def test_a_permanent_failure_bounces_to_the_sender_with_a_dsn(tmp_path: Path) -> None:
    env, calls = _command_env(tmp_path, "1 0")
    assert env.submit(["-i", "-f", "app@example.com", "bob@example.org"],
                      _message("doomed")).code == 0
    log = env.run_once()
    (argv1, _), (argv2, dsn) = _calls(calls)
    assert argv1 == ["-f", "app@example.com", "--", "bob@example.org"]
    assert argv2 == ["-f", "<>", "--", "app@example.com"], "a DSN goes from <> to the sender"
    assert b"Content-Type: multipart/report; report-type=delivery-status" in dsn
    assert b"From: Mail Delivery System <MAILER-DAEMON@host.example.org>" in dsn
    assert b"Auto-Submitted: auto-replied" in dsn
    assert b"Final-Recipient: rfc822; bob@example.org" in dsn
    assert b"Action: failed" in dsn and b"Status: 5.3.0" in dsn
    assert b"Content-Type: text/rfc822-headers" in dsn and b"Subject: doomed" in dsn
    assert "status=bounced" in log and "sender non-delivery notification" in log
    assert env.queue() == []


def test_a_null_sender_message_is_never_bounced_to_the_null_sender(tmp_path: Path) -> None:
    env, calls = _command_env(tmp_path, "1")
    assert env.submit(["-i", "-f", "<>", "bob@example.org"], _message("null")).code == 0
    log = env.run_once()
    assert len(_calls(calls)) == 1, "no DSN may be sent anywhere without an admin"
    [held] = env.queue()
    assert held.held and held.sender == ""
    assert "held for the operator" in log


def test_a_null_sender_failure_goes_to_the_admin_once(tmp_path: Path) -> None:
    env, calls = _command_env(tmp_path, "1", admin="postmaster@example.net")
    assert env.submit(["-i", "-f", "", "bob@example.org"], _message("null")).code == 0
    env.run_once()
    made = _calls(calls)
    assert [argv for argv, _ in made] == [
        ["-f", "<>", "--", "bob@example.org"],
        ["-f", "<>", "--", "postmaster@example.net"],
    ], "the failed notice to the admin is not bounced again"
    [held] = env.queue()
    assert held.is_bounce and held.held


def test_messages_past_the_maximum_age_are_bounced_as_expired(tmp_path: Path) -> None:
    env, calls = _command_env(tmp_path, "75", delivery={"max_queue_age": "1s",
                                                        "retry_schedule": ["1h"]})
    assert env.submit(["-i", "-f", "app@example.com", "bob@example.org"],
                      _message("slow")).code == 0
    env.run_once()
    time.sleep(1.5)
    env.cli("flush", check=True)
    log = env.run_once()
    made = _calls(calls)
    assert len(made) == 3, "first attempt, last attempt, then the DSN"
    argv3, dsn = made[2]
    assert argv3[-1] == "app@example.com"
    assert b"Status: 4.4.7" in dsn and b"gave up after" in dsn
    assert "status=expired" in log


def test_sigterm_lets_a_delivery_in_progress_finish(tmp_path: Path) -> None:
    with ScriptedSMTPServer(Script(delays={"dot": 2.0})) as server:
        env = RelayEnv(tmp_path, "smtp", smtp={"port": server.port})
        with env.running() as relay:
            assert env.submit(["-t"], _message("in flight")).code == 0
            server.wait_for(lambda s: any(t.data is not None for t in s.transactions()),
                            timeout=10)
            assert relay.stop() == 0
        assert len(server.delivered()) == 1
    assert env.queue() == []


def test_sigkill_loses_nothing_and_restart_delivers_everything(tmp_path: Path) -> None:
    port = _free_port()
    env = RelayEnv(tmp_path, "smtp", smtp={"port": port, "connect_timeout": "2s"},
                   delivery={"retry_schedule": ["1s"]})
    with env.running() as relay:
        for n in range(5):
            assert env.submit(["-t"], _message(f"kill {n}")).code == 0
        wait_until(lambda: len(env.queue()) == 5 and all(e.attempts for e in env.queue()),
                   20, "five deferred messages")
        relay.stop(signal.SIGKILL)
    assert os.listdir(env.spool / "incoming") == []
    with ScriptedSMTPServer() as server:
        env.configure(smtp={"port": server.port})
        with env.running():
            wait_until(lambda: len(server.delivered()) >= 5, 30, "redelivery")
            wait_until(lambda: env.queue() == [], 10, "an empty queue")
    subjects = sorted(t.data.split(b"Subject: ")[1].split(b"\r\n")[0]
                      for t in server.delivered() if t.data)
    assert subjects == [f"kill {n}".encode() for n in range(5)]


def test_sigkill_during_data_resends_at_most_the_message_in_flight(tmp_path: Path) -> None:
    with ScriptedSMTPServer([Script(delays={"dot": 30.0}), Script()]) as server:
        env = RelayEnv(tmp_path, "smtp", smtp={"port": server.port},
                       delivery={"concurrency": 1})
        with env.running() as relay:
            assert env.submit(["-t"], _message("interrupted")).code == 0
            server.wait_for(lambda s: any(t.data is not None for t in s.transactions()),
                            timeout=10)
            relay.stop(signal.SIGKILL)
        with env.running():
            wait_until(lambda: len(server.delivered()) == 1 and env.queue() == [], 30,
                       "redelivery after the crash")
    assert [t.outcome for t in server.transactions()].count("delivered") == 1


def test_sighup_reloads_the_configuration(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    other = tmp_path / "other-maildir"
    with env.running() as relay:
        env.configure(maildir={"path": str(other)})
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log("configuration reloaded")
        assert env.submit(["-t"], _message("after reload")).code == 0
        wait_until(lambda: (other / "new").is_dir() and any((other / "new").iterdir()), 10,
                   "delivery into the new Maildir")
        env.configure(bogus=1)
        relay.proc.send_signal(signal.SIGHUP)
        relay.wait_log("reload failed, keeping the old configuration")
        assert relay.proc.poll() is None


def test_readiness_status_and_watchdog_reach_systemd(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    sock_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        env.prepare()
        os.environ["NOTIFY_SOCKET"] = str(sock_path)
        os.environ["WATCHDOG_USEC"] = "400000"
        try:
            with env.running():
                seen = ""
                while "WATCHDOG=1" not in seen or "STATUS=queue:" not in seen:
                    seen += sock.recv(4096).decode() + "\n"
        finally:
            del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    assert "READY=1" in seen
