"""Start-up cost of the sendmail front against a bare interpreter, paired.

The code behind the executable bench/front_latency (kept as a .py module so
that ruff and mypy --strict check it).

Runs, interleaved in one process and alternating the order within each pair:
  (a) the installed console script `spoolmail-sendmail -t` with a 2 KB message
      into a throw-away spool, and
  (b) `python -c pass` of the same interpreter and environment,
then prints both medians and their ratio (target: <= 1.3), followed by the
imports the front adds to a bare start (from `python -X importtime`).

Usage: bench/front_latency [--pairs N] [--top N]
Run it with the project's interpreter (`./dev bench` does): the front and the
baseline are both taken from the directory of sys.executable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.3
DIRECT = "import sys\nfrom spoolmail.sendmail.main import main\nsys.exit(main())"
MESSAGE_SIZE = 2048


def build_message(size: int) -> bytes:
    head = (
        b"From: bench@example.org\n"
        b"To: alice@example.org, bob@example.org\n"
        b"Subject: front latency benchmark\n"
        b"\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again.\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 1] + b"\n"
    return head + body


def run(cmd: list[str], stdin_path: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall time of one run, and its stderr; exits the bench if the command fails."""
    with open(stdin_path, "rb") as stdin:
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        elapsed = time.perf_counter() - start
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        sys.exit(f"front_latency: {' '.join(cmd)} exited {proc.returncode}: {stderr.strip()}")
    return elapsed, stderr


def clear(directory: Path) -> None:
    for entry in directory.iterdir():
        entry.unlink()


def interleaved_medians(
    commands: list[list[str]], stdin_path: Path, env: dict[str, str], rounds: int,
    incoming: Path,
) -> list[float]:
    """Median wall time of each command, run once per round in a rotating order."""
    for _ in range(5):  # warm the page cache and the __pycache__ files
        for cmd in commands:
            run(cmd, stdin_path, env)
    times: list[list[float]] = [[] for _ in commands]
    for i in range(rounds):
        for k in range(len(commands)):
            j = (i + k) % len(commands)
            times[j].append(run(commands[j], stdin_path, env)[0])
        if i % 50 == 49:
            clear(incoming)
    return [statistics.median(t) for t in times]


def parse_importtime(stderr: str) -> dict[str, tuple[int, int, int]]:
    """Module name -> (self µs, cumulative µs, nesting depth) from -X importtime."""
    found: dict[str, tuple[int, int, int]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        found[name.strip()] = (int(self_us), int(cumulative), depth)
    return found


def print_imports(
    front: list[str], bare: list[str], stdin_path: Path, env: dict[str, str], top: int
) -> None:
    timed_env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    baseline = parse_importtime(run(bare, stdin_path, timed_env)[1])
    imports = parse_importtime(run(front, stdin_path, timed_env)[1])
    extra = {name: t for name, t in imports.items() if name not in baseline}
    print(f"\nimports the front adds to a bare start ({len(extra)} modules, "
          f"{sum(t[0] for t in extra.values()) / 1000:.1f} ms self time under importtime):")
    print(f"  {'self ms':>8} {'cum ms':>8}  module")
    ranked = sorted(extra.items(), key=lambda item: item[1][1], reverse=True)
    for name, (self_us, cumulative, depth) in ranked[:top]:
        print(f"  {self_us / 1000:8.2f} {cumulative / 1000:8.2f}  {'  ' * depth}{name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=200,
                        help="rounds of interleaved runs (default 200)")
    parser.add_argument("--top", type=int, default=15, help="imports to list (default 15)")
    opts = parser.parse_args()
    bindir = Path(sys.executable).parent
    front_script = bindir / "spoolmail-sendmail"
    if not os.access(front_script, os.X_OK):
        sys.exit(f"front_latency: {front_script} is not installed; run ./dev test once")
    python = str(bindir / Path(sys.executable).name)
    front = [str(front_script), "-t"]
    bare = [python, "-c", "pass"]
    # For reference: the same front without the console-script wrapper, whose
    # generated code imports `re` (pip/distlib template) before the front starts.
    direct = [python, "-c", DIRECT, "-t"]
    with tempfile.TemporaryDirectory(prefix="front-latency-") as tmp:
        spool = Path(tmp) / "spool"
        incoming = spool / "incoming"
        incoming.mkdir(parents=True)
        stdin_path = Path(tmp) / "message.eml"
        stdin_path.write_bytes(build_message(MESSAGE_SIZE))
        env = {
            **os.environ,
            "SPOOLMAIL_SPOOL": str(spool),
            "SPOOLMAIL_CONFIG": str(Path(tmp) / "absent.toml"),
        }
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        # An installed front runs from compiled bytecode (Debian byte-compiles on
        # install); let the warm-up runs write the __pycache__ files it needs.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        front_median, bare_median, direct_median = interleaved_medians(
            [front, bare, direct], stdin_path, env, opts.pairs, incoming
        )
        ratio = front_median / bare_median
        verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
        print(f"front ({' '.join(front)} < {MESSAGE_SIZE} B): median {front_median * 1000:.2f} ms")
        print(f"bare  ({' '.join(bare)}): median {bare_median * 1000:.2f} ms")
        print(f"ratio {ratio:.2f} (target <= {TARGET_RATIO}, {verdict}; {opts.pairs} rounds)")
        print(f"reference: the front's main() without the console-script wrapper: median "
              f"{direct_median * 1000:.2f} ms, ratio {direct_median / bare_median:.2f}")
        print_imports(front, bare, stdin_path, env, opts.top)
    return 0
