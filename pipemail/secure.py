"""Signing and encrypting a composed message: S/MIME (RFC 8551) with ``openssl cms``, OpenPGP
(RFC 3156) with ``gpg``.

What is signed and encrypted is the message's MIME entity (its Content-* fields, a blank
line, its body) in its canonical CRLF form; the other header fields (From, To, Subject,
Date, Message-ID...) stay outside.  Signing is sign-then-encrypt when both are asked for.

Memory stays bounded at any size: a signature is made by streaming the entity through the
tool and getting a small detached signature back, and the message is then made again from
its sources around it (two passes, nothing held).  Encrypted output is random, so it is
spooled once to a private temporary file (:mod:`pipemail.spool`) and the message's body
is read from that file as often as it is read.

Every recipient's certificate or key is found before anything is sent: a recipient
without one is a ConfigError (78) naming it, and the message is not sent, in clear or at
all.  The passphrase of the signing key comes from the account's ``key_password_command``
and goes to the tool through a pipe of its own, never on a command line.
"""

import os

from pipemail import crypto, message
from pipemail.errors import ConfigError, NoPermError, PipemailError, UsageError, shown
from pipemail.lines import to_crlf

# Room the wrapping takes beyond the entity, for --max-size (generous: a part must fit)
SIGN_ROOM = 8 * 1024  # multipart/signed framing and a signature (S/MIME: with the signer's certificate)
ENCRYPT_ROOM = 4 * 1024  # the wrapper's own header fields and framing
RECIPIENT_ROOM = 2048  # per recipient: an RSA-4096 RecipientInfo, or an OpenPGP PKESK, with room to spare


class Settings:
    """What to do to a message: ``kind`` (crypto.SMIME or crypto.OPENPGP), ``sign``, ``encrypt``,
    with the account's keys; made by :func:`settings`."""

    def __init__(self, kind, sign, encrypt, account, recipient_certs=(), env=None):
        self.kind = kind
        self.sign = sign
        self.encrypt = encrypt
        self.account = account
        self.recipient_certs = list(recipient_certs)
        self.env = os.environ if env is None else env
        self.command = "pymail"  # whose words: pysendmail has no --recipient-cert
        # the signing key's passphrase (key_password_command), asked once; None without one
        self.passphrase = crypto.Once(lambda: crypto.key_passphrase(account, self.env))

    def overhead(self, size, recipients=1):
        """The most ``size`` bytes of entity (CRLF) become once wrapped: what --max-size plans with."""
        if self.sign:
            size += SIGN_ROOM
        if self.encrypt:
            # ciphertext: the entity, padding and RecipientInfos (stream chunking adds 4 bytes per
            # 4 KiB); then base64 (S/MIME, 78 bytes a 57 with CRLF) or armor (OpenPGP, 66 a 48)
            cipher = size + size // 512 + 64 + RECIPIENT_ROOM * recipients
            size = ENCRYPT_ROOM + -(-cipher * 66 // 48)
        return size

    def room(self, max_size, recipients=1):
        """The largest entity (CRLF bytes) whose wrapped message stays within ``max_size``."""
        lo, hi = 0, max_size
        while lo < hi:  # overhead() is monotonic: a bisection inverts it
            mid = (lo + hi + 1) // 2
            if self.overhead(mid, recipients) <= max_size:
                lo = mid
            else:
                hi = mid - 1
        return lo


def settings(account, *, sign=None, encrypt=None, kind=None, recipient_certs=(), env=None):
    """The :class:`Settings` for the options (None: the account's ``sign``/``encrypt``), or None
    when the message is neither signed nor encrypted.  ConfigError (78) for what is missing."""
    sign = bool(account.sign) if sign is None else sign
    encrypt = bool(account.encrypt) if encrypt is None else encrypt
    if not (sign or encrypt):
        if kind:
            raise UsageError("--%s says how to sign or encrypt: give --sign or --encrypt with it" % kind)
        if recipient_certs:
            raise UsageError("--recipient-cert is for --encrypt: the message is not encrypted")
        return None
    if recipient_certs and not encrypt:
        raise UsageError("--recipient-cert is for --encrypt: the message is not encrypted")
    kind = kind or account.crypto
    what = "--sign and --encrypt" if sign and encrypt else "--sign" if sign else "--encrypt"
    if kind is None:
        raise ConfigError(
            '%s: say how: --smime or --openpgp, or crypto = "smime" or "openpgp" in the account '
            "(see pipemail.conf(5))" % what
        )
    if recipient_certs and kind != crypto.SMIME:
        raise UsageError("--recipient-cert is for S/MIME: OpenPGP keys come from your GnuPG keyring")
    if kind == crypto.SMIME and sign:
        for key, value in (("smime_cert", account.smime_cert), ("smime_key", account.smime_key)):
            if not value:
                raise ConfigError(
                    "S/MIME signing needs %s (your certificate and its private key, PEM) in the account%s "
                    "(see pipemail.conf(5))" % (key, _named(account))
                )
            _readable(value, key)
        _private(account.smime_key)
    for path in recipient_certs:
        _readable(path, "--recipient-cert")
    return Settings(kind, sign, encrypt, account, recipient_certs, env)


def account_wraps(account):
    """What ``account`` says to do to every message: a tuple of ``"sign"``, ``"encrypt"``
    (:data:`pipemail.transport.WRAPS`), the marks of a message kept unwrapped."""
    return tuple(w for w, on in (("sign", account.sign), ("encrypt", account.encrypt)) if on)


def config_wraps(name=None, env=None):
    """:func:`account_wraps` of the account ``name`` (None: the default one, else the only one) as
    far as the configuration file can be read when :func:`pipemail.config.load` refuses it (an
    unknown key, a bad value): what a message kept for want of a configuration was to be.  Empty
    when the file cannot be read as TOML at all."""
    acct = readable_account(name, env)
    return tuple(w for w in ("sign", "encrypt") if acct.get(w) is True)


def readable_account(name=None, env=None):
    """The TOML table of the account ``name`` (None: the default one, else the only one), read
    without the checks of :func:`pipemail.config.load` (which refused it); {} when there is none."""
    import tomllib

    from pipemail import config

    try:
        path, _named = config.default_path(env)
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, ValueError):  # tomllib.TOMLDecodeError is a ValueError
        return {}
    accounts = doc.get("accounts") if isinstance(doc.get("accounts"), dict) else {}
    name = name or doc.get("default")
    if name is None and len(accounts) == 1:
        name = next(iter(accounts))
    acct = accounts.get(name) if isinstance(name, str) else None
    return acct if isinstance(acct, dict) else {}


def _named(account):
    return " '%s'" % account.name if account.name else ""


def _readable(path, what):
    """ConfigError (78) when the file of a setting cannot be read; NoInputError (66) when a file given
    on the command line (--recipient-cert) does not exist, as for -a."""
    import errno

    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        from pipemail.errors import NoInputError, describe_oserror

        cls = NoInputError if what.startswith("--") and exc.errno == errno.ENOENT else ConfigError
        raise cls("%s %s: %s" % (what, shown(os.fsdecode(path)), describe_oserror(exc))) from None


def _private(path):
    """ConfigError (78) when the private key file ``path`` can be read or written by others than its
    owner: refused as ssh refuses such a key (and as a configuration holding a password is)."""
    import stat

    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise ConfigError(
            "smime_key %s is open to others (mode %04o): the private key must be yours alone: chmod 600 %s"
            % (shown(os.fsdecode(path)), mode, shown(os.fsdecode(path)))
        )


# -- recipients' certificates and keys -------------------------------------------------------


def prepare(s, sender, recipients):
    """Everything checked before the first byte goes out: the signing certificate or key (usable,
    for email, for ``sender``) and, when encrypting, every recipient's certificate or key (found
    and able to encrypt).  The :func:`recipient_keys` of ``recipients`` (None: not encrypted)."""
    if s.sign:
        check_signer(s, sender)
    return recipient_keys(s, recipients) if s.encrypt else None


def recipient_keys(s, recipients):
    """For each of ``recipients`` its certificate (S/MIME: a PEM path) or key (OpenPGP: the address
    gpg takes, ``<addr>``): ``{addr: key}``.  ConfigError (78) naming the first without one, or
    whose certificate or key cannot be used to encrypt."""
    if s.kind == crypto.SMIME:
        return _smime_certs(s, recipients)
    keys = {addr: _pgp_key(s, addr) for addr in recipients}
    _pgp_try(s, keys)
    return keys


def _cert_problem(cert, use):
    """Why ``cert`` cannot be used for ``use`` ("sign", "encrypt") in S/MIME, or None: its dates,
    its extended key usage (emailProtection), its key usage, its kind of key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    if crypto.cert_expired(cert):
        return "has expired (%s): ask for a new one" % cert.not_valid_after_utc.strftime("%Y-%m-%d")
    if cert.not_valid_before_utc > now:
        return "is not valid yet (from %s)" % cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and not {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
        eku
    ):
        return "is not for email (its extended key usage lacks emailProtection): readers refuse it"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    key = cert.public_key()
    if use == "sign":
        if ku is not None and not (ku.digital_signature or ku.content_commitment):
            return "does not allow signing (its key usage lacks digitalSignature)"
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            return "has a %s key, which S/MIME signing with openssl does not take (RSA or EC)" % _key_kind(key)
        return None
    if isinstance(key, rsa.RSAPublicKey):
        if ku is not None and not ku.key_encipherment:
            return "does not allow encryption (its key usage lacks keyEncipherment)"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if ku is not None and not ku.key_agreement:
            return "does not allow encryption (its key usage lacks keyAgreement)"
    else:
        return "has a %s key, which cannot encrypt (RSA or EC can)" % _key_kind(key)
    return None


def _key_kind(key):
    name = type(key).__name__.lstrip("_")
    for suffix in ("PublicKey",):
        name = name.split(suffix)[0]
    return name or "such a"


def _load(path, what):
    try:
        return crypto.load_cert(path)
    except (OSError, ValueError):
        raise ConfigError("%s %s is not a PEM certificate" % (what, shown(os.fsdecode(path)))) from None


def _cert_emails(path, what, addr=None):
    """The addresses a certificate is for (:func:`crypto.cert_emails`); ConfigError when it is not
    a certificate, or cannot be used to encrypt (``addr``: the recipient it is for, named)."""
    cert = _load(path, what)
    why = _cert_problem(cert, "encrypt")
    if why is not None:
        who = " (for %s)" % (addr or ", ".join(crypto.cert_emails(cert)) or "no address")
        raise ConfigError("%s %s%s %s: not sent (never in clear)" % (what, shown(os.fsdecode(path)), who, why))
    return crypto.cert_emails(cert)


def check_signer(s, sender):
    """ConfigError (78) when readers would refuse what ``s`` signs for ``sender``: an S/MIME
    certificate expired, not yet valid, not for email, or not naming ``sender``; an OpenPGP key
    (pgp_key) whose user ids do not name ``sender``."""
    sender = (sender or "").lower()
    if s.kind == crypto.SMIME:
        path = s.account.smime_cert
        cert = _load(path, "smime_cert")
        why = _cert_problem(cert, "sign")
        if why is not None:
            raise ConfigError("smime_cert %s %s: not sent" % (shown(os.fsdecode(path)), why))
        emails = crypto.cert_emails(cert)
        if sender not in emails:
            raise ConfigError(
                "smime_cert %s is for %s, not for the From address %s: readers refuse the signature; "
                "not sent" % (shown(os.fsdecode(path)), ", ".join(emails) or "no address", sender)
            )
        return
    if s.account.pgp_key:
        keys = crypto.pgp_keys(s.account.pgp_key, s.env)
        if keys and not any(sender in key.emails() for key in keys):
            raise ConfigError(
                "pgp_key %s has no user id for the From address %s: readers refuse the signature; not sent"
                % (s.account.pgp_key, sender)
            )


def _smime_certs(s, recipients):
    given = {}
    for path in s.recipient_certs:
        for addr in _cert_emails(path, "--recipient-cert"):
            given.setdefault(addr, path)
    found = {}
    where = s.account.smime_certs
    for addr in recipients:
        path = given.get(addr.lower())
        if path is None and where:
            for name in (addr, addr.lower()):
                candidate = os.path.join(where, name + ".pem")
                if os.path.isfile(candidate):
                    if addr.lower() not in _cert_emails(candidate, "the certificate", addr):
                        raise ConfigError(
                            "the certificate %s is not %s's (it names another address): not sent (never in clear)"
                            % (shown(candidate), addr)
                        )
                    path = candidate
                    break
        if path is None:
            raise ConfigError(
                "no S/MIME certificate for %s: %sput it in %s: not sent (never in clear)"
                % (
                    addr,
                    "give --recipient-cert FILE, or " if s.command == "pymail" else "",
                    shown(os.path.join(where, addr + ".pem")) if where else "smime_certs (see pipemail.conf(5))",
                )
            )
        found[addr] = path
    return found


def _pgp_try(s, keys):
    """Encrypt nothing to every key of ``keys`` (``{addr: key}``) as the message will be: gpg's own
    judgment (trust model, validity, capability) before anything is sent.  ConfigError naming the
    first recipient gpg refuses."""
    if not keys:
        return
    argv = _gpg_base(s) + _NO_NETWORK + ["--armor", "--encrypt"]
    for key in keys.values():
        argv += ["--recipient", key]
    with open(os.devnull, "wb") as sink:
        got = crypto.run_tool(argv, [b""], out=sink, status=True, env=s.env)
    if got.rc != 0:
        _gpg_refusal(got)


def _gpg_refusal(got):
    for line in got.status:
        parts = line.split()
        if parts[:1] == ["INV_RECP"] and len(parts) >= 3:
            why = _INV_RECP.get(parts[1], "gpg refuses the key (INV_RECP %s)" % parts[1])
            raise ConfigError("cannot encrypt to %s: %s: not sent (never in clear)" % (parts[2].strip("<>"), why))
    raise PipemailError("gpg --encrypt failed (exit %d): %s" % (got.rc, _last_line(got.stderr)))


def _pgp_key(s, addr):
    """``<addr>`` when the keyring holds a valid key for ``addr`` that can encrypt; else ConfigError."""
    if any(key.usable("E") for key in crypto.pgp_keys("<%s>" % addr, s.env)):
        return "<%s>" % addr
    raise ConfigError(
        "no OpenPGP key for %s in your GnuPG keyring that can encrypt (gpg --import it; not "
        "expired or revoked): not sent (never in clear)" % addr
    )


# -- the wrapping ------------------------------------------------------------------------------


class _Whole(message.Body):
    """A Message's bytes as a body (its header fields, a blank line, its body)."""

    def __init__(self, msg):
        self.msg = msg

    def __iter__(self):
        return iter(self.msg.segments())

    def sizes(self):
        return self.msg.sizes()


def wrap(msg, s, sender, recipients, keys=None):
    """``msg`` signed and/or encrypted (to ``recipients``) as ``s`` says: a new Message with the
    same outer header fields.  ``keys``: :func:`recipient_keys` of the recipients, when known."""
    outer, entity = msg.entity()
    if s.sign:
        entity = _sign(_signable(entity), s, sender)
    if s.encrypt:
        keys = recipient_keys(s, recipients) if keys is None else keys
        entity = _encrypt(entity, s, [keys[a] for a in recipients])
    if not any(name.lower() == "mime-version" for name, _v in outer):
        outer = outer + [("MIME-Version", "1.0")]  # RFC 2045: a -t message without one is MIME now
    return message.Message(outer + entity.headers, raw_body=entity.raw_body)


class _BodySource:
    """A Body as a source of :mod:`pipemail.message` (re-iterable chunks, ``stats``, ``size``)."""

    def __init__(self, body):
        self.body = body
        self.stats = None
        self.size = None

    def __iter__(self):
        return iter(self.body)


def _signable(entity):
    """The entity of a message given whole (-t, pysendmail) as it can be signed: a body that is
    not multipart, given 7bit or 8bit (or without a Content-Transfer-Encoding), with a line that a
    server or an mbox changes (one ending in white space, one starting with "From ") goes
    quoted-printable, as the text pymail composes does (RFC 3156 section 3, RFC 8551 section
    3.1.1); a body without a Content-Type says the default (text/plain; charset=us-ascii) when
    it is ASCII, so that the signed part has a header.  A multipart body is signed as given."""
    if entity.raw_body is None:  # composed by pymail: made safe to sign already
        return entity
    ctype = (entity.header("Content-Type") or "").strip().lower()
    cte = (entity.header("Content-Transfer-Encoding") or "7bit").strip().lower()
    if ctype.startswith("multipart/") or cte not in ("7bit", "8bit"):
        return entity
    src = _BodySource(entity.raw_body)
    st = message.scan(src)
    fields = list(entity.headers)
    if not ctype and st.ascii and not st.nul:
        fields.insert(0, ("Content-Type", "text/plain; charset=us-ascii"))
    if st.nul or not (st.trailing_space or st.from_line):
        if fields == entity.headers:
            return entity
        return message.Message(fields, raw_body=entity.raw_body)
    fields = [(n, v) for n, v in fields if n.lower() != "content-transfer-encoding"]
    fields.append(("Content-Transfer-Encoding", "quoted-printable"))
    return message.Message(fields, raw_body=message.QuotedPrintable(src))


def _sign(entity, s, sender):
    from pipemail import headers

    if s.kind == crypto.SMIME:
        sig, micalg = _smime_signature(entity, s), crypto.SMIME_MICALG
        protocol, sig_type, name = crypto.SMIME_PROTOCOL, crypto.SMIME_PROTOCOL, crypto.SMIME_SIG_NAME
        sig_body = message.Base64(message.Data(sig))
        sig_fields = [
            ("Content-Type", headers.mime("Content-Type", sig_type, [("name", name)])),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", headers.mime("Content-Disposition", "attachment", [("filename", name)])),
            ("Content-Description", "S/MIME cryptographic signature"),
        ]
        preamble = b"This is an S/MIME signed message (RFC 8551).\n"
    else:
        sig, micalg = _pgp_signature(entity, s, sender)
        protocol = crypto.PGP_SIGNATURE_TYPE
        sig_body = message.Raw(message.Data(sig))
        sig_fields = [
            ("Content-Type", headers.mime("Content-Type", protocol, [("name", crypto.PGP_SIG_NAME)])),
            ("Content-Description", "OpenPGP digital signature"),
            (
                "Content-Disposition",
                headers.mime("Content-Disposition", "attachment", [("filename", crypto.PGP_SIG_NAME)]),
            ),
        ]
        preamble = b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156).\n"
    b = message.new_boundary()
    params = [("protocol", protocol), ("micalg", micalg), ("boundary", b)]
    fields = [("Content-Type", headers.mime("Content-Type", "multipart/signed", params))]
    bb = b.encode()
    body = message.Joined(
        [
            preamble + b"--" + bb + b"\n",
            _Whole(entity),
            b"\n--" + bb + b"\n" + message.field_block(sig_fields) + b"\n",
            sig_body,
            b"\n--" + bb + b"--\n",
        ]
    )
    return message.Message(fields, raw_body=body)


def _smime_signature(entity, s):
    acct = s.account
    argv = ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER"]
    argv += ["-signer", acct.smime_cert, "-inkey", acct.smime_key]
    passphrase = s.passphrase()
    argv += ["-passin", "fd:{pass_fd}"] if passphrase is not None else ["-passin", "pass:"]
    with _chain(acct.smime_cert, s.env) as chain:
        if chain is not None:  # the intermediate CAs the smime_cert file holds go with the signature
            argv += ["-certfile", chain]
        got = crypto.run_tool(argv, to_crlf(entity.segments()), passphrase=passphrase, env=s.env)
    if got.rc == 0 and got.stdout:
        return got.stdout
    err = got.stderr
    if "Could not read signing key" in err or "bad decrypt" in err or "maybe wrong password" in err:
        if passphrase is None:
            raise ConfigError(
                "cannot read the S/MIME key %s: it is encrypted; set key_password_command in the account "
                "(see pipemail.conf(5))" % shown(acct.smime_key)
            )
        raise NoPermError(
            "cannot read the S/MIME key %s: wrong passphrase (from key_password_command)" % shown(acct.smime_key)
        )
    if "Could not read signer certificate" in err or "unable to load certificate" in err:
        raise ConfigError("smime_cert %s is not a PEM certificate" % shown(acct.smime_cert))
    if "private key does not match" in err:
        raise ConfigError(
            "smime_key %s is not the key of smime_cert %s" % (shown(acct.smime_key), shown(acct.smime_cert))
        )
    raise PipemailError("openssl cms -sign failed (exit %d): %s" % (got.rc, _last_line(err)))


class _chain:
    """A private temporary file holding the certificates of the PEM file ``path`` after its first
    (openssl's -certfile refuses the signer's own again), or None when it holds one; removed after."""

    def __init__(self, path, env):
        self.path, self.env, self.name = path, env, None

    def __enter__(self):
        import re
        import tempfile

        from pipemail import spool

        with open(self.path, "rb") as f:
            pems = re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\s*", f.read(), re.S)
        if len(pems) < 2:
            return None
        fd, self.name = tempfile.mkstemp(prefix="pymail-chain-", suffix=".pem", dir=spool.tmpdir(self.env))
        with os.fdopen(fd, "wb") as out:
            out.write(b"".join(pems[1:]))
        return self.name

    def __exit__(self, *exc):
        if self.name is not None:
            os.unlink(self.name)


def _last_line(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _gpg_base(s):
    return ["gpg", "--batch", "--no-tty", "--status-fd", "{status_fd}"]


# gpg never goes to the network for a key, whatever gpg.conf says: "clear" drops the mechanisms of
# gpg.conf's auto-key-locate (a command line's list is otherwise added to it), and no key is
# fetched for a signature either; dirmngr (keyservers, WKD) is never started.
_NO_NETWORK = ["--auto-key-locate", "clear,local", "--no-auto-key-retrieve", "--disable-dirmngr"]


def _pgp_signature(entity, s, sender):
    """``(armored detached signature, micalg)`` of the entity's CRLF form."""
    signer = s.account.pgp_key or "<%s>" % sender
    passphrase = s.passphrase()
    argv = _gpg_base(s) + ["--pinentry-mode", "loopback"]
    if passphrase is not None:
        argv += ["--passphrase-fd", "{pass_fd}"]
    argv += ["--local-user", signer, "--digest-algo", "SHA256", "--armor", "--detach-sign"]
    got = crypto.run_tool(argv, to_crlf(entity.segments()), passphrase=passphrase, status=True, env=s.env)
    created = [ln.split() for ln in got.status if ln.startswith("SIG_CREATED ")]
    if got.rc == 0 and created:
        try:
            micalg = crypto.PGP_MICALG[int(created[0][3])]
        except (IndexError, ValueError, KeyError):
            raise PipemailError("gpg signed with a hash algorithm pymail does not know: %s" % created[0]) from None
        return got.stdout, micalg
    status = " ".join(got.status)
    if "INV_SGNR" in status or "No secret key" in got.stderr or "No such user ID" in got.stderr:
        validity = {key.validity for key in crypto.pgp_keys(signer, s.env)}
        for letter, words in (("r", "is revoked"), ("e", "has expired")):
            if letter in validity and not validity - set(crypto.PGP_UNUSABLE):
                raise ConfigError(
                    "the OpenPGP key %s %s: it cannot sign; make a new one, or extend it "
                    "(gpg --quick-set-expire), and set pgp_key in the account" % (signer, words)
                )
        raise ConfigError(
            "no OpenPGP secret key for %s in your GnuPG keyring: set pgp_key in the account "
            "(see pipemail.conf(5))" % signer
        )
    if "Bad passphrase" in got.stderr or _gpg_failure(got.status) == 11:
        raise NoPermError("cannot use the OpenPGP key %s: wrong passphrase (from key_password_command)" % signer)
    if "NEED_PASSPHRASE" in status or "batchmode" in got.stderr:
        raise ConfigError(
            "the OpenPGP key %s needs a passphrase: set key_password_command in the account, or preset it "
            "in gpg-agent (see pymail(1), UNATTENDED SIGNING)" % signer
        )
    raise PipemailError("gpg --detach-sign failed (exit %d): %s" % (got.rc, _last_line(got.stderr)))


def _gpg_failure(status):
    """The GPG error code (low 16 bits) of a ``FAILURE`` status line, else None."""
    for line in status:
        parts = line.split()
        if parts[:1] == ["FAILURE"] and len(parts) >= 3 and parts[2].isdigit():
            return int(parts[2]) & 0xFFFF
    return None


_INV_RECP = {
    "1": "no public key",
    "4": "the key is revoked",
    "5": "the key has expired",
    "10": "the key is not certified: there is no assurance it belongs to that address (certify it: gpg --lsign-key)",
}


def _encrypt(entity, s, keys):
    from pipemail import headers, spool

    out = spool.spool_file(s.env, prefix="pymail-crypt-")
    try:
        if s.kind == crypto.SMIME:
            argv = ["openssl", "cms", "-encrypt", "-stream", "-binary", "-aes256", "-outform", "DER"] + list(keys)
            got = crypto.run_tool(argv, to_crlf(entity.segments()), out=out, env=s.env)
            if got.rc != 0:
                raise PipemailError("openssl cms -encrypt failed (exit %d): %s" % (got.rc, _last_line(got.stderr)))
        else:
            argv = _gpg_base(s) + _NO_NETWORK + ["--armor", "--encrypt"]
            for key in keys:
                argv += ["--recipient", key]
            got = crypto.run_tool(argv, to_crlf(entity.segments()), out=out, status=True, env=s.env)
            if got.rc != 0:
                _gpg_refusal(got)
        out.flush()
    except OSError as exc:  # a full $TMPDIR
        out.close()
        from pipemail.errors import IOFailure, describe_oserror

        raise IOFailure("cannot spool the encrypted message: %s" % describe_oserror(exc)) from None
    except BaseException:
        out.close()
        raise
    data = message.FileData(out, "the encrypted message")
    if s.kind == crypto.SMIME:
        name = crypto.SMIME_ENC_NAME
        params = [("smime-type", "enveloped-data"), ("name", name)]
        fields = [
            ("Content-Type", headers.mime("Content-Type", crypto.SMIME_MIME_TYPES[0], params)),
            ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", headers.mime("Content-Disposition", "attachment", [("filename", name)])),
            ("Content-Description", "S/MIME encrypted message"),
        ]
        return message.Message(fields, raw_body=message.Base64(data))
    b = message.new_boundary()
    params = [("protocol", crypto.PGP_ENCRYPTED_TYPE), ("boundary", b)]
    fields = [("Content-Type", headers.mime("Content-Type", "multipart/encrypted", params))]
    bb = b.encode()
    version = [
        ("Content-Type", crypto.PGP_ENCRYPTED_TYPE),
        ("Content-Description", "PGP/MIME version identification"),
    ]
    name = crypto.PGP_ENC_NAME
    payload = [
        ("Content-Type", headers.mime("Content-Type", "application/octet-stream", [("name", name)])),
        ("Content-Description", "OpenPGP encrypted message"),
        ("Content-Disposition", headers.mime("Content-Disposition", "inline", [("filename", name)])),
    ]
    body = message.Joined(
        [
            b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156).\n--" + bb + b"\n",
            message.field_block(version) + b"\nVersion: 1\n",
            b"\n--" + bb + b"\n" + message.field_block(payload) + b"\n",
            message.Raw(data),
            b"\n--" + bb + b"--\n",
        ]
    )
    return message.Message(fields, raw_body=body)
