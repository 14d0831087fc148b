"""Composing a mail from a body and attachments, as a stream, without surprises.

The message is built by hand rather than with ``email.message.EmailMessage``
(whose ``as_bytes`` peaks at about five times an attachment): it is fixed once
(Date, Message-ID, boundaries, which encoding each part takes) and then made
while it is read, as often as it is read (the SMTP SIZE pass, the delivery, the
dead letter), from sources held open: stdin's spool file and the attachments.
base64 is made from whole 57-byte groups a chunk at a time, quoted-printable line
by line; sizes are computed without making the message (base64 from the file's
size, the rest counted on a pass).  Memory stays bounded at any size.  Lines end
in ``\\n`` here; the SMTP transport sends ``\\r\\n``.
"""

import binascii
import codecs
import os
import re
import stat

from pipemail import __version__
from pipemail.errors import ChangedError, DataError, IOFailure, NoInputError, describe_oserror, shown
from pipemail.lines import line_over

_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322: printable ASCII but colon
_B64_LINE = 57  # bytes per 76-character base64 line
_SUSPECT = bytes(c for c in range(32) if c not in b"\t\n\r\f\v\x1b") + b"\x7f"
_NOT_SUSPECT = bytes(c for c in range(256) if c not in _SUSPECT)
_BINARY_STARTS = (b"%PDF-", b"PK\x03\x04", b"\x7fELF", b"GIF8", b"\x1f\x8b")
_TEXTUAL = ("application/json", "application/xml", "application/javascript", "application/x-sh", "inode/x-empty")
_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # the UTF-32 ones start like these
_MIME_HEADERS = ("mime-version", "content-type", "content-transfer-encoding", "content-disposition")


# The fields -H may not set, and what to use instead: an option that also puts the address
# in the envelope (and keeps a Bcc out of the headers); the MIME fields are pymail's own
REFUSED_HEADERS = {
    "from": "the sender is -r ADDR (--from)",
    "sender": "pymail does not set Sender: the sender is -r ADDR (--from)",
    "to": "give the recipients as RECIPIENT operands",
    "cc": "use -c ADDR (--cc)",
    "bcc": "use -b ADDR (--bcc), which keeps the address out of the headers",
    "subject": "use -s SUBJECT (--subject)",
}
REFUSED_HEADERS.update((h, "pymail writes the MIME headers itself") for h in _MIME_HEADERS)


def check_value(what, value):
    """Refuse a header value (from the command line) holding a line break: no header injection;
    or bytes that are not UTF-8 (a name passed through from a file system, say)."""
    if "\r" in value or "\n" in value:
        raise DataError("%s holds a line break, which would inject a header: %s" % (what, shown(value)))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError("%s is not valid UTF-8: %s" % (what, shown(value))) from None
    return value


def parse_header_option(text):
    """``Name: value`` from ``-H``, checked: a UsageError for the headers that options set."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _FIELD_NAME.fullmatch(name):
        raise DataError("bad header %s: give it as 'Name: value'" % shown(text))
    if name.lower() in REFUSED_HEADERS:
        from pipemail.errors import UsageError

        raise UsageError("-H %s: %s" % (name, REFUSED_HEADERS[name.lower()]))
    return name, check_value("header %s" % name, value.strip())


def subject_value(subject):
    """The Subject field's value for ``-s``: RFC 2047 where it is not ASCII, folded."""
    from pipemail import headers

    return headers.unstructured("Subject", check_value("subject", subject))


_LOCAL = re.compile(r"[\w!#$%&'*+/=?^`{|}~.-]+")


def addresses(values):
    """Parsed ``(name, addr)`` pairs from recipient strings; refuses what is not an address.

    A bare local name (``root``, no ``@``) is an address: pymail's sending gives it the
    account's domain where the transport needs one."""
    from email.utils import getaddresses

    out = []
    for value in values:
        check_value("address", value)
        pairs = _stdlib(getaddresses, [value], value)
        for _name, addr in pairs:
            # addr not in value: getaddresses joined words ("x@y.org z" -> x@y.orgz)
            bad = not addr or addr.startswith("-") or any(c in addr for c in ' <>,;"\\') or addr not in value
            bad = bad or addr.startswith("@") or addr.endswith("@")  # no local part, or no domain
            if bad or (is_bare(addr) and not _LOCAL.fullmatch(addr)):
                raise DataError("not a mail address: %s" % shown(value))
        if any(is_bare(addr) for _n, addr in pairs) and not _same_addresses(value, pairs):
            raise DataError("not a mail address: %s" % shown(value))
        out += pairs
    return out


def _same_addresses(value, pairs):
    """Whether the RFC 5322 parser finds the addresses getaddresses found, which drops the
    words after a bare name ("root admin" -> root): a typo must not lose a recipient."""
    from email.headerregistry import HeaderRegistry

    found = _stdlib(lambda v: [a.addr_spec for a in HeaderRegistry()("To", v).addresses], value, value)
    return found == [a for _n, a in pairs]


def _stdlib(parse, arg, value):
    """``parse(arg)``, a parser of the email package, whose own errors on input it cannot read
    (AttributeError, IndexError, TypeError, ValueError, UnboundLocalError...) become the
    DataError that names ``value``: bad input is never an internal error."""
    try:
        got = parse(arg)
    except Exception:
        raise DataError("not a mail address: %s" % shown(value)) from None
    for item in [got] if isinstance(got, tuple) else got:  # (name, addr) pairs, or addresses
        addr = item[1] if isinstance(item, tuple) else item
        try:  # bytes that are not UTF-8 (kept as surrogates) can be neither sent nor queued
            addr.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError("not a mail address (not valid UTF-8): %s" % shown(value)) from None
    return got


def header_addresses(values):
    """The ``(name, addr)`` pairs of header field values (To, Cc, From...), as getaddresses reads
    them; DataError naming the value it cannot read."""
    from email.utils import getaddresses

    out = []
    for value in values:
        out += _stdlib(getaddresses, [value], value)
    return out


def header_address(value):
    """``(name, addr)`` of one header field value, as parseaddr reads it; DataError as above."""
    from email.utils import parseaddr

    return _stdlib(parseaddr, value, value)


def is_bare(addr):
    """Whether ``addr`` is a local name without a domain (``root``)."""
    return "@" not in addr


def needs_smtputf8(addrs):
    return any(not addr.isascii() for addr in addrs)


# -- sources: the bytes a part is made of, read as often as needed -------------------------

CHUNK = 1 << 20  # bytes read at a time from a source
_B64_GROUPS = 16384  # 57-byte groups per base64 chunk: 933,888 bytes in, 1,261,568 out
_HEAD = 1 << 16  # what libmagic is shown of a file: its start


class Data:
    """Bytes in memory as a source: re-iterable chunks, ``size``, ``head()``."""

    def __init__(self, data):
        self.data = bytes(data)
        self.size = len(self.data)
        self.stats = None  # the scan's Stats, once made

    def __iter__(self):
        for i in range(0, self.size, CHUNK):
            yield self.data[i : i + CHUNK]

    def head(self, n=_HEAD):
        return self.data[:n]

    def tail(self, start):
        return Data(self.data[start:])


class FileData:
    """The bytes of a file held open, from ``start`` on, read in chunks each time they are
    iterated (pread: no shared offset).  The file must not change while pymail holds it: a
    size or modification time other than at opening is an IOFailure when it is read (the
    message is fixed once; a dead letter must keep what went out)."""

    def __init__(self, f, label, start=0, path=None):
        self.file = f  # kept: the descriptor lives as long as this source
        self.fd = f.fileno()
        self.label = label
        self.path = path
        st = os.fstat(self.fd)
        self.stamp = (st.st_size, st.st_mtime_ns)
        self.start = start
        self.size = st.st_size - start
        self.stats = None

    def check(self):
        st = os.fstat(self.fd)
        if (st.st_size, st.st_mtime_ns) != self.stamp:
            raise ChangedError(
                "%s changed while pymail was sending it (it was %d bytes when opened, now %d, "
                "or its modification time changed): not sent as a different message"
                % (self.label, self.stamp[0], st.st_size)
            )

    def _read(self, n, pos):
        try:
            return os.pread(self.fd, n, pos)
        except OSError as exc:
            raise IOFailure("cannot read %s: %s" % (self.label, describe_oserror(exc))) from None

    def __iter__(self):
        self.check()
        pos, end = self.start, self.start + self.size
        while pos < end:
            data = self._read(min(CHUNK, end - pos), pos)
            if not data:
                self.check()
                raise IOFailure("cannot read %s: it is shorter than it was" % self.label)
            pos += len(data)
            yield data
        self.check()

    def head(self, n=_HEAD):
        return self._read(min(n, self.size), self.start)

    def close(self):
        self.file.close()

    def tail(self, start):
        tail = FileData.__new__(FileData)
        tail.__dict__.update(self.__dict__)
        tail.start, tail.size, tail.stats = self.start + start, self.size - start, None
        return tail


def source(data):
    """A source for ``data``: bytes are wrapped (:class:`Data`), a source is itself."""
    return Data(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


class Stats:
    """What one pass over a source tells: its size, its lines, and which bytes it holds."""

    def __init__(self):
        self.size = 0
        self.newlines = 0
        self.dots = 0  # lines that start with '.' (SMTP doubles the dot)
        self.nul = False
        self.cr = False
        self.ascii = True
        self.utf8 = True
        self.suspect = False  # control bytes that text does not hold
        self.long_line = False  # a line over 998 bytes
        self.lone_dot = False  # a line holding a single '.'
        self.ends_nl = True  # empty, or ending with a newline
        self.trailing_space = False  # a line ending in a space or a tab (a transport may strip it)
        self.from_line = False  # a line starting with "From " (an mbox quotes it: ">From ")
        # False when the pass stopped at a NUL byte (binary: nothing more is needed of it);
        # size, newlines, dots and the rest then tell only what came before
        self.complete = True

    @property
    def seven_bit_safe(self):
        """Whether the bytes go as they are (7bit): ASCII lines of at most 998 bytes without CR,
        NUL or a lone '.', ending with a newline (else QP ends it with a soft line break)."""
        ok = self.ascii and not (self.cr or self.nul or self.lone_dot or self.long_line)
        return ok and self.ends_nl

    @property
    def signing_safe(self):
        """Whether the bytes go as they are (7bit) in a signed message: 7-bit safe, and no line
        that a transport or a mailbox changes (RFC 3156 section 3, RFC 8551 section 3.1.1):
        one ending in white space, one starting with "From "."""
        return self.seven_bit_safe and not (self.trailing_space or self.from_line)


def scan(src):
    """The :class:`Stats` of ``src`` (one pass, made once per source)."""
    if src.stats is not None:
        return src.stats
    st = Stats()
    decoder = None
    run = 0  # the length of the line the previous chunk left open
    last = b"\n"  # the last byte so far: a line start before the first
    tail = b"\n"  # the last two bytes so far
    tail5 = b"\n"  # the last five bytes so far ("From " across a cut)
    for chunk in src:
        if not chunk:
            continue
        n = len(chunk)
        st.size += n
        st.newlines += chunk.count(b"\n")
        st.dots += chunk.count(b"\n.") + (last == b"\n" and chunk[:1] == b".")
        st.lone_dot = st.lone_dot or b"\n.\n" in chunk or b"\n.\n" in tail + chunk[:2]
        if b"\0" in chunk:  # binary: never 7bit, QP or text; the pass stops here
            st.nul, st.complete, st.ascii, st.utf8 = True, False, False, False
            break
        st.cr = st.cr or b"\r" in chunk
        if not st.trailing_space:
            st.trailing_space = b" \n" in chunk or b"\t\n" in chunk or (last in b" \t" and chunk[:1] == b"\n")
        if not st.from_line:
            st.from_line = b"\nFrom " in chunk or b"\nFrom " in tail5 + chunk[:5]
        if st.ascii and not chunk.isascii():
            st.ascii = False
            decoder = codecs.getincrementaldecoder("utf-8")()
        if decoder is not None and st.utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                st.utf8 = False
        st.suspect = st.suspect or bool(chunk.translate(None, _NOT_SUSPECT))
        if not st.long_line:
            st.long_line = line_over(chunk, run, 998)
            nl = chunk.rfind(b"\n")
            run = run + n if nl < 0 else n - nl - 1
        tail = (tail + chunk[-2:])[-2:]
        tail5 = (tail5 + chunk[-5:])[-5:]
        last = chunk[-1:]
    if decoder is not None and st.utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            st.utf8 = False
    st.ends_nl = st.size == 0 or last == b"\n"
    st.trailing_space = st.trailing_space or (st.size > 0 and last in b" \t")  # Raw adds the newline
    if not st.complete:
        st.ends_nl, st.size = False, src.size
    src.stats = st
    return st


def _decodes(src, charset):
    """Whether all of ``src`` decodes in ``charset`` (a pass)."""
    decoder = codecs.getincrementaldecoder(charset)()
    try:
        for chunk in src:
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# -- the body ---------------------------------------------------------------------


def is_blank(data):
    """Whether ``data`` (bytes or a source) holds nothing but white space (a pass)."""
    return not any(chunk.strip() for chunk in source(data))


def _is_7bit_safe(data):
    return scan(source(data)).seven_bit_safe


def _qp_line(line):
    enc = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False)
    if enc == b".":
        return b"=2E"
    if enc.startswith(b"From "):
        return b"=46" + enc[1:]
    return enc


def quoted_printable(data):
    """QP text that brings every byte back: CR, 8-bit, long lines, a lone '.'."""
    return b"".join(QuotedPrintable(source(data)))


def base64_lines(data):
    """``data`` as base64 lines of 76 characters."""
    return b"".join(Base64(source(data)))


class Body:
    """A part's body as re-iterable chunks (lines end in \\n, the last one included), with its
    sizes: ``size`` (bytes), ``newlines`` and ``dots`` (lines starting with '.'), counted by a
    pass when not known otherwise."""

    _sizes = None

    def sizes(self):
        if self._sizes is None:
            self._sizes = _count(self)
        return self._sizes


def _count(chunks):
    size = newlines = dots = 0
    last = b"\n"
    for chunk in chunks:
        if chunk:
            size += len(chunk)
            newlines += chunk.count(b"\n")
            dots += chunk.count(b"\n.") + (last == b"\n" and chunk[:1] == b".")
            last = chunk[-1:]
    return size, newlines, dots


class Raw(Body):
    """The bytes as they are (7bit), a newline added where they lack a final one."""

    def __init__(self, src):
        self.src = src

    def __iter__(self):
        last = b"\n"
        for chunk in self.src:
            if chunk:
                last = chunk[-1:]
                yield chunk
        if last != b"\n":
            yield b"\n"

    def sizes(self):
        st = scan(self.src)
        if not st.complete:
            return Body.sizes(self)
        ended = 0 if st.ends_nl else 1
        return st.size + ended, st.newlines + ended, st.dots


class Base64(Body):
    """base64 lines of 76 characters, made from whole 57-byte groups of the source a chunk at a time."""

    def __init__(self, src):
        self.src = src

    def __iter__(self):
        from pipemail.uu import splitter

        step = _B64_LINE * _B64_GROUPS
        rest = b""
        for chunk in self.src:
            data = rest + chunk if rest else chunk
            whole = len(data) - len(data) % _B64_LINE
            rest = data[whole:]
            for i in range(0, whole, step):
                piece = data[i : min(i + step, whole)]
                text = binascii.b2a_base64(piece, newline=False)
                yield b"\n".join(splitter(len(piece) // _B64_LINE, 76).unpack(text)) + b"\n"
        if rest:
            yield binascii.b2a_base64(rest)

    def sizes(self):
        n = self.src.size
        lines = -(-n // _B64_LINE)
        return 4 * (-(-n // 3)) + lines, lines, 0  # no '.' in base64


class QuotedPrintable(Body):
    """Quoted-printable, line by line, as :func:`quoted_printable` gives it."""

    def __init__(self, src):
        self.src = src

    def __iter__(self):
        rest = b""
        any_data = False
        for chunk in self.src:
            if not chunk:
                continue
            any_data = True
            data = rest + chunk if rest else chunk
            end = data.rfind(b"\n")
            if end < 0:
                rest = data
                continue
            rest = data[end + 1 :]
            yield b"\n".join(map(_qp_line, data[:end].split(b"\n"))) + b"\n"
        if rest:
            yield _qp_line(rest) + b"=\n"  # a soft line break: the body ends without a newline, the message with one
        elif not any_data:
            return


class LineEnds(Body):
    """The source with CRLF made LF (``-t``), a newline added where it lacks a final one."""

    def __init__(self, src):
        self.src = src

    def __iter__(self):
        from pipemail.lines import to_lf

        last = b"\n"
        for out in to_lf(self.src):
            last = out[-1:]
            yield out
        if last != b"\n":
            yield b"\n"


def classify_body(data):
    """``("text", charset)`` or ``("binary", mime_type)`` for stdin (bytes or a source)."""
    src = source(data)
    st = scan(src)
    head = src.head()
    if st.nul:
        return "binary", _mime_type(head)
    if st.utf8:
        # Valid UTF-8 is text, unless it holds control bytes or starts like a
        # binary format, and python-magic then says it is not text (libmagic
        # costs 20 ms to load, so only then).
        charset = "us-ascii" if st.ascii else "utf-8"
        if not st.suspect and not head.startswith(_BINARY_STARTS):
            return "text", charset
        kind = _mime_type(head)
        if kind.startswith("text/") or kind in _TEXTUAL:
            return "text", charset
        return "binary", kind
    charset = _magic_charset(src)
    if charset:
        return "text", charset
    return "binary", _mime_type(head)


def _magic_charset(src):
    """The charset libmagic names for the head of ``src``, when Python knows it and all the bytes decode in it."""
    charset = _magic(src.head(), mime_encoding=True)
    if charset and charset not in ("binary", "unknown-8bit"):
        try:
            codecs.lookup(charset)
        except LookupError:
            return None
        if _decodes(src, charset):
            return charset
    return None


def text_charset(data, given=None):
    """The charset of a text attachment, from its bytes: ``us-ascii`` (7-bit), ``utf-8``,
    else ``given`` (--attach-charset) unless a byte order mark says UTF-16 or UTF-32, else
    libmagic's, else ``unknown-8bit`` (RFC 1428, as mutt says when it cannot tell)."""
    src = source(data)
    st = scan(src)
    if not st.nul:  # NUL bytes: UTF-16 or UTF-32, which libmagic tells
        if st.ascii:
            return "us-ascii"
        if st.utf8:
            return "utf-8"
    if given and src.head(4).startswith(_BOMS):  # UTF-16 or UTF-32 that says so: not what --attach-charset names
        given = None
    return given or _magic_charset(src) or "unknown-8bit"


def charset_name(text):
    """The MIME name of a charset the user gives (``latin1`` -> ``iso-8859-1``); UsageError if unknown."""
    import email.charset

    from pipemail.errors import UsageError

    name = text.strip().lower()
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise UsageError("--attach-charset %s: not a charset Python knows" % shown(text)) from None
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.:+-]*", name):
        raise UsageError("--attach-charset %s: not a charset name" % shown(text))
    m = re.fullmatch(r"iso8859-(\d+)|cp(125\d)", codec)  # the IANA names: iso-8859-1, windows-1252
    if m:
        return "iso-8859-%s" % m.group(1) if m.group(1) else "windows-%s" % m.group(2)
    return {"ascii": "us-ascii", "utf-8": "utf-8"}.get(codec) or email.charset.ALIASES.get(name, name)


def _magic(data, **kw):
    try:
        import magic
    except ImportError:  # libmagic missing: fall back on extensions
        return None
    try:
        return magic.Magic(**kw).from_buffer(data[: 1 << 20])
    except Exception:  # magic's errors are its own; a guess is all we want
        return None


def _mime_type(head, name=None):
    kind = _magic(head, mime=True)
    if not kind or kind in ("application/x-empty", "inode/x-empty") or "/" not in kind:
        kind = None
    if kind is None and name:
        import mimetypes

        kind = mimetypes.guess_type(name)[0]
    return kind or "application/octet-stream"


def _extension(mime):
    import mimetypes

    return mimetypes.guess_extension(mime) or ".bin"


class Part:
    def __init__(self, headers, body):
        self.headers = headers  # [(name, value)]
        self.body = body  # a Body: re-iterable chunks ending in \n, with its sizes


def _as_is(st, signing):
    """Whether bytes of these Stats go 7bit: safe for a transport, and when ``signing`` for a signature."""
    return st.signing_safe if signing else st.seven_bit_safe


def text_part(data, charset, *, signing=False):
    """The text part: 7bit when it is safe (when ``signing``: safe to sign), else quoted-printable."""
    src = source(data)
    body = Raw(src) if _as_is(scan(src), signing) else QuotedPrintable(src)
    cte = "7bit" if isinstance(body, Raw) else "quoted-printable"
    from pipemail import headers

    content_type = headers.mime("Content-Type", "text/plain", [("charset", charset)])
    return Part([("Content-Type", content_type), ("Content-Transfer-Encoding", cte)], body)


def attachment_part(data, filename, mime=None, *, seven_bit=False, charset=None, signing=False):
    """An attachment (bytes or a source), base64; as it is (7bit) when ``seven_bit`` and the data is 7-bit safe
    (when ``signing``: and safe to sign, see :attr:`Stats.signing_safe`).

    A text/* part says its charset: the one its bytes tell (:func:`text_charset`), with
    ``charset`` for 8-bit text that is not UTF-8; its bytes go unchanged.  The MIME type
    is libmagic's for the head of the data."""
    from pipemail import headers

    src = source(data)
    mime = mime or _mime_type(src.head(), filename)
    cte = "7bit" if seven_bit and _as_is(scan(src), signing) else "base64"
    params = [("charset", text_charset(src, charset))] if mime.startswith("text/") else []
    return Part(
        [
            ("Content-Type", headers.mime("Content-Type", mime, params + [("name", filename)])),
            ("Content-Disposition", headers.mime("Content-Disposition", "attachment", [("filename", filename)])),
            ("Content-Transfer-Encoding", cte),
        ],
        Raw(src) if cte == "7bit" else Base64(src),
    )


def open_attachment(path, env=None):
    """The attachment at ``path`` opened and held (a :class:`FileData`); NoInputError (66) when it cannot be.

    A file that is not a regular one (a pipe, ``<(command)``, a device) is read once into a
    private spool file (see :mod:`pipemail.spool`) and attached from there."""
    label = shown(os.fsdecode(path))
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise NoInputError("cannot attach %s: %s" % (label, describe_oserror(exc))) from None
    try:
        mode = os.fstat(f.fileno()).st_mode
        if stat.S_ISDIR(mode):
            f.read(1)  # says so (EISDIR)
    except OSError as exc:
        f.close()
        raise NoInputError("cannot attach %s: %s" % (label, describe_oserror(exc))) from None
    if not stat.S_ISREG(mode):
        from pipemail import spool

        with f:
            f = spool.spool(spool.read_chunks(f), env, label)
    return FileData(f, label, path=path)


# -- the whole message -----------------------------------------------------------------


class Chunks:
    """Re-iterable chunks made by calling ``make()`` each time they are iterated."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return iter(self.make())


class Joined(Body):
    """Pieces (bytes, or :class:`Body` objects), each starting at a line start, one after the
    other: a message or a multipart body; ``sizes()`` adds the pieces' sizes without making them."""

    def __init__(self, pieces):
        self.pieces = pieces

    def __iter__(self):
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
            else:
                yield from piece

    def sizes(self):
        total = [0, 0, 0]
        for piece in self.pieces:
            if isinstance(piece, bytes):
                got = (len(piece), piece.count(b"\n"), piece.count(b"\n.") + piece.startswith(b"."))
            else:
                got = piece.sizes()
            total = [a + b for a, b in zip(total, got, strict=True)]
        return tuple(total)


def field_block(fields, encoding="ascii"):
    """Header fields ``[(name, value)]`` as their lines (bytes, each ending in LF, no blank line)."""
    return "".join("%s: %s\n" % (n, v) for n, v in fields).encode(encoding, "surrogateescape")


def new_boundary():
    """A fresh multipart boundary: random, so that no content holds it."""
    return "=_pipemail_" + os.urandom(12).hex()


class Message:
    """Header fields and MIME parts, fixed once; ``segments()`` gives the bytes in order as
    re-iterable chunks (cut anywhere, lines ending in \\n), made while they are read."""

    def __init__(self, headers, parts=None, raw_body=None):
        self.headers = headers
        self.parts = parts or []
        self.raw_body = raw_body  # -t: the body as given, after the headers (a Body)
        self.boundary = None

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def add_header(self, name, value):
        self.headers.append((name, value))

    def make_mixed(self):
        """Make the message multipart/mixed, its parts between boundaries."""
        from pipemail import headers

        self.boundary = new_boundary()
        self.headers.append(
            ("Content-Type", headers.mime("Content-Type", "multipart/mixed", [("boundary", self.boundary)]))
        )

    def entity(self):
        """``(outer, inner)``: the header fields outside the MIME entity this message carries (From,
        To, Subject, Date...), and that entity as a Message of its own: its Content-* fields, a
        blank line and its body, which is what a signature covers and what is encrypted."""
        outer = [(n, v) for n, v in self.headers if not n.lower().startswith("content-")]
        inner = Message([(n, v) for n, v in self.headers if n.lower().startswith("content-")], self.parts)
        inner.raw_body, inner.boundary = self.raw_body, self.boundary
        return outer, inner

    def remove_header(self, name):
        self.headers = [(n, v) for n, v in self.headers if n.lower() != name.lower()]

    def _pieces(self):
        """The message as bytes of its own (headers, framing) and :class:`Body` objects, in order."""
        head = field_block(self.headers, "utf-8")
        if self.raw_body is not None:
            return [head + b"\n", self.raw_body]
        if self.boundary is None:  # one part: its headers are the message's
            part = self.parts[0]
            return [head + field_block(part.headers) + b"\n", part.body]
        b = self.boundary.encode()
        out = [head + b"\nThis is a MIME message with attachments.\n"]
        for part in self.parts:
            out += [b"\n--" + b + b"\n" + field_block(part.headers) + b"\n", part.body]
        out.append(b"\n--" + b + b"--\n")
        return out

    def segments(self):
        """The message as re-iterable chunks (lines end in \\n)."""
        joined = Joined(self._pieces())
        return Chunks(joined.__iter__)

    def as_bytes(self):
        return b"".join(self.segments())

    def sizes(self):
        """``(bytes, newlines, dots)`` of the message (LF line ends), without making it: base64 parts
        from their sources' sizes, the others from a counting pass (once)."""
        return Joined(self._pieces()).sizes()

    def size(self):
        """The size with CRLF line ends, as SMTP's SIZE counts it."""
        size, newlines, _dots = self.sizes()
        return size + newlines

    def wire_size(self):
        """The size in SMTP DATA: CRLF line ends, and a dot doubled where a line starts with one."""
        size, newlines, dots = self.sizes()
        return size + newlines + dots


def crlf_size(segments):
    """The size of a message's ``segments`` (chunks) with CRLF line ends, as SMTP carries it."""
    return sum(len(s) + s.count(b"\n") for s in segments)


def fqdn():
    """The host's name for From and Message-ID: ``getfqdn()`` when it is a real name (with a
    dot, not localhost), else the name ``hostname`` gives, as Exim and mailx use.

    ``getfqdn()`` answers ``localhost`` on hosts whose /etc/hosts reads
    ``127.0.0.1 localhost NAME``: From would say root@localhost."""
    import socket

    try:
        name = socket.getfqdn()
    except OSError:
        name = ""
    if "." in name and name.lower().split(".")[0] not in ("localhost", "localhost4", "localhost6"):
        return name
    try:
        return socket.gethostname() or name or "localhost"
    except OSError:
        return name or "localhost"


def default_from():
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "nobody"
    return "%s@%s" % (user, fqdn())


def compose(
    body,
    *,
    subject=None,
    sender,
    to=(),
    cc=(),
    extra_headers=(),
    attachments=(),
    stdin_name=None,
    date=None,
    message_id=None,
    attach_charset=None,
    signing=False,
):
    """A :class:`Message` for ``body`` (stdin: bytes or a source such as its spool's
    :class:`FileData`) and ``attachments`` (paths, or sources from :func:`open_attachment`).

    Binary stdin is attached instead of sent as a broken body.  Every
    attachment is opened before anything is composed (a missing one is a
    NoInputError, 66) and held open; its MIME type is libmagic's for its head,
    and it is read and encoded while the message is read.  Every header is
    encoded and folded (:mod:`pipemail.headers`); ``extra_headers`` (from -H,
    checked by :func:`parse_header_option`) replace pymail's own of the same name
    (Date, Message-ID), never add a second one.  ``signing``: the message is to be signed, so
    text goes 7bit only when no line ends in white space or starts with "From " (else
    quoted-printable), lines that a transport or a mailbox would change under the signature.
    """
    from email.utils import formatdate, make_msgid

    from pipemail import headers

    # every attachment opened before anything is composed (66), and held open while it is sent
    opened = [p if isinstance(p, FileData) else open_attachment(p) for p in attachments]
    body = source(body)
    parts = []
    kind, what = classify_body(body)
    if kind == "text":
        if body.size or not attachments:
            parts.append(text_part(body, what, signing=signing))
    else:
        name = os.path.basename(stdin_name or "")  # a file name, as -a gives: never a path
        if name in ("", ".", ".."):
            name = "stdin" + _extension(what)
        parts.append(attachment_part(body, name, what, charset=attach_charset))
    for p, src in zip(attachments, opened, strict=True):
        path = src.path if isinstance(p, FileData) else p
        parts.append(attachment_part(src, os.path.basename(os.fsdecode(path)), charset=attach_charset))
    fields = [
        ("Date", date or formatdate(localtime=True)),
        ("Message-ID", message_id or make_msgid(domain=fqdn())),
        ("From", headers.address_list("From", [sender])),
    ]
    if to:
        fields.append(("To", headers.address_list("To", to)))
    if cc:
        fields.append(("Cc", headers.address_list("Cc", cc)))
    if subject is not None:
        fields.append(("Subject", subject_value(subject)))
    fields.append(("MIME-Version", "1.0"))
    fields.append(("User-Agent", "pipemail/%s" % __version__))
    for name, value in extra_headers:
        value = headers.field_value(name, value)
        mine = [i for i, (n, _v) in enumerate(fields) if n.lower() == name.lower()]
        if mine:  # -H Date: replaces pymail's own, never a second one
            fields[mine[0]] = (fields[mine[0]][0], value)
        else:
            fields.append((name, value))
    msg = Message(fields, parts)
    if len(parts) > 1 or attachments:  # attachments always in multipart/mixed, even without a text
        msg.make_mixed()
    return msg


HEAD_LIMIT = 1 << 20  # a header block is read whole: at most this many bytes


def header_block(src, *, lenient=False, what="the message's"):
    """The header fields of the message ``src`` (a source) and the offset where its body starts:
    ``([(name, value)], body_at)``, values as given (bytes kept as surrogates, folded lines joined
    with their newline), CRLF or LF line ends.  The block ends at a blank line, or at the end.

    ``lenient`` (sendmail's reading): the first line that is not a field starts the body (its blank
    line is the caller's to add), and a leading mbox ``From `` line is dropped; else such a line is a
    DataError.  DataError too for a block over HEAD_LIMIT bytes: a message is never held whole."""
    held = b""
    for chunk in src:
        held += chunk
        if re.search(rb"\r?\n\r?\n", held) or len(held) >= HEAD_LIMIT:
            break
    fields, pos, body_at = [], 0, None
    while pos < len(held):
        end = held.find(b"\n", pos)
        if end < 0:
            if len(held) >= HEAD_LIMIT:
                raise DataError("%s header block is over %d bytes: not a message" % (what, HEAD_LIMIT))
            end = nxt = len(held)  # the last line, without a newline
        else:
            nxt = end + 1
        line = held[pos:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            body_at = nxt
            break
        text = line.decode("utf-8", "surrogateescape")
        name, colon, value = text.partition(":")
        if text[:1] in (" ", "\t") and fields:  # a folded continuation (joined at the end: never quadratic)
            fields[-1][1].append(text)
        elif colon and _FIELD_NAME.fullmatch(name if lenient else name.strip()):
            fields.append((name.strip(), [value.strip()]))
        elif lenient and pos == 0 and line.startswith(b"From "):
            pass  # an mbox separator, as sendmail drops it
        elif lenient:
            body_at = pos  # the body starts here
            break
        else:
            raise DataError("-t: not a header line in the message: %s" % shown(line[:80]))
        pos = nxt
    else:
        if len(held) >= HEAD_LIMIT:
            raise DataError("%s header block is over %d bytes: not a message" % (what, HEAD_LIMIT))
        body_at = len(held)
    return [(name, "\n".join(lines)) for name, lines in fields], body_at


def from_stdin_message(data):
    """``-t``: stdin (bytes or a source) is a whole message; its header fields (bytes kept as
    they are) and its body, whose CRLF line ends become LF as it is read.

    A header line over 998 bytes, which a server would refuse, is folded at its white
    space (:func:`pipemail.headers.fold_given`); one without any is a DataError, and so is a
    header block over HEAD_LIMIT bytes (:func:`header_block`)."""
    from pipemail import headers

    src = source(data)
    fields, body_at = header_block(src)
    fields = [(name, headers.fold_given(name, value)) for name, value in fields]
    return Message(fields, raw_body=LineEnds(src.tail(body_at)))
