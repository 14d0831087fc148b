"""pipemail.network: connecting, TLS, the plaintext policy and their words, once for SMTP and POP3.

Real sockets on 127.0.0.1 (a TLS server from trustme's CA in a thread); the
policy of a remote host is checked by name (loopback addresses only in tests).
"""

import socket
import ssl
import threading

import pytest

from pipemail.errors import TempFailError, UnavailableError
from pipemail.network import (
    POP3_CLEARTEXT,
    SMTP_CLEARTEXT,
    allow_cleartext,
    connect,
    is_loopback,
    tls_context,
    wrap_tls,
)


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def ca():
    import trustme

    return trustme.CA(organization_name="pipemail network tests")


def serve_once(listener, job):
    """Accept one connection in a thread and run ``job(conn)`` on it; the thread is returned."""

    def run():
        try:
            conn, _ = listener.accept()
        except OSError:  # the test is over: the listener is closed
            return
        with conn:
            try:
                job(conn)
            except (OSError, ssl.SSLError):
                pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# -- loopback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "[::1]",
     "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"],
)  # fmt: skip
def test_loopback(host):
    assert is_loopback(host) is True


@pytest.mark.parametrize(
    "host",
    ["", None, "mail.example.com", "localhost.example.com", "128.0.0.1", "10.0.0.1", "::", "::2", "0.0.0.0",
     "::ffff:10.0.0.1", "2001:db8::1", "127.0.0.1.example.com"],
)  # fmt: skip
def test_not_loopback(host):
    assert is_loopback(host) is False


# -- connect -----------------------------------------------------------------------


def test_connect_sets_the_timeout_and_tcp_nodelay(listener):
    serve_once(listener, lambda conn: conn.recv(1))
    with connect("127.0.0.1", listener.getsockname()[1], 7.5) as sock:
        assert sock.gettimeout() == 7.5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_connect_refused_is_a_temporary_failure_in_the_shared_words():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(TempFailError) as info:
            connect("127.0.0.1", port, 5)
    assert str(info.value) == "cannot connect to 127.0.0.1 port %d: Connection refused" % port
    assert info.value.exit_code == 75


# -- TLS ---------------------------------------------------------------------------


def tls_server(listener, ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def job(conn):
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello\r\n")
            tls.recv(10)

    return serve_once(listener, job)


def test_wrap_tls_verifies_with_a_trust_file(listener, ca, tmp_path):
    tls_server(listener, ca)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    sock = connect("127.0.0.1", listener.getsockname()[1], 5)
    with wrap_tls(sock, tls_context(str(tmp_path / "ca.pem")), "127.0.0.1") as tls:
        assert tls.recv(7) == b"hello\r\n"
        assert tls.version().startswith("TLS")


def test_an_untrusted_certificate_is_permanent_and_closes_the_socket(listener, ca):
    tls_server(listener, ca)
    sock = connect("127.0.0.1", listener.getsockname()[1], 5)
    with pytest.raises(UnavailableError) as info:
        wrap_tls(sock, tls_context(), "127.0.0.1", "mail.test")
    assert str(info.value) == (
        "the certificate of mail.test is not trusted: unable to get local issuer certificate"
        " (a private CA goes in --tls-trust-file)"
    )
    assert sock.fileno() == -1


def test_a_peer_that_does_not_speak_tls_is_a_temporary_failure(listener):
    serve_once(listener, lambda conn: (conn.sendall(b"220 not TLS at all\r\n" * 20), conn.recv(1)))
    sock = connect("127.0.0.1", listener.getsockname()[1], 5)
    with pytest.raises(TempFailError) as info:
        wrap_tls(sock, tls_context(), "127.0.0.1")
    assert str(info.value).startswith("TLS with 127.0.0.1 failed: ")
    assert sock.fileno() == -1


# -- the plaintext policy ----------------------------------------------------------


@pytest.mark.parametrize(
    "words, said",
    [
        (SMTP_CLEARTEXT, "mail.example.com does not offer STARTTLS; not sending in clear"
                         " (use smtps://, or --tls none to allow it)"),
        (POP3_CLEARTEXT, "mail.example.com does not offer STLS; not logging in in clear"
                         " (use pop3s://, or --tls none to allow it)"),
    ],
)  # fmt: skip
def test_plaintext_off_loopback_is_refused_by_default(words, said):
    warned = []
    with pytest.raises(UnavailableError) as info:
        allow_cleartext(words, "mail.example.com", "auto", warn=warned.append)
    assert (str(info.value), info.value.exit_code, warned) == (said, 69, [])


@pytest.mark.parametrize(
    "words, said",
    [
        (SMTP_CLEARTEXT, "mx does not offer STARTTLS: sending in clear (--tls none)"),
        (POP3_CLEARTEXT, "mx does not offer STLS: logging in without TLS (--tls none)"),
    ],
)
def test_plaintext_with_tls_none_off_loopback_is_allowed_with_a_warning(words, said):
    warned = []
    assert allow_cleartext(words, "mail.example.com", "none", "mx", warned.append) is None
    assert warned == [said]


@pytest.mark.parametrize("tls", ["auto", "none"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_plaintext_on_loopback_is_allowed_silently(tls, host):
    warned = []
    for words in (SMTP_CLEARTEXT, POP3_CLEARTEXT):
        assert allow_cleartext(words, host, tls, warn=warned.append) is None
    assert warned == []


# -- POP3 uses it: a failed greeting does not leak the socket -------------------------


def test_pop3_client_closes_its_socket_when_the_greeting_fails(listener):
    from pipemail.config import split_url
    from pipemail.pop3 import Client

    closed = threading.Event()

    def job(conn):
        conn.sendall(b"-ERR go away\r\n")
        conn.settimeout(5)
        if conn.recv(100) == b"":
            closed.set()

    t = serve_once(listener, job)
    url = split_url("pop3://127.0.0.1:%d" % listener.getsockname()[1], kind="pop")
    with pytest.raises(UnavailableError) as info:
        Client(url, timeout=5)
    t.join(10)
    assert closed.is_set(), "the client kept the connection open after a failed greeting"
    assert "127.0.0.1" in str(info.value)


# -- SMTP uses it: SMTPS and POP3S word a failed handshake alike ----------------------


def test_smtps_handshake_failure_is_worded_as_for_pop3s(listener):
    from pipemail.config import split_url
    from pipemail.transport import smtp_deliveries

    serve_once(listener, lambda conn: (conn.sendall(b"220 no TLS here\r\n" * 20), conn.recv(1)))
    url = split_url("smtps://127.0.0.1:%d" % listener.getsockname()[1])
    [(report, exc)] = smtp_deliveries(url, [([b"Subject: x\n\nhi\n"], 15)], "me@example.org", ["you@example.org"])
    assert report is None and str(exc).startswith("TLS with 127.0.0.1 failed: ")
    assert (exc.exit_code, exc.undelivered) == (75, ["you@example.org"])
