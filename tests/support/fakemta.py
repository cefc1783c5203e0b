"""A command for the command transport that records each call and exits as told.

Calls are numbered from 1; call N writes DIR/N.argv (one argument per line) and
DIR/N.msg (stdin), then exits with the Nth code of DIR/codes (the last code for
every later call; 0 when the file is missing). Used as:
    argv = [sys.executable, fakemta.__file__, DIR, "-f", "{sender}", "--", "{recipients}"]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    directory = Path(sys.argv[1])
    number = len(list(directory.glob("*.argv"))) + 1
    while True:  # the relay runs several deliveries at once: claim a number atomically
        try:
            fd = os.open(directory / f"{number}.argv", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            number += 1
    (directory / f"{number}.msg").write_bytes(sys.stdin.buffer.read())
    os.write(fd, ("\n".join(sys.argv[2:]) + "\n").encode())
    os.close(fd)
    codes_file = directory / "codes"
    codes = codes_file.read_text().split() if codes_file.exists() else ["0"]
    return int(codes[min(number, len(codes)) - 1])


if __name__ == "__main__":
    sys.exit(main())
