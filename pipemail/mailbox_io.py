"""Finding the texts in which a shell archive may be: files, mail, mboxes, Maildirs.

:func:`iter_texts` turns what the user names (files, Maildir directories,
standard input) into ``(label, stream)`` pairs, one per *candidate text*: a
readable binary stream that the caller scans for archives.  Nothing here
looks for archives itself, and nothing is held whole in memory: messages are
read as streams, part by part.

The inputs are read through the mailbox layer (:func:`pipemail.mailbox.iter_messages`):

* A directory with ``cur/`` and ``new/`` is a Maildir: every message in both,
  in delivery order (:func:`pipemail.mailbox.maildir_messages`).  Any other
  directory is refused.
* A file whose first line starts with ``From `` is an mbox, read forward only as
  a stream (standard input too, never copied whole), split with the one rule
  pipemail writes by: a message ends before a ``From `` line that follows a
  blank line (or begins the file); that blank line is not part of it.  A
  ``From `` line that follows no blank line is a line of the body.  Quoted
  ``From`` lines are unquoted one level, the mboxrd rule: ``>From `` becomes
  ``From `` and ``>>From `` becomes ``>From ``.  A body line that really began
  with ``>From `` comes back without its ``>`` from an mboxo writer, which does
  not quote it, but archives never meet it: shar prefixes its text lines and
  base64 has no such lines.
* A file whose first bytes are an RFC 5322 header block (every line a
  ``Name: value`` field with a valid field name, or a continuation line,
  ended by a blank line or the end of the file, all in the first
  :data:`HEAD_SIZE` bytes) is one message.
* Anything else is one text: the open file itself, at its start, never read
  into memory, whatever its size.  When every line in its first
  :data:`HEAD_SIZE` bytes ends in CRLF (a mail or an attachment saved by a
  Windows client), it is read with LF line ends; otherwise unchanged.

A message (single, from an mbox, from a Maildir) is walked as a stream: each
part's header block is parsed on its own with the stdlib email package (policy
compat32, the most forgiving), boundaries are found line by line, into
multipart/* and message/rfc822 (also when, against RFC 2046, it was sent in
base64).  Every leaf part that is text/*, application/x-shar,
application/x-sh, application/x-shellscript, application/octet-stream, or has
a file name, is yielded as a stream, decoded in chunks while it is read
(base64, quoted-printable, uuencode; 7bit, 8bit, binary as they are, except
that a part whose lines end in CRLF, a mail's own line end, gets LF line ends:
decided on its first :data:`HEAD_SIZE` bytes).  As RFC 2046 says, the line end
before a boundary belongs to the boundary, and so does the last one of a part
that the end of the input cuts short inside a multipart.  A message without
MIME is one text/plain part: its body.  Parts are numbered as IMAP numbers them
(``1``, ``2``, ``2.1`` for the first part of a message forwarded as part 2), and
labelled ``"mail.mbox: message 3, part 2 (companyMega.07)"``,
``"Maildir/new/1700000000.M1P2.host: part 1"`` or ``"mail.eml: part 2.1"``.

Damaged mail never raises: base64 is decoded as far as it goes (invalid
characters skipped, a truncated end decoded up to its last whole byte), a
uuencoded part cut short is decoded as far as it goes, a multipart whose
boundary does not come within :data:`PREAMBLE_SIZE` bytes (or at all) is
yielded as text, a part cut short in its headers is an empty part.  A message
whose MIME tree is nested deeper than :data:`MAX_DEPTH` is yielded raw as
``part 1`` (when it is found in its first :data:`RAW_SIZE` bytes and no part
was yielded before; else the too deep part is yielded raw as one text).  Only a
missing or unreadable input raises (:class:`NoInputError`), as does a
directory that is no Maildir; a read that fails in an mbox is an IOFailure.

Standard input comes as a ``(label, stream)`` pair.  A plain text that cannot
seek (a pipe, a terminal) is first copied, in chunks, to an anonymous temporary
file; a seekable stream is read from its current position; an mbox or a
message is read as it comes.

Each stream yielded is valid until the generator is advanced again: files
this module opened are closed then (streams passed in are never closed).
"""

import binascii
import io
import itertools
import re

from pipemail.lines import Buffer
from pipemail.mailbox import HEAD_SIZE, ChunkStream, classify, iter_messages

#: A message with more multipart/message levels than this is yielded raw, as one text.
MAX_DEPTH = 50
#: A multipart's preamble longer than this means its boundary never comes: the part is a text.
PREAMBLE_SIZE = 1 << 20
#: A message's first bytes kept to yield it raw when it is nested too deep.
RAW_SIZE = 1 << 20
#: A part's header block is read up to this size; what follows is its body.
MAX_HEADER = 1 << 20
#: Longest line looked at as a possible boundary (RFC 2046: boundaries have at most 70 characters).
MAX_BOUNDARY_LINE = 1024
#: How much is read at a time.
BLOCK = 1 << 18

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
_UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})

# What the email package's feed parser takes for a header line (compat32).
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
_BASE64_KEPT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_KEPT)))

__all__ = ["ARCHIVE_TYPES", "HEAD_SIZE", "MAX_DEPTH", "classify", "iter_texts"]


def iter_texts(inputs):
    """Yield ``(label, binary stream)`` for every candidate text in ``inputs``.

    ``inputs``: a list of paths (str, bytes, os.PathLike) and ``(label,
    binary stream)`` pairs.  See the module documentation for what is yielded.
    Raises :class:`NoInputError` for an input that does not exist or cannot be
    read, or a directory that is not a Maildir, when the iteration reaches it.
    """
    for item in iter_messages(inputs):
        if item.kind == "text":
            yield item.label, item.stream
        elif item.number is not None:
            yield from message_texts("%s: message %d, " % (item.label, item.number), item.stream)
        else:
            yield from message_texts("%s: " % item.label, item.stream)


# -- messages as streams -------------------------------------------------------------


class _Tee(io.RawIOBase):
    """A stream that keeps the first RAW_SIZE bytes read from it (``kept`` None past that)."""

    def __init__(self, stream):
        self.stream = stream
        self.kept = bytearray()

    def readable(self):
        return True

    def readinto(self, b):
        data = self.stream.read(len(b))
        if not data:
            return 0
        n = len(data)
        b[:n] = data
        if self.kept is not None:
            self.kept += data
            if len(self.kept) > RAW_SIZE:
                self.kept = None
        return n


class _TooDeep(Exception):
    pass


class _Walk:
    """The state of one message's walk: its reader, what was yielded, the last boundary met."""

    def __init__(self, stream):
        self.tee = _Tee(stream)
        self.src = Buffer(self.tee)
        self.yielded = False

    def can_restart(self):
        return not self.yielded and self.tee.kept is not None


def message_texts(prefix, stream):
    """``(label, stream)`` for each wanted part of the message read from ``stream``, as it is read.

    Labels are ``prefix + "part 2.1 (name)"``.  Each stream is valid until the iteration goes
    on; what the caller did not read of it is skipped then.
    """
    walk = _Walk(stream)
    try:
        for number, name, chunks in _walk(walk, walk.src, (), 0, [], False, "text/plain", True):
            label = prefix + "part " + (".".join(map(str, number)) or "1")
            if name:
                label += " (%s)" % _printable(name)
            yield label, io.BufferedReader(ChunkStream(chunks), BLOCK)
    except _TooDeep:
        rest = iter(lambda: stream.read(BLOCK), b"")
        yield prefix + "part 1", io.BufferedReader(ChunkStream(itertools.chain([bytes(walk.tee.kept)], rest)), BLOCK)


def _walk(walk, src, number, depth, bounds, drop, default, in_message):
    """Yield ``(number, name, chunks)`` for each wanted leaf of the part that begins at ``src``.

    ``bounds``: the boundary lines (``b"--" + boundary``) of the enclosing multiparts, innermost
    last; the part ends before any of them.  ``drop``: whether the end of the input inside a
    multipart takes the last line end with it.  ``in_message``: the part is a message (the top
    one, or one forwarded): when it is no multipart, its body is numbered ``number + (1,)``.
    """
    part = _headers(src, bounds, top=depth == 0)
    if default != "text/plain":
        part.set_default_type(default)
    ctype = part.get_content_type()
    maintype = part.get_content_maintype()
    boundary = _boundary_of(part) if maintype == "multipart" else None
    if in_message and boundary is None:
        number = number + (1,)
    container = boundary is not None or ctype in _MESSAGE_TYPES
    if container and depth >= MAX_DEPTH:
        if walk.can_restart():
            raise _TooDeep
        container = False  # yielded raw, as one text
        boundary = None
    if boundary is not None:
        yield from _multipart(walk, src, number, depth, bounds, drop, part, boundary)
    elif container:
        if _encoding(part) == "base64":
            body = _body(src, bounds, drop)
            inner = Buffer(ChunkStream(_b64_chunks(body)))
            yield from _walk(walk, inner, number, depth + 1, [], False, "text/plain", True)
            for _chunk in body:
                pass
        else:
            yield from _walk(walk, src, number, depth + 1, bounds, drop, "text/plain", True)
    elif maintype == "message" and ctype not in _MESSAGE_TYPES and not container and depth < MAX_DEPTH:
        for _chunk in _body(src, bounds, drop):  # message/delivery-status and the like: header blocks only
            pass
    else:
        yield from _leaf(walk, src, number, part, _body(src, bounds, drop))


def _leaf(walk, src, number, part, body):
    name = _filename(part)
    if _wanted(part, name):
        chunks = _decoded(part, body)
        walk.yielded = True
        yield number, name, chunks
        for _chunk in chunks:  # what the caller did not read
            pass
    for _chunk in body:  # what the decoder did not need (after a uuencoded 'end')
        pass


def _multipart(walk, src, number, depth, bounds, drop, part, boundary):
    inner = bounds + [boundary]
    preamble = _body(src, inner, drop)
    kept, size = [], 0
    for chunk in preamble:
        kept.append(chunk)
        size += len(chunk)
        if size > PREAMBLE_SIZE:
            break
    else:
        if src.hit is not None and src.hit[0] == boundary:
            kept = None  # found: the preamble is no part
    if kept is not None:  # the boundary never came: the body is one text
        yield from _leaf(walk, src, number, part, itertools.chain(kept, preamble))
        return
    subtype = part.get_content_subtype()
    default = "message/rfc822" if subtype == "digest" else "text/plain"
    index = 0
    while src.hit is not None and src.hit[0] == boundary and not src.hit[1]:
        _take_line(src)
        index += 1
        yield from _walk(walk, src, number + (index,), depth + 1, inner, True, default, False)
    if src.hit is not None and src.hit[0] == boundary:  # the close delimiter: skip the epilogue
        _take_line(src)
        for _chunk in _body(src, bounds, drop):
            pass


def _boundary_of(part):
    try:
        boundary = part.get_boundary()
    except Exception:  # a malformed parameter: no boundary
        return None
    if not boundary:
        return None
    return b"--" + boundary.encode("ascii", "surrogateescape")


# -- reading lines and bodies ----------------------------------------------------------------


def _line_at(src, limit):
    """The line at ``src.pos`` (line end included, at most ``limit`` bytes), not taken."""
    start = 0
    while True:
        end = src.buf.find(b"\n", src.pos + start, src.pos + limit)
        if end >= 0:
            return bytes(src.buf[src.pos : end + 1])
        have = len(src.buf) - src.pos
        if have >= limit or (src.eof or not src.fill(have + BLOCK)) and len(src.buf) - src.pos == have:
            return bytes(src.buf[src.pos : src.pos + limit])
        start = have


def _take_line(src):
    line = _line_at(src, MAX_BOUNDARY_LINE)
    src.pos += len(line)
    if len(line) >= MAX_BOUNDARY_LINE and not line.endswith(b"\n"):  # pragma: no cover - boundaries are short
        src.skip_line()


def _is_boundary(line, bounds):
    """``(boundary, is_close)`` when ``line`` is a delimiter of one of ``bounds`` (innermost first), else None."""
    if not bounds or not line.startswith(b"--"):
        return None
    s = line.rstrip(b"\r\n").rstrip(b" \t")
    for boundary in reversed(bounds):
        if s == boundary:
            return boundary, False
        if s == boundary + b"--":
            return boundary, True
    return None


def _headers(src, bounds, top):
    """Read a header block (up to its blank line, a boundary, a line that is no header, or MAX_HEADER)."""
    from email import policy
    from email.parser import BytesHeaderParser

    lines = []
    size = 0
    first = True
    while size < MAX_HEADER:
        line = _line_at(src, MAX_HEADER - size)
        if not line:
            break
        if line in (b"\n", b"\r\n"):
            src.pos += len(line)
            break
        if _is_boundary(line, bounds) or not _HEADER_LINE.match(line):
            break
        src.pos += len(line)
        if not (first and top and line.startswith(b"From ")):  # a Unix From_ line
            lines.append(line)
        first = False
        size += len(line)
    try:
        return BytesHeaderParser(policy=policy.compat32).parsebytes(b"".join(lines))
    except Exception:  # pragma: no cover - the parser forgives anything in headers
        from email.message import Message

        return Message()


def _body(src, bounds, drop):
    """The raw bytes of a body as chunks, up to the next delimiter line of ``bounds`` or the end.

    The line end before a delimiter is the delimiter's; at the end of the input, ``drop`` says
    whether the last line end goes too.  ``src.hit`` is set to what ended the body:
    ``(boundary, is_close)``, the delimiter left unread at ``src.pos``, or None (the end).
    """
    src.hit = None
    held = b""  # a line end taken and not given out: the delimiter's, if one follows
    at_start = True  # src.pos is at the start of a line
    while True:
        buf = src.buf
        pos = src.pos
        if at_start and bounds:
            if len(buf) - pos < 2 and not src.eof:
                src.fill(2)
                continue
            if buf.startswith(b"--", pos):
                hit = _is_boundary(_line_at(src, MAX_BOUNDARY_LINE), bounds)
                if hit is not None:
                    src.hit = hit
                    return
                buf, pos = src.buf, src.pos  # _line_at may have moved the buffer
        if pos >= len(buf):
            if src.eof or not src.fill(BLOCK):
                if held and not drop:
                    yield held
                return
            continue
        nl = buf.find(b"\n--", pos) if bounds else -1
        if nl >= 0:
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            chunk = held + bytes(buf[pos:end]) if end > pos or held else b""
            if chunk:
                yield chunk
            held = bytes(buf[end : nl + 1])
            src.pos = nl + 1
            at_start = True
            continue
        if src.eof:
            data = bytes(buf[pos:])
            src.pos = len(buf)
            if drop and bounds is not None:
                if data.endswith(b"\r\n"):
                    data = data[:-2]
                elif data.endswith(b"\n"):
                    data = data[:-1]
            if held or data:
                yield held + data
            return
        # No delimiter in view: give out all but what could begin one ("\r\n-").
        keep = len(buf) - 3 if bounds else len(buf)
        if keep > pos:
            chunk = held + bytes(buf[pos:keep])
            held = b""
            src.pos = keep
            at_start = False
            yield chunk
        src.fill(len(src.buf) - src.pos + BLOCK)
        # at_start stays as it was when nothing was given out


# -- decoding --------------------------------------------------------------------------------


def _decoded(part, body):
    """A leaf's body decoded as chunks, as far as it goes."""
    encoding = _encoding(part)
    if encoding == "base64":
        return _b64_chunks(body)
    if encoding == "quoted-printable":
        return _lf_chunks(_qp_chunks(body))
    if encoding in _UU_ENCODINGS:
        return _lf_chunks(_uu_chunks(body))
    return _lf_chunks(body)


def _b64_chunks(chunks):
    """Base64 decoded leniently: junk skipped, padding ends a run, a cut end decoded to its last byte."""
    pending = b""
    for chunk in chunks:
        runs = chunk.translate(None, _NOT_BASE64).split(b"=")
        for run in runs[:-1]:
            out = _b64_run(pending + run)
            pending = b""
            if out:
                yield out
        pending += runs[-1]
        whole = len(pending) - len(pending) % 4
        if whole:
            yield binascii.a2b_base64(pending[:whole])
            pending = pending[whole:]
    if pending:
        out = _b64_run(pending)
        if out:
            yield out


def _b64_run(run):
    extra = len(run) % 4
    if extra == 1:  # six bits: not a byte
        run = run[:-1]
        extra = 0
    return binascii.a2b_base64(run + b"=" * (-extra % 4)) if run else b""


def _qp_chunks(chunks):
    """Quoted-printable decoded a run of whole lines at a time (a soft break is within a line)."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        if not cut and len(data) > BLOCK:  # a very long line: cut it where no escape is split
            cut = len(data) - 2
            while cut > 0 and b"=" in data[cut : cut + 1]:
                cut -= 1
        if cut:
            yield binascii.a2b_qp(data[:cut])
            carry = data[cut:]
        else:
            carry = data
    if carry:
        yield binascii.a2b_qp(carry)


def _lines(chunks):
    """The lines of a stream of chunks (line ends kept); a line is cut at BLOCK bytes."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            yield data[start : end + 1]
            start = end + 1
        carry = data[start:]
        if len(carry) > BLOCK:
            yield carry
            carry = b""
    if carry:
        yield carry


def _uu_chunks(chunks):
    """A uuencoded body decoded as the email package does, as far as it goes; without a
    ``begin`` line in its first HEAD_SIZE bytes, the body as it is."""
    lines = _lines(chunks)
    before, size = [], 0
    for line in lines:
        if line.startswith(b"begin "):
            mode = line[6:].split(b" ", 1)[0]
            try:
                int(mode, 8)
            except ValueError:
                pass
            else:
                break
        before.append(line)
        size += len(line)
        if size > HEAD_SIZE:
            break
    else:
        yield b"".join(before)
        return
    if size > HEAD_SIZE:
        yield b"".join(before)
        yield from lines
        return
    out, got = [], 0
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line or line.strip(b" \t\r\n\f") == b"end":
            break
        try:
            decoded = binascii.a2b_uu(line)
        except binascii.Error:
            # Workaround for broken uuencoders by /Fredrik Lundh (as the email package)
            nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
            try:
                decoded = binascii.a2b_uu(line[:nbytes])
            except binascii.Error:
                break
        out.append(decoded)
        got += len(decoded)
        if got >= BLOCK:
            yield b"".join(out)
            out, got = [], 0
    if out:
        yield b"".join(out)


def _lf_chunks(chunks):
    """Text whose lines end in CRLF (a mail's own line ends, kept by a client) with LF line ends.

    Decided on the first HEAD_SIZE bytes: a part shorter than that gets LF line ends when
    every one of its lines ends in CRLF; a longer one when every line in its first
    HEAD_SIZE bytes does."""
    chunks = iter(chunks)
    head, size = [], 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size > HEAD_SIZE:
            break
    else:
        data = b"".join(head)
        if data:
            yield _lf(data)
        return
    data = b"".join(head)
    whole = data[: data.rfind(b"\n") + 1]
    if not _all_crlf(whole):
        yield data
        yield from chunks
        return
    cr = False
    for chunk in itertools.chain([data], chunks):
        if cr:
            chunk = b"\r" + chunk
        cr = chunk.endswith(b"\r")
        if cr:
            chunk = chunk[:-1]
        out = chunk.replace(b"\r\n", b"\n")
        if out:
            yield out
    if cr:
        yield b"\r"


def _lf(data):
    return data.replace(b"\r\n", b"\n") if _all_crlf(data) else data


def _all_crlf(data):
    """Whether ``data`` has lines and every one of them ends in CRLF."""
    lines = data.count(b"\n")
    return lines > 0 and data.count(b"\r\n") == lines


# -- header values ---------------------------------------------------------------------------


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
