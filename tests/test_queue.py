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
    assert mode(q.q) == mode(q.failed) == 0o755 and mode(q.tmp) == 0o700  # users list it (mailq)
    os.chmod(q.maildrop, 0o700)  # repaired by the next ensure
    q.ensure(system=True)
    assert mode(q.maildrop) == 0o1733


def test_ensure_refuses_a_symlink_in_the_way(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "queue")
    with pytest.raises(ConfigError) as info:
        Queue(tmp_path / "queue").ensure()
    assert str(info.value) == (
        "the queue %s is not a directory (a symlink or a file is in the way): not used; remove it "
        "(it is made again), or set queue = DIR in the configuration (pipemail.conf(5))" % (tmp_path / "queue")
    )
    assert names(tmp_path / "elsewhere") == []


def test_ensure_refuses_a_queue_owned_by_another(tmp_path):
    (tmp_path / "queue").mkdir()
    os.chown(tmp_path / "queue", 1001, 1001)
    with pytest.raises(ConfigError) as info:
        Queue(tmp_path / "queue").ensure()
    assert str(info.value) == (
        "the queue %s is owned by uid 1001, not by root (uid 0): not used; give it to uid 0 (chown -R 0 %s), "
        "or remove it (it is made again)" % (tmp_path / "queue", tmp_path / "queue")
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
        "account": None,
        "proxy": None,
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
    corrupt = os.path.join(q.path, "corrupt")
    assert warnings == [
        "moved A-symlink from the maildrop to %s: a symbolic link" % corrupt,
        "moved B-fifo from the maildrop to %s: not a regular file" % corrupt,
        "moved C-dir from the maildrop to %s: not a regular file" % corrupt,
        "moved D-hardlink from the maildrop to %s: it has 2 links" % corrupt,
        "moved E-garbage from the maildrop to %s: not a pipemail drop (no PIPEMAIL-DROP 1 line)" % corrupt,
        "moved F-notobject from the maildrop to %s: its request is not a JSON object" % corrupt,
    ]
    # set aside once, as Postfix's pickup does: the next run says nothing (cron mails nothing)
    assert names(q.maildrop) == [good] and mode(corrupt) == 0o700
    assert names(corrupt) == ["A-symlink", "B-fifo", "C-dir", "D-hardlink", "E-garbage", "F-notobject"]
    assert os.readlink(os.path.join(corrupt, "A-symlink")) == str(secret)  # moved, never followed
    assert secret.read_bytes() == b"PIPEMAIL-DROP 1 {}\nroot's secret\n"
    warnings.clear()
    assert [d.name for d in q.drops(warn=warnings.append)] == [good] and warnings == []


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

    def deliver(account, proxy, items):
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


# -- concurrency, kills, leftovers ---------------------------------------------------------

RUNNER = """
import sys
from pipemail import queue, transport
from pipemail.config import split_url

where = split_url(sys.argv[2], kind="transport")


def deliver(account, proxy, items):
    return transport.deliver_each(where, items, None, None, timeout=20)


def warn(line):
    print("warn: " + line, file=sys.stderr, flush=True)


batch = int(sys.argv[3]) if len(sys.argv) > 3 else queue.BATCH
q = queue.Queue(sys.argv[1])
sys.exit(queue.run(q, deliver, due_only=False, say=lambda s: print(s, flush=True), warn=warn, batch=batch))
"""

ADDER = """
import sys
from pipemail.queue import Queue

n = int(sys.argv[2])
raw = (
    "From: a@example.com\\nTo: b@example.com\\nSubject: message %d\\nDate: Thu, 03 Dec 2026 12:00:00 +0000\\n"
    "Message-ID: <%d.queue@example.com>\\n\\nbody %d\\n.a line with a dot\\n" % (n, n, n)
).encode()
print(Queue(sys.argv[1]).add([raw], "a@example.com", ["b%d@example.com" % n]))
"""


def start_run(q, url, batch=queue.BATCH):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, q.path, url, str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def message_ids(srv):
    import re

    return sorted(int(re.search(rb"Message-ID: <(\d+)\.", raw).group(1)) for _, _, raw in srv.messages)


@pytest.mark.parametrize("batch", [queue.BATCH, 1])
def test_two_runs_at_once_send_each_message_once(tmp_path, smtp_server, batch):
    """Batches of 100 (the first run locks all, the other skips them) and of 1 (the runs take
    turns message by message: one opens a message the other is sending, or has just sent)."""
    srv = smtp_server()
    srv.data_delay = 0.01  # each message takes a while: the two runs overlap
    q = Queue(tmp_path / "queue").ensure()
    ids = [q.add([message(n)], "a@example.com", ["b%d@example.com" % n]) for n in range(30)]
    runs = [start_run(q, srv.url, batch), start_run(q, srv.url, batch)]
    outs = [p.communicate(timeout=60) for p in runs]
    if batch == 1:
        assert all(out for out, _ in outs), "the two runs did not overlap: %r" % (outs,)
    assert [p.returncode for p in runs] == [0, 0], outs
    assert [err for _, err in outs] == ["", ""]
    said = [line for out, _ in outs for line in out.splitlines()]
    assert sorted(said) == sorted("%s: sent to b%d@example.com" % (qid, n) for n, qid in enumerate(ids))
    assert message_ids(srv) == list(range(30))
    assert names(q.q) == []


def test_messages_added_during_a_run_are_never_lost(tmp_path, smtp_server):
    import subprocess
    import sys

    srv = smtp_server()
    srv.data_delay = 0.03
    q = Queue(tmp_path / "queue").ensure()
    for n in range(10):
        q.add([message(n)], "a@example.com", ["b%d@example.com" % n])
    run = start_run(q, srv.url)
    adders = [
        subprocess.Popen([sys.executable, "-c", ADDER, q.path, str(n)], stdout=subprocess.PIPE, text=True)
        for n in range(10, 40)
    ]
    added = [p.communicate(timeout=60)[0].strip() for p in adders]
    assert [p.returncode for p in adders] == [0] * 30 and all(added)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0 and err == ""
    again = Run(q, srv.url)
    assert again() == 0
    assert message_ids(srv) == list(range(40))  # each once: the run, or the one after it
    said = out.splitlines() + again.said
    assert len(said) == 40 and len({line.split(":")[0] for line in said}) == 40
    assert names(q.q) == [] and names(q.tmp) == []


class HoldingRelay:
    """A TCP relay to the SMTP server that, once the client has begun the message after DATA,
    passes on half of what it sent and then nothing more: the server saw DATA and part of the
    message, never the final dot.  ``mid_data`` is set then; :meth:`close` hangs up on it."""

    def __init__(self, port):
        import socket
        import threading

        self.target = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.url = "smtp://127.0.0.1:%d" % self.port
        self.mid_data = threading.Event()
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import socket
        import threading

        try:
            client, _ = self.sock.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target))
        self.conns += [client, server]

        def back():
            try:
                while data := server.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        seen = b""
        try:
            while data := client.recv(65536):
                if b"\r\nDATA\r\n" in seen or seen.startswith(b"DATA\r\n"):
                    body = data[: len(data) // 2]
                    assert b"\r\n.\r\n" not in body
                    server.sendall(body)
                    self.mid_data.set()
                    while client.recv(65536):  # the rest is never passed on
                        pass
                    return
                seen += data
                server.sendall(data)
        except OSError:
            pass

    def close(self):
        import socket

        for s in self.conns + [self.sock]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def kill_mid_data(run, relay, srv):
    """SIGKILL the queue run ``run`` (a process) while ``relay`` holds back its message's final dot;
    then the server behind the relay has seen DATA and taken no message."""
    import signal

    try:
        assert relay.mid_data.wait(30), "the run never reached DATA"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
    finally:
        relay.close()
    assert run.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while srv.data_commands < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.data_commands == 1 and srv.messages == []  # the server saw DATA, never the final dot


def test_kill_9_mid_data_keeps_the_message_and_it_is_sent_once_later(tmp_path, smtp_server):

    srv = smtp_server()
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1) * 1], "a@example.com", ["b@example.com"])
    relay = HoldingRelay(srv.port)
    kill_mid_data(start_run(q, relay.url), relay, srv)
    assert names(q.q) == [qid + ".env", qid + ".msg"]
    assert envelope(q, qid)["tries"] == 0
    again = Run(q, srv.url)
    assert again() == 0
    assert srv.messages == [("a@example.com", ["b@example.com"], crlf(message(1)))]
    assert again.said == ["%s: sent to b@example.com" % qid]
    assert again() == 0 and len(srv.messages) == 1


def test_a_message_locked_by_another_run_is_skipped_not_waited_for(tmp_path, smtp_server):
    import fcntl

    srv = smtp_server()
    q = Queue(tmp_path / "queue").ensure()
    held = q.add([message(1)], "a@example.com", ["b@example.com"])
    free = q.add([message(2)], "a@example.com", ["c@example.com"])
    fd = os.open(os.path.join(q.q, held + ".msg"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        run = Run(q, srv.url)
        start = time.monotonic()
        assert run() == 0
        assert time.monotonic() - start < 5
        assert run.said == ["%s: sent to c@example.com" % free]
        assert names(q.q) == [held + ".env", held + ".msg"]
    finally:
        os.close(fd)
    assert run() == 0 and message_ids(srv) == [1, 2]


def test_leftovers_of_kills_are_ignored_and_cleaned_when_stale(tmp_path, smtp_server):
    srv = smtp_server()
    q = Queue(tmp_path / "queue").ensure()
    old = time.time() - 2 * 86400
    for where, name in [
        (q.tmp, "stale.msg"),
        (q.tmp, "fresh.msg"),
        (q.q, "0000000000001-1-AAAAAA.env"),  # an envelope whose message was never renamed in
        (q.q, "0000000000002-1-BBBBBB.env"),
    ]:
        with open(os.path.join(where, name), "wb") as f:
            f.write(b'{"torn')
    os.utime(os.path.join(q.tmp, "stale.msg"), (old, old))
    os.utime(os.path.join(q.q, "0000000000001-1-AAAAAA.env"), (old, old))
    with open(os.path.join(q.q, "0000000000003-1-CCCCCC.msg"), "wb") as f:
        f.write(message(3))  # a message whose envelope is torn
    with open(os.path.join(q.q, "0000000000003-1-CCCCCC.env"), "wb") as f:
        f.write(b'{"sender": "a@exa')
    good = q.add([message(1)], "a@example.com", ["b@example.com"])
    run = Run(q, srv.url)
    assert run() == 0
    assert run.said == ["%s: sent to b@example.com" % good]
    assert run.warned == [
        "0000000000003-1-CCCCCC: no usable envelope (%s is not a queue envelope: "
        "Unterminated string starting at: line 1 column 12 (char 11)); left in the queue"
        % os.path.join(q.q, "0000000000003-1-CCCCCC.env")
    ]
    assert names(q.tmp) == ["fresh.msg"]
    assert names(q.q) == ["0000000000002-1-BBBBBB.env", "0000000000003-1-CCCCCC.env", "0000000000003-1-CCCCCC.msg"]
    assert message_ids(srv) == [1]


def test_a_failing_session_gives_each_message_its_own_recipients(smtp_server):
    """transport: messages with different envelopes in one session; a refused connection
    fails each with its own recipients, per-recipient 4xx and 5xx stay in each Report."""
    from pipemail import transport
    from pipemail.config import split_url
    from pipemail.errors import TempFailError

    msgs = [
        transport.Outgoing([message(1)], len(message(1)), "a@example.com", ["b@example.com"]),
        transport.Outgoing([message(2)], len(message(2)), "c@example.com", ["d@example.com", "e@example.com"]),
    ]
    results = list(transport.deliver_each(split_url(down_url()), msgs, None, None))
    assert [(r, type(e), e.undelivered, e.smtp_code) for r, e in results] == [
        (None, TempFailError, ["b@example.com"], None),
        (None, TempFailError, ["d@example.com", "e@example.com"], None),
    ]
    srv = smtp_server()
    srv.rcpt_replies = {"e@example.com": "452 4.2.2 mailbox full", "b@example.com": "550 5.1.1 unknown"}
    msgs.append(transport.Outgoing([message(3)], len(message(3)), "", ["f@example.com"]))
    results = list(transport.deliver_each(split_url(srv.url), msgs, None, None))
    assert [(r.accepted, r.refused, e) for r, e in results] == [
        ([], {"b@example.com": (550, "RCPT TO:<b@example.com> refused by 127.0.0.1: 550 5.1.1 unknown")}, None),
        (
            ["d@example.com"],
            {"e@example.com": (452, "RCPT TO:<e@example.com> refused by 127.0.0.1: 452 4.2.2 mailbox full")},
            None,
        ),
        (["f@example.com"], {}, None),
    ]
    assert srv.messages == [
        ("c@example.com", ["d@example.com"], crlf(message(2))),
        ("<>", ["f@example.com"], crlf(message(3))),
    ]
    assert len(srv.ehlo_names) == 1
    srv.data_reply = "451 4.3.0 local problem"
    ((report, exc),) = transport.deliver_each(split_url(srv.url), msgs[2:], None, None)
    assert (report, exc.smtp_code, exc.undelivered) == (None, 451, ["f@example.com"])
    assert not queue.permanent(exc)
    srv.data_reply = "554 5.7.1 no"
    ((report, exc),) = transport.deliver_each(split_url(srv.url), msgs[2:], None, None)
    assert (exc.smtp_code, exc.exit_code) == (554, 69) and queue.permanent(exc)


# -- listing (-bp, mailq) ------------------------------------------------------------------


@pytest.fixture
def utc():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_listing_empty(tmp_path):
    q = Queue(tmp_path / "queue").ensure(system=True)
    assert queue.listing(q) == []
    assert queue.format_listing([]) == ["Mail queue is empty"]


def test_listing_in_postfix_mailq_shape(tmp_path, dead, utc):
    """Queued, failed (!), locked by a run (*), dropped; junk in the maildrop is no mail; the
    trailer monitoring scripts written for Postfix's mailq read."""
    import fcntl

    q = Queue(tmp_path / "queue").ensure(system=True)
    a = q.add([message(1)], "a@example.com", ["b@example.com", "c@example.com"], answer="421 4.7.0 busy", now=1400.0)
    b = q.add([message(2)], "", ["d@example.com"], now=2000.0)
    c = q.add([message(3)], "x@example.com", ["y@example.com"], now=0.0)
    Run(q, down_url(), {"DEAD": dead})(due_only=True, now=1500.0, lifetime=1000)  # fails c only
    answer = envelope(q, c, q.failed)["answer"]
    d = q.drop([message(4)], {"recipients": ["root"]})
    os.utime(os.path.join(q.maildrop, d), (9000.0, 9000.0))
    with open(os.path.join(q.maildrop, "0000000000000-1-JUNK"), "wb") as f:
        f.write(b"not a drop\n")
    os.symlink("/etc/passwd", os.path.join(q.maildrop, "0000000000000-2-LINK"))
    held = os.open(os.path.join(q.q, b + ".msg"), os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # a queue run is sending b
        entries = queue.listing(q, now=10000.0)
    finally:
        os.close(held)
    got = [(e.qid, e.state, e.age, e.size, e.sender, e.recipients, e.tries, e.answer, e.locked) for e in entries]
    size = len(message(1))
    dsize = os.path.getsize(os.path.join(q.maildrop, d))
    assert got == [
        (a, "queued", 8600.0, size, "a@example.com", ["b@example.com", "c@example.com"], 1, "421 4.7.0 busy", False),
        (b, "queued", 8000.0, size, "", ["d@example.com"], 0, None, True),
        (c, "failed", 10000.0, size, "x@example.com", ["y@example.com"], 1, answer, False),
        (d, "dropped", 1000.0, dsize, None, [], 0, None, False),
    ]
    reason = "(tried once: %s)" % answer
    assert queue.format_listing(entries) == [
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
        "%s  %8d Thu Jan  1 00:23:20  a@example.com" % (a, size),
        " " * 50 + "(tried once: 421 4.7.0 busy)",  # right-aligned in 78 columns, as Postfix
        " " * 42 + "b@example.com",
        " " * 42 + "c@example.com",
        "",
        "%s* %8d Thu Jan  1 00:33:20  MAILER-DAEMON" % (b, size),
        " " * 42 + "d@example.com",
        "",
        "%s! %8d Thu Jan  1 00:00:00  x@example.com" % (c, size),
        " " * max(78 - len(reason), 0) + reason,
        " " * 42 + "y@example.com",
        "",
        "%s  %8d Thu Jan  1 02:30:00  (maildrop queue, sender UID 0)" % (d, dsize),
        "",
        "-- %d Kbytes in 4 Requests." % ((3 * size + dsize) // 1024),
    ]
    e = queue.Entry("X", "queued", 0, 2048, "a@x", ["b@y"], 3, "451 4.3.0 try\n later", arrival=0.0)
    assert queue.format_listing([e])[2:] == [
        "%s(tried 3 times: 451 4.3.0 try later)" % (" " * (76 - 34)),
        " " * 42 + "b@y",
        "",
        "-- 2 Kbytes in 1 Request.",
    ]


def test_every_user_lists_the_system_queue_but_reads_no_message(public_dir):
    q = Queue(os.path.join(public_dir, "spool")).ensure(system=True)
    assert mode(q.q) == mode(q.failed) == 0o755 and mode(q.tmp) == 0o700
    qid = q.add([message(1)], "a@example.com", ["b@example.com"])
    secret = q.add([message(2)], "a@example.com", ["c@example.com"], proxy="socks5://u:pw@127.0.0.1:9")
    assert mode(os.path.join(q.q, qid + ".env")) == 0o644 and mode(os.path.join(q.q, qid + ".msg")) == 0o600
    assert mode(os.path.join(q.q, secret + ".env")) == 0o600  # its proxy holds a password
    code, out = as_user(lambda: queue.format_listing(queue.listing(Queue(q.path))))
    assert code == 0 and out[1].startswith(qid) and out[2] == " " * 42 + "b@example.com", out
    assert out[-1] == "-- 0 Kbytes in 1 Request."
    code, out = as_user(lambda: open(os.path.join(q.q, qid + ".msg")).read())
    assert code == 1 and "PermissionError" in out
    mine = Queue(os.path.join(public_dir, "mine")).ensure(system=False)  # a user's queue: its owner's alone
    mine.add([message(1)], "a@example.com", ["b@example.com"])
    code, out = as_user(lambda: queue.listing(Queue(mine.path)) and None)
    assert code == 1
    assert out == "error: NoPermError: cannot list the queue %s: Permission denied (only its owner can)" % mine.path


def test_smtputf8_is_decided_per_message(smtp_server):
    """One session, two envelopes: the international one needs SMTPUTF8, the other does not."""
    from pipemail import transport
    from pipemail.config import split_url
    from pipemail.errors import UnavailableError

    srv = smtp_server(smtputf8=False)
    msgs = [
        transport.Outgoing([message(1)], len(message(1)), "a@example.com", ["jörg@example.com"]),
        transport.Outgoing([message(2)], len(message(2)), "a@example.com", ["b@example.com"]),
    ]
    (r1, e1), (r2, e2) = transport.deliver_each(split_url(srv.url), msgs, None, None)
    assert (r1, type(e1), str(e1), e1.undelivered) == (
        None,
        UnavailableError,
        "an address needs SMTPUTF8, which 127.0.0.1 does not offer",
        ["jörg@example.com"],
    )
    assert (r2.accepted, e2) == (["b@example.com"], None)
    srv8 = smtp_server(smtputf8=True)
    results = list(transport.deliver_each(split_url(srv8.url), msgs, None, None))
    assert [r.accepted for r, _ in results] == [["jörg@example.com"], ["b@example.com"]]


# -- pysendmail and its queue, as cron and daemons use them ---------------------------------


class Sendmail:
    """pysendmail with a configuration, a queue and a home of the test's own."""

    def __init__(self, tmp_path, url, name="config.toml", top="", extra=""):
        self.dir = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.queue = Queue(tmp_path / "queue")
        self.config = tmp_path / name
        self.config.write_text(
            top
            + 'queue = "%s"\n[accounts.main]\nfrom = "Alerts <alerts@example.com>"\ntransport = "%s"\ntls = "none"\n'
            'aliases = "/dev/null"\ndomain = "example.com"\n' % (self.queue.path, url) + extra
        )
        self.config.chmod(0o600)

    def env(self):
        full = dict(os.environ)
        full.pop("PIPEMAIL_DEBUG", None)
        full.update({"HOME": str(self.home), "PIPEMAIL_CONFIG": str(self.config), "TMPDIR": str(self.dir)})
        return full

    def popen(self, *args, stdin=None):
        import subprocess

        from conftest import command_path

        return subprocess.Popen(
            command_path("pysendmail") + list(args),
            stdin=subprocess.PIPE if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
        )

    def __call__(self, *args, input=b""):
        p = self.popen(*args)
        out, err = p.communicate(input, timeout=60)
        return p.returncode, out, err.decode()


def cron_message(n):
    return b"From: root (Cron Daemon)\nTo: root\nSubject: job %d\nMessage-ID: <%d.queue@example.com>\n\nout %d\n" % (
        n,
        n,
        n,
    )


def queued_ids(q):
    return sorted(n[:-4] for n in os.listdir(q.q) if n.endswith(".msg"))


@pytest.fixture
def port_later(monkeypatch):
    """A free port now, where smtp_server() starts the server later (the server down, then up)."""
    import smtp_server as module

    port = module.free_port()
    monkeypatch.setattr(module, "free_port", lambda host="127.0.0.1": port)
    return port


def test_pysendmail_server_down_then_up_q_delivers_each_once(tmp_path, smtp_server, port_later):
    s = Sendmail(tmp_path, "smtp://127.0.0.1:%d" % port_later)
    for n, argv in enumerate(
        [["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], ["-i", "-t"], ["-oi", "--", "ops", "dev"]]
    ):
        code, out, err = s(*argv, input=cron_message(n))
        assert (code, out) == (0, b"") and "pysendmail: queued as " in err, err
    ids = queued_ids(s.queue)
    assert len(ids) == 3
    srv = smtp_server()
    assert srv.port == port_later  # the same server, up now
    code, out, err = s("-q")
    assert (code, out) == (0, b""), err
    assert err.splitlines() == [
        "pysendmail: %s: sent to root@example.com" % ids[0],
        "pysendmail: %s: sent to root@example.com" % ids[1],
        "pysendmail: %s: sent to ops@example.com, dev@example.com" % ids[2],
    ]
    assert [(m[0], m[1]) for m in srv.messages] == [
        ("alerts@example.com", ["root@example.com"]),
        ("alerts@example.com", ["root@example.com"]),
        ("alerts@example.com", ["ops@example.com", "dev@example.com"]),
    ]
    assert message_ids(srv) == [0, 1, 2]
    assert len(srv.ehlo_names) == 1  # -q: one SMTP session for them all
    assert queued_ids(s.queue) == []
    assert s("-q") == (0, b"", "") and len(srv.messages) == 3


def test_50_pysendmail_during_a_queue_run_50_delivered_none_twice(tmp_path, smtp_server):
    """While pysendmail -q sends 10 queued messages (slowly), 50 pysendmail calls queue theirs
    (their account's server is down): the run takes some, the next -q the rest; each once."""
    import subprocess

    srv = smtp_server()
    srv.data_delay = 0.05
    callers = Sendmail(tmp_path, down_url(), name="down.toml")
    runner = Sendmail(tmp_path, srv.url)
    for n in range(10):
        assert callers("-i", "root", input=cron_message(n))[0] == 0
    run = runner.popen("-q", stdin=subprocess.DEVNULL)
    calls = [callers.popen("-i", "root") for _ in range(50)]
    results = [p.communicate(cron_message(n), timeout=60) for n, p in zip(range(10, 60), calls, strict=True)]
    assert [p.returncode for p in calls] == [0] * 50, [e for _, e in results if b"queued as" not in e]
    assert all(b"pysendmail: queued as " in err for _, err in results)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    first = len(srv.messages)
    assert first >= 10
    code, out, err2 = runner("-q")
    assert code == 0
    said = err.decode().splitlines() + err2.splitlines()
    assert len(said) == 60 and all(": sent to root@example.com" in line for line in said)
    assert message_ids(srv) == list(range(60))  # 50 (and the 10 before them) delivered, none twice
    assert queued_ids(runner.queue) == [] and names(runner.queue.tmp) == []


def test_kill_9_of_pysendmail_q_mid_data(tmp_path, smtp_server):
    import subprocess

    srv = smtp_server()
    relay = HoldingRelay(srv.port)
    callers = Sendmail(tmp_path, down_url(), name="down.toml")
    through_relay = Sendmail(tmp_path, relay.url, name="relay.toml")
    direct = Sendmail(tmp_path, srv.url)
    assert callers("-i", "root", input=cron_message(7))[0] == 0
    (qid,) = queued_ids(direct.queue)
    kill_mid_data(through_relay.popen("-q", stdin=subprocess.DEVNULL), relay, srv)
    assert queued_ids(direct.queue) == [qid]
    code, out, err = direct("-q")
    assert (code, err) == (0, "pysendmail: %s: sent to root@example.com\n" % qid)
    assert message_ids(srv) == [7]
    assert direct("-q") == (0, b"", "") and message_ids(srv) == [7]


def test_pysendmail_q_gives_up_after_queue_lifetime(tmp_path):
    from pipemail import transport

    s = Sendmail(tmp_path, down_url())
    s.config.write_text("queue_lifetime = 1\n" + s.config.read_text())
    assert s("-i", "root", input=cron_message(1))[0] == 0
    (qid,) = queued_ids(s.queue)
    path = os.path.join(s.queue.q, qid + ".env")  # queued 1.1 s ago (not waited for)
    env = envelope(s.queue, qid)
    env["queued"] -= 1.1
    with open(path, "w") as f:
        json.dump(env, f)
    code, out, err = s("-q")
    failed = os.path.join(s.queue.failed, qid + ".msg")
    dead = s.home / "dead.letter"
    answer = envelope(s.queue, qid, s.queue.failed)["answer"]
    assert answer.endswith(": Connection refused (given up after 1s in the queue)")
    assert (code, out, err) == (
        0,
        b"",
        "pysendmail: %s: failed for root@example.com: %s; kept in %s and %s\n" % (qid, answer, failed, dead),
    )
    (kept,) = transport.read_dead_letter(dead)
    assert (kept.sender, kept.undelivered) == ("alerts@example.com", ["root@example.com"])
    assert b"".join(kept.segments) == open(failed, "rb").read()
    assert queued_ids(s.queue) == []


def test_pysendmail_q_smtputf8_only_for_the_message_that_needs_it(tmp_path, smtp_server):
    """One -q session, a server without SMTPUTF8: the ASCII message goes, the one to an
    international address fails for good (failed/, dead letter) without taking the other along."""
    srv = smtp_server(smtputf8=False)
    s = Sendmail(tmp_path, srv.url)
    s.queue.ensure()
    intl = s.queue.add([message(1)], "alerts@example.com", ["jörg@example.com"])
    plain = s.queue.add([message(2)], "alerts@example.com", ["b@example.com"])
    code, out, err = s("-q")
    assert (code, out) == (0, b"")
    assert err.splitlines() == [
        "pysendmail: %s: failed for jörg@example.com: an address needs SMTPUTF8, which 127.0.0.1 does not offer; "
        "kept in %s and %s" % (intl, os.path.join(s.queue.failed, intl + ".msg"), s.home / "dead.letter"),
        "pysendmail: %s: sent to b@example.com" % plain,
    ]
    assert srv.messages == [("alerts@example.com", ["b@example.com"], crlf(message(2)))]


def test_a_second_failure_of_one_message_gets_its_own_failed_entry(tmp_path, smtp_server, dead):
    from pipemail import transport

    srv = smtp_server()
    srv.rcpt_replies = {"t@example.com": "451 4.3.0 later", "p@example.com": "550 5.1.1 unknown"}
    q = Queue(tmp_path / "queue").ensure()
    qid = q.add([message(1)], "a@example.com", ["t@example.com", "p@example.com"], now=0.0)
    run = Run(q, srv.url, {"DEAD": dead})
    assert run(now=1.0, lifetime=100) == 75
    assert run(now=200.0, lifetime=100) == 0  # t: given up after its lifetime
    assert names(q.q) == []
    assert names(q.failed) == [qid + ".1.env", qid + ".1.msg", qid + ".env", qid + ".msg"]
    assert envelope(q, qid, q.failed)["recipients"] == ["p@example.com"]
    assert envelope(q, qid + ".1", q.failed)["recipients"] == ["t@example.com"]
    assert [k.undelivered for k in transport.read_dead_letter(dead)] == [["p@example.com"], ["t@example.com"]]
    assert [(e.qid, e.state, e.recipients) for e in queue.listing(q)] == [
        (qid + ".1", "failed", ["t@example.com"]),
        (qid, "failed", ["p@example.com"]),
    ]
    assert len(run.said) == 2 and run.said[1].startswith(
        "%s: failed for t@example.com: RCPT TO:<t@example.com> refused by 127.0.0.1: 451 4.3.0 later "
        "(given up after 3m in the queue); kept in %s and %s" % (qid, os.path.join(q.failed, qid + ".1.msg"), dead)
    )


# -- the system queue's parents, and what a user is told when it cannot drop ----------------


def test_the_system_queues_missing_parents_are_made_traversable(tmp_path):
    old = os.umask(0o077)
    try:
        q = Queue(tmp_path / "srv" / "mail" / "pipemail").ensure(system=True)
    finally:
        os.umask(old)
    assert mode(tmp_path / "srv") == 0o755 and mode(tmp_path / "srv" / "mail") == 0o755
    assert mode(q.path) == 0o755 and mode(q.maildrop) == 0o1733
    u = Queue(tmp_path / "home" / "state" / "queue").ensure(system=False)
    assert mode(tmp_path / "home") == 0o700 and mode(tmp_path / "home" / "state") == 0o700 and mode(u.path) == 0o700


def test_a_user_who_cannot_drop_is_told_why_by_errno(public_dir):
    missing = Queue(os.path.join(public_dir, "nothing"))
    code, out = as_user(lambda: missing.drop([MSG], {}))
    assert (code, out) == (
        1,
        "error: CantCreateError: cannot drop the message into %s: No such file or directory "
        "(root's pysendmail -bi, or newaliases, makes it)" % missing.maildrop,
    )
    closed = os.path.join(public_dir, "closed")
    q = Queue(os.path.join(closed, "spool")).ensure(system=True)
    os.chmod(closed, 0o700)
    code, out = as_user(lambda: q.drop([MSG], {}))
    assert (code, out) == (
        1,
        "error: CantCreateError: cannot drop the message into %s: Permission denied (%s is mode 0700: "
        "users cannot pass through it to the maildrop; as root: chmod a+x %s)" % (q.maildrop, closed, closed),
    )
    os.chmod(closed, 0o755)
    os.chmod(q.maildrop, 0o755)
    code, out = as_user(lambda: q.drop([MSG], {}))
    assert (code, out) == (
        1,
        "error: CantCreateError: cannot drop the message into %s: Permission denied "
        "(%s is mode 0755, not 1733: root's pysendmail -bi sets it)" % (q.maildrop, q.maildrop),
    )


# -- each message through the account (and proxy) it was accepted for ------------------------

OTHER = '[accounts.other]\nfrom = "Other <other@other.example>"\ntransport = "smtp://127.0.0.1:%d"\ntls = "none"\n'


def test_pysendmail_q_sends_each_message_through_the_account_it_was_queued_for(tmp_path, smtp_server, monkeypatch):
    import smtp_server as module

    main = smtp_server()
    other_port = module.free_port()
    s = Sendmail(tmp_path, main.url, top='default = "main"\n', extra=OTHER % other_port)
    code, out, err = s("--account", "other", "-i", "x@example.org", input=b"Subject: via other\n\nb\n")
    assert code == 0 and "pysendmail: queued as " in err, err  # other's server is down
    (qid,) = queued_ids(s.queue)
    assert (envelope(s.queue, qid)["account"], envelope(s.queue, qid)["proxy"]) == ("other", None)
    code, out, err = s("-q")
    assert main.messages == []  # never through the default account's server and login
    assert code == 75 and queued_ids(s.queue) == [qid]
    assert envelope(s.queue, qid)["answer"] == "cannot connect to 127.0.0.1 port %d: Connection refused" % other_port
    monkeypatch.setattr(module, "free_port", lambda host="127.0.0.1": other_port)
    other = smtp_server()  # other's server, up now
    code, out, err = s("-q")
    assert (code, err) == (0, "pysendmail: %s: sent to x@example.org\n" % qid)
    assert [(m[0], m[1]) for m in other.messages] == [("other@other.example", ["x@example.org"])]
    assert main.messages == [] and queued_ids(s.queue) == []


def test_pysendmail_q_keeps_the_proxy_the_command_line_gave(tmp_path, smtp_server):
    from smtp_server import free_port

    srv = smtp_server()
    proxy = "socks5://127.0.0.1:%d" % free_port()  # down
    s = Sendmail(tmp_path, srv.url)
    code, out, err = s("--proxy", proxy, "-i", "root", input=cron_message(1))
    assert code == 0 and "pysendmail: queued as " in err, err
    (qid,) = queued_ids(s.queue)
    assert (envelope(s.queue, qid)["account"], envelope(s.queue, qid)["proxy"]) == ("main", proxy)
    code, out, err = s("-q")
    assert srv.messages == []  # not sent around the proxy the caller required
    assert code == 75 and queued_ids(s.queue) == [qid]


def test_a_run_opens_one_session_per_account_and_proxy(tmp_path, dead):
    from pipemail.errors import ConfigError
    from pipemail.transport import Report

    q = Queue(tmp_path / "queue").ensure()
    a1 = q.add([message(1)], "a@example.com", ["x@example.com"], account="a", now=0.0)
    b = q.add([message(2)], "a@example.com", ["y@example.com"], account="b", proxy="socks5://127.0.0.1:9", now=0.0)
    a2 = q.add([message(3)], "a@example.com", ["z@example.com"], account="a", now=0.0)
    none = q.add([message(4)], "a@example.com", ["w@example.com"], now=0.0)
    direct = q.add([message(5)], "a@example.com", ["v@example.com"], account="a", proxy="", now=0.0)
    calls = []

    def deliver(account, proxy, items):
        calls.append((account, proxy, [i.qid for i in items]))
        if account == "b":
            raise ConfigError("account b is no longer configured")
        return iter([(Report(i.recipients), None) for i in items])

    said = []
    run = lambda now, lifetime=queue.LIFETIME: queue.run(  # noqa: E731
        q, deliver, due_only=False, now=now, lifetime=lifetime, say=said.append, warn=said.append, env={"DEAD": dead}
    )
    assert run(1.0) == 75
    assert calls == [
        ("a", None, [a1, a2]),
        ("b", "socks5://127.0.0.1:9", [b]),
        (None, None, [none]),
        ("a", "", [direct]),
    ]
    assert queued_ids(q) == [b]
    env = envelope(q, b)
    assert (env["answer"], env["tries"], env["account"], env["proxy"]) == (
        "account b is no longer configured",
        1,
        "b",
        "socks5://127.0.0.1:9",
    )
    said.clear()
    assert run(100.0, lifetime=50) == 0  # its lifetime is over: failed, kept
    assert queued_ids(q) == [] and envelope(q, b, q.failed)["account"] == "b"
    assert said == [
        "%s: failed for y@example.com: account b is no longer configured (given up after 1m in the queue); "
        "kept in %s and %s" % (b, os.path.join(q.failed, b + ".msg"), dead)
    ]


def test_pysendmail_q_leaves_a_message_of_an_account_no_longer_configured(tmp_path, smtp_server):
    srv = smtp_server()
    s = Sendmail(tmp_path, srv.url)
    s.queue.ensure()
    qid = s.queue.add([message(1)], "a@example.com", ["b@example.com"], account="gone")
    kept = s.queue.add([message(2)], "a@example.com", ["c@example.com"], account="main")
    code, out, err = s("-q")
    assert code == 75
    assert err.splitlines() == [
        "pysendmail: %s: sent to c@example.com" % kept,
        "pysendmail: 1 message stays queued in %s (pysendmail -bp shows the server's last answer)" % s.queue.path,
    ]
    assert envelope(s.queue, qid)["answer"] == "account gone is no longer configured"
    assert [m[1] for m in srv.messages] == [["c@example.com"]]


def test_pysendmail_q_never_sends_through_the_local_sendmail_for_an_account_without_transport(tmp_path, smtp_server):
    # the local sendmail may be pysendmail itself (the README links it there): a queued message of an
    # account that lost its transport stays queued, said why, and is never handed back to sendmail
    srv = smtp_server()
    s = Sendmail(tmp_path, srv.url, extra='[accounts.bare]\nfrom = "b@example.com"\n')
    s.queue.ensure()
    qid = s.queue.add([message(1)], "b@example.com", ["x@example.com"], account="bare")
    code, _out, err = s("-q")
    assert code == 75, err
    assert envelope(s.queue, qid)["answer"] == (
        "account bare has no transport: set one, or the message fails at its lifetime"
    )
    assert srv.messages == []


# -- drop_max_size: what a user may make root copy -------------------------------------------


def test_drop_over_the_limit_stops_writing_and_leaves_nothing(tmp_path):
    q = Queue(tmp_path / "spool", drop_max_size=4096).ensure(system=True)
    read = []

    def chunks():
        for n in range(1000):
            read.append(n)
            yield b"x" * 1000 + b"\n"

    with pytest.raises(DataError) as info:
        q.drop(chunks(), {"recipients": ["root"]})
    assert str(info.value) == "the message is over 4K, the largest a user may drop (drop_max_size): not dropped"
    assert info.value.exit_code == 65
    assert len(read) == 5 and names(q.maildrop) == []  # stopped at the limit, its temporary file gone
    name = q.drop([b"y" * 4096], {})  # at the limit: taken
    assert names(q.maildrop) == [name]
    assert Queue(q.path, drop_max_size=0).drop(chunks(), {})  # 0: no limit


def test_a_sparse_drop_over_the_limit_is_refused_by_its_size_not_read(tmp_path):
    q = Queue(tmp_path / "spool").ensure(system=True)
    assert q.drop_max_size == queue.DROP_MAX_SIZE == 100 << 20
    small = q.drop([MSG], {"recipients": ["root"]})
    path = os.path.join(q.maildrop, "0000000000001-1-SPARSE")
    head = b'PIPEMAIL-DROP 1 {"recipients":["root"]}\n'
    with open(path, "wb") as f:
        f.write(head + b"Subject: sparse\n\n")
        f.truncate(1 << 30)  # 1 GiB, a few blocks on disk
    got = [(d.name, d.size, d.refuse_reason) for d in q.drops()]
    assert got == [
        (
            "0000000000001-1-SPARSE",
            (1 << 30) - len(head),
            "it is %d bytes, over drop_max_size (100M)" % ((1 << 30) - len(head)),
        ),
        (small, len(MSG), None),
    ]


@pytest.fixture
def system_config(smtp_server, monkeypatch):
    """A system-wide file (readable by all) whose queue is a root-owned directory users reach,
    drop_max_size 4K; the server; the top directory."""
    import shutil
    import tempfile
    from pathlib import Path

    srv = smtp_server()
    top = Path(tempfile.mkdtemp(prefix="pipemail-sysq-", dir="/tmp"))
    os.chmod(top, 0o755)
    Queue(top / "queue").ensure(system=True)
    config = top / "config.toml"
    config.write_text(
        'queue = "%s"\ndrop_max_size = "4K"\n[accounts.main]\nfrom = "Alerts <alerts@example.com>"\n'
        'transport = "%s"\ntls = "none"\naliases = "/dev/null"\ndomain = "example.com"\n' % (top / "queue", srv.url)
    )
    config.chmod(0o644)
    monkeypatch.delenv("PIPEMAIL_CONFIG", raising=False)
    monkeypatch.setenv("PIPEMAIL_SYSTEM_CONFIG", str(config))
    monkeypatch.setenv("TMPDIR", "/tmp")
    yield srv, top
    shutil.rmtree(top)


def test_a_user_cannot_drop_a_message_over_drop_max_size(system_config, monkeypatch):
    import unprivileged

    srv, top = system_config
    big = b"Subject: big\n\n" + b"x" * 5000 + b"\n"
    with unprivileged.user_dir() as home:
        monkeypatch.setenv("HOME", home)
        code, out, err = unprivileged.run("sendmail", "-i", "root", input=big, cwd=home, umask=0o022)
        dead = open(os.path.join(home, "dead.letter"), "rb").read()
    assert (code, out) == (65, b"")
    assert err.splitlines()[0] == (
        "pysendmail: the message is over 4K, the largest a user may drop (drop_max_size): not dropped"
    )
    assert b"x" * 5000 in dead  # kept, in the user's own dead letter
    assert names(top / "queue" / "maildrop") == []


def test_root_never_copies_a_drop_over_drop_max_size(system_config, monkeypatch, pmtest_dead_letter):
    """A sparse 1 GiB drop (a few blocks on disk): refused by its size, never read whole nor
    copied; its header block goes back to its owner with the reason, and it is removed."""
    from pipemail import transport

    srv, top = system_config
    dead, pw = pmtest_dead_letter
    maildrop = top / "queue" / "maildrop"
    path = maildrop / "0000000000001-1-SPARSE"
    head = b'PIPEMAIL-DROP 1 {"recipients":["root"]}\n'
    path.write_bytes(head + b"Subject: sparse\nTo: root\n\n")
    os.truncate(path, 1 << 30)
    os.chown(path, pw.pw_uid, -1)
    monkeypatch.setenv("HOME", str(top))
    monkeypatch.setenv("TMPDIR", str(top))  # where root's run would spool a copy
    import subprocess

    from conftest import command_path

    p = subprocess.run(command_path("pysendmail") + ["-q"], capture_output=True, text=True, timeout=60)
    reason = "it is %d bytes, over drop_max_size (4K)" % ((1 << 30) - len(head))
    assert (p.returncode, p.stderr) == (
        0,
        "pysendmail: drop 0000000000001-1-SPARSE from pmtest not accepted: %s; its header returned to %s\n"
        % (reason, dead),
    )
    assert names(top / "queue" / "q") == [] and names(top / "queue" / "tmp") == [] and names(maildrop) == []
    assert sum(os.lstat(top / n).st_blocks for n in os.listdir(top) if os.path.isfile(top / n)) < 64  # no spool copy
    assert srv.messages == []
    (kept,) = transport.read_dead_letter(dead)
    assert kept.undelivered == ["root"]
    assert b"".join(kept.segments).endswith(
        b"Subject: sparse\nTo: root\n\npysendmail: not sent, and its body not kept: %s\n" % reason.encode()
    )
    assert os.path.getsize(dead) < 1024 and os.stat(dead).st_uid == pw.pw_uid


# -- the maildrop of the users who cannot read the system-wide file ---------------------------


def test_root_takes_the_default_maildrop_when_a_secret_config_names_another_queue(
    public_dir, smtp_server, monkeypatch, port_later
):
    """The system-wide file is root's alone (0600: it holds the password) and says queue = DIR:
    users cannot read it, so they drop into /var/spool/pipemail/maildrop (here a stand-in);
    -bi makes that maildrop too, and root's run takes it and sends through DIR."""
    from pipemail import sendmail

    default = os.path.join(public_dir, "var-spool-pipemail")
    monkeypatch.setattr(queue, "SYSTEM_DIR", default)
    config = os.path.join(public_dir, "config.toml")
    configured = os.path.join(public_dir, "spool")
    with open(config, "w") as f:
        f.write(
            'queue = "%s"\n[accounts.main]\nfrom = "Alerts <alerts@example.com>"\ntransport = "%s"\ntls = "none"\n'
            'aliases = "/dev/null"\ndomain = "example.com"\npassword = "secret"\n'
            % (configured, "smtp://127.0.0.1:%d" % port_later)
        )
    os.chmod(config, 0o600)
    env = {"PIPEMAIL_SYSTEM_CONFIG": config, "HOME": public_dir, "TMPDIR": public_dir}
    ctx = sendmail.Context(env=env, uid=0)
    assert sendmail.make_dirs(ctx) == configured
    assert mode(os.path.join(default, "maildrop")) == 0o1733 and mode(os.path.join(configured, "maildrop")) == 0o1733

    def drop():  # as pmtest: the file cannot be read, so the default queue is the one
        q = sendmail.system_queue(env)
        return q.path, q.drop([b"Subject: stranded?\n\nb\n"], {"recipients": ["root@example.org"], "user": "pmtest"})

    code, (where, name) = as_user(drop)  # forked before any thread (the server) runs
    assert (code, where) == (0, default)
    srv = smtp_server()
    said, warned = [], []
    ctx = sendmail.Context(env=env, uid=0, warn=warned.append)
    req = sendmail.Request()
    assert sendmail.run_queue(req, ctx, due_only=True, say=said.append) == 0
    assert [(m[0], m[1]) for m in srv.messages] == [("alerts@example.com", ["root@example.org"])]
    assert names(os.path.join(default, "maildrop")) == [] and warned == []
    assert len(said) == 1 and said[0].endswith(": sent to root@example.org")


def test_the_fallback_maildrop_is_taken_only_when_it_is_roots_directory(public_dir, monkeypatch):
    from pipemail.config import Config

    default = os.path.join(public_dir, "default")
    monkeypatch.setattr(queue, "SYSTEM_DIR", default)
    here = os.path.join(public_dir, "here")
    assert queue.fallback(Config("x", queue=here, system=False)) is None  # a named file: users read it
    assert queue.fallback(Config("x", queue=None, system=True)) is None  # the default queue itself
    assert queue.fallback(Config("x", queue=default, system=True)) is None
    fb = queue.fallback(Config("x", queue=here, system=True))
    assert fb.path == default
    q = Queue(here, fallback=fb).ensure(system=True)
    assert q.maildrops() == [(q.maildrop, "the maildrop")]  # not made: nothing dropped there
    os.makedirs(os.path.join(public_dir, "elsewhere", "maildrop"))
    os.symlink(os.path.join(public_dir, "elsewhere"), default)
    warned = []
    assert q.maildrops(warned.append) == [(q.maildrop, "the maildrop")]
    assert warned == ["skipping the maildrop %s/maildrop: not a directory of this user's" % default]
    os.unlink(default)
    fb.ensure(system=True)
    name = fb.drop([MSG], {"recipients": ["root"]})
    got = [(d.maildrop, d.name) for d in q.drops()]
    assert got == [(fb.maildrop, name)]
    assert [(e.qid, e.state) for e in queue.listing(q)] == [(name, "dropped")]
    for d in q.drops():
        d.remove()
    assert names(fb.maildrop) == []


# -- -bp refuses what sending refuses ----------------------------------------------------------


def test_bp_refuses_a_queue_that_is_a_symlink_or_anothers(tmp_path):
    s = Sendmail(tmp_path, down_url())
    elsewhere = tmp_path / "elsewhere"
    Queue(elsewhere).ensure()
    Queue(elsewhere).add([message(1)], "a@example.com", ["b@example.com"])
    os.symlink(elsewhere, s.queue.path)
    code, out, err = s("-bp")
    assert (code, out) == (78, b"")
    assert err == (
        "pysendmail: the queue %s is not a directory (a symlink or a file is in the way): not used; remove it "
        "(it is made again), or set queue = DIR in the configuration (pipemail.conf(5))\n" % s.queue.path
    )
    assert s("-i", "root", input=cron_message(1))[0] == 78  # as sending refuses it
    os.unlink(s.queue.path)
    Queue(s.queue.path).ensure()
    os.chown(s.queue.path, 1001, 1001)
    code, out, err = s("-bp")
    assert (code, out) == (78, b"")
    assert err == (
        "pysendmail: the queue %s is owned by uid 1001, not by root (uid 0): not used; give it to uid 0 "
        "(chown -R 0 %s), or remove it (it is made again)\n" % (s.queue.path, s.queue.path)
    )


def test_pysendmail_q_without_a_default_account_sends_each_through_its_own(tmp_path, smtp_server):
    """Two accounts and no default: `pysendmail --account other` queues; `pysendmail -q` needs no
    --account to send it (its envelope names the account); one naming none stays queued."""
    srv = smtp_server()
    s = Sendmail(tmp_path, down_url(), extra=OTHER % srv.port)
    s.queue.ensure()
    mine = s.queue.add([message(1)], "other@other.example", ["x@example.org"], account="other")
    none = s.queue.add([message(2)], "a@example.com", ["y@example.org"])
    code, out, err = s("-q")
    assert code == 75
    assert err.splitlines()[0] == "pysendmail: %s: sent to x@example.org" % mine
    assert [(m[0], m[1]) for m in srv.messages] == [("other@other.example", ["x@example.org"])]
    assert queued_ids(s.queue) == [none]
    assert envelope(s.queue, none)["answer"].startswith(
        "%s has several accounts (main, other) and no default" % s.config
    )


def test_a_user_runs_mailq_on_the_system_queue(system_config, monkeypatch):
    import unprivileged

    srv, top = system_config
    q = Queue(top / "queue").ensure(system=True)
    qid = q.add([message(1)], "alerts@example.com", ["admin@example.org"], answer="451 4.3.0 try later")
    with unprivileged.user_dir() as home:
        monkeypatch.setenv("HOME", home)
        code, out, err = unprivileged.run("sendmail", "-bp", cwd=home, umask=0o022)
    assert (code, err) == (0, "")
    lines = out.decode().splitlines()
    assert lines[0] == queue.HEADING and lines[1].startswith(qid + " ")
    assert lines[2].strip() == "(tried once: 451 4.3.0 try later)" and lines[3].strip() == "admin@example.org"
    assert lines[-1] == "-- 0 Kbytes in 1 Request."


@pytest.mark.parametrize(
    "raw, head",
    [
        (b"Subject: a\nTo: b\n\nbody\n", b"Subject: a\nTo: b\n"),
        (b"Subject: a\r\nTo: b\r\n\r\nbody\r\n", b"Subject: a\r\nTo: b\r\n"),
        (b"Subject: a\nno blank line, cut at the last line end", b"Subject: a\n"),
        (b"", b""),
    ],
)
def test_a_drops_head_is_its_header_block(tmp_path, raw, head):
    q = Queue(tmp_path / "spool").ensure(system=True)
    q.drop([raw], {})
    drops = q.drops()
    d = next(drops)  # open while the generator holds it
    assert d.head() == head
