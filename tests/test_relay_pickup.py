"""Pickup is the security boundary: hostile files are quarantined, identity is st_uid."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from spoolmail import config, envelope
from spoolmail.relay import pickup
from spoolmail.relay.queue import QueueStore
from tests.support.relay import SPOOLMAIL, RelayEnv
from tests.support.require import require_root

GOOD = b"To: alice@example.org\nSubject: good\n\nstill delivered\n"


def _spool_file(sender: str | None = None, rcpts: tuple[str, ...] = ("alice@example.org",),
                message: bytes = GOOD) -> bytes:
    env = envelope.Envelope(time=int(time.time()), sender=sender, recipients=list(rcpts))
    return envelope.encode(env) + message


def _plant(env: RelayEnv, name: str, data: bytes, uid: int | None = None) -> Path:
    path = env.spool / "incoming" / name
    path.write_bytes(data)
    path.chmod(0o640)
    if uid is not None:
        os.chown(path, uid, -1)
    return path


def test_hostile_files_are_quarantined_and_other_mail_still_flows(tmp_path: Path) -> None:
    require_root("plants files owned by other users")
    env = RelayEnv(tmp_path, "maildir", message_size_limit=4096)
    env.prepare()
    incoming = env.spool / "incoming"
    secret = tmp_path / "secret"
    secret.write_bytes(_spool_file())
    (incoming / "0000000001symlink").symlink_to(secret)
    os.mkfifo(incoming / "0000000002fifo")
    outside = tmp_path / "linked"
    outside.write_bytes(_spool_file())
    os.link(outside, incoming / "0000000003hardlink")
    _plant(env, "0000000004garbage", os.urandom(300), uid=65534)
    _plant(env, "0000000005version", b"SPOOLMAIL 2\ntime 1\n\n" + GOOD, uid=65534)
    _plant(env, "0000000006forged", b"SPOOLMAIL 1\ntime 1\nuid 0\nrcpt root\n\n" + GOOD,
           uid=65534)
    _plant(env, "0000000007huge", _spool_file(message=GOOD + b"x" * 8000), uid=65534)
    _plant(env, "0000000008norcpt", _spool_file(rcpts=()), uid=65534)
    _plant(env, "0000000009good", _spool_file(), uid=65534)

    log = env.run_once(timeout=60)

    files = env.maildir_files()
    assert len(files) == 1 and b"still delivered" in files[0].read_bytes()
    reasons = {
        "0000000001symlink": "symbolic link",
        "0000000002fifo": "not a regular file",
        "0000000003hardlink": "2 hard links",
        "0000000004garbage": "not a spoolmail spool file",
        "0000000005version": "unknown spool format version",
        "0000000006forged": "unknown envelope key 'uid'",
        "0000000007huge": "larger than the limit",
        "0000000008norcpt": "no recipients",
    }
    for name, reason in reasons.items():
        line = next((ln for ln in log.splitlines() if name in ln and "quarantined" in ln), "")
        assert reason in line, f"{name}: {line or log}"
    assert len(env.quarantined()) == len(reasons)
    assert os.listdir(incoming) == []
    assert secret.exists() and outside.exists(), "quarantine never touches a link's target"
    listing = env.cli("quarantine", "list", check=True).stdout
    assert "symbolic link" in listing and "uid 65534" in listing


def test_identity_comes_from_the_file_owner_not_the_envelope(tmp_path: Path) -> None:
    require_root("plants files owned by other users")
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    _plant(env, "0000000001nobody", _spool_file(), uid=65534)
    _plant(env, "0000000002claims", _spool_file(sender="root"), uid=65534)
    _plant(env, "0000000003nameless", _spool_file(), uid=4000123)
    env.run_once()
    by_text = {p.read_bytes().split(b"\n", 1)[0]: p.read_bytes() for p in env.maildir_files()}
    nobody = by_text[b"Return-Path: <nobody@host.example.org>"]
    assert b"from userid 65534 nobody" in nobody
    claims = by_text[b"Return-Path: <root@host.example.org>"]
    assert b"from userid 65534 nobody" in claims, "a claimed sender never hides the uid"
    nameless = by_text[b"Return-Path: <uid-4000123@host.example.org>"]
    assert b"from userid 4000123 uid-4000123" in nameless


def test_unfinished_submissions_are_left_alone_until_stale(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    fresh = _plant(env, ".tmp.FRESH", b"half a mess")
    stale = _plant(env, ".tmp.STALE", b"half a mess")
    old = time.time() - 2 * 86400
    os.utime(stale, (old, old))
    log = env.run_once()
    assert fresh.exists()
    assert not stale.exists()
    assert ".tmp.STALE: removed unfinished submission" in log
    assert env.quarantined() == []


def test_relay_refuses_an_unsafe_spool(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    (env.spool / "incoming").chmod(0o777)
    proc = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=env.env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert proc.stderr.count("\n") == 1
    assert "unsafe spool" in proc.stderr and "readable by others" in proc.stderr
    (env.spool / "incoming").chmod(0o3733)
    (env.spool / "queue").chmod(0o755)
    proc = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=env.env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78 and "must be private" in proc.stderr


def test_config_errors_name_the_key_and_the_file(tmp_path: Path) -> None:
    env = RelayEnv(tmp_path, "maildir", delivery={"retry_schedul": [60]})
    proc = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=env.env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert proc.stderr.strip() == (
        f"spoolmail: {env.config}: unknown key 'delivery.retry_schedul'")
    env.configure(delivery={"transport": "carrier-pigeon"})
    env.settings["delivery"].pop("retry_schedul")
    env.configure()
    proc = subprocess.run([str(SPOOLMAIL), "relay", "--once"], env=env.env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78 and "delivery.transport must be one of" in proc.stderr


def test_a_message_cleanup_cannot_handle_is_kept_and_its_sender_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = RelayEnv(tmp_path, "maildir")
    env.prepare()
    _plant(env, "0000000001odd", _spool_file(sender="app@example.com"))
    cfg = config.load(str(env.config))

    def cleanup_that_fails(*args: object, **kwargs: object) -> None:
        raise ValueError("no sense can be made of it")

    monkeypatch.setattr(pickup, "cleanup", cleanup_that_fails)
    picked = pickup.pickup_file(cfg, QueueStore(cfg.queue_dir), "0000000001odd")
    assert picked.kind == "quarantined"
    [reason] = env.quarantined()
    assert reason.endswith("-0000000001odd.reason")
    monkeypatch.undo()
    env.run_once()
    [dsn] = env.maildir_files()
    text = dsn.read_bytes()
    assert text.startswith(b"Return-Path: <>\nDelivered-To: app@example.com\n")
    assert b"could not process the message" in text and b"Status: 5.6.0" in text
    assert b"Final-Recipient: rfc822; alice@example.org" in text
