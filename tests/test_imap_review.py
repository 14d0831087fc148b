"""An adversarial review of pypop over IMAP: data loss and duplication against the real Dovecot
(tests/imapserver.py), and a hostile server that Dovecot cannot play (a few scripted lines on
127.0.0.1, in this file: a misbehaving server is what is tested, not a stand-in for a real one)."""

import socket
import threading

import imapserver
import pytest
import test_pypop_imap

from pipemail import config
from pipemail import imap as imap_module
from pipemail.errors import TempFailError, UnavailableError

imap_dovecot = imapserver.imap_dovecot
imap = test_pypop_imap.imap  # the fixture: pypop against the Dovecot above
msg, stored = test_pypop_imap.msg, test_pypop_imap.stored


# -- data loss and duplication, against Dovecot ---------------------------------------------------


def test_messages_fetched_to_stdout_are_not_deleted_by_a_later_delete_run(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    r = imap("fetch")  # to a pipe: nothing can be trusted as stored
    assert r.returncode == 0 and r.stdout.count(b"\nSubject: message ") == 2
    box = tmp_path / "box"
    r = imap("fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0, r.stderr
    assert len(server.folder_messages()) == 2  # never on disk here: kept on the server, as POP3 does
    assert all("\\Deleted" not in f for f in server.flags().values())


def test_move_without_move_does_not_copy_again_on_every_run(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    box = tmp_path / "box"
    for _ in range(2):
        r = imap("fetch", "--mbox", str(box), "--move-to", imapserver.FOLDER, host=server.host6)
        assert r.returncode == 0, r.stderr
    assert sorted(server.folder_messages(folder=imapserver.FOLDER).values()) == [msg(0), msg(1)]  # once each
    assert "has no UIDPLUS" not in r.stderr  # the second run had nothing to flag: nothing to say
    assert stored(box) == [msg(0), msg(1)]


def test_an_mda_failing_midway_does_not_deliver_the_earlier_messages_twice(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(3)])
    out, flag = tmp_path / "out", tmp_path / "flag"
    once = "if [ -e %s ]; then exit 75; fi; cat >> %s; touch %s" % (flag, out, flag)
    r = imap("fetch", "--mda", once, "--delete")
    assert r.returncode == 75 and "exited 75; the message stays on the server" in r.stderr
    r = imap("fetch", "--mda", "cat >> %s" % out, "--delete")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == msg(0) + msg(1) + msg(2)  # each once
    assert server.folder_messages() == {}


# -- a hostile server ----------------------------------------------------------------------------


class Hostile:
    """One IMAP session on 127.0.0.1 played from ``script``: {verb: answer}; an answer is bytes
    (``%(tag)s`` is the command's tag) or a callable(tag, line) giving bytes.  ``lines`` holds what
    the client sent."""

    GREETING = b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] hostile ready\r\n"

    def __init__(self, script):
        self.script = {
            b"CAPABILITY": b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n%(tag)s OK done\r\n",
            b"LOGIN": b"%(tag)s OK logged in\r\n",
            b"SELECT": b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\n%(tag)s OK [READ-WRITE] s\r\n",
            b"EXAMINE": b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\n%(tag)s OK [READ-ONLY] e\r\n",
            b"LOGOUT": b"* BYE bye\r\n%(tag)s OK out\r\n",
            **script,
        }
        self.lines = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        try:
            self._session(conn)
        except OSError:
            pass  # the client hung up on a hostile answer

    def _session(self, conn):
        with conn, conn.makefile("rb") as f:
            conn.sendall(self.GREETING)
            for line in f:
                self.lines.append(line)
                words = line.rstrip(b"\r\n").split(b" ")
                tag, verb = words[0], b" ".join(words[1:3]) if words[1:2] == [b"UID"] else words[1]
                answer = self.script.get(verb.upper(), b"%(tag)s BAD unknown\r\n")
                data = answer(tag, line) if callable(answer) else answer % {b"tag": tag}
                if data is None:
                    return  # hang up
                conn.sendall(data)

    def client(self, **kw):
        url = config.split_url("imap://127.0.0.1:%d" % self.port, kind="imap")
        c = imap_module.Client(url, timeout=5, **kw)
        c.login("me", "secret")
        return c

    def close(self):
        self.listener.close()


@pytest.fixture
def hostile():
    made = []

    def make(**script):
        h = Hostile({k.replace("_", " ").encode(): v for k, v in script.items()})
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _fetch_answer(*parts):
    """A UID FETCH answer from ``(seq, uid, body)`` parts, then the tagged OK."""

    def answer(tag, line):
        out = b""
        for seq, uid, body in parts:
            out += b"* %d FETCH (UID %d RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n" % (seq, uid, len(body), len(body), body)
        return out + tag + b" OK fetched\r\n"

    return answer


def test_a_uid_not_asked_for_or_given_twice_is_not_taken(hostile):
    one, two = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"
    h = hostile(UID_FETCH=_fetch_answer((1, 1, one), (1, 1, one), (9, 99, b"Subject: x\r\n\r\nx\r\n"), (2, 2, two)))
    with h.client() as c:
        c.select("INBOX")
        got = [(uid, b"".join(chunks)) for uid, _size, chunks in c.fetch([1, 2])]
    assert got == [(1, one.replace(b"\r\n", b"\n")), (2, two.replace(b"\r\n", b"\n"))]


def test_a_uid_search_answer_over_imaplibs_1_mb_line_is_read(hostile):
    uids = range(1, 200001)  # a folder of 200,000 messages: a 1.3 MB line
    h = hostile(UID_SEARCH=lambda tag, line: b"* SEARCH %s\r\n%s OK s\r\n" % (" ".join(map(str, uids)).encode(), tag))
    with h.client() as c:
        c.select("INBOX")
        c.folder.uidnext = None
        assert c.new_uids(0) == list(uids)


def test_a_huge_literal_announced_is_one_clear_error_not_a_memoryerror(hostile):
    h = hostile(UID_FETCH=b"* 1 FETCH (UID 1 RFC822.SIZE 9 BODY[HEADER.FIELDS (MESSAGE-ID)] {99999999999999}\r\n")
    with h.client() as c:
        c.select("INBOX")
        with pytest.raises(TempFailError) as e:
            c.index([1])
    assert (
        str(e.value) == "127.0.0.1 sent a literal of 99999999999999 bytes (at most 16777216 expected) during UID FETCH"
    )


def test_a_line_without_end_is_one_clear_error(hostile):
    h = hostile(UID_SEARCH=b"* SEARCH " + b"1 " * (9 << 20))
    with h.client() as c:
        c.select("INBOX")
        c.folder.uidnext = None
        with pytest.raises(TempFailError) as e:
            c.new_uids(0)
    assert str(e.value) == "127.0.0.1 sent a line of more than 16777216 bytes during UID SEARCH"


def test_a_flood_of_untagged_lines_is_cut_off_not_held(hostile):
    line = b"* OK " + b"x" * (1 << 20) + b"\r\n"  # imaplib keeps every one until the command ends
    h = hostile(UID_SEARCH=lambda tag, _line: line * 40 + b"* SEARCH 1\r\n%s OK s\r\n" % tag)
    with h.client() as c:
        c.select("INBOX")
        c.folder.uidnext = None
        with pytest.raises(TempFailError) as e:
            c.new_uids(0)
    assert str(e.value) == "127.0.0.1 sent more than 33554432 bytes in answer to one command during UID SEARCH"


def test_inbox_is_one_folder_whatever_its_case(imap, tmp_path):
    server = imap.server
    server.put_many([msg(n) for n in range(2)])
    box = tmp_path / "box"
    assert imap("fetch", "--mbox", str(box), "--folder", "inbox").returncode == 0
    r = imap("fetch", "--mbox", str(box))  # INBOX: the same folder (RFC 3501), the same state
    assert (r.returncode, r.stderr) == (0, "")
    assert stored(box) == [msg(0), msg(1)]


def test_a_servers_escape_sequences_never_reach_the_terminal(hostile):
    h = hostile(SELECT=b"* BAD \x1b]0;owned\x07\r\n%(tag)s NO \x1b[2J\x1b[31mno such\rfolder\r\n")
    with h.client() as c, pytest.raises(UnavailableError) as e:
        c.select("Entw&APw-rfe")
    assert str(e.value) == "SELECT Entwürfe refused by 127.0.0.1: ?[2J?[31mno such?folder"


def test_a_cron_fetch_and_a_second_idle_run_beside_an_idle_one(imap, tmp_path):
    # pypop.1: "one pypop --idle per folder"; the account's lock was held for the whole --idle
    server = imap.server
    server.put_many([msg(0)])
    server.put_many([msg(1, b"E")], folder=imapserver.FOLDER)
    box, other = tmp_path / "box", tmp_path / "other"
    idler = test_pypop_imap.Idler(server, tmp_path, "--mbox", str(box))
    second = None
    try:
        idler.wait_for("=== idling in INBOX")
        r = imap("fetch", "--mbox", str(other), "--folder", imapserver.FOLDER)  # cron, meanwhile
        assert (r.returncode, r.stderr) == (0, "")
        assert stored(other) == [msg(1, b"E")]
        server.put_many([msg(2, b"E")], folder=imapserver.FOLDER)
        second = test_pypop_imap.Idler(server, tmp_path, "--mbox", str(other), "--folder", imapserver.FOLDER)
        second.wait_for("=== idling in %s" % imapserver.FOLDER)
        assert stored(other) == [msg(1, b"E"), msg(2, b"E")]
        server.put_many([msg(3)])
        idler.wait_for("=== idling in INBOX", count=2)
        assert stored(box) == [msg(0), msg(3)]
    finally:
        code, lines = idler.stop()
        if second is not None:
            assert second.stop()[0] == 0
    assert code == 0, lines


def test_uidvalidity_reset_matches_a_commented_message_id_and_one_without(imap, tmp_path):
    server = imap.server
    commented = b"From: a@example.org\nSubject: commented\nMessage-ID: <c1@pipemail.test> (a comment)\n\nc\n"
    bare = b"From: cron@example.org\nSubject: no Message-ID\n\nbare\n"
    server.put_many([commented, bare])
    box = tmp_path / "box"
    assert imap("fetch", "--mbox", str(box)).returncode == 0
    server.set_uidvalidity(4343)
    r = imap("fetch", "--mbox", str(box))
    assert r.returncode == 0, r.stderr
    assert "folder INBOX: 2 messages stored before the change not fetched again" in r.stderr
    assert stored(box) == [commented, bare]


def test_move_to_a_missing_folder_says_what_becomes_of_the_stored_messages(imap, tmp_path):
    server = imap.server
    server.put_many([msg(0)])
    box = tmp_path / "box"
    r = imap("fetch", "--mbox", str(box), "--move-to", "Archive")
    assert r.returncode == 69
    assert r.stderr.startswith("pypop: UID MOVE refused by 127.0.0.1: [TRYCREATE] Mailbox doesn't exist: Archive")
    assert r.stderr.endswith(
        "; the stored messages stay in INBOX, not fetched again: the next fetch --move-to moves them "
        "(create Archive first, or name another folder)\n"
    )
    r = imap("fetch", "--mbox", str(box), "--move-to", imapserver.FOLDER)
    assert (r.returncode, r.stderr) == (0, "")
    assert stored(box) == [msg(0)] and server.folder_messages() == {}
    assert list(server.folder_messages(folder=imapserver.FOLDER).values()) == [msg(0)]


def test_a_killed_runs_message_with_an_8bit_message_id_is_settled(imap, tmp_path):
    # the next run settles the killed run's pending record into mbox.recovered: it wrote the
    # labels as strict UTF-8, and a Message-ID's 8-bit byte (surrogate-escaped) made it exit 70
    import os

    from pipemail import imapfetch, imapstate, mailbox

    server = imap.server
    eight = b"From: a@example.org\nSubject: 8-bit id\nMessage-ID: <caf\xe9@pipemail.test>\n\nx\n"
    server.put_many([eight])
    box = tmp_path / "box"
    line = imap("uidl").stdout.split()
    uid, uidvalidity = int(line[0]), int(line[1].split(b".")[0])
    directory = imapstate.account_dir(
        server.user, server.host, server.ssl_port, env={"XDG_STATE_HOME": str(tmp_path / "state")}
    )
    os.makedirs(directory)
    key = imapstate.message_key(eight)
    name = imapfetch.label(imapstate.folder_stem("INBOX"), uidvalidity, uid, len(eight) + 4, key)
    data = mailbox.mbox_bytes([eight], "MAILER-DAEMON")
    box.write_bytes(b"")
    mailbox.Pending.plan(str(box), os.stat(box), 0, [(name, data)]).save(os.path.join(directory, "mbox.pending"))
    box.write_bytes(data)  # appended whole; the run was killed before recording it
    r = imap("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "")
    assert stored(box) == [eight]  # settled, not fetched twice


def test_stdout_messages_stay_unsafe_to_delete_when_the_state_file_is_lost(imap, tmp_path):
    from pipemail import imapstate

    server = imap.server
    server.put_many([msg(0)])
    assert imap("fetch").returncode == 0  # to a pipe
    directory = imapstate.account_dir(
        server.user, server.host, server.ssl_port, env={"XDG_STATE_HOME": str(tmp_path / "state")}
    )
    st = imapstate.FolderState(directory, "INBOX")
    (tmp_path / "state").joinpath(st.state_path).unlink()  # the index alone tells what was fetched
    r = imap("fetch", "--mbox", str(tmp_path / "box"), "--delete")
    assert (r.returncode, r.stderr) == (0, "")
    assert len(server.folder_messages()) == 1  # the index says it went to a pipe only: kept
