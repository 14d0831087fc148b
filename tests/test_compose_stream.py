"""pymail's composer as a stream: byte-identical to the in-memory composer it replaced, whatever
the chunk size (lines starting with '.' or 'From ' at every offset around a chunk boundary, CRLF
split across reads, 57-byte groups cut anywhere, no final newline), sizes computed without making
the message equal to the sizes of what is made, and a source that changed refused when read."""

import binascii
import os
import random

import compose_cases as cc
import pytest

from pipemail import message
from pipemail.errors import ChangedError

from conftest import DATA

CHUNKS = [message.CHUNK, 4096, 1000, 57 * 3 + 1, 64, 7, 1]


# The in-memory encoders of pipemail before streaming (pipemail/message.py at 6815c53), the reference.
def old_quoted_printable(data):
    out = []
    for line in data.split(b"\n"):
        enc = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False)
        if enc == b".":
            enc = b"=2E"
        elif enc.startswith(b"From "):
            enc = b"=46" + enc[1:]
        out.append(enc)
    text = b"\n".join(out)
    if data and not data.endswith(b"\n"):
        text += b"=\n"
    return text


def old_base64_lines(data):
    return b"".join(binascii.b2a_base64(data[i : i + 57]) for i in range(0, len(data), 57))


@pytest.fixture
def chunk(request, monkeypatch):
    monkeypatch.setattr(message, "CHUNK", request.param)
    monkeypatch.setattr(message, "_B64_GROUPS", max(1, request.param // 57 // 3))  # base64 cut within a chunk too
    return request.param


def file_source(tmp_path, data, name="src"):
    path = tmp_path / name
    path.write_bytes(data)
    return message.open_attachment(path)


def around_boundaries(size, lead):
    """Lines of ``lead`` starting at every offset from size - 8 to size + 8 (and twice that)."""
    out = []
    for base in (size, 2 * size):
        for off in range(max(0, base - 8), base + 9):
            out.append(b"a" * off + b"\n" + lead + b"x\n")
            out.append(b"b" * off + b"\n" + lead + b"\n")
    return out


@pytest.mark.parametrize("chunk", CHUNKS, indirect=True)
@pytest.mark.parametrize("lead", [b".", b"..", b"From ", b"From", b"\r", b"=", b" "])
def test_quoted_printable_is_the_old_one_at_every_chunk_boundary(chunk, lead, tmp_path):
    for data in around_boundaries(min(chunk, 4096), lead):
        for variant in (data, data[:-1], b"\xc3\xa9" + data, data + b"y" * 1200):
            want = old_quoted_printable(variant)
            assert b"".join(message.QuotedPrintable(message.Data(variant))) == want
            body = message.QuotedPrintable(file_source(tmp_path, variant))
            assert b"".join(body) == want
            assert body.sizes() == (len(want), want.count(b"\n"), want.count(b"\n.") + want.startswith(b"."))


@pytest.mark.parametrize("chunk", CHUNKS[:6], indirect=True)
def test_base64_is_the_old_one_for_every_length_around_57_byte_groups(chunk, tmp_path):
    rng = random.Random(chunk)
    for n in list(range(0, 200)) + [chunk + d for d in range(-60, 60)] + [57 * 1000 + d for d in range(-3, 4)]:
        if n < 0:
            continue
        data = rng.randbytes(n)
        want = old_base64_lines(data)
        body = message.Base64(file_source(tmp_path, data))
        assert b"".join(body) == want
        assert b"".join(body) == want  # re-iterable: the same bytes again
        assert body.sizes() == (len(want), want.count(b"\n"), 0)  # computed from the size alone


@pytest.mark.parametrize("chunk", CHUNKS, indirect=True)
def test_t_makes_crlf_lf_across_reads(chunk):
    data = b"".join(b"line %d\r\n" % i + b"\r" * (i % 3) + b"\n" * (i % 2) for i in range(300)) + b"end\r"
    for variant in (data, data + b"\n", b"\r\n" * chunk, b"x" * (chunk - 1) + b"\r\n" * 3):
        want = variant.replace(b"\r\n", b"\n")
        want = want if want.endswith(b"\n") else want + b"\n"
        assert b"".join(message.LineEnds(message.Data(variant))) == want


@pytest.mark.parametrize("chunk", CHUNKS, indirect=True)
def test_the_scan_sees_lines_and_bytes_across_chunk_boundaries(chunk):
    for data in around_boundaries(min(chunk, 4096), b"."):
        st = message.scan(message.Data(data))
        assert st.lone_dot == (b"\n.\n" in b"\n" + data)
        assert (st.size, st.newlines, st.dots) == (len(data), data.count(b"\n"), (b"\n" + data).count(b"\n."))
    for n in (997, 998, 999, 1000):  # a line of n bytes at every offset: over 998 is not 7bit
        for off in range(0, 9):
            data = b"x" * off + b"\n" + b"y" * n + b"\nz\n"
            assert message.scan(message.Data(data)).long_line == (n > 998)
            assert message.scan(message.Data(data[:-1])).seven_bit_safe is False  # no final newline


def compose_case(name, tmp_path, as_file):
    body, atts = cc.cases()[name]
    paths = []
    for an, data in atts.items():
        (tmp_path / an).write_bytes(data)
        paths.append(tmp_path / an)
    if as_file:
        body = file_source(tmp_path, body, "stdin.spool")
    return message.compose(
        body, subject="case " + name, sender=cc.SENDER, to=cc.TO, attachments=paths, date=cc.DATE, message_id=cc.MSGID
    )


@pytest.mark.parametrize("chunk", CHUNKS[:5], indirect=True)
@pytest.mark.parametrize("as_file", [False, True])
@pytest.mark.parametrize("name", sorted(cc.cases()))
def test_compose_is_byte_identical_to_the_in_memory_composer(chunk, as_file, name, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "urandom", lambda n: b"\x11" * n)  # the boundary, as the golden file's
    msg = compose_case(name, tmp_path, as_file)
    want = (DATA / "compose" / (name + ".eml")).read_bytes()
    want = want.replace(b"User-Agent: pipemail/0.1.0", b"User-Agent: pipemail/" + message.__version__.encode())
    got = msg.as_bytes()
    assert got == want
    assert b"".join(msg.segments()) == want  # made again, the same
    assert msg.size() == len(want) + want.count(b"\n")  # CRLF size, computed
    assert msg.wire_size() == len(want) + want.count(b"\n") + want.count(b"\n.")  # and dot-stuffed


def test_an_attachment_that_changed_after_it_was_opened_is_refused_when_read(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100000)
    msg = message.compose(b"hi\n", sender=cc.SENDER, to=cc.TO, attachments=[path])
    assert len(msg.as_bytes()) > 100000
    with open(path, "ab") as f:
        f.write(b"more")
    said = r"a\.bin changed while pymail was sending it \(it was 100000 bytes when opened, now 100004"
    with pytest.raises(ChangedError, match=said):
        msg.as_bytes()
    path.write_bytes(b"y" * 100000)  # the same size, another time
    os.utime(path, ns=(0, 10**9))
    with pytest.raises(ChangedError):
        msg.as_bytes()


def test_joined_pieces_field_blocks_and_boundaries_are_public_for_the_wrappers():
    # pipemail.secure builds multipart/signed and multipart/encrypted bodies with these
    body = message.Joined(
        [b"a\n.b\n", message.Raw(message.Data(b".c\nd\n")), message.field_block([("X-A", "1"), ("X-B", "2")])]
    )
    data = b"".join(body)
    assert data == b"a\n.b\n.c\nd\nX-A: 1\nX-B: 2\n"
    assert body.sizes() == (len(data), data.count(b"\n"), 2)
    b1, b2 = message.new_boundary(), message.new_boundary()
    assert b1 != b2 and b1.startswith("=_pipemail_") and len(b1) == len("=_pipemail_") + 24
