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

    ``proxy``: a proxy URL (socks5://, socks5h://, http:// for CONNECT) to go through
    (see :func:`through_proxy`)."""
    if proxy:
        sock = through_proxy(host, port, timeout, proxy)
    else:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TempFailError(CANNOT_CONNECT % (host, port, why(exc))) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP after all (a test's socketpair): nothing to tune
        pass
    return sock


#: A connection the proxy did not make: ``CANNOT_CONNECT_THROUGH % (host, port, shown proxy URL, why)``.
CANNOT_CONNECT_THROUGH = "cannot connect to %s port %d through proxy %s: %s"

#: RFC 1928's names of a SOCKS5 server's refusals (the REP field).
SOCKS_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


def proxy_words(proxy):
    """`` through proxy URL`` (its password redacted) for a transcript; empty without a proxy."""
    if not proxy:
        return ""
    from pipemail.config import redact_url

    return " through proxy %s" % redact_url(proxy)


def through_proxy(host, port, timeout, proxy):
    """A socket to ``host``:``port`` through ``proxy`` (a proxy URL, parsed by
    :func:`pipemail.config.split_proxy`), its handshake made by python-socks with
    ``timeout`` on every wait.  socks5:// resolves ``host`` here, socks5h:// and
    http:// (CONNECT) let the proxy resolve it.  What TLS comes on top is the
    caller's, verified for ``host`` as without a proxy.

    A proxy that cannot be reached, does not answer, or refuses the destination is
    a TempFailError ``cannot connect to HOST port N through proxy URL: why`` (the
    URL with its password redacted); a proxy that refuses its user name and
    password is a NoPermError with the same words.
    """
    import errno

    from pipemail import config
    from pipemail.errors import NoPermError

    p = config.split_proxy(proxy)

    def failure(reason, cls=TempFailError):
        return cls(CANNOT_CONNECT_THROUGH % (host, port, p.shown, reason))

    try:
        sock = socket.create_connection((p.host, p.port), timeout=timeout)
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            raise failure("connection refused by the proxy") from None
        if isinstance(exc, socket.timeout | TimeoutError):
            raise failure("the proxy did not answer within %g s" % timeout) from None
        raise failure("cannot reach the proxy: %s" % why(exc)) from None

    from python_socks import ProxyError, ProxyTimeoutError, ProxyType
    from python_socks.sync import Proxy

    kind = ProxyType.HTTP if p.scheme == "http" else ProxyType.SOCKS5
    handshake = _Handshake(sock, http=kind is ProxyType.HTTP)
    client = Proxy(kind, p.host, p.port, username=p.user, password=p.password, rdns=p.rdns, forward=handshake)
    try:
        client.connect(host, port, timeout=timeout)
    except ProxyTimeoutError:
        raise failure("the proxy did not answer within %g s" % timeout) from None
    except ProxyError as exc:
        if handshake.hung_up:
            raise failure("the proxy closed the connection") from None
        raise _refusal(exc, failure, NoPermError, socks=kind is ProxyType.SOCKS5, login=p.user is not None) from None
    except (OSError, ValueError) as exc:  # a name socks5:// cannot resolve here, a reset, a bad user name
        sock.close()
        if isinstance(exc, socket.timeout | TimeoutError):
            raise failure("the proxy did not answer within %g s" % timeout) from None
        raise failure(why(exc) if isinstance(exc, OSError) else str(exc)) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _refusal(exc, failure, auth_error, socks, login):
    """The PipemailError for python-socks's ProxyError ``exc`` (the socket is closed already)."""
    code = exc.error_code
    text = "".join(c if c.isprintable() else "?" for c in str(exc))[:200]  # the proxy's words, tamed
    if code is None:
        if "authentication" in text.lower():  # a SOCKS5 login refused, or none offered that the proxy takes
            if not login:
                return failure("the proxy wants a user name and password (give them in the proxy URL)", auth_error)
            return failure("the proxy refused the login: %s" % text, auth_error)
        return failure("the proxy's answer makes no sense: %s" % text)
    if code in (401, 407):  # 407 Proxy Authentication Required; tinyproxy says 401 to a wrong password
        if not login:
            return failure("the proxy wants a user name and password (give them in the proxy URL)", auth_error)
        return failure("the proxy refused the login: %s" % text, auth_error)
    if socks:
        return failure("the proxy answered: %s (SOCKS reply %d)" % (SOCKS_REPLIES.get(code, "unknown error"), code))
    return failure("the proxy answered: %s" % text)


class _Handshake:
    """The connection to the proxy, handed to python-socks (its ``forward``) for the handshake.

    python-socks reads an HTTP proxy's answer with one ``recv()`` and drops what else
    it got; the mail server speaks first, so its greeting may follow the proxy's
    answer in the same segment.  ``recv()`` here gives an HTTP answer up to its blank
    line and not a byte more (the rest stays in the socket for SMTP or POP3), and a
    SOCKS answer as python-socks asks for it (exact lengths).
    """

    LIMIT = 1 << 16  # an answer's head longer than this is no proxy's

    def __init__(self, sock, http):
        self.sock = sock
        self.http = http
        self.hung_up = False  # the proxy closed the connection before its answer was whole

    def connect(self, dest_host, dest_port, timeout=None):  # python-socks's forward: the connection is made
        return self

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def recv(self, size):
        if not self.http:
            data = self.sock.recv(size)
            self.hung_up = not data
            return data
        head = bytearray()
        while len(head) < self.LIMIT:
            ahead = self.sock.recv(self.LIMIT - len(head), socket.MSG_PEEK)
            if not ahead:
                self.hung_up = True
                break
            end = (head[-3:] + ahead).find(b"\r\n\r\n")
            take = len(ahead) if end < 0 else end + 4 - len(head[-3:])
            while take > 0:  # what was peeked is there: recv gives it
                got = self.sock.recv(take)
                if not got:
                    break
                head += got
                take -= len(got)
            if end >= 0:
                break
        return bytes(head)


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
IMAP_CLEARTEXT = Cleartext("STARTTLS", "imaps", "logging in without TLS", "logging in")


def allow_cleartext(words, host, tls, where=None, warn=None, proxy=None):
    """The server at ``host`` does not offer ``words.command``: go on in clear, or refuse.

    ``tls="auto"`` (the default) allows it only on a loopback host; ``tls="none"``
    allows it anywhere, with a warning (``warn``) off loopback.  A refusal is
    UnavailableError (the server will not change its mind by itself).  Through
    ``proxy`` (a proxy URL) the host counts as loopback only when the proxy is on
    loopback too: else what goes in clear crosses the network to the proxy.
    """
    where = where or host
    local = is_loopback(host)
    if local and proxy:
        from pipemail.config import split_proxy

        local = is_loopback(split_proxy(proxy).host)
    if tls == "none":
        if warn and not local:
            warn("%s does not offer %s: %s (--tls none)" % (where, words.command, words.going_on))
    elif not local:
        raise UnavailableError(
            "%s does not offer %s; not %s in clear (use %s://, or --tls none to allow it)"
            % (where, words.command, words.refused, words.scheme)
        )
