"""Finding the texts in which a shell archive may be: files, mail, mboxes, Maildirs.

:func:`iter_texts` turns what the user names (files, Maildir directories,
standard input) into ``(label, stream)`` pairs, one per *candidate text*: a
readable binary stream that the caller scans for archives.  Nothing here
looks for archives itself.

How an input is read:

* A directory with ``cur/`` and ``new/`` is a Maildir: every message in both,
  ordered by file name (Maildir names begin with the delivery time, so this is
  delivery order, and a message moved from ``new/`` to ``cur/`` keeps its
  place), ties broken new before cur.  Names starting with ``.``, ``tmp/``
  (deliveries in progress) and anything that is not a regular file are
  skipped.  Any other directory is refused.
* A file whose first line starts with ``From `` is an mbox.  It is split, as
  the stdlib ``mailbox.mbox`` splits it, before every line that starts with
  ``From `` (the blank line that ends each message is dropped).  Quoted
  ``From`` lines are unquoted one level, the mboxrd rule: ``>From `` becomes
  ``From `` and ``>>From `` becomes ``>From ``.  Writers (``mailbox.mbox``
  included) quote ``From `` lines in bodies; a body line that really began with
  ``>From `` comes back without its ``>`` from an mboxo writer, which does not
  quote it, but that is the rarer loss, and archives never meet it: shar
  prefixes its text lines and base64 has no such lines.
* A file whose first bytes are an RFC 5322 header block (every line a
  ``Name: value`` field with a valid field name, or a continuation line,
  ended by a blank line or the end of the file, all in the first
  :data:`HEAD_SIZE` bytes) is one message.
* Anything else is one text: the open file itself, at its start, never read
  into memory, whatever its size.  When every line in its first
  :data:`HEAD_SIZE` bytes ends in CRLF (a mail or an attachment saved by a
  Windows client), it is read with LF line ends; otherwise unchanged.

A message (single, from an mbox, from a Maildir) is parsed whole with the
stdlib email package (policy compat32, the most forgiving) and its MIME tree
walked, into multipart/* and message/rfc822; every leaf part that is text/*,
application/x-shar, application/x-sh, application/x-shellscript,
application/octet-stream, or has a file name, is yielded decoded (base64,
quoted-printable, uuencode; 7bit, 8bit, binary as they are, except that a
part whose every line ends in CRLF, a mail's own line end, gets LF line ends)
in a :class:`io.BytesIO`.  A message without MIME is one text/plain part: its body.
Parts are numbered as IMAP numbers them (``1``, ``2``, ``2.1`` for the first
part of a message forwarded as part 2), and labelled
``"mail.mbox: message 3, part 2 (companyMega.07)"``,
``"Maildir/new/1700000000.M1P2.host: part 1"`` or ``"mail.eml: part 2.1"``.

Damaged mail never raises: base64 is decoded as far as it goes (invalid
characters skipped, a truncated end decoded up to its last whole byte), a
multipart without its boundary is yielded as text, and if the parser itself
fails, or the MIME tree is nested deeper than :data:`MAX_DEPTH`, the raw
message is yielded as ``part 1``.  Only a missing or unreadable
input raises (:class:`NoInputError`), as does a directory that is no Maildir.

Standard input comes as a ``(label, stream)`` pair.  A stream that cannot seek
(a pipe, a terminal) is first copied, in chunks, to an anonymous temporary
file; a seekable one is read from its current position.

Each stream yielded is valid until the generator is advanced again: files
this module opened are closed then (streams passed in are never closed).
"""

import binascii
import io
import os
import re
import stat

from pipemail.errors import IOFailure, NoInputError, describe_oserror

#: How much of an input is looked at to tell an mbox, a message and a plain text apart.
HEAD_SIZE = 64 * 1024
#: Chunk size for copying a non-seekable stream to a temporary file.
SPOOL_CHUNK = 1 << 20
#: A message with more multipart/message levels than this is yielded raw, as one text.
MAX_DEPTH = 50

#: Leaf parts of these types are yielded, besides text/* and parts with a file name.
ARCHIVE_TYPES = frozenset(
    {
        "application/x-shar",
        "application/x-sh",
        "application/x-shellscript",
        "application/octet-stream",
    }
)
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global", "message/news"})

# A header field (RFC 5322 ftext, then ":"; obsolete syntax allows blanks before the colon).
_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_MBOXRD_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_BASE64_KEPT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_KEPT)))


def iter_texts(inputs):
    """Yield ``(label, binary stream)`` for every candidate text in ``inputs``.

    ``inputs``: a list of paths (str, bytes, os.PathLike) and ``(label,
    binary stream)`` pairs.  See the module documentation for what is yielded.
    Raises :class:`NoInputError` for an input that does not exist or cannot be
    read, or a directory that is not a Maildir, when the iteration reaches it.
    """
    if isinstance(inputs, (str, bytes, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, tuple):
            label, stream = item
            yield from _texts_of_stream(label, stream)
        else:
            yield from _texts_of_path(item)


# -- inputs ----------------------------------------------------------------------


def _texts_of_path(path):
    name = os.fsdecode(os.fspath(path))
    if os.path.isdir(name):
        if os.path.isdir(os.path.join(name, "cur")) and os.path.isdir(os.path.join(name, "new")):
            yield from _texts_of_maildir(name)
            return
        raise NoInputError("%s: is a directory, not a Maildir" % name)
    try:
        f = open(name, "rb")
    except OSError as exc:
        raise NoInputError("cannot open %s: %s" % (name, describe_oserror(exc))) from None
    with f:
        yield from _texts_of_stream(name, f)


def _texts_of_stream(label, stream):
    start = None
    try:
        if stream.seekable():
            start = stream.tell()
    except (AttributeError, OSError, ValueError):
        start = None
    if start is not None:
        yield from _texts_of_seekable(label, stream, start)
        return
    with _spool(label, stream) as spooled:
        yield from _texts_of_seekable(label, spooled, 0)


def _spool(label, stream):
    """Copy a stream that cannot seek to an anonymous temporary file, at its start."""
    import tempfile

    try:
        spooled = tempfile.TemporaryFile()
    except OSError as exc:
        raise IOFailure("cannot create a temporary file for %s: %s" % (label, describe_oserror(exc))) from None
    try:
        while True:
            try:
                chunk = stream.read(SPOOL_CHUNK)
            except OSError as exc:
                raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
            if not chunk:
                break
            try:
                spooled.write(chunk)
            except OSError as exc:
                raise IOFailure("cannot copy %s to a temporary file: %s" % (label, describe_oserror(exc))) from None
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


def _texts_of_seekable(label, stream, start):
    try:
        head = _read_head(stream)
        stream.seek(start)
    except OSError as exc:
        raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
    kind = classify(head, complete=len(head) < HEAD_SIZE)
    if kind == "plain":
        # saved by a Windows mail client, or a mail's CRLF kept: read as the LF text it was
        yield label, io.BufferedReader(_LF(stream)) if _all_crlf(head) else stream
    elif kind == "mbox":
        for number, data in enumerate(_mbox_messages(label, stream), 1):
            yield from _message_texts("%s: message %d, " % (label, number), data)
    else:
        try:
            data = stream.read()
        except OSError as exc:
            raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
        yield from _message_texts("%s: " % label, data)


class _LF(io.RawIOBase):
    """A stream of CRLF lines read with LF line ends."""

    def __init__(self, stream):
        self._stream = stream
        self._out = b""  # converted, not yet read
        self._cr = False  # a CR held back: the next read says whether an LF follows

    def readable(self):
        return True

    def readinto(self, b):
        while not self._out:
            data = self._stream.read(SPOOL_CHUNK)
            if not data:
                self._out, self._cr = (b"\r" if self._cr else b""), False
                break
            if self._cr:
                data = b"\r" + data
            self._cr = data.endswith(b"\r")
            self._out = (data[:-1] if self._cr else data).replace(b"\r\n", b"\n")
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


def _read_head(stream):
    """Up to HEAD_SIZE bytes (fewer only at the end of the stream)."""
    chunks = []
    got = 0
    while got < HEAD_SIZE:
        chunk = stream.read(HEAD_SIZE - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def classify(head, complete=False):
    """``"mbox"``, ``"message"`` or ``"plain"``: what an input starting with ``head`` is.

    ``complete`` says that ``head`` is the whole input.
    """
    if head.startswith(b"From "):
        return "mbox"
    lines = head.split(b"\n")
    if not complete:
        lines.pop()  # cut anywhere: an unfinished line proves nothing
    fields = 0
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return "message" if fields else "plain"
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return "plain"
        elif _HEADER_FIELD.match(line):
            fields += 1
        else:
            return "plain"
    # No blank line: a message only if the input ends with its header block.
    return "message" if complete and fields else "plain"


def _texts_of_maildir(top):
    entries = []
    for order, sub in enumerate(("new", "cur")):
        directory = os.path.join(top, sub)
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise NoInputError("cannot read %s: %s" % (directory, describe_oserror(exc))) from None
        entries.extend((name, order, sub) for name in names if not name.startswith("."))
    entries.sort()
    for name, _order, sub in entries:
        path = os.path.join(top, sub, name)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue  # moved or deleted by a mail reader since the listing
        except OSError as exc:
            raise NoInputError("cannot open %s: %s" % (path, describe_oserror(exc))) from None
        yield from _message_texts("%s: " % path, data)


def _mbox_messages(label, stream):
    """The bytes of each message of an mbox, without its From_ line, unquoted (mboxrd)."""
    lines = None
    try:
        for line in stream:
            if line.startswith(b"From "):
                if lines is not None:
                    yield _mbox_message(lines)
                lines = []
            elif lines is not None:
                lines.append(line)
    except OSError as exc:
        raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
    if lines is not None:
        yield _mbox_message(lines)


def _mbox_message(lines):
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines.pop()  # the separator before the next From_ line
    data = b"".join(lines)
    return _MBOXRD_QUOTED.sub(rb"\1", data) if b">From " in data else data


# -- messages --------------------------------------------------------------------


def _message_texts(prefix, data):
    """Yield ``(label, BytesIO)`` for each wanted part of the message ``data``."""
    from email import policy
    from email.parser import BytesParser

    try:
        message = BytesParser(policy=policy.compat32).parsebytes(data)
        leaves = list(_leaves(message, (), 0))
    except Exception:  # the parser forgives nearly anything; if not (or too deep), the raw text counts
        yield prefix + "part 1", io.BytesIO(data)
        return
    for number, part in leaves:
        name = _filename(part)
        if not _wanted(part, name):
            continue
        label = prefix + "part " + (".".join(map(str, number)) or "1")
        if name:
            label += " (%s)" % _printable(name)
        yield label, io.BytesIO(_decoded(part))


def _leaves(part, number, depth):
    """``(number, part)`` for every leaf of the MIME tree, in order, numbered as IMAP does."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        yield number, part
        return
    if depth >= MAX_DEPTH:
        raise ValueError("MIME parts nested too deep")
    ctype = part.get_content_type()
    if ctype in _MESSAGE_TYPES and payload:
        inner = _reparsed(part, payload[0])
        if not inner.is_multipart():
            yield from _leaves(inner, number + (1,), depth + 1)
            return
        payload = inner.get_payload()
    elif part.get_content_maintype() != "multipart":
        return  # message/delivery-status and the like: header blocks only
    for index, sub in enumerate(payload, 1):
        yield from _leaves(sub, number + (index,), depth + 1)


def _reparsed(wrapper, inner):
    """The forwarded message, also when (against RFC 2046) it was sent in base64."""
    if _encoding(wrapper) != "base64" or inner.keys() or inner.is_multipart():
        return inner
    from email import policy
    from email.parser import BytesParser

    return BytesParser(policy=policy.compat32).parsebytes(_b64decode(_ascii_payload(inner)))


def _wanted(part, name):
    if name:
        return True
    ctype = part.get_content_type()
    maintype = part.get_content_maintype()
    # A multipart or message/* leaf lost its structure (no boundary, say): its raw text.
    return maintype in ("text", "multipart", "message") or ctype in ARCHIVE_TYPES


def _filename(part):
    try:
        name = part.get_filename()
        if name and "=?" in name:
            from email.header import decode_header, make_header

            name = str(make_header(decode_header(name)))
    except Exception:  # a malformed parameter or encoded word: go without the name
        return None
    return name or None


def _printable(text):
    """``text`` with control and other unprintable characters escaped, for a one-line label."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _encoding(part):
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _ascii_payload(part):
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    return payload.encode("ascii", "ignore")  # anything else is no base64


def _decoded(part):
    """A leaf part's content as bytes, decoded as far as it goes."""
    if _encoding(part) == "base64":
        return _b64decode(_ascii_payload(part))
    try:
        # compat32 gives the exact bytes for 7bit/8bit/binary, decodes QP and uuencode.
        data = part.get_payload(decode=True)
    except Exception:  # pragma: no cover - compat32 catches decoding errors itself
        data = None
    return _lf(data) if isinstance(data, bytes) else b""


def _lf(data):
    """Text whose every line ends in CRLF (a mail's own line ends, kept by a client) with LF line ends."""
    return data.replace(b"\r\n", b"\n") if _all_crlf(data) else data


def _all_crlf(data):
    """Whether ``data`` has lines and every one of them ends in CRLF."""
    lines = data.count(b"\n")
    return lines > 0 and data.count(b"\r\n") == lines


def _b64decode(data):
    """Base64 decoded leniently: junk skipped, padding ends a run, a cut end decoded to its last byte."""
    out = []
    for run in data.translate(None, _NOT_BASE64).split(b"="):
        extra = len(run) % 4
        if extra == 1:  # six bits: not a byte
            run = run[:-1]
            extra = 0
        if run:
            out.append(binascii.a2b_base64(run + b"=" * (-extra % 4)))
    return b"".join(out)
