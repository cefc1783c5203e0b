"""The Debian packages: they build (running the unit tests against Debian's own
libraries), pass lintian, and work when installed in a clean Debian system
with a real systemd: the relay starts, `sendmail -t` delivers to an SMTP server
on loopback, queued mail survives a reinstall and `apt-get remove`, and only
`purge` deletes it.

Needs root, dpkg-dev, debhelper and the other build dependencies, lintian,
and what tests/support/container.py needs (systemd-container, mmdebstrap).
The packages are built once for the whole module, in a copy of the tree.
"""

from __future__ import annotations

import gzip
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from spoolmail import cli, config
from spoolmail.sendmail import argv, spoolwrite
from tests.support import container, debpkg
from tests.support.container import Container

pytestmark = pytest.mark.system

REPO = debpkg.REPO
FRONT = "/usr/libexec/spoolmail/sendmail"
MTA_LINKS = ("/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/sbin/newaliases")
SPOOL = "/var/spool/spoolmail"

# The packages' dependencies must be in the root file system: the container
# has no network. Exim is there to show that spoolmail coexists with an MTA
# and that spoolmail-mta replaces it. The same set as the system tests'
# scenario (tests/system/conftest.py), so that both use one cached rootfs.
ROOTFS_PACKAGES = (*container.DEFAULT_PACKAGES, "exim4-daemon-light", "mon")

SINK_PORT = 2525
CLOSED_PORT = 2599  # nothing listens there: deliveries are deferred

# An SMTP server on the container's loopback that stores each message as
# <n>.json (envelope and data) in the directory given. Python 3.11's smtpd
# (deprecated, but in bookworm's python3) needs nothing beyond the rootfs.
SMTP_SINK = """\
import asyncore, json, os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import smtpd

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(out, exist_ok=True)

class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        record = {"mail_from": mailfrom, "rcpt_tos": rcpttos,
                  "data": data.decode("utf-8", "replace")}
        with open(os.path.join(out, "tmp"), "w") as f:
            json.dump(record, f)
        os.rename(os.path.join(out, "tmp"), os.path.join(out, "%04d.json" % n))
        return "250 2.0.0 Ok: stored as %d" % n

Sink((host, port), None, decode_data=False)
open(os.path.join(out, "ready"), "w").close()
asyncore.loop()
"""

# A daemon hardened the way issue 4 lists, given spoolmail's front as its
# /usr/sbin/sendmail by the shipped drop-in, while Exim stays the system's.
ALERT_SCRIPT = """\
#!/bin/sh
printf 'To: carol@example.org\\nSubject: from a sandbox\\n\\nsent by a hardened unit\\n' |
    /usr/sbin/sendmail -t
"""
HARDENED_UNIT = """\
[Service]
Type=oneshot
DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateNetwork=yes
RestrictAddressFamilies=none
SystemCallFilter=@system-service
UMask=0077
ExecStart=/usr/local/bin/alert-mail
"""


# -- building -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_build(tmp_path_factory: pytest.TempPathFactory) -> debpkg.Built | debpkg.BuildError:
    """The build as a user runs it: dpkg-buildpackage -us -uc -b, tests included."""
    debpkg.require_build_tools()
    try:
        return debpkg.build(tmp_path_factory.mktemp("debian-build"))
    except debpkg.BuildError as exc:
        return exc


@pytest.fixture(scope="module")
def built(
    full_build: debpkg.Built | debpkg.BuildError, tmp_path_factory: pytest.TempPathFactory
) -> debpkg.Built:
    """The packages. When only the build-time tests failed (that failure is
    reported by the test below), they are built again without them, so that
    lintian and the installation are still checked."""
    if isinstance(full_build, debpkg.Built):
        return full_build
    return debpkg.build(tmp_path_factory.mktemp("debian-build-nocheck"), nocheck=True)


def test_build_runs_the_unit_tests_with_debian_libraries(
    full_build: debpkg.Built | debpkg.BuildError,
) -> None:
    if isinstance(full_build, debpkg.BuildError):
        pytest.fail(str(full_build))
    # pybuild ran pytest with the system's python3 and Debian's libraries,
    # leaving out the tests that need exim or a container.
    log = full_build.log
    assert re.search(r"python3\.\d+ -m pytest -m .not exim and not system.", log)
    summary = re.findall(r"^=+ (.*) in [\d.]+s(?: \(.*\))? =+$", log, re.MULTILINE)
    assert summary, "no pytest summary in the build log"
    assert re.search(r"\b[1-9]\d* passed", summary[-1]), summary[-1]
    assert not re.search(r"\b\d+ (failed|errors?)\b", summary[-1]), summary[-1]


def test_lintian_has_no_errors_and_no_warnings(built: debpkg.Built) -> None:
    bad, output = debpkg.lintian(built.changes)
    assert bad == [], output


def test_lintian_overrides_say_why() -> None:
    for path in sorted((REPO / "debian").glob("*lintian-overrides")):
        previous = ""
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert previous.startswith("#"), f"{path.name}: no comment above {line!r}"
            previous = line


def test_spoolmail_package_ships_front_relay_units_and_docs(built: debpkg.Built) -> None:
    deb = built.debs["spoolmail"]
    files = debpkg.contents(deb)

    front = files[FRONT]
    assert front.kind == "file" and front.mode == 0o755
    assert front.data.startswith(b"#!/usr/bin/python3 -I\n")
    assert b"from spoolmail.sendmail.main import main" in front.data
    assert debpkg.resolve(files, "/usr/bin/spoolmail-sendmail") == FRONT
    assert files["/usr/bin/spoolmail"].mode == 0o755
    assert b"from spoolmail.cli import main" in files["/usr/bin/spoolmail"].data
    assert "/usr/lib/python3/dist-packages/spoolmail/sendmail/main.py" in files

    # It does not take the system's sendmail: it installs next to Exim or Postfix.
    for path in MTA_LINKS:
        assert path not in files

    shipped = {
        "/lib/systemd/system/spoolmail-relay.service": "systemd/spoolmail-relay.service",
        "/lib/systemd/system/spoolmail-smtp-proxy.service": "systemd/spoolmail-smtp-proxy.service",
        "/lib/systemd/system/spoolmail-smtp-proxy.socket": "systemd/spoolmail-smtp-proxy.socket",
        "/usr/lib/tmpfiles.d/spoolmail.conf": "systemd/spoolmail.tmpfiles",
        "/usr/lib/sysusers.d/spoolmail.conf": "systemd/spoolmail.sysusers",
        spoolwrite.DROP_IN: "systemd/spoolmail-client.conf",
        "/usr/share/spoolmail/relay-local-mta.conf": "systemd/relay-local-mta.conf",
        "/usr/share/spoolmail/relay-loopback-only.conf": "systemd/relay-loopback-only.conf",
        "/usr/share/spoolmail/relay-smarthost-password.conf":
            "systemd/relay-smarthost-password.conf",
        "/etc/spoolmail/spoolmail.toml": "etc/spoolmail.toml",
    }
    for installed, source in shipped.items():
        assert files[installed].data == (REPO / source).read_bytes(), installed
    assert debpkg.control_file(deb, "conffiles").split() == ["/etc/spoolmail/spoolmail.toml"]

    for page, title in (
        ("/usr/share/man/man8/spoolmail.8.gz", b'.TH "spoolmail" "8"'),
        ("/usr/share/man/man8/spoolmail-sendmail.8.gz", b'.TH "spoolmail-sendmail" "8"'),
        ("/usr/share/man/man5/spoolmail.toml.5.gz", b'.TH "spoolmail.toml" "5"'),
    ):
        assert title in gzip.decompress(files[page].data), page

    # What `systemctl help spoolmail-relay` opens is in the package.
    unit = (REPO / "systemd" / "spoolmail-relay.service").read_text()
    documentation = re.findall(r"^Documentation=(\S+)$", unit, re.MULTILINE)
    assert documentation
    for uri in documentation:
        man = re.fullmatch(r"man:([\w.-]+)\((\d)\)", uri)
        path = f"/usr/share/man/man{man[2]}/{man[1]}.{man[2]}.gz" if man else uri[len("file:"):]
        assert uri.startswith(("man:", "file:")) and path in set(files), f"{uri} is not shipped"

    depends = debpkg.control_field(deb, "Depends")
    for dependency in ("adduser", "python3-aiosmtplib", "python3-watchdog", "python3-click"):
        assert re.search(rf"(^|, ){re.escape(dependency)}\b", depends), depends


def test_spoolmail_mta_package_is_the_system_sendmail(built: debpkg.Built) -> None:
    deb = built.debs["spoolmail-mta"]
    files = debpkg.contents(deb)
    for path in MTA_LINKS:
        assert debpkg.resolve(files, path) == FRONT, path
    for page in ("sendmail.8.gz", "mailq.8.gz", "newaliases.8.gz"):
        target = debpkg.resolve(files, f"/usr/share/man/man8/{page}")
        assert target == "/usr/share/man/man8/spoolmail-sendmail.8.gz", page
    for field in ("Provides", "Conflicts", "Replaces"):
        assert debpkg.control_field(deb, field) == "mail-transport-agent", field
    version = debpkg.control_field(deb, "Version")
    assert debpkg.control_field(deb, "Depends").startswith(f"spoolmail (= {version})")


def test_package_version_is_the_project_version() -> None:
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    version = re.fullmatch(r"spoolmail \((\S+)\) \S+; urgency=\w+", first)
    assert version, first
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version[1] == project  # a native package: no Debian revision


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def test_man_page_describes_every_command_and_option() -> None:
    page = (REPO / "docs" / "man" / "spoolmail.8.scd").read_text()
    undocumented: list[str] = []
    for path, command in [("", cli.cli), *_commands(cli.cli)]:
        words = path.split()
        if words and f"*{words[-1]}*" not in page:
            undocumented.append(path)
        for param in command.params:
            for flag in (*param.opts, *param.secondary_opts):
                if flag.startswith("-") and f"*{flag}*" not in page:
                    undocumented.append(f"{path} {flag}".strip())
    assert undocumented == []


def test_sendmail_man_page_describes_every_option_the_front_accepts() -> None:
    page = (REPO / "docs" / "man" / "spoolmail-sendmail.8.scd").read_text()
    options = [f"-{c}" for c in sorted(argv.FLAGS | argv.VALUED | {"q"})]
    options += [f"-b{mode}" for mode in argv.MODES] + ["--help", "--version"]
    assert [o for o in options if f"*{o}*" not in page] == []


# -- the shipped configuration file ---------------------------------------------


def _uncommented_settings(text: str) -> str:
    """The conffile with every commented-out `#key = value` line made live."""
    live = re.compile(r"^#([a-z_]+ = .*)$")
    return "\n".join(m[1] if (m := live.match(line)) else line for line in text.splitlines())


def test_shipped_config_changes_nothing_as_installed() -> None:
    table = tomllib.loads((REPO / "etc" / "spoolmail.toml").read_text())
    assert table == {"delivery": {}, "smtp": {}, "maildir": {}, "command": {}}


# Commented-out settings that show an example rather than the default.
EXAMPLES = {"hostname", "domain", "admin", "smtp.tls", "smtp.username", "smtp.password_file",
            "smtp.ca_file", "command.argv"}


def test_shipped_config_settings_are_valid_and_show_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SPOOLMAIL_SPOOL", raising=False)
    text = (REPO / "etc" / "spoolmail.toml").read_text()
    every = tomllib.loads(_uncommented_settings(text))
    config.from_table(every, "spoolmail.toml")  # unknown keys and wrong types raise
    defaults = config.from_table({}, "spoolmail.toml")
    differ: list[str] = []
    for name, value in every.items():
        settings = value.items() if isinstance(value, dict) else [(None, value)]
        for key, setting in settings:
            dotted = f"{name}.{key}" if key else name
            if dotted in EXAMPLES:
                continue
            one = {name: {key: setting}} if key else {name: setting}
            if config.from_table(one, "spoolmail.toml") != defaults:
                differ.append(dotted)
    assert differ == []


def test_shipped_config_and_man_page_document_the_same_keys() -> None:
    text = (REPO / "etc" / "spoolmail.toml").read_text()
    table = tomllib.loads(_uncommented_settings(text))
    in_config = {k for k, v in table.items() if not isinstance(v, dict)}
    in_config |= {f"{name}.{k}" for name, sub in table.items() if isinstance(sub, dict)
                  for k in sub}

    page = (REPO / "docs" / "man" / "spoolmail.toml.5.scd").read_text()
    in_page: set[str] = set()
    section = ""
    for line in page.splitlines():
        if line.startswith("# "):
            heading = re.fullmatch(r"# \[(\w+)\]", line)
            section = heading[1] + "." if heading else ""
        elif line.startswith("*"):  # a definition: *key* = ..., *a*, *b* = ...
            in_page |= {section + key for key in re.findall(r"\*(\w+)\*(?=,| =)", line)}
    assert in_config == in_page


# -- installed in a container with a real systemd -----------------------------


@pytest.fixture(scope="module")
def rootfs() -> Path:
    container.require_containers()
    return container.rootfs(ROOTFS_PACKAGES)


@pytest.fixture
def system(built: debpkg.Built, rootfs: Path) -> Iterator[Container]:
    with Container(rootfs, binds_ro=[(str(built.outdir), "/debs")]) as c:
        c.systemctl("disable", "--now", "mon.service", check=False)  # sends no mail here
        yield c


def _apt(c: Container, *args: str) -> container.Result:
    return c.sh(
        "DEBIAN_FRONTEND=noninteractive apt-get --yes -o Dpkg::Use-Pty=0 "
        + shlex.join(args),
        check=False,
        timeout=300,
    )


def _deb(c: Container, package: str) -> str:
    return c.sh(f"ls /debs/{package}_*.deb").stdout.strip()


def _relay_uses(c: Container, port: int) -> None:
    c.write_file(
        "/etc/spoolmail/spoolmail.toml",
        f'[delivery]\ntransport = "smtp"\n\n[smtp]\nhost = "127.0.0.1"\nport = {port}\n',
    )
    c.systemctl("restart", "spoolmail-relay.service")
    assert c.systemctl("is-active", "spoolmail-relay.service").stdout.strip() == "active"


def _start_sink(c: Container) -> None:
    c.write_file("/root/smtpsink.py", SMTP_SINK)
    c.run(["systemd-run", "--unit=smtp-sink", "python3", "/root/smtpsink.py",
           "127.0.0.1", str(SINK_PORT), "/root/sink"])
    c.wait_for("test -e /root/sink/ready")


def _received(c: Container, count: int) -> list[dict[str, Any]]:
    """Wait until the sink holds count messages; return them in arrival order."""
    c.wait_for(f'test "$(ls /root/sink | grep -c json)" -ge {count}', timeout=90)
    names = sorted(c.sh("ls /root/sink | grep json").stdout.split())
    return [json.loads(c.read_file(f"/root/sink/{name}")) for name in names]


def _send_as_nobody(c: Container, sendmail: str, message: str) -> str:
    """Submit as an unprivileged user with -v; return the queue id printed."""
    result = c.sh(
        f"setpriv --reuid=nobody --regid=nogroup --clear-groups {sendmail} -t -v",
        input=message,
    )
    found = re.search(r"queued as (\S+)", result.stderr)
    assert found, result
    return found[1]


def _spool_snapshot(c: Container) -> str:
    return c.sh(f"cd {SPOOL} && find . -type f -exec sha256sum {{}} + | sort").stdout


def test_installs_next_to_exim_and_spoolmail_mta_replaces_it(system: Container) -> None:
    c = system
    assert c.sh("readlink -f /usr/sbin/sendmail").stdout.strip() == "/usr/sbin/exim4"

    installed = _apt(c, "install", _deb(c, "spoolmail"))
    assert installed.returncode == 0, installed.output
    # Exim stays the system's sendmail; the relay runs, enabled, as its own user.
    assert c.sh("readlink -f /usr/sbin/sendmail").stdout.strip() == "/usr/sbin/exim4"
    c.wait_for("systemctl is-active spoolmail-relay.service")
    assert c.systemctl("is-enabled", "spoolmail-relay.service").stdout.strip() == "enabled"
    user = c.run(["getent", "passwd", "spoolmail"]).stdout.strip().split(":")
    assert user[5:] == ["/var/lib/spoolmail", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000
    modes = c.sh(
        f"cd {SPOOL} && stat -c '%n %a %U:%G' . incoming queue quarantine control"
    ).stdout.split("\n")
    assert modes[:5] == [
        ". 755 spoolmail:spoolmail",
        "incoming 3733 spoolmail:spoolmail",
        "queue 700 spoolmail:spoolmail",
        "quarantine 700 spoolmail:spoolmail",
        "control 700 spoolmail:spoolmail",
    ]

    _start_sink(c)
    _relay_uses(c, SINK_PORT)

    # The documented way to let one hardened service send mail through spoolmail.
    c.write_file("/usr/local/bin/alert-mail", ALERT_SCRIPT, mode=0o755)
    c.write_file("/etc/systemd/system/alert.service", HARDENED_UNIT)
    c.sh(f"mkdir -p /etc/systemd/system/alert.service.d && "
         f"ln -s {spoolwrite.DROP_IN} /etc/systemd/system/alert.service.d/")
    c.systemctl("daemon-reload")
    started = c.systemctl("start", "alert.service", check=False)
    assert started.returncode == 0, started.output + c.journal("alert.service")
    [first] = _received(c, 1)
    assert first["rcpt_tos"] == ["carol@example.org"]
    assert "Subject: from a sandbox" in first["data"]

    # spoolmail-mta takes over from Exim (Provides/Conflicts/Replaces).
    replaced = _apt(c, "install", _deb(c, "spoolmail-mta"))
    assert replaced.returncode == 0, replaced.output
    assert "Removing exim4-daemon-light" in replaced.output
    for path in MTA_LINKS:
        assert c.run(["readlink", "-f", path]).stdout.strip() == FRONT, path

    queue_id = _send_as_nobody(
        c,
        "/usr/sbin/sendmail",
        "To: Alice <alice@example.org>\nCc: bob@example.org\nBcc: hidden@example.org\n"
        "Subject: packaged spoolmail\n\nHello from the Debian package.\n",
    )
    second = _received(c, 2)[1]
    assert sorted(second["rcpt_tos"]) == [
        "alice@example.org", "bob@example.org", "hidden@example.org"]
    data = second["data"]
    assert second["mail_from"].startswith("nobody@")
    assert "Subject: packaged spoolmail" in data
    assert "Hello from the Debian package." in data
    assert not re.search(r"^Bcc:", data, re.MULTILINE | re.IGNORECASE)
    assert re.search(r"userid 65534\b", data), data
    assert queue_id in c.journal("spoolmail-relay.service")

    mailq = c.run(["mailq"], check=False)
    assert mailq.returncode == 0 and "queue is empty" in mailq.stdout, mailq
    assert c.run(["newaliases"], check=False).returncode == 0


def test_queued_mail_survives_reinstall_and_remove_and_purge_deletes_it(
    system: Container,
) -> None:
    c = system
    installed = _apt(c, "install", _deb(c, "spoolmail"), _deb(c, "spoolmail-mta"))
    assert installed.returncode == 0, installed.output
    c.wait_for("systemctl is-active spoolmail-relay.service")
    _relay_uses(c, CLOSED_PORT)

    message = "To: dave@example.org\nSubject: waiting\n\nstuck in the queue\n"
    picked_up = _send_as_nobody(c, "/usr/sbin/sendmail", message)
    c.wait_for(f"test -z \"$(ls -A {SPOOL}/incoming)\" && mailq | grep -q {picked_up}")
    c.systemctl("stop", "spoolmail-relay.service")
    waiting = _send_as_nobody(c, "/usr/sbin/sendmail", message)
    assert c.sh(f"ls -A {SPOOL}/incoming").stdout.split() == [waiting]

    # A reinstall (the upgrade path of the maintainer scripts) keeps both and
    # restarts the relay, which picks up the second.
    again = _apt(c, "install", "--reinstall", _deb(c, "spoolmail"))
    assert again.returncode == 0, again.output
    c.wait_for(f"mailq | grep -q {picked_up} && mailq | grep -q {waiting}")

    c.systemctl("stop", "spoolmail-relay.service")
    before = _spool_snapshot(c)
    assert picked_up in before and waiting in before
    removed = _apt(c, "remove", "spoolmail-mta", "spoolmail")
    assert removed.returncode == 0, removed.output
    assert "spoolmail: 2 message(s) stay queued" in removed.output
    assert _spool_snapshot(c) == before
    assert c.exists("/etc/spoolmail/spoolmail.toml")

    purged = _apt(c, "purge", "spoolmail")
    assert purged.returncode == 0, purged.output
    assert "spoolmail: warning: deleting 2 undelivered message(s)" in purged.output
    for gone in (SPOOL, "/var/lib/spoolmail", "/etc/spoolmail"):
        assert not c.exists(gone), gone
