"""A message lint for everything pymail generates in the tests.

``lint(raw)`` raises AssertionError, with the reason, when the message (bytes, LF or CRLF
line ends, as a mailbox keeps it or as SMTP carried it) has:

- a line over 998 bytes (RFC 5322), or a header line over 78 that could be folded (one
  with white space inside it); a header line that is not ``Name: value`` or a folded
  continuation (white space, then something);
- an RFC 2047 encoded word over 75 characters;
- a text/* part without a charset (or, with no Content-Type at all, 8-bit text: the
  default is us-ascii); 8-bit bytes in a part whose transfer encoding is 7bit (or not
  given, which means 7bit);
- no Date or no Message-ID;
- anything Python's email parser calls a defect, with a strict policy
  (``email.policy.default.clone(raise_on_defect=True)``), in any part or any header.
  Address fields in UTF-8 (RFC 6532, an international address sent with SMTPUTF8) are
  allowed; raw UTF-8 in any other field (pymail encodes them as RFC 2047), and bytes
  that are not UTF-8, are not.

The tests apply it by themselves: tests/smtp_server.py to every message aiosmtpd receives
(``smtp_server(lint=False)`` to opt out), and :func:`checking` to what ``pymail`` writes
with ``--transport -``, ``mbox:`` and ``maildir:`` (``run(..., lint=False)``).
"""

import os
import re
from pathlib import Path

FIELD = re.compile(rb"^[!-9;-~]+:")
ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# the fields where RFC 6532 puts UTF-8 that cannot be encoded: an international address
ADDRESS_FIELDS = frozenset(
    b"from sender to cc bcc reply-to resent-from resent-sender resent-to resent-cc mail-followup-to".split()
)
# defects of a header in UTF-8 (RFC 6532) that Python's parser reports all the same
UTF8_HEADER_DEFECTS = ("UndecodableBytesDefect", "NonASCIILocalPartDefect")


def lint(raw):
    """Raise AssertionError saying what is wrong with the message ``raw``; None when it is clean."""
    import email
    import email.policy

    text = raw.replace(b"\r\n", b"\n")
    head, sep, _body = text.partition(b"\n\n")
    assert sep, "no blank line after the header"
    for n, line in enumerate(text.split(b"\n"), 1):
        assert len(line) <= 998, "line %d is %d bytes long (at most 998)" % (n, len(line))
    _lint_header(head, "the message")
    policy = email.policy.default.clone(raise_on_defect=True)
    try:
        msg = email.message_from_bytes(text, policy=policy)
    except Exception as exc:  # the strict policy raises the defect itself
        raise AssertionError("Python's email parser: %s: %s" % (type(exc).__name__, exc)) from None
    for name in ("Date", "Message-ID"):
        assert msg[name] is not None, "no %s header" % name
    for n, part in enumerate(msg.walk()):
        where = "the message" if n == 0 else "part %d (%s)" % (n, part.get_content_type())
        assert not part.defects, "%s: defects %r" % (where, part.defects)
        for field in part.keys():  # noqa: SIM118 (a field may come twice)
            try:
                values = part.get_all(field)
            except Exception as exc:  # the parser of a structured field can fail outright
                raise AssertionError("%s: header %s: %s: %s" % (where, field, type(exc).__name__, exc)) from None
            for value in values:
                defects = [d for d in value.defects if type(d).__name__ not in UTF8_HEADER_DEFECTS]
                assert not defects, "%s: header %s: defects %r" % (where, field, defects)
        if part.get_content_maintype() == "text" and part["Content-Type"] is not None:
            assert part.get_param("charset"), "%s: %s without a charset" % (where, part.get_content_type())
        elif part.get_content_maintype() == "text":  # RFC 2045's default, text/plain; charset=us-ascii
            data = part.get_payload(decode=True) or b""
            assert data.isascii(), "%s: 8-bit text without a Content-Type (whose default is us-ascii)" % where
        cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if not part.is_multipart() and cte == "7bit":
            data = part.get_payload(decode=True) or b""
            assert data.isascii(), "%s: 8-bit bytes in a 7bit part (say 8bit, or encode them)" % where
        if n:
            _lint_header(_raw_head(part), where)


def _raw_head(part):
    """The header lines of ``part`` as they came (the parser keeps each field's folds)."""
    return b"\n".join(("%s: %s" % (name, value)).encode("utf-8", "surrogateescape") for name, value in part.raw_items())


def _lint_header(head, where):
    field = b""
    for n, line in enumerate(head.split(b"\n"), 1):
        if line[:1] not in (b" ", b"\t"):
            field = line.split(b":", 1)[0].strip().lower()
        if line[:1] in (b" ", b"\t"):
            assert n > 1, "%s: the header starts with a continuation line" % where
            assert line.strip(), "%s: header line %d holds only white space" % (where, n)
            inner = line.strip(b" \t")
        else:
            assert FIELD.match(line), "%s: header line %d is not 'Name: value': %r" % (where, n, line[:80])
            inner = line.split(b":", 1)[1].strip(b" \t")
        if len(line) > 78:
            assert not re.search(rb"[ \t]", inner), "%s: header line %d is %d characters and could be folded: %r" % (
                where,
                n,
                len(line),
                line[:100],
            )
        for word in ENCODED_WORD.findall(line):
            assert len(word) <= 75, "%s: an encoded word of %d characters (at most 75): %r" % (where, len(word), word)
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise AssertionError("%s: header line %d is not ASCII or UTF-8: %r" % (where, n, line[:80])) from None
        if not line.isascii():
            assert field in ADDRESS_FIELDS, "%s: header line %d (%s) holds 8-bit text: encode it (RFC 2047)" % (
                where,
                n,
                field.decode(),
            )


def mbox_messages(data):
    """The messages of an mbox (as pymail writes one: mboxrd, a blank line between messages)."""
    starts = [
        m.start()
        for m in re.finditer(rb"(?m)^From ", data)
        if m.start() == 0 or data[m.start() - 2 : m.start()] == b"\n\n"
    ]
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[start:end]
        out.append(chunk[chunk.index(b"\n") + 1 :])
    return out


def _transport(args):
    args = [os.fsdecode(a) if isinstance(a, (bytes, Path)) else str(a) for a in args]
    for i, a in enumerate(args):
        if a == "--transport" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--transport="):
            return a.split("=", 1)[1]
        if a == "--":
            break
    return None


def checking(run):
    """``run`` (the conftest fixture) with pymail's output linted: the message it prints with
    ``--transport -`` and those it adds to an ``mbox:`` or ``maildir:``; ``lint=False`` opts out."""

    def _run(name, *args, lint=True, **kw):
        where = _transport(args) if name == "pymail" and lint else None
        before = _snapshot(where)
        result = run(name, *args, **kw)
        if where is not None and result.returncode == 0:
            for raw in _new_messages(where, before, result.stdout):
                _lint_or_fail(raw, where)
        return result

    return _run


def _lint_or_fail(raw, where):
    try:
        lint(raw)
    except AssertionError as exc:
        raise AssertionError("pymail --transport %s wrote a message that fails the lint: %s" % (where, exc)) from None


def _snapshot(where):
    if where is None:
        return None
    if where.startswith("mbox:"):
        path = Path(os.path.expanduser(where[5:]))
        return path.stat().st_size if path.exists() else 0
    if where.startswith("maildir:"):
        new = Path(os.path.expanduser(where[8:])) / "new"
        return set(os.listdir(new)) if new.is_dir() else set()
    return None


def _new_messages(where, before, stdout):
    if where == "-":
        return mbox_messages(stdout) if stdout.startswith(b"From ") else [stdout]
    if where.startswith("mbox:"):
        with open(os.path.expanduser(where[5:]), "rb") as f:
            f.seek(before)
            return mbox_messages(f.read())
    if where.startswith("maildir:"):
        new = Path(os.path.expanduser(where[8:])) / "new"
        return [(new / name).read_bytes() for name in sorted(set(os.listdir(new)) - before)]
    return []
