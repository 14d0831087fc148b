"""pymime's core: verify and decrypt signed and encrypted mail (S/MIME, OpenPGP), as a filter.

:func:`filter_mail` reads one message or an mbox from a binary stream and writes every
message to another, one at a time: each is spooled to a private temporary file (a second
pass over it is needed), so memory stays bounded whatever the size of a message.

verify
    A ``multipart/signed`` message (RFC 8551 S/MIME, protocol
    ``application/(x-)pkcs7-signature``; RFC 3156 OpenPGP, ``application/pgp-signature``)
    is split here: the signed part is the bytes after the first delimiter line up to the
    line break before the next one, made CRLF (its canonical form) and streamed into
    ``openssl cms -verify`` (with the detached signature, the user's CA file or directory,
    a CRL when given, purpose smimesign) or ``gpg --verify``.  An opaque S/MIME signed-data
    message (``application/pkcs7-mime; smime-type=signed-data``) is verified by openssl up
    to :data:`OPAQUE_MAX` bytes (openssl holds it whole).  Each message gets a
    :class:`Verdict`; the message itself is written unchanged.

decrypt
    ``application/(x-)pkcs7-mime`` (enveloped-data, or without smime-type) is base64-decoded
    as a stream into :func:`pipemail.cms.decrypt`; ``multipart/encrypted`` with
    ``application/pgp-encrypted`` goes through ``gpg --decrypt``.  The message written is the
    original header without its Content-* fields, then the decrypted entity with LF line
    ends; a signature inside is verified too.  A message that is not encrypted is written
    unchanged; one that cannot be decrypted (not to us, a wrong key, damaged) is written
    unchanged too, with a verdict saying why.

Nothing is ever dropped from the stream.  The core never prints: verdicts go to ``warn``.
"""

import binascii
import itertools
import os
import re
import time

from pipemail import crypto
from pipemail.errors import (
    EX_DATAERR,
    EX_OK,
    EX_SOFTWARE,
    EX_TEMPFAIL,
    ConfigError,
    DataError,
    IOFailure,
    NoInputError,
    PipemailError,
    describe_oserror,
    shown,
)
from pipemail.lines import to_crlf, to_lf

VERIFY, DECRYPT = "verify", "decrypt"
#: A header block (the message's or a part's) is read up to this size.
MAX_HEADER = 1 << 20
#: A signature part (its headers and its base64 or armor) larger than this is refused.
MAX_SIGNATURE = 1 << 20
#: An opaque signed-data message is verified by openssl, which holds it whole: up to this size.
OPAQUE_MAX = 16 << 20
#: How deep wrappers inside wrappers are opened (signed inside encrypted inside ...).
MAX_DEPTH = 4
BLOCK = 1 << 20
_LINE = 1 << 16  # lines are read at most this long at a time (a longer one comes in pieces)
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")))

# What openssl's "Verify error: ..." means, in our words (first match wins).
_CHAIN_ERRORS = (
    ("certificate has expired", "expired", "the signer's certificate has expired"),
    ("certificate is not yet valid", "expired", "the signer's certificate is not valid yet"),
    ("certificate revoked", "revoked", "the signer's certificate is revoked (by the CRL given)"),
    (
        "unsuitable certificate purpose",
        "purpose",
        "the signer's certificate is not for email protection (no emailProtection purpose)",
    ),
    ("unable to get certificate CRL", "untrusted", "no CRL from the signer's CA in the CRL file given"),
    ("CRL has expired", "untrusted", "the CRL given has expired"),
)


class Verdict:
    """What was found about one message: ``good`` (a good signature from a trusted signer whose
    address is the From address, or decrypted with every signature inside good), ``text`` (the
    line said about it, None for a message with nothing to say: plain, in decrypt), ``code`` (0,
    or the exit status it asks for: 65, or that of a configuration or tool error)."""

    __slots__ = ("good", "text", "code")

    def __init__(self, good, text, code=None):
        self.good = good
        self.text = text
        self.code = EX_OK if good else (EX_DATAERR if code is None else code)

    def __repr__(self):
        return "Verdict(good=%r, text=%r, code=%r)" % (self.good, self.text, self.code)


class Settings:
    """What pymime verifies and decrypts with.

    ``kind``: None (both), crypto.SMIME or crypto.OPENPGP (only that kind counts as signed).
    ``ca_file`` / ``ca_dir``: S/MIME trust (None for both: openssl's default store);
    ``crl_file``: a CRL (PEM) that revokes, checked for the signer's CA.  ``cert``, ``key``:
    our S/MIME certificate and key (paths); ``passphrase``: a callable giving the key's
    passphrase (bytes) or None, called once when first needed.  ``env``: the tools' environment
    (None: ours; GNUPGHOME chooses the GnuPG keyring).
    """

    def __init__(
        self, *, kind=None, ca_file=None, ca_dir=None, crl_file=None, cert=None, key=None, passphrase=None, env=None
    ):
        self.kind = kind
        self.ca_file = ca_file
        self.ca_dir = ca_dir
        self.crl_file = crl_file
        self.cert = cert
        self.key = key
        self.passphrase = crypto.Once(passphrase if passphrase is not None else lambda: None)
        self.env = env

    def check_files(self):
        """NoInputError (66) for a trust file or key that cannot be read, ConfigError (78) for a CA
        file without a certificate or a CRL file without a CRL: said before any mail is read."""
        for what, path in (
            ("CA file", self.ca_file),
            ("CRL file", self.crl_file),
            ("certificate", self.cert),
            ("key", self.key),
        ):
            if path is None:
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read() if what in ("CA file", "CRL file") else b""
            except OSError as exc:
                raise NoInputError("cannot read %s %s: %s" % (what, shown(path), describe_oserror(exc))) from None
            if what == "CA file" and not _has_certificate(data):
                raise ConfigError("CA file %s holds no certificate (PEM)" % shown(path))
            if what == "CRL file" and b"-----BEGIN X509 CRL-----" not in data:
                raise ConfigError("CRL file %s holds no CRL (PEM)" % shown(path))
        if self.ca_dir is not None and not os.path.isdir(self.ca_dir):
            raise NoInputError("cannot read CA directory %s: not a directory" % shown(self.ca_dir))


def _has_certificate(data):
    """Whether ``data`` (PEM) holds a certificate that can be read."""
    from cryptography import x509

    if b"-----BEGIN TRUSTED CERTIFICATE-----" in data:  # openssl's own form, which it reads too
        return True
    try:
        return bool(x509.load_pem_x509_certificates(data))
    except ValueError:
        return False


class Summary:
    """What :func:`filter_mail` did: ``messages`` written, ``verdicts`` (one per message that had
    one), ``rejected`` (messages put in the reject mbox instead), ``exit_code`` (0 when every
    verdict was good; else the first code that is not 65 if any, else 65)."""

    def __init__(self):
        self.messages = 0
        self.verdicts = []
        self.rejected = 0  # messages put in the reject mbox instead of the output

    @property
    def exit_code(self):
        codes = [v.code for v in self.verdicts if v.code]
        others = [c for c in codes if c != EX_DATAERR]
        return others[0] if others else (codes[0] if codes else EX_OK)


def filter_mail(stream, out, mode, settings, warn=None, reject=None):
    """Read one message or an mbox from the binary ``stream``, write each message to ``out``
    (verified: unchanged; decrypted: as said in the module documentation), and say each
    verdict through ``warn`` (one line).  Returns a :class:`Summary`.

    ``reject``: the path of an mbox that takes, instead of ``out``, each message with a verdict
    that is not good (appended, locked, flushed: see :func:`pipemail.mailbox.append`), so that
    what follows in the pipeline reads only good mail and nothing is lost.

    An mbox stays an mbox (its From_ lines kept, bodies mboxrd-quoted again); anything else is
    one message.  Only writing ``out`` or the reject mbox, or spooling, failing stops it (IOFailure)."""
    from pipemail import mailbox, spool

    warn = warn or (lambda text: None)
    summary = Summary()
    start = _file_start(stream)
    head = _read_head(stream)
    if not head:
        raise DataError("no message on standard input")
    whole = mailbox.Prefixed(head, stream)

    def put(from_line, written, prefix):
        """Write one message (``written``: its chunks; the verdicts are said at the first)."""
        before = len(summary.verdicts)
        first = next(written, b"")  # the verdict is said before the message is written
        chunks = itertools.chain([first], written)
        if reject is not None and not all(v.good for v in summary.verdicts[before:]):
            line = from_line or b"From MAILER-DAEMON " + time.asctime(time.gmtime()).encode()
            mailbox.append(reject, itertools.chain([line + b"\n"], mailbox.quoted(chunks), [b"\n"]), warn=warn)
            summary.rejected += 1
            warn("%sput in %s" % (prefix, shown(reject)))
        elif from_line is not None:
            _write(out, [from_line + b"\n"])
            _write(out, mailbox.quoted(chunks))
            _write(out, [b"\n"])
        else:
            _write(out, chunks)
        summary.messages += 1

    if mailbox.classify(head, complete=len(head) < mailbox.HEAD_SIZE) == "mbox":
        import io

        for number, (from_line, chunks) in enumerate(mailbox.mbox_messages(io.BufferedReader(whole, BLOCK)), 1):
            with spool.spool(chunks, settings.env, what="message %d" % number) as f:
                prefix = "message %d: " % number
                put(from_line, _written(f, mode, settings, summary, warn, prefix), prefix)
    elif start == 0:  # a file given on standard input: read where it is, not copied
        stream.seek(0)
        put(None, _written(stream, mode, settings, summary, warn, ""), "")
    else:
        with spool.spool(spool.read_chunks(whole, BLOCK), settings.env, what="the message") as f:
            put(None, _written(f, mode, settings, summary, warn, ""), "")
    try:
        out.flush()
    except OSError as exc:
        raise IOFailure("cannot write to standard output: %s" % describe_oserror(exc)) from None
    return summary


def _file_start(stream):
    """The offset of ``stream`` when it is a regular file that can seek (a file given on standard
    input), else None."""
    import stat

    try:
        if stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and stream.seekable():
            return stream.tell()
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _read_head(stream):
    from pipemail.mailbox import HEAD_SIZE

    data = b""
    try:
        while len(data) < HEAD_SIZE:
            chunk = stream.read(HEAD_SIZE - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise IOFailure("cannot read standard input: %s" % describe_oserror(exc)) from None
    return data


def _write(out, chunks):
    try:
        for chunk in chunks:
            out.write(chunk)
    except OSError as exc:
        raise IOFailure("cannot write to standard output: %s" % describe_oserror(exc)) from None


def _one(f, mode, settings, summary, warn, prefix):
    """Look at the spooled message ``f`` and say its verdicts; the file to write (``f`` itself, or a
    temporary file holding the decrypted message, which the caller closes)."""

    def say(verdict):
        summary.verdicts.append(verdict)
        if verdict.text:
            warn(prefix + verdict.text)

    try:
        if mode == VERIFY:
            say(verify(f, settings))
            return f
        result, verdicts = decrypt(f, settings)
        for verdict in verdicts:
            say(verdict)
        return f if result is None else result
    except PipemailError as exc:
        if isinstance(exc, IOFailure):
            raise
        say(Verdict(False, str(exc), exc.exit_code))
        return f
    except Exception as exc:  # a defect of ours: the message is kept all the same, and said
        say(
            Verdict(
                False,
                "not %s: internal error: %s: %s" % (_DONE[mode], type(exc).__name__, shown(str(exc))),
                EX_SOFTWARE,
                EX_TEMPFAIL,
            )
        )
        return f


_DONE = {VERIFY: "verified", DECRYPT: "decrypted"}


def _written(f, mode, settings, summary, warn, prefix):
    """The chunks to write for the spooled message ``f`` (a generator that closes what it opened)."""
    result = _one(f, mode, settings, summary, warn, prefix)
    try:
        yield from _file_chunks(result, 0, None)
    finally:
        if result is not f:
            result.close()


# -- the structure of a message ------------------------------------------------------------


class Entity:
    """A message's or part's header block, parsed: ``fields`` (the raw field lines, each with
    its continuation lines), ``body`` (the offset where the body starts), ``msg`` (the header
    parsed by the email package, compat32)."""

    def __init__(self, raw, body):
        from email import policy
        from email.parser import BytesHeaderParser

        self.raw = raw
        self.body = body
        self.msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)

    @property
    def content_type(self):
        return self.msg.get_content_type().lower()

    def param(self, name):
        value = self.msg.get_param(name)
        if isinstance(value, tuple):  # RFC 2231
            from email.utils import collapse_rfc2231_value

            value = collapse_rfc2231_value(value)
        return value

    def encoding(self):
        return str(self.msg.get("Content-Transfer-Encoding", "7bit")).strip().lower()

    def fields(self):
        """The header's fields, each its lines joined (continuations included)."""
        fields = []
        for line in self.raw.splitlines(keepends=True):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += line
            else:
                fields.append(line)
        return fields


def entity_at(f, start, end=None):
    """The header block that starts at offset ``start`` of ``f`` (up to its blank line, the
    end ``end``, or MAX_HEADER); an :class:`Entity`."""
    f.seek(start)
    lines = []
    pos = start
    size = 0
    while size < MAX_HEADER and (end is None or pos < end):
        line = f.readline(min(_LINE, MAX_HEADER - size) if end is None else min(_LINE, end - pos))
        if not line:
            break
        pos += len(line)
        if line in (b"\n", b"\r\n"):
            break
        lines.append(line)
        size += len(line)
    return Entity(b"".join(lines), pos)


def delimiters(f, start, boundary, want=3):
    """The delimiter lines of ``boundary`` (bytes, see :func:`boundary_of`) in ``f`` after offset
    ``start`` (which must be a line break, or the start of the file): a list of
    ``(line_start, after_line, is_close)``, at most ``want`` of them, ending at the close one.
    Read in blocks, searching for LF + ``--boundary``."""
    dash = b"--" + boundary
    pat = b"\n" + dash
    f.seek(start)
    buf = b"" if start else b"\n"  # buf[k] is at offset base + k
    base = start if start else -1
    scan = 0
    eof = False
    found = []
    while True:
        i = buf.find(pat, scan)
        nl = buf.find(b"\n", i + 1) if i >= 0 else -1
        if i < 0 or (nl < 0 and not eof and len(buf) - i <= _LINE):
            if eof:
                return found
            keep = i if i >= 0 else max(scan, len(buf) - len(pat) + 1, 0)
            base += keep
            buf = buf[keep:]
            scan = 0
            data = f.read(BLOCK)
            if data:
                buf += data
            else:
                eof = True
            continue
        line = buf[i + 1 : nl + 1] if nl >= 0 else buf[i + 1 :]
        rest = line[len(dash) :].rstrip(b"\r\n")
        close = rest.startswith(b"--")
        if not (rest[2:] if close else rest).strip(b" \t"):
            found.append((base + i + 1, base + i + 1 + len(line), close))
            if close or len(found) >= want:
                return found
        scan = i + 1


def line_break_before(f, offset, floor):
    """The offset of the line break (LF or CRLF) that ends just at ``offset`` (a delimiter's
    start): RFC 2046 gives it to the delimiter, not to the part before it."""
    if offset <= floor:
        return offset
    f.seek(max(floor, offset - 2))
    tail = f.read(offset - max(floor, offset - 2))
    if tail.endswith(b"\r\n"):
        return offset - 2
    if tail.endswith(b"\n"):
        return offset - 1
    return offset


def _file_chunks(f, start, end, size=BLOCK):
    f.seek(start)
    left = None if end is None else end - start
    while left is None or left > 0:
        data = f.read(size if left is None else min(size, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data


def b64_decoded(chunks):
    """Base64 text decoded as a stream of bytes (line ends, white space and any other byte outside the
    alphabet skipped, as RFC 2045 asks); DataError when it is cut short."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk.translate(None, _NOT_BASE64)
        cut = len(data) - len(data) % 4
        carry = data[cut:]
        if cut:
            try:
                yield binascii.a2b_base64(data[:cut])
            except binascii.Error as exc:
                raise DataError("bad base64: %s" % exc) from None
    if carry.strip(b"="):
        raise DataError("bad base64: it is cut short")


def _decoded_body(f, entity, end):
    chunks = _file_chunks(f, entity.body, end)
    if entity.encoding() == "base64":
        return b64_decoded(chunks)
    return chunks


# -- verify ------------------------------------------------------------------------------------


def kind_of(entity):
    """``(kind, what)`` for a signed message: kind crypto.SMIME / crypto.OPENPGP, what
    "detached" or "opaque"; None when it is not a signed message."""
    ctype = entity.content_type
    if ctype == "multipart/signed":
        protocol = (entity.param("protocol") or "").strip().lower()
        if protocol in crypto.SMIME_SIGNATURE_TYPES:
            return crypto.SMIME, "detached"
        if protocol == crypto.PGP_SIGNATURE_TYPE:
            return crypto.OPENPGP, "detached"
        return "unknown:" + protocol, "detached"
    if ctype in crypto.SMIME_MIME_TYPES and (entity.param("smime-type") or "").lower() == "signed-data":
        return crypto.SMIME, "opaque"
    return None


def is_encrypted(entity):
    ctype = entity.content_type
    if ctype in crypto.SMIME_MIME_TYPES:
        return (entity.param("smime-type") or "enveloped-data").lower() in ("enveloped-data", "authenveloped-data")
    return ctype == "multipart/encrypted"


def verify(f, settings):
    """The :class:`Verdict` of the message spooled in ``f``."""
    top = entity_at(f, 0)
    found = kind_of(top)
    if found is None:
        if is_encrypted(top):
            return Verdict(False, "not signed: the message is encrypted (pymime decrypt reads it)")
        return Verdict(False, "not signed")
    twice = twice_given(top)
    if twice:
        return Verdict(False, "not verified: two %s fields (a reader may take either)" % twice)
    kind, form = found
    if kind.startswith("unknown:"):
        return Verdict(False, "not verified: signed with an unknown protocol %r" % shown(kind[8:]))
    if settings.kind is not None and kind != settings.kind:
        return Verdict(
            False,
            "not verified: signed with %s, and only %s was asked for" % (_KIND_NAMES[kind], _KIND_NAMES[settings.kind]),
        )
    sender = sender_of(top)
    if form == "opaque":
        return _verify_smime_opaque(f, top, settings, sender)
    boundary, bad = boundary_of(top)
    if bad:
        return Verdict(False, "not verified: malformed multipart/signed (%s)" % bad)
    marks = delimiters(f, max(top.body - 1, 0), boundary, want=MAX_PARTS + 1)
    if len(marks) < 2 or marks[0][2] or marks[1][2]:
        return Verdict(False, "not verified: malformed multipart/signed (it does not hold two parts)")
    if len(marks) > 2 and not marks[2][2]:
        return Verdict(False, "not verified: malformed multipart/signed (it holds %s parts)" % _parts(marks))
    content = (marks[0][1], line_break_before(f, marks[1][0], marks[0][1]))
    sig_end = line_break_before(f, marks[2][0], marks[1][1]) if len(marks) > 2 else None
    if (
        sig_end is not None
        and sig_end - marks[1][1] > MAX_SIGNATURE
        or (sig_end is None and os.fstat(f.fileno()).st_size - marks[1][1] > MAX_SIGNATURE)
    ):
        return Verdict(False, "not verified: the signature part is larger than %d bytes" % MAX_SIGNATURE)
    sig_entity = entity_at(f, marks[1][1], sig_end)
    try:
        signature = b"".join(_decoded_body(f, sig_entity, sig_end))
    except DataError as exc:
        return Verdict(False, "BAD %s signature: the signature part is damaged (%s)" % (_KIND_NAMES[kind], exc))
    signed = to_crlf(_file_chunks(f, content[0], content[1]))
    if kind == crypto.SMIME:
        if sig_entity.content_type not in crypto.SMIME_SIGNATURE_TYPES:
            return Verdict(
                False, "not verified: the signature part is %s, not an S/MIME signature" % sig_entity.content_type
            )
        return verify_smime(signature, signed, settings, sender)
    if sig_entity.content_type != crypto.PGP_SIGNATURE_TYPE:
        return Verdict(
            False, "not verified: the signature part is %s, not an OpenPGP signature" % sig_entity.content_type
        )
    return verify_openpgp(signature, signed, settings, sender)


_KIND_NAMES = {crypto.SMIME: "S/MIME", crypto.OPENPGP: "OpenPGP"}
#: A multipart/signed or multipart/encrypted holds two parts; parts are counted up to this many.
MAX_PARTS = 16
#: Fields that say how to read the body: given twice, a reader may take either.
_ONCE = ("MIME-Version", "Content-Type", "Content-Transfer-Encoding")
#: What a boundary is read as: printable ASCII, not ending in a space (RFC 2046 asks for less: 70
#: characters at most, from a smaller set; some mailers write longer ones).
_BOUNDARY = re.compile(r"[\x20-\x7e]*[\x21-\x7e]")


def twice_given(entity):
    """The name of a field of :data:`_ONCE` that ``entity``'s header holds more than once, else None."""
    for name in _ONCE:
        if len(entity.msg.get_all(name, [])) > 1:
            return name
    return None


def boundary_of(entity):
    """``(boundary, None)``: the boundary parameter as bytes; ``(None, why)`` when there is none or it
    is not printable ASCII."""
    boundary = entity.param("boundary")
    if not boundary:
        return None, "no boundary"
    if not _BOUNDARY.fullmatch(boundary):
        return None, "boundary %s is not printable ASCII" % shown(repr(boundary))
    return boundary.encode("ascii"), None


def _parts(marks):
    """How many parts the delimiters ``marks`` (from :func:`delimiters`) open, in words."""
    parts = len(marks) - (1 if marks[-1][2] else 0)
    return "more than %d" % MAX_PARTS if len(marks) > MAX_PARTS and not marks[-1][2] else str(parts)


class Sender:
    """Who the From header says sent a message: ``address`` (lower-cased), None unless the header
    holds exactly one From field with exactly one address in it (RFC 5322 allows one From field,
    and several mailboxes in it need a Sender, which is not what was signed); ``text``, the From
    addresses as a message shows them."""

    __slots__ = ("address", "text")

    def __init__(self, address, text):
        self.address = address
        self.text = text


def sender_of(entity):
    """The :class:`Sender` of a header."""
    from email.utils import getaddresses

    values = [str(v) for v in entity.msg.get_all("From", [])]
    addrs = [addr.lower() for _name, addr in getaddresses(values) if addr]
    text = shown(", ".join(addrs)) or "(none)"
    if len(values) > 1:
        return Sender(None, "%s (%d From fields: one is needed)" % (text, len(values)))
    if len(addrs) > 1:
        return Sender(None, "%s (%d addresses: one is needed)" % (text, len(addrs)))
    return Sender(addrs[0] if addrs else None, text)


class _Discard:
    """A sink for a tool's output that nobody reads."""

    def write(self, data):
        return len(data)


def _trust_args(settings, tmp):
    """openssl's trust options; a CA+CRL file made in ``tmp`` when a CRL is given.

    With --ca-file and/or --ca-dir, only those are trusted: openssl's default file, directory
    and store (which it loads unless told not to) are turned off.  With neither, the system's
    store is trusted; a CRL then goes with the system's CA file."""
    args = []
    own = settings.ca_file is not None or settings.ca_dir is not None
    ca_file = settings.ca_file
    if settings.crl_file is not None:
        sources = [ca_file] if ca_file is not None else ([] if own else [_default_ca_file(settings.env)])
        both = os.path.join(tmp, "trust.pem")
        with open(both, "wb") as out:
            for path in sources + [settings.crl_file]:
                if path is None:
                    continue
                with open(path, "rb") as src:
                    data = src.read()
                out.write(data if data.endswith(b"\n") else data + b"\n")
        ca_file = both
        args.append("-crl_check")
    if ca_file is not None:
        args += ["-CAfile", ca_file]
    elif own:
        args.append("-no-CAfile")
    if settings.ca_dir is not None:
        args += ["-CApath", settings.ca_dir]
    elif own:
        args.append("-no-CApath")
    if own:
        args.append("-no-CAstore")
    return args


def _default_ca_file(env):
    """openssl's default CA file ($SSL_CERT_FILE, else the one built in), None when there is none."""
    import ssl

    paths = ssl.get_default_verify_paths()
    path = (os.environ if env is None else env).get(paths.openssl_cafile_env) or paths.openssl_cafile
    return path if path and os.path.isfile(path) else None


def _private_dir(settings):
    from pipemail import spool

    return spool.spool_dir(settings.env)


def verify_smime(der, signed_chunks, settings, sender):
    """The :class:`Verdict` of a detached S/MIME signature ``der`` over ``signed_chunks`` (CRLF)."""
    with _private_dir(settings) as tmp:
        sig = os.path.join(tmp, "smime.p7s")
        with open(sig, "wb") as out:
            out.write(der)
        signer = os.path.join(tmp, "signer.pem")
        argv = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", "/dev/stdin"]
        argv += ["-purpose", "smimesign", "-signer", signer, *_trust_args(settings, tmp)]
        result = crypto.run_tool(argv, signed_chunks, out=_Discard(), env=settings.env)
        return _smime_verdict(result, der, signer, sender, "S/MIME")


def _verify_smime_opaque(f, top, settings, sender):
    with _private_dir(settings) as tmp:
        p7m = os.path.join(tmp, "smime.p7m")
        size = 0
        with open(p7m, "wb") as out:
            for chunk in _decoded_body(f, top, None):
                size += len(chunk)
                if size > OPAQUE_MAX:
                    return Verdict(
                        False,
                        "not verified: an opaque S/MIME signed message over %d MB (openssl holds it whole to "
                        "verify it; a detached signature, multipart/signed, has no limit)" % (OPAQUE_MAX >> 20),
                    )
                out.write(chunk)
        signer = os.path.join(tmp, "signer.pem")
        argv = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", p7m]
        argv += ["-purpose", "smimesign", "-signer", signer, *_trust_args(settings, tmp)]
        result = crypto.run_tool(argv, out=_Discard(), env=settings.env)
        with open(p7m, "rb") as src:
            head = src.read(1 << 16)
        return _smime_verdict(result, head, signer, sender, "S/MIME (opaque)")


def killed(result, tool, what="verified"):
    """A Verdict for a tool killed by a signal (the OOM killer, a timeout): no word on the
    signature, try again later (75); None when it was not."""
    if result.rc >= 0:
        return None
    return Verdict(False, "not %s: %s was killed by signal %d" % (what, tool, -result.rc), EX_TEMPFAIL)


def _smime_verdict(result, der, signer_file, sender, label):
    dead = killed(result, "openssl")
    if dead is not None:
        return dead
    err = result.stderr
    if result.rc == 0 and "Verification successful" in err:
        cert = crypto.load_cert(signer_file)
        who = describe_cert(cert)
        emails = crypto.cert_emails(cert)
        if sender.address is None or sender.address not in emails:
            return Verdict(
                False,
                "signer's address is not the From address: %s signed as %s, From: %s"
                % (label, shown(", ".join(emails)) or "(no address in the certificate)", sender.text),
            )
        return Verdict(True, "good %s signature from %s (%s)" % (label, shown(sender.address), who))
    who = _signer_guess(der)
    of = " (signer %s)" % who if who else ""
    match = re.search(r"Verify error: ?(.*)", err)
    if match:
        reason = match.group(1).strip()
        for key, _cls, words in _CHAIN_ERRORS:
            if key in reason:
                return Verdict(False, "BAD %s signature: %s%s" % (label, words, of))
        return Verdict(
            False, "BAD %s signature: untrusted signer: no CA given trusts its certificate (%s)%s" % (label, reason, of)
        )
    if "content verify error" in err or "CMS_SignerInfo_verify_content" in err:
        return Verdict(
            False, "BAD %s signature: the signed content was changed after signing (digest mismatch)%s" % (label, of)
        )
    if "CMS_SignerInfo_verify" in err or "invalid padding" in err or "bad signature" in err:
        return Verdict(
            False, "BAD %s signature: the signature itself does not verify (damaged or forged)%s" % (label, of)
        )
    if result.rc == 2 or "Error reading" in err or "wrong tag" in err:
        return Verdict(False, "BAD %s signature: the signature is damaged (not a readable CMS structure)" % label)
    last = [line for line in err.splitlines() if line.strip()]
    return Verdict(
        False, "BAD %s signature: openssl says: %s" % (label, shown(last[-1] if last else "rc %d" % result.rc))
    )


def describe_cert(cert):
    """``subject=...; sha256 fingerprint AB:CD:...`` of a certificate."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = cert.subject.rfc4514_string({NameOID.EMAIL_ADDRESS: "emailAddress"})
    fpr = cert.fingerprint(hashes.SHA256()).hex().upper()
    return "subject %s, SHA-256 fingerprint %s" % (
        shown(subject),
        ":".join(fpr[i : i + 2] for i in range(0, len(fpr), 2)),
    )


def _signer_guess(der):
    """Who a signature says signed it (its one end-entity certificate), for a message about a bad one."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import pkcs7
        from cryptography.x509.oid import NameOID

        certs = pkcs7.load_der_pkcs7_certificates(der)
        leaves = []
        for cert in certs:
            try:
                if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                    continue
            except x509.ExtensionNotFound:
                pass
            leaves.append(cert)
        if len(leaves) == 1:
            return shown(leaves[0].subject.rfc4514_string({NameOID.EMAIL_ADDRESS: "emailAddress"}))
    except Exception:  # a damaged signature: nothing to tell
        return None
    return None


#: gpg's options that a gpg.conf must not turn around for a filter: no terminal, and no key
#: fetched from the network because a message names it (auto-key-retrieve).
GPG_PINNED = ("--batch", "--no-tty", "--no-auto-key-retrieve")


def verify_openpgp(armored, signed_chunks, settings, sender):
    """The :class:`Verdict` of a detached OpenPGP signature over ``signed_chunks`` (CRLF)."""
    with _private_dir(settings) as tmp:
        sig = os.path.join(tmp, "signature.asc")
        with open(sig, "wb") as out:
            out.write(armored)
        argv = ["gpg", *GPG_PINNED, "--status-fd", "{status_fd}", "--verify", sig, "-"]
        result = crypto.run_tool(argv, signed_chunks, status=True, env=settings.env)
    dead = killed(result, "gpg")
    if dead is not None:
        return dead
    verdict = gpg_verdict(result.status, settings, sender)
    if verdict is None:
        return Verdict(False, "BAD OpenPGP signature: not a readable signature (%s)" % _first(result.stderr))
    return verdict


def _first(text):
    """gpg's first line of stderr (the others repeat it, or give advice)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return shown(lines[0]) if lines else "no reason given"


def gpg_verdict(status, settings, sender):
    """The verdict of gpg's status lines about the signatures they report, None when there was none.

    Every signature must be good, by a key the GnuPG keyring holds valid (the first that is not
    is the verdict, naming its signer), and the From address must be a certified user id of one
    of the signers."""
    blocks = _signature_blocks(status)
    if not blocks:
        return None
    goods = []
    for words in blocks:
        verdict, who, key = _one_gpg_signature(words)
        if verdict is not None:
            return verdict
        goods.append((who, key))
    emails = []
    for who, key in goods:
        uids = key_uids(key, settings)
        for addr, uid in uids:
            if sender.address is not None and addr == sender.address:
                return Verdict(True, "good OpenPGP signature from %s (%s)" % (shown(uid), who))
        emails += [addr for addr, _uid in uids if addr not in emails]
    return Verdict(
        False,
        "signer's address is not the From address: OpenPGP key of %s, From: %s"
        % (shown(", ".join(emails)) or "(no certified address)", sender.text),
    )


_SIG_WORDS = ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "ERRSIG")


def _signature_blocks(status):
    """gpg's status lines cut at each NEWSIG: one dict (keyword -> its first line's words) per
    signature; those before the first NEWSIG belong to none (unless there is no NEWSIG)."""
    cuts = [i for i, line in enumerate(status) if line.split(" ")[0] == "NEWSIG"]
    spans = [(a, b) for a, b in zip(cuts, cuts[1:] + [len(status)], strict=True)] if cuts else [(0, len(status))]
    blocks = []
    for a, b in spans:
        words = {}
        for line in status[a:b]:
            parts = line.split(" ")
            words.setdefault(parts[0], parts[1:])
        if cuts or any(k in words for k in _SIG_WORDS):
            blocks.append(words)
    return blocks


def _one_gpg_signature(words):
    """``(verdict, who, key)`` for one signature's status words: a refusing Verdict, or None with
    who signed (for the good line) and the key to look the user ids up with."""
    keyid = next((words[k][0] for k in _SIG_WORDS if words.get(k)), None)
    uid = next((" ".join(words[k][1:]) for k in _SIG_WORDS[:-1] if len(words.get(k, ())) > 1), "")
    fpr = words["VALIDSIG"][0] if words.get("VALIDSIG") else None
    primary = words["VALIDSIG"][-1] if len(words.get("VALIDSIG", ())) >= 10 else fpr
    key = "key %s%s" % (keyid, ", fingerprint %s" % primary if primary else "")
    who = "%s (%s)" % (shown(uid), key) if uid else key

    def bad(text):
        return Verdict(False, "BAD OpenPGP signature: " + text), None, None

    if "BADSIG" in words:
        return bad("the signed content was changed after signing (from %s)" % who)
    if "ERRSIG" in words:
        if "NO_PUBKEY" in words:
            return bad("unknown signer: no public key %s in the GnuPG keyring" % keyid)
        return bad("gpg cannot check it (key %s)" % keyid)
    if "REVKEYSIG" in words or "KEYREVOKED" in words:
        return bad("the signer's key is revoked (%s)" % who)
    if "EXPKEYSIG" in words:
        return bad("the signer's key has expired (%s)" % who)
    if "EXPSIG" in words:
        return bad("the signature has expired (%s)" % who)
    if "GOODSIG" not in words:
        return bad("gpg gave no verdict (%s)" % " ".join(words))
    trust = next((k for k in words if k.startswith("TRUST_")), None)
    if trust not in ("TRUST_FULLY", "TRUST_ULTIMATE"):
        level = trust[6:].lower() if trust else "none"
        return bad(
            "untrusted signer: the key is not certified as its user's in the GnuPG keyring (trust %s) (%s)"
            % (level, who)
        )
    return None, key, primary or keyid


def key_uids(key, settings):
    """``(address, user id)`` of the user ids of the OpenPGP key ``key`` that the GnuPG keyring
    holds valid (:meth:`pipemail.crypto.PgpKey.certified`)."""
    return [uid for found in crypto.pgp_keys(key, settings.env) for uid in found.certified()]


# -- decrypt -----------------------------------------------------------------------------------


def decrypt(f, settings, depth=0):
    """``(result, verdicts)`` for the message spooled in ``f``: ``result`` a temporary file
    holding the message to write instead of it (None: write it unchanged), and what was found."""
    top = entity_at(f, 0)
    if not is_encrypted(top):
        if depth and kind_of(top) is not None:
            return None, [verify(f, settings)]
        return None, []
    if depth >= MAX_DEPTH:
        return None, [_not_decrypted("encrypted more than %d times inside itself" % MAX_DEPTH)]
    twice = twice_given(top)
    if twice:
        return None, [_not_decrypted("two %s fields (a reader may take either)" % twice)]
    from pipemail import spool

    plain = spool.spool_file(settings.env, prefix="pymime-")
    try:
        if top.content_type == "multipart/encrypted":
            ok, verdicts = _decrypt_openpgp(f, top, settings, plain)
        else:
            ok, verdicts = _decrypt_smime(f, top, settings, plain)
        if not ok:
            return None, verdicts
        message = spool.spool_file(settings.env, prefix="pymime-")
        try:
            _rewrap(top, plain, message, settings)
        except OSError as exc:
            message.close()
            raise IOFailure("cannot write a spool file: %s" % describe_oserror(exc)) from None
        except BaseException:
            message.close()
            raise
    finally:
        plain.close()
    inner, more = decrypt(message, settings, depth + 1)
    if inner is not None:
        message.close()
        message = inner
    return message, verdicts + more


def _rewrap(top, plain, message, settings):
    """Write to ``message`` the outer header ``top`` without its Content-* fields, then the decrypted
    entity in ``plain`` (CRLF): its Content-* fields (what the outer Content-* stood for; MIME-Version
    too when the outer header has none) and its body, all with LF line ends.  The entity's other
    fields are not written: the outer ones are the message's (one From, one Subject)."""
    from pipemail import mailbox, spool

    lf = spool.spool_file(settings.env, prefix="pymime-")
    with lf:
        for chunk in to_lf(_file_chunks(plain, 0, None)):
            lf.write(chunk)
        lf.flush()
        outer = [_lf_field(field) for field in top.fields() if _field_name(field) and not _is_content(field)]
        for field in outer:
            message.write(field)
        lf.seek(0)
        head = lf.read(mailbox.HEAD_SIZE)
        start = 0
        if mailbox.classify(head, complete=len(head) < mailbox.HEAD_SIZE) == "message" or head.startswith(b"\n"):
            inner = entity_at(lf, 0)
            wanted = {b"mime-version"} - {_field_name(field) for field in outer}
            for field in inner.fields():
                if _is_content(field) or _field_name(field) in wanted:
                    message.write(field if field.endswith(b"\n") else field + b"\n")
            start = inner.body
        message.write(b"\n")
        for chunk in _file_chunks(lf, start, None):
            message.write(chunk)
        message.flush()


def _is_content(field):
    return field[:8].lower() == b"content-"


def _lf_field(field):
    """A header field (its continuation lines too) with LF line ends."""
    return field.replace(b"\r\n", b"\n")


def _field_name(field):
    return field.split(b":", 1)[0].strip().lower()


def _not_decrypted(text, code=None):
    return Verdict(False, "not decrypted: " + text, code)


def _decrypt_smime(f, top, settings, plain):
    if settings.kind == crypto.OPENPGP:
        return False, [_not_decrypted("S/MIME encrypted, and only OpenPGP was asked for")]
    if not settings.cert or not settings.key:
        return False, [
            _not_decrypted(
                "S/MIME encrypted, and no key is configured: give --cert FILE --key FILE, or set "
                "smime_cert and smime_key in the account",
                ConfigError.exit_code,
            )
        ]
    from pipemail import cms

    passphrase = settings.passphrase()
    try:
        cipher = cms.decrypt(
            _decoded_body(f, top, None), plain, cert=settings.cert, key=settings.key, passphrase=passphrase
        )
    except cms.NotForUs as exc:
        whom = "; ".join(str(r) for r in exc.recipients)
        return False, [_not_decrypted("S/MIME encrypted, not to our certificate (it is for: %s)" % (whom or "nobody"))]
    except DataError as exc:
        return False, [_not_decrypted("S/MIME: %s" % exc)]
    plain.flush()
    return True, [Verdict(True, "decrypted (S/MIME, %s)" % cipher)]


def _decrypt_openpgp(f, top, settings, plain):
    protocol = (top.param("protocol") or "").strip().lower()
    if protocol != crypto.PGP_ENCRYPTED_TYPE:
        return False, [_not_decrypted("multipart/encrypted with an unknown protocol %r" % shown(protocol))]
    if settings.kind == crypto.SMIME:
        return False, [_not_decrypted("OpenPGP encrypted, and only S/MIME was asked for")]
    boundary, bad = boundary_of(top)
    if bad:
        return False, [_not_decrypted("malformed multipart/encrypted (%s)" % bad)]
    marks = delimiters(f, max(top.body - 1, 0), boundary, want=MAX_PARTS + 1)
    if len(marks) < 2 or marks[0][2] or marks[1][2]:
        return False, [_not_decrypted("malformed multipart/encrypted (it does not hold two parts)")]
    if len(marks) > 2 and not marks[2][2]:
        return False, [_not_decrypted("malformed multipart/encrypted (it holds %s parts)" % _parts(marks))]
    end = line_break_before(f, marks[2][0], marks[1][1]) if len(marks) > 2 else None
    part = entity_at(f, marks[1][1], end)
    passphrase = settings.passphrase()
    argv = ["gpg", *GPG_PINNED, "--status-fd", "{status_fd}"]
    if passphrase is not None:
        argv += ["--pinentry-mode", "loopback", "--passphrase-fd", "{pass_fd}"]
    argv += ["--no-use-embedded-filename", "--output", "-", "--decrypt"]
    result = crypto.run_tool(
        argv, _decoded_body(f, part, end), out=plain, status=True, passphrase=passphrase, env=settings.env
    )
    dead = killed(result, "gpg", "decrypted")
    if dead is not None:
        return False, [dead]
    status = {line.split(" ")[0] for line in result.status}
    # gpg exits 1 or 2 for a bad or unknown signature inside: its status lines say whether it decrypted
    if "DECRYPTION_OKAY" not in status or status & {"DECRYPTION_FAILED", "BADMDC"}:
        if "NO_SECKEY" in status and "DECRYPTION_KEY" not in status:
            keys = [line.split(" ")[1] for line in result.status if line.startswith("ENC_TO ")]
            return False, [
                _not_decrypted(
                    "OpenPGP encrypted, not to a secret key in the GnuPG keyring (to key %s)" % ", ".join(keys)
                )
            ]
        if any(line.startswith("FAILURE") for line in result.status) and "Bad passphrase" in result.stderr:
            return False, [_not_decrypted("OpenPGP: bad passphrase for the secret key", ConfigError.exit_code)]
        return False, [_not_decrypted("OpenPGP: gpg could not decrypt it (%s)" % _first(result.stderr))]
    plain.flush()
    said = [line.split(" ") for line in result.status if line.startswith("PLAINTEXT_LENGTH ")]
    if os.fstat(plain.fileno()).st_size == 0 and any(len(w) > 1 and w[1] not in ("", "0") for w in said):
        return False, [_not_decrypted("OpenPGP: gpg wrote the plaintext somewhere else than to pymime")]
    verdicts = [Verdict(True, "decrypted (OpenPGP)")]
    signed = gpg_verdict(result.status, settings, sender_of(top))
    if signed is not None:
        verdicts.append(signed)
    return True, verdicts
