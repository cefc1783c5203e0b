"""Fixtures for the system tests: one booted container per test module.

Every test here boots a real systemd (tests/support/container.py); they skip on
a machine without root, systemd-nspawn or mmdebstrap, and fail when CI=true.
The root file system is built once (about 40 s) and cached.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import container, require
from tests.system import units

SCENARIO_PACKAGES: tuple[str, ...] = (*container.DEFAULT_PACKAGES, "exim4-daemon-light", "mon")

# spoolmail.toml for the scenario: deliver by SMTP to the local Exim.
RELAY_CONFIG = """\
domain = "localhost"

[delivery]
transport = "smtp"

[smtp]
host = "127.0.0.1"
port = 25
"""


def source_dir() -> Path:
    """The spoolmail source to install ($SPOOLMAIL_TEST_SRC, else this repository's src/)."""
    return Path(os.environ.get("SPOOLMAIL_TEST_SRC") or units.REPO / "src")


def boot() -> container.Container:
    container.require_containers()
    root = container.rootfs(SCENARIO_PACKAGES)
    ct = container.Container(root)
    ct.start()
    try:
        container.install_spoolmail_from_source(ct, source_dir())
        units.install_spoolmail_units(ct)
        # mon's own daemon is not part of the scenario (its alert script is).
        ct.systemctl("disable", "--now", "mon.service", check=False)
    except BaseException:
        ct.stop()
        raise
    return ct


def setup_exim_and_alice(ct: container.Container) -> None:
    """Exim delivers local mail into ~/Maildir; alice has a home with one public file."""
    ct.sh(
        "sed -i \"s/^dc_localdelivery=.*/dc_localdelivery='maildir_home'/\" "
        "/etc/exim4/update-exim4.conf.conf\n"
        "update-exim4.conf\n"
        "systemctl restart exim4\n"
        "useradd --create-home --shell /bin/sh alice\n"
        "chmod 0755 /home/alice\n"
        "echo 'alice public note' > /home/alice/public.txt\n"
        "chmod 0644 /home/alice/public.txt\n"
        "install -d -o alice -g alice -m 0700 /home/alice/Maildir "
        "/home/alice/Maildir/new /home/alice/Maildir/cur /home/alice/Maildir/tmp\n"
    )
    ct.wait_for("ss -Hltn 'sport = :25' | grep -q 127.0.0.1")


@pytest.fixture(scope="module")
def ct() -> Iterator[container.Container]:
    machine = boot()
    try:
        yield machine
    finally:
        machine.stop()


def require_relay() -> None:
    if not (source_dir() / "spoolmail" / "cli.py").exists():
        require.missing(f"the relay (spoolmail.cli) is not in {source_dir()} yet")
