"""pipemail.imapstate: UIDVALIDITY and UIDs per account and folder, the index that survives a
UIDVALIDITY change (Message-ID + CRLF size), atomic writes with fsync, and runs killed between
their writes."""

import hashlib
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from pipemail import imapstate
from pipemail.errors import EX_DATAERR, EX_IOERR, DataError, IOFailure
from pipemail.imapstate import FolderState, Stored

from conftest import tool


def state_text(st):
    with open(st.state_path, encoding="utf-8") as f:
        return f.read()


def index_bytes(st):
    with open(st.index_path, "rb") as f:
        return f.read()


def test_account_dir_and_folder_stem(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path)}
    assert imapstate.account_dir("me@example.com", "imap.example.com", 993, env) == str(
        tmp_path / "pipemail" / "imap" / "me@example.com@imap.example.com_993"
    )
    assert imapstate.account_dir("a b/c", "::1", 143, env).endswith("/a_b_c@__1_143")
    stem = imapstate.folder_stem("Entw\u00fcrfe")
    assert stem.startswith("Entw&APw-rfe.") and len(stem) == len("Entw&APw-rfe.") + 8
    assert imapstate.folder_stem("a/b") != imapstate.folder_stem("a_b")
    assert imapstate.folder_stem("a/b").startswith("a_b.")
    assert imapstate.folder_stem("..").startswith("_.")
    assert imapstate.folder_stem("INBOX") == imapstate.folder_stem("INBOX")


def test_first_run_writes_state_atomically(tmp_path):
    d = tmp_path / "acct"
    st = FolderState(str(d), "INBOX")
    assert st.uidvalidity is None and st.last == 0
    assert st.begin(1700000000) is None
    assert state_text(st) == (
        "pipemail-imap-state 1\nfolder INBOX\nuidvalidity 1700000000\nlast 0\nextra -\nindex 0\nrecovering 0\n"
    )
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert os.listdir(d) == [os.path.basename(st.state_path)]  # no temporary file left


def test_new_filters_uid_above_last(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(7)
    assert st.new([3, 1, 2, 2]) == [1, 2, 3]
    st.stored([Stored(1, 10, "<a@x>"), Stored(2, 20, "<b@x>"), Stored(3, 30, "<c@x>")])
    assert st.last == 3
    # `UID SEARCH UID 4:*` answers the highest UID even when it is below 4 (RFC 3501)
    assert FolderState(str(tmp_path), "INBOX").new([3]) == []
    assert FolderState(str(tmp_path), "INBOX").new([3, 9]) == [9]


def test_up_to_date_by_uidnext(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    assert not st.up_to_date(1)  # no UIDVALIDITY yet: nothing is known
    st.begin(7)
    assert st.up_to_date(1) and not st.up_to_date(2)
    st.new([1, 2])
    st.stored([Stored(1, 1, "<1@x>"), Stored(2, 1, "<2@x>")])
    assert st.up_to_date(3) and not st.up_to_date(4)


def test_left_behind_is_offered_again(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(7)
    assert st.new([5, 6, 7, 8]) == [5, 6, 7, 8]
    st.stored([Stored(5, 1, "<5@x>")])
    st.stored([Stored(7, 1, "<7@x>"), Stored(8, 1, "<8@x>")])  # 6 left behind (too big, MDA failed)
    assert (st.last, st.extra) == (5, {7, 8})
    assert "last 5\nextra 7-8\n" in state_text(st)
    again = FolderState(str(tmp_path), "INBOX")
    assert again.begin(7) is None
    assert again.new([5, 6, 7, 8, 9]) == [6, 9]
    again.stored([Stored(6, 1, "<6@x>")])
    assert (again.last, again.extra) == (8, set())
    assert "last 8\nextra -\n" in state_text(again)
    assert index_bytes(again) == b"7 5 1 <5@x>\n7 7 1 <7@x>\n7 8 1 <8@x>\n7 6 1 <6@x>\n"


def test_index_lines_and_mode(tmp_path):
    st = FolderState(str(tmp_path), "Entw\u00fcrfe")
    st.begin(42)
    st.new([1, 2])
    st.stored([Stored(1, 10177, "<bench-1@pipemail.test>"), Stored(2, 99, "header-sha256:ab")])
    assert index_bytes(st) == b"42 1 10177 <bench-1@pipemail.test>\n42 2 99 header-sha256:ab\n"
    assert stat.S_IMODE(os.stat(st.index_path).st_mode) == 0o600
    assert "folder Entw\u00fcrfe\n" in state_text(st)
    assert "index %d\n" % len(index_bytes(st)) in state_text(st)


def test_killed_between_index_and_state_settles_from_index(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(9)
    st.new([1, 2, 3])
    st.stored([Stored(1, 5, "<1@x>")])
    # a run that appended (and fsynced) its batch to the index, then died before the state
    with open(st.index_path, "ab") as f:
        f.write(b"9 2 5 <2@x>\n9 3 5 <3@x>\n")
    again = FolderState(str(tmp_path), "INBOX")
    assert again.begin(9) is None
    assert again.new([1, 2, 3, 4]) == [4]
    assert "extra 2-3\n" in state_text(again)  # checkpointed at once
    assert "index %d\n" % len(index_bytes(again)) in state_text(again)


def test_torn_index_line_is_ignored_and_cut(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(9)
    st.new([1])
    st.stored([Stored(1, 5, "<1@x>")])
    with open(st.index_path, "ab") as f:
        f.write(b"9 2 5 <2@")  # killed in the middle of an append
    again = FolderState(str(tmp_path), "INBOX")
    again.begin(9)
    assert again.new([1, 2]) == [2]  # not settled: fetched again
    again.stored([Stored(2, 5, "<2@x>")])
    assert index_bytes(again) == b"9 1 5 <1@x>\n9 2 5 <2@x>\n"
    assert FolderState(str(tmp_path), "INBOX").new([1, 2]) == []


def test_lost_state_file_is_rebuilt_from_index(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(9)
    st.new([1, 2])
    st.stored([Stored(1, 5, "<1@x>"), Stored(2, 6, "<2@x>")])
    os.unlink(st.state_path)
    again = FolderState(str(tmp_path), "INBOX")
    assert again.begin(9) is None
    assert again.new([1, 2, 3]) == [3]
    assert not again.recovering


def test_uidvalidity_change_matches_by_message_id_and_size(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(100)
    st.new([1, 2, 3])
    st.stored([Stored(1, 500, "<a@x>"), Stored(2, 600, "<b@x>"), Stored(3, 700, "<c@x>")])

    st = FolderState(str(tmp_path), "INBOX")
    assert st.begin(200) == 100
    assert (st.uidvalidity, st.last, st.extra, st.recovering) == (200, 0, set(), True)
    assert "uidvalidity 200\nlast 0\nextra -\n" in state_text(st)
    assert "recovering 1\n" in state_text(st)
    # the renumbered folder: a, b (c was deleted), d new, and a message with b's id but another size
    server = {1: ("<b@x>", 600), 2: ("<a@x>", 500), 3: ("<d@x>", 800), 4: ("<b@x>", 601)}
    todo = st.new(server)
    assert todo == [1, 2, 3, 4]
    match = st.matcher()
    assert len(match) == 3
    known = [Stored(u, server[u][1], server[u][0]) for u in todo if match.take(server[u][0], server[u][1])]
    assert [k.uid for k in known] == [1, 2]
    st.stored(known)
    assert st.last == 2
    st.stored([Stored(3, 800, "<d@x>"), Stored(4, 601, "<b@x>")])  # fetched and stored
    st.finish_recovery()
    assert index_bytes(st) == b"200 1 600 <b@x>\n200 2 500 <a@x>\n200 3 800 <d@x>\n200 4 601 <b@x>\n"
    assert state_text(st).endswith("last 4\nextra -\nindex %d\nrecovering 0\n" % len(index_bytes(st)))
    again = FolderState(str(tmp_path), "INBOX")
    assert again.begin(200) is None and again.new([1, 2, 3, 4]) == []


def test_two_stored_copies_match_twice_not_three_times(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(1)
    st.new([1, 2])
    st.stored([Stored(1, 10, "<same@x>"), Stored(2, 10, "<same@x>")])
    st.begin(2)
    match = st.matcher()
    assert [match.take("<same@x>", 10) for _ in range(3)] == [True, True, False]


def test_recovery_killed_midway_does_not_match_twice(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(1)
    st.new([1, 2])
    st.stored([Stored(1, 10, "<a@x>"), Stored(2, 20, "<b@x>")])
    assert st.begin(2) == 1
    st.new([1, 2, 3])
    st.stored([Stored(1, 10, "<a@x>")])  # a found in the index; then the run is killed
    again = FolderState(str(tmp_path), "INBOX")
    assert again.begin(2) is None and again.recovering
    assert again.new([1, 2, 3]) == [2, 3]
    match = again.matcher()
    assert match.take("<a@x>", 10) is False  # its one stored copy is settled as UID 1 already
    assert match.take("<b@x>", 20) is True


def test_second_change_before_recovery_ends_counts_copies_once(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(1)
    st.new([1])
    st.stored([Stored(1, 10, "<a@x>")])
    st.begin(2)
    st.new([5])
    st.stored([Stored(5, 10, "<a@x>")])  # matched, settled under 2; no finish_recovery
    assert st.begin(3) == 2
    match = st.matcher()
    assert [match.take("<a@x>", 10), match.take("<a@x>", 10)] == [True, False]


def test_message_id_and_key():
    head = b"From: a@x\r\nMessage-Id:\r\n  <folded@host.example>\r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n"
    assert imapstate.message_id(head) == "<folded@host.example>"
    assert imapstate.message_id(b"MESSAGE-ID: <A@B>\r\n\r\n") == "<A@B>"  # HEADER.FIELDS literal
    assert imapstate.message_id(b"Message-ID: <x@y> (comment)\n\n") == "<x@y>"
    assert imapstate.message_id(b"Message-ID: bare-id\n\n") == "bare-id"
    assert imapstate.message_id(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n") is None
    assert imapstate.message_id(b"\r\n") is None
    assert imapstate.message_key(b"Message-ID: <k@x>\r\n\r\nbody") == "<k@x>"
    crlf = imapstate.message_key(b"From: a@x\r\nSubject: no id\r\n\r\nbody\r\n")
    lf = imapstate.message_key(b"From: a@x\nSubject: no id\n\nother body\n")
    assert crlf == lf and crlf.startswith("header-sha256:") and len(crlf) == len("header-sha256:") + 64
    assert imapstate.message_key(b"From: b@x\n\n") != lf


def test_key_of_a_long_header_is_the_same_from_the_message_and_from_header_partial():
    # stored: the message's first bytes (LF), read until the blank line or HEAD_PEEK; after a
    # UIDVALIDITY change: BODY.PEEK[HEADER]<0.2*KEY_HEADER> (CRLF, cut anywhere): one key
    n = imapstate.KEY_HEADER
    lines = b"".join(b"X-Trace-%d: %s\n" % (i, b"t" * 60) for i in range(3000))  # about 3 * KEY_HEADER
    message = b"From: a@x\n" + lines + b"\nbody\n"
    crlf = message.replace(b"\n", b"\r\n")
    key = imapstate.message_key(message)
    assert key == imapstate.message_key(message[: n + 10]) == imapstate.message_key(crlf[: 2 * n])
    assert key == imapstate.HASHED + hashlib.sha256(message[:n]).hexdigest()
    short = b"From: a@x\nSubject: s\n"  # a header, no blank line, no body: the whole message
    assert imapstate.message_key(short) == imapstate.message_key(short.replace(b"\n", b"\r\n"))


def test_matcher_says_which_sizes_need_a_header_read(tmp_path):
    st = FolderState(str(tmp_path), "INBOX")
    st.begin(1)
    st.new([1, 2, 3])
    st.stored([Stored(1, 10, "<a@x>"), Stored(2, 20, "header-sha256:" + "0" * 64), Stored(3, 30, "<c@x>")])
    st.begin(2)
    match = st.matcher()
    assert match.hashed_sizes() == {20}
    assert match.take("header-sha256:" + "0" * 64, 20) and match.hashed_sizes() == set()


@pytest.mark.parametrize(
    "text",
    [
        "garbage\n",
        "pipemail-imap-state 1\nuidvalidity x\nlast 0\nindex 0\n",
        "pipemail-imap-state 1\nuidvalidity 5\nlast 0\n",
        "pipemail-imap-state 1\nuidvalidity 5\nlast 0\nextra 9-3\nindex 0\n",
        "pipemail-imap-state 1\nuidvalidity 5\nlast 0\nindex 0",
    ],
)
def test_unreadable_state_is_a_data_error(tmp_path, text):
    path = tmp_path / (imapstate.folder_stem("INBOX") + ".state")
    path.write_text(text)
    with pytest.raises(DataError) as info:
        FolderState(str(tmp_path), "INBOX")
    assert str(info.value) == ("%s is not a state file pypop can read; move it away to fetch the folder as new" % path)
    assert info.value.exit_code == EX_DATAERR


def test_read_and_write_failures_are_io_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(IOFailure) as info:
        FolderState(str(blocker / "acct"), "INBOX")
    stem = imapstate.folder_stem("INBOX")
    assert str(info.value) == "cannot read %s: Not a directory" % (blocker / "acct" / (stem + ".state"))
    assert info.value.exit_code == EX_IOERR

    st = FolderState(str(tmp_path / "acct"), "INBOX")
    st.begin(1)
    st.new([1])
    os.mkdir(st.index_path)
    before = state_text(st)
    with pytest.raises(IOFailure) as info:
        st.stored([Stored(1, 5, "<1@x>")])
    assert str(info.value) == "cannot write %s: Is a directory" % st.index_path
    assert state_text(st) == before  # the state does not move past what the index holds


def test_bad_uidvalidity(tmp_path):
    with pytest.raises(DataError, match="UIDVALIDITY 0, not a UIDVALIDITY"):
        FolderState(str(tmp_path), "INBOX").begin(0)


def test_index_is_fsynced_before_the_state_is_renamed(tmp_path):
    """Under strace: the index's fsync (and its directory's, the index being new), then the
    state's temporary file fsynced, renamed over the state, and the directory fsynced."""
    strace = tool("strace")
    script = textwrap.dedent(
        """
        import sys
        from pipemail.imapstate import FolderState, Stored
        st = FolderState(sys.argv[1], "INBOX")
        st.begin(5)
        st.new([1])
        print("MARK", flush=True)
        st.stored([Stored(1, 10, "<1@x>")])
        """
    )
    log = tmp_path / "trace"
    d = tmp_path / "acct"
    subprocess.run(
        [
            strace,
            "-f",
            "-o",
            str(log),
            "-e",
            "trace=openat,write,fsync,rename,renameat,renameat2",
            sys.executable,
            "-c",
            script,
            str(d),
        ],
        check=True,
        capture_output=True,
    )
    lines = log.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if 'write(1, "MARK' in line)
    calls = []
    fds = {}
    for line in lines[start + 1 :]:
        body = line.split(" ", 1)[1].strip()
        if body.startswith("openat("):
            path = body.split('"')[1]
            fd = body.rsplit("= ", 1)[1].split()[0]
            fds[fd] = os.path.basename(path) if not path.endswith("acct") else "DIR"
            if fds[fd].startswith(".tmp-"):
                fds[fd] = "TMP"
        elif body.startswith("fsync("):
            calls.append("fsync " + fds.get(body[6:].split(")")[0], "?").split(".")[-1])
        elif body.startswith("rename"):
            calls.append("rename")
    assert calls == ["fsync index", "fsync DIR", "fsync TMP", "rename", "fsync DIR"], calls


def test_killed_anywhere_nothing_lost_nothing_twice(tmp_path):
    """SIGKILL a process that settles batches at an arbitrary point: the state loads, and what
    is new is exactly what the index does not hold (stored means recorded, once)."""
    script = textwrap.dedent(
        """
        import sys
        from pipemail.imapstate import FolderState, Stored
        st = FolderState(sys.argv[1], "INBOX")
        st.begin(5)
        st.new(range(1, 100001))
        for first in range(1, 100001, 10):
            st.stored([Stored(u, 100 + u, "<%d@x>" % u) for u in range(first, first + 10)])
            print(first, flush=True)
        """
    )
    d = tmp_path / "acct"
    proc = subprocess.Popen([sys.executable, "-c", script, str(d)], stdout=subprocess.PIPE)
    for _ in range(37):
        assert proc.stdout.readline()
    proc.kill()
    proc.wait()
    proc.stdout.close()
    st = FolderState(str(d), "INBOX")
    assert st.begin(5) is None
    with open(st.index_path, "rb") as f:
        recorded = [int(line.split()[1]) for line in f if line.endswith(b"\n")]
    assert len(recorded) >= 370 and recorded == list(range(1, len(recorded) + 1))
    assert st.new(range(1, 100001)) == list(range(len(recorded) + 1, 100001))
