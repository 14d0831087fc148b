"""pypop against a real Dovecot on loopback: what is stored, what is deleted, what survives a kill."""

import os
import signal
import socket
import subprocess
import threading
import time

import pop3server
import pytest

from pipemail import mailbox, transport

from conftest import command_path

dovecot = pop3server.dovecot


def msg(n, extra=b""):
    return (
        b"From: sender@example.org\nTo: pmtest@example.org\nSubject: message %d\n\n"
        b"body of %d\nFrom the start of a line\n>From quoted\n" % (n, n)
    ) + extra


@pytest.fixture
def pop(run, dovecot, tmp_path):
    dovecot.clear(dovecot.user)
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PIPEMAIL_PASSWORD": dovecot.password}

    def _pop(*args, password=None, server=None, **kw):
        e = dict(env)
        if password is not None:
            e["PIPEMAIL_PASSWORD"] = password
        srv = server or "pop3://%s:%d" % (dovecot.host, dovecot.port)
        return run(
            "pypop", "--server", srv, "--user", dovecot.user, "--tls-trust-file", dovecot.ca_file, *args, env=e, **kw
        )

    _pop.env = env
    return _pop


def stored(path):
    return [body for _from, body in transport.read_mbox(path)]


def test_fetch_all_then_only_new(pop, dovecot, tmp_path):
    for n in range(3):
        dovecot.put(dovecot.user, msg(n))
    box = tmp_path / "inbox"
    r = pop("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "")  # cron stays quiet
    got = stored(box)
    assert sorted(got) == sorted(msg(n) for n in range(3))  # From lines survive the round trip
    r = pop("fetch", "--mbox", str(box))
    assert r.returncode == 0 and len(stored(box)) == 3  # nothing new
    dovecot.put(dovecot.user, msg(3))
    r = pop("-v", "fetch", "--mbox", str(box))
    assert r.returncode == 0 and len(stored(box)) == 4
    assert "pypop: 1 message fetched" in r.stderr
    assert dovecot.count(dovecot.user) == 4  # kept on the server without --delete


def test_delete_after_storing_and_maildir(pop, dovecot, tmp_path):
    for n in range(5):
        dovecot.put(dovecot.user, msg(n))
    md = tmp_path / "Maildir"
    r = pop("fetch", "--maildir", str(md), "--delete")
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(md / "new")) == 5 and os.listdir(md / "tmp") == []
    assert dovecot.count(dovecot.user) == 0


def test_delete_to_stdout_is_refused(pop, dovecot):
    dovecot.put(dovecot.user, msg(1))
    r = pop("fetch", "--delete")
    assert r.returncode == 64 and "a pipe cannot be flushed to disk" in r.stderr
    assert dovecot.count(dovecot.user) == 1


def test_stdout_mbox_and_commands(pop, dovecot):
    for n in range(2):
        dovecot.put(dovecot.user, msg(n))
    r = pop("stat")
    assert r.returncode == 0 and r.stdout.startswith(b"2 messages, ")
    assert len(pop("list").stdout.splitlines()) == 2 and len(pop("uidl").stdout.splitlines()) == 2
    r = pop("retr", "1")
    assert r.returncode == 0 and r.stdout in (msg(0), msg(1))
    r = pop("fetch")
    assert r.returncode == 0 and r.stdout.count(b"\nFrom MAILER-DAEMON ") + r.stdout.startswith(b"From ") == 2
    assert pop("dele", "1").returncode == 0 and dovecot.count(dovecot.user) == 1


def test_wrong_password_and_server_down(pop, dovecot):
    r = pop("stat", password="not-the-password")
    assert r.returncode == 77 and "not-the-password" not in r.stderr
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    r = pop("stat", server="pop3://127.0.0.1:%d" % free)
    assert r.returncode == 75 and "Connection refused" in r.stderr


def test_pop3s_and_a_redacted_transcript(pop, dovecot):
    dovecot.put(dovecot.user, msg(1))
    r = pop("-v", "stat", server="pop3s://%s:%d" % (dovecot.host, dovecot.ssl_port))
    assert r.returncode == 0, r.stderr
    assert dovecot.password not in r.stderr and "=== TLS started" in r.stderr
    r = pop("-v", "stat")  # STLS on the plain port
    assert r.returncode == 0 and "C: STLS" in r.stderr and dovecot.password not in r.stderr


def test_overlapping_runs(pop, dovecot, tmp_path):
    import fcntl

    from pipemail import config, pop3

    url = config.split_url("pop3://%s:%d" % (dovecot.host, dovecot.port), kind="pop")
    _state, lock_path, _pending = pop3.state_paths(dovecot.user, url, env=pop.env)
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        r = pop("fetch", "--mbox", str(tmp_path / "box"))
    finally:
        os.close(fd)
    assert r.returncode == 75 and "another pypop is fetching" in r.stderr


def test_big_message_and_many(pop, dovecot, tmp_path):
    big = msg(0, b"x" * 75 + b"\n") + (b"y" * 999 + b"\n") * 20_000
    dovecot.put(dovecot.user, big)
    for n in range(1, 1000):
        dovecot.put(dovecot.user, msg(n))
    box = tmp_path / "box"
    r = pop("fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0, r.stderr
    got = stored(box)
    assert len(got) == 1000 and big in got
    assert dovecot.count(dovecot.user) == 0


def test_sigkill_mid_fetch_loses_nothing(pop, dovecot, tmp_path):
    for n in range(600):
        dovecot.put(dovecot.user, msg(n, b"z" * 5000 + b"\n"))
    box = tmp_path / "box"
    env = {**os.environ, **pop.env}
    cmd = command_path("pypop") + [
        "--server",
        "pop3://%s:%d" % (dovecot.host, dovecot.port),
        "--user",
        dovecot.user,
        "--tls-trust-file",
        dovecot.ca_file,
        "fetch",
        "--mbox",
        str(box),
        "--delete",
    ]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline and (not box.exists() or box.stat().st_size < 200_000):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()  # killed mid-fetch, not finished
    assert 0 < len(stored(box)) < 600 or box.stat().st_size > 0
    r = pop("fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0, r.stderr
    got = stored(box)
    assert sorted(set(got)) == sorted(msg(n, b"z" * 5000 + b"\n") for n in range(600))
    assert len(got) == 600  # nothing twice: a half-written tail was cut, recorded ones not fetched again
    assert dovecot.count(dovecot.user) == 0


def test_connection_cut_during_retr(pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1, b"w" * 200_000 + b"\n"))
    relay = socket.socket()
    relay.bind(("127.0.0.1", 0))
    relay.listen(1)

    def serve():
        conn, _ = relay.accept()
        up = socket.create_connection((dovecot.host, dovecot.port))
        sent = 0
        conn.settimeout(1)
        up.settimeout(1)

        def pump_up():
            try:
                while data := conn.recv(65536):
                    up.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump_up, daemon=True).start()
        try:
            while data := up.recv(65536):
                conn.sendall(data)
                sent += len(data)
                if sent > 100_000:  # in the middle of RETR
                    break
        except OSError:
            pass
        conn.close()
        up.close()

    threading.Thread(target=serve, daemon=True).start()
    box = tmp_path / "box"
    r = pop("fetch", "--mbox", str(box), "--delete", server="pop3://127.0.0.1:%d" % relay.getsockname()[1])
    relay.close()
    assert r.returncode == 75 and "closed the connection" in r.stderr
    assert not box.exists() or box.read_bytes() == b""
    assert dovecot.count(dovecot.user) == 1


def test_delete_also_removes_what_an_earlier_run_stored(pop, dovecot, tmp_path):
    for n in range(3):
        dovecot.put(dovecot.user, msg(n))
    box = tmp_path / "box"
    assert pop("fetch", "--mbox", str(box)).returncode == 0  # stored, kept on the server
    assert dovecot.count(dovecot.user) == 3
    r = pop("fetch", "--mbox", str(box), "--delete")
    assert r.returncode == 0 and len(stored(box)) == 3 and dovecot.count(dovecot.user) == 0


@pytest.mark.parametrize(
    "reply,auth,code",
    [
        ("-ERR [AUTH] Authentication failed.", True, 77),
        ("-ERR [IN-USE] Mailbox is locked", True, 75),
        ("-ERR [LOGIN-DELAY] wait", True, 75),
        ("-ERR [SYS/TEMP] try later", False, 75),
        ("-ERR [SYS/PERM] disabled", True, 69),
        ("-ERR no such message", False, 69),
        ("-ERR bad password", True, 77),
    ],
)
def test_response_codes_map_to_exit_codes(reply, auth, code):
    from pipemail.pop3 import _error

    exc = _error("PASS", "pop.example.org", reply, auth)
    assert exc.exit_code == code and str(exc) == "PASS refused by pop.example.org: %s" % reply


def _state(pop, dovecot):
    from pipemail import config, pop3

    url = config.split_url("pop3://%s:%d" % (dovecot.host, dovecot.port), kind="pop")
    return pop3.state_paths(dovecot.user, url, env=pop.env)


def _record(box, before, items):
    """The pending record of a batch that writes ``items`` (``(uid, bytes)``) to ``box`` at ``before``."""

    return mailbox.Pending.plan(str(box), os.stat(box), before, items)


def test_a_killed_runs_record_settles_its_own_mbox(pop, dovecot, tmp_path):
    from pipemail import mailbox

    seen_path, _lock, pending = _state(pop, dovecot)
    os.makedirs(os.path.dirname(pending), exist_ok=True)
    a, b = tmp_path / "a.mbox", tmp_path / "b.mbox"
    kept = b"From x Thu Jan  1 00:00:00 1970\n\nkept\n\n"
    torn = mailbox.mbox_bytes([b"Subject: y\n\n" + b"y" * 9000 + b"\n"], "MAILER-DAEMON")
    a.write_bytes(kept)
    _record(a, len(kept), [("uid-a", torn)]).save(pending)
    with open(a, "ab") as f:
        f.write(torn[: 8192 - len(kept)])  # cut short at a page boundary by a kill
    b.write_bytes(b"From z Thu Jan  1 00:00:00 1970\n\nb's own\n\n")
    dovecot.put(dovecot.user, msg(1))
    r = pop("fetch", "--mbox", str(b))
    assert r.returncode == 0, r.stderr
    assert a.read_bytes() == kept  # its torn tail cut, and nothing else
    assert (
        r.stderr
        == "pypop: cut away %d bytes of a message torn by a killed run at the end of %s; it is fetched again\n"
        % (
            8192 - len(kept),
            a,
        )
    )
    assert b.read_bytes().startswith(b"From z Thu Jan  1 00:00:00 1970\n\nb's own\n\n")
    assert len(stored(b)) == 2 and not os.path.exists(pending)
    assert "uid-a" not in open(seen_path).read()


def test_a_killed_runs_complete_batch_is_recorded_not_fetched_again(pop, dovecot, tmp_path):

    seen_path, _lock, pending = _state(pop, dovecot)
    dovecot.put(dovecot.user, msg(1))
    uid = pop("uidl").stdout.split()[1].decode()
    box = tmp_path / "box"
    data = mailbox.mbox_bytes([msg(1)], "MAILER-DAEMON")
    box.write_bytes(b"")
    os.makedirs(os.path.dirname(pending), exist_ok=True)
    _record(box, 0, [(uid, data)]).save(pending)
    box.write_bytes(data)  # the batch got there; the run died before recording it
    r = pop("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "") and len(stored(box)) == 1  # not twice


def test_all_with_delete_after_an_earlier_fetch(pop, dovecot, tmp_path):
    for n in range(2):
        dovecot.put(dovecot.user, msg(n))
    box = tmp_path / "box"
    assert pop("fetch", "--mbox", str(box)).returncode == 0
    r = pop("fetch", "--all", "--delete", "--mbox", str(box))
    assert r.returncode == 0, r.stderr
    assert len(stored(box)) == 4 and dovecot.count(dovecot.user) == 0


def test_what_only_went_to_stdout_is_never_deleted_on_its_account(pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1))
    assert pop("fetch").returncode == 0  # to a pipe
    r = pop("fetch", "--mbox", str(tmp_path / "box"), "--delete")
    assert r.returncode == 0
    assert dovecot.count(dovecot.user) == 1  # not stored on disk by pypop: left on the server
    r = pop("fetch", "--all", "--mbox", str(tmp_path / "box"), "--delete")
    assert r.returncode == 0 and dovecot.count(dovecot.user) == 0 and len(stored(tmp_path / "box")) == 1


def test_batches_are_bounded_in_count_and_bytes():
    from pipemail.pop3 import BATCH_BYTES, _batches

    todo = [(i, "u%d" % i) for i in range(1, 251)]
    sizes = dict.fromkeys(range(1, 251), 10)
    sizes[5], sizes[6], sizes[7] = BATCH_BYTES + 1, BATCH_BYTES // 2 + 1, BATCH_BYTES // 2 + 1
    assert [len(b) for b in _batches(todo, sizes)] == [4, 1, 1, 100, 100, 44]
    assert [item for b in _batches(todo, sizes) for item in b] == todo


def test_mda_limit_and_max_size(pop, dovecot, tmp_path):
    for n in range(4):
        dovecot.put(dovecot.user, msg(n))
    out = tmp_path / "mda.out"
    r = pop("fetch", "--limit", "2", "--mda", "cat >> %s" % out, "--delete")
    assert r.returncode == 0 and out.read_bytes().count(b"Subject: message") == 2
    assert dovecot.count(dovecot.user) == 2
    r = pop("fetch", "--mda", "exit 1", "--delete")
    assert r.returncode == 69 and "the MDA 'exit 1' exited 1; the message stays on the server" in r.stderr
    assert dovecot.count(dovecot.user) == 2
    dovecot.put(dovecot.user, msg(9, (b"q" * 999 + b"\n") * 5))
    r = pop("fetch", "--max-size", "2", "--mda", "cat >> %s" % out, "--delete")  # 2 KiB
    assert r.returncode == 0 and "over --max-size: left on the server" in r.stderr
    assert dovecot.count(dovecot.user) == 1 and out.read_bytes().count(b"Subject: message") == 4


def test_verbose_names_the_state_files(pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1))
    r = pop("-v", "fetch", "--mbox", str(tmp_path / "box"))
    assert r.returncode == 0, r.stderr
    seen, lock, pending = _state(pop, dovecot)
    lines = r.stderr.splitlines()
    assert "=== UIDL file (what was fetched): %s" % seen in lines
    assert "=== lock: %s" % lock in lines
    assert "=== pending record: %s" % pending in lines
    assert lines.index("=== lock: %s" % lock) < lines.index("C: UIDL")  # said before anything is fetched
    assert os.path.exists(seen) and seen.endswith(
        "/pipemail/pop/%s@%s_%d.uidl" % (dovecot.user, dovecot.host, dovecot.port)
    )


def test_the_next_append_after_a_torn_message_starts_on_its_own_from_line(pop, dovecot, tmp_path):
    box = tmp_path / "box"
    torn = b"From x Thu Jan  1 00:00:00 1970\n\nhalf of a li"  # no pending record: another program's
    box.write_bytes(torn)
    dovecot.put(dovecot.user, msg(1))
    r = pop("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "")
    assert box.read_bytes().startswith(torn + b"\n\nFrom MAILER-DAEMON ")
    assert stored(box) == [b"\nhalf of a li\n", msg(1)]


@pytest.mark.parametrize("kind", ["/dev/null", "fifo"])
def test_an_mbox_that_is_not_a_regular_file_is_refused_and_nothing_recorded(pop, dovecot, tmp_path, kind):
    """--mbox /dev/null or a FIFO cannot be flushed to disk: refused with 73, one line naming it
    (it was "pypop: Invalid argument" or "pypop: Illegal seek", exit 74); nothing recorded or deleted."""
    dovecot.put(dovecot.user, msg(1))
    path = kind
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    r = pop("fetch", "--delete", "--mbox", path)
    assert (r.returncode, r.stderr) == (
        73,
        "pypop: cannot write mailbox %s: not a regular file (a device or pipe cannot be flushed to disk; "
        "fetch without --mbox writes to standard output)\n" % path,
    )
    seen, _lock, pending = _state(pop, dovecot)
    assert not os.path.exists(seen) and not os.path.exists(pending)
    assert dovecot.count(dovecot.user) == 1
    box = tmp_path / "box"
    r = pop("fetch", "--mbox", str(box))
    assert (r.returncode, r.stderr) == (0, "") and stored(box) == [msg(1)]


def _maildir_messages(top):
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((top / sub).iterdir())]


def test_sigkill_mid_maildir_batch_delivers_nothing_twice(pop, dovecot, tmp_path):
    """A Maildir batch names each file in a pending record before its rename into new/: the next
    run records the UIDLs of those found there (one moved to cur/ by a mail reader too)."""
    for n in range(300):
        dovecot.put(dovecot.user, msg(n, b"z" * 5000 + b"\n"))
    top = tmp_path / "Maildir"
    cmd = command_path("pypop") + ["--server", "pop3://%s:%d" % (dovecot.host, dovecot.port)]
    cmd += ["--user", dovecot.user, "--tls-trust-file", dovecot.ca_file, "fetch", "--maildir", str(top), "--delete"]
    proc = subprocess.Popen(cmd, env={**os.environ, **pop.env}, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline and (not (top / "new").exists() or len(os.listdir(top / "new")) < 20):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()  # killed mid-batch, not finished
    first = sorted(os.listdir(top / "new"))
    assert 20 <= len(first) < 300
    os.rename(top / "new" / first[0], top / "cur" / (first[0] + ":2,S"))  # read meanwhile
    r = pop("fetch", "--maildir", str(top), "--delete")
    assert r.returncode == 0, r.stderr
    got = _maildir_messages(top)
    assert len(got) == 300 and sorted(got) == sorted(msg(n, b"z" * 5000 + b"\n") for n in range(300))
    assert dovecot.count(dovecot.user) == 0
    assert not [p for p in (tmp_path / "state").rglob("*") if p.name.endswith("-maildir")]  # record settled


def test_an_mda_failing_midway_does_not_deliver_the_earlier_messages_twice(pop, dovecot, tmp_path):
    for n in range(3):
        dovecot.put(dovecot.user, msg(n))
    out, flag = tmp_path / "out", tmp_path / "flag"
    once = "if [ -e %s ]; then exit 75; fi; cat >> %s; touch %s" % (flag, out, flag)
    r = pop("fetch", "--mda", once, "--delete")
    assert r.returncode == 75 and "exited 75; the message stays on the server" in r.stderr
    r = pop("fetch", "--mda", "cat >> %s" % out, "--delete")
    assert r.returncode == 0, r.stderr
    got = [b"From: sender" + m for m in out.read_bytes().split(b"From: sender")[1:]]
    assert sorted(got) == [msg(0), msg(1), msg(2)]  # each once (in the server's order)
    assert dovecot.count(dovecot.user) == 0
