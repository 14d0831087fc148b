"""Decrypting S/MIME: CMS EnvelopedData (RFC 5652) read as a stream, in bounded memory.

``openssl cms -decrypt`` holds about three times its input in memory (644 MB for a 205 MB
message), so pymime does not use it.  An EnvelopedData is a small header (who it is for,
the content cipher and its IV) followed by the encrypted content, which BER lets an encoder
write as one primitive ``[0]`` (``openssl cms -encrypt`` without ``-stream``, gpgsm) or as
a constructed ``[0]`` of OCTET STRING chunks of indefinite length (``-stream``).  This module
reads that with a small streaming BER reader, unwraps the content key with our RSA key
(PKCS #1 v1.5 or RSAES-OAEP, KeyTransRecipientInfo) and decrypts the content chunk by chunk
with the ``cryptography`` package (imported only when a message is decrypted):
AES-128/192/256-CBC and DES-EDE3-CBC with the PKCS #7 padding checked at the end, and
AuthEnvelopedData (RFC 5083) with AES-GCM, its tag checked at the end.

What is written to ``out`` is plaintext only once :func:`decrypt` returns: a failure at the
end (bad padding, a wrong tag, truncated input) comes after bytes were written, so the
caller writes to a temporary file and uses it only on success.
"""

import os
from typing import NamedTuple

from pipemail.errors import ConfigError, DataError, IOFailure, NoInputError, describe_oserror, shown

# Content types (the ContentInfo's contentType)
ENVELOPED_DATA = "1.2.840.113549.1.7.3"
AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
_CONTENT_TYPES = {
    "1.2.840.113549.1.7.1": "data",
    "1.2.840.113549.1.7.2": "signedData",
    ENVELOPED_DATA: "envelopedData",
    "1.2.840.113549.1.7.5": "digestedData",
    "1.2.840.113549.1.7.6": "encryptedData",
    "1.2.840.113549.1.9.16.1.2": "authenticatedData",
    "1.2.840.113549.1.9.16.1.9": "compressedData",
    AUTH_ENVELOPED_DATA: "authEnvelopedData",
}

# Content ciphers: OID -> (name as openssl spells it, algorithm, key length, mode)
_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": ("aes-128-cbc", "aes", 16, "cbc"),
    "2.16.840.1.101.3.4.1.22": ("aes-192-cbc", "aes", 24, "cbc"),
    "2.16.840.1.101.3.4.1.42": ("aes-256-cbc", "aes", 32, "cbc"),
    "1.2.840.113549.3.7": ("des-ede3-cbc", "des3", 24, "cbc"),
    "2.16.840.1.101.3.4.1.6": ("aes-128-gcm", "aes", 16, "gcm"),
    "2.16.840.1.101.3.4.1.26": ("aes-192-gcm", "aes", 24, "gcm"),
    "2.16.840.1.101.3.4.1.46": ("aes-256-gcm", "aes", 32, "gcm"),
}
_UNSUPPORTED_CIPHERS = {
    "1.2.840.113549.3.2": "rc2-cbc",
    "1.3.14.3.2.7": "des-cbc",
    "2.16.840.1.101.3.4.1.7": "aes-128-ccm",
    "2.16.840.1.101.3.4.1.27": "aes-192-ccm",
    "2.16.840.1.101.3.4.1.47": "aes-256-ccm",
    "1.2.840.113549.1.9.16.3.18": "chacha20-poly1305",
}

# Key transport
_RSA = "1.2.840.113549.1.1.1"
_RSAES_OAEP = "1.2.840.113549.1.1.7"
_MGF1 = "1.2.840.113549.1.1.8"
_P_SPECIFIED = "1.2.840.113549.1.1.9"
_HASHES = {
    "1.3.14.3.2.26": "SHA1",
    "2.16.840.1.101.3.4.2.4": "SHA224",
    "2.16.840.1.101.3.4.2.1": "SHA256",
    "2.16.840.1.101.3.4.2.2": "SHA384",
    "2.16.840.1.101.3.4.2.3": "SHA512",
}
_RECIPIENT_KINDS = {1: "key agreement", 2: "key encryption key", 3: "password", 4: "other"}

# Distinguished name attributes, named as openssl's RFC 2253 output names them
_NAME_ATTRS = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.42": "GN",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
}
_STRING_TYPES = {12: "utf-8", 19: "ascii", 22: "ascii", 26: "ascii", 18: "ascii", 20: "latin-1", 30: "utf-16-be"}
_STRING_TYPES[28] = "utf-32-be"

# BER tag classes and the universal tags used here
_UNIVERSAL, _CONTEXT = 0, 2
_INTEGER, _OCTET_STRING, _NULL, _OID, _SEQUENCE, _SET = 2, 4, 5, 6, 16, 17

# An element of the header is held in memory whole, with a copy per level of nesting: at most
# 1 MiB (a recipient takes about 300 bytes, a certificate in originatorInfo a few KB) and 16
# levels (a real header has 10), so hostile input costs at most 16 MiB.
ELEMENT_LIMIT = 1 << 20
DEPTH_LIMIT = 16
# Bytes of an object identifier or an integer (a serial number has at most 20, RFC 5280; no OID
# here is near it): more is malformed, and would make numbers too long for str().
NUMBER_LIMIT = 64
BATCH = 64 << 10  # ciphertext handed to the cipher at a time


class NotForUs(DataError):
    """The message is encrypted, but not to our certificate.  ``recipients``: whom it is
    encrypted to (a list of :class:`Recipient`, in the message's order)."""

    recipients = ()

    def __init__(self, message, recipients=()):
        super().__init__(message)
        self.recipients = list(recipients)


class Recipient(NamedTuple):
    """One recipient of an EnvelopedData: ``issuer`` (the issuer's name in RFC 4514 form, as
    ``openssl x509 -nameopt RFC2253`` prints it) and ``serial`` (the certificate's serial number).
    A recipient named by its subject key identifier has ``issuer`` ``"subjectKeyIdentifier=HEX"``
    and ``serial`` None; one that is not a key transport recipient (key agreement, password...)
    has ``issuer`` naming its kind and ``serial`` None."""

    issuer: str
    serial: int | None

    def __str__(self):
        if self.serial is None:
            return self.issuer
        return "issuer %s serial 0x%X" % (self.issuer, self.serial)


# ---------------------------------------------------------------------------------------------
# The streaming BER reader


class _Element(NamedTuple):
    """A BER element read whole: tag class, constructed or not, tag number, its encoding (``raw``),
    its content octets (primitive) and its children (constructed)."""

    cls: int
    constructed: bool
    number: int
    raw: bytes
    value: bytes
    children: tuple


def _tag_text(cls, constructed, number):
    if cls == _CONTEXT:
        return "[%d]" % number
    names = {1: "BOOLEAN", 2: "INTEGER", 3: "BIT STRING", 4: "OCTET STRING", 5: "NULL", 6: "OBJECT IDENTIFIER"}
    names.update({16: "SEQUENCE", 17: "SET", 0: "end-of-contents"})
    if cls == _UNIVERSAL and number in names:
        return names[number]
    return "tag %d of class %d" % (number, cls)


class _Reader:
    """BER elements from an iterable of byte chunks, holding at most a chunk and one small element."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.offset = 0  # bytes consumed so far

    def _fill(self, n):
        """At least ``n`` bytes buffered past the position; False when the input ends first."""
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos :]] if have else []
        enough = True
        while have < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                enough = False
                break
            parts.append(bytes(chunk))
            have += len(chunk)
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)  # joined once: linear in any cut
        self._pos = 0
        return enough

    def at_end(self):
        return not self._fill(1)

    def read(self, n, what):
        if not self._fill(n):
            end = self.offset + len(self._buf) - self._pos
            raise DataError("truncated CMS data: it ends inside %s (at byte %d)" % (what, end))
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        self.offset += n
        return data

    def piece(self, n, what):
        """Up to ``n`` bytes (at least one), as they come."""
        if not self._fill(1):
            raise DataError("truncated CMS data: it ends inside %s (at byte %d)" % (what, self.offset))
        take = min(n, len(self._buf) - self._pos)
        whole = self._pos == 0 and take == len(self._buf)
        data = self._buf if whole else self._buf[self._pos : self._pos + take]
        self._pos += take
        self.offset += take
        return data

    def starts_with(self, prefix):
        """Whether the bytes to come start with ``prefix`` (nothing is consumed)."""
        n = len(prefix)
        return self._fill(n) and self._buf[self._pos : self._pos + n] == prefix

    def peek_eoc(self):
        return self.starts_with(b"\0\0")

    def header(self, what):
        """(class, constructed, number, length or None for indefinite, the header's bytes)."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= 6 and buf[pos] & 0x1F != 0x1F and (buf[pos + 1] < 0x80 or 0x81 <= buf[pos + 1] <= 0x84):
            # the common case (every piece of the content): a low tag number and a definite length
            b, n = buf[pos], buf[pos + 1]
            size = 2 if n < 0x80 else 2 + (n & 0x7F)
            length = n if n < 0x80 else int.from_bytes(buf[pos + 2 : pos + size], "big")
            self._pos += size
            self.offset += size
            return b >> 6, bool(b & 0x20), b & 0x1F, length, buf[pos : pos + size]
        start = self.offset
        first = self.read(1, what)
        b = first[0]
        cls, constructed, number = b >> 6, bool(b & 0x20), b & 0x1F
        raw = [first]
        if number == 0x1F:
            number = 0
            for i in range(5):
                c = self.read(1, what)
                raw.append(c)
                number = (number << 7) | (c[0] & 0x7F)
                if not c[0] & 0x80:
                    break
                if i == 4:
                    raise DataError("malformed CMS data at byte %d: a tag number too large" % start)
        c = self.read(1, what)
        raw.append(c)
        n = c[0]
        if n < 0x80:
            length = n
        elif n == 0x80:
            if not constructed:
                raise DataError("malformed CMS data at byte %d: a primitive element of indefinite length" % start)
            length = None
        else:
            k = n & 0x7F
            if k > 8:
                raise DataError("malformed CMS data at byte %d: a length of %d bytes" % (start, k))
            octets = self.read(k, what)
            raw.append(octets)
            length = int.from_bytes(octets, "big")
        return cls, constructed, number, length, b"".join(raw)

    def element(self, what, budget=ELEMENT_LIMIT, depth=0):
        """One whole element (None for an end-of-contents), at most ``budget`` bytes."""
        if depth > DEPTH_LIMIT:
            raise DataError("malformed CMS data at byte %d: elements nested too deep" % self.offset)
        start = self.offset
        cls, constructed, number, length, raw = self.header(what)
        if (cls, number) == (_UNIVERSAL, 0):
            if constructed or length != 0:
                raise DataError("malformed CMS data at byte %d: a bad end-of-contents" % start)
            return None
        if length is not None and length > budget:
            raise DataError(
                "malformed CMS data at byte %d: %s of %d bytes is more than the %d allowed"
                % (start, what, length, budget)
            )
        if not constructed:
            value = self.read(length, what)
            return _Element(cls, False, number, raw + value, value, ())
        parts = [raw]
        children = []
        end = None if length is None else self.offset + length
        while True:
            if end is not None and self.offset >= end:
                if self.offset > end:
                    raise DataError("malformed CMS data at byte %d: an element overruns its length" % start)
                break
            left = budget - (self.offset - start)
            if left <= 0:
                raise DataError("malformed CMS data at byte %d: %s is larger than %d bytes" % (start, what, budget))
            child = self.element(what, left, depth + 1)
            if child is None:
                if end is not None:
                    raise DataError("malformed CMS data at byte %d: end-of-contents in a definite length" % start)
                parts.append(b"\0\0")
                break
            parts.append(child.raw)
            children.append(child)
        return _Element(cls, True, number, b"".join(parts), b"", tuple(children))

    def open(self, cls, number, what):
        """Enter a constructed element of this tag: its end offset (None: indefinite length)."""
        start = self.offset
        got_cls, constructed, got_number, length, _ = self.header(what)
        if (got_cls, got_number) != (cls, number) or not constructed:
            raise DataError(
                "malformed CMS data at byte %d: %s should be %s, not %s"
                % (start, what, _tag_text(cls, True, number), _tag_text(got_cls, constructed, got_number))
            )
        return None if length is None else self.offset + length

    def inside(self, end):
        """Whether more elements follow before the end of the element entered with :meth:`open`."""
        if end is None:
            return not self.peek_eoc()
        return self.offset < end

    def close(self, end, what):
        """Leave an element entered with :meth:`open`: its end-of-contents or exact end."""
        if end is None:
            if self.element(what) is not None:
                raise DataError("malformed CMS data at byte %d: more elements than %s holds" % (self.offset, what))
        elif self.offset != end:
            raise DataError("malformed CMS data at byte %d: the length of %s does not match" % (self.offset, what))


def _expect(element, cls, number, what):
    if element is None or (element.cls, element.number) != (cls, number):
        got = "end-of-contents" if element is None else _tag_text(element.cls, element.constructed, element.number)
        raise DataError("malformed CMS data: %s should be %s, not %s" % (what, _tag_text(cls, False, number), got))
    if number in (_SEQUENCE, _SET) and not element.constructed:
        raise DataError("malformed CMS data: %s should be constructed" % what)
    return element


def _primitive(element, cls, number, what):
    _expect(element, cls, number, what)
    if element.constructed:
        # BER lets an OCTET STRING be constructed of pieces
        if number != _OCTET_STRING:
            raise DataError("malformed CMS data: %s should be primitive" % what)
        return b"".join(_primitive(c, _UNIVERSAL, _OCTET_STRING, what) for c in element.children)
    return element.value


def _octets(element):
    """The content octets of a primitive element, or of a constructed one made of primitive pieces (BER)."""
    if not element.constructed:
        return element.value
    return b"".join(_octets(child) for child in element.children)


def _oid(element, what):
    value = _primitive(element, _UNIVERSAL, _OID, what)
    if not value or value[-1] & 0x80 or len(value) > NUMBER_LIMIT:
        raise DataError("malformed CMS data: %s is not a valid object identifier" % what)
    arcs, n = [], 0
    for b in value:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _integer(element, what):
    value = _primitive(element, _UNIVERSAL, _INTEGER, what)
    if not value or len(value) > NUMBER_LIMIT:
        raise DataError("malformed CMS data: %s is not a valid integer" % what)
    return int.from_bytes(value, "big", signed=True)


def _algorithm(element, what):
    """An AlgorithmIdentifier: (OID, its parameters element or None)."""
    _expect(element, _UNIVERSAL, _SEQUENCE, what)
    if not element.children or len(element.children) > 2:
        raise DataError("malformed CMS data: %s is not an algorithm identifier" % what)
    params = element.children[1] if len(element.children) == 2 else None
    return _oid(element.children[0], what), params


# ---------------------------------------------------------------------------------------------
# Names


def _escape(text):
    out = []
    for i, ch in enumerate(text):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(text) - 1)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append("\\%02X" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def name_text(der):
    """A distinguished name's DER as RFC 4514 text, most specific first (``emailAddress=bob@example.org,CN=bob``);
    DataError when it is not a Name."""
    r = _Reader([der])
    name = _expect(r.element("a name"), _UNIVERSAL, _SEQUENCE, "a name")
    rdns = []
    for rdn in name.children:
        _expect(rdn, _UNIVERSAL, _SET, "a name's component")
        atvs = []
        for atv in rdn.children:
            _expect(atv, _UNIVERSAL, _SEQUENCE, "a name's attribute")
            if len(atv.children) != 2:
                raise DataError("malformed CMS data: a name's attribute is not a type and a value")
            oid = _oid(atv.children[0], "a name's attribute type")
            value = atv.children[1]
            encoding = _STRING_TYPES.get(value.number) if value.cls == _UNIVERSAL and not value.constructed else None
            text = None
            if encoding is not None:
                try:
                    text = _escape(value.value.decode(encoding))
                except UnicodeDecodeError:
                    text = None
            if text is None:
                text = "#" + value.raw.hex().upper()
            atvs.append("%s=%s" % (_NAME_ATTRS.get(oid, oid), text))
        rdns.append("+".join(atvs))
    return ",".join(reversed(rdns))


# ---------------------------------------------------------------------------------------------
# The envelope's header


class _KeyTrans(NamedTuple):
    recipient: Recipient
    issuer_der: bytes | None
    key_id: bytes | None
    algorithm: str
    params: _Element | None
    encrypted_key: bytes


def _recipient_info(element):
    """A RecipientInfo: a _KeyTrans, or a Recipient for a kind this module cannot use."""
    if element is None:
        raise DataError("malformed CMS data: an end-of-contents among the recipients")
    if element.cls == _CONTEXT:
        kind = _RECIPIENT_KINDS.get(element.number, "[%d]" % element.number)
        return Recipient("%s recipient" % kind, None)
    _expect(element, _UNIVERSAL, _SEQUENCE, "a recipient")
    if len(element.children) != 4:
        raise DataError("malformed CMS data: a key transport recipient has %d parts, not 4" % len(element.children))
    _integer(element.children[0], "a recipient's version")
    rid = element.children[1]
    if rid.cls == _CONTEXT and rid.number == 0:
        key_id = _octets(rid)
        issuer_der, recipient = None, Recipient("subjectKeyIdentifier=" + key_id.hex().upper(), None)
    else:
        _expect(rid, _UNIVERSAL, _SEQUENCE, "a recipient's issuer and serial number")
        if len(rid.children) != 2:
            raise DataError(
                "malformed CMS data: a recipient's issuer and serial number has %d parts" % len(rid.children)
            )
        issuer_der = _expect(rid.children[0], _UNIVERSAL, _SEQUENCE, "a recipient's issuer").raw
        serial = _integer(rid.children[1], "a recipient's serial number")
        key_id, recipient = None, Recipient(name_text(issuer_der), serial)
    algorithm, params = _algorithm(element.children[2], "a recipient's key encryption algorithm")
    encrypted_key = _primitive(element.children[3], _UNIVERSAL, _OCTET_STRING, "a recipient's encrypted key")
    return _KeyTrans(recipient, issuer_der, key_id, algorithm, params, encrypted_key)


def _read_head(r):
    """Read up to and including the recipients: (content type OID, the entered elements' ends, infos)."""
    if r.at_end():
        raise DataError("no CMS data: the encrypted part is empty")
    if not r.starts_with(b"\x30"):
        raise DataError("not CMS data: it does not start with a content info")
    ends = [r.open(_UNIVERSAL, _SEQUENCE, "the CMS content info")]
    content_type = _oid(r.element("the CMS content type"), "the CMS content type")
    if content_type not in (ENVELOPED_DATA, AUTH_ENVELOPED_DATA):
        name = _CONTENT_TYPES.get(content_type, content_type)
        raise DataError("not encrypted CMS data: its content type is %s" % name)
    ends.append(r.open(_CONTEXT, 0, "the CMS content"))
    ends.append(r.open(_UNIVERSAL, _SEQUENCE, "the enveloped data"))
    _integer(r.element("the enveloped data's version"), "the enveloped data's version")
    element = r.element("the recipients")
    if element is not None and (element.cls, element.number) == (_CONTEXT, 0):  # originatorInfo
        element = r.element("the recipients")
    _expect(element, _UNIVERSAL, _SET, "the recipients")
    infos = [_recipient_info(child) for child in element.children]
    if not infos:
        raise DataError("malformed CMS data: the encrypted data names no recipient")
    return content_type, ends, infos


def recipients(der_head):
    """Whom an EnvelopedData (or AuthEnvelopedData) is encrypted to: a list of :class:`Recipient`
    ((issuer, serial) pairs).  ``der_head``: its DER/BER (bytes, or an iterable of byte chunks); only
    the start, up to the end of the recipients (a few hundred bytes each), is read.  DataError when
    it is not one, or is cut before the end of its recipients."""
    chunks = [der_head] if isinstance(der_head, bytes | bytearray | memoryview) else der_head
    _, _, infos = _read_head(_Reader(chunks))
    return [info.recipient if isinstance(info, _KeyTrans) else info for info in infos]


# ---------------------------------------------------------------------------------------------
# Our certificate and key


class _Identity(NamedTuple):
    key: object
    issuer_der: bytes
    issuer: str
    serial: int
    key_ids: tuple


def _read_file(path, what):
    try:
        with open(path, "rb") as f:
            data = f.read(ELEMENT_LIMIT + 1)
    except OSError as exc:
        raise NoInputError("cannot read the %s %s: %s" % (what, shown(os.fsdecode(path)), describe_oserror(exc)))
    if len(data) > ELEMENT_LIMIT:
        raise ConfigError("the %s %s is too large to be one" % (what, shown(os.fsdecode(path))))
    return data


def _identity(cert, key, passphrase):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    cert_name, key_name = shown(os.fsdecode(cert)), shown(os.fsdecode(key))
    data = _read_file(cert, "certificate")
    try:
        if b"-----BEGIN" in data:
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise ConfigError("%s holds no certificate (PEM or DER)" % cert_name) from None
    data = _read_file(key, "private key")
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    # The key is the user's own and must match the certificate's public key (checked below): its
    # consistency check (45 ms for RSA-2048, at every message of a mailbox) is skipped.
    try:
        try:
            private = loader(data, passphrase, unsafe_skip_rsa_key_validation=True)
        except TypeError:
            if passphrase is None:
                raise ConfigError(
                    "the private key %s is encrypted and no passphrase was given (key_password_command)" % key_name
                ) from None
            # a passphrase for a key that has none: the key is fine as it is
            private = loader(data, None, unsafe_skip_rsa_key_validation=True)
    except ValueError:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise ConfigError("cannot decrypt the private key %s: wrong passphrase" % key_name) from None
        raise ConfigError("%s holds no private key (PEM or DER)" % key_name) from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ConfigError("the private key %s is not an RSA key: only RSA keys can decrypt S/MIME here" % key_name)
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or public.public_numbers() != private.public_key().public_numbers():
        raise ConfigError("the private key %s does not belong to the certificate %s" % (key_name, cert_name))
    key_ids = []
    try:
        key_ids.append(certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    except x509.ExtensionNotFound:
        pass
    key_ids.append(x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest)
    # The issuer as encoded in the certificate (RecipientInfos copy it byte for byte).
    tbs = _Reader([certificate.tbs_certificate_bytes]).element("a certificate")
    fields = list(tbs.children)
    if fields and fields[0].cls == _CONTEXT:
        fields.pop(0)
    issuer_der = fields[2].raw
    return _Identity(private, issuer_der, name_text(issuer_der), certificate.serial_number, tuple(key_ids))


def _is_ours(info, me):
    if info.key_id is not None:
        return info.key_id in me.key_ids
    if info.recipient.serial != me.serial:
        return False
    return info.issuer_der == me.issuer_der or info.recipient.issuer.casefold() == me.issuer.casefold()


def _not_for_us(infos, me):
    listed = [info.recipient if isinstance(info, _KeyTrans) else info for info in infos]
    shown_ = "; ".join(shown(str(r)) for r in listed[:3])
    if len(listed) > 3:
        shown_ += "; and %d more" % (len(listed) - 3)
    ours = shown(str(Recipient(me.issuer, me.serial)))
    return NotForUs("not encrypted to our certificate (%s): it is for %s" % (ours, shown_), listed)


def _hash(element, what):
    from cryptography.hazmat.primitives import hashes

    oid, _ = _algorithm(element, what)
    if oid not in _HASHES:
        raise DataError("unsupported hash %s in %s" % (oid, what))
    return getattr(hashes, _HASHES[oid])()


def _oaep(params):
    """The OAEP padding an RSAES-OAEP-params element asks for (RFC 4055; absent fields: SHA-1, MGF1-SHA-1)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    algorithm, mgf_hash, label = hashes.SHA1(), hashes.SHA1(), None
    if params is not None and (params.cls, params.number) != (_UNIVERSAL, _NULL):
        _expect(params, _UNIVERSAL, _SEQUENCE, "the RSAES-OAEP parameters")
        for field in params.children:
            if field.cls != _CONTEXT or not field.constructed or len(field.children) != 1:
                raise DataError("malformed CMS data: a bad field in the RSAES-OAEP parameters")
            inner = field.children[0]
            if field.number == 0:
                algorithm = _hash(inner, "the RSAES-OAEP hash")
            elif field.number == 1:
                oid, mgf_params = _algorithm(inner, "the RSAES-OAEP mask generation")
                if oid != _MGF1 or mgf_params is None:
                    raise DataError("unsupported mask generation function %s in RSAES-OAEP" % oid)
                mgf_hash = _hash(mgf_params, "the RSAES-OAEP mask generation hash")
            elif field.number == 2:
                oid, source = _algorithm(inner, "the RSAES-OAEP label source")
                if oid != _P_SPECIFIED or source is None:
                    raise DataError("unsupported label source %s in RSAES-OAEP" % oid)
                label = _primitive(source, _UNIVERSAL, _OCTET_STRING, "the RSAES-OAEP label") or None
            else:
                raise DataError("malformed CMS data: a bad field in the RSAES-OAEP parameters")
    return padding.OAEP(mgf=padding.MGF1(mgf_hash), algorithm=algorithm, label=label)


def _unwrap(info, me, key_length):
    from cryptography.hazmat.primitives.asymmetric import padding

    if info.algorithm == _RSA:
        pad = padding.PKCS1v15()
    elif info.algorithm == _RSAES_OAEP:
        pad = _oaep(info.params)
    else:
        raise DataError("unsupported key encryption algorithm %s" % info.algorithm)
    try:
        key = me.key.decrypt(info.encrypted_key, pad)
    except ValueError:
        key = None
    if key is None or len(key) != key_length:
        # With PKCS #1 v1.5 a wrong key gives random bytes rather than an error (implicit rejection).
        raise DataError(
            "cannot decrypt the content key with our private key: the message is damaged or not for this key"
        )
    return key


# ---------------------------------------------------------------------------------------------
# The content


def _content_cipher(r, content_type):
    """Read the start of the EncryptedContentInfo: (its end, the cipher's entry, its parameters element)."""
    end = r.open(_UNIVERSAL, _SEQUENCE, "the encrypted content info")
    _oid(r.element("the encrypted content type"), "the encrypted content type")
    oid, params = _algorithm(r.element("the content cipher"), "the content cipher")
    if oid not in _CIPHERS:
        if oid in _UNSUPPORTED_CIPHERS:
            raise DataError("unsupported content cipher %s" % _UNSUPPORTED_CIPHERS[oid])
        raise DataError("unsupported content cipher %s" % oid)
    entry = _CIPHERS[oid]
    if (entry[3] == "gcm") != (content_type == AUTH_ENVELOPED_DATA):
        raise DataError("malformed CMS data: %s in %s" % (entry[0], _CONTENT_TYPES[content_type]))
    return end, entry, params


def _decryptor(entry, params, key):
    """(a decryptor, a PKCS #7 unpadder or None, the GCM tag length or None)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    name, family, _, mode = entry
    if family == "des3":
        try:
            from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        except ImportError:  # cryptography < 43
            TripleDES = algorithms.TripleDES  # noqa: N806
        algorithm, block = TripleDES(key), 8
    else:
        algorithm, block = algorithms.AES(key), 16
    if mode == "cbc":
        iv = _primitive(params, _UNIVERSAL, _OCTET_STRING, "the IV of %s" % name)
        if len(iv) != block:
            raise DataError("malformed CMS data: an IV of %d bytes for %s" % (len(iv), name))
        return Cipher(algorithm, modes.CBC(iv)).decryptor(), padding.PKCS7(block * 8).unpadder(), None
    _expect(params, _UNIVERSAL, _SEQUENCE, "the parameters of %s" % name)
    if not 1 <= len(params.children) <= 2:
        raise DataError("malformed CMS data: bad parameters for %s" % name)
    nonce = _primitive(params.children[0], _UNIVERSAL, _OCTET_STRING, "the nonce of %s" % name)
    tag_length = _integer(params.children[1], "the tag length of %s" % name) if len(params.children) == 2 else 12
    if not 8 <= len(nonce) <= 128 or tag_length not in (12, 13, 14, 15, 16):
        raise DataError("malformed CMS data: bad parameters for %s" % name)
    return Cipher(algorithm, modes.GCM(nonce, min_tag_length=tag_length)).decryptor(), None, tag_length


def _ciphertext(r, depth=0):
    """The encrypted content's bytes, as they come: a primitive [0], or a constructed [0] of
    OCTET STRINGs (BER: themselves possibly constructed)."""
    start = r.offset
    cls, constructed, number, length, _ = r.header("the encrypted content")
    want = (_CONTEXT, 0) if depth == 0 else (_UNIVERSAL, _OCTET_STRING)
    if (cls, number) != want:
        what = "the encrypted content" if depth == 0 else "a piece of the encrypted content"
        raise DataError(
            "malformed CMS data at byte %d: %s should be %s, not %s"
            % (start, what, _tag_text(want[0], True, want[1]), _tag_text(cls, constructed, number))
        )
    if not constructed:
        while length:
            data = r.piece(length, "the encrypted content")
            length -= len(data)
            yield data
        return
    if depth >= DEPTH_LIMIT:
        raise DataError("malformed CMS data at byte %d: elements nested too deep" % start)
    end = None if length is None else r.offset + length
    while r.inside(end):
        yield from _ciphertext(r, depth + 1)
    r.close(end, "the encrypted content")


def _write(out, data):
    try:
        out.write(data)
    except OSError as exc:
        raise IOFailure("cannot write the decrypted message: %s" % describe_oserror(exc)) from None


def _decrypt_content(r, decryptor, unpadder, out):
    batch = []
    size = 0
    for data in _ciphertext(r):
        batch.append(data)
        size += len(data)
        if size >= BATCH:
            plain = decryptor.update(b"".join(batch))
            batch, size = [], 0
            _write(out, unpadder.update(plain) if unpadder is not None else plain)
    plain = decryptor.update(b"".join(batch))
    _write(out, unpadder.update(plain) if unpadder is not None else plain)


def decrypt(der_chunks, out, *, cert, key, passphrase=None):
    """Decrypt the CMS EnvelopedData (or AuthEnvelopedData) in ``der_chunks`` (an iterable of bytes:
    the DER/BER of its ContentInfo, as base64-decoded from an ``application/pkcs7-mime`` part) and write
    the plaintext to ``out`` (a binary file).  ``cert`` and ``key``: paths of our certificate and private
    key (PEM or DER; one PEM file may hold both), ``passphrase``: bytes for an encrypted key.  Returns the
    content cipher's name (``"aes-256-cbc"``).

    Memory stays bounded whatever the size: the content is read, decrypted and written in pieces.
    :class:`NotForUs` (a DataError) when no recipient is our certificate (by issuer and serial number,
    or subject key identifier); DataError for malformed, truncated or unsupported input, a content key
    our key cannot decrypt, or bad padding (or GCM tag) at the end; ConfigError (78) when the certificate
    or key cannot be used (not one, a key that is not the certificate's, a wrong or missing passphrase),
    NoInputError (66) when one cannot be read, IOFailure (74) when ``out`` cannot be written.  Bytes
    written before an error are not plaintext to use."""
    me = _identity(cert, key, passphrase)
    r = _Reader(der_chunks)
    content_type, ends, infos = _read_head(r)
    ours = [info for info in infos if isinstance(info, _KeyTrans) and _is_ours(info, me)]
    if not ours:
        raise _not_for_us(infos, me)
    eci_end, entry, params = _content_cipher(r, content_type)
    content_key = _unwrap(ours[0], me, entry[2])
    try:
        decryptor, unpadder, tag_length = _decryptor(entry, params, content_key)
    except ValueError as exc:  # parameters cryptography refuses
        raise DataError("malformed CMS data: bad parameters for %s (%s)" % (entry[0], exc)) from None
    if r.inside(eci_end):
        _decrypt_content(r, decryptor, unpadder, out)
    else:
        raise DataError("no encrypted content in the CMS data (detached content is not supported)")
    r.close(eci_end, "the encrypted content info")
    mac = None
    while r.inside(ends[-1]):
        element = r.element("the recipients")
        if content_type == AUTH_ENVELOPED_DATA:
            if element.cls == _CONTEXT and element.number == 1:
                raise DataError("unsupported authenticated attributes in the encrypted data")
            if (element.cls, element.number) == (_UNIVERSAL, _OCTET_STRING) and mac is None:
                mac = _primitive(element, _UNIVERSAL, _OCTET_STRING, "the authentication tag")
                continue
        if element.cls != _CONTEXT or element.number != (2 if content_type == AUTH_ENVELOPED_DATA else 1):
            raise DataError("malformed CMS data: an unexpected element after the encrypted content")
    for end, what in zip(
        reversed(ends), ("the enveloped data", "the CMS content", "the CMS content info"), strict=True
    ):
        r.close(end, what)
    if not r.at_end():
        raise DataError("malformed CMS data: bytes after its end (at byte %d)" % r.offset)
    try:
        if tag_length is not None:
            if mac is None or len(mac) != tag_length:
                raise DataError("malformed CMS data: no authentication tag of %d bytes" % tag_length)
            decryptor.finalize_with_tag(mac)
            return entry[0]
        try:
            tail = decryptor.finalize()
        except ValueError:
            raise DataError(
                "malformed CMS data: the encrypted content is not a whole number of cipher blocks"
            ) from None
        _write(out, unpadder.update(tail) + unpadder.finalize())
    except ValueError:
        raise DataError(
            "decryption failed: bad padding at the end of the content (damaged data or a wrong key)"
        ) from None
    except Exception as exc:
        from cryptography.exceptions import InvalidTag

        if isinstance(exc, InvalidTag):
            raise DataError("decryption failed: the authentication tag does not match (damaged data)") from None
        raise
    return entry[0]
