"""Progress bars: drawn on stderr when it is a terminal (a real pty here), never into a pipe."""

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading

import pop3server
import pytest

from pipemail import progress

from conftest import command_path

dovecot = pop3server.dovecot

CLEAR = b"\r\x1b[K"


def on_tty(name, *args, stdin=None, env=None, cwd=None, columns=100):
    """Run a command with stderr on a pty (columns wide; None: never sized, as under script(1)).

    Returns (exit code, stdout bytes, what the terminal got)."""
    master, slave = pty.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    seen = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the slave
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    full_env = {**os.environ, "PIPEMAIL_PROGRESS": "0", "TERM": "xterm", **(env or {})}
    with open(os.devnull, "rb") if stdin is None else open(stdin, "rb") as src:
        proc = subprocess.run(
            command_path(name) + [os.fsdecode(a) for a in args],
            stdin=src,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=full_env,
            cwd=cwd,
            timeout=120,
        )
    os.close(slave)
    reader.join(10)
    os.close(master)
    return proc.returncode, proc.stdout, b"".join(seen)


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    path = tmp_path_factory.mktemp("blob") / "big.bin"
    path.write_bytes(os.urandom(8 * 1024 * 1024))
    return path


def assert_bar(tty, prog, label):
    assert (b"\r" + prog + b": " + label) in tty, tty[:200]
    assert b" 100% [" in tty and b"8.0 MB/8.0 MB" in tty
    assert CLEAR in tty  # and the line is left clean
    frames = [f for f in tty.replace(b"\x1b[K", b"").split(b"\r") if f.startswith(prog + b": " + label)]
    assert frames and all(len(f) < 100 for f in frames)  # within the terminal's 100 columns


def test_pyuuencode_and_pyuudecode_draw_a_bar_on_a_terminal_only(run, blob, tmp_path):
    code, out, tty = on_tty("pyuuencode", blob, "big.bin")
    assert code == 0
    assert_bar(tty, b"pyuuencode", b"big.bin")
    assert tty.startswith(b"\rpyuuencode: big.bin ") and tty.endswith(CLEAR)
    plain = run("pyuuencode", blob, "big.bin", env={"PIPEMAIL_PROGRESS": "0"})
    assert (plain.returncode, plain.stderr, plain.stdout) == (0, "", out)  # stderr a pipe: nothing

    encoded = tmp_path / "big.uue"
    encoded.write_bytes(out)
    code, out, tty = on_tty("pyuudecode", "-o", "-", encoded)
    assert code == 0 and out == blob.read_bytes()
    assert tty.startswith(b"\rpyuudecode: big.uue ") and b" 100% [" in tty and tty.endswith(CLEAR)


def test_a_pty_of_no_size_gets_80_columns(blob):
    code, out, tty = on_tty("pyuuencode", blob, "big.bin", columns=None)
    frames = [f for f in tty.replace(b"\x1b[K", b"").split(b"\r") if f.startswith(b"pyuuencode: big.bin")]
    assert code == 0 and frames and all(len(f) == 79 for f in frames)


def test_never_and_stdin_of_unknown_size(blob):
    code, out, tty = on_tty("pyuuencode", blob, "big.bin", env={"PIPEMAIL_PROGRESS": "never"})
    assert (code, tty) == (0, b"")
    code, out, tty = on_tty("pyuuencode", "big.bin", stdin=blob, env={"TERM": "dumb"})
    assert (code, tty) == (0, b"")
    # a pipe on stdin has no size: bytes and speed, no percentage
    r, w = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(w, blob.read_bytes()[: 1 << 20]), os.close(w)))
    feeder.start()
    code, out, tty = on_tty("pyuuencode", "big.bin", stdin="/dev/fd/%d" % r)
    feeder.join()
    os.close(r)
    assert code == 0 and tty.startswith(b"\rpyuuencode: standard input  ") and b"%" not in tty


def test_pyshar_bar_and_its_messages_on_clean_lines(blob, tmp_path):
    code, out, tty = on_tty("pyshar", "-L", "4000", "-o", tmp_path / "parts", blob.name, cwd=blob.parent)
    assert code == 0
    assert tty.startswith(b"pyshar: saving big.bin (binary)\r\n")  # the pty turns \n into \r\n
    assert_bar(tty, b"pyshar", b"parts ")
    # "wrote N parts" comes after the bar was cleared: on a line of its own
    assert CLEAR + b"pyshar: wrote 3 parts: " in tty


def test_pyunshar_bar_shows_bytes_extracted(run, blob, tmp_path):
    r = run("pyshar", "-q", "-L", "4000", "-o", tmp_path / "p", blob.name, cwd=blob.parent)
    assert r.returncode == 0
    parts = sorted(str(p) for p in tmp_path.glob("p.*"))
    code, out, tty = on_tty("pyunshar", "-d", tmp_path / "out", *parts)
    assert (code, out) == (0, b"x - big.bin\n")
    assert tty.startswith(b"\rpyunshar: extracting into out  ") and b"B/s\x1b[K" in tty and tty.endswith(CLEAR)
    assert (tmp_path / "out" / "big.bin").read_bytes() == blob.read_bytes()


def test_pymail_max_size_shows_packing_then_sending(run, smtp_server, blob, tmp_path):
    srv = smtp_server()
    code, out, tty = on_tty(
        "pymail", "--transport", srv.url, "--max-size", "1M", "-a", blob, "me@example.org", env={"HOME": str(tmp_path)}
    )
    assert code == 0 and len(srv.messages) >= 10
    assert tty.startswith(b"\rpymail: packing big.bin") and b"\rpymail: sending big.bin" in tty
    n = len(srv.messages)
    assert (b"%d/%d parts" % (n, n)) in tty and tty.endswith(CLEAR)


def test_pypop_fetch_bar(dovecot, blob, tmp_path):
    dovecot.clear(dovecot.user)
    data = blob.read_bytes()
    for n in range(8):  # 8 messages of 1 MB of base64 lines
        body = b"\n".join(data[i : i + 57].hex().encode() for i in range(n << 19, (n + 1) << 19, 57))
        dovecot.put(dovecot.user, b"Subject: %d\n\n%s\n" % (n, body[: 1 << 20]))
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PIPEMAIL_PASSWORD": dovecot.password}
    server = "pop3://%s:%d" % (dovecot.host, dovecot.port)
    code, out, tty = on_tty(
        "pypop", "--server", server, "--user", dovecot.user, "--tls-trust-file", dovecot.ca_file, "fetch", env=env
    )
    dovecot.clear(dovecot.user)
    assert code == 0 and out.count(b"\nSubject: ") == 8
    assert tty.startswith(b"\rpypop: 8 messages from 127.0.0.1") and b" 100% [" in tty
    assert tty.endswith(CLEAR + b"pypop: 8 messages fetched\r\n")


def test_bar_text():
    bar = progress.Bar("prog", "label", total=4 << 20, unit="bytes", fd=-1)
    bar.done = 1 << 20
    line = bar.text(now=bar.start + 1, width=80)
    assert line.startswith("prog: label  25% [") and line.endswith("]  1.0 MB/4.0 MB  1.0 MB/s")
    assert len(line) == 79
    parts = progress.Bar("pymail", "sending x", total=25, unit="parts", fd=-1)
    parts.done = 5
    assert parts.text(now=parts.start + 2, width=60).endswith("]  5/25 parts  2.5/s")
    assert progress.bar("p", "l", env={"PIPEMAIL_PROGRESS": "0"}, fd=os.open(os.devnull, os.O_WRONLY)) is None
