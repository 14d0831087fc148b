"""Composing a mail from a body and attachments, as bytes, without surprises.

The message is built by hand rather than with ``email.message.EmailMessage``:
each attachment is read and base64-encoded once and the message is a list of
byte segments, each ending at a line end, that a transport writes or sends in
turn (``EmailMessage.as_bytes`` peaks at about five times an attachment).
Lines end in ``\\n`` here; the SMTP transport sends ``\\r\\n``.
"""

import binascii
import codecs
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
        pairs = getaddresses([value])
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

    return [a.addr_spec for a in HeaderRegistry()("To", value).addresses] == [a for _n, a in pairs]


def is_bare(addr):
    """Whether ``addr`` is a local name without a domain (``root``)."""
    return "@" not in addr


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
        charset = "us-ascii" if data.isascii() else "utf-8"
        if not data.translate(None, _NOT_SUSPECT) and not data.startswith(_BINARY_STARTS):
            return "text", charset
        kind = _mime_type(data)
        if kind.startswith("text/") or kind in _TEXTUAL:
            return "text", charset
        return "binary", kind
    charset = _magic_charset(data)
    if charset:
        return "text", charset
    return "binary", _mime_type(data)


def _magic_charset(data):
    """The charset libmagic names for ``data``, when Python knows it and the bytes decode in it."""
    charset = _magic(data, mime_encoding=True)
    if charset and charset not in ("binary", "unknown-8bit"):
        try:
            import codecs

            codecs.lookup(charset)
            data.decode(charset)
            return charset
        except (LookupError, UnicodeDecodeError):
            pass
    return None


def text_charset(data, given=None):
    """The charset of a text attachment, from its bytes: ``us-ascii`` (7-bit), ``utf-8``,
    else ``given`` (--attach-charset) unless a byte order mark says UTF-16 or UTF-32, else
    libmagic's, else ``unknown-8bit`` (RFC 1428, as mutt says when it cannot tell)."""
    if b"\0" not in data:  # NUL bytes: UTF-16 or UTF-32, which libmagic tells
        if data.isascii():
            return "us-ascii"
        try:
            data.decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError:
            pass
    if given and data.startswith(_BOMS):  # UTF-16 or UTF-32 that says so: not the 8-bit text --attach-charset names
        given = None
    return given or _magic_charset(data) or "unknown-8bit"


def charset_name(text):
    """The MIME name of a charset the user gives (``latin1`` -> ``iso-8859-1``); UsageError if unknown."""
    import codecs
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


class Part:
    def __init__(self, headers, body):
        self.headers = headers  # [(name, value)]
        self.body = body  # bytes, lines ending in \n except perhaps the last


def text_part(data, charset):
    if _is_7bit_safe(data):
        cte, body = "7bit", data
    else:
        cte, body = "quoted-printable", quoted_printable(data)
    from pipemail import headers

    content_type = headers.mime("Content-Type", "text/plain", [("charset", charset)])
    return Part([("Content-Type", content_type), ("Content-Transfer-Encoding", cte)], body)


def attachment_part(data, filename, mime=None, *, seven_bit=False, charset=None):
    """An attachment, base64; as it is (7bit) when ``seven_bit`` and the data is 7-bit safe.

    A text/* part says its charset: the one its bytes tell (:func:`text_charset`), with
    ``charset`` for 8-bit text that is not UTF-8; its bytes go unchanged."""
    from pipemail import headers

    mime = mime or _mime_type(data, filename)
    cte = "7bit" if seven_bit and _is_7bit_safe(data) else "base64"
    params = [("charset", text_charset(data, charset))] if mime.startswith("text/") else []
    return Part(
        [
            ("Content-Type", headers.mime("Content-Type", mime, params + [("name", filename)])),
            ("Content-Disposition", headers.mime("Content-Disposition", "attachment", [("filename", filename)])),
            ("Content-Transfer-Encoding", cte),
        ],
        data if cte == "7bit" else base64_lines(data),
    )


def base64_lines(data):
    """``data`` as base64 lines of 76 characters in one buffer, framed a thousand lines at a time."""
    from pipemail.uu import splitter

    out = bytearray()
    step = _B64_LINE * 1024
    view = memoryview(data)
    for i in range(0, len(data), step):
        chunk = view[i : i + step]
        whole = len(chunk) - len(chunk) % _B64_LINE
        if whole:
            text = binascii.b2a_base64(chunk[:whole], newline=False)
            out += b"\n".join(splitter(whole // _B64_LINE, 76).unpack(text))
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

    def make_mixed(self):
        """Make the message multipart/mixed, its parts between boundaries."""
        from pipemail import headers

        self.boundary = "=_pipemail_" + os.urandom(12).hex()
        self.headers.append(
            ("Content-Type", headers.mime("Content-Type", "multipart/mixed", [("boundary", self.boundary)]))
        )

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
):
    """A :class:`Message` for ``body`` (bytes from stdin) and ``attachments`` (paths).

    Binary stdin is attached instead of sent as a broken body.  Every
    attachment is opened before anything is composed (a missing one is a
    NoInputError, 66), then read and encoded one at a time.  Every header is
    encoded and folded (:mod:`pipemail.headers`); ``extra_headers`` (from -H,
    checked by :func:`parse_header_option`) replace pymail's own of the same name
    (Date, Message-ID), never add a second one.
    """
    from email.utils import formatdate, make_msgid

    from pipemail import headers

    for p in attachments:  # every attachment readable before anything is composed (66)
        with open_attachment(p):
            pass
    parts = []
    kind, what = classify_body(body)
    if kind == "text":
        if body or not attachments:
            parts.append(text_part(body, what))
    else:
        name = os.path.basename(stdin_name or "")  # a file name, as -a gives: never a path
        if name in ("", ".", ".."):
            name = "stdin" + _extension(what)
        parts.append(attachment_part(body, name, what, charset=attach_charset))
    for p in attachments:  # read and encode one at a time: only the encoded text stays
        data = read_attachment(p)
        parts.append(attachment_part(data, os.path.basename(os.fsdecode(p)), charset=attach_charset))
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


def from_stdin_message(data):
    """``-t``: stdin is a whole message; its header fields (bytes kept as they are) and its body.

    A header line over 998 bytes, which a server would refuse, is folded at its white
    space (:func:`pipemail.headers.fold_given`); one without any is a DataError."""
    from pipemail import headers

    sep = re.search(rb"\r?\n\r?\n", data)
    head, body = (data[: sep.start()], data[sep.end() :]) if sep else (data, b"")
    fields = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        text = line.decode("utf-8", "surrogateescape")
        if text[:1] in (" ", "\t") and fields:  # a folded continuation
            name, value = fields[-1]
            fields[-1] = (name, value + "\n" + text)
            continue
        name, colon, value = text.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name.strip()):
            raise DataError("-t: not a header line in the message: %s" % shown(line[:80]))
        fields.append((name.strip(), value.strip()))
    fields = [(name, headers.fold_given(name, value)) for name, value in fields]
    return Message(fields, raw_body=body.replace(b"\r\n", b"\n"))
