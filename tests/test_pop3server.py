"""The Dovecot fixture itself, checked with the standard library's poplib."""

import base64
import os
import poplib
import ssl
import stat

import pop3server
import pytest

dovecot = pop3server.dovecot

MESSAGES = [
    b"From: a@pipemail.test\nTo: pmtest@pipemail.test\nSubject: one\n\nbody one\n",
    # A "From " line, a line starting with a dot, an empty last line, 8-bit.
    b"From: b@pipemail.test\nSubject: two\n\nFrom here on\n.dot\n..two dots\n\xc3\xa9t\xc3\xa9\n\n",
    # CRLF already, a 998-octet line (poplib refuses lines over 2048), no final line end.
    b"From: c@pipemail.test\r\nSubject: three\r\n\r\n" + b"x" * 998 + b"\r\nlast",
]


def lines(data):
    """What poplib's retr returns for a stored message: its lines, no line ends."""
    return data.replace(b"\r\n", b"\n").split(b"\n")[: -1 if data.endswith(b"\n") else None]


def login(server, user=None, password=None, tls="stls"):
    if tls == "pop3s":
        pop = poplib.POP3_SSL(server.host, server.ssl_port, context=server.ssl_context(), timeout=10)
    else:
        pop = poplib.POP3(server.host, server.port, timeout=10)
        if tls == "stls":
            pop.stls(server.ssl_context())
    pop.user(user or server.user)
    pop.pass_(password if password is not None else server.password)
    return pop


def test_stls_login_and_capa(dovecot):
    dovecot.clear()
    pop = poplib.POP3(dovecot.host, dovecot.port, timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        capa = pop.capa()
        for cap in ("USER", "UIDL", "PIPELINING", "STLS", "RESP-CODES", "AUTH-RESP-CODE"):
            assert cap in capa
        assert capa["SASL"] == ["PLAIN"]
        pop.stls(dovecot.ssl_context())
        assert isinstance(pop.sock, ssl.SSLSocket)
        capa = pop.capa()
        assert "STLS" not in capa and "USER" in capa and capa["SASL"] == ["PLAIN"]
        pop.user(dovecot.user)
        assert pop.pass_(dovecot.password).startswith(b"+OK")
        assert pop.stat() == (0, 0)
    finally:
        pop.quit()


def test_pop3s_login_other_user(dovecot):
    other = next(u for u in dovecot.users if u != dovecot.user)
    dovecot.clear(other)
    dovecot.put(other, MESSAGES[0])
    pop = login(dovecot, other, dovecot.users[other], tls="pop3s")
    try:
        assert isinstance(pop.sock, ssl.SSLSocket)
        assert pop.stat()[0] == 1
        assert pop.retr(1)[1] == lines(MESSAGES[0])
    finally:
        pop.quit()
    # Each user has a Maildir of its own.
    assert dovecot.maildir(other) != dovecot.maildir(dovecot.user)
    assert dovecot.count(other) == 1 and dovecot.messages(other) == [MESSAGES[0]]
    dovecot.clear(other)
    assert dovecot.count(other) == 0


def test_sasl_plain(dovecot):
    pop = poplib.POP3(dovecot.host, dovecot.port, timeout=10)
    try:
        pop.stls(dovecot.ssl_context())
        bad = base64.b64encode(b"\0%s\0wrong" % dovecot.user.encode()).decode()
        with pytest.raises(poplib.error_proto) as err:
            pop._shortcmd("AUTH PLAIN " + bad)
        assert err.value.args[0].startswith(b"-ERR [AUTH]")
        good = base64.b64encode(b"\0%s\0%s" % (dovecot.user.encode(), dovecot.password.encode())).decode()
        assert pop._shortcmd("AUTH PLAIN " + good).startswith(b"+OK")
        assert pop.stat()[0] == dovecot.count(dovecot.user)
    finally:
        pop.quit()


def test_untrusted_certificate_is_refused(dovecot):
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(dovecot.host, dovecot.ssl_port, context=ssl.create_default_context(), timeout=10)


def test_put_retr_dele(dovecot):
    dovecot.clear()
    paths = [dovecot.put(dovecot.user, m) for m in MESSAGES]
    assert dovecot.count(dovecot.user) == 3
    for p in paths:
        st = p.stat()
        assert p.parent.name == "new" and stat.S_IMODE(st.st_mode) == 0o600
        assert (st.st_uid, st.st_gid) == (dovecot.uid, dovecot.gid)
    md = dovecot.maildir(dovecot.user)
    assert stat.S_IMODE(md.stat().st_mode) == 0o700 and md.stat().st_uid == dovecot.uid

    pop = login(dovecot)
    try:
        count, _size = pop.stat()
        assert count == 3
        uidls = pop.uidl()[1]
        assert len(set(u.split()[1] for u in uidls)) == 3
        # Dovecot lists messages in the order it found them: match by content.
        got = sorted(tuple(pop.retr(i)[1]) for i in range(1, 4))
        assert got == sorted(tuple(lines(m)) for m in MESSAGES)
        assert pop.dele(2).startswith(b"+OK")
    finally:
        pop.quit()
    assert dovecot.count(dovecot.user) == 2

    # A message put later, even with a name of one's choosing, gets a UIDL
    # never used before; so does one put after a clear.
    path = dovecot.put(dovecot.user, MESSAGES[0], name="named.pipemail")
    assert path == dovecot.maildir(dovecot.user) / "new" / "named.pipemail"
    assert dovecot.count(dovecot.user) == 3
    pop = login(dovecot, tls="none")
    try:
        now = [u.split()[1] for u in pop.uidl()[1]]
        seen = {u.split()[1] for u in uidls}
        assert len(now) == 3 and len(set(now) - seen) == 1
    finally:
        pop.quit()
    dovecot.clear()
    assert dovecot.count(dovecot.user) == 0
    dovecot.put(dovecot.user, MESSAGES[1])
    pop = login(dovecot)
    try:
        (uidl,) = [u.split()[1] for u in pop.uidl()[1]]
        assert uidl not in seen | set(now)
        assert pop.retr(1)[1] == lines(MESSAGES[1])
    finally:
        pop.quit()
    dovecot.clear()


def test_wrong_password(dovecot):
    pop = poplib.POP3(dovecot.host, dovecot.port, timeout=10)
    try:
        pop.user(dovecot.user)
        with pytest.raises(poplib.error_proto) as err:
            pop.pass_("wrong")
        assert err.value.args[0].startswith(b"-ERR [AUTH]")
    finally:
        pop.close()
    assert "pmtest" in dovecot.log()


def test_fixture_layout(dovecot):
    # pmtest reaches its Maildir: the directory is outside pytest's 0700 root.
    assert str(dovecot.dir).startswith("/tmp/")
    assert stat.S_IMODE(dovecot.dir.stat().st_mode) == 0o755
    assert os.path.exists(dovecot.ca_file) and dovecot.ssl_port != dovecot.port
