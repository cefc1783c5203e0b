"""Make a message legal on the wire without corrupting it.

Lines over 998 octets (RFC 5322 s2.1.1) and, for a server without 8BITMIME,
8-bit bytes are fixed by re-encoding the MIME leaf part that holds them
(quoted-printable for text, base64 otherwise), so that the decoded content is
byte-for-byte what was submitted. Messages are handled as lists of lines
without line terminators.
"""

from __future__ import annotations

import base64
import binascii

MAX_LINE = 998
# Deeper MIME nesting is left as it is rather than recursed into (no real
# message nests this deep; a hostile one must not exhaust the stack).
MAX_DEPTH = 40
QP_SAFE = {"quoted-printable", "base64"}


class CannotEncode(Exception):
    """The message cannot be made 7-bit safely (e.g. raw 8-bit header fields)."""


Lines = list[bytes]


def has_8bit(lines: Lines) -> bool:
    return any(max(line, default=0) >= 0x80 for line in lines)


def has_long(lines: Lines) -> bool:
    return any(len(line) > MAX_LINE for line in lines)


def split_entity(lines: Lines) -> tuple[Lines, Lines]:
    """Header lines and body lines of a MIME entity (the blank line is dropped)."""
    for i, line in enumerate(lines):
        if not line:
            return lines[:i], lines[i + 1 :]
        if i == 0 and line[:1] in (b" ", b"\t"):
            break
        if line[:1] not in (b" ", b"\t") and b":" not in line:
            return lines[:i], lines[i:]
    if all(b":" in line or line[:1] in (b" ", b"\t") for line in lines):
        return lines, []
    return [], lines


def _fields(header: Lines) -> list[Lines]:
    fields: list[Lines] = []
    for line in header:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def _field_name(field: Lines) -> bytes:
    return field[0].split(b":", 1)[0].strip().lower()


def _field_value(field: Lines) -> str:
    text = b" ".join(line.strip() for line in field).split(b":", 1)
    return text[1].strip().decode("ascii", "replace") if len(text) > 1 else ""


def header_value(header: Lines, name: bytes) -> str | None:
    for field in _fields(header):
        if _field_name(field) == name:
            return _field_value(field)
    return None


def content_type(header: Lines) -> tuple[str, dict[str, str]]:
    value = header_value(header, b"content-type")
    if not value:
        return "text/plain", {}
    kind, *params = _split_params(value)
    result: dict[str, str] = {}
    for param in params:
        key, _, val = param.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        result[key.strip().lower()] = val
    return kind.strip().lower() or "text/plain", result


def _split_params(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _replace_cte(header: Lines, cte: bytes) -> Lines:
    fields = [f for f in _fields(header) if _field_name(f) != b"content-transfer-encoding"]
    fields.append([b"Content-Transfer-Encoding: " + cte])
    return [line for field in fields for line in field]


def _encode_leaf(header: Lines, body: Lines, top: bool) -> tuple[Lines, Lines]:
    kind, _ = content_type(header)
    raw = b"\n".join(body) + (b"\n" if body else b"")
    if kind.startswith("text/"):
        encoded = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
        cte = b"quoted-printable"
    else:
        encoded = base64.encodebytes(raw)
        cte = b"base64"
    new_body = encoded.split(b"\n")
    if new_body and new_body[-1] == b"":
        new_body.pop()
    header = _replace_cte(header, cte)
    if top:
        if header_value(header, b"content-type") is None:
            charset = b"utf-8"
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                charset = b"unknown-8bit"
            if not has_8bit(body):
                charset = b"us-ascii"
            header.append(b"Content-Type: text/plain; charset=" + charset)
        if header_value(header, b"mime-version") is None:
            header.append(b"MIME-Version: 1.0")
    return header, new_body


def _rewrap_qp(body: Lines) -> Lines:
    out: Lines = []
    for line in body:
        while len(line) > 76:
            cut = 75
            # never split an =XX escape
            eq = line.rfind(b"=", cut - 2, cut)
            if eq >= 0:
                cut = eq
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return out


def _rewrap_base64(body: Lines) -> Lines:
    data = b"".join(line.strip() for line in body)
    return [data[i : i + 76] for i in range(0, len(data), 76)]


def _fix_entity(lines: Lines, seven_bit: bool, top: bool, depth: int = 0) -> Lines:
    header, body = split_entity(lines)
    if seven_bit and has_8bit(header):
        raise CannotEncode("8-bit characters in a header field and the server lacks 8BITMIME")
    kind, params = content_type(header)
    cte = (header_value(header, b"content-transfer-encoding") or "7bit").lower()
    if kind.startswith(("multipart/", "message/")):
        # RFC 2045 s6.4: a composite type is never encoded itself; its parts are
        # (down to MAX_DEPTH; deeper nesting is left as it is).
        if depth >= MAX_DEPTH:
            return [*header, b"", *body]
        if kind.startswith("multipart/") and params.get("boundary"):
            body = _fix_multipart(body, params["boundary"].encode("utf-8", "replace"),
                                  seven_bit, depth + 1)
        elif kind == "message/rfc822" and (has_long(body) or (seven_bit and has_8bit(body))):
            body = _fix_entity(body, seven_bit, top=False, depth=depth + 1)
            if cte in ("8bit", "binary") and not has_8bit(body):
                header = _replace_cte(header, b"7bit")
    elif has_long(body) or (seven_bit and has_8bit(body)):
        if cte == "quoted-printable" and not has_8bit(body):
            body = _rewrap_qp(body)
        elif cte == "base64" and not has_8bit(body):
            body = _rewrap_base64(body)
        else:
            header, body = _encode_leaf(header, body, top)
    return [*header, b"", *body] if header or not top else [b"", *body]


def _fix_multipart(body: Lines, boundary: bytes, seven_bit: bool, depth: int) -> Lines:
    delimiter = b"--" + boundary
    marks = [i for i, line in enumerate(body) if line.rstrip(b" \t").startswith(delimiter)
             and line.rstrip(b" \t") in (delimiter, delimiter + b"--")]
    if not marks:
        return body
    out: Lines = list(body[: marks[0]])
    for n, start in enumerate(marks):
        out.append(body[start])
        end = marks[n + 1] if n + 1 < len(marks) else len(body)
        part = body[start + 1 : end]
        if body[start].rstrip(b" \t") == delimiter and n + 1 < len(marks):
            out.extend(_fix_entity(part, seven_bit, top=False, depth=depth))
        else:
            out.extend(part)  # the epilogue after the closing delimiter
    return out


def make_safe(lines: Lines, seven_bit: bool) -> Lines:
    """Return lines that are legal on the wire; raises CannotEncode."""
    if not has_long(lines) and not (seven_bit and has_8bit(lines)):
        return lines
    fixed = _fix_entity(lines, seven_bit, top=True)
    if seven_bit and has_8bit(fixed):
        raise CannotEncode("8-bit data in a part that cannot be re-encoded")
    return fixed
