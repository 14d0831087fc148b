"""Composing a mail from a body and attachments, as bytes, without surprises.

The message is built by hand rather than with ``email.message.EmailMessage``:
each attachment is read and base64-encoded once and the message is a list of
byte segments, each ending at a line end, that a transport writes or sends in
turn (``EmailMessage.as_bytes`` peaks at about five times an attachment).
Lines end in ``\\n`` here; the SMTP transport sends ``\\r\\n``.
"""

import binascii
import os
import re

from pipemail import __version__
from pipemail.errors import DataError, NoInputError, describe_oserror, shown

_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322: printable ASCII but colon
_B64_LINE = 57  # bytes per 76-character base64 line
_SUSPECT = bytes(c for c in range(32) if c not in b"\t\n\r\f\v\x1b") + b"\x7f"
_NOT_SUSPECT = bytes(c for c in range(256) if c not in _SUSPECT)
_BINARY_STARTS = (b"%PDF-", b"PK\x03\x04", b"\x7fELF", b"GIF8", b"\x1f\x8b")
_TEXTUAL = ("application/json", "application/xml", "application/javascript", "application/x-sh", "inode/x-empty")
_MIME_HEADERS = ("mime-version", "content-type", "content-transfer-encoding", "content-disposition")


def check_value(what, value):
    """Refuse a header value (from the command line) holding a line break: no header injection."""
    if "\r" in value or "\n" in value:
        raise DataError("%s holds a line break, which would inject a header: %s" % (what, shown(value)))
    return value


def parse_header_option(text):
    """``Name: value`` from ``-H``, checked."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _FIELD_NAME.fullmatch(name):
        raise DataError("bad header %s: give it as 'Name: value'" % shown(text))
    return name, check_value("header %s" % name, value.strip())


def encode_header_value(value):
    """RFC 2047 for a non-ASCII unstructured value (a Subject)."""
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8", maxlinelen=998).encode()


def addresses(values):
    """Parsed ``(name, addr)`` pairs from recipient strings; refuses what is not an address."""
    from email.utils import getaddresses

    out = []
    for value in values:
        check_value("address", value)
        for name, addr in getaddresses([value]):
            if not addr or "@" not in addr or addr.startswith("-") or any(c in addr for c in ' <>,;"\\'):
                raise DataError("not a mail address: %s" % shown(value))
            out.append((name, addr))
    return out


def format_address(pair):
    name, addr = pair
    if not name:
        return addr
    from email.utils import formataddr

    if addr.isascii():
        return formataddr((name, addr), charset="utf-8")
    # an internationalised address (SMTPUTF8) stays raw; the name is encoded if need be
    shown_name = encode_header_value(name) if not name.isascii() else formataddr((name, "x@y")).rsplit(" <", 1)[0]
    return "%s <%s>" % (shown_name, addr)


def needs_smtputf8(addrs):
    return any(not addr.isascii() for addr in addrs)


# -- the body ---------------------------------------------------------------------


def _is_7bit_safe(data):
    if data and not data.endswith(b"\n"):
        return False  # QP ends it with a soft line break: not a byte is added
    if not data.isascii() or b"\r" in data or b"\0" in data:
        return False
    if data.startswith(b".\n") or b"\n.\n" in data or data == b"." or data.endswith(b"\n."):
        return False
    return all(len(line) <= 998 for line in data.split(b"\n"))


def quoted_printable(data):
    """QP text that brings every byte back: CR, 8-bit, long lines, a lone '.'."""
    out = []
    lines = data.split(b"\n")
    for line in lines:
        enc = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False)
        if enc == b".":
            enc = b"=2E"
        elif enc.startswith(b"From "):
            enc = b"=46" + enc[1:]
        out.append(enc)
    text = b"\n".join(out)
    if data and not data.endswith(b"\n"):
        text += b"=\n"  # a soft line break: the body ends without a newline, the message with one
    return text


def classify_body(data):
    """``("text", charset)`` or ``("binary", mime_type)`` for stdin."""
    if b"\0" in data:
        return "binary", _mime_type(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        # Valid UTF-8 is text, unless it holds control bytes or starts like a
        # binary format, and python-magic then says it is not text (libmagic
        # costs 20 ms to load, so only then).
        if not data.translate(None, _NOT_SUSPECT) and not data.startswith(_BINARY_STARTS):
            return "text", "utf-8"
        kind = _mime_type(data)
        if kind.startswith("text/") or kind in _TEXTUAL:
            return "text", "utf-8"
        return "binary", kind
    charset = _magic(data, mime_encoding=True)
    if charset and charset not in ("binary", "unknown-8bit"):
        try:
            import codecs

            codecs.lookup(charset)
            data.decode(charset)
            return "text", charset
        except (LookupError, UnicodeDecodeError):
            pass
    return "binary", _mime_type(data)


def _magic(data, **kw):
    try:
        import magic
    except ImportError:  # libmagic missing: fall back on extensions
        return None
    try:
        return magic.Magic(**kw).from_buffer(data[: 1 << 20])
    except Exception:  # magic's errors are its own; a guess is all we want
        return None


def _mime_type(data, name=None):
    kind = _magic(data, mime=True)
    if not kind or kind in ("application/x-empty", "inode/x-empty") or "/" not in kind:
        kind = None
    if kind is None and name:
        import mimetypes

        kind = mimetypes.guess_type(name)[0]
    return kind or "application/octet-stream"


def _extension(mime):
    import mimetypes

    return mimetypes.guess_extension(mime) or ".bin"


def _param(name, value):
    """A MIME parameter; RFC 2231 when the value is not plain ASCII."""
    if value.isascii() and not any(c in value for c in '"\\\r\n'):
        return '%s="%s"' % (name, value)
    from urllib.parse import quote

    return "%s*=utf-8''%s" % (name, quote(value.encode("utf-8", "surrogateescape"), safe=""))


class Part:
    def __init__(self, headers, body):
        self.headers = headers  # [(name, value)]
        self.body = body  # bytes, lines ending in \n except perhaps the last


def text_part(data, charset):
    if _is_7bit_safe(data):
        cte, body = "7bit", data
    else:
        cte, body = "quoted-printable", quoted_printable(data)
    return Part([("Content-Type", "text/plain; charset=%s" % charset), ("Content-Transfer-Encoding", cte)], body)


def attachment_part(data, filename, mime=None, *, seven_bit=False):
    """An attachment, base64; as it is (7bit) when ``seven_bit`` and the data is 7-bit safe."""
    mime = mime or _mime_type(data, filename)
    cte = "7bit" if seven_bit and _is_7bit_safe(data) else "base64"
    return Part(
        [
            ("Content-Type", "%s; %s" % (mime, _param("name", filename))),
            ("Content-Disposition", "attachment; %s" % _param("filename", filename)),
            ("Content-Transfer-Encoding", cte),
        ],
        data if cte == "7bit" else base64_lines(data),
    )


def base64_lines(data):
    """``data`` as base64 lines of 76 characters in one buffer, framed a thousand lines at a time."""
    from pipemail.uu import _splitter

    out = bytearray()
    step = _B64_LINE * 1024
    view = memoryview(data)
    for i in range(0, len(data), step):
        chunk = view[i : i + step]
        whole = len(chunk) - len(chunk) % _B64_LINE
        if whole:
            text = binascii.b2a_base64(chunk[:whole], newline=False)
            out += b"\n".join(_splitter(whole // _B64_LINE, 76).unpack(text))
            out += b"\n"
        if whole < len(chunk):
            out += binascii.b2a_base64(chunk[whole:])
    return out


def open_attachment(path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise NoInputError("cannot attach %s: %s" % (shown(os.fsdecode(path)), describe_oserror(exc))) from None


def read_attachment(path):
    with open_attachment(path) as f:
        try:
            return f.read()
        except OSError as exc:
            raise NoInputError("cannot attach %s: %s" % (shown(os.fsdecode(path)), describe_oserror(exc))) from None


# -- the whole message -----------------------------------------------------------------


class Message:
    """Header fields and MIME parts; ``segments()`` gives the bytes in order."""

    def __init__(self, headers, parts=None, raw_body=None):
        self.headers = headers
        self.parts = parts or []
        self.raw_body = raw_body  # -t: the body as given, after the headers
        self.boundary = None

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def add_header(self, name, value):
        self.headers.append((name, value))

    def remove_header(self, name):
        self.headers = [(n, v) for n, v in self.headers if n.lower() != name.lower()]

    def segments(self):
        """The message as byte segments, each ending with a newline (lines end in \\n)."""
        head = "".join("%s: %s\n" % (n, v) for n, v in self.headers).encode("utf-8", "surrogateescape")
        if self.raw_body is not None:
            yield head + b"\n"
            if self.raw_body:
                yield self.raw_body if self.raw_body.endswith(b"\n") else self.raw_body + b"\n"
            return
        if self.boundary is None:  # one part: its headers are the message's
            part = self.parts[0]
            yield head + _part_head(part) + b"\n"
            yield _ended(part.body)
            return
        b = self.boundary.encode()
        yield head + b"\nThis is a MIME message with attachments.\n"
        for part in self.parts:
            yield b"\n--" + b + b"\n" + _part_head(part) + b"\n"
            yield _ended(part.body)
        yield b"\n--" + b + b"--\n"

    def as_bytes(self):
        return b"".join(self.segments())

    def size(self):
        return crlf_size(self.segments())


def crlf_size(segments):
    """The size of a message's ``segments`` with CRLF line ends, as SMTP carries it."""
    return sum(len(s) + s.count(b"\n") for s in segments)


def _part_head(part):
    return "".join("%s: %s\n" % (n, v) for n, v in part.headers).encode("ascii")


def _ended(body):
    return body if body.endswith(b"\n") or not body else body + b"\n"


def fqdn():
    import socket

    try:
        return socket.getfqdn() or "localhost"
    except OSError:
        return "localhost"


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
):
    """A :class:`Message` for ``body`` (bytes from stdin) and ``attachments`` (paths).

    Binary stdin is attached instead of sent as a broken body.  Every
    attachment is opened before anything is composed (a missing one is a
    NoInputError, 66), then read and encoded one at a time.
    """
    from email.utils import formatdate, make_msgid

    for p in attachments:  # every attachment readable before anything is composed (66)
        with open_attachment(p):
            pass
    parts = []
    kind, what = classify_body(body)
    if kind == "text":
        if body or not attachments:
            parts.append(text_part(body, what))
    else:
        name = stdin_name or ("stdin" + _extension(what))
        parts.append(attachment_part(body, name, what))
    for p in attachments:  # read and encode one at a time: only the encoded text stays
        parts.append(attachment_part(read_attachment(p), os.path.basename(os.fsdecode(p))))
    headers = [
        ("Date", date or formatdate(localtime=True)),
        ("Message-ID", message_id or make_msgid(domain=fqdn())),
        ("From", format_address(sender)),
    ]
    if to:
        headers.append(("To", ", ".join(format_address(a) for a in to)))
    if cc:
        headers.append(("Cc", ", ".join(format_address(a) for a in cc)))
    if subject is not None:
        headers.append(("Subject", encode_header_value(check_value("subject", subject))))
    headers.append(("MIME-Version", "1.0"))
    headers.append(("User-Agent", "pipemail/%s" % __version__))
    for name, value in extra_headers:
        if name.lower() in _MIME_HEADERS:
            from pipemail.errors import UsageError

            raise UsageError("-H %s: pymail writes the MIME headers itself" % name)
        value = encode_header_value(value)
        mine = [i for i, (n, _v) in enumerate(headers) if n.lower() == name.lower()]
        if mine:  # -H Subject: replaces pymail's own, never a second one
            headers[mine[0]] = (headers[mine[0]][0], value)
        else:
            headers.append((name, value))
    msg = Message(headers, parts)
    if len(parts) > 1 or attachments:  # attachments always in multipart/mixed, even without a text
        msg.boundary = "=_pipemail_" + os.urandom(12).hex()
        msg.headers.append(("Content-Type", 'multipart/mixed; boundary="%s"' % msg.boundary))
    return msg


def from_stdin_message(data):
    """``-t``: stdin is a whole message; its header fields (bytes kept as they are) and its body."""
    sep = re.search(rb"\r?\n\r?\n", data)
    head, body = (data[: sep.start()], data[sep.end() :]) if sep else (data, b"")
    headers = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        text = line.decode("utf-8", "surrogateescape")
        if text[:1] in (" ", "\t") and headers:  # a folded continuation
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + text)
            continue
        name, colon, value = text.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name.strip()):
            raise DataError("-t: not a header line in the message: %s" % shown(line[:80]))
        headers.append((name.strip(), value.strip()))
    return Message(headers, raw_body=body.replace(b"\r\n", b"\n"))
