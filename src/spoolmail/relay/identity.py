"""Who submitted a spool file: the file's owner uid, never the envelope's claims."""

from __future__ import annotations

import pwd


def login_for_uid(uid: int) -> str:
    """The login name of uid, or a stable fallback when it has none.

    A DynamicUser= unit that has stopped, or a container with its own passwd,
    leaves a uid without a name. The fallback "uid-N" is used only if no other
    uid owns that name, so a name never stands for a different uid.
    """
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        pass
    fallback = f"uid-{uid}"
    try:
        if pwd.getpwnam(fallback).pw_uid != uid:
            return f"uid-{uid}-unnamed"
    except KeyError:
        pass
    return fallback
