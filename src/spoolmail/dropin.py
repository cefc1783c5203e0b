"""Write spoolmail's client drop-in for one systemd service (`spoolmail enable-for UNIT`).

The drop-in lets a hardened service send mail through spoolmail and changes
nothing for any other process:

- ``ReadWritePaths=-SPOOL/incoming``: the one place the service may write
  (its ``ProtectSystem=strict`` leaves the rest read-only);
- ``BindReadOnlyPaths=-FRONT:/usr/sbin/sendmail`` (and ``/usr/lib/sendmail``):
  for this service only, both names run spoolmail's front, so the system MTA
  stays the system's sendmail for everyone else.

A bind onto a path that does not exist makes systemd create an empty file there
on the real file system, and leave it behind. So a bind is written only for a
path that exists under ``root`` (following symbolic links inside ``root``), and
none for a path that already is spoolmail's front. The ``-`` prefixes keep the
service starting if spoolmail is later removed or its spool is missing: the
front then explains what is wrong when the service tries to send.

Everything here is pure file work under ``root``; it neither talks to systemd
nor needs root when ``root`` is writable. The returned lines say what was done.
"""

from __future__ import annotations

import os
import re
import tomllib

DROPIN_NAME = "spoolmail-client.conf"
FRONT = "/usr/libexec/spoolmail/sendmail"
SENDMAIL_PATHS = ("/usr/sbin/sendmail", "/usr/lib/sendmail")
UNIT_DIR = "/etc/systemd/system"
UNIT_SEARCH_PATH = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
DEFAULT_SPOOL = "/var/spool/spoolmail"
CONFIG = "/etc/spoolmail/spoolmail.toml"
MAX_SYMLINKS = 40

_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.service$")


class DropinError(Exception):
    """The drop-in cannot be written; the message says why (one line)."""


def unit_name(unit: str) -> str:
    """Normalise a service name: 'mon' -> 'mon.service'; reject anything else."""
    name = unit.strip()
    if name and "." not in name.rsplit("@", 1)[-1]:
        name += ".service"
    if len(name) > 255 or not _UNIT_RE.match(name) or name.startswith("."):
        raise DropinError(
            f"{unit!r} is not a service unit name (for example: mon.service, foo@.service)"
        )
    return name


def _join(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def resolve(root: str, path: str) -> str | None:
    """Where path leads inside root (absolute links are taken relative to root).

    Returns the resolved path as seen from inside root, or None if some
    component does not exist or there are too many links.
    """
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        inside = "/" + "/".join([*done, part])
        host = _join(root, inside)
        try:
            target = os.readlink(host)
        except FileNotFoundError:
            return None
        except OSError:  # not a link (EINVAL) or not a directory on the way
            if not os.path.lexists(host):
                return None
            done.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            return None
        if target.startswith("/"):
            done = []
        pending = [p for p in target.split("/") if p] + pending
    return "/" + "/".join(done)


def configured_spool(root: str = "/") -> str:
    """The spool directory named in root's spoolmail.toml, else the default."""
    path = _join(root, CONFIG)
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        return DEFAULT_SPOOL
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DropinError(f"cannot read {CONFIG}: {exc}") from exc
    spool = values.get("spool", DEFAULT_SPOOL)
    if not isinstance(spool, str) or not spool.startswith("/"):
        raise DropinError(f"{CONFIG}: spool must be an absolute path")
    return spool.rstrip("/") or "/"


def find_unit(unit: str, root: str = "/") -> str | None:
    """The unit file systemd would load for unit under root, if any."""
    names = [unit]
    if "@" in unit and not unit.endswith("@.service"):
        names.append(unit.split("@", 1)[0] + "@.service")
    for name in names:
        for directory in UNIT_SEARCH_PATH:
            candidate = os.path.join(directory, name)
            if os.path.lexists(_join(root, candidate)):
                return candidate
    return None


def render(unit: str, incoming: str, binds: list[str]) -> str:
    lines = [
        f"# Written by 'spoolmail enable-for {unit}'; run it again to refresh,",
        f"# 'spoolmail disable-for {unit}' (or delete this file) to undo.",
        f"# {unit} sends mail through spoolmail: it may add files to {incoming}",
        "# and, for this service only, sendmail is spoolmail's front.",
        "[Service]",
        f"ReadWritePaths=-{incoming}",
    ]
    lines += [f"BindReadOnlyPaths=-{FRONT}:{target}" for target in binds]
    return "\n".join(lines) + "\n"


def dropin_path(unit: str) -> str:
    return os.path.join(UNIT_DIR, unit + ".d", DROPIN_NAME)


def enable_for(unit: str, *, root: str = "/", spool: str | None = None) -> list[str]:
    """Write the client drop-in for unit under root; return what was done, line by line."""
    name = unit_name(unit)
    if resolve(root, FRONT) is None:
        raise DropinError(f"spoolmail's sendmail front is not installed at {FRONT}")
    incoming = os.path.join(spool or configured_spool(root), "incoming")
    report: list[str] = []
    binds: list[str] = []
    front = resolve(root, FRONT)
    for path in SENDMAIL_PATHS:
        target = resolve(root, path)
        if target is None:
            how = "is a dangling link" if os.path.lexists(_join(root, path)) else "does not exist"
            report.append(
                f"{path}: left alone: it {how} here, and a bind onto a missing path would "
                f"create an empty file there; {name} must call the other name"
            )
        elif target == front:
            report.append(f"{path}: already spoolmail's front, no bind needed")
        elif not os.path.isfile(_join(root, target)):
            report.append(f"{path}: left alone: {target} is not a regular file")
        else:
            binds.append(path)
            shown = path if target == path else f"{path} (-> {target})"
            report.append(f"{shown}: runs spoolmail's front for {name} only (BindReadOnlyPaths=)")
    if not binds and all(resolve(root, p) != front for p in SENDMAIL_PATHS):
        raise DropinError(
            "neither /usr/sbin/sendmail nor /usr/lib/sendmail exists here, so there is "
            "nothing to bind spoolmail's front onto; install spoolmail-mta (spoolmail as the "
            f"system's sendmail) or let {name} call {FRONT} directly"
        )
    content = render(name, incoming, binds)
    path = dropin_path(name)
    host_path = _join(root, path)
    try:
        with open(host_path, encoding="utf-8") as f:
            unchanged = f.read() == content
    except OSError:
        unchanged = False
    if unchanged:
        report.insert(0, f"{path}: already up to date")
    else:
        os.makedirs(os.path.dirname(host_path), mode=0o755, exist_ok=True)
        temp = host_path + ".tmp"
        with open(temp, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(temp, 0o644)
        os.replace(temp, host_path)
        report.insert(0, f"wrote {path}")
    report.insert(1, f"{name} may add new mail to {incoming} (ReadWritePaths=)")
    if find_unit(name, root) is None:
        report.append(
            f"note: no unit file for {name} was found; the drop-in applies once it exists"
        )
    report.append(f"next: systemctl daemon-reload && systemctl restart {name}")
    return report


def disable_for(unit: str, *, root: str = "/") -> list[str]:
    """Remove the client drop-in written by enable_for; return what was done."""
    name = unit_name(unit)
    path = dropin_path(name)
    host_path = _join(root, path)
    try:
        os.unlink(host_path)
    except FileNotFoundError:
        return [f"{path}: not there, nothing to do"]
    report = [f"removed {path}"]
    directory = os.path.dirname(host_path)
    try:
        os.rmdir(directory)
        report.append(f"removed the now empty {os.path.dirname(path)}")
    except OSError:
        pass
    report.append(f"next: systemctl daemon-reload && systemctl restart {name}")
    return report
