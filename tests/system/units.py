"""Unit files for the system tests: a hardened daemon, its control variants, installation.

HARDENED is what the issue asks a daemon to keep (NoNewPrivileges=, ProtectHome=,
ProtectSystem=strict, PrivateNetwork=, RestrictAddressFamilies=none,
SystemCallFilter=@system-service, DynamicUser=, UMask=0077) plus the rest of
systemd's sandbox. A "control" unit is the same unit less one setting, so that a
denial can be pinned on that setting rather than on the container.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from tests.support.container import Container

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"

HARDENED: tuple[str, ...] = (
    "DynamicUser=yes",
    "NoNewPrivileges=yes",
    "ProtectHome=yes",
    "ProtectSystem=strict",
    "PrivateNetwork=yes",
    "RestrictAddressFamilies=none",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
    "PrivateUsers=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "DevicePolicy=closed",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "PrivateMounts=yes",
    "PrivateIPC=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RemoveIPC=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "RestrictSUIDSGID=yes",
    "KeyringMode=private",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "IPAddressDeny=any",
    "SystemCallArchitectures=native",
)

# The most a unit can keep and still use Exim's own (set-user-ID) sendmail: no
# NoNewPrivileges=, nothing that implies it for a non-root user (every
# seccomp-based setting, DynamicUser=, PrivateDevices=, ProtectKernelTunables=,
# ProtectClock=, ...), the capabilities Exim needs to switch users, and write
# access to Exim's spool and log. Found by trying, see docs/hardening.md.
AROUND_EXIM: tuple[str, ...] = (
    "ProtectSystem=strict",
    "ReadWritePaths=/var/spool/exim4 /var/log/exim4",
    "ProtectHome=yes",
    "PrivateNetwork=yes",
    "IPAddressDeny=any",
    "UMask=0077",
    "PrivateTmp=yes",
    "DevicePolicy=closed",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "PrivateMounts=yes",
    "PrivateIPC=yes",
    "ProtectControlGroups=yes",
    "RemoveIPC=yes",
    "CapabilityBoundingSet=CAP_SETUID CAP_SETGID",
    "KeyringMode=private",
)


def without(settings: Sequence[str], *names: str) -> tuple[str, ...]:
    """settings less every line that sets one of names (e.g. 'ProtectHome')."""
    return tuple(s for s in settings if s.split("=", 1)[0] not in names)


def replace(settings: Sequence[str], *lines: str) -> tuple[str, ...]:
    """settings with the given 'Key=value' lines instead of any line for Key."""
    keys = {line.split("=", 1)[0] for line in lines}
    return (*without(settings, *keys), *lines)


def _exec_quote(script: str) -> str:
    """One ExecStart= argument that reaches sh -c as exactly script.

    systemd expands %-specifiers and $VARS and undoes C escapes in ExecStart=.
    """
    quoted = shlex.quote(script).replace("\\", "\\\\").replace("\n", "\\n")
    return quoted.replace("%", "%%").replace("$", "$$")


def oneshot(description: str, script: str, settings: Sequence[str], user: str | None = None) -> str:
    """A Type=oneshot unit running script with sh, with the given [Service] settings."""
    lines = [
        "[Unit]",
        f"Description={description}",
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=/bin/sh -c " + _exec_quote(script),
        *settings,
    ]
    if user is not None:
        lines.append(f"User={user}")
    return "\n".join(lines) + "\n"


def install_unit(ct: Container, name: str, text: str, *, client_dropin: bool = False) -> None:
    """Install /etc/systemd/system/NAME, optionally with spoolmail's client drop-in."""
    ct.write_file(f"/etc/systemd/system/{name}", text)
    dropin = f"/etc/systemd/system/{name}.d"
    ct.sh(f"rm -rf {dropin}")
    if client_dropin:
        ct.sh(f"mkdir -p {dropin} && ln -s /usr/share/spoolmail/spoolmail-client.conf {dropin}/")
    ct.systemctl("daemon-reload")


class Run:
    """What one start of a oneshot unit did."""

    def __init__(self, unit: str, result: str, status: int, output: str) -> None:
        self.unit = unit
        self.result = result  # systemd's Result=: success, exit-code, ...
        self.status = status  # ExecMainStatus=
        self.output = output  # what the unit wrote to stdout/stderr, from the journal

    def __repr__(self) -> str:
        return f"Run({self.unit}, result={self.result}, status={self.status}, {self.output!r})"


def start(ct: Container, unit: str) -> Run:
    """Start a oneshot unit, wait for it, and collect its result and output."""
    ct.systemctl("reset-failed", unit, check=False)
    cursor = ct.run(["journalctl", "-n0", "--show-cursor", "-q"], check=False).stdout
    cursor = cursor.rsplit("cursor:", 1)[-1].strip()
    ct.systemctl("start", unit, check=False)
    show = ct.systemctl("show", "-p", "Result", "-p", "ExecMainStatus", unit).stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    ct.run(["journalctl", "--sync"], check=False)
    lines = ct.run(
        ["journalctl", "--no-pager", "-o", "json", "-u", unit, f"--after-cursor={cursor}"],
        check=False,
    ).stdout.splitlines()
    output = ""
    for line in lines:
        entry = json.loads(line)
        if entry.get("_TRANSPORT") == "stdout" and isinstance(entry.get("MESSAGE"), str):
            output += entry["MESSAGE"] + "\n"
    return Run(unit, props["Result"], int(props.get("ExecMainStatus") or -1), output)


def install_spoolmail_units(ct: Container) -> None:
    """Lay out systemd/ the way the Debian package installs it."""
    files = {
        "spoolmail-relay.service": "/usr/lib/systemd/system/spoolmail-relay.service",
        "spoolmail-smtp-proxy.socket": "/usr/lib/systemd/system/spoolmail-smtp-proxy.socket",
        "spoolmail-smtp-proxy.service": "/usr/lib/systemd/system/spoolmail-smtp-proxy.service",
        "spoolmail.sysusers": "/usr/lib/sysusers.d/spoolmail.conf",
        "spoolmail.tmpfiles": "/usr/lib/tmpfiles.d/spoolmail.conf",
        "spoolmail-client.conf": "/usr/share/spoolmail/spoolmail-client.conf",
        "relay-local-mta.conf": "/usr/share/spoolmail/relay-local-mta.conf",
        "relay-loopback-only.conf": "/usr/share/spoolmail/relay-loopback-only.conf",
        "relay-smarthost-password.conf": "/usr/share/spoolmail/relay-smarthost-password.conf",
    }
    for source, target in files.items():
        ct.write_file(target, (SYSTEMD_DIR / source).read_bytes())
    ct.sh("systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload")


def relay_dropin(ct: Container, variant: str | None) -> None:
    """Use one of the shipped relay drop-ins (local-mta, loopback-only) or none."""
    directory = "/etc/systemd/system/spoolmail-relay.service.d"
    ct.sh(f"rm -rf {directory} && mkdir -p {directory}")
    if variant is not None:
        ct.sh(f"cp /usr/share/spoolmail/relay-{variant}.conf {directory}/{variant}.conf")
    ct.systemctl("daemon-reload")


def exposure(ct: Container, unit: str, *, offline: bool = False) -> float:
    """systemd-analyze security's overall exposure for unit (running, or its files)."""
    argv = ["systemd-analyze", "security", "--no-pager"]
    if offline:
        argv.append("--offline=yes")
    result = ct.run([*argv, unit], check=False)
    for line in result.stdout.splitlines():
        if "Overall exposure level for" in line:
            return float(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no exposure in: {result!r}")
