"""What signing, encrypting, verifying and decrypting share: the formats, and running the tools.

The formats of signed and encrypted mail (RFC 8551 S/MIME, RFC 3156 OpenPGP) are
written by :mod:`pipemail.secure` (pymail) and read by :mod:`pipemail.unwrap`
(pymime): their names are defined here, once.  The work is done by the user's
tools (``openssl cms``, ``gpg``, ``gpgsm``), run by :func:`run_tool` with the data
streamed through them, so that memory stays bounded at any size; a passphrase
goes to them through a pipe of its own, never on a command line.
"""

import os
import shutil
import subprocess
import threading

from pipemail.config import CRYPTO_KINDS
from pipemail.errors import DataError, IOFailure, UnavailableError, describe_oserror

KINDS = CRYPTO_KINDS  # an account's ``crypto``, --smime and --openpgp
SMIME, OPENPGP = KINDS

# S/MIME (RFC 8551); the x- names are the legacy ones a reader still meets
SMIME_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
SMIME_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
SMIME_PROTOCOL = "application/pkcs7-signature"
SMIME_MICALG = "sha-256"
SMIME_SIG_NAME = "smime.p7s"
SMIME_ENC_NAME = "smime.p7m"

# OpenPGP (RFC 3156)
PGP_SIGNATURE_TYPE = "application/pgp-signature"
PGP_ENCRYPTED_TYPE = "application/pgp-encrypted"
PGP_SIG_NAME = "signature.asc"
PGP_ENC_NAME = "encrypted.asc"
# gpg's hash algorithm numbers (SIG_CREATED, VALIDSIG) -> the micalg of multipart/signed
PGP_MICALG = {1: "pgp-md5", 2: "pgp-sha1", 8: "pgp-sha256", 9: "pgp-sha384", 10: "pgp-sha512", 11: "pgp-sha224"}

# What a tool writes on stdout when no file takes it (signatures, listings): a bound, not a buffer for data.
CAPTURE_MAX = 16 * 1024 * 1024
STDERR_KEPT = 64 * 1024
_BLOCK = 64 * 1024

_PACKAGES = {"openssl": "openssl", "gpg": "gnupg", "gpgsm": "gpgsm", "gpg-connect-agent": "gnupg"}


class ToolResult:
    """What a tool run left: its exit status, its stdout (when captured), the tail of its stderr,
    and the lines of its status fd (gpg's ``--status-fd``), the ``[GNUPG:] `` prefix removed."""

    def __init__(self, rc, stdout, stderr, status):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.status = status

    def __repr__(self):
        return "ToolResult(rc=%r, stderr=%r, status=%r)" % (self.rc, self.stderr[-200:], self.status)


def tool_path(name, env=None):
    """The path of the tool ``name`` on $PATH; UnavailableError (69) saying what to install when there is none."""
    path = shutil.which(name, path=(env or os.environ).get("PATH"))
    if path is None:
        package = _PACKAGES.get(name, name)
        raise UnavailableError("%s is not installed (Debian: apt install %s)" % (name, package))
    return path


def run_tool(argv, chunks=None, *, out=None, passphrase=None, status=False, env=None, timeout=None):
    """Run ``argv`` as :func:`_run_tool` says, SIGPIPE ignored meanwhile: a tool that exits before it
    has read all its input (a wrong passphrase) must not kill the command that feeds it, whose CLI
    may have restored SIGPIPE's default (``... | head``); the write then fails, and rc tells why."""
    import signal

    try:
        old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except ValueError:  # not the main thread: SIGPIPE is Python's default there (ignored) anyway
        old = None
    try:
        return _run_tool(argv, chunks, out=out, passphrase=passphrase, status=status, env=env, timeout=timeout)
    finally:
        if old is not None:
            signal.signal(signal.SIGPIPE, old)


def _run_tool(argv, chunks=None, *, out=None, passphrase=None, status=False, env=None, timeout=None):
    """Run ``argv`` with ``chunks`` streamed to its stdin; a :class:`ToolResult`.

    ``out``: a binary file that stdout is copied to (None: stdout is captured, at most
    CAPTURE_MAX bytes, else DataError).  ``passphrase`` (bytes): written to a pipe whose
    read end the tool gets; ``{pass_fd}`` in argv names it.  ``status``: a pipe for
    ``{status_fd}`` in argv (gpg's --status-fd), its lines returned.  A non-zero exit is
    not an error here: the caller reads rc, stderr and status and says what they mean.
    ``timeout``: seconds after which the tool is killed (None: no limit).
    """
    argv = [tool_path(argv[0], env)] + list(argv[1:])
    fds = {}  # name -> (read end, write end)
    keep = []  # the child's ends
    try:
        if passphrase is not None:
            fds["pass"] = os.pipe()
            keep.append(fds["pass"][0])
        if status:
            fds["status"] = os.pipe()
            keep.append(fds["status"][1])
        names = {"pass_fd": str(fds["pass"][0]) if "pass" in fds else "", "status_fd": ""}
        if "status" in fds:
            names["status_fd"] = str(fds["status"][1])
        argv = [a.replace("{pass_fd}", names["pass_fd"]).replace("{status_fd}", names["status_fd"]) for a in argv]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if chunks is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=keep,
                env=env,
            )
        except OSError as exc:
            raise UnavailableError("cannot run %s: %s" % (argv[0], describe_oserror(exc))) from None
    finally:
        for fd in keep:
            os.close(fd)
    threads = []
    errors = []
    err_tail = bytearray()
    status_data = bytearray()

    def feed():
        try:
            for chunk in chunks:
                if chunk:
                    proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the tool stopped reading (it failed): its status says why
        except OSError as exc:
            errors.append(exc)
        except BaseException as exc:  # an attachment that changed, a read error: raised in the caller
            errors.append(exc)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def drain_err():
        for data in iter(lambda: proc.stderr.read1(_BLOCK), b""):
            err_tail.extend(data)
            del err_tail[:-STDERR_KEPT]

    def drain_status(fd):
        with os.fdopen(fd, "rb") as f:
            for data in iter(lambda: f.read1(_BLOCK), b""):
                status_data.extend(data)
                if len(status_data) > CAPTURE_MAX:
                    del status_data[: len(status_data) - CAPTURE_MAX]

    if passphrase is not None:
        wfd = fds["pass"][1]

        def give():
            try:
                os.write(wfd, passphrase if passphrase.endswith(b"\n") else passphrase + b"\n")
            except OSError:
                pass
            finally:
                os.close(wfd)

        threads.append(threading.Thread(target=give, daemon=True))
    if chunks is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    threads.append(threading.Thread(target=drain_err, daemon=True))
    if status:
        threads.append(threading.Thread(target=drain_status, args=(fds["status"][0],), daemon=True))
    for t in threads:
        t.start()
    captured = bytearray()
    killer = None
    if timeout is not None:
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
    try:
        for data in iter(lambda: proc.stdout.read1(_BLOCK), b""):
            if out is not None:
                out.write(data)
            else:
                captured.extend(data)
                if len(captured) > CAPTURE_MAX:
                    proc.kill()
                    raise DataError("%s wrote more than %d bytes" % (os.path.basename(argv[0]), CAPTURE_MAX))
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if killer is not None:
            killer.cancel()
        for t in threads:
            t.join()
        proc.stdout.close()
        proc.stderr.close()
    for exc in errors:
        if isinstance(exc, OSError):
            raise IOFailure("cannot write to %s: %s" % (os.path.basename(argv[0]), describe_oserror(exc)))
        raise exc
    lines = []
    for line in bytes(status_data).decode("utf-8", "replace").splitlines():
        lines.append(line[len("[GNUPG:] ") :] if line.startswith("[GNUPG:] ") else line)
    stderr = bytes(err_tail).decode("utf-8", "replace")
    return ToolResult(rc, bytes(captured), stderr, lines)


def load_cert(path):
    """The first certificate of the PEM file ``path`` (a ``cryptography`` x509 object);
    OSError when it cannot be read, ValueError when it holds no PEM certificate."""
    from cryptography import x509

    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def cert_emails(cert):
    """The addresses a certificate is for, lower-cased, as RFC 8550 (3) says: its subjectAltName
    rfc822Names; the subject's emailAddress only when it has no SAN address.  The sender picks a
    recipient's certificate and the reader checks a signer's From address by this one rule."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    if not emails:
        emails = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    return [str(e).lower() for e in emails]


def cert_expired(cert):
    """Whether ``cert``'s validity has ended (notAfter in the past)."""
    import datetime

    return cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC)


# the validity letters (field 2 of --with-colons) of a key or user id that is not to be used:
# expired, revoked, invalid, disabled
PGP_UNUSABLE = ("e", "r", "i", "d")


#: the validity letters of a user id that the keyring holds as its key owner's (full, ultimate:
#: the level a key must reach); "-", "q", "n" (a user id nobody trusted certified) are not
PGP_CERTIFIED = ("f", "u")


class PgpKey:
    """A key of ``gpg --with-colons --list-keys``: ``fpr`` (its primary key's fingerprint),
    ``validity`` (field 2), ``capabilities`` (field 12: a capital letter for the key as a whole,
    E to encrypt, S to sign), ``uids`` (``(validity, address)`` of its user ids, lower-cased),
    ``names`` (the whole user ids, in the order of ``uids``)."""

    def __init__(self, validity, capabilities):
        self.fpr = None
        self.validity = validity
        self.capabilities = capabilities
        self.uids = []
        self.names = []

    def usable(self, capability):
        """Whether the key is valid and can ``capability`` ("E", "S") as a whole."""
        return self.validity not in PGP_UNUSABLE and capability in self.capabilities

    def emails(self):
        """The addresses of its valid user ids."""
        return [addr for validity, addr in self.uids if validity not in PGP_UNUSABLE]

    def certified(self):
        """``(address, user id)`` of the user ids the keyring holds certified (:data:`PGP_CERTIFIED`):
        the only ones that say whose the key is (a signer's address is one of these)."""
        return [
            (addr, name)
            for (validity, addr), name in zip(self.uids, self.names, strict=True)
            if validity in PGP_CERTIFIED
        ]


def pgp_keys(pattern, env=None):
    """The keys of the GnuPG keyring (``$GNUPGHOME`` of ``env``) that ``pattern`` names, as
    ``gpg --with-colons --list-keys`` gives them: a list of :class:`PgpKey` (empty: none)."""
    from email.utils import parseaddr

    got = run_tool(["gpg", "--batch", "--no-tty", "--with-colons", "--list-keys", pattern], env=env)
    keys = []
    for line in got.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] == "pub" and len(fields) > 11:
            keys.append(PgpKey(fields[1], fields[11]))
        elif not keys:
            continue
        elif fields[0] == "fpr" and keys[-1].fpr is None and len(fields) > 9:
            keys[-1].fpr = fields[9]
        elif fields[0] == "uid" and len(fields) > 9:
            name = _colon_unescaped(fields[9])
            addr = parseaddr(name)[1]
            if addr:
                keys[-1].uids.append((fields[1], addr.lower()))
                keys[-1].names.append(name)
    return keys


def _colon_unescaped(text):
    """A ``--with-colons`` field with gpg's ``\\xNN`` escapes undone (a colon is ``\\x3a``)."""
    import re

    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


class Once:
    """``ask()`` called the first time this is called, its value kept (a passphrase asked once)."""

    def __init__(self, ask):
        self._ask = ask
        self._asked = False
        self._value = None

    def __call__(self):
        if not self._asked:
            self._value = self._ask()
            self._asked = True
        return self._value


def key_passphrase(account, env=None):
    """The passphrase of the account's signing/decryption key: the first line that its
    ``key_password_command`` prints, or None when it has none (a key without one, or an agent)."""
    if account is None or account.key_password_command is None:
        return None
    from pipemail import config

    text = config.run_password_command(
        account.key_password_command, env=env, account=account.name, key="key_password_command"
    )
    return text.encode("utf-8")
