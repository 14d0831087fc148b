"""Finding candidate texts in files, messages, mboxes, Maildirs and stdin."""

import io
import mailbox
import os
import subprocess
import sys
import threading
import tracemalloc
from email.message import EmailMessage

import pytest

from pipemail.errors import NoInputError
from pipemail.mailbox_io import HEAD_SIZE, MAX_DEPTH, classify, iter_texts

SHAR = (
    b"#!/bin/sh\n"
    b"# This is a shell archive (produced by pyshar)\n"
    b"sed 's/^X//' > 'a b' << 'SHAR_EOF'\n"
    b"XFrom here = there\t\n"
    b"X" + b"long line " * 20 + b"\n"
    b"SHAR_EOF\n"
    b"exit 0\n"
)
BINARY = bytes(range(256)) * 3 + b"\r\n\rFrom \x00end"
TEXT = "Here are the parts.\n"


def texts(inputs):
    """Every (label, content) pair, each stream read before the next is asked for."""
    return [(label, stream.read()) for label, stream in iter_texts(inputs)]


def mixed_message(first="companyMega.01", second="companyMega.02"):
    """multipart/mixed: a text body, a base64 attachment, a quoted-printable one."""
    msg = EmailMessage()
    msg["From"] = "me@example.com"
    msg["To"] = "you@example.com"
    msg["Subject"] = "parts"
    msg.set_content(TEXT)
    msg.add_attachment(BINARY, maintype="application", subtype="octet-stream", filename=first)
    msg.add_attachment(SHAR, maintype="application", subtype="x-shar", filename=second, cte="quoted-printable")
    return msg


MIXED_PARTS = [
    ("part 1", TEXT.encode()),
    ("part 2 (companyMega.01)", BINARY),
    ("part 3 (companyMega.02)", SHAR),
]


def write(path, data):
    path.write_bytes(data)
    return path


def labelled(prefix, parts):
    return [(prefix + label, data) for label, data in parts]


# -- single messages -------------------------------------------------------------


def test_multipart_mixed_base64_and_quoted_printable(tmp_path):
    raw = mixed_message().as_bytes()
    assert b"Content-Transfer-Encoding: base64" in raw
    assert b"Content-Transfer-Encoding: quoted-printable" in raw
    path = write(tmp_path / "mail.eml", raw)
    assert texts([str(path)]) == labelled("%s: " % path, MIXED_PARTS)


def test_forwarded_message_is_walked_and_numbered_as_imap_does(tmp_path):
    outer = EmailMessage()
    outer["From"] = "boss@example.com"
    outer["Subject"] = "Fwd: parts"
    outer.set_content("See below.\n")
    outer.add_attachment(mixed_message())
    raw = outer.as_bytes()
    assert b"Content-Type: message/rfc822" in raw
    path = write(tmp_path / "fwd.eml", raw)
    assert texts([path]) == [
        ("%s: part 1" % path, b"See below.\n"),
        ("%s: part 2.1" % path, TEXT.encode()),
        ("%s: part 2.2 (companyMega.01)" % path, BINARY),
        ("%s: part 2.3 (companyMega.02)" % path, SHAR),
    ]


def test_nested_multipart_alternative_and_part_selection(tmp_path):
    msg = EmailMessage()
    msg["Subject"] = "mixed bag"
    msg.set_content("plain\n")
    msg.add_alternative("<p>html</p>\n", subtype="html")
    msg.add_attachment(b"\x89PNG picture", maintype="image", subtype="png")  # no name: skipped
    msg.add_attachment(b"%PDF named", maintype="application", subtype="pdf", filename="doc.pdf")
    msg.add_attachment(b"no name", maintype="application", subtype="octet-stream")
    msg.add_attachment(SHAR, maintype="application", subtype="x-sh")
    msg.add_attachment(b"echo hi\n", maintype="application", subtype="x-shellscript")
    msg.add_attachment(b"zip", maintype="application", subtype="zip")  # no name: skipped
    path = write(tmp_path / "m", msg.as_bytes())
    assert texts([path]) == [
        ("%s: part 1.1" % path, b"plain\n"),
        ("%s: part 1.2" % path, b"<p>html</p>\n"),
        ("%s: part 3 (doc.pdf)" % path, b"%PDF named"),
        ("%s: part 4" % path, b"no name"),
        ("%s: part 5" % path, SHAR),
        ("%s: part 6" % path, b"echo hi\n"),
    ]


def test_message_without_mime_yields_its_body_byte_for_byte(tmp_path):
    body = b"line 1\r\n#!/bin/sh\r\nbare\rcr\x00\xff\xfe\nno final newline"
    raw = (
        b"Return-Path: <me@example.com>\r\n"
        b"Received: from a.example.com\r\n"
        b"\tby b.example.com; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Subject: no MIME\r\n"
        b"\r\n" + body
    )
    path = write(tmp_path / "plain.eml", raw)
    assert texts([path]) == [("%s: part 1" % path, body)]


def test_single_part_message_with_transfer_encoding_is_decoded(tmp_path):
    msg = EmailMessage()
    msg["Subject"] = "one part"
    msg.set_content(SHAR, maintype="application", subtype="x-shar", cte="base64")
    path = write(tmp_path / "b64.eml", msg.as_bytes())
    assert texts([path]) == [("%s: part 1" % path, SHAR)]
    qp = b"Subject: qp\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
    qp += b"a=3Db soft=\nbreak, raw 8-bit \xe9\xff kept\n"
    path = write(tmp_path / "qp.eml", qp)
    assert texts([path]) == [("%s: part 1" % path, b"a=b softbreak, raw 8-bit \xe9\xff kept\n")]


def test_header_only_message_yields_an_empty_body(tmp_path):
    path = write(tmp_path / "h", b"Subject: nothing else\n")
    assert texts([path]) == [("%s: part 1" % path, b"")]


def test_filenames_in_labels_are_decoded_and_kept_on_one_line(tmp_path):
    raw = (
        b"Subject: names\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\n"
        b'Content-Type: application/octet-stream; name="=?UTF-8?B?Y29tcGFueU1lZ2EuMDc=?="\n\n'
        b"seven\n"
        b"--b\n"
        b"Content-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename*=UTF-8''evil%0Aname%1B%5B31m\n\n"
        b"eight\n"
        b"--b\n"
        b"Content-Type: application/octet-stream\n"
        b"Content-Disposition: attachment; filename*=UTF-8''caf%C3%A9.sh\n\n"
        b"nine\n"
        b"--b--\n"
    )
    path = write(tmp_path / "names.eml", raw)
    got = texts([path])
    assert got[0] == ("%s: part 1 (companyMega.07)" % path, b"seven")
    assert "\n" not in got[1][0] and "\x1b" not in got[1][0]
    assert got[1] == ("%s: part 2 (evil\\nname\\x1b[31m)" % path, b"eight")
    assert got[2] == ("%s: part 3 (caf\u00e9.sh)" % path, b"nine")


def test_base64_forwarded_message_is_unwrapped(tmp_path):
    import base64

    inner = mixed_message().as_bytes()
    raw = (
        b"Subject: Fwd\n"
        b'Content-Type: multipart/mixed; boundary="outer"\n\n'
        b"--outer\n"
        b"Content-Type: message/rfc822\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(inner) + b"--outer--\n"
    )
    path = write(tmp_path / "fwd64.eml", raw)
    assert texts([path]) == [
        ("%s: part 1.1" % path, TEXT.encode()),
        ("%s: part 1.2 (companyMega.01)" % path, BINARY),
        ("%s: part 1.3 (companyMega.02)" % path, SHAR),
    ]


# -- malformed mail ----------------------------------------------------------------


def one_part(cte, body):
    return b"Subject: broken\nContent-Type: application/x-shar\nContent-Transfer-Encoding: " + cte + b"\n\n" + body


@pytest.mark.parametrize(
    "body, decoded",
    [
        (b"YWJj\nZGVm\n", b"abcdef"),
        (b"YW!!Jj\n\x80\xffZGVm\n", b"abcdef"),  # junk skipped
        (b"YWJjZ", b"abc"),  # cut after 6 bits: whole bytes only
        (b"YWJjZG", b"abcd"),  # cut, no padding
        (b"YWJjZGU", b"abcde"),
        (b"YQ==Yg==\n", b"ab"),  # padded runs one after another
        (b"", b""),
        (b"!!!\n", b""),
    ],
)
def test_bad_base64_decodes_as_far_as_it_goes(tmp_path, body, decoded):
    path = write(tmp_path / "bad.eml", one_part(b"base64", body))
    assert texts([path]) == [("%s: part 1" % path, decoded)]


def test_multipart_without_boundary_parameter_is_one_text(tmp_path):
    body = b"preamble\n--x\nContent-Type: text/plain\n\n" + SHAR + b"--x--\n"
    path = write(tmp_path / "nob.eml", b"Subject: s\nContent-Type: multipart/mixed\n\n" + body)
    assert texts([path]) == [("%s: part 1" % path, body)]


def test_multipart_whose_boundary_never_comes_is_one_text(tmp_path):
    body = b"--other\nContent-Type: text/plain\n\n" + SHAR
    path = write(tmp_path / "nob.eml", b'Subject: s\nContent-Type: multipart/mixed; boundary="b"\n\n' + body)
    assert texts([path]) == [("%s: part 1" % path, body)]


def test_truncated_multipart_yields_the_parts_it_has(tmp_path):
    raw = mixed_message().as_bytes()
    cut = raw.index(b"Content-Transfer-Encoding: quoted-printable")  # in the middle of part 3's headers
    b64_start = raw.index(b"\n\n", raw.index(b"Content-Transfer-Encoding: base64")) + 2
    path = write(tmp_path / "cut.eml", raw[:cut])
    got = texts([path])
    assert got[:2] == labelled("%s: " % path, MIXED_PARTS[:2])
    assert got[2] == ("%s: part 3" % path, b"")  # its name was in the headers cut off
    # cut inside the base64 body: the whole bytes before the cut
    cut = b64_start + 101
    path = write(tmp_path / "cut2.eml", raw[:cut])
    got = texts([path])
    assert got[0] == ("%s: part 1" % path, TEXT.encode())
    label, data = got[1]
    assert label == "%s: part 2 (companyMega.01)" % path
    assert 70 <= len(data) < len(BINARY) and BINARY.startswith(data)


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 300, 3000])
def test_deeply_nested_mime_is_walked_or_yielded_raw(tmp_path, depth):
    raw = b"Subject: deep\n"
    for i in range(depth):
        raw += b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
    raw += b"Content-Type: text/plain\n\n" + SHAR
    path = write(tmp_path / "deep.eml", raw)
    got = texts([path])
    if depth <= MAX_DEPTH:
        assert got == [("%s: part %s" % (path, ".".join(["1"] * depth)), SHAR[:-1])]  # its newline is the boundary's
    else:  # too deep to walk (3000: too deep for the parser itself)
        assert got == [("%s: part 1" % path, raw)]


def test_garbage_headers_do_not_raise(tmp_path):
    raw = (
        b"Subject: =?bogus-charset?q?x?=\n"
        b"Content-Type: text/plain; charset=\xff\xfe; name*=bogus''%ZZ\n"
        b"Content-Disposition: attachment; filename*0*=nocharset'x; filename*1=\x00\n"
        b"Content-Transfer-Encoding: x-unknown\n\n"
        b"body \xff\n"
    )
    path = write(tmp_path / "g.eml", raw)
    [(label, data)] = texts([path])
    assert label.startswith("%s: part 1" % path)
    assert data == b"body \xff\n"


# -- mbox --------------------------------------------------------------------------


def plain_message(subject, body):
    msg = EmailMessage()
    msg["From"] = "me@example.com"
    msg["Subject"] = subject
    msg.set_content(body, cte="8bit")
    return msg


def test_mbox_written_by_mailbox_module(tmp_path):
    path = tmp_path / "mail.mbox"
    box = mailbox.mbox(path)
    box.add(plain_message("one", "From the start\n>From quoted already\nend\n"))
    box.add(mixed_message("companyMega.07", "companyMega.08"))
    box.add(plain_message("three", SHAR.decode()))
    box.close()
    raw = path.read_bytes()
    assert raw.count(b"\nFrom ") == 2 and b"\n>From the start" in raw  # mailbox quoted it
    assert texts([path]) == [
        # unquoted one level (mboxrd): "From " comes back; an mboxo writer's ">From " does not
        ("%s: message 1, part 1" % path, b"From the start\nFrom quoted already\nend\n"),
        ("%s: message 2, part 1" % path, TEXT.encode()),
        ("%s: message 2, part 2 (companyMega.07)" % path, BINARY),
        ("%s: message 2, part 3 (companyMega.08)" % path, SHAR),
        ("%s: message 3, part 1" % path, SHAR),
    ]


def test_mboxrd_unquoting_and_separators(tmp_path):
    raw = (
        b"From a@example.com Mon Jan  1 00:00:00 2024\n"
        b"Subject: one\n\n"
        b">>From two\n>From one\nFrom-less\n \n"
        b"\n"
        b"From b@example.com Mon Jan  1 00:00:01 2024\n"
        b"Subject: two\n\n"
        b"no blank line before the next\n"
        b"From c@example.com Mon Jan  1 00:00:02 2024\n"
        b"#!/bin/sh\nno headers at all\n"
        b"\n"
        b"\n"
    )
    path = write(tmp_path / "rd", raw)
    # The one split rule (pipemail.mailbox): a From_ line ends a message only after a blank
    # line, so the third From line is a line of message 2 (the stdlib split before it).
    assert texts([path]) == [
        ("%s: message 1, part 1" % path, b">From two\nFrom one\nFrom-less\n \n"),
        (
            "%s: message 2, part 1" % path,
            b"no blank line before the next\nFrom c@example.com Mon Jan  1 00:00:02 2024\n"
            b"#!/bin/sh\nno headers at all\n\n",
        ),
    ]


def test_mbox_with_crlf_lines(tmp_path):
    raw = b"From a Mon Jan  1 00:00:00 2024\r\nSubject: x\r\n\r\n>From x\r\n\r\nFrom b\r\nSubject: y\r\n\r\nb\r\n"
    path = write(tmp_path / "crlf", raw)
    assert texts([path]) == [
        ("%s: message 1, part 1" % path, b"From x\n"),  # every line CRLF: read as LF lines
        ("%s: message 2, part 1" % path, b"b\n"),
    ]


# -- Maildir -----------------------------------------------------------------------


def test_maildir_messages_in_new_and_cur_by_file_name(tmp_path):
    top = tmp_path / "Maildir"
    box = mailbox.Maildir(top, create=True)
    box.add(plain_message("new one", "in new\n"))
    seen = mailbox.MaildirMessage(mixed_message())
    seen.set_subdir("cur")
    seen.add_flag("S")
    box.add(seen)
    box.close()
    write(top / "cur" / "0000000001.A.host:2,S", b"Subject: oldest\n\noldest\n")
    write(top / "new" / "9999999999.Z.host", b"Subject: newest\n\nnewest\n")
    write(top / "new" / ".hidden", b"Subject: hidden\n\nhidden\n")
    write(top / "tmp" / "1.in-progress", b"Subject: tmp\n\ntmp\n")
    os.mkdir(top / "cur" / "subdir")
    [added_new] = [n for n in os.listdir(top / "new") if n[0] not in ".9"]
    [added_cur] = [n for n in os.listdir(top / "cur") if n[0] not in "0s"]
    # named as by time, but with fixed names: mailbox's microseconds (M96742, M104561) are not
    # zero-padded, so its own names do not always sort in the order they were given
    new_name, cur_name = "1700000000.M1P1.host", "1700000000.M2P1.host:2,S"
    os.rename(top / "new" / added_new, top / "new" / new_name)
    os.rename(top / "cur" / added_cur, top / "cur" / cur_name)

    got = texts([top])
    first = "%s: " % (top / "cur" / "0000000001.A.host:2,S")
    new = "%s: " % (top / "new" / new_name)
    cur = "%s: " % (top / "cur" / cur_name)
    last = "%s: " % (top / "new" / "9999999999.Z.host")
    assert got == (
        [(first + "part 1", b"oldest\n"), (new + "part 1", b"in new\n")]
        + labelled(cur, MIXED_PARTS)
        + [(last + "part 1", b"newest\n")]
    )


def test_directory_that_is_not_a_maildir_is_refused(tmp_path):
    (tmp_path / "new").mkdir()
    with pytest.raises(NoInputError) as info:
        list(iter_texts([tmp_path]))
    assert str(info.value) == "%s: is a directory, not a Maildir" % tmp_path
    assert info.value.exit_code == 66


# -- plain files -------------------------------------------------------------------


def test_plain_file_is_the_open_file_itself(tmp_path):
    data = b"some notes\n\n" + SHAR + b"-- \nsignature\n"
    path = write(tmp_path / "notes.txt", data)
    gen = iter_texts([str(path), str(path)])
    label, stream = next(gen)
    assert label == str(path)
    assert isinstance(stream, io.BufferedReader) and stream.name == str(path)
    assert stream.tell() == 0 and stream.seekable()
    assert stream.read() == data
    label2, stream2 = next(gen)
    assert stream.closed and not stream2.closed  # the first is closed when the next is asked for
    gen.close()
    assert stream2.closed


@pytest.mark.parametrize(
    "data",
    [
        b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 40,
        b"",
        b"\n\nSubject: blank lines first\n\n",
        b"Note: a colon in the first line\nbut then prose\n",
        b"#!/bin/sh\n: a shell line\n",
        b"x" * (HEAD_SIZE + 10),
        b"A: b\n" * (HEAD_SIZE // 5 + 10) + b"\nheader block longer than HEAD_SIZE\n",
    ],
    ids=["elf", "empty", "blank-first", "prose", "shar", "long-line", "huge-headers"],
)
def test_anything_else_is_one_text_unchanged(tmp_path, data):
    path = write(tmp_path / "f", data)
    assert texts([path]) == [(str(path), data)]


def test_paths_as_bytes_and_pathlike(tmp_path):
    path = write(tmp_path / "f", b"text\n")
    assert texts([os.fsencode(path), path]) == [(str(path), b"text\n")] * 2
    assert texts(path) == [(str(path), b"text\n")]  # a single path, not in a list


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mbox"
    gen = iter_texts([write(tmp_path / "ok", b"ok\n"), missing])
    assert next(gen)[0] == str(tmp_path / "ok")
    with pytest.raises(NoInputError) as info:
        next(gen)
    assert str(info.value) == "cannot open %s: No such file or directory" % missing


def test_path_through_a_file(tmp_path):
    bad = write(tmp_path / "file", b"x") / "inside"
    with pytest.raises(NoInputError) as info:
        list(iter_texts([bad]))
    assert str(info.value) == "cannot open %s: Not a directory" % bad


def test_plain_file_is_streamed_not_loaded(tmp_path):
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(32 << 20)
    tracemalloc.start()
    try:
        for _label, stream in iter_texts([path]):
            while stream.read(1 << 16):
                pass
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


# -- streams (stdin) -----------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A non-seekable raw stream that returns at most ``step`` bytes a read."""

    def __init__(self, data, step=7):
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, buffer):
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def pipe_stream(data):
    """A reading end of a real pipe, fed by a thread (the data may exceed the pipe buffer)."""
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return os.fdopen(r, "rb"), thread


def test_stdin_pipe_holding_a_message():
    stream, thread = pipe_stream(mixed_message().as_bytes() + b"\n" * 200000)
    assert not stream.seekable()
    with stream:
        got = texts([("stdin", stream)])
    thread.join()
    assert got == labelled("stdin: ", MIXED_PARTS)  # 200 KB of epilogue: more than a pipe buffer


def test_stdin_pipe_holding_an_mbox(tmp_path):
    path = tmp_path / "m"
    box = mailbox.mbox(path)
    box.add(plain_message("one", "first\n"))
    box.add(plain_message("two", "second\n"))
    box.close()
    stream, thread = pipe_stream(path.read_bytes())
    with stream:
        got = texts([("-", stream)])
    thread.join()
    assert got == [("-: message 1, part 1", b"first\n"), ("-: message 2, part 1", b"second\n")]


def test_stdin_plain_text_is_spooled_and_rewound():
    data = SHAR * 5000  # a few hundred KB, read 4 KiB at a time
    raw = Trickle(data, step=4096)
    gen = iter_texts([("stdin", raw)])
    label, stream = next(gen)
    assert label == "stdin"
    assert stream is not raw and stream.seekable() and stream.tell() == 0
    assert stream.read() == data
    stream.seek(0)
    assert stream.read(9) == b"#!/bin/sh"
    gen.close()
    assert stream.closed and not raw.closed  # the spool is ours; stdin is the caller's


def test_stdin_tiny_reads():
    data = b"Subject: trickle\n\nbody\n"
    assert texts([("stdin", Trickle(data, step=1))]) == [("stdin: part 1", b"body\n")]
    assert texts([("stdin", Trickle(b"", step=1))]) == [("stdin", b"")]


def test_stdin_spool_uses_bounded_memory():
    data = b"#!/bin/sh\n" + b"x" * (12 << 20)
    tracemalloc.start()
    try:
        for _label, stream in iter_texts([("stdin", io.BufferedReader(Trickle(data, step=1 << 16)))]):
            while stream.read(1 << 16):
                pass
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_fifo_path_is_spooled(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = b"Subject: via a fifo\n\n" + SHAR

    def feed():
        with open(fifo, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    assert texts([fifo]) == [("%s: part 1" % fifo, SHAR)]
    thread.join()


def test_seekable_stream_is_read_from_its_position():
    stream = io.BytesIO(b"skipped\nSubject: s\n\nbody\n")
    stream.seek(8)
    assert texts([("in", stream)]) == [("in: part 1", b"body\n")]
    stream = io.BytesIO(b"skipped\nplain text\n")
    stream.seek(8)
    assert texts([("in", stream)]) == [("in", b"plain text\n")]
    assert not stream.closed


class Failing(io.RawIOBase):
    def readable(self):
        return True

    def readinto(self, buffer):
        raise OSError(5, "Input/output error")


def test_read_error_on_stdin():
    with pytest.raises(NoInputError, match=r"^cannot read stdin: Input/output error$"):
        list(iter_texts([("stdin", Failing())]))


# -- detection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, complete, kind",
    [
        (b"From a@b Mon Jan  1 00:00:00 2024\n", False, "mbox"),
        (b"From: a@b\nSubject: x\n\nbody", True, "message"),
        (b"Received: from x\n\tby y\nReturn-Path: <a@b>\r\n\r\n", False, "message"),
        (b"X-Weird_Name.1: v\nSubject : obsolete blank before colon\n\n", False, "message"),
        (b"Subject: x\n", True, "message"),
        (b"Subject: x\n", False, "plain"),  # the header block may go on
        (b"Subject: x\nmore", False, "plain"),
        (b"Subject: x\nnot a field\n\n", True, "plain"),
        (b" continuation first\n\n", True, "plain"),
        (b"\n", True, "plain"),
        (b"Na me: x\n\n", True, "plain"),
        (b"#!/bin/sh\n", True, "plain"),
        (b">From x\n\n", True, "plain"),
        (b"", True, "plain"),
    ],
)
def test_classify(head, complete, kind):
    assert classify(head, complete) == kind


def test_email_and_mailbox_are_imported_lazily():
    code = (
        "import sys, pipemail.mailbox_io\n"
        "print(sorted(m for m in ('email', 'mailbox', 'tempfile', 'email.parser') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_plain_text_of_crlf_lines_is_read_with_lf_lines_and_a_mixed_one_as_it_is(tmp_path):
    crlf = b"#!/bin/sh\r\n# This is part 1\r\n" + b"x" * 300_000 + b"\r\nlast\r\nend\r"  # over HEAD_SIZE
    mixed = b"#!/bin/sh\nXa text line that had CRLF\r\nexit 0\n"
    a, b = write(tmp_path / "a", crlf), write(tmp_path / "b", mixed)
    assert texts([a, b]) == [(str(a), crlf.replace(b"\r\n", b"\n")), (str(b), mixed)]


# -- streams (issue 11) ----------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 64, 4096])
@pytest.mark.parametrize("crlf", [False, True])
def test_mime_walk_is_the_same_whatever_the_reads_and_block_size(monkeypatch, block, crlf):
    """Boundaries, held line ends, base64 quads and QP lines cut at every place a small block puts them."""
    from pipemail import mailbox_io

    monkeypatch.setattr(mailbox_io, "BLOCK", block, raising=False)
    raw = mixed_message().as_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    for step in (1, 3, 7, 64):
        assert texts([("stdin", Trickle(raw, step=step))]) == labelled("stdin: ", MIXED_PARTS)


def big_eml(path, size):
    import binascii

    with open(path, "wb") as f:
        f.write(
            b'Subject: big\nContent-Type: multipart/mixed; boundary="zz"\n\n--zz\n'
            b"Content-Type: application/octet-stream; name=big.bin\nContent-Transfer-Encoding: base64\n\n"
        )
        block = bytes(range(256)) * 228  # 57 * 1024 bytes: whole base64 lines
        for _ in range(size // len(block)):
            f.write(b"".join(binascii.b2a_base64(block[i : i + 57]) for i in range(0, len(block), 57)))
        f.write(b"--zz--\n")
    return len(block) * (size // len(block))


def test_messages_in_files_and_maildirs_are_read_as_streams(tmp_path):
    """A 16 MB attachment in an .eml and in a Maildir: decoded while read, never held whole."""
    top = tmp_path / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (top / sub).mkdir(parents=True)
    want = big_eml(top / "new" / "1700000000.M1P1.host", 16 << 20)
    shutil_copy = tmp_path / "big.eml"
    os.link(top / "new" / "1700000000.M1P1.host", shutil_copy)
    for source in (shutil_copy, top):
        tracemalloc.start()
        try:
            got = []
            for label, stream in iter_texts([source]):
                size = 0
                while chunk := stream.read(1 << 16):
                    size += len(chunk)
                got.append((label.rsplit(": ", 1)[1], size))
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got == [("part 1 (big.bin)", want)]
        assert peak < 4 << 20, (source, peak)


def test_an_mbox_on_a_pipe_is_read_as_it_comes_not_copied(tmp_path, monkeypatch):
    """No temporary file: an mbox (a 4 GB one too) is read forward only."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    path = tmp_path / "m"
    box = mailbox.mbox(path)
    box.add(plain_message("one", "first\n"))
    box.add(mixed_message())
    box.close()
    stream, thread = pipe_stream(path.read_bytes())
    with stream:
        got = texts([("-", stream)])
    thread.join()
    assert got == [("-: message 1, part 1", b"first\n")] + labelled("-: message 2, ", MIXED_PARTS)
