"""spoolmail.dropin: the client drop-in written for one unit, on a scratch root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from spoolmail import dropin
from tests.support.front import installed_script


def make_root(tmp_path: Path, *, sbin: bool = True, lib: bool = True) -> Path:
    """A root with spoolmail's front and, like Debian with Exim, both sendmail names."""
    root = tmp_path / "root"
    (root / "usr/libexec/spoolmail").mkdir(parents=True)
    (root / "usr/libexec/spoolmail/sendmail").write_text("#!/usr/bin/python3\n")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    (root / "usr/sbin/exim4").write_text("exim")
    if sbin:
        os.symlink("exim4", root / "usr/sbin/sendmail")
    if lib:
        os.symlink("../sbin/sendmail", root / "usr/lib/sendmail")
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "lib/systemd/system/mon.service").write_text("[Service]\nExecStart=/usr/sbin/mon\n")
    return root


def dropin_text(root: Path, unit: str) -> str:
    return (root / f"etc/systemd/system/{unit}.d/spoolmail-client.conf").read_text()


def test_writes_rw_path_and_both_binds(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    report = dropin.enable_for("mon", root=str(root))
    text = dropin_text(root, "mon.service")
    assert "\nReadWritePaths=-/var/spool/spoolmail/incoming\n" in text
    assert "BindReadOnlyPaths=-/usr/libexec/spoolmail/sendmail:/usr/sbin/sendmail\n" in text
    assert "BindReadOnlyPaths=-/usr/libexec/spoolmail/sendmail:/usr/lib/sendmail\n" in text
    assert report[0] == "wrote /etc/systemd/system/mon.service.d/spoolmail-client.conf"
    assert report[-1] == "next: systemctl daemon-reload && systemctl restart mon.service"
    assert any("/usr/lib/sendmail (-> /usr/sbin/exim4)" in line for line in report)
    assert not any(line.startswith("note:") for line in report)


def test_second_run_reports_up_to_date(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    dropin.enable_for("mon.service", root=str(root))
    again = dropin.enable_for("mon.service", root=str(root))
    assert again[0].endswith("already up to date")


@pytest.mark.parametrize(("sbin", "lib", "bound", "skipped"), [
    (True, False, "/usr/sbin/sendmail", "/usr/lib/sendmail"),
    (False, True, None, "/usr/sbin/sendmail"),  # /usr/lib/sendmail dangles then
])
def test_missing_target_is_not_bound(
    tmp_path: Path, sbin: bool, lib: bool, bound: str | None, skipped: str
) -> None:
    root = make_root(tmp_path, sbin=sbin, lib=lib)
    if bound is None:
        with pytest.raises(dropin.DropinError, match="neither"):
            dropin.enable_for("mon", root=str(root))
        assert not (root / "etc/systemd/system/mon.service.d").exists()
        return
    report = dropin.enable_for("mon", root=str(root))
    text = dropin_text(root, "mon.service")
    assert f":{bound}\n" in text
    assert f":{skipped}" not in text
    assert any(line.startswith(f"{skipped}: left alone") for line in report)


def test_no_bind_where_sendmail_already_is_the_front(tmp_path: Path) -> None:
    root = make_root(tmp_path, sbin=False, lib=False)
    os.symlink("../libexec/spoolmail/sendmail", root / "usr/sbin/sendmail")
    os.symlink("/usr/sbin/sendmail", root / "usr/lib/sendmail")  # absolute: inside root
    report = dropin.enable_for("mon", root=str(root))
    assert "BindReadOnlyPaths" not in dropin_text(root, "mon.service")
    assert sum("already spoolmail's front" in line for line in report) == 2


def test_spool_from_config(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "etc/spoolmail").mkdir(parents=True)
    (root / "etc/spoolmail/spoolmail.toml").write_text('spool = "/srv/mailspool"\n')
    dropin.enable_for("mon", root=str(root))
    assert "ReadWritePaths=-/srv/mailspool/incoming\n" in dropin_text(root, "mon.service")


def test_unknown_unit_gets_a_note(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    report = dropin.enable_for("foo@bar", root=str(root))
    assert (root / "etc/systemd/system/foo@bar.service.d/spoolmail-client.conf").exists()
    assert any(line.startswith("note: no unit file for foo@bar.service") for line in report)


@pytest.mark.parametrize("bad", ["", "../x", "a/b.service", "mon.socket", "x y"])
def test_rejects_non_service_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(dropin.DropinError):
        dropin.enable_for(bad, root=str(make_root(tmp_path)))


def test_front_must_be_installed(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    (root / "usr/libexec/spoolmail/sendmail").unlink()
    with pytest.raises(dropin.DropinError, match="not installed"):
        dropin.enable_for("mon", root=str(root))


def test_disable_for_removes_it(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    dropin.enable_for("mon", root=str(root))
    report = dropin.disable_for("mon", root=str(root))
    assert report[0] == "removed /etc/systemd/system/mon.service.d/spoolmail-client.conf"
    assert not (root / "etc/systemd/system/mon.service.d").exists()
    assert dropin.disable_for("mon", root=str(root))[0].endswith("nothing to do")


def test_resolve_follows_links_inside_root(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert dropin.resolve(str(root), "/usr/lib/sendmail") == "/usr/sbin/exim4"
    os.symlink("loop", root / "usr/sbin/loop")
    assert dropin.resolve(str(root), "/usr/sbin/loop") is None
    assert dropin.resolve(str(root), "/usr/sbin/nothing") is None


def test_the_command_line_writes_and_removes_the_drop_in(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    spoolmail = installed_script("spoolmail")
    done = subprocess.run([str(spoolmail), "enable-for", "mon.service", "--root", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        "wrote /etc/systemd/system/mon.service.d/spoolmail-client.conf")
    assert "ReadWritePaths=-/var/spool/spoolmail/incoming" in dropin_text(root, "mon.service")
    undone = subprocess.run([str(spoolmail), "disable-for", "mon.service", "--root", str(root)],
                            capture_output=True, text=True, timeout=60)
    assert undone.returncode == 0, undone.stderr
    assert not (root / "etc/systemd/system/mon.service.d/spoolmail-client.conf").exists()
