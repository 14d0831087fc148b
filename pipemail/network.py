"""What SMTP and POP3 share below their protocols: connecting, TLS, the plaintext policy, the words for network errors.

The protocol modules (pipemail.transport's SMTP client, pipemail.pop3) speak
their protocol; how a connection is made (timeout, TCP_NODELAY), how a socket
is wrapped in TLS and its certificate verified, when a server that offers no
STARTTLS/STLS may be spoken to in clear, how a peer's certificate is named in a
transcript, and how a failed or timed-out wait is worded live here, once.
"""

import os
import socket

from pipemail.errors import ConfigError, TempFailError, UnavailableError, describe_oserror

#: A connection that could not be made: ``CANNOT_CONNECT % (host, port, why)``.
CANNOT_CONNECT = "cannot connect to %s port %d: %s"
#: A TLS handshake that failed for another reason than the certificate: ``TLS_FAILED % (host, error)``.
TLS_FAILED = "TLS with %s failed: %s"

#: A certificate that did not verify: ``UNTRUSTED % (host, why)``.
UNTRUSTED = "the certificate of %s is not trusted: %s (a private CA goes in --tls-trust-file)"
#: A wait that ran out: ``TIMED_OUT % (host, seconds, step)``.
TIMED_OUT = "%s timed out after %g s during %s"


def tls_context(trust_file=None):
    """A verifying client context; with ``trust_file``, its CA certificates are trusted (ConfigError if unusable)."""
    import ssl

    try:
        return ssl.create_default_context(cafile=os.path.expanduser(trust_file) if trust_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("cannot use TLS trust file %s: %s" % (trust_file, exc)) from None


def cert_subject(sock):
    """The subject of the peer's certificate, ``CN=...``, for a transcript; ``?`` when there is none."""
    try:
        cert = sock.getpeercert()
    except (AttributeError, ValueError):
        return "?"
    parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ", ".join(parts) or "?"


def why(exc):
    """A network error in words: ``timed out``, or the strerror without Python's decoration."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return describe_oserror(exc) if isinstance(exc, OSError) else str(exc)


def is_loopback(host):
    """Whether ``host`` names this machine: localhost, 127.0.0.0/8 or ::1
    (brackets, a trailing dot, an IPv6 zone and IPv4-mapped addresses allowed).
    Other names are not resolved: a name in DNS can point anywhere."""
    if not host:
        return False
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.rstrip(".").lower() == "localhost":
        return True
    import ipaddress

    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def connect(host, port, timeout, proxy=None):
    """A TCP socket to ``host``:``port`` with ``timeout`` on every wait and TCP_NODELAY set
    (commands go out at once); TempFailError ``cannot connect to HOST port N: why`` if it cannot be made.
    ``proxy``: a proxy URL to go through (socks5://, socks5h://, http:// for CONNECT)."""
    if proxy:
        raise NotImplementedError("proxies: issue 12, being written")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TempFailError(CANNOT_CONNECT % (host, port, why(exc))) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP after all (a test's socketpair): nothing to tune
        pass
    return sock


def untrusted(where, exc):
    """The UnavailableError for ``exc``, an ``ssl.SSLCertVerificationError`` from ``where``."""
    return UnavailableError(UNTRUSTED % (where, exc.verify_message))


def wrap_tls(sock, context, host, where=None):
    """``sock`` in TLS by ``context``, the certificate verified against ``host``.

    A certificate that does not verify is UnavailableError (UNTRUSTED: trying
    again will not help); any other failed handshake is TempFailError (TLS_FAILED).
    The socket is closed either way.
    """
    import ssl

    where = where or host
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise untrusted(where, exc) from None
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise TempFailError(TLS_FAILED % (where, exc)) from None


class Cleartext:
    """How a protocol words the plaintext policy: its STARTTLS command, its implicit-TLS
    scheme, what goes on in clear (said in the warning), and what is refused."""

    def __init__(self, command, scheme, going_on, refused):
        self.command = command
        self.scheme = scheme
        self.going_on = going_on
        self.refused = refused


SMTP_CLEARTEXT = Cleartext("STARTTLS", "smtps", "sending in clear", "sending")
POP3_CLEARTEXT = Cleartext("STLS", "pop3s", "logging in without TLS", "logging in")


def allow_cleartext(words, host, tls, where=None, warn=None):
    """The server at ``host`` does not offer ``words.command``: go on in clear, or refuse.

    ``tls="auto"`` (the default) allows it only on a loopback host; ``tls="none"``
    allows it anywhere, with a warning (``warn``) off loopback.  A refusal is
    UnavailableError (the server will not change its mind by itself).
    """
    where = where or host
    local = is_loopback(host)
    if tls == "none":
        if warn and not local:
            warn("%s does not offer %s: %s (--tls none)" % (where, words.command, words.going_on))
    elif not local:
        raise UnavailableError(
            "%s does not offer %s; not %s in clear (use %s://, or --tls none to allow it)"
            % (where, words.command, words.refused, words.scheme)
        )
