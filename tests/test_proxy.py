"""pymail and pypop through real proxies from Debian on loopback: microsocks and dante
(SOCKS5), tinyproxy (HTTP CONNECT), to aiosmtpd and Dovecot.

Each proxy binds its outgoing connections to an address of its own (microsocks
127.0.0.3, danted 127.0.0.4, tinyproxy 127.0.0.5), so the mail server's peer
address shows that a connection went through it (a direct one comes from
127.0.0.1).  microsocks and tinyproxy run in a mount namespace of their own whose
/etc/hosts also names mail.example.test: a name only the proxy can resolve, which
tells socks5h:// (the proxy resolves) from socks5:// (pymail resolves).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pop3server
import pytest
from smtp_server import free_port

from conftest import tool

dovecot = pop3server.dovecot

PROXY_ONLY_NAME = "mail.example.test"  # in the proxies' /etc/hosts only
MICROSOCKS_OUT = "127.0.0.3"
DANTED_OUT = "127.0.0.4"
TINYPROXY_OUT = "127.0.0.5"
SECRET = "pr0xy-s3cret"  # microsocks_auth's password: never in a message or a transcript
BODY = b"through the proxy\n"


class Daemon:
    """A proxy started by a test module, on 127.0.0.1:``port``; ``log`` its log file."""

    def __init__(self, argv, port, log, tmp, hosts=False):
        self.port = port
        self.log = log
        if hosts:  # a private /etc/hosts that also names PROXY_ONLY_NAME, in a mount namespace of its own
            hosts_file = tmp / "hosts"
            with open("/etc/hosts") as f:
                hosts_file.write_text(f.read() + "\n127.0.0.1 %s\n" % PROXY_ONLY_NAME)
            script = 'mount --bind "$0" /etc/hosts && exec "$@"'
            argv = [tool("unshare"), "-m", "sh", "-c", script, str(hosts_file), *argv]
        self.out = open(tmp / "daemon.out", "wb")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail("%s did not start: %s" % (argv[0], (tmp / "daemon.out").read_text(errors="replace")))
                time.sleep(0.02)

    def url(self, scheme="socks5", userinfo=""):
        return "%s://%s127.0.0.1:%d" % (scheme, userinfo, self.port)

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # danted's children too: the group is its own
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()


def _microsocks(tmp, *extra):
    port = free_port()
    argv = [tool("microsocks"), "-i", "127.0.0.1", "-p", str(port), "-b", MICROSOCKS_OUT, *extra]
    return Daemon(argv, port, tmp / "daemon.out", tmp, hosts=True)


@pytest.fixture(scope="module")
def microsocks(tmp_path_factory):
    d = _microsocks(tmp_path_factory.mktemp("microsocks"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def microsocks_auth(tmp_path_factory):
    d = _microsocks(tmp_path_factory.mktemp("microsocks-auth"), "-u", "alice", "-P", SECRET)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def danted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("danted")
    port = free_port()
    conf = tmp / "danted.conf"
    conf.write_text(
        "logoutput: %s\n"
        "internal: 127.0.0.1 port = %d\n"
        "external: %s\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        "user.privileged: root\n"
        "user.unprivileged: nobody\n"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }\n"
        "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect error }\n" % (tmp / "danted.log", port, DANTED_OUT)
    )
    d = Daemon([tool("danted"), "-f", str(conf), "-N", "1"], port, tmp / "danted.log", tmp)
    yield d
    d.stop()


def _tinyproxy(tmp, connect_ports=()):
    port = free_port()
    conf = tmp / "tinyproxy.conf"
    conf.write_text(
        'Port %d\nListen 127.0.0.1\nBind %s\nAllow 127.0.0.1\nLogFile "%s"\nLogLevel Connect\nMaxClients 20\n%s'
        % (port, TINYPROXY_OUT, tmp / "tinyproxy.log", "".join("ConnectPort %d\n" % p for p in connect_ports))
    )
    return Daemon([tool("tinyproxy"), "-d", "-c", str(conf)], port, tmp / "tinyproxy.log", tmp, hosts=True)


@pytest.fixture(scope="module")
def tinyproxy(tmp_path_factory):
    d = _tinyproxy(tmp_path_factory.mktemp("tinyproxy"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def tinyproxy_port1(tmp_path_factory):
    """A tinyproxy that allows CONNECT to port 1 only."""
    d = _tinyproxy(tmp_path_factory.mktemp("tinyproxy-port1"), connect_ports=(1,))
    yield d
    d.stop()


def peers(srv):
    """The address each SMTP client of ``srv`` came from, as they come (recorded at EHLO)."""
    seen = []
    ehlo = srv.handle_EHLO

    async def handle_EHLO(server, session, envelope, hostname, responses):
        seen.append(session.peer[0])
        return await ehlo(server, session, envelope, hostname, responses)

    srv.handle_EHLO = handle_EHLO  # aiosmtpd looks its hooks up for each connection
    return seen


@pytest.fixture
def mail(run, tmp_path):
    """mail(server_url, *options, env=None) -> Result of ``pymail -s proxied OPTIONS... rcpt@example.org``."""

    def _mail(transport, *args, env=None, config=None, mode=0o600):
        e = {"HOME": str(tmp_path)}
        if config is not None:
            path = tmp_path / "config.toml"
            path.write_text(config)
            path.chmod(mode)
            e["PIPEMAIL_CONFIG"] = str(path)
        e.update(env or {})
        return run("pymail", "--transport", transport, *args, "-s", "proxied", "rcpt@example.org", input=BODY, env=e)

    return _mail


def dead_letter(tmp_path):
    path = tmp_path / "dead.letter"
    return path.read_bytes() if path.exists() else b""


def delivered(srv):
    assert len(srv.messages) == 1, srv.messages
    _sender, rcpts, data = srv.messages[0]
    assert rcpts == ["rcpt@example.org"]
    assert data.replace(b"\r\n", b"\n").endswith(b"\n\n" + BODY)
    return data


# -- SMTP through SOCKS5 (microsocks, dante) and HTTP CONNECT (tinyproxy) ---------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_starttls_through_microsocks(mail, smtp_server, microsocks, scheme):
    srv = smtp_server(tls=True)
    seen = peers(srv)
    r = mail(
        "smtp://localhost:%d" % srv.port,
        "--tls-trust-file",
        srv.ca_file,
        "--proxy",
        microsocks.url(scheme),
        "-v",
    )
    assert r.returncode == 0, r.stderr
    delivered(srv)
    assert seen == [MICROSOCKS_OUT, MICROSOCKS_OUT]  # EHLO, and EHLO again after STARTTLS
    assert "=== connecting to localhost port %d through proxy %s\n" % (srv.port, microsocks.url(scheme)) in r.stderr
    assert "C: STARTTLS" in r.stderr and "=== TLS started" in r.stderr  # the server's certificate, for localhost


@pytest.mark.parametrize("scheme", ["socks5h", "http"])
def test_the_proxy_resolves_the_name_with_socks5h_and_http(mail, smtp_server, microsocks, tinyproxy, scheme):
    srv = smtp_server()
    seen = peers(srv)
    proxy = microsocks if scheme == "socks5h" else tinyproxy
    r = mail("smtp://%s:%d" % (PROXY_ONLY_NAME, srv.port), "--tls", "none", "--proxy", proxy.url(scheme))
    assert r.returncode == 0, r.stderr
    delivered(srv)
    assert seen == [MICROSOCKS_OUT if scheme == "socks5h" else TINYPROXY_OUT]


def test_socks5_resolves_the_name_here(mail, smtp_server, microsocks, tmp_path):
    srv = smtp_server()
    r = mail("smtp://%s:%d" % (PROXY_ONLY_NAME, srv.port), "--tls", "none", "--proxy", microsocks.url("socks5"))
    assert r.returncode == 75
    first = r.stderr.splitlines()[0]
    prefix = "pymail: cannot connect to %s port %d through proxy %s: " % (PROXY_ONLY_NAME, srv.port, microsocks.url())
    assert first.startswith(prefix) and first[len(prefix) :] in (
        "Name or service not known",
        "Temporary failure in name resolution",
        "No address associated with hostname",
    ), first
    assert srv.messages == [] and BODY in dead_letter(tmp_path)


def test_starttls_through_danted(mail, smtp_server, danted):
    srv = smtp_server(tls=True)
    seen = peers(srv)
    r = mail("smtp://localhost:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", danted.url(), "-v")
    assert r.returncode == 0, r.stderr
    delivered(srv)
    assert seen == [DANTED_OUT, DANTED_OUT]
    assert "C: STARTTLS" in r.stderr
    assert "-> %s." % DANTED_OUT in danted.log_text()  # dante's own log of the connection it made


def test_starttls_through_tinyproxy(mail, smtp_server, tinyproxy):
    srv = smtp_server(tls=True)
    seen = peers(srv)
    r = mail("smtp://localhost:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", tinyproxy.url("http"), "-v")
    assert r.returncode == 0, r.stderr
    delivered(srv)
    assert seen == [TINYPROXY_OUT, TINYPROXY_OUT]
    assert "C: STARTTLS" in r.stderr
    assert "CONNECT localhost:%d HTTP/1.1" % srv.port in tinyproxy.log_text()


@pytest.mark.parametrize("which", ["microsocks", "danted", "tinyproxy"])
def test_smtps_through_a_proxy(mail, smtp_server, request, which):
    proxy = request.getfixturevalue(which)
    srv = smtp_server(implicit_tls=True)
    r = mail(
        "smtps://localhost:%d" % srv.port,
        "--tls-trust-file",
        srv.ca_file,
        "--proxy",
        proxy.url("http" if which == "tinyproxy" else "socks5h"),
        "-v",
    )
    assert r.returncode == 0, r.stderr
    delivered(srv)
    assert "=== connecting to localhost port %d (TLS) through proxy" % srv.port in r.stderr


def test_the_certificate_is_checked_for_the_mail_servers_name(mail, smtp_server, microsocks, tmp_path):
    """TLS through a proxy verifies the mail server's name, not the proxy's: 127.0.0.2 is not in the certificate."""
    srv = smtp_server(tls=True)
    r = mail("smtp://127.0.0.2:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", microsocks.url())
    assert r.returncode == 75  # aiosmtpd listens on 127.0.0.1 only
    srv2 = smtp_server(implicit_tls=True)
    r = mail(
        "smtps://%s:%d" % (PROXY_ONLY_NAME, srv2.port),
        "--tls-trust-file",
        srv2.ca_file,
        "--proxy",
        microsocks.url("socks5h"),
    )
    assert r.returncode == 69, r.stderr
    assert r.stderr.splitlines()[0].startswith("pymail: the certificate of %s is not trusted: " % PROXY_ONLY_NAME)
    assert srv2.messages == [] and dead_letter(tmp_path).count(BODY) == 2


# -- POP3 through SOCKS5 and HTTP CONNECT ------------------------------------------------------


@pytest.fixture
def pop(run, dovecot, tmp_path):
    dovecot.clear(dovecot.user)
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": dovecot.password,
    }

    def _pop(*args, server=None, config=None, mode=0o600):
        e = dict(env)
        if config is not None:
            (tmp_path / "config.toml").write_text(config)
            (tmp_path / "config.toml").chmod(mode)
            e["PIPEMAIL_CONFIG"] = str(tmp_path / "config.toml")
        srv = server or "pop3://localhost:%d" % dovecot.port
        return run("pypop", "--server", srv, "--user", dovecot.user, "--tls-trust-file", dovecot.ca_file, *args, env=e)

    return _pop


def logins_from(dovecot, address):
    return dovecot.log().count("rip=%s," % address)


@pytest.mark.parametrize("which", ["microsocks", "tinyproxy"])
def test_pop3_stls_through_a_proxy(pop, dovecot, request, tmp_path, which):
    proxy = request.getfixturevalue(which)
    out = {"microsocks": MICROSOCKS_OUT, "tinyproxy": TINYPROXY_OUT}[which]
    dovecot.put(dovecot.user, b"From: a@example.org\nSubject: popped\n\nover the proxy\n")
    before = logins_from(dovecot, out)
    r = pop(
        "--proxy",
        proxy.url("http" if which == "tinyproxy" else "socks5"),
        "-v",
        "fetch",
        "--mbox",
        str(tmp_path / "in"),
    )
    assert r.returncode == 0, r.stderr
    assert b"\nover the proxy\n" in (tmp_path / "in").read_bytes()
    assert "C: STLS" in r.stderr and "=== TLS started" in r.stderr and dovecot.password not in r.stderr
    assert (
        "=== connected to localhost port %d through proxy %s\n"
        % (dovecot.port, proxy.url("http" if which == "tinyproxy" else "socks5"))
        in r.stderr
    )
    deadline = time.monotonic() + 5  # Dovecot writes its log line as the login is done
    while logins_from(dovecot, out) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logins_from(dovecot, out) == before + 1


def test_pop3s_through_danted(pop, dovecot, danted):
    dovecot.put(dovecot.user, b"From: a@example.org\n\nx\n")
    r = pop("--proxy", danted.url(), "stat", server="pop3s://localhost:%d" % dovecot.ssl_port)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"1 messages, 26 bytes\n", "")


# -- a proxy that is down, refuses, or does not answer: one line, exit 75, the message kept ----


def test_a_proxy_that_is_down(mail, pop, smtp_server, tmp_path):
    srv = smtp_server(tls=True)
    down = "socks5://127.0.0.1:%d" % free_port()  # nothing listens there
    r = mail("smtp://localhost:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", down)
    assert r.returncode == 75
    assert r.stderr.splitlines() == [
        "pymail: cannot connect to localhost port %d through proxy %s: connection refused by the proxy"
        % (srv.port, down),
        "pymail: the message is kept in %s for rcpt@example.org (pymail --resend %s sends it again)"
        % (tmp_path / "dead.letter", tmp_path / "dead.letter"),
    ]
    assert srv.messages == [] and BODY in dead_letter(tmp_path)
    r = pop("--proxy", down.replace("socks5", "http"), "stat", server="pop3://localhost:110")
    assert (r.returncode, r.stdout) == (75, b"")
    assert (
        r.stderr
        == "pypop: cannot connect to localhost port 110 through proxy %s: connection refused by the proxy\n"
        % (down.replace("socks5", "http"))
    )


def test_tinyproxy_refusing_the_port(mail, pop, smtp_server, tinyproxy_port1, dovecot, tmp_path):
    srv = smtp_server(tls=True)
    r = mail("smtp://localhost:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", tinyproxy_port1.url("http"))
    assert r.returncode == 75
    assert r.stderr.splitlines()[0] == (
        "pymail: cannot connect to localhost port %d through proxy %s: the proxy answered: 403 Access violation"
        % (srv.port, tinyproxy_port1.url("http"))
    )
    assert srv.messages == [] and BODY in dead_letter(tmp_path)
    r = pop("--proxy", tinyproxy_port1.url("http"), "stat")
    assert (r.returncode, r.stderr) == (
        75,
        "pypop: cannot connect to localhost port %d through proxy %s: the proxy answered: 403 Access violation\n"
        % (dovecot.port, tinyproxy_port1.url("http")),
    )


def test_a_socks_proxy_that_cannot_reach_the_server(mail, microsocks, tmp_path):
    closed = free_port()
    r = mail("smtp://127.0.0.1:%d" % closed, "--proxy", microsocks.url())
    assert r.returncode == 75
    assert r.stderr.splitlines()[0] == (
        "pymail: cannot connect to 127.0.0.1 port %d through proxy %s: "
        "the proxy answered: connection refused (SOCKS reply 5)" % (closed, microsocks.url())
    )
    assert BODY in dead_letter(tmp_path)


def test_a_proxy_that_does_not_answer_times_out(mail, tmp_path):
    """The timeout holds for the proxy's handshake too: a listener that never speaks."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        url = "socks5://127.0.0.1:%d" % mute.getsockname()[1]
        start = time.monotonic()
        r = mail("smtp://localhost:25", "--proxy", url, "--timeout", "0.5")
        assert time.monotonic() - start < 10
    assert r.returncode == 75
    assert r.stderr.splitlines()[0] == (
        "pymail: cannot connect to localhost port 25 through proxy %s: the proxy did not answer within 0.5 s" % url
    )
    assert BODY in dead_letter(tmp_path)


# -- the proxy URL: command line or account; bad ones; passwords -----------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        (
            "ftp://127.0.0.1:21",
            "unknown proxy URL 'ftp://127.0.0.1:21': use socks5://HOST:PORT, socks5h://HOST:PORT or http://HOST:PORT",
        ),
        ("socks5://127.0.0.1", "bad proxy URL 'socks5://127.0.0.1': give its port, as in socks5://127.0.0.1:1080"),
        ("http://proxy", "bad proxy URL 'http://proxy': give its port, as in http://proxy:3128"),
        (
            "socks5://alice:%s@127.0.0.1:0" % SECRET,
            "bad proxy URL 'socks5://alice:<redacted>@127.0.0.1:0': port '0': use a number from 1 to 65535",
        ),
    ],
)
def test_a_bad_proxy_url(mail, pop, smtp_server, tmp_path, url, why):
    srv = smtp_server()
    r = mail(srv.url, "--proxy", url)
    assert r.returncode == 64
    assert r.stderr.splitlines()[0] == "pymail: " + why  # the message is kept, as for a bad --transport
    assert BODY in dead_letter(tmp_path) and srv.messages == []
    r = pop("--proxy", url, "stat")
    assert (r.returncode, r.stderr) == (64, "pypop: %s (see 'pypop --help')\n" % why)
    config = '[accounts.a]\npop = "pop3://localhost:110"\nproxy = "%s"\n' % url
    r = mail(srv.url, config=config)
    assert r.returncode == 78
    in_file = "config file %s: account 'a': %s" % (tmp_path / "config.toml", why)
    assert r.stderr.splitlines()[0] == "pymail: " + in_file
    r = pop("stat", config=config)
    assert (r.returncode, r.stderr) == (78, "pypop: %s\n" % in_file)
    assert SECRET not in dead_letter(tmp_path).decode()


def test_the_command_line_wins_over_the_account(mail, pop, smtp_server, microsocks, tinyproxy_port1, dovecot):
    srv = smtp_server()
    seen = peers(srv)
    config = '[accounts.a]\nproxy = "%s"\npop = "pop3://localhost:%d"\n' % (tinyproxy_port1.url("http"), dovecot.port)
    assert mail(srv.url, config=config).returncode == 75  # the account's proxy refuses the port
    r = mail(srv.url, "--proxy", microsocks.url(), config=config)
    assert r.returncode == 0, r.stderr
    r = mail(srv.url, "--proxy", "", config=config)  # none at all
    assert r.returncode == 0, r.stderr
    assert seen == [MICROSOCKS_OUT, "127.0.0.1"] and len(srv.messages) == 2
    config = '[accounts.a]\nproxy = "%s"\n' % microsocks.url()
    assert mail(srv.url, config=config).returncode == 0  # the account's proxy
    assert seen[-1] == MICROSOCKS_OUT
    dovecot.put(dovecot.user, b"From: a@example.org\n\nx\n")
    config = '[accounts.a]\nproxy = "%s"\n' % tinyproxy_port1.url("http")
    assert pop("stat", config=config).returncode == 75
    r = pop("--proxy", microsocks.url(), "stat", config=config)
    assert (r.returncode, r.stderr) == (0, "")
    r = pop("--proxy", "", "stat", config=config)
    assert (r.returncode, r.stderr) == (0, "")


def test_a_password_in_the_proxy_url_is_never_shown(mail, pop, smtp_server, microsocks_auth, dovecot, tmp_path):
    srv = smtp_server(tls=True)
    good = microsocks_auth.url("socks5", "alice:%s@" % SECRET)
    shown = microsocks_auth.url("socks5", "alice:<redacted>@")
    r = mail("smtp://localhost:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", good, "-v")
    assert r.returncode == 0, r.stderr
    delivered(srv)
    assert "through proxy %s\n" % shown in r.stderr and SECRET not in r.stderr
    bad = microsocks_auth.url("socks5", "alice:wrong-%s@" % SECRET)
    r = mail("smtp://localhost:%d" % srv.port, "--tls-trust-file", srv.ca_file, "--proxy", bad, "-v")
    assert r.returncode == 77
    assert (
        "pymail: cannot connect to localhost port %d through proxy %s: "
        "the proxy refused the login: Username and password authentication failure\n"
        % (srv.port, microsocks_auth.url("socks5", "alice:<redacted>@"))
    ) in r.stderr
    assert SECRET not in r.stderr and SECRET.encode() not in dead_letter(tmp_path)
    r = mail("smtp://localhost:%d" % srv.port, "--proxy", microsocks_auth.url())
    assert r.returncode == 77
    assert r.stderr.splitlines()[0] == (
        "pymail: cannot connect to localhost port %d through proxy %s: "
        "the proxy wants a user name and password (give them in the proxy URL)" % (srv.port, microsocks_auth.url())
    )
    dovecot.put(dovecot.user, b"From: a@example.org\n\nx\n")
    config = '[accounts.a]\nproxy = "%s"\n' % good
    r = pop("-v", "stat", config=config)
    assert r.returncode == 0, r.stderr
    assert "through proxy %s\n" % shown in r.stderr and SECRET not in r.stderr


# -- the library: python-socks only when a proxy is set; an HTTP answer and the greeting at once --


def test_python_socks_is_imported_only_for_a_proxy(smtp_server):
    srv = smtp_server()
    code = (
        "import sys\n"
        "from pipemail import network\n"
        "network.connect('127.0.0.1', %d, 5).close()\n"
        "assert 'python_socks' not in sys.modules, 'imported without a proxy'\n"
        "from pipemail.cli import mail, pop\n"
        "assert 'python_socks' not in sys.modules, 'imported by the commands'\n" % srv.port
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_an_http_answer_and_the_greeting_in_one_segment():
    """An HTTP proxy may send its answer and the server's first bytes together: none of them is lost."""
    import threading

    from pipemail import network

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        got = []

        def proxy():
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(1024)
                got.append(request)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\n220 mail ESMTP\r\n")
                conn.recv(1)

        t = threading.Thread(target=proxy, daemon=True)
        t.start()
        sock = network.connect("mail.example.org", 587, 5, proxy="http://127.0.0.1:%d" % listener.getsockname()[1])
        with sock:
            sock.settimeout(5)
            assert sock.recv(100) == b"220 mail ESMTP\r\n"
        t.join(5)
    assert got[0].startswith(b"CONNECT mail.example.org:587 HTTP/1.1\r\n")


def test_a_loopback_server_behind_a_remote_proxy_is_not_loopback():
    """What goes in clear to a 'localhost' through a proxy elsewhere crosses the network: tls auto refuses it."""
    from pipemail import network
    from pipemail.errors import UnavailableError

    network.allow_cleartext(network.SMTP_CLEARTEXT, "localhost", "auto", proxy="socks5h://127.0.0.1:1080")
    with pytest.raises(UnavailableError) as info:
        network.allow_cleartext(network.SMTP_CLEARTEXT, "localhost", "auto", proxy="socks5h://proxy.example.net:1080")
    assert (
        str(info.value)
        == "localhost does not offer STARTTLS; not sending in clear (use smtps://, or --tls none to allow it)"
    )
    warned = []
    network.allow_cleartext(
        network.POP3_CLEARTEXT, "127.0.0.1", "none", warn=warned.append, proxy="http://u:pw@proxy.example.net:3128"
    )
    assert warned == ["127.0.0.1 does not offer STLS: logging in without TLS (--tls none)"]


def test_a_proxy_password_in_a_file_others_can_read(mail, pop, smtp_server, microsocks_auth, tmp_path):
    srv = smtp_server()
    config = '[accounts.a]\nproxy = "%s"\n' % microsocks_auth.url("socks5", "alice:%s@" % SECRET)
    path = tmp_path / "config.toml"
    r = mail(srv.url, config=config, mode=0o644)
    assert r.returncode == 78
    assert r.stderr.splitlines()[0] == "pymail: %s holds a password and is readable by others: chmod 600 %s" % (
        path,
        path,
    )
    assert BODY in dead_letter(tmp_path) and srv.messages == []
    r = pop("stat", config=config, mode=0o640)
    assert (r.returncode, r.stderr) == (
        78,
        "pypop: %s holds a password and is readable by others: chmod 600 %s\n" % (path, path),
    )
    r = mail(srv.url, config=config.replace(":%s@" % SECRET, "@"), mode=0o644)  # no password: any mode
    assert r.returncode == 77 and "the proxy wants a user name and password" not in r.stderr
    assert mail(srv.url, config=config, mode=0o600).returncode == 0
    assert len(srv.messages) == 1
