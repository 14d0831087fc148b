"""Fault injection: every command that writes mail, killed (SIGKILL, SIGTERM) at many points by
strace (tests/faults.py), while other writers use the same mbox, dead letter or state file.

After each kill: nothing lost, nothing twice beyond the at-least-once cases the man pages
name, a stale dot-lock broken at once (with a warning), every later run exiting cleanly.
The kill points are few and drawn from a seeded random generator (PIPEMAIL_FAULT_SEED).
"""

import itertools
import os
import re
import signal
import time

import faults
import pop3server
import pytest
from smtp_server import free_port

from pipemail import config, mailbox, pop3, transport

dovecot = pop3server.dovecot


def msg(n, size=0):
    body = b"body of %d\nFrom the start of a line\n" % n + b"".join(
        b"%06d %s\n" % (i, b"x" * 70) for i in range(size // 78)
    )
    return b"From: sender@example.org\nTo: pmtest@example.org\nSubject: message %d\n\n" % n + body


_names = itertools.count()


def put_all(dovecot, messages):
    """Put ``messages`` on the server in this order (Dovecot numbers new files by name).

    Names are never used twice: put again under the names of a round before, six files
    were one message to Dovecot's UIDL, and the kill points aimed at the later ones hit nothing."""
    dovecot.clear(dovecot.user)
    for m in messages:
        i = next(_names)
        dovecot.put(dovecot.user, m, name="%d.M%06dP1.pipemail" % (1700000000 + i, i))
    assert dovecot.count(dovecot.user) == len(messages)


def parsed(path):
    return [body for _from, body in transport.read_mbox(path)] if os.path.exists(path) else []


@pytest.fixture
def pop(dovecot, tmp_path):
    dovecot.clear(dovecot.user)
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PIPEMAIL_PASSWORD": dovecot.password}
    server = "pop3://%s:%d" % (dovecot.host, dovecot.port)
    base = ["--server", server, "--user", dovecot.user, "--tls-trust-file", dovecot.ca_file]

    class Pop:
        def args(self, *args):
            return base + list(args)

        def run(self, run, *args):
            return run("pypop", *self.args(*args), env=env)

        def killed(self, *args, **kw):
            return faults.run_killed("pypop", self.args(*args), env=env, **kw)

        def state(self):
            url = config.split_url(server, kind="pop")
            return pop3.state_paths(dovecot.user, url, env=env)

    Pop.env = env
    return Pop()


def other_writer(kind, run, box, n, home):
    """Another program appends message ``n`` to ``box``: what it wrote (to find it whole later)."""
    tag = b"written by another program (%d)" % n
    if kind == "pymail":
        r = run("pymail", "--transport", "mbox:%s" % box, "-s", "other", "x@example.org", input=tag + b"\n", env=home)
        assert r.returncode == 0, r.stderr
        return tag, r.stderr
    faults.fcntl_append(box, mailbox.mbox_bytes([b"Subject: other\n\n" + tag + b"\n"], "procmail@example.org"))
    return tag, ""


def check_mbox(box, expected, others, stderr):
    """Each expected message whole exactly once; each other writer's message present; a leftover
    torn fragment only where pypop said it left one."""
    got = parsed(box)
    data = open(box, "rb").read()
    for m in expected:
        assert got.count(m) == 1, (m[:60], got.count(m))
    for tag in others:
        assert data.count(tag) == 1
    extra = [g for g in got if g not in expected]
    left = "followed by mail written since: left as it is" in stderr
    assert len(extra) <= len(others) + left, extra


# -- pypop fetch --mbox ------------------------------------------------------------------------


def test_pypop_killed_between_messages_keeps_another_writers_mail(run, pop, dovecot, tmp_path):
    messages = [msg(n) for n in range(3)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    k = pop.killed("fetch", "--mbox", box, call="write", when=3, path=box)  # before the third message
    assert k.killed, k.stderr
    assert parsed(box) == messages[:2]
    pid = int(open(str(box) + ".lock", "rb").read().split(b"\n")[0])  # the dot-lock names its dead owner
    tag, said = other_writer("pymail", run, box, 1, pop.env)
    assert said == "pymail: broke the stale lock %s.lock (its owner, process %d, is gone)\n" % (box, pid)
    r = pop.run(run, "fetch", "--mbox", box)
    assert (r.returncode, r.stderr) == (
        0,
        "pypop: %s: a killed run stored 2 of its 3 messages whole; what follows them is not its own "
        "and is left as it is; the rest is fetched again\n" % box,
    )
    got = parsed(box)
    assert got[:2] == messages[:2] and tag in got[2] and got[3:] == messages[2:]


def test_pypop_killed_before_its_batch_keeps_mail_another_writer_appended(run, pop, dovecot, tmp_path):
    messages = [msg(n) for n in range(3)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    box.write_bytes(mailbox.mbox_bytes([b"Subject: old\n\nthere before\n"], "a@b"))
    kept = box.read_bytes()
    k = pop.killed("fetch", "--mbox", box, call="write", when=1, path=box)  # the record written, not a byte yet
    assert k.killed and box.read_bytes() == kept
    tag, _said = other_writer("fcntl", run, box, 1, pop.env)  # procmail delivers meanwhile
    with_other = box.read_bytes()
    r = pop.run(run, "fetch", "--mbox", box)
    assert r.returncode == 0
    assert box.read_bytes().startswith(with_other)  # the other program's mail intact
    assert r.stderr == (
        "pypop: broke the stale lock %s.lock (its owner, process %d, is gone)\n"
        "pypop: %s: a killed run stored 0 of its 3 messages whole; what follows them is not its own "
        "and is left as it is; the rest is fetched again\n" % (box, _pid(r.stderr), box)
    )
    assert parsed(box)[2:] == messages


def _pid(text):
    m = re.search(r"process (\d+)", text)
    return int(m.group(1)) if m else -1


def test_pypop_torn_message_followed_by_another_writer_is_left_and_fetched_again(run, pop, dovecot, tmp_path):
    messages = [msg(0), msg(1, 200_000), msg(2)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    k = pop.killed("fetch", "--mbox", box, call="write", when=3, path=box)  # mid-way through the big one
    assert k.killed, k.stderr
    torn = os.path.getsize(box)
    assert torn % 4096 == 0 and parsed(box)[0] == messages[0]
    tag, _said = other_writer("pymail", run, box, 1, pop.env)
    before = open(box, "rb").read()
    r = pop.run(run, "fetch", "--mbox", box)
    assert r.returncode == 0, r.stderr
    first_end = len(mailbox.mbox_bytes([messages[0]], "MAILER-DAEMON"))
    assert r.stderr == (
        "pypop: %s holds %d bytes of a message torn by a killed run (from offset %d), followed by mail "
        "written since: left as it is; the message is fetched again\n" % (box, torn - first_end, first_end)
    )
    after = open(box, "rb").read()
    assert after.startswith(before)  # nothing of what was there removed: the other writer's mail intact
    got = parsed(box)
    assert got[0] == messages[0] and messages[1].startswith(got[1][:-1]) and tag in got[2]
    assert got[3:] == messages[1:]  # the torn one fetched again, whole ones not twice


def test_pypop_killed_while_a_second_account_fetches_into_the_same_mbox(run, pop, dovecot, tmp_path):
    """The same mailbox spelled as another server (localhost) is another account to pypop: its own
    state files, the same mbox.  Each keeps its copies; the killed one's torn message is left."""
    messages = [msg(0), msg(1, 200_000), msg(2)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    k = pop.killed("fetch", "--mbox", box, call="write", when=3, path=box)
    assert k.killed, k.stderr
    second = run(
        "pypop",
        *pop.args("--server", "pop3://localhost:%d" % dovecot.port, "fetch", "--mbox", box),
        env=pop.env,
    )
    assert second.returncode == 0 and "broke the stale lock %s.lock" % box in second.stderr
    r = pop.run(run, "fetch", "--mbox", box)
    assert r.returncode == 0 and "followed by mail written since: left as it is" in r.stderr, r.stderr
    got = parsed(box)
    assert got[0] == messages[0] and messages[1].startswith(got[1][:-1])
    assert got[2:] == messages + messages[1:]  # the second account's copies, then the refetched ones


def test_pypop_torn_tail_of_its_own_is_cut_away(run, pop, dovecot, tmp_path):
    messages = [msg(0), msg(1, 200_000), msg(2)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    k = pop.killed("fetch", "--mbox", box, call="write", when=4, path=box)
    assert k.killed, k.stderr
    torn = os.path.getsize(box)
    t0 = time.monotonic()
    r = pop.run(run, "fetch", "--mbox", box)
    assert time.monotonic() - t0 < 5  # the stale dot-lock cost nothing
    first_end = len(mailbox.mbox_bytes([messages[0]], "MAILER-DAEMON"))
    assert r.returncode == 0 and r.stderr == (
        "pypop: broke the stale lock %s.lock (its owner, process %d, is gone)\n"
        "pypop: cut away %d bytes of a message torn by a killed run at the end of %s; it is fetched again\n"
        % (box, _pid(r.stderr), torn - first_end, box)
    )
    assert parsed(box) == messages


def test_pypop_mbox_killed_at_random_points(run, pop, dovecot, tmp_path):
    """SIGKILL or SIGTERM at a write to the mbox, at the rename of the UIDL file, or mid-RETR;
    another writer or none; then a run with --delete stores everything exactly once.

    Every kind of point is hit (in a seeded order), at a write that happens (counted in a dry
    run): a kill point past the last write would test nothing."""
    rng = faults.rng("pypop-mbox")
    messages = [msg(n, rng.choice([0, 300, 9000, 70_000])) for n in range(6)]
    seen, _lock, _pending = pop.state()
    points = ["write", "term", "rename", "retr", rng.choice(["write", "term"])]
    rng.shuffle(points)
    dry = dict(pop.env, XDG_STATE_HOME=str(tmp_path / "dry"))
    put_all(dovecot, messages)
    writes = faults.count_calls(
        "pypop", pop.args("fetch", "--mbox", tmp_path / "dry.mbox"), call="write", env=dry, path=tmp_path / "dry.mbox"
    )
    assert writes >= len(messages), writes  # each message its own writes
    for round_, point in enumerate(points):
        put_all(dovecot, messages)
        box = tmp_path / ("box%d" % round_)
        for f in (seen,):
            if os.path.exists(f):
                os.unlink(f)
        if point == "write":
            k = pop.killed("fetch", "--mbox", box, call="write", when=rng.randint(1, writes), path=box)
        elif point == "term":
            w = rng.randint(1, writes)
            k = pop.killed("fetch", "--mbox", box, call="write", when=w, path=box, sig=signal.SIGTERM)
        elif point == "rename":
            # the pending record's, then the UIDL file's: each after its fsync
            k = pop.killed("fetch", "--mbox", box, "--delete", call="rename", when=rng.randint(1, 2))
        else:  # mid-RETR: among the last reads (the replies come last), counted in a dry run
            total = faults.count_calls("pypop", pop.args("fetch"), call="read", env=dry)
            k = pop.killed("fetch", "--mbox", box, call="read", when=total - rng.randint(4, 12))
        assert k.killed or point == "retr", (point, k.returncode, k.stderr)  # reads vary a little from run to run
        if point == "term":
            assert k.returncode == 143 and os.path.getsize(box) == 0  # tidy: nothing half-written
        others = []
        if rng.random() < 0.7:
            tag, _ = other_writer(rng.choice(["pymail", "fcntl"]), run, box, round_, pop.env)
            others.append(tag)
        t0 = time.monotonic()
        r = pop.run(run, "fetch", "--mbox", box, "--delete")
        assert r.returncode == 0, (point, r.stderr)
        assert time.monotonic() - t0 < 8, point
        check_mbox(box, messages, others, r.stderr)
        assert dovecot.count(dovecot.user) == 0
        assert not os.path.exists(str(box) + ".lock")


def test_pypop_killed_while_pymail_appends_to_the_same_mbox_concurrently(run, pop, dovecot, tmp_path):
    """pymail processes append to the mbox at the same time as a pypop that is killed mid-batch:
    every pymail message whole once, every fetched message whole once after the next run."""
    import subprocess

    from conftest import command_path

    rng = faults.rng("concurrent")
    messages = [msg(n, rng.choice([300, 9000, 70_000])) for n in range(8)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    env = {**os.environ, **pop.env}
    writers = [
        subprocess.Popen(
            command_path("pymail") + ["--transport", "mbox:%s" % box, "-s", "concurrent %d" % i, "x@example.org"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(4)
    ]
    k = pop.killed("fetch", "--mbox", box, "--delete", call="write", when=rng.randint(2, 8), path=box)
    for i, w in enumerate(writers):
        _out, err = w.communicate(b"pymail's message %d\n" % i, timeout=60)
        assert w.returncode == 0, err
        assert re.fullmatch(rb"(pymail: broke the stale lock [^\n]*\n)?", err), err
    r = pop.run(run, "fetch", "--mbox", box, "--delete")
    assert r.returncode == 0, r.stderr
    got = parsed(box)
    for m in messages:
        assert got.count(m) == 1, (m[:70], k.killed, r.stderr)
    for i in range(4):
        mine = [g for g in got if g.endswith(b"\n\npymail's message %d\n" % i)]
        assert len(mine) == 1, (i, r.stderr)
    assert dovecot.count(dovecot.user) == 0


def test_pypop_maildir_killed_at_random_points(run, pop, dovecot, tmp_path):
    """At-least-once: a message delivered into new/ by a run killed before it recorded the
    UIDL comes again (pypop(1)); none is lost."""
    rng = faults.rng("pypop-maildir")
    messages = [msg(n, rng.choice([0, 5000])) for n in range(5)]
    seen, _lock, _pending = pop.state()
    for round_ in range(3):
        put_all(dovecot, messages)
        if os.path.exists(seen):
            os.unlink(seen)
        md = tmp_path / ("md%d" % round_)
        call, when = rng.choice([("rename", rng.randint(1, 5)), ("write", rng.randint(5, 25))])
        k = pop.killed("fetch", "--maildir", md, "--delete", call=call, when=when)
        r = pop.run(run, "fetch", "--maildir", md, "--delete")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        got = [open(md / "new" / n, "rb").read() for n in os.listdir(md / "new")]
        assert set(got) == set(messages) and dovecot.count(dovecot.user) == 0
        assert len(got) == len(messages) or k.killed  # duplicates only from a killed run's batch


def test_pypop_stale_dotlock_of_a_dead_process_is_broken_at_once(run, pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1))
    box = tmp_path / "box"
    pid = faults.dead_pid()
    (tmp_path / "box.lock").write_bytes(b"%d\n" % pid)
    t0 = time.monotonic()
    r = pop.run(run, "fetch", "--mbox", box)
    assert time.monotonic() - t0 < 5
    assert (r.returncode, r.stderr) == (
        0,
        "pypop: broke the stale lock %s.lock (its owner, process %d, is gone)\n" % (box, pid),
    )
    assert parsed(box) == [msg(1)] and not os.path.exists(str(box) + ".lock")


# -- pymail: the dead letter, the mbox transport, --resend ------------------------------------


def _big(n):
    return b"".join(b"line %06d of message %d %s\n" % (i, n, b"y" * 50) for i in range(3000))  # 200 KB


def test_dead_letter_torn_by_a_kill_then_the_next_starts_on_its_own_from_line(run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    dead = home / "dead.letter"
    down = "smtp://127.0.0.1:%d" % free_port()
    env = {"HOME": str(home)}
    k = faults.run_killed(
        "pymail",
        ["--transport", down, "-s", "big", "a@example.org"],
        input=_big(1),
        env=env,
        call="write",
        when=2,
        path=dead,
    )
    assert k.killed, k.stderr
    assert os.path.getsize(dead) % 4096 == 0 and not dead.read_bytes().endswith(b"\n\n")
    r = run("pymail", "--transport", down, "-s", "second", "b@example.org", input=b"second\n", env=env)
    assert r.returncode == 75 and "broke the stale lock %s.lock" % dead in r.stderr
    got = transport.read_mbox(dead)
    assert len(got) == 2 and got[1][0].startswith(b"From ")
    assert b"Subject: second\n" in got[1][1] and got[1][1].endswith(b"\nsecond\n")
    assert b"X-Pipemail-Undelivered-To: b@example.org\n" in got[1][1]


def _old_dead_letter(size):
    """A whole dead letter of exactly ``size`` bytes, as pipemail kept them before X-Pipemail-Length."""
    head = (
        b"From c@example.org Thu Jan  1 00:00:00 1970\nX-Pipemail-Undelivered-To: c@example.org\n"
        b"Date: Thu, 01 Jan 1970 00:00:00 +0000\nMessage-ID: <old@example.org>\nFrom: c@example.org\n"
        b"To: c@example.org\nSubject: old\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
    )
    pad = size - len(head) - 1  # the blank line that ends it
    lines = [b"o" * 69 + b"\n"] * (pad // 70)
    lines.append(b"o" * (pad % 70 - 1) + b"\n" if pad % 70 else b"")
    data = head + b"".join(lines) + b"\n"
    assert len(data) == size
    return data


@pytest.mark.parametrize(
    "before, sent_before",
    [(b"", []), (_old_dead_letter(4096 - 44 - 10), [["c@example.org"]])],
    ids=["torn-in-its-body", "torn-in-pipemails-own-header-lines"],
)
def test_resend_keeps_a_dead_letter_message_torn_by_a_kill_and_sends_the_whole_ones(
    run, smtp_server, tmp_path, before, sent_before
):
    """SIGKILL cannot be held off while a message is kept: the torn one is known by its length
    (X-Pipemail-Length) or by a header block that never ended, and is never sent cut short;
    the whole ones go (one kept by an older pipemail, without the length, too).

    Torn in its body: killed (strace) between two writes.  Torn in pipemail's own header
    lines: pymail's writes end 60 KB or more apart, so there only a write the kernel cut
    short at a page boundary (SIGKILL inside a write) tears it; that is made by cutting
    the file at the page boundary 10 bytes into the line after the From_ line."""
    home = tmp_path / "home"
    home.mkdir()
    dead = home / "dead.letter"
    dead.write_bytes(before)
    down = "smtp://127.0.0.1:%d" % free_port()
    env = {"HOME": str(home)}
    # -r: a From_ line of 44 bytes, so that the second case's cut is 10 bytes into the next line
    args = ["--transport", down, "-r", "a@example.org", "-s", "big", "a@example.org"]
    if before:
        assert run("pymail", *args, input=_big(1), env=env).returncode == 75
        os.truncate(dead, 4096)
    else:
        k = faults.run_killed("pymail", args, input=_big(1), env=env, call="write", when=2, path=dead)
        assert k.killed, k.stderr
        assert os.path.getsize(dead) == mailbox.CHUNK  # the first write done, the second one not
    r = run("pymail", "--transport", down, "-s", "whole", "b@example.org", input=b"whole\n", env=env)
    assert r.returncode == 75
    letters = transport.read_dead_letter(dead)
    assert [letter.torn for letter in letters] == [False] * len(sent_before) + [True, False]
    torn = letters[-2]
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--resend", dead, env=env)
    assert r.returncode == 65, r.stderr
    assert r.stderr.splitlines()[0] == (
        "pymail: message %d in %s was cut short while it was kept (%d of %s bytes; a killed run?): "
        "kept as it is, not sent" % (len(sent_before) + 1, dead, torn.size, torn.length or "?")
    )
    assert [rc for _f, rc, _raw in srv.messages] == sent_before + [["b@example.org"]]  # the whole ones
    assert srv.messages[-1][2].replace(b"\r\n", b"\n").endswith(b"\nwhole\n")
    [left] = transport.read_dead_letter(dead)
    assert left.torn and (left.segments, left.length) == (torn.segments, torn.length)
    r = run("pymail", "--transport", srv.url, "--resend", dead, env=env)  # again: still kept, still not sent
    assert r.returncode == 65 and len(srv.messages) == len(sent_before) + 1
    assert len(transport.read_dead_letter(dead)) == 1


def test_dead_letter_sigterm_waits_until_the_message_is_kept_whole(run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    dead = home / "dead.letter"
    first = b"From x Thu Jan  1 00:00:00 1970\n\nkept\n\n"
    dead.write_bytes(first)
    down = "smtp://127.0.0.1:%d" % free_port()
    for n, when in enumerate((1, 2)):  # at the first write of the message, and in its middle
        k = faults.run_killed(
            "pymail",
            ["--transport", down, "-s", "big %d" % n, "a@example.org"],
            input=_big(n),
            env={"HOME": str(home)},
            call="write",
            when=when,
            path=dead,
            sig=signal.SIGTERM,
        )
        assert k.returncode == 143, k.stderr
        got = transport.read_mbox(dead)
        assert len(got) == n + 2 and got[-1][1].endswith(b"\n\n" + _big(n))  # whole: not lost
        assert b"X-Pipemail-Undelivered-To: a@example.org\n" in got[-1][1]
        assert not os.path.exists(str(dead) + ".lock")


def test_mbox_transport_killed_at_random_points(run, tmp_path):
    rng = faults.rng("mbox-transport")
    box = tmp_path / "out.mbox"
    env = {"HOME": str(tmp_path)}
    sent = []
    for round_ in range(3):
        when = rng.randint(1, 4)
        k = faults.run_killed(
            "pymail",
            ["--transport", "mbox:%s" % box, "-s", "killed %d" % round_, "a@example.org"],
            input=_big(round_),
            env=env,
            call="write",
            when=when,
            path=box,
        )
        if not k.killed:
            sent.append(b"killed %d" % round_)
        if rng.random() < 0.5:
            faults.fcntl_append(box, mailbox.mbox_bytes([b"Subject: plain %d\n\nx\n" % round_], "a@b"))
            sent.append(b"plain %d" % round_)
        r = run(
            "pymail",
            "--transport",
            "mbox:%s" % box,
            "-s",
            "next %d" % round_,
            "a@example.org",
            input=b"next\n",
            env=env,
        )
        assert r.returncode == 0 and re.fullmatch(r"(pymail: broke the stale lock [^\n]*\n)?", r.stderr), r.stderr
        sent.append(b"next %d" % round_)
        got = transport.read_mbox(box)
        assert got[-1][1].endswith(b"\nnext\n") and b"Subject: next %d\n" % round_ in got[-1][1]
    data = box.read_bytes()
    for tag in sent:
        assert data.count(tag) == 1


def test_resend_killed_before_its_rename_loses_nothing(run, smtp_server, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    dead = home / "dead.letter"
    env = {"HOME": str(home)}
    down = "smtp://127.0.0.1:%d" % free_port()
    for n in range(3):
        r = run("pymail", "--transport", down, "-s", "msg %d" % n, "to%d@example.org" % n, input=b"m\n", env=env)
        assert r.returncode == 75
    kept = dead.read_bytes()
    srv = smtp_server()
    for call, sig in (("rename", signal.SIGKILL), ("fsync", signal.SIGKILL)):
        k = faults.run_killed("pymail", ["--transport", srv.url, "--resend", dead], env=env, call=call, when=1, sig=sig)
        assert k.returncode in (-sig, 128 + sig), (call, k.stderr)
        assert dead.read_bytes() == kept  # not rewritten: everything still kept
    assert os.path.exists(str(dead) + ".lock")  # left by the SIGKILL
    r = run("pymail", "--transport", down, "-s", "msg 3", "to3@example.org", input=b"m\n", env=env)
    assert r.returncode == 75 and "pymail: broke the stale lock %s.lock" % dead in r.stderr
    r = run("pymail", "--transport", srv.url, "--resend", dead, env=env)
    assert r.returncode == 0, r.stderr
    assert dead.read_bytes() == b""
    got = sorted({tuple(rc) for _f, rc, _raw in srv.messages})
    assert got == [("to%d@example.org" % n,) for n in range(4)]  # each at least once (pymail(1): --resend)


def test_pymail_killed_mid_data(run, smtp_server, tmp_path):
    """SIGKILL mid-DATA: nothing delivered, nothing kept (the caller still has the message);
    SIGTERM mid-DATA: kept whole in the dead letter (pymail(1)), and --resend delivers it."""
    rng = faults.rng("mid-data")
    home = tmp_path / "home"
    home.mkdir()
    dead = home / "dead.letter"
    env = {"HOME": str(home)}
    srv = smtp_server()
    body = _big(7) * 3  # 600 KB: many sends
    args = ["--transport", srv.url, "-s", "mid-data", "to@example.org"]
    sends = faults.trace_calls("pymail", args, call="sendto", env=env, input=body)
    assert len(srv.messages) == 1
    # the sends that carry the body: DATA was answered 354, the body is on its way
    body_sends = [i + 1 for i, line in enumerate(sends) if re.search(r", (\d{5,}),", line)]
    assert body_sends, sends
    for sig in (signal.SIGKILL, signal.SIGTERM):
        when = rng.choice(body_sends)
        k = faults.run_killed("pymail", args, call="sendto", when=when, sig=sig, env=env, input=body)
        assert k.returncode in (-sig, 128 + sig), k.stderr
        if sig == signal.SIGKILL:
            assert len(srv.messages) == 1  # the server discards a DATA that never ended
            assert not dead.exists()
    kept = transport.read_mbox(dead)
    assert len(kept) == 1 and kept[0][1].endswith(body)
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in kept[0][1]
    r = run("pymail", "--transport", srv.url, "--resend", dead, env=env)
    assert r.returncode == 0, r.stderr
    # SIGTERM lets the send under way finish: when it was the end of DATA, the message arrives twice
    assert len(srv.messages) in (2, 3)
    assert all(m[2].replace(b"\r\n", b"\n").endswith(body) for m in srv.messages)
    assert dead.read_bytes() == b""


def test_pypop_all_killed_mid_append_has_its_torn_tail_cut_too(run, pop, dovecot, tmp_path):
    """--all fetches messages already recorded: a torn one of those is settled all the same."""
    messages = [msg(0), msg(1, 200_000)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    assert pop.run(run, "fetch", "--mbox", box).returncode == 0
    whole = box.read_bytes()
    k = pop.killed("fetch", "--all", "--mbox", box, call="write", when=3, path=box)
    assert k.killed and len(box.read_bytes()) > len(whole) + 4096
    r = pop.run(run, "fetch", "--mbox", box)
    assert r.returncode == 0 and "cut away" in r.stderr, r.stderr
    assert parsed(box) == messages + messages[:1]  # the --all run's first copy stayed whole; nothing new fetched


def test_pypop_write_error_whose_undo_fails_too_says_the_write_error_and_the_next_run_cuts_it(
    run, pop, dovecot, tmp_path
):
    """ENOSPC mid-message, then the ftruncate that undoes it fails (EIO): the line names the mbox and
    the write error (it was a bare "pypop: Input/output error"); the record stays, the next run settles it."""
    import subprocess

    from conftest import command_path, tool

    messages = [msg(0), msg(1, 200_000), msg(2)]
    put_all(dovecot, messages)
    box = tmp_path / "box"
    argv = [tool("strace"), "-f", "-qq", "-o", "/dev/null", "-P", str(box), "-e", "trace=write,ftruncate"]
    argv += ["-e", "inject=write:error=ENOSPC:when=3", "-e", "inject=ftruncate:error=EIO"]
    env = {**os.environ, **pop.env}
    env.pop("PIPEMAIL_DEBUG", None)
    p = subprocess.run(
        argv + command_path("pypop") + pop.args("fetch", "--mbox", str(box)), capture_output=True, env=env
    )
    assert (p.returncode, p.stderr.decode()) == (74, "pypop: cannot write %s: No space left on device\n" % box)
    torn = os.path.getsize(box)
    assert torn > 0 and os.path.exists(pop.state()[2])  # the pending record is kept for the next run
    r = pop.run(run, "fetch", "--mbox", box)
    first_end = len(mailbox.mbox_bytes([messages[0]], "MAILER-DAEMON"))
    assert (r.returncode, r.stderr) == (
        0,
        "pypop: cut away %d bytes of a message torn by a killed run at the end of %s; it is fetched again\n"
        % (torn - first_end, box),
    )
    assert parsed(box) == messages


def test_mbox_transport_write_error_whose_undo_fails_too_still_keeps_the_message(run, tmp_path):
    """ENOSPC mid-append to an mbox: transport, then the ftruncate undoing it fails (EIO): the message
    goes to the dead letter as for any failed write (it was lost, with a bare "pymail: Input/output error")."""
    import subprocess

    from conftest import command_path, tool

    home = tmp_path / "home"
    home.mkdir()
    box = tmp_path / "out.mbox"
    argv = [tool("strace"), "-f", "-qq", "-o", "/dev/null", "-P", str(box), "-e", "trace=write,ftruncate"]
    argv += ["-e", "inject=write:error=ENOSPC:when=2", "-e", "inject=ftruncate:error=EIO"]
    env = {**os.environ, "HOME": str(home)}
    env.pop("PIPEMAIL_DEBUG", None)
    args = ["--transport", "mbox:%s" % box, "-s", "full disk", "a@example.org"]
    p = subprocess.run(argv + command_path("pymail") + args, input=_big(3), capture_output=True, env=env)
    dead = home / "dead.letter"
    assert (p.returncode, p.stderr.decode()) == (
        74,
        "pymail: cannot write mailbox %s: No space left on device\n"
        "pymail: the message is kept in %s for a@example.org (pymail --resend %s sends it again)\n" % (box, dead, dead),
    )
    kept = transport.read_mbox(dead)
    assert len(kept) == 1 and kept[0][1].endswith(b"\n\n" + _big(3))
    r = run(
        "pymail",
        "--transport",
        "mbox:%s" % box,
        "-s",
        "next",
        "a@example.org",
        input=b"next\n",
        env={"HOME": str(home)},
    )
    assert r.returncode == 0, r.stderr
    got = transport.read_mbox(box)  # the torn bytes stay (the undo failed); the next starts on its own From_ line
    assert got[-1][1].endswith(b"\n\nnext\n") and b"Subject: next\n" in got[-1][1]
