"""The test SMTP server itself: a server with a raised size limit reads DATA in one piece
(smtp_server._bulk_data), and must answer and receive exactly what aiosmtpd's own smtp_DATA does."""

import socket

import pytest

LINES = [b"x" * n + b"\r\n" for n in (0, 1, 2, 5)]
CASES = [
    b".\r\n",
    b"x\r\n.\r\n",
    b".x\r\n.\r\n",
    b"..\r\n.\r\n",
    b"a\r\n..\r\n.b\r\nc\n.\r\nd\r.\r\n.\r\n",
    b"\r\n.\r\n",
    b"\r\n\r\n.\r\n",
    (b"z" * 70 + b"\r\n") * 30 + b".\r\n",
    (b"z" * 70 + b"\r\n") * 30 + b"q" * 1200 + b"\r\n.\r\n",
    b"q" * 1200 + b"\r\n" + (b"z" * 70 + b"\r\n") * 30 + b".\r\n",
    *[head + b"y" * m + b"\r\n.\r\n" for head in LINES for m in (998, 999, 1000, 1001, 1002, 1003)],
    *[b"a" * k + b"\r\n" + b"y" * m + b"\r\n.\r\n" for k in (996, 998, 999) for m in (999, 1000, 1001, 1002)],
]


def session(port, bodies):
    """Send every body in one SMTP session, the next MAIL pipelined after it; the replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rb")

        def reply():
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            return b"".join(lines)

        said = [reply()]
        s.sendall(b"EHLO x\r\n")
        said.append(reply())
        s.sendall(b"MAIL FROM:<a@b>\r\n")
        for body in bodies:
            said.append(reply())
            s.sendall(b"RCPT TO:<c@d>\r\n")
            said.append(reply())
            s.sendall(b"DATA\r\n")
            said.append(reply())
            s.sendall(body + b"MAIL FROM:<a@b>\r\n")
            said.append(reply())
        said.append(reply())
        s.sendall(b"QUIT\r\n")
        said.append(reply())
    return said


@pytest.mark.parametrize("size", [1000, 1001, 1003, 1 << 20])
def test_bulk_data_answers_and_receives_as_aiosmtpd_does(smtp_server, size):
    lines = smtp_server(size=size, lint=False)
    bulk = smtp_server(size=size, lint=False)
    assert not lines.bulk
    bulk.bulk = True  # what a size over 32 MiB turns on
    said = session(lines.port, CASES)
    assert session(bulk.port, CASES) == said
    assert bulk.messages == lines.messages and len(lines.messages) >= 7
    verdicts = {reply[:3] for reply in said}
    assert {b"250", b"500"} <= verdicts and (b"552" in verdicts) == (size < 1 << 20)
