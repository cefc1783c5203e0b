"""RFC 5322 address lists: find each mailbox's addr-spec and where it sits.

A small hand-written scanner rather than `email.utils`, because
`getaddresses()` turns an empty group into a blank address, re-renders what it
does not understand, and costs the front its start-up time. Positions are kept
so that cleanup can qualify a bare local part by inserting "@domain" without
re-rendering the rest of the field (comments and display names survive).
"""

from __future__ import annotations

SPECIALS = "()<>[]:;@\\,.\""
WSP = " \t\r\n"


class Token:
    __slots__ = ("end", "kind", "start", "text")

    def __init__(self, kind: str, text: str, start: int, end: int) -> None:
        self.kind = kind  # "atom", "quoted", "literal", or the special character itself
        self.text = text
        self.start = start
        self.end = end


class Mailbox:
    """One address found in a field: the addr-spec and where its local part ends."""

    __slots__ = ("domain", "insert_at", "local")

    def __init__(self, local: str, domain: str, insert_at: int) -> None:
        self.local = local
        self.domain = domain
        self.insert_at = insert_at

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local

    def __repr__(self) -> str:
        return f"Mailbox({self.address!r})"


def _skip_nested(text: str, i: int, close: str) -> int:
    """From the opening char at i, return the index past its matching close."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "(" and close == ")":
            depth += 1
        elif c == close:
            depth -= 1
            if depth <= 0:
                return i + 1
        elif c == '"' and close == '"' and depth == 0:
            depth = 1
        i += 1
    return n


def _encoded_word_end(text: str, i: int) -> int:
    """If an RFC 2047 encoded-word starts at i, return its end, else -1."""
    if not text.startswith("=?", i):
        return -1
    q1 = text.find("?", i + 2)
    if q1 < 0 or q1 + 2 >= len(text) or text[q1 + 2] != "?":
        return -1
    close = text.find("?=", q1 + 3)
    if close < 0:
        return -1
    word = text[i : close + 2]
    if any(c in WSP for c in word):
        return -1
    return close + 2


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in WSP:
            i += 1
        elif c == "(":
            i = _skip_nested(text, i, ")")
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            tokens.append(Token("quoted", text[i:j], i, j))
            i = j
        elif c == "[":
            j = text.find("]", i)
            j = n if j < 0 else j + 1
            tokens.append(Token("literal", text[i:j], i, j))
            i = j
        elif c in SPECIALS:
            tokens.append(Token(c, c, i, i + 1))
            i += 1
        else:
            j = _encoded_word_end(text, i)
            if j < 0:
                j = i
                while j < n and text[j] not in SPECIALS and text[j] not in WSP:
                    j += 1
            tokens.append(Token("atom", text[i:j], i, j))
            i = j
    return tokens


def _mailbox(tokens: list[Token]) -> Mailbox | None:
    if not tokens:
        return None
    opens = [k for k, t in enumerate(tokens) if t.kind == "<"]
    if opens:
        start = opens[-1] + 1
        close = next((k for k in range(start, len(tokens)) if tokens[k].kind == ">"), len(tokens))
        spec = tokens[start:close]
        colon = [k for k, t in enumerate(spec) if t.kind == ":"]
        if colon:  # obsolete source route <@a,@b:user@c>
            spec = spec[colon[-1] + 1 :]
    else:
        spec = tokens
    if not spec:
        return None
    at = [k for k, t in enumerate(spec) if t.kind == "@"]
    if at:
        local_tokens, domain_tokens = spec[: at[-1]], spec[at[-1] + 1 :]
    else:
        local_tokens, domain_tokens = spec, []
    local = "".join(t.text for t in local_tokens)
    domain = "".join(t.text for t in domain_tokens)
    if not local:
        return None
    return Mailbox(local, domain, local_tokens[-1].end)


def parse(text: str) -> list[Mailbox]:
    """Every mailbox in an address-list field value; groups contribute their members."""
    result: list[Mailbox] = []
    current: list[Token] = []
    angle = 0
    in_group = False

    def flush() -> None:
        box = _mailbox(current)
        if box is not None:
            result.append(box)
        current.clear()

    for tok in tokenize(text):
        if tok.kind == "<":
            angle += 1
        elif tok.kind == ">":
            angle = max(0, angle - 1)
        elif angle == 0 and tok.kind == ":" and not in_group:
            current.clear()  # the group's display name
            in_group = True
            continue
        elif angle == 0 and tok.kind == ";" and in_group:
            flush()
            in_group = False
            continue
        elif angle == 0 and tok.kind == ",":
            flush()
            continue
        current.append(tok)
    flush()
    return result


def addresses(text: str) -> list[str]:
    return [box.address for box in parse(text)]


def strip_angles(addr: str) -> str:
    """'<a@b>' -> 'a@b', '<>' -> '' (how callers write -f and RCPT arguments)."""
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        return addr[1:-1].strip()
    return addr
