"""Reading the message from standard input with sendmail's end-of-input rule."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the front milliseconds at start-up
    from typing import BinaryIO


class TooBig(Exception):
    """The message is larger than the configured limit."""


def read_message(stream: BinaryIO, ignore_dots: bool, limit: int) -> bytes:
    """Read up to EOF or, unless ignore_dots, up to a line holding only '.'.

    The terminating '.' line and anything after it are not part of the message.
    No other dot handling happens here (no unstuffing outside -bs).
    """
    if ignore_dots:
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise TooBig
        return data
    lines: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(limit + 2)
        if not line:
            break
        if line in (b".\n", b".\r\n", b".", b".\r"):
            break
        size += len(line)
        if size > limit:
            raise TooBig
        lines.append(line)
    return b"".join(lines)
