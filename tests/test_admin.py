"""Operator commands against a real relay and spool: queue, show, hold, status…"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import fakemta
from tests.support.relay import RelayEnv, wait_until
from tests.support.require import require_root

MESSAGE = b"From: app@example.com\nTo: bob@example.org\nSubject: %s\n\nbody text\n"


def _deferring_env(tmp_path: Path, codes: str = "75") -> tuple[RelayEnv, Path]:
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "codes").write_text(codes)
    argv = [sys.executable, fakemta.__file__, str(calls), "-f", "{sender}", "--", "{recipients}"]
    env = RelayEnv(tmp_path, "command", command={"argv": argv},
                   delivery={"retry_schedule": ["1h"]})
    return env, calls


def _queued(env: RelayEnv, subject: str, *args: str) -> str:
    result = env.submit(["-v", "-i", "-f", "app@example.com", *args, "bob@example.org"],
                        MESSAGE % subject.encode())
    assert result.code == 0
    return result.stderr.rsplit("queued as ", 1)[1].strip()


def test_queue_lists_each_message_with_its_state(tmp_path: Path) -> None:
    env, _ = _deferring_env(tmp_path)
    env.prepare()
    assert env.cli("queue", check=True).stdout.strip() == "queue is empty"
    queue_id = _queued(env, "deferred one")
    env.run_once()
    text = env.cli("queue", check=True).stdout
    assert queue_id in text and "app@example.com" in text
    assert "bob@example.org  pending [exit 75" in text and "deferred" in text
    [record] = json.loads(env.cli("queue", "--json", check=True).stdout)
    assert record["id"] == queue_id and record["state"] == "deferred"
    assert record["recipients"][0]["address"] == "bob@example.org"
    assert record["recipients"][0]["last_reply"].startswith("exit 75")
    for argv0, args in (("mailq", []), ("/usr/sbin/sendmail", ["-bp"])):
        front = env.submit(args, b"", argv0=argv0)
        assert front.code == 0 and front.stdout.decode() == text


def test_show_prints_envelope_state_and_header(tmp_path: Path) -> None:
    env, _ = _deferring_env(tmp_path)
    queue_id = _queued(env, "show me")
    env.run_once()
    shown = env.cli("show", queue_id, check=True).stdout
    assert "sender:       <app@example.com>" in shown
    assert "recipient:    <bob@example.org> pending, 1 attempts: exit 75" in shown
    assert "Subject: show me" in shown and "body text" not in shown
    assert "body text" in env.cli("show", "--body", queue_id, check=True).stdout
    missing = env.cli("show", "NOSUCHID")
    assert missing.returncode == 66 and "no such message" in missing.stderr


def test_hold_release_flush_delete_and_bounce(tmp_path: Path) -> None:
    env, calls = _deferring_env(tmp_path)
    held, flushed, deleted, bounced = (_queued(env, s) for s in ("h", "f", "d", "b"))
    env.run_once()
    assert len(list(calls.glob("*.argv"))) == 4
    (calls / "codes").write_text("0")

    assert env.cli("hold", held, check=True).stdout.strip() == f"{held}: held"
    env.cli("flush", held, flushed, check=True)
    log = env.run_once()
    assert f"{flushed}: to=<bob@example.org>" in log and f"{held}: to=" not in log
    assert f"{held}: held by root" in log or f"{held}: held by " in log
    assert "!" in env.cli("queue", check=True).stdout.split(held)[1][:2]

    env.cli("release", held, check=True)
    env.cli("delete", deleted, check=True)
    env.cli("bounce", bounced, check=True)
    log = env.run_once()
    assert f"{held}: to=<bob@example.org>" in log and "status=sent" in log
    assert f"{deleted}: deleted by " in log and f"{deleted}: to=" not in log
    assert f"{bounced}: sender non-delivery notification" in log
    [dsn] = [m.read_bytes() for m in calls.glob("*.msg") if b"multipart/report" in m.read_bytes()]
    assert b"returned to the sender by the mail system's operator" in dsn
    assert env.queue() == []
    again = env.cli("delete", deleted)
    assert again.returncode == 69 and "no such message in the queue" in again.stderr


def test_status_tells_monitoring_what_is_wrong(tmp_path: Path) -> None:
    env, _ = _deferring_env(tmp_path)
    never = env.cli("status")
    assert never.returncode == 2 and "relay has never run" in never.stdout
    env.prepare()
    stopped = env.cli("status")
    assert stopped.returncode == 2 and "relay is not running" in stopped.stdout
    _queued(env, "stuck")
    with env.running():
        wait_until(lambda: bool(env.queue()) and env.queue()[0].attempts == 1, 20,
                   "the first attempt")
        wait_until(lambda: '"deferred": 1' in (env.spool / "relay.status").read_text(), 20,
                   "the status file to count it")
        ok = env.cli("status", "--warn-age", "1h")
        assert ok.returncode == 0 and ok.stdout.startswith("spoolmail OK")
        assert "1 messages, 1 deferred" in ok.stdout and "last delivery error" in ok.stdout
        warn = env.cli("status", "--warn-age", "0s")
        assert warn.returncode == 1 and "oldest message is" in warn.stdout
        crit = env.cli("status", "--warn-age", "0s", "--crit-age", "0s")
        assert crit.returncode == 2


def test_check_config_validates_and_masks_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    env = RelayEnv(tmp_path, "smtp", smtp={"host": "smtp.example.net", "username": "relay",
                                          "password_file": str(secret)})
    out = env.cli("check-config", check=True).stdout
    assert "transport = 'smtp'" in out and "smtp.tls = 'starttls'" in out
    assert "hunter2" not in out and "smtp password: set" in out
    env.configure(smtp={"port": 99999})
    bad = env.cli("check-config")
    assert bad.returncode == 78 and "smtp.port must be at most 65535" in bad.stderr


def test_send_test_reports_the_fate(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    with env.running():
        sent = env.cli("send-test", "ops@example.org", "--wait", "20")
        assert sent.returncode == 0, sent.stderr
        assert "delivered" in sent.stdout
    [landed] = env.maildir_files()
    assert b"Subject: spoolmail test message" in landed.read_bytes()


def test_quarantine_commands(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    (env.spool / "incoming" / "0000000001junk").write_bytes(b"not a spool file\n")
    env.run_once()
    [qid] = [line.split()[0] for line in env.cli("quarantine", "list").stdout.splitlines()]
    assert env.cli("quarantine", "show", qid, check=True).stdout.strip() == "not a spool file"
    env.cli("quarantine", "release", qid, check=True)
    assert (env.spool / "incoming" / "0000000001junk").exists()
    env.run_once()
    [qid] = [line.split()[0] for line in env.cli("quarantine", "list").stdout.splitlines()]
    env.cli("quarantine", "delete", qid, check=True)
    assert env.cli("quarantine", "list").stdout.strip() == "quarantine is empty"


_AS_NOBODY = """
import os, sys
from spoolmail.cli import main
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(main(sys.argv[1:]))
"""


def test_unprivileged_users_are_refused_politely() -> None:
    require_root("switches to the nobody user")
    with tempfile.TemporaryDirectory() as tmp:  # pytest's tmp_path is not open to nobody
        root = Path(tmp)
        root.chmod(0o755)
        env = RelayEnv(root, "maildir")
        env.prepare()
        proc = subprocess.run([sys.executable, "-c", _AS_NOBODY, "--config", str(env.config),
                               "queue"], capture_output=True, text=True, cwd="/", timeout=60)
        status = subprocess.run([sys.executable, "-c", _AS_NOBODY, "--config",
                                 str(env.config), "status"], capture_output=True, text=True,
                                cwd="/", timeout=60)
    assert status.returncode == 77 and "run this as root" in status.stderr
    assert proc.returncode == 77
    assert proc.stderr.startswith("spoolmail: cannot read the queue") and "root" in proc.stderr
