"""pypop's RETR reader as a stream, against a small POP3 server on loopback that cuts its replies
anywhere: dot-unstuffing and CRLF made LF across every read boundary, into every sink; and the
client as a context manager that never leaks its socket."""

import io
import os
import socket
import threading

import pytest

from pipemail import config, mailbox, pop3
from pipemail.errors import UnavailableError


def wire(message):
    """A message (LF line ends) as a POP3 server sends it after +OK: CRLF, dot-stuffed, ``.`` line."""
    if not message:
        return b".\r\n"
    lines = message.split(b"\n")
    if message.endswith(b"\n"):
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def received(message):
    """What a client gets of ``message``: a server ends the last line (as Dovecot does)."""
    return message if not message or message.endswith(b"\n") else message + b"\n"


class Server:
    """One POP3 session on 127.0.0.1, in a thread: replies sent in pieces of ``piece`` bytes."""

    def __init__(self, messages=(), piece=None, greeting=b"+OK ready", capa=b"PIPELINING\r\nUIDL\r\n", stls=None):
        self.messages = list(messages)
        self.piece = piece
        self.greeting = greeting
        self.capa = capa
        self.stls = stls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client_closed = threading.Event()
        self.deleted = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self):
        return config.split_url("pop3://127.0.0.1:%d" % self.port, kind="pop")

    def _send(self, conn, data):
        step = self.piece or len(data) or 1
        for i in range(0, len(data), step):
            conn.sendall(data[i : i + step])

    def _serve(self):
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            conn.sendall(self.greeting + b"\r\n")
            buf = b""
            while True:
                while b"\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        self.client_closed.set()
                        return
                    buf += data
                line, buf = buf.split(b"\r\n", 1)
                verb, _, arg = line.partition(b" ")
                verb = verb.upper()
                if verb == b"CAPA":
                    conn.sendall(b"+OK\r\n" + self.capa + b".\r\n")
                elif verb == b"STLS":
                    conn.sendall(self.stls + b"\r\n")
                elif verb == b"UIDL":
                    listing = b"".join(b"%d uid-%d\r\n" % (i, i) for i in range(1, len(self.messages) + 1))
                    conn.sendall(b"+OK\r\n" + listing + b".\r\n")
                elif verb == b"LIST":
                    listing = b"".join(b"%d %d\r\n" % (i, len(wire(m))) for i, m in enumerate(self.messages, 1))
                    conn.sendall(b"+OK\r\n" + listing + b".\r\n")
                elif verb == b"RETR":
                    self._send(conn, b"+OK message follows\r\n" + wire(self.messages[int(arg) - 1]))
                elif verb == b"DELE":
                    self.deleted.append(int(arg))
                    conn.sendall(b"+OK\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"+OK bye\r\n")
                else:
                    conn.sendall(b"+OK\r\n")


def tricky(width):
    """A message whose lines that start with ``.`` or ``From `` (or are ``.`` alone) begin at every
    offset of a read of ``width`` bytes, with CRLFs split every way; no final newline."""
    lines = [b"Subject: tricky", b""]
    for k in range(2 * width + 4):
        lines += [b"." + b"y" * k, b"From " + b"z" * k, b"..", b".", b"", b">From x", b"x" * k]
    return b"\n".join(lines)


MESSAGES = [b"", b".\n", b"..\n", b"a\n.\n", b"no final newline", b"From me\n\n.\n..\n...\n", b"\n\n"]


def retrieve(server, recv_size):
    with pop3.Client(server.url(), timeout=10) as client:
        client.recv_size = recv_size
        got = []
        for _n, chunks in client.retr_many(range(1, len(server.messages) + 1)):
            pieces = list(chunks)
            assert all(pieces) and max(map(len, pieces), default=0) <= 2 * recv_size + 3  # bounded reads
            got.append(b"".join(pieces))
        client.quit()
    return got


@pytest.mark.parametrize("recv_size", [1, 2, 3, 4, 5, 7, 64, 4093])
def test_retr_unstuffed_across_every_read_boundary(recv_size):
    messages = [*MESSAGES, tricky(min(recv_size, 70)), *MESSAGES]
    server = Server(messages)
    assert retrieve(server, recv_size) == [received(m) for m in messages]


@pytest.mark.parametrize("piece", [1, 3, 4096, 65537])
def test_retr_sent_in_odd_pieces(piece):
    messages = [tricky(9), b"x" * 300000 + b"\n.\n", *MESSAGES]  # a line longer than a read, then a dot line
    server = Server(messages, piece=piece)
    assert retrieve(server, pop3.RECV) == [received(m) for m in messages]


def test_retr_dot_and_from_lines_around_the_read_size():
    """Lines starting with ``.`` and ``From `` at every offset from RECV-6 to RECV+6 of the reply."""
    size = pop3.RECV
    messages = []
    for offset in range(size - 6, size + 7):
        filler = b"f" * (offset - len(b"+OK message follows\r\n") - 2) + b"\n"  # ".dot" starts at offset
        messages.append(filler + b".dot\nFrom here\n.\n")
    server = Server(messages, piece=size)
    with pop3.Client(server.url(), timeout=10) as client:
        for n, m in enumerate(messages, 1):  # one at a time: each reply starts a read
            ((_n, chunks),) = [(n, b"".join(c)) for n, c in client.retr_many([n])]
            assert chunks == m
        client.quit()


def test_a_partly_read_message_is_skipped_whole():
    messages = [b"one\n" * 100000, b"two\n"]
    server = Server(messages)
    with pop3.Client(server.url(), timeout=10) as client:
        client.recv_size = 1000
        got = []
        for n, chunks in client.retr_many([1, 2]):
            got.append(next(chunks) if n == 1 else b"".join(chunks))  # the rest of the first is dropped
        assert messages[0].startswith(got[0]) and 0 < len(got[0]) <= 2000
        assert got[1] == b"two\n"


def fetch_into(sink, server, tmp_path, recv_size):
    with pop3.Client(server.url(), timeout=10) as client:
        client.recv_size = recv_size
        stored, skipped = pop3.fetch(client, sink, str(tmp_path / "state.uidl"))
        client.quit()
    return stored, skipped


FETCHED = [tricky(11), b"Return-Path: <me@example.org>\nSubject: two\n\nFrom the start\n.\n", b"From x\n"]


@pytest.mark.parametrize("recv_size", [1, 5, 4093])
def test_fetch_mbox_quoted_across_read_boundaries(tmp_path, recv_size):
    box = tmp_path / "inbox"
    sink = pop3.MboxSink(str(box), str(tmp_path / "pending"), str(tmp_path / "state.uidl"))
    assert fetch_into(sink, Server(FETCHED), tmp_path, recv_size) == (3, 0)
    with open(box, "rb") as f:
        got = [(line, b"".join(chunks)) for line, chunks in mailbox.mbox_messages(f, "inbox")]
    assert [body for _line, body in got] == [received(m) for m in FETCHED]  # mboxrd undone
    assert [line.split()[1] for line, _body in got] == [b"MAILER-DAEMON", b"me@example.org", b"MAILER-DAEMON"]
    assert (tmp_path / "state.uidl").read_bytes() == b"uid-1\nuid-2\nuid-3\n"
    assert not (tmp_path / "pending").exists()


@pytest.mark.parametrize("memory", [0, 100, 1 << 30])
def test_fetch_mbox_spooled_or_held_gives_the_same_bytes(tmp_path, monkeypatch, memory):
    """Held in memory, partly spooled, all spooled: the same mbox (the date of From_ lines aside)."""
    monkeypatch.setattr(pop3, "MEMORY", memory)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    box = tmp_path / "inbox"
    sink = pop3.MboxSink(str(box), str(tmp_path / "pending"), str(tmp_path / "state.uidl"))
    fetch_into(sink, Server(FETCHED), tmp_path, 4093)
    data = box.read_bytes()
    expected = b"".join(mailbox.mbox_bytes([received(m)], pop3._sender(m)) for m in FETCHED)
    cut = [line[:14] if line.startswith(b"From ") else line for line in data.split(b"\n")]
    assert cut == [line[:14] if line.startswith(b"From ") else line for line in expected.split(b"\n")]
    assert sorted(os.listdir(tmp_path)) == ["inbox", "state.uidl"]  # no spool file, no lock left


def test_spool_reads_back_what_it_was_given(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with pop3.Spool(memory=10) as spool:
        small = spool.add([b"abc", b"de"])
        big = spool.add([b"x" * 7, b"y" * 9])
        again = spool.add([b"z" * 3])
        assert isinstance(small, list) and not isinstance(big, list)
        assert os.listdir(tmp_path) == []  # unlinked from the start
        got = [b"".join(spool.chunks(h)) for h in (small, big, again, big)]
        assert got == [b"abcde", b"x" * 7 + b"y" * 9, b"zzz", b"x" * 7 + b"y" * 9]  # read again as often
        fd = spool.file.fileno()
        assert os.stat("/proc/self/fd/%d" % fd).st_mode & 0o777 == 0o600
    assert spool.file is None


def test_spool_in_an_unwritable_tmpdir_is_74(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    with pop3.Spool(memory=1) as spool, pytest.raises(pop3.IOFailure) as e:
        spool.add([b"xy"])
    assert str(e.value) == "cannot make a spool file in %s: No such file or directory" % (tmp_path / "missing")
    assert e.value.exit_code == 74


@pytest.mark.parametrize("recv_size", [1, 5, 4093])
def test_fetch_maildir_streamed(tmp_path, recv_size):
    md = tmp_path / "Maildir"
    fetch_into(pop3.MaildirSink(str(md)), Server(FETCHED), tmp_path, recv_size)
    names = sorted(os.listdir(md / "new"), key=lambda n: int(n.split("Q")[1].split(".")[0]))
    assert [(md / "new" / n).read_bytes() for n in names] == [received(m) for m in FETCHED]
    assert os.listdir(md / "tmp") == []


@pytest.mark.parametrize("recv_size", [1, 4093])
def test_fetch_mda_streamed(tmp_path, recv_size):
    out = tmp_path / "out"
    sink = pop3.MdaSink("cat >> %s" % out)
    fetch_into(sink, Server(FETCHED), tmp_path, recv_size)
    assert out.read_bytes() == b"".join(received(m) for m in FETCHED)


def test_mda_that_stops_reading_is_counted_and_the_session_goes_on(tmp_path):
    warned = []
    big = b"Subject: big\n\n" + b"line\n" * 400000  # 2 MB: more than a pipe holds
    sink = pop3.MdaSink("head -c 10 > %s/one; exit 75" % tmp_path, warn=warned.append)
    server = Server([big])
    with pop3.Client(server.url(), timeout=10) as client, pytest.raises(pop3.TempFailError) as e:
        pop3.fetch(client, sink, str(tmp_path / "state.uidl"))
    assert str(e.value) == "the MDA %r exited 75; the message stays on the server" % sink.command
    (warning,) = warned
    unread = int(warning.split("(")[1].split()[0])
    assert warning == "the MDA %r did not read the whole message (%d of %d bytes unread)" % (
        sink.command,
        unread,
        len(big),
    )
    assert 0 < unread <= len(big) - 10
    assert (tmp_path / "one").read_bytes() == big[:10]


def test_mda_killed_when_the_message_is_torn(tmp_path):
    """The connection fails mid-message: the command never sees the end of its input."""

    def torn():
        yield b"Subject: half\n\n"
        raise pop3.TempFailError("127.0.0.1 closed the connection")

    with pytest.raises(pop3.TempFailError):
        pop3.feed_command("cat > %s/got; echo done > %s/ended" % (tmp_path, tmp_path), torn())
    assert not (tmp_path / "ended").exists()


@pytest.mark.parametrize("recv_size", [1, 4093])
def test_fetch_stdout_streamed(tmp_path, recv_size):
    out = io.BytesIO()
    fetch_into(pop3.StreamSink(out), Server(FETCHED), tmp_path, recv_size)
    got = [b"".join(chunks) for _line, chunks in mailbox.mbox_messages(io.BytesIO(out.getvalue()), "-")]
    assert got == [received(m) for m in FETCHED]


# -- the client as a context manager --------------------------------------------------------


def test_failed_greeting_closes_the_socket():
    server = Server(greeting=b"-ERR [SYS/PERM] go away")
    with pytest.raises(UnavailableError) as e:
        pop3.Client(server.url(), timeout=10)
    assert str(e.value) == "greeting refused by 127.0.0.1: -ERR [SYS/PERM] go away"
    assert server.client_closed.wait(5)  # closed at once, while the error (and its frames) still live
    del e


def test_failed_stls_closes_the_socket():
    server = Server(capa=b"STLS\r\n", stls=b"-ERR [SYS/TEMP] no TLS today")
    with pytest.raises(pop3.TempFailError) as e:
        pop3.Client(server.url(), timeout=10)
    assert str(e.value) == "STLS refused by 127.0.0.1: -ERR [SYS/TEMP] no TLS today"
    assert server.client_closed.wait(5)
    del e


def test_with_block_closes_the_socket():
    server = Server([b"a\n"])
    with pytest.raises(KeyError), pop3.Client(server.url(), timeout=10) as client:
        raise KeyError("out")
    assert server.client_closed.wait(5)
    assert client.sock.fileno() == -1
