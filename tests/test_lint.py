"""The message lint (tests/lint.py) catches each thing it is for, and the aiosmtpd fixture applies it."""

import smtplib

import lint
import pytest

GOOD = (
    b"Date: Thu, 03 Dec 2026 08:00:00 +0000\n"
    b"Message-ID: <1@example.org>\n"
    b"From: a@example.org\n"
    b"To: b@example.org\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Gr\xc3\xbc\xc3\x9fe\n"
)


def bad(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


def test_a_clean_message_passes_with_lf_or_crlf():
    lint.lint(GOOD)
    lint.lint(GOOD.replace(b"\n", b"\r\n"))
    lint.lint(bad(b"To: b@example.org\n", "To: Jos\u00e9 <jos\u00e9@example.org>\n".encode()))  # RFC 6532


@pytest.mark.parametrize(
    "raw, reason",
    [
        (bad(b"Gr\xc3\xbc\xc3\x9fe\n", b"x" * 999 + b"\n"), "line 10 is 999 bytes long (at most 998)"),
        (bad(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", b"Subject: " + b"word " * 20), "could be folded"),
        (
            bad(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", b"Subject: =?utf-8?q?" + b"a" * 70 + b"?="),
            "encoded word of 82",
        ),
        (bad(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n", b"Subject: x\n \n"), "holds only white space"),
        (bad(b"charset=utf-8", b"format=flowed"), "text/plain without a charset"),
        (bad(b"Date: Thu, 03 Dec 2026 08:00:00 +0000\n", b""), "no Date header"),
        (bad(b"Message-ID: <1@example.org>\n", b""), "no Message-ID header"),
        (bad(b"To: b@example.org", b"To: <b@example.org"), "missing trailing '>' on angle-addr"),
        (bad(b"To: b@example.org", b"To: pmtest"), "addr-spec local part with no domain"),
        (bad(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", b"Subject: Gr\xfc\xdfe"), "not ASCII or UTF-8"),
        (bad(b"From: a@example.org\n", b"From a@example.org\n"), "header line 3 is not 'Name: value'"),
        (bad(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", b"Subject: Gr\xc3\xbc\xc3\x9fe"), "(subject) holds 8-bit text"),
        (bad(b"Content-Transfer-Encoding: 8bit\n", b"Content-Transfer-Encoding: 7bit\n"), "8-bit bytes in a 7bit part"),
        (bad(b"Content-Transfer-Encoding: 8bit\n", b""), "8-bit bytes in a 7bit part"),
    ],
)
def test_each_fault_is_caught_with_its_reason(raw, reason):
    with pytest.raises(AssertionError, match=None) as info:
        lint.lint(raw)
    assert reason in str(info.value)


def test_a_part_without_a_boundary_end_is_a_defect():
    raw = bad(
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9fe\n",
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain; charset=us-ascii\n\nx\n',
    )
    with pytest.raises(AssertionError, match="StartBoundaryNotFound|CloseBoundaryNotFound|defect"):
        lint.lint(raw)


def test_the_smtp_fixture_records_what_fails_the_lint(smtp_server):
    srv = smtp_server()
    with smtplib.SMTP(srv.host, srv.port, timeout=10) as smtp:
        smtp.sendmail("a@example.org", ["b@example.org"], bad(b"Date: Thu, 03 Dec 2026 08:00:00 +0000\n", b""))
        smtp.sendmail("a@example.org", ["c@example.org"], GOOD)
    assert srv.lint_failures == [(["b@example.org"], "no Date header")]
    srv.lint_failures.clear()  # else the fixture fails this test at teardown, as it should any other
    quiet = smtp_server(lint=False)
    with smtplib.SMTP(quiet.host, quiet.port, timeout=10) as smtp:
        smtp.sendmail("a@example.org", ["b@example.org"], bad(b"Date: Thu, 03 Dec 2026 08:00:00 +0000\n", b""))
    assert quiet.lint_failures == [] and len(quiet.messages) == 1
