"""Split a submitted message into its header fields and body, without `email`.

Both the front (for the `-t` recipient check) and the relay's cleanup use this,
so that they agree on where the header ends and which fields it holds.
"""

from __future__ import annotations

RECIPIENT_FIELDS = ("to", "cc", "bcc")
RESENT_RECIPIENT_FIELDS = ("resent-to", "resent-cc", "resent-bcc")


class Field:
    """One header field: its name as written and its raw bytes (with folding)."""

    __slots__ = ("name", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        self.name = name
        self.raw = raw

    @property
    def lname(self) -> str:
        return self.name.lower()

    def value(self) -> str:
        """The unfolded value, decoded as UTF-8 (undecodable bytes kept as surrogates)."""
        text = self.raw.decode("utf-8", "surrogateescape")
        text = text.split(":", 1)[1] if ":" in text else ""
        return text.replace("\r\n", "\n").replace("\r", "").replace("\n", "").strip()

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.raw!r})"


def _is_field_start(line: bytes) -> int:
    """Return the length of the field name if line starts a header field, else 0."""
    colon = line.find(b":")
    if colon <= 0:
        return 0
    name = line[:colon].rstrip(b" \t")
    if not name or not all(33 <= c <= 126 and c != 58 for c in name):
        return 0
    return len(name)


def skip_from_lines(data: bytes) -> int:
    """Offset past leading mbox 'From ' lines (also '>From ', as Postfix drops them)."""
    pos = 0
    while True:
        line_start = pos
        while data.startswith(b">", pos):
            pos += 1
        if not data.startswith(b"From ", pos):
            return line_start
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        pos = nl + 1


def split(data: bytes) -> tuple[list[Field], int]:
    """Parse the header fields at the start of data (after any From_ lines).

    Returns the fields and the offset where the body starts (past the blank
    separator line when there is one). A line that is neither a field nor a
    continuation ends the header; it belongs to the body.
    """
    pos = skip_from_lines(data)
    fields: list[Field] = []
    start = -1
    name = ""
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        line = data[pos:end]
        if line in (b"\n", b"\r\n", b"\r"):
            if start >= 0:
                fields.append(Field(name, data[start:pos]))
            return fields, end
        if line[:1] in (b" ", b"\t") and start >= 0:
            pos = end
            continue
        name_len = _is_field_start(line)
        if not name_len:
            break
        if start >= 0:
            fields.append(Field(name, data[start:pos]))
        start = pos
        name = line[:name_len].decode("ascii")
        pos = end
    if start >= 0:
        fields.append(Field(name, data[start:pos]))
    return fields, pos


def recipient_fields(fields: list[Field]) -> list[Field]:
    """The fields that -t reads: the topmost Resent-* block's, else To/Cc/Bcc."""
    first_resent = next((i for i, f in enumerate(fields) if f.lname.startswith("resent-")), None)
    if first_resent is None:
        return [f for f in fields if f.lname in RECIPIENT_FIELDS]
    block: list[Field] = []
    for f in fields[first_resent:]:
        if not f.lname.startswith("resent-"):
            break
        if f.lname in RESENT_RECIPIENT_FIELDS:
            block.append(f)
    return block
