"""pysendmail's queue (pipemail/queue.py): durable adds, the maildrop, queue runs against a real
SMTP server (aiosmtpd), backoff, lifetime, dead letters as the owner, concurrency, kill -9."""

import json
import os
import pwd
import stat
import time

import pytest

from pipemail import queue
from pipemail.errors import ConfigError, DataError
from pipemail.queue import Queue

MSG = b"From: a@example.com\nTo: b@example.com\nSubject: hi\nMessage-ID: <1@example.com>\nDate: x\n\nhello\n.dot\n"


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def names(path):
    return sorted(os.listdir(path))


def as_user(fn, user="pmtest"):
    """Run ``fn()`` in a child process as ``user`` (the tests run as root); its exit status
    (0 when ``fn`` returned, 1 and the exception on stderr otherwise)."""
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        code = 0
        try:
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            out = fn()
            os.write(w, json.dumps(out).encode())
        except BaseException as exc:
            os.write(w, json.dumps("error: %s: %s" % (type(exc).__name__, exc)).encode())
            code = 1
        os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), json.loads(data or b"null")


# -- making the queue ---------------------------------------------------------------------


def test_ensure_user_queue_modes(tmp_path):
    q = Queue(tmp_path / "a" / "queue").ensure(system=False)
    assert names(q.path) == ["failed", "q", "tmp"]
    for p in (q.path, q.tmp, q.q, q.failed):
        assert mode(p) == 0o700
    assert mode(tmp_path / "a") == 0o700
    Queue(q.path).ensure()  # idempotent
    assert names(q.path) == ["failed", "q", "tmp"]


def test_ensure_system_queue_modes(tmp_path):
    old = os.umask(0o077)
    try:
        q = Queue(tmp_path / "spool").ensure(system=True)
    finally:
        os.umask(old)
    assert names(q.path) == ["failed", "maildrop", "q", "tmp"]
    assert mode(q.path) == 0o755 and os.stat(q.path).st_uid == 0
    assert mode(q.maildrop) == 0o1733
    assert mode(q.q) == 0o700
    os.chmod(q.maildrop, 0o700)  # repaired by the next ensure
    q.ensure(system=True)
    assert mode(q.maildrop) == 0o1733


def test_ensure_refuses_a_symlink_in_the_way(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "queue")
    with pytest.raises(ConfigError) as info:
        Queue(tmp_path / "queue").ensure()
    assert str(info.value) == "the queue %s is not a directory (a symlink or a file is in the way)" % (
        tmp_path / "queue"
    )
    assert names(tmp_path / "elsewhere") == []


def test_ensure_refuses_a_queue_owned_by_another(tmp_path):
    (tmp_path / "queue").mkdir()
    os.chown(tmp_path / "queue", 1001, 1001)
    with pytest.raises(ConfigError) as info:
        Queue(tmp_path / "queue").ensure()
    assert str(info.value) == "the queue %s is owned by uid 1001, not by this user (uid 0): not used" % (
        tmp_path / "queue"
    )


def test_default_dir(tmp_path):
    from pipemail.config import Config

    assert queue.default_dir(Config("x", queue="/srv/q"), {}, uid=1000) == "/srv/q"
    assert queue.default_dir(Config("x"), {"HOME": "/home/u"}, uid=0) == "/var/spool/pipemail"
    assert queue.default_dir(None, {"HOME": "/home/u"}, uid=1000) == "/home/u/.local/state/pipemail/queue"


# -- adding -------------------------------------------------------------------------------


def test_add_writes_message_and_envelope(tmp_path):
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([MSG[:10], MSG[10:]], "a@example.com", ["b@example.com", "c@example.com"], owner=1001, now=1000.0)
    assert names(q.q) == [qid + ".env", qid + ".msg"]
    assert names(q.tmp) == []
    assert (tmp_path / "queue/q" / (qid + ".msg")).read_bytes() == MSG
    env = json.loads((tmp_path / "queue/q" / (qid + ".env")).read_text())
    assert env == {
        "version": 1,
        "sender": "a@example.com",
        "recipients": ["b@example.com", "c@example.com"],
        "delivered": [],
        "owner": 1001,
        "queued": 1000.0,
        "tries": 0,
        "due": 1000.0,
        "answer": None,
    }
    assert mode(os.path.join(q.q, qid + ".msg")) == 0o600


def test_add_with_an_answer_is_due_after_the_first_backoff(tmp_path):
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([MSG], "a@example.com", ["b@example.com"], answer="421 try later", now=1000.0)
    env = json.loads((tmp_path / "queue/q" / (qid + ".env")).read_text())
    assert (env["tries"], env["due"], env["answer"], env["owner"]) == (1, 1300.0, "421 try later", 0)


def test_ids_sort_by_time_and_are_unique(tmp_path):
    q = Queue(tmp_path / "queue").ensure()
    ids = [q.add([MSG], "a@x", ["b@y"], now=1000.0 + i) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    same = {queue.new_id(5.0) for _ in range(200)}
    assert len(same) == 200


def test_add_fsyncs_before_the_rename(tmp_path):
    """strace: the message and envelope are fsynced before each rename, and q/ after."""
    import shutil
    import subprocess
    import sys

    strace = shutil.which("strace")
    assert strace, "strace is needed (tests/run installs it)"
    Queue(tmp_path / "queue").ensure()
    code = "from pipemail.queue import Queue; print(Queue(%r).add([b'x\\n'], 'a@x', ['b@y']))" % str(tmp_path / "queue")
    proc = subprocess.run(
        [strace, "-f", "-e", "trace=openat,fsync,rename,renameat,renameat2", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    import re

    calls = [re.match(r"(?:\[pid +\d+\] )?(fsync|rename\w*)\(", ln) for ln in proc.stderr.splitlines()]
    lines = [m.string for m in calls if m]
    kinds = ["rename" if m.group(1).startswith("rename") else "fsync" for m in calls if m]
    assert kinds == ["fsync", "fsync", "rename", "rename", "fsync"], lines
    assert ".env" in lines[2] and ".msg" in lines[3]


def test_add_without_recipients_is_refused(tmp_path):
    q = Queue(tmp_path / "queue").ensure()
    with pytest.raises(DataError):
        q.add([MSG], "a@x", [])
    assert names(q.q) == [] and names(q.tmp) == []


def test_add_failing_midway_leaves_nothing(tmp_path):
    q = Queue(tmp_path / "queue").ensure()

    def chunks():
        yield MSG
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        q.add(chunks(), "a@x", ["b@y"])
    assert names(q.q) == [] and names(q.tmp) == []


# -- the maildrop -------------------------------------------------------------------------


@pytest.fixture
def public_dir():
    """A root-owned directory, 0755, that other users can reach (pytest's tmp_path is 0700)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="pipemail-queue-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_drop_as_another_user_and_take_it_as_root(public_dir):
    q = Queue(os.path.join(public_dir, "spool")).ensure(system=True)
    request = {"recipients": ["root"], "read_recipients": True, "sender": None, "user": "pmtest"}
    code, name = as_user(lambda: Queue(q.path).drop([MSG[:5], MSG[5:]], request))
    assert code == 0, name
    st = os.stat(os.path.join(q.maildrop, name))
    assert st.st_uid == pwd.getpwnam("pmtest").pw_uid and mode(os.path.join(q.maildrop, name)) == 0o600
    raw = open(os.path.join(q.maildrop, name), "rb").read()
    assert raw == b"PIPEMAIL-DROP 1 " + json.dumps(request, separators=(",", ":")).encode() + b"\n" + MSG
    # pmtest cannot list the maildrop (1733), nor read what another dropped
    code, out = as_user(lambda: os.listdir(q.maildrop))
    assert code == 1 and "PermissionError" in out
    warnings = []
    got = []
    for d in q.drops(warn=warnings.append):
        got.append((d.name, d.uid, d.request, b"".join(d.chunks), d.size))
        d.remove()
    assert got == [(name, pwd.getpwnam("pmtest").pw_uid, request, MSG, len(MSG))]
    assert warnings == [] and names(q.maildrop) == []


def test_drops_are_taken_oldest_first_and_reiterable(tmp_path):
    q = Queue(tmp_path / "spool").ensure(system=True)
    a = q.drop([b"first\n"], {"n": 1})
    b = q.drop([b"second\n"], {"n": 2})
    assert a < b
    seen = []
    for d in q.drops():
        seen.append((d.request["n"], b"".join(d.chunks), b"".join(d.chunks)))
    assert seen == [(1, b"first\n", b"first\n"), (2, b"second\n", b"second\n")]
    assert names(q.maildrop) == [a, b]  # not removed until remove()


def test_hostile_drops_are_skipped(tmp_path):
    q = Queue(tmp_path / "spool").ensure(system=True)
    secret = tmp_path / "secret"
    secret.write_bytes(b"PIPEMAIL-DROP 1 {}\nroot's secret\n")
    os.symlink(secret, os.path.join(q.maildrop, "A-symlink"))
    os.mkfifo(os.path.join(q.maildrop, "B-fifo"))
    os.mkdir(os.path.join(q.maildrop, "C-dir"))
    os.link(secret, os.path.join(q.maildrop, "D-hardlink"))
    with open(os.path.join(q.maildrop, "E-garbage"), "wb") as f:
        f.write(b"just some bytes\n")
    with open(os.path.join(q.maildrop, "F-notobject"), "wb") as f:
        f.write(b"PIPEMAIL-DROP 1 [1,2]\nx\n")
    good = q.drop([MSG], {"recipients": ["x@y"]})
    warnings = []
    got = [(d.name, b"".join(d.chunks)) for d in q.drops(warn=warnings.append)]
    assert got == [(good, MSG)]
    assert warnings == [
        "skipping A-symlink in the maildrop: a symbolic link",
        "skipping B-fifo in the maildrop: not a regular file",
        "skipping C-dir in the maildrop: not a regular file",
        "skipping D-hardlink in the maildrop: it has 2 links",
        "skipping E-garbage in the maildrop: not a pipemail drop (no PIPEMAIL-DROP 1 line)",
        "skipping F-notobject in the maildrop: its request is not a JSON object",
    ]


def test_drop_being_written_is_left_alone_and_removed_when_stale(tmp_path):
    q = Queue(tmp_path / "spool").ensure(system=True)
    fresh = os.path.join(q.maildrop, ".fresh")
    stale = os.path.join(q.maildrop, ".stale")
    for p in (fresh, stale):
        with open(p, "wb") as f:
            f.write(b"PIPEMAIL-DROP 1 {}\npartial")
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    assert list(q.drops()) == []
    assert names(q.maildrop) == [".fresh"]


def test_a_drop_held_by_another_run_is_skipped(tmp_path):
    import fcntl

    q = Queue(tmp_path / "spool").ensure(system=True)
    a = q.drop([b"a\n"], {})
    b = q.drop([b"b\n"], {})
    fd = os.open(os.path.join(q.maildrop, a), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert [d.name for d in q.drops()] == [b]
    finally:
        os.close(fd)
    assert [d.name for d in q.drops()] == [a, b]


def test_a_drop_removed_by_another_run_after_listing_is_skipped(tmp_path):
    q = Queue(tmp_path / "spool").ensure(system=True)
    a = q.drop([b"a\n"], {})
    b = q.drop([b"b\n"], {})
    it = q.drops()
    first = next(it)
    assert first.name == a
    os.unlink(os.path.join(q.maildrop, b))  # another run took it meanwhile
    assert list(it) == []


# -- queue runs against a real SMTP server (aiosmtpd) --------------------------------------

DEAD_SENDER = "a@example.com"


def message(n, sender="a@example.com", to="b@example.com"):
    return (
        "From: %s\nTo: %s\nSubject: message %d\nDate: Thu, 03 Dec 2026 12:00:00 +0000\n"
        "Message-ID: <%d.queue@example.com>\n\nbody %d\n.a line with a dot\n" % (sender, to, n, n, n)
    ).encode()


def crlf(raw):
    return raw.replace(b"\n", b"\r\n")


def deliverer(url, timeout=10):
    """What pysendmail gives queue.run: one SMTP session for the batch, each message its envelope."""
    from pipemail import transport
    from pipemail.config import split_url

    where = split_url(url, kind="transport")

    def deliver(items):
        return transport.deliver_each(where, items, None, None, timeout=timeout)

    return deliver


def down_url():
    from smtp_server import free_port

    return "smtp://127.0.0.1:%d" % free_port()


class Run:
    """queue.run with its say and warn lines kept."""

    def __init__(self, q, url, env=None):
        self.q, self.url, self.env = q, url, env
        self.said, self.warned = [], []

    def __call__(self, due_only=False, now=None, lifetime=queue.LIFETIME, url=None):
        return queue.run(
            self.q,
            deliverer(url or self.url),
            due_only=due_only,
            now=now,
            lifetime=lifetime,
            say=self.said.append,
            warn=self.warned.append,
            env=self.env,
        )


def envelope(q, qid, where=None):
    return json.loads(open(os.path.join(where or q.q, qid + ".env"), "rb").read())


@pytest.fixture
def dead(tmp_path):
    return str(tmp_path / "dead.letter")


def test_server_down_then_up_each_delivered_once(tmp_path, smtp_server, dead):
    q = Queue(tmp_path / "queue").ensure()
    ids = [
        q.add([message(1)], "a@example.com", ["b@example.com"], now=1000.0),
        q.add([message(2)], "c@example.com", ["d@example.com", "e@example.com"], now=1000.0),
        q.add([message(3)], "", ["f@example.com"], now=1000.0),
    ]
    run = Run(q, down_url(), {"DEAD": dead})
    assert run(due_only=True, now=1001.0) == 75
    assert run.said == [] and run.warned == []
    for qid in ids:
        env = envelope(q, qid)
        assert (env["tries"], env["due"]) == (1, 1301.0)
        assert env["answer"].startswith("cannot connect to 127.0.0.1 port ")
        assert env["answer"].endswith(": Connection refused")
    srv = smtp_server()
    run.url = srv.url
    assert run(due_only=True, now=1100.0) == 0  # not due yet (--run-queue)
    assert srv.messages == [] and srv.ehlo_names == []
    assert run(due_only=True, now=1301.0) == 0
    assert srv.messages == [
        ("a@example.com", ["b@example.com"], crlf(message(1))),
        ("c@example.com", ["d@example.com", "e@example.com"], crlf(message(2))),
        ("<>", ["f@example.com"], crlf(message(3))),
    ]
    assert len(srv.ehlo_names) == 1  # one session for all
    assert run.said == [
        "%s: sent to b@example.com" % ids[0],
        "%s: sent to d@example.com, e@example.com" % ids[1],
        "%s: sent to f@example.com" % ids[2],
    ]
    assert names(q.q) == [] and names(q.failed) == [] and not os.path.exists(dead)
    assert run(due_only=False, now=1400.0) == 0
    assert len(srv.messages) == 3


def test_q_sends_everything_now_and_backoff_doubles(tmp_path, smtp_server, dead):
    assert [queue.backoff(n) for n in range(1, 10)] == [300, 600, 1200, 2400, 4800, 9600, 10800, 10800, 10800]
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1)], "a@example.com", ["b@example.com"], answer="421 4.3.2 busy", now=0.0)
    run = Run(q, down_url(), {"DEAD": dead})
    t, dues = 1.0, []
    for _ in range(8):
        assert run(due_only=False, now=t) == 75  # -q: tried whatever its due time
        env = envelope(q, qid)
        dues.append(env["due"] - t)
        t += 1.0
    assert dues == [600, 1200, 2400, 4800, 9600, 10800, 10800, 10800]
    assert envelope(q, qid)["tries"] == 9
    srv = smtp_server()
    run.url = srv.url
    assert run(due_only=True, now=t) == 0 and srv.messages == []  # --run-queue: not due
    assert run(due_only=False, now=t) == 0
    assert [m[1] for m in srv.messages] == [["b@example.com"]]


def test_mixed_answers_only_4xx_stay_queued(tmp_path, smtp_server, dead):
    from pipemail import transport

    srv = smtp_server()
    srv.rcpt_replies = {"t@example.com": "451 4.3.0 try later", "p@example.com": "550 5.1.1 no such user"}
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1)], "a@example.com", ["ok@example.com", "t@example.com", "p@example.com"], now=0.0)
    run = Run(q, srv.url, {"DEAD": dead})
    assert run(now=10.0) == 75
    assert srv.messages == [("a@example.com", ["ok@example.com"], crlf(message(1)))]
    failed = os.path.join(q.failed, qid + ".msg")
    assert run.said == [
        "%s: failed for p@example.com: RCPT TO:<p@example.com> refused by 127.0.0.1: 550 5.1.1 no such user; "
        "kept in %s and %s" % (qid, failed, dead)
    ]
    env = envelope(q, qid)
    assert (env["recipients"], env["delivered"], env["tries"], env["due"]) == (
        ["t@example.com"],
        ["ok@example.com"],
        1,
        310.0,
    )
    assert env["answer"] == "RCPT TO:<t@example.com> refused by 127.0.0.1: 451 4.3.0 try later"
    fenv = envelope(q, qid, q.failed)
    assert fenv["recipients"] == ["p@example.com"] and "550 5.1.1" in fenv["answer"]
    assert open(failed, "rb").read() == message(1)
    (kept,) = transport.read_dead_letter(dead)
    assert (kept.sender, kept.undelivered, b"".join(kept.segments)) == ("a@example.com", ["p@example.com"], message(1))
    srv.rcpt_replies = {}
    run.said.clear()
    assert run(now=20.0) == 0
    assert srv.messages[1] == ("a@example.com", ["t@example.com"], crlf(message(1)))
    assert run.said == ["%s: sent to ok@example.com, t@example.com" % qid]
    assert names(q.q) == []


def test_5xx_to_data_fails_at_once(tmp_path, smtp_server, dead):
    from pipemail import transport

    srv = smtp_server()
    srv.data_reply = "554 5.6.0 rejected as spam"
    q = Queue(tmp_path / "queue").ensure()
    a = q.add([message(1)], "a@example.com", ["b@example.com", "c@example.com"], now=0.0)
    srv2 = q.add([message(2)], "x@example.com", ["y@example.com"], now=0.0)
    run = Run(q, srv.url, {"DEAD": dead})
    assert run(now=1.0) == 0
    answer = "the message (DATA) refused by 127.0.0.1: 554 5.6.0 rejected as spam"
    assert run.said == [
        "%s: failed for b@example.com, c@example.com: %s; kept in %s and %s"
        % (a, answer, os.path.join(q.failed, a + ".msg"), dead),
        "%s: failed for y@example.com: %s; kept in %s and %s"
        % (srv2, answer, os.path.join(q.failed, srv2 + ".msg"), dead),
    ]
    assert names(q.q) == [] and names(q.failed) == sorted([a + ".env", a + ".msg", srv2 + ".env", srv2 + ".msg"])
    kept = transport.read_dead_letter(dead)
    assert [(k.sender, k.undelivered, b"".join(k.segments)) for k in kept] == [
        ("a@example.com", ["b@example.com", "c@example.com"], message(1)),
        ("x@example.com", ["y@example.com"], message(2)),
    ]
    assert b"X-Pipemail-Undelivered-To: b@example.com, c@example.com\n" in open(dead, "rb").read()


def test_lifetime_moves_to_failed_and_the_dead_letter(tmp_path, dead):
    from pipemail import transport

    q = Queue(tmp_path / "queue").ensure()
    young = q.add([message(1)], "a@example.com", ["b@example.com"], now=1000.0)
    old = q.add([message(2)], "a@example.com", ["c@example.com"], now=0.0)
    run = Run(q, down_url(), {"DEAD": dead})
    assert run(due_only=True, now=3600.0, lifetime=3600) == 75
    failed = envelope(q, old, q.failed)
    assert failed["answer"].startswith("cannot connect to 127.0.0.1")
    assert failed["answer"].endswith(": Connection refused (given up after 1h00m in the queue)")
    assert run.said == [
        "%s: failed for c@example.com: %s; kept in %s and %s"
        % (old, failed["answer"], os.path.join(q.failed, old + ".msg"), dead)
    ]
    assert names(q.q) == [young + ".env", young + ".msg"]
    (kept,) = transport.read_dead_letter(dead)
    assert (kept.undelivered, b"".join(kept.segments)) == (["c@example.com"], message(2))


def test_lifetime_default_is_five_days(tmp_path, dead):
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1)], "a@example.com", ["b@example.com"], now=0.0)
    run = Run(q, down_url(), {"DEAD": dead})
    assert run(now=5 * 86400 - 1.0) == 75 and names(q.failed) == []
    assert run(due_only=True, now=5 * 86400.0) == 0  # past its lifetime: tried though not due, then failed
    assert names(q.failed) == [qid + ".env", qid + ".msg"]
    assert "(given up after 5d00h in the queue)" in run.said[0]


@pytest.fixture
def pmtest_dead_letter():
    """/home/pmtest/dead.letter, put back as it was after the test."""
    pw = pwd.getpwnam("pmtest")
    path = os.path.join(pw.pw_dir, "dead.letter")
    saved = open(path, "rb").read() if os.path.exists(path) else None
    if saved is not None:
        os.unlink(path)
    yield path, pw
    if os.path.exists(path):
        os.unlink(path)
    if saved is not None:
        with open(path, "wb") as f:
            f.write(saved)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def test_dead_letter_of_another_user_is_written_as_that_user(tmp_path, dead, pmtest_dead_letter):
    from pipemail import transport

    path, pw = pmtest_dead_letter
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1)], "pmtest@example.com", ["b@example.com"], owner=pw.pw_uid, now=0.0)
    run = Run(q, down_url(), {"DEAD": dead})
    assert run(now=10.0, lifetime=5) == 0
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (pw.pw_uid, pw.pw_gid, 0o600)
    (kept,) = transport.read_dead_letter(path)
    assert (kept.sender, kept.undelivered, b"".join(kept.segments)) == (
        "pmtest@example.com",
        ["b@example.com"],
        message(1),
    )
    assert run.said[0].endswith("kept in %s and %s" % (os.path.join(q.failed, qid + ".msg"), path))
    assert not os.path.exists(dead)  # root's own dead letter is not used for it


def test_dead_letter_of_another_user_never_written_by_root(tmp_path, dead, pmtest_dead_letter):
    """A dead.letter in pmtest's home that only root could write: the run, writing as pmtest, cannot."""
    path, pw = pmtest_dead_letter
    with open(path, "wb") as f:
        f.write(b"")
    os.chmod(path, 0o600)  # root's, 0600
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1)], "pmtest@example.com", ["b@example.com"], owner=pw.pw_uid, now=0.0)
    run = Run(q, down_url(), {"DEAD": dead})
    assert run(now=10.0, lifetime=5) == 0
    assert open(path, "rb").read() == b""
    failed = os.path.join(q.failed, qid + ".msg")
    assert run.said[0].endswith(
        "; kept in %s (not in a dead letter: cannot write mailbox %s: Permission denied)" % (failed, path)
    ), run.said
    assert open(failed, "rb").read() == message(1)
