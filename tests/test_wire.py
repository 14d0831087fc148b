"""pymail's delivery side streams (issue 11): the transports and the dead letter take the
message as re-iterable byte chunks cut anywhere, and none of them holds it whole.

- SMTP DATA: CRLF line ends and dot-stuffing done on the stream, right across chunk and
  write boundaries (real aiosmtpd);
- every transport writes the same bytes whatever the cuts;
- peak memory flat with an 80 MB message (peak.BIG_MB) over SMTP, sendmail, stdout, into the
  dead letter, and for pymail --resend of an 80 MB dead letter (tests/peak.py);
- a full disk (a 1 MB tmpfs in a private mount namespace) or a missing $TMPDIR: one line,
  exit 74, nothing half-written, nothing left behind.
"""

import hashlib
import io
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bigchunks import HEAD, Generated, Recut
from peak import BIG_MB, LIMIT_MB, SMALL_MB, peak, slack_mb
from smtp_server import free_port

from pipemail import config, mailbox, message, transport

from conftest import command_path

TESTS = Path(__file__).parent
W = 1 << 16  # transport.WRITE_SIZE: lines start around the end of the first write
SENDER, RCPTS = "a@example.org", ["b@example.org"]


def _url(text):
    return config.split_url(text, kind="transport")


def _filler(n):
    """``n`` bytes of ordinary lines (at most 900 bytes each), ending with a newline (n > 0)."""
    out = [b"a" * 899 + b"\n"] * (n // 900)
    if n % 900:
        out.append(b"b" * (n % 900 - 1) + b"\n")
    return b"".join(out)


def _with_line_at(offset, line, end=b"after\n"):
    """A message in which ``line`` starts at byte ``offset``."""
    return HEAD + _filler(offset - len(HEAD)) + line + _filler(1500) + end


def _wire(msg):
    """What the server gets of ``msg``: CRLF line ends, and a CRLF ending a last line without one."""
    out = msg.replace(b"\n", b"\r\n")
    return out if out.endswith(b"\r\n") else out + b"\r\n"


# -- SMTP DATA across chunk and write boundaries --------------------------------------------


def test_smtp_data_is_dot_stuffed_and_crlf_right_across_every_boundary(smtp_server):
    """Lines that start with '.' or 'From ' at every offset around the write size, the message
    cut there (a '\\n' | '.' split), byte by byte, 7 bytes at a time and whole; messages
    without a final newline, ending in '.'; one SMTP session: the server gets them exactly."""
    srv = smtp_server(size=64 << 20)
    cases = []
    for line in (b". dot line\n", b"..two\n", b".\n", b"From here\n"):
        for offset in range(W - 3, W + 4):
            msg = _with_line_at(offset, line)
            cases.append((msg, [msg]))
            cases.append((msg, [msg[:offset], msg[offset:]]))  # cut right before the line
            cases.append((msg, [msg[: offset - 1], msg[offset - 1 :]]))  # cut right before its newline
            cases.append((msg, Recut([msg], [7])))
    byte_by_byte = _with_line_at(W, b". dot\n")
    cases.append((byte_by_byte, Recut([byte_by_byte], [1])))
    for end in (b"no final newline", b"last\n.", b"last\n..", b"."):
        msg = _with_line_at(W - 1, b".x\n", end=end)
        cases += [(msg, [msg]), (msg, Recut([msg], [1]))]
        msg = HEAD + end
        cases.append((msg, [msg]))
    messages = [(segments, message.crlf_size(segments)) for _msg, segments in cases]
    results = list(transport.smtp_deliveries(_url(srv.url), messages, SENDER, RCPTS))
    assert [exc for _r, exc in results] == [None] * len(cases)
    got = [raw for _f, _r, raw in srv.messages]
    assert len(got) == len(cases)
    for i, (msg, _segments) in enumerate(cases):
        assert got[i] == _wire(msg), i


def test_smtp_data_goes_out_in_big_writes_whatever_the_cuts():
    """A message cut into 1-byte chunks is still sent in writes of the write size (not one
    send per chunk), dot-stuffed across them; the end marker rides with the last write."""
    assert transport.WRITE_SIZE == W
    msg = _with_line_at(W, b".dot\n")
    writes = list(transport.smtp_data(Recut([msg], [1])))
    assert [len(w) for w in writes[:-1]] == [len(w) for w in writes[:-1] if len(w) >= W] and len(writes) <= 3
    assert b"".join(writes) == msg.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..") + b".\r\n"


# -- the same bytes on every transport, whatever the cuts ------------------------------------


def _sink(tmp_path):
    """A sendmail that keeps what it reads: its own path + '.out'."""
    path = tmp_path / "sendmail"
    path.write_text('#!/bin/sh\nexec cat > "$0.out"\n')
    path.chmod(0o755)
    return path


def _without_from_lines(data):
    """An mbox without its From_ lines (they carry the time): the rest must be the same bytes."""
    return b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"From a@example.org "))


def _deliver_everywhere(tmp_path, segments, tag, srv):
    """What each transport makes of ``segments``: {transport: bytes}."""
    out = {}
    transport.deliver(_url(srv.url), segments, message.crlf_size(segments), SENDER, RCPTS)
    out["smtp"] = srv.messages[-1][2]
    sink = _sink(tmp_path)
    transport.deliver(_url("sendmail:%s" % sink), segments, 0, SENDER, RCPTS, timeout=30)
    out["sendmail"] = Path(str(sink) + ".out").read_bytes()
    box = tmp_path / ("box-" + tag)
    transport.deliver(_url("mbox:%s" % box), segments, 0, SENDER, RCPTS)
    out["mbox"] = _without_from_lines(box.read_bytes())
    top = tmp_path / ("md-" + tag)
    transport.deliver(_url("maildir:%s" % top), segments, 0, SENDER, RCPTS)
    [name] = os.listdir(top / "new")
    out["maildir"] = (top / "new" / name).read_bytes()
    for mbox_form in (False, True):
        stream = io.BytesIO()
        transport.deliver(_url("-"), segments, 0, SENDER, RCPTS, stdout=stream, stdout_mbox=mbox_form)
        out["stdout-mbox" if mbox_form else "stdout"] = _without_from_lines(stream.getvalue())
    dead = tmp_path / ("dead-" + tag)
    transport.save_dead_letter(dead, segments, SENDER, RCPTS)
    out["dead letter"] = _without_from_lines(dead.read_bytes())
    return out


def test_every_transport_gives_the_same_bytes_whatever_the_cuts(smtp_server, tmp_path):
    srv = smtp_server(size=64 << 20)
    whole = b"".join(Generated(0.3)) + b"\n.\nFrom the end\n>From x\n."  # no final newline
    rng = random.Random(11)
    cuts = {"whole": [whole], "1": Recut([whole], [1]), "7": Recut([whole], [7]), "64K": Recut([whole], [1 << 16])}
    cuts["random"] = Recut([whole], [rng.randint(1, 70000) for _ in range(50)])
    results = {tag: _deliver_everywhere(tmp_path, segments, tag, srv) for tag, segments in cuts.items()}
    for tag in cuts:
        assert results[tag] == results["whole"], tag
    got = results["whole"]
    assert got["smtp"] == _wire(whole)
    assert got["sendmail"] == got["maildir"] == got["stdout"] == whole
    quoted = re.sub(rb"(?m)^(>*From )", rb">\1", whole + b"\n")  # mboxrd
    assert got["mbox"] == got["stdout-mbox"] == quoted + b"\n"
    assert got["dead letter"] == b"X-Pipemail-Length: %d\nX-Pipemail-Undelivered-To: b@example.org\n%s\n" % (
        len(whole) + 1,
        quoted,
    )


# -- memory: a BIG_MB (80 MB) message, in a child whose own peak is measured -------------------


def _child(kind, mb, target, stdout=None):
    script = "import sys; sys.path.insert(0, %r); import bigchunks; bigchunks.main()" % str(TESTS)
    return peak([sys.executable, "-c", script, kind, str(mb), str(target)], stdout=stdout)


def _sha(chunks, tail=b""):
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    h.update(tail)
    return h.hexdigest()


def _crlf(chunks):
    for chunk in chunks:
        yield chunk.replace(b"\n", b"\r\n")


def _flat(small, big):
    assert small.returncode == 0 and big.returncode == 0, (small, big)
    assert big.mb < LIMIT_MB, big
    assert big.mb - small.mb < slack_mb(5), (small, big)


def test_smtp_sends_80_mb_in_flat_memory(smtp_server, tmp_path):
    srv = smtp_server(size=256 << 20, lint=False)
    small, big = _child("smtp", SMALL_MB, srv.url), _child("smtp", BIG_MB, srv.url)
    _flat(small, big)
    assert _sha([srv.messages[-1][2]]) == _sha(_crlf(Generated(BIG_MB)), b"\r\n")  # it ends mid-line


def test_sendmail_feeds_80_mb_in_flat_memory(tmp_path):
    sink = _sink(tmp_path)
    small, big = _child("sendmail", SMALL_MB, sink), _child("sendmail", BIG_MB, sink)
    _flat(small, big)
    with open(str(sink) + ".out", "rb") as f:
        assert _sha(iter(lambda: f.read(1 << 20), b"")) == _sha(Generated(BIG_MB))


@pytest.mark.parametrize("form", ["plain", "mbox"])
def test_stdout_writes_80_mb_in_flat_memory(tmp_path, form):
    out = tmp_path / "out"
    small, big = _child("stdout", SMALL_MB, form, stdout=out), _child("stdout", BIG_MB, form, stdout=out)
    _flat(small, big)
    with open(out, "rb") as f:
        if form == "plain":
            assert _sha(iter(lambda: f.read(1 << 20), b"")) == _sha(Generated(BIG_MB))
        else:  # one message of an mbox, read back as a stream: the same bytes, and the newline mbox adds
            [(from_line, chunks)] = [(line, _sha(chunks)) for line, chunks in mailbox.mbox_messages(f)]
            assert from_line.startswith(b"From a@example.org ")
            assert chunks == _sha(Generated(BIG_MB), b"\n")


def test_the_dead_letter_keeps_80_mb_in_flat_memory(tmp_path):
    small, big = _child("dead", SMALL_MB, tmp_path / "small"), _child("dead", BIG_MB, tmp_path / "dead.letter")
    _flat(small, big)
    size = Generated(BIG_MB).size()
    with open(tmp_path / "dead.letter", "rb") as f, open(tmp_path / "spool", "w+b") as spool:
        letters = transport.dead_letters(f, spool.fileno())
        kept, last = next(letters)
        assert last and not kept.torn and (kept.length, kept.size) == (size + 1, size + 1)
        assert (kept.sender, kept.undelivered) == (SENDER, RCPTS)
        assert _sha(kept.segments) == _sha(Generated(BIG_MB), b"\n")
        assert next(letters, None) is None


def test_resend_of_an_80_mb_dead_letter_in_flat_memory(tmp_path):
    """Read as a stream, spooled in $TMPDIR (nothing left there), sent, the dead letter emptied."""
    peaks = {}
    for mb in (SMALL_MB, BIG_MB):
        dead, top, spool = tmp_path / ("dead%d" % mb), tmp_path / ("md%d" % mb), tmp_path / ("tmp%d" % mb)
        spool.mkdir()
        transport.save_dead_letter(dead, Generated(mb), SENDER, RCPTS)
        transport.save_dead_letter(dead, [b"Subject: small\n\nsmall one\n"], SENDER, ["c@example.org"])
        peaks[mb] = p = peak(
            "pymail",
            "--transport",
            "maildir:%s" % top,
            "--resend",
            dead,
            env={"HOME": str(tmp_path), "TMPDIR": str(spool)},
        )
        assert p.stderr == "pymail: resend: all messages went out (%s)\n" % dead, p
        assert os.path.getsize(dead) == 0 and os.listdir(spool) == []
        sent = sorted((top / "new").iterdir(), key=lambda p: p.stat().st_size)
        assert [p.read_bytes() for p in sent[:1]] == [b"Subject: small\n\nsmall one\n"]
        with open(sent[1], "rb") as f:
            assert _sha(iter(lambda: f.read(1 << 20), b"")) == _sha(Generated(mb), b"\n")
    _flat(peaks[SMALL_MB], peaks[BIG_MB])


# -- a full disk, a missing $TMPDIR -------------------------------------------------------------


def _in_namespace(tmpfs, script, env):
    """Run ``script`` (sh) in a private mount namespace with a 1 MB tmpfs on ``tmpfs``."""
    full = dict(os.environ, **env)
    full.pop("PIPEMAIL_DEBUG", None)
    return subprocess.run(
        [
            shutil.which("unshare") or "unshare",
            "--mount",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m none "$T" && ' + script,
        ],
        env=dict(full, T=str(tmpfs)),
        capture_output=True,
        timeout=60,
    )


def _pymail():
    return " ".join("'%s'" % a for a in command_path("pymail"))


def test_a_dead_letter_on_a_full_disk_is_one_line_and_74_with_nothing_half_written(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    down = free_port()
    big = tmp_path / "big"
    big.write_bytes(b"".join(Generated(2)))
    script = (
        '%s --transport smtp://127.0.0.1:%d -s big a@example.org < "%s"; echo "rc=$?"; '
        'ls -A "$T"; wc -c < "$T/dead.letter"' % (_pymail(), down, big)
    )
    r = _in_namespace(home, script, {"HOME": str(home)})
    dead = home / "dead.letter"
    assert r.stderr.decode() == (
        "pymail: cannot connect to 127.0.0.1 port %d: Connection refused\n"
        "pymail: the message could not be kept: cannot write mailbox %s: No space left on device\n" % (down, dead)
    )
    assert r.stdout.decode() == "rc=74\ndead.letter\n0\n"  # no lock left, nothing half-written


def _a_dead_letter(tmp_path, mb):
    dead = tmp_path / "dead.letter"
    transport.save_dead_letter(dead, Generated(mb), SENDER, RCPTS)
    return dead, dead.read_bytes()


def test_resend_with_a_full_tmpdir_is_one_line_and_74_and_sends_and_changes_nothing(tmp_path):
    dead, before = _a_dead_letter(tmp_path, 2)
    spool, top = tmp_path / "spool", tmp_path / "md"
    spool.mkdir()
    script = '%s --transport maildir:%s --resend %s; echo "rc=$?"; ls -A "$T"' % (_pymail(), top, dead)
    r = _in_namespace(spool, script, {"HOME": str(tmp_path), "TMPDIR": str(spool)})
    assert r.stderr.decode() == "pymail: cannot spool a message of %s: No space left on device\n" % dead
    assert r.stdout.decode() == "rc=74\n"  # nothing left in $TMPDIR
    assert (
        dead.read_bytes() == before
        and not top.exists()
        and sorted(os.listdir(tmp_path))
        == [
            "dead.letter",
            "spool",
        ]
    )


def test_resend_with_a_missing_tmpdir_says_so_in_one_line_and_74(run, tmp_path):
    dead, before = _a_dead_letter(tmp_path, 0.1)
    top = tmp_path / "md"
    gone = tmp_path / "gone"
    r = run(
        "pymail", "--transport", "maildir:%s" % top, "--resend", dead, env={"HOME": str(tmp_path), "TMPDIR": str(gone)}
    )
    assert (r.returncode, r.stderr) == (
        74,
        "pymail: cannot make a spool file in %s: No such file or directory\n" % gone,
    )
    assert dead.read_bytes() == before and not top.exists()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_resend_spools_in_tmpdir_without_a_name_so_a_kill_leaves_nothing(smtp_server, tmp_path, sig):
    """While --resend sends, its spool is an open file in $TMPDIR with no name there (mode 600);
    killed then, by SIGTERM or SIGKILL, it leaves nothing in $TMPDIR and the dead letter as it was."""
    import signal
    import stat
    import time

    dead, before = _a_dead_letter(tmp_path, 1)
    spool = tmp_path / "spool"
    spool.mkdir()
    srv = smtp_server(size=64 << 20, lint=False)
    srv.data_delay = 30  # the end of DATA is not answered: pymail waits in the middle of sending
    env = dict(os.environ, HOME=str(tmp_path), TMPDIR=str(spool))
    env.pop("PIPEMAIL_DEBUG", None)
    proc = subprocess.Popen(
        command_path("pymail") + ["--transport", srv.url, "--timeout", "60", "--resend", str(dead)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while srv.data_commands == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.data_commands == 1
        fds = "/proc/%d/fd" % proc.pid
        held = [os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)]
        # the message being sent, and what remains (nothing yet): open, in $TMPDIR, with no name there
        spooled = [fd for fd in os.listdir(fds) if os.readlink(os.path.join(fds, fd)).startswith(str(spool) + "/")]
        assert len(spooled) == 2, held
        assert all(os.readlink(os.path.join(fds, fd)).endswith(" (deleted)") for fd in spooled), held
        sts = [os.stat(os.path.join(fds, fd)) for fd in spooled]
        assert sorted((stat.S_IMODE(st.st_mode), st.st_size) for st in sts) == [
            (0o600, 0),
            (0o600, Generated(1).size() + 1),
        ]
        assert os.listdir(spool) == []
        proc.send_signal(getattr(signal, sig))
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (-signal.SIGKILL, 143, -signal.SIGTERM), proc.stderr.read()
    assert os.listdir(spool) == [] and dead.read_bytes() == before
    left = ["dead.letter", "spool"] if sig == "SIGTERM" else ["dead.letter", "dead.letter.lock", "spool"]
    assert sorted(os.listdir(tmp_path)) == left  # a kill leaves its dot-lock, broken as stale by the next
