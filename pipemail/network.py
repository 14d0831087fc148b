"""What SMTP and POP3 share below their protocols: TLS contexts, certificates, the words for network errors.

The protocol modules (pipemail.transport's SMTP client, pipemail.pop3) speak
their protocol; how a TLS context is made, how a peer's certificate is named in
a transcript, and how a failed or timed-out wait is worded live here, once.
"""

import os
import socket

from pipemail.errors import ConfigError, describe_oserror

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
