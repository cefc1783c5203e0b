"""The front's start-up stays light: no heavy module is imported on the normal path.

Times are measured by bench/front_latency, not here; this checks which modules
load (`python -X importtime`), which does not depend on the machine's speed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.front import PYTHON, make_spool

# Heavy for a program started once per message, or a sign of a wrong dependency.
FORBIDDEN = {"click", "email", "asyncio", "json", "tomllib", "typing", "re", "logging",
             "subprocess", "socket", "ssl", "aiosmtplib", "watchdog", "spoolmail.config",
             "spoolmail.relay", "argparse", "dataclasses", "enum", "contextlib"}
RUN_MAIN = "import sys\nfrom spoolmail.sendmail.main import main\nsys.exit(main())"


def imported(tmp_path: Path, args: list[str], stdin: bytes, config: str) -> set[str]:
    spool = make_spool(tmp_path)
    (tmp_path / "spoolmail.toml").write_text(config)
    env = {"PATH": "/usr/bin:/bin", "SPOOLMAIL_SPOOL": str(spool),
           "SPOOLMAIL_CONFIG": str(tmp_path / "spoolmail.toml"), "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([PYTHON, "-c", RUN_MAIN, *args], input=stdin, capture_output=True,
                          env=env)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode in (0, 64), lines[-3:]
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


@pytest.mark.parametrize(
    ("args", "stdin"),
    [(["-t", "-i"], b"To: a@example.org, b@example.org\n\nbody\n"),
     (["-oi", "-f", "<>", "a@example.org"], b"body\n"),
     (["-q"], b""),
     (["-Z"], b"")],
)
@pytest.mark.parametrize("config", ["", '# site\nspool = "/ignored"\nmin_free_space = 0\n'])
def test_normal_paths_import_nothing_heavy(
    tmp_path: Path, args: list[str], stdin: bytes, config: str
) -> None:
    modules = imported(tmp_path, args, stdin, config)
    assert "spoolmail.sendmail.main" in modules
    heavy = {m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
    assert heavy == set()
