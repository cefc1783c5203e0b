"""Cleanup rules on their own: what the message looks like when it leaves."""

from __future__ import annotations

import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from spoolmail import headerblock
from spoolmail.config import from_table
from spoolmail.envelope import Envelope
from spoolmail.relay import wiresafe
from spoolmail.relay.cleanup import Cleaned, cleanup

CFG = from_table({"hostname": "host.example.org"}, None)


def clean(message: bytes, flags: str = "t", rcpts: tuple[str, ...] = (),
          sender: str | None = None, fullname: str | None = None, **cfg: object) -> Cleaned:
    config = from_table({"hostname": "host.example.org", **cfg}, None) if cfg else CFG
    env = Envelope(time=1, sender=sender, fullname=fullname, flags=flags,
                   recipients=list(rcpts))
    return cleanup(env, message, uid=1000, login="alice", cfg=config, queue_id="QID", now=1e9)


def header(result: Cleaned) -> dict[str, list[str]]:
    fields, _ = headerblock.split(result.message.replace(b"\r\n", b"\n"))
    found: dict[str, list[str]] = {}
    for f in fields:
        found.setdefault(f.lname, []).append(f.value())
    return found


def test_resent_block_wins_over_to_cc_bcc() -> None:
    msg = (b"Resent-From: bob@example.org\nResent-To: carol@example.org\n"
           b"Resent-Bcc: dave@example.org\nFrom: x@example.org\nTo: orig@example.org\n\nhi\n")
    result = clean(msg)
    assert result.recipients == ["carol@example.org", "dave@example.org"]
    assert "resent-bcc" not in header(result)


def test_groups_comments_quotes_encoded_words_and_case() -> None:
    msg = (b"TO: undisclosed-recipients:;, team: a@example.org, b@example.org;\n"
           b"CC: =?utf-8?q?Doe,_Jane?= <jane@example.org>, \"x, y\" <xy@example.org>,\n"
           b"\t(comment, with comma) c@example.org\nBCC: root\n\nbody\n")
    result = clean(msg)
    assert result.recipients == ["a@example.org", "b@example.org", "jane@example.org",
                                 "xy@example.org", "c@example.org", "root@host.example.org"]


def test_argv_and_header_recipients_are_united_without_duplicates() -> None:
    result = clean(b"To: Bob <bob@EXAMPLE.org>\n\nx\n", rcpts=("bob@example.org", "eve"))
    assert result.recipients == ["bob@example.org", "eve@host.example.org"]


def test_without_t_the_header_gives_no_recipients_but_is_qualified() -> None:
    result = clean(b"To: root\nCc: x@example.org\n\nx\n", flags="", rcpts=("ops@example.org",))
    assert result.recipients == ["ops@example.org"]
    assert header(result)["to"] == ["root@host.example.org"]


def test_admin_takes_mail_for_local_users() -> None:
    result = clean(b"To: root, bob@host.example.org, x@example.org\n\nx\n",
                   admin="ops@example.net")
    assert result.recipients == ["ops@example.net", "x@example.org"]


def test_missing_from_uses_the_sender_and_full_name() -> None:
    result = clean(b"To: x@example.org\n\nx\n", fullname="Cron Daemon, nightly")
    assert header(result)["from"] == ['"Cron Daemon, nightly" <alice@host.example.org>']
    result = clean(b"To: x@example.org\n\nx\n", sender="app@example.com")
    assert header(result)["from"] == ["app@example.com"]
    assert result.sender == "app@example.com"


def test_null_sender_stays_null() -> None:
    assert clean(b"To: x@example.org\n\nx\n", sender="").sender == ""


def test_received_names_the_uid_and_date_and_message_id_are_added_once() -> None:
    result = clean(b"To: x@example.org\nDate: Tue, 1 Sep 2020 00:00:00 +0000\n\nx\n")
    fields = header(result)
    assert "from userid 1000 alice" in fields["received"][0]
    assert fields["date"] == ["Tue, 1 Sep 2020 00:00:00 +0000"]
    assert fields["message-id"] == ["<QID@host.example.org>"]


def test_from_lines_bare_cr_and_missing_final_newline() -> None:
    result = clean(b">From x Mon\nFrom y Tue\nTo: a@example.org\r\nSubject: s\r\rbody\rend")
    assert result.message.endswith(b"\r\n\r\nbody\r\nend\r\n")
    assert b"\r\n" in result.message and b"\r\r" not in result.message
    assert b"From x" not in result.message and b"From y" not in result.message


def test_a_long_header_is_folded_at_white_space() -> None:
    words = b" ".join(b"word%d" % n for n in range(300))
    result = clean(b"To: a@example.org\nSubject: " + words + b"\n\nx\n")
    assert all(len(line) <= 998 for line in result.message.split(b"\r\n"))
    assert header(result)["subject"] == [words.decode()]


def test_long_lines_in_a_multipart_part_are_reencoded_only_there() -> None:
    long_line = b"A" * 1500
    msg = (b"To: a@example.org\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="BB"\n\n'
           b"--BB\nContent-Type: text/plain\n\nshort\n"
           b"--BB\nContent-Type: text/csv\n\n" + long_line + b"\n--BB--\n")
    result = clean(msg)
    text = result.message.replace(b"\r\n", b"\n")
    assert all(len(line) <= 998 for line in text.split(b"\n"))
    part = text.split(b"--BB\n")[2]
    assert b"Content-Transfer-Encoding: quoted-printable" in part
    body = part.split(b"\n\n", 1)[1].split(b"\n--BB--")[0]
    assert binascii.a2b_qp(body).rstrip(b"\n") == long_line
    assert b"--BB\nContent-Type: text/plain\n\nshort\n" in text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=3000).map(
    lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), min_size=1, max_size=5),
    st.booleans())
def test_make_safe_keeps_content_exact(body_lines: list[bytes], seven_bit: bool) -> None:
    lines = [b"Subject: t", b"", *body_lines]
    safe = wiresafe.make_safe(lines, seven_bit=seven_bit)
    assert all(len(line) <= 998 for line in safe)
    if seven_bit:
        assert not wiresafe.has_8bit(safe)
    head, body = wiresafe.split_entity(safe)
    cte = (wiresafe.header_value(head, b"content-transfer-encoding") or "7bit").lower()
    raw = b"\n".join(body) + b"\n"
    if cte == "quoted-printable":
        decoded = binascii.a2b_qp(raw)
    elif cte == "base64":
        decoded = binascii.a2b_base64(raw)
    else:
        decoded = raw
    assert decoded == b"\n".join(body_lines) + b"\n"


def test_a_full_name_with_a_non_ascii_sender() -> None:
    result = clean(b"To: x@example.org\n\nx\n", sender="j\u00fcrgen@example.org",
                   fullname="J\u00fcrgen M.")
    assert header(result)["from"] == ["=?utf-8?q?J=C3=BCrgen_M=2E?= <j\u00fcrgen@example.org>"]
