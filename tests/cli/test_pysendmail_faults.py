"""pysendmail when things go wrong at the worst moment: a SIGTERM after the server took the
message, a server that closes the connection on one queued message, bytes that are not UTF-8 in
an address with the server down, a user holding a lock on the dead letter root's run writes."""

import os
import socket
import subprocess
import sys
import threading
import time

from test_pysendmail import Setup, system_queue  # noqa: F401 (a fixture)

from conftest import command_path


class SlowQuit:
    """A loopback SMTP server that accepts every message (250 to the final dot) and then answers
    QUIT only after ``delay`` seconds; ``messages`` counts the ones it accepted.  A message that
    holds ``poison`` is answered ``421 ... closing connection`` and the connection closed (as a
    provider's content filter does)."""

    def __init__(self, delay=15, poison=None):
        self.poison, self.bodies = poison, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.url = "smtp://127.0.0.1:%d" % self.port
        self.delay, self.messages, self.quits = delay, 0, 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        with conn:
            f = conn.makefile("rb")
            conn.sendall(b"220 slow ESMTP\r\n")
            while True:
                line = f.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-slow\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    body = b""
                    while line and line != b".\r\n":
                        line = f.readline()
                        body += line
                    if self.poison is not None and self.poison in body:
                        conn.sendall(b"421 4.7.0 Try again later, closing connection.\r\n")
                        return
                    self.messages += 1
                    self.bodies.append(body)
                    conn.sendall(b"250 accepted\r\n")
                elif verb == b"QUIT":
                    self.quits += 1
                    time.sleep(self.delay)
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")


def test_sigterm_after_the_server_took_the_message_does_not_queue_it_again(tmp_path):
    """The server said 250 to the final dot; a SIGTERM (a caller's timeout) while pysendmail waits
    for the answer to QUIT must not queue the message: the queue run would send it a second time."""
    srv = SlowQuit()
    s = Setup(tmp_path, srv.url)
    code, err = s.terminated(b"Subject: once only\n\nbody\n", lambda: srv.quits >= 1)
    assert srv.messages == 1  # accepted by the server before the SIGTERM
    assert code != 0 and s.queued() == [], err  # queued: `pysendmail -q` would send it a second time


def test_one_message_the_server_closes_on_does_not_hold_back_the_others(tmp_path, run):
    """Queued: a message the server answers 421 and closes the connection on (the oldest), then
    three others.  Every -q run must still send the three: today each run tries the poison first and
    all the others are answered "closed the connection" without being tried, until they expire."""
    from smtp_server import free_port

    down = "smtp://127.0.0.1:%d" % free_port()
    s = Setup(tmp_path, down)
    env = s.env()
    for subject in (b"POISON", b"one", b"two", b"three"):
        r = run("pysendmail", "-i", "root", input=b"Subject: %s\n\n%s\n" % (subject, subject), env=env)
        assert r.returncode == 0, r.stderr
        time.sleep(0.01)
    assert len(s.queued()) == 4
    srv = SlowQuit(delay=0, poison=b"POISON")
    s.config.write_text(s.config.read_text().replace(down, srv.url))
    for _ in range(2):
        run("pysendmail", "-q", env=env)
    assert srv.messages == 3, [e["answer"] for e in s.queued()]
    assert [e["tries"] for e in s.queued()] == [3]  # only the one it closed on stays: its first try and two runs


def test_a_non_utf8_header_recipient_is_65_and_kept_not_lost(tmp_path, run):
    """-t, a To field holding a byte that is not UTF-8, the server down: the message must be queued
    or kept (65 and the dead letter, as for such an operand); today Envelope.dump cannot encode the
    surrogate, pysendmail exits 70 and the message is neither queued nor kept."""
    from smtp_server import free_port

    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % free_port())
    r = run("pysendmail", "-i", "-t", input=b"Subject: bad\nTo: \xc3\n\nimportant body\n", env=s.env())
    assert r.returncode == 65, r.stderr
    assert r.stderr.splitlines()[0] == "pysendmail: not a mail address (not valid UTF-8): \\xc3"
    assert s.queued() == [] and b"important body" in s.dead_letter(), r.stderr


def test_a_lock_the_user_holds_on_their_dead_letter_does_not_hang_roots_run(run, system_queue, monkeypatch):  # noqa: F811 (the fixture)
    """A drop root's run cannot accept goes back to its owner's dead letter, written by a child
    that becomes the owner and takes a *blocking* lockf on ~/dead.letter; the parent waits for it
    with no time limit.  A user who keeps a lock on their own dead letter (any process of theirs
    with fcntl.lockf) hangs root's queue run forever (and, in queue.run's _fail_for, keeps the
    locks of a whole batch of other people's queued messages).  The run must give up on the
    dead letter after a while and go on."""
    import pwd

    import unprivileged
    from test_pysendmail import _pmtest_dead_letter, _restore

    from pipemail.queue import Queue

    srv, top, queue_dir = system_queue
    pw = pwd.getpwnam(unprivileged.USER)
    q = Queue(queue_dir)
    base = {"read_recipients": False, "sender": None, "full_name": None, "ignore_dots": True, "user": "x"}
    bad = q.drop([b"Subject: bad\n\nb\n"], {**base, "recipients": ["|cmd"]})
    good = q.drop([b"Subject: innocent\n\nfine\n"], {**base, "recipients": ["root"]})
    for name in (bad, good):
        os.chown(queue_dir / "maildrop" / name, pw.pw_uid, pw.pw_gid)
    dead, size = _pmtest_dead_letter()
    if size is None:
        dead.touch()
        os.chown(dead, pw.pw_uid, pw.pw_gid)
        dead.chmod(0o600)
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(60)",
            str(dead),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert locker.stdout.readline() == b"locked\n"
        monkeypatch.setenv("HOME", str(top))
        started = time.monotonic()
        try:
            r = subprocess.run(command_path("pysendmail") + ["-q"], capture_output=True, timeout=20)
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
    finally:
        locker.kill()
        locker.wait()
        _restore(dead, size)
    assert not hung, "root's pysendmail -q still waiting after %.0f s" % (time.monotonic() - started)
    assert len(srv.messages) == 1, r.stderr
    assert "was still locked or not written after 10 s" in r.stderr.decode()
