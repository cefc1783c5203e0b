"""Skip on a developer machine that lacks a tool; fail in CI (CI=true)."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Skip with reason, or fail when CI must run everything."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_program(name: str, package: str) -> str:
    """Return the path of an external program, or skip/fail naming its package."""
    for directory in ("", "/usr/sbin/", "/sbin/"):
        path = shutil.which(directory + name) if directory else shutil.which(name)
        if path:
            return path
    missing(f"{name} is not installed (Debian package {package})")
    raise AssertionError("unreachable")


def require_root(reason: str) -> None:
    if os.geteuid() != 0:
        missing(f"needs root: {reason}")
