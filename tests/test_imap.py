"""pipemail.imap against a real Dovecot imapd on loopback (tests/imapserver.py): login ways,
TLS policy, a redacted transcript, streamed batch fetches, flags, expunge, move, IDLE."""

import hashlib
import os
import signal
import threading
import time

import imapserver
import pytest

from pipemail import config, imap
from pipemail.errors import ConfigError, NoPermError, TempFailError, UnavailableError, UsageError

imap_dovecot = imapserver.imap_dovecot


def msg(n, extra=b""):
    return (
        b"From: sender@example.org\nTo: pmtest@example.org\nSubject: message %d\n"
        b"Message-ID: <m%d@pipemail.test>\n\nbody of %d\r\nFrom the start of a line\n" % (n, n, n)
    ) + extra


def url(server, scheme="imaps", host=None):
    host = host or server.host
    port = server.ssl_port if scheme == "imaps" else server.port
    shown = "[%s]" % host if ":" in host else host
    return config.split_url("%s://%s:%d" % (scheme, shown, port), kind="imap")


def client(server, scheme="imaps", host=None, log=None, **kw):
    return imap.Client(url(server, scheme, host), timeout=10, log=log, trust_file=str(server.ca_file), **kw)


@pytest.fixture
def box(imap_dovecot):
    imap_dovecot.clear()
    imap_dovecot.stopped = []
    return imap_dovecot


def logged_in(server, scheme="imaps", host=None, log=None, **kw):
    c = client(server, scheme, host, log=log, **kw)
    c.login(server.user, server.password)
    return c


def fetch_all(c, uids, **kw):
    return [(uid, size, b"".join(chunks)) for uid, size, chunks in c.fetch(uids, **kw)]


def lf(message):
    return message.replace(b"\r\n", b"\n")


# -- login, TLS, transcript --------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "plain", "login"])
def test_login_ways_and_redacted_transcript(box, auth):
    lines = []
    with client(box, log=lines.append) as c:
        assert not c.has("UIDPLUS")  # the pre-login list
        c.login(box.user, box.password, auth=auth)
        assert c.has("UIDPLUS") and c.has("MOVE")  # refreshed from the login's answer
        assert c.select("INBOX").exists == 0
        c.logout()
    text = "\n".join(lines)
    assert box.password not in text
    assert "=== TLS started" in text
    if auth == "login":
        assert any(line.endswith(' LOGIN "pmtest" <redacted>') for line in lines), text
    else:
        assert any(line.endswith(" AUTHENTICATE PLAIN") for line in lines), text
        assert "C: <redacted>" in lines


def test_starttls_on_imap_url(box):
    lines = []
    with client(box, "imap", log=lines.append) as c:
        assert c.has("IMAP4REV1") and not c.has("STARTTLS")  # the list asked again inside TLS
        c.login(box.user, box.password)
        c.logout()
    starttls = [i for i, line in enumerate(lines) if line.endswith(" STARTTLS")]
    tls = [i for i, line in enumerate(lines) if line.startswith("=== TLS started")]
    auth = [i for i, line in enumerate(lines) if "AUTHENTICATE" in line]
    assert starttls and tls and auth and starttls[0] < tls[0] < auth[0], lines


def test_wrong_password_is_noperm(box):
    lines = []
    with client(box, log=lines.append) as c, pytest.raises(NoPermError) as e:
        c.login(box.user, "not the password")
    assert str(e.value).startswith("AUTHENTICATE PLAIN refused by 127.0.0.1: ")
    assert "AUTHENTICATIONFAILED" in str(e.value)
    assert "not the password" not in "\n".join(lines)


def test_wrong_password_with_login_is_noperm(box):
    with client(box) as c, pytest.raises(NoPermError) as e:
        c.login(box.user, "not the password", auth="login")
    assert str(e.value).startswith("LOGIN refused by 127.0.0.1: ")


def test_xoauth2_not_offered_is_unavailable_and_never_sent(box):
    # This Dovecot offers AUTH=PLAIN AUTH=LOGIN only (tests/test_imap_oauth.py logs in with
    # XOAUTH2 and OAUTHBEARER at one whose oauth2 passdb takes the token).
    lines = []
    with client(box, log=lines.append) as c, pytest.raises(UnavailableError) as e:
        c.login(box.user, "TOKEN-123", auth="xoauth2")
    assert str(e.value) == "127.0.0.1 does not offer AUTHENTICATE XOAUTH2 (its mechanisms: LOGIN, PLAIN)"
    assert not any(" AUTHENTICATE " in line for line in lines)
    assert "TOKEN" not in "\n".join(lines)


def test_untrusted_certificate(box, tmp_path):
    with pytest.raises(UnavailableError) as e:
        imap.Client(url(box), timeout=10)  # the system store does not know the test CA
    assert "the certificate of 127.0.0.1 is not trusted" in str(e.value)


def test_hidden_capabilities_on_ipv6(box):
    with logged_in(box, host=box.host6) as c:
        assert c.has("IDLE") and c.has("UNSELECT")
        assert not c.has("UIDPLUS") and not c.has("MOVE")
        c.logout()


# -- selecting and fetching ------------------------------------------------------------


def test_fetch_1000_in_batches_then_nothing_new(box):
    messages = [msg(n, b"x" * (n % 97) + b"\r\n") for n in range(1000)]
    box.put_many(messages)
    lines = []
    with logged_in(box, log=lines.append) as c:
        f = c.select("INBOX", readonly=True)
        assert (f.exists, f.readonly) == (1000, True)
        uids = c.new_uids(0)
        assert len(uids) == 1000 and uids == sorted(uids)
        got = fetch_all(c, uids)
        assert [g[2] for g in got] == [lf(m) for m in messages]
        assert [g[1] for g in got] == [len(m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) for m in messages]
        last = uids[-1]
        assert c.new_uids(last) == []  # from UIDNEXT, without a SEARCH
        c.logout()
    fetches = [line for line in lines if " UID FETCH " in line and line.startswith("C: ")]
    assert len(fetches) == 10  # batches of 100: one command each
    assert not any(" UID SEARCH UID %d:*" % (last + 1) in line for line in lines)
    flags = box.flags()
    assert len(flags) == 1000 and all("\\Seen" not in m for m in flags.values())  # BODY.PEEK


def test_noop_sees_new_mail(box):
    box.put_many([msg(1)])
    with logged_in(box) as c:
        c.select("INBOX")
        [u1] = c.new_uids(0)
        box.put_many([msg(2)])
        assert c.new_uids(u1) == []  # SELECT's UIDNEXT says nothing new: no command
        c.noop()
        assert len(c.new_uids(u1)) == 1
        box.put_many([msg(3)])
        c.noop()  # says * 3 EXISTS: idle() must not wait for another
        with c.idle(tick=0.1) as events:
            first = next(events)
        assert (first.kind, first.number) == ("EXISTS", 3)
        c.logout()


def test_new_uids_filters_the_highest(box):
    box.put_many([msg(1), msg(2), msg(3)])
    with logged_in(box) as c:
        c.select("INBOX")
        uids = c.new_uids(0)
        c.folder.uidnext = None  # force the SEARCH: n:* always answers the highest UID
        assert c.new_uids(uids[-1]) == []
        assert c.new_uids(uids[0]) == uids[1:]
        c.logout()


def test_non_ascii_folder(box):
    box.put(box.user, msg(7), folder=imapserver.FOLDER)
    with logged_in(box) as c:
        f = c.select(imapserver.FOLDER_WIRE)
        assert f.exists == 1
        assert [g[2] for g in fetch_all(c, c.new_uids(0))] == [lf(msg(7))]
        with pytest.raises(UnavailableError) as e:
            c.select("Nowhere")
        assert str(e.value).startswith("SELECT Nowhere refused by 127.0.0.1: ")
        c.logout()


def test_index_and_uidvalidity_change(box):
    box.put_many([msg(1), msg(2, b"more\n")])
    with logged_in(box) as c:
        before = c.select("INBOX").uidvalidity
        uids = c.new_uids(0)
        index = c.index(uids)
        assert [(i[1], i[2]) for i in index] == [
            (len(lf(msg(1)).replace(b"\n", b"\r\n")), "<m1@pipemail.test>"),
            (len(lf(msg(2, b"more\n")).replace(b"\n", b"\r\n")), "<m2@pipemail.test>"),
        ]
        c.logout()
    box.set_uidvalidity(before + 17)
    with logged_in(box) as c:
        assert c.select("INBOX").uidvalidity == before + 17
        c.logout()


def test_body_split_across_reads_keeps_crlf_pairs(box, monkeypatch):
    # Chunks of 7 bytes: many a CRLF is cut between two reads.
    monkeypatch.setattr(imap, "CHUNK", 7)
    body = b"Subject: x\r\n\r\n" + b"".join(b"line %d\r\n\r" % i for i in range(50)) + b"end\r"
    box.put_many([body])
    with logged_in(box) as c:
        c.select("INBOX")
        [(uid, size, data)] = fetch_all(c, c.new_uids(0))
        assert data == body.replace(b"\r\n", b"\n")
        c.logout()


def test_fetch_left_unread_is_drained(box):
    box.put_many([msg(1, b"a" * 300000), msg(2)])
    with logged_in(box) as c:
        c.select("INBOX")
        seen = []
        for uid, _size, chunks in c.fetch(c.new_uids(0)):
            seen.append((uid, next(chunks)[:20]))  # one chunk of the first, then on
        assert [s[1] for s in seen] == [msg(1)[:20], msg(2)[:20]]
        assert c.select("INBOX").exists == 2  # the session still works
        c.logout()


# -- flags, delete, move ---------------------------------------------------------------


def test_flags_and_delete_with_uidplus(box):
    box.put_many([msg(1), msg(2), msg(3)])
    lines = []
    with logged_in(box, log=lines.append) as c:
        c.select("INBOX")
        u1, u2, u3 = c.new_uids(0)
        c.add_flags([u2], ["\\Seen"])
        c.add_flags([u3], ["\\Deleted"])  # flagged by someone else, not ours to expunge
        assert c.delete([u1]) is True
        c.unselect()
        c.logout()
    flags = box.flags()
    assert sorted(flags) == [u2, u3]  # u1 expunged, u3 kept though \Deleted
    assert "\\Seen" in flags[u2] and "\\Deleted" in flags[u3]
    sent = [line for line in lines if line.startswith("C: ")]
    assert any(line.endswith(" UID EXPUNGE %d" % u1) for line in sent), sent
    assert any(line.endswith(" UNSELECT") for line in sent)
    assert not any(line.endswith((" EXPUNGE", " CLOSE")) for line in sent)


def test_delete_without_uidplus_only_flags(box):
    box.put_many([msg(1), msg(2)])
    lines = []
    with logged_in(box, host=box.host6, log=lines.append) as c:
        c.select("INBOX")
        u1, u2 = c.new_uids(0)
        assert c.delete([u1]) is False
        c.unselect()
        c.logout()
    flags = box.flags()
    assert sorted(flags) == [u1, u2] and "\\Deleted" in flags[u1] and "\\Deleted" not in flags[u2]
    assert not any("EXPUNGE" in line or "CLOSE" in line for line in lines if line.startswith("C: "))


def test_move_with_move(box):
    box.put_many([msg(1), msg(2)])
    lines = []
    with logged_in(box, log=lines.append) as c:
        c.select("INBOX")
        u1, u2 = c.new_uids(0)
        assert c.move([u1], imapserver.FOLDER_WIRE) is True
        c.logout()
    assert sorted(box.flags()) == [u2]
    assert sorted(box.folder_messages(folder=imapserver.FOLDER).values()) == [msg(1)]
    assert any(line.endswith(' UID MOVE %d "Entw&APw-rfe"' % u1) for line in lines)


def test_move_without_move_copies_and_flags(box):
    box.put_many([msg(1), msg(2)])
    lines = []
    with logged_in(box, host=box.host6, log=lines.append) as c:
        c.select("INBOX")
        u1, u2 = c.new_uids(0)
        assert c.move([u1], imapserver.FOLDER_WIRE) is False  # copied; the original only flagged
        c.logout()
    flags = box.flags()
    assert sorted(flags) == [u1, u2] and "\\Deleted" in flags[u1]
    assert sorted(box.folder_messages(folder=imapserver.FOLDER).values()) == [msg(1)]
    sent = [line for line in lines if line.startswith("C: ")]
    assert any(line.endswith(' UID COPY %d "Entw&APw-rfe"' % u1) for line in sent)
    assert not any(" MOVE " in line or "EXPUNGE" in line for line in sent)


def test_uid_set():
    assert imap.uid_set([9, 1, 2, 3, 5, 10, 11, 12, 3]) == "1:3,5,9:12"
    assert imap.uid_set([7]) == "7"


# -- IDLE -------------------------------------------------------------------------------


def append_from_another_client(box, message, delay):
    import imaplib

    time.sleep(delay)
    other = imaplib.IMAP4_SSL(box.host, box.ssl_port, ssl_context=box.ssl_context())
    other.login(box.user, box.password)
    other.append("INBOX", None, None, message)
    other.logout()


def test_idle_sees_an_append_through_exists(box):
    box.put_many([msg(1)])
    lines = []
    with logged_in(box, log=lines.append) as c:
        f = c.select("INBOX")
        last = c.new_uids(0)[-1]
        other = threading.Thread(target=append_from_another_client, args=(box, msg(2), 0.3))
        start = time.monotonic()
        seen = []
        with c.idle(tick=0.2) as events:
            for event in events:
                if event is not None:
                    seen.append(event)
                    if event.kind == "EXISTS":
                        break
                if not other.ident:
                    other.start()
                assert time.monotonic() - start < 10, lines
        other.join()
        assert seen[-1].kind == "EXISTS" and seen[-1].number == f.exists + 1
        new = c.new_uids(last)
        assert [g[2] for g in fetch_all(c, new)] == [lf(msg(2))]
        c.logout()
    idle = [i for i, line in enumerate(lines) if line.startswith("C: ") and line.endswith(" IDLE")]
    exists = [i for i, line in enumerate(lines) if line == "S: * 2 EXISTS"]
    done = [i for i, line in enumerate(lines) if line == "C: DONE"]
    assert idle and exists and done and idle[0] < exists[0] < done[0], lines  # seen while idling


def test_idle_reissued(box):
    lines = []
    with logged_in(box, log=lines.append) as c:
        c.select("INBOX")
        start = time.monotonic()
        with c.idle(reissue=0.3, tick=0.1) as events:
            for _event in events:
                if time.monotonic() - start > 1.0:
                    break
        c.logout()
    idles = [line for line in lines if line.startswith("C: ") and line.endswith(" IDLE")]
    assert len(idles) >= 3 and lines.count("C: DONE") == len(idles), lines


def test_idle_connection_dropped(box):
    with logged_in(box) as c:
        c.select("INBOX")
        with pytest.raises(TempFailError) as e, c.idle(tick=0.1) as events:
            for event in events:
                if event is None:
                    box.kill_sessions(signal.SIGKILL)
        assert str(e.value) == "127.0.0.1 closed the connection during IDLE"


def test_idle_server_says_bye(box):
    with logged_in(box) as c:
        c.select("INBOX")
        with pytest.raises(TempFailError) as e, c.idle(tick=0.1) as events:
            for event in events:
                if event is None:
                    box.kill_sessions(signal.SIGTERM)
        assert str(e.value).startswith("127.0.0.1 closed the connection: ")


# -- memory -------------------------------------------------------------------------------

FETCH_TO_FILE = """\
import sys
from pipemail import config, imap
host, port, ca, user, password, out = sys.argv[1:]
with imap.Client(config.split_url("imaps://%s:%s" % (host, port), kind="imap"), trust_file=ca) as c:
    c.login(user, password)
    c.select("INBOX", readonly=True)
    with open(out, "wb") as f:
        for uid, size, chunks in c.fetch(c.new_uids(0)):
            for chunk in chunks:
                f.write(chunk)
    c.logout()
"""


def test_big_message_in_bounded_memory(box, tmp_path):
    import os
    import sys

    import peak

    line = b"A" * 75 + b"\r\n"  # CRLF on disk, as on the wire: made LF on the way out
    count = peak.BIG_MB * (1 << 20) // len(line)
    expected = hashlib.sha256(b"Subject: big\n\n")
    tmp = box.maildir() / "tmp" / "big.pipemail"
    with open(tmp, "wb") as f:
        f.write(b"Subject: big\r\n\r\n")
        block = line * 1000
        for _ in range(count // 1000):
            f.write(block)
            expected.update(block.replace(b"\r\n", b"\n"))
    os.chown(tmp, box.uid, box.gid)
    os.rename(tmp, box.maildir() / "new" / "big.pipemail")
    out = tmp_path / "out"
    r = peak.peak(
        [sys.executable, "-c", FETCH_TO_FILE], box.host, box.ssl_port, box.ca_file, box.user, box.password, out
    )
    assert r.returncode == 0, r
    got = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == expected.hexdigest()
    assert out.stat().st_size == len(b"Subject: big\n\n") + count // 1000 * 1000 * (len(line) - 1)
    assert r.mb < peak.LIMIT_MB, r


def test_imap_urls():
    assert config.split_url("imaps://mail.example.org", kind="imap") == config.URL(
        "imaps", host="mail.example.org", port=993
    )
    u = config.split_url("imap://me@[::1]:1143", kind="imap")
    assert (u.scheme, u.user, u.host, u.port, u.implicit_tls) == ("imap", "me", "::1", 1143, False)
    assert config.split_url("imap://h", kind="imap").port == 143
    assert config.split_url("imaps://h", kind="imap").implicit_tls
    with pytest.raises(UsageError) as e:
        config.split_url("pop3://h", kind="imap")
    assert str(e.value) == "unknown IMAP URL 'pop3://h': use imap:// or imaps://"
    with pytest.raises(UsageError) as e:
        config.split_url("imap://me:secret@h", kind="imap")
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("auth", ["plain", "login"])
def test_non_ascii_password_with_quote_and_backslash(box, auth):
    lines = []
    with client(box, log=lines.append) as c:
        c.login(box.UTF8_USER, box.UTF8_PASSWORD, auth=auth)
        assert c.select("INBOX").exists == 0
        c.logout()
    assert "ss" not in "\n".join(line for line in lines if line.startswith("C: "))


def test_oauthbearer_not_offered_is_unavailable_and_never_sent(box):
    lines = []
    with client(box, log=lines.append) as c, pytest.raises(UnavailableError) as e:
        c.login(box.user, "TOKEN-456", auth="oauthbearer")
    assert str(e.value) == "127.0.0.1 does not offer AUTHENTICATE OAUTHBEARER (its mechanisms: LOGIN, PLAIN)"
    assert not any(" AUTHENTICATE " in line for line in lines)
    assert "TOKEN" not in "\n".join(lines)


def test_unknown_auth_mechanism(box):
    with client(box) as c, pytest.raises(ConfigError) as e:
        c.login(box.user, box.password, auth="cram-md5")
    assert str(e.value) == "unknown auth mechanism cram-md5 for IMAP (plain, login, xoauth2, oauthbearer)"


def test_connection_dropped_inside_a_message(box):
    # 16 MB: more than Dovecot's imap-login proxy and the socket buffers hold between them
    # (with 3 MB the whole message was there before the kill in 1 run of 4).
    box.put_many([msg(1, b"z" * 16_000_000)])
    with logged_in(box) as c:
        c.select("INBOX")
        with pytest.raises(TempFailError) as e:
            for _uid, _size, chunks in c.fetch(c.new_uids(0)):
                next(chunks)
                box.kill_sessions(signal.SIGKILL)
                for _chunk in chunks:
                    pass
        assert str(e.value) == "127.0.0.1 closed the connection in the middle of a message"


def test_uidvalidity_changed_under_a_session(box):
    box.put_many([msg(1)])
    lines = []
    with logged_in(box, log=lines.append) as c:
        f = c.select("INBOX")
        box.set_uidvalidity(f.uidvalidity + 5)
        with pytest.raises(TempFailError) as e:
            c.noop()
        assert str(e.value) == (
            "127.0.0.1 ended the session during NOOP: IMAP session state is inconsistent, please relogin."
        )
    with logged_in(box) as c:  # a new session sees the new UIDVALIDITY
        assert c.select("INBOX").uidvalidity == f.uidvalidity + 5
        c.logout()


def test_idle_hung_server_found_at_the_reissue(box):
    lines = []
    c = imap.Client(url(box), timeout=1, log=lines.append, trust_file=str(box.ca_file))
    try:
        c.login(box.user, box.password)
        c.select("INBOX")
        start = time.monotonic()
        with pytest.raises(TempFailError) as e, c.idle(reissue=0.3, tick=0.1) as events:
            for event in events:
                if event is None and not box.stopped:
                    box.stopped = box.imap_processes()
                    box.kill_sessions(signal.SIGSTOP)  # a hung server says nothing at all
        assert str(e.value) == "127.0.0.1 timed out after 1 s during IDLE (DONE)"
        assert time.monotonic() - start < 5
        assert lines[-1] == "C: DONE"
    finally:
        for pid in box.stopped:
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
        box.stopped = []
        c.close()


def test_imaps_through_a_socks5_proxy(box, tmp_path):
    # microsocks binds its outgoing side to 127.0.0.3: Dovecot's log names that peer.
    from test_proxy import MICROSOCKS_OUT, _microsocks

    proxy = _microsocks(tmp_path)
    lines = []
    try:
        with imap.Client(
            url(box, host="localhost"), timeout=10, log=lines.append, trust_file=str(box.ca_file), proxy=proxy.url()
        ) as c:
            c.login(box.user, box.password)
            assert c.select("INBOX").exists == 0
            c.logout()
    finally:
        proxy.stop()
    assert lines[0] == "=== connected to localhost port %d (TLS) through proxy %s" % (box.ssl_port, proxy.url())
    assert "rip=%s" % MICROSOCKS_OUT in box.log()
