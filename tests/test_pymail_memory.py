"""pymail in bounded memory (issue 11): attachments and standard input of 80 MB (peak.BIG_MB, well
over the 64 MB limit) into a Maildir and an mbox, whole and with --max-size, under 64 MB and within
a few MB of the same command with 10 MB (the command's own peak RSS, tests/peak.py), the results
byte-identical; standard input spooled to a private file in $TMPDIR (0600, gone on success, error
and SIGTERM), a full $TMPDIR (a 1 MB tmpfs in a private mount namespace) is one line and 74, and an
attachment that changes while it is sent is an error (74), not a different message or dead letter."""

import binascii
import os
import re
import signal
import subprocess
import time

import pytest
from peak import BIG_MB, LIMIT_MB, SMALL_MB, peak, slack_mb

from conftest import command_path

BIG = BIG_MB << 20
SMALL = SMALL_MB << 20
SLACK_MB = slack_mb(6)  # BIG may cost this much more than SMALL (6 MB when BIG was 100 MB)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    block = b"".join(
        b"%s%s\n" % (lead, os.urandom(30).hex().encode())
        for lead in [b"", b".", b"..", b"From ", b">From ", b"x", b".\t", b"From"] * 512
    )
    files = {}
    for label, size in (("big", BIG), ("small", SMALL)):
        path = d / ("%s.bin" % label)
        with open(path, "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
        files[label, "binary"] = path
        text = (block * (size // len(block) + 1))[:size]
        path = d / ("%s.txt" % label)
        path.write_bytes(text[: text.rfind(b"\n") + 1])
        files[label, "text"] = path
    return files


def env_for(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {"HOME": str(tmp_path), "TMPDIR": str(tmp), "DEAD": str(tmp_path / "dead.letter")}


def messages(where, how):
    """The messages delivered: the files of Maildir/new, or the mbox's messages (mboxrd unquoted)."""
    if how == "maildir":
        assert os.listdir(where / "tmp") == []
        return [(where / "new" / n).read_bytes() for n in sorted(os.listdir(where / "new"))]
    from pipemail import mailbox

    with open(where, "rb") as f:
        return [b"".join(chunks) for _line, chunks in mailbox.mbox_messages(f, "mbox")]


def attachment(msg, name):
    """The decoded bytes of the base64 attachment ``name`` of ``msg``."""
    at = msg.index(b'filename="%s"' % name.encode())
    start = msg.index(b"\n\n", at) + 2
    end = msg.find(b"\n--=_pipemail_", start)  # the end of its part, or of a one-part message
    return binascii.a2b_base64(msg[start : len(msg) if end < 0 else end])


def run_both(inputs, tmp_path, kind, args, how, stdin=False):
    """Run pymail with the small and the big input; {label: (Peak, where)}."""
    out = {}
    for label in ("small", "big"):
        d = tmp_path / label
        d.mkdir()
        where = d / ("Maildir" if how == "maildir" else "inbox.mbox")
        src = inputs[label, kind]
        argv = ["--transport", "%s:%s" % (how, where), *args]
        if not stdin:
            argv += ["-a", src]
        p = peak("pymail", *argv, "me@example.org", stdin=src if stdin else None, env=env_for(d))
        assert (p.returncode, p.stderr) == (0, ""), p
        assert os.listdir(d / "tmp") == []  # no spool left
        out[label] = (p, where)
    peaks = {label: p.mb for label, (p, _w) in out.items()}
    print("peak RSS (MB) %s %s %s: %r" % (how, kind, args, peaks))
    assert peaks["big"] < LIMIT_MB, peaks
    assert peaks["big"] - peaks["small"] < SLACK_MB, peaks
    return out


@pytest.mark.parametrize("how", ["maildir", "mbox"])
def test_an_attachment_of_80mb_in_bounded_memory(inputs, tmp_path, how):
    out = run_both(inputs, tmp_path, "binary", [], how)
    for label, (_p, where) in out.items():
        (msg,) = messages(where, how)
        assert attachment(msg, "%s.bin" % label) == inputs[label, "binary"].read_bytes()


@pytest.mark.parametrize("how", ["maildir", "mbox"])
def test_max_size_of_80mb_in_bounded_memory_reassembles_exactly(inputs, tmp_path, how):
    out = run_both(inputs, tmp_path, "binary", ["--max-size", "4M", "-s", "backup"], how)
    for label, (_p, where) in out.items():
        mails = messages(where, how)
        assert len(mails) > (2 if label == "small" else 25)
        assert all(len(m) + m.count(b"\n") <= 4 << 20 for m in mails)
        dest = tmp_path / label / "out"
        r = subprocess.run(command_path("pyunshar") + ["-d", str(dest), str(where)], capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert (dest / ("%s.bin" % label)).read_bytes() == inputs[label, "binary"].read_bytes()


def test_standard_input_of_80mb_text_in_bounded_memory(inputs, tmp_path):
    out = run_both(inputs, tmp_path, "text", ["-s", "log"], "maildir", stdin=True)
    for label, (_p, where) in out.items():
        (msg,) = messages(where, "maildir")
        head, _sep, body = msg.partition(b"\n\n")
        assert b"Content-Transfer-Encoding: 7bit" in head
        assert body == inputs[label, "text"].read_bytes()


def test_standard_input_of_80mb_binary_in_bounded_memory(inputs, tmp_path):
    out = run_both(inputs, tmp_path, "binary", [], "maildir", stdin=True)
    for label, (_p, where) in out.items():
        (msg,) = messages(where, "maildir")
        assert attachment(msg, "stdin.bin") == inputs[label, "binary"].read_bytes()


def test_quoted_printable_standard_input_of_80mb_in_bounded_memory(inputs, tmp_path):
    for label in ("small", "big"):  # 8-bit text: quoted-printable, encoded as a stream
        (tmp_path / label).mkdir()
        path = tmp_path / label / "in.txt"
        data = inputs[label, "text"].read_bytes().replace(b"x", "\u00e9".encode())
        path.write_bytes(data)
        where = tmp_path / label / "Maildir"
        p = peak("pymail", "--transport", "maildir:%s" % where, "me@x", stdin=path, env=env_for(tmp_path / label))
        assert (p.returncode, p.stderr) == (0, ""), p
        (msg,) = messages(where, "maildir")
        head, _sep, body = msg.partition(b"\n\n")
        assert b"Content-Transfer-Encoding: quoted-printable" in head and b"charset=utf-8\n" in head
        assert binascii.a2b_qp(body) == data
        assert p.mb < LIMIT_MB, p


# -- the spool: private, removed on every exit; a full $TMPDIR -----------------------------------------

SPY = """#!/bin/sh
for f in /proc/$PPID/fd/*; do
  case "$(readlink "$f")" in "$TMPDIR"/*) stat -L -c '%a %s' "$f" >> "$OUT/spool" ;; esac
done
ls -A "$TMPDIR" > "$OUT/listed"
cat > "$OUT/msg"
"""


def script(tmp_path, text):
    path = tmp_path / "sendmail"
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_standard_input_is_spooled_to_a_private_file_in_tmpdir_and_gone_after(run, tmp_path):
    env = env_for(tmp_path)
    env["OUT"] = str(tmp_path)
    data = b"hello\n" * 100000
    r = run("pymail", "--transport", "sendmail:%s" % script(tmp_path, SPY), "me@x", input=data, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "spool").read_text() == "600 %d\n" % len(data)  # 0600, in $TMPDIR, while sending
    assert (tmp_path / "listed").read_text() == ""  # and without a name: gone on any exit
    assert os.listdir(tmp_path / "tmp") == []
    assert (tmp_path / "msg").read_bytes().endswith(b"\n\n" + data)


def test_the_spool_is_gone_after_an_error_and_the_message_kept(run, tmp_path):
    env = env_for(tmp_path)
    data = b"x" * 60 + b"\n"
    r = run("pymail", "--transport", "mbox:%s" % (tmp_path / "no" / "box"), "me@x", input=data * 100, env=env)
    assert r.returncode == 73, r.stderr
    assert os.listdir(tmp_path / "tmp") == []
    assert (tmp_path / "dead.letter").read_bytes().endswith(b"\n\n" + data * 100 + b"\n")


def test_sigterm_while_sending_parts_removes_the_spool_and_keeps_the_parts(run, tmp_path):
    env = env_for(tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    hang = script(tmp_path, '#!/bin/sh\nls -A "$TMPDIR" > "$OUT/listed"\nexec sleep 60\n')
    full = {**os.environ, **env, "OUT": str(tmp_path)}
    argv = command_path("pymail") + ["--max-size", "1M", "--transport", "sendmail:%s" % hang, "-a", str(big), "me@x"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full)
    deadline = time.monotonic() + 60
    while not (tmp_path / "listed").exists() or not (tmp_path / "listed").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    assert (tmp_path / "listed").read_text().startswith("pymail-")  # the archive's spool directory
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert os.listdir(tmp_path / "tmp") == []
    dead = (tmp_path / "dead.letter").read_bytes()
    n = dead.count(b"\nX-Pipemail-Length: ")
    assert n >= 4 and [b"Subject: [part %02d/%d]" % (i, n) in dead for i in range(1, n + 1)] == [True] * n


def in_small_tmpfs(tmp_path, argv, stdin):
    """Run ``argv`` with $TMPDIR a 1 MB tmpfs in a private mount namespace: exit status, stderr,
    and what was left in the tmpfs."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    sh = (
        'mount -t tmpfs -o size=1m,mode=0700 pipemail-full "$TMPDIR" || exit 99; '
        '"$@" <"$IN" 2>"$OUT/err"; echo $? >"$OUT/rc"; ls -A "$TMPDIR" >"$OUT/left"'
    )
    env = {**os.environ, **env_for(tmp_path), "IN": str(stdin), "OUT": str(tmp_path)}
    env.pop("PIPEMAIL_DEBUG", None)
    subprocess.run(["unshare", "-m", "sh", "-c", sh, "sh", *map(str, argv)], env=env, check=True, timeout=120)
    return int((tmp_path / "rc").read_text()), (tmp_path / "err").read_text(), (tmp_path / "left").read_text()


def test_a_full_tmpdir_while_spooling_standard_input_is_one_line_and_74(tmp_path):
    data = tmp_path / "in"
    data.write_bytes(b"line\n" * 600000)  # 3 MB: more than the tmpfs holds
    argv = command_path("pymail") + ["--transport", "maildir:%s" % (tmp_path / "Maildir"), "me@x"]
    rc, err, left = in_small_tmpfs(tmp_path, argv, data)
    assert (rc, err) == (
        74,
        "pymail: cannot spool standard input in %s: No space left on device\n" % (tmp_path / "tmp"),
    )
    assert left == ""
    assert not (tmp_path / "Maildir").exists()


def test_a_full_tmpdir_while_writing_the_archive_is_one_line_and_74(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    argv = command_path("pymail") + [
        "--max-size",
        "1M",
        "--transport",
        "maildir:%s" % (tmp_path / "M"),
        "-a",
        big,
        "me@x",
    ]
    rc, err, left = in_small_tmpfs(tmp_path, argv, "/dev/null")
    assert rc == 74
    assert re.fullmatch(
        r"pymail: cannot write %s/pymail-\w+/big\.bin\.\d+: No space left on device\n" % (tmp_path / "tmp"), err
    )
    assert left == ""
    assert not (tmp_path / "M").exists()


def test_an_unwritable_tmpdir_is_one_line_and_74(run, tmp_path):
    env = env_for(tmp_path)
    env["TMPDIR"] = str(tmp_path / "missing")
    r = run("pymail", "--transport", "maildir:%s" % (tmp_path / "M"), "me@x", input=b"hi\n", env=env)
    assert (r.returncode, r.stderr) == (
        74,
        "pymail: cannot make a spool file in %s: No such file or directory\n" % (tmp_path / "missing"),
    )


def test_an_attachment_that_changes_while_it_is_sent_is_74_and_no_dead_letter(run, tmp_path):
    env = env_for(tmp_path)
    att = tmp_path / "a.bin"
    att.write_bytes(os.urandom(5 << 20))
    env["FILE"] = str(att)
    changer = script(tmp_path, '#!/bin/sh\nhead -c 1000 >/dev/null\necho more >> "$FILE"\ncat >/dev/null\n')
    r = run("pymail", "--transport", "sendmail:%s" % changer, "-a", att, "me@x", env=env)
    assert r.returncode == 74
    assert r.stderr == (
        "pymail: %s changed while pymail was sending it (it was %d bytes when opened, now %d, "
        "or its modification time changed): not sent as a different message\n" % (att, 5 << 20, (5 << 20) + 5)
    )
    assert not (tmp_path / "dead.letter").exists()
    assert os.listdir(tmp_path / "tmp") == []


def test_t_standard_input_of_80mb_in_bounded_memory(inputs, tmp_path):
    peaks = {}
    for label in ("small", "big"):  # -t: the headers read from the spool, the body's CRLF made LF as it is read
        d = tmp_path / label
        d.mkdir()
        text = inputs[label, "text"].read_bytes()
        (d / "in.eml").write_bytes(b"To: you@example.org\r\nSubject: big -t\r\n\r\n" + text.replace(b"\n", b"\r\n"))
        where = d / "Maildir"
        p = peak("pymail", "-t", "--transport", "maildir:%s" % where, stdin=d / "in.eml", env=env_for(d))
        assert (p.returncode, p.stderr) == (0, ""), p
        (msg,) = messages(where, "maildir")
        head, _sep, body = msg.partition(b"\n\n")
        assert head.startswith(b"To: you@example.org\nSubject: big -t\n") and body == text
        peaks[label] = p.mb
    assert peaks["big"] < LIMIT_MB and peaks["big"] - peaks["small"] < SLACK_MB, peaks


@pytest.mark.parametrize("args", [[], ["--max-size", "4M"]])
def test_over_smtp_in_bounded_memory(inputs, tmp_path, smtp_server, args):
    server = smtp_server(size=300 << 20, lint=False)  # aiosmtpd's 32 MiB limit raised
    peaks = {}
    for label in ("small", "big"):
        (tmp_path / label).mkdir()
        server.messages.clear()
        src = inputs[label, "binary"]
        p = peak("pymail", "--transport", server.url, *args, "-a", src, "me@example.org", env=env_for(tmp_path / label))
        assert (p.returncode, p.stderr) == (0, ""), p
        assert os.listdir(tmp_path / label / "tmp") == []
        if args:
            dest = tmp_path / label / "out"
            box = tmp_path / label / "got.mbox"
            with open(box, "wb") as f:
                for _sender, _rcpts, data in server.messages:
                    f.write(b"From x Thu Jan  1 00:00:00 1970\n" + data.replace(b"\r\n", b"\n") + b"\n")
            r = subprocess.run(command_path("pyunshar") + ["-d", str(dest), str(box)], capture_output=True, timeout=300)
            assert r.returncode == 0, r.stderr
            assert (dest / src.name).read_bytes() == src.read_bytes()
        else:
            ((_sender, _rcpts, data),) = server.messages
            assert attachment(data.replace(b"\r\n", b"\n"), src.name) == src.read_bytes()
        peaks[label] = p.mb
    print("peak RSS (MB) smtp %s: %r" % (args, peaks))
    assert peaks["big"] < LIMIT_MB and peaks["big"] - peaks["small"] < SLACK_MB, peaks


def test_an_attachment_from_a_pipe_is_spooled_and_attached_whole(tmp_path):
    env = {**os.environ, **env_for(tmp_path)}
    env.pop("PIPEMAIL_DEBUG", None)
    data = os.urandom(3 << 20)
    (tmp_path / "data").write_bytes(data)
    line = '%s --transport maildir:%s -a <(cat "$1") me@x </dev/null' % (
        " ".join(command_path("pymail")),
        tmp_path / "M",
    )
    r = subprocess.run(["bash", "-c", line, "bash", str(tmp_path / "data")], capture_output=True, env=env, timeout=120)
    assert (r.returncode, r.stderr) == (0, b"")
    ((msg,),) = [messages(tmp_path / "M", "maildir")]
    name = re.search(rb'filename="(\d+)"', msg).group(1).decode()
    assert attachment(msg, name) == data
    assert os.listdir(tmp_path / "tmp") == []
