"""Exim from Debian, started by the tests on loopback, as a real MTA to send through."""

import smtplib

import mta
import pytest

exim = mta.exim

BODY = "Grüße aus Köln — ✉\n.\n..\nFrom the last line, with a dot above.\n"


def test_delivers_utf8_body_and_dot_line_intact(exim):
    exim.clear()
    message = (
        "From: sender@pipemail.test\n"
        "To: pmtest@pipemail.test\n"
        "Subject: mta check\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n"
        "\n" + BODY
    ).encode()
    with smtplib.SMTP(exim.host, exim.port, local_hostname="client.pipemail.test", timeout=10) as smtp:
        refused = smtp.sendmail("sender@pipemail.test", ["pmtest@pipemail.test"], message.replace(b"\n", b"\r\n"))
    assert refused == {}
    [delivered] = exim.wait_for(1)
    head, _, body = delivered.partition(b"\n\n")
    # mbox escaping turns a body line "From " into ">From ".
    assert body == BODY.replace("\nFrom ", "\n>From ").encode()
    assert b"\nSubject: mta check\n" in head
    assert b"Envelope-to: pmtest@pipemail.test\n" in head


@pytest.mark.parametrize("rcpt", ["nobody@pipemail.test", "root@localhost", "pmtest@elsewhere.example"])
def test_refuses_unknown_recipient_at_rcpt(exim, rcpt):
    with smtplib.SMTP(exim.host, exim.port, local_hostname="client.pipemail.test", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.mail("sender@pipemail.test")[0] == 250
        code, reply = smtp.rcpt(rcpt)
        assert 500 <= code < 600, (code, reply)
        assert smtp.rcpt("pmtest@localhost")[0] == 250
        smtp.rset()
