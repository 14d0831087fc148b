"""pypop fetch of an 80 MB message (peak.BIG_MB, well over the 64 MB limit) from a real Dovecot
into every sink, in bounded memory (the command's own peak RSS, tests/peak.py), bytes identical;
and a full disk (a small tmpfs in a private mount namespace) that loses nothing and leaves nothing
half-written."""

import os
import subprocess

import pop3server
import pytest
from peak import BIG_MB, LIMIT_MB, SMALL_MB, peak, slack_mb

from pipemail import config, mailbox, pop3

from conftest import command_path

dovecot = pop3server.dovecot

BIG = BIG_MB << 20
SMALL = SMALL_MB << 20
OTHER = "pmother"  # the small message's user: each user holds one message


def make_message(size, tag):
    """``size`` bytes of mail with LF line ends: lines that start with ``.``, ``..``, ``From ``
    and ``>From `` throughout (dot-stuffed by the server, mboxrd-quoted in an mbox)."""
    head = b"Return-Path: <backup@example.org>\nFrom: backup@example.org\nSubject: %s\n\n" % tag
    block = b"".join(
        b"%s%s\n" % (lead, os.urandom(28).hex().encode())
        for lead in [b"", b".", b"..", b"From ", b">From ", b"x", b".\t", b"From"] * 256
    )
    body = block * ((size - len(head)) // len(block) + 1)
    return head + body[: size - len(head) - 1] + b"\n"


@pytest.fixture(scope="module")
def mail(dovecot):
    dovecot.clear()
    messages = {dovecot.user: make_message(BIG, b"big"), OTHER: make_message(SMALL, b"small")}
    for user, message in messages.items():
        dovecot.put(user, message)
    yield messages
    dovecot.clear()


def fetch(dovecot, tmp_path, user, *args, stdout=None, env=None):
    tmp_path.mkdir(exist_ok=True)
    e = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": dovecot.users[user],
        "TMPDIR": str(tmp_path),
    }
    e.update(env or {})
    server = ["--server", "pop3://%s:%d" % (dovecot.host, dovecot.port), "--tls-trust-file", dovecot.ca_file]
    return peak("pypop", *server, "--user", user, "fetch", *args, stdout=stdout, env=e)


def read_mbox(path):
    with open(path, "rb") as f:
        return [(line, b"".join(chunks)) for line, chunks in mailbox.mbox_messages(f, "mbox")]


def sink_args(how, where):
    if how == "mbox":
        return ["--mbox", where / "inbox"]
    if how == "maildir":
        return ["--maildir", where / "Maildir"]
    if how == "mda":
        return ["--mda", "cat > %s" % (where / "got")]
    return []


def result(how, where):
    if how in ("mbox", "stdout"):
        ((line, body),) = read_mbox(where / ("inbox" if how == "mbox" else "out"))
        assert line.startswith(b"From backup@example.org ")
        return body
    if how == "maildir":
        (name,) = os.listdir(where / "Maildir" / "new")
        assert os.listdir(where / "Maildir" / "tmp") == []
        return (where / "Maildir" / "new" / name).read_bytes()
    return (where / "got").read_bytes()


@pytest.mark.parametrize("how", ["mbox", "maildir", "mda", "stdout"])
def test_fetch_80mb_in_bounded_memory(dovecot, mail, tmp_path, how):
    peaks = {}
    for user in (OTHER, dovecot.user):
        where = tmp_path / user
        where.mkdir()
        p = fetch(dovecot, where, user, *sink_args(how, where), stdout=where / "out")
        assert (p.returncode, p.stderr) == (0, ""), p
        got = result(how, where)
        assert len(got) == len(mail[user]) and got == mail[user]  # bytes identical (an mbox unquoted)
        target = {"mbox": {"inbox"}, "maildir": {"Maildir"}, "mda": {"got"}, "stdout": set()}[how]
        assert set(os.listdir(where)) == {"state", "out", *target}  # no spool file, no lock left
        peaks[user] = p.mb
    print("peak RSS (MB) %s: %r" % (how, peaks))
    assert peaks[dovecot.user] < LIMIT_MB, peaks
    assert peaks[dovecot.user] - peaks[OTHER] < slack_mb(6), peaks  # 80 MB costs what 10 MB does


# -- a full disk -------------------------------------------------------------------------------


def in_small_tmpfs(mount, argv, env, tmp_path):
    """Run ``argv`` with a 1 MB tmpfs on ``mount`` in a private mount namespace; its exit status,
    stderr, and the files left in the tmpfs (``path size``), seen before the namespace goes."""
    script = (
        'mount -t tmpfs -o size=1m,mode=0755 pipemail-full "$1" || exit 99; shift; '
        '"$@" 2>"$ERRFILE"; echo $? >"$RCFILE"; cd "$MOUNT" && find . -mindepth 1 -printf "%y %P %s\\n" | sort >"$LIST"'
    )
    files = {"ERRFILE": tmp_path / "err", "RCFILE": tmp_path / "rc", "LIST": tmp_path / "list"}
    full_env = {**os.environ, **env, **{k: str(v) for k, v in files.items()}, "MOUNT": str(mount)}
    subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(mount), *map(str, argv)], env=full_env, check=True)
    return int(files["RCFILE"].read_text()), files["ERRFILE"].read_text(), files["LIST"].read_text()


@pytest.fixture
def one(dovecot):
    dovecot.clear()
    message = make_message(6 << 20, b"six megabytes: over what a batch holds in memory")
    dovecot.put(dovecot.user, message)
    yield message
    dovecot.clear()


def pypop_argv(dovecot, *args):
    server = ["--server", "pop3://%s:%d" % (dovecot.host, dovecot.port), "--tls-trust-file", dovecot.ca_file]
    return [*command_path("pypop"), *server, "--user", dovecot.user, "fetch", *args]


def pop_env(dovecot, tmp_path, **extra):
    return {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PIPEMAIL_PASSWORD": dovecot.password,
        **extra,
    }


@pytest.mark.parametrize(
    "how, expected, left",
    [
        ("mbox", "pypop: cannot write %s/inbox: No space left on device\n", "f inbox 0\n"),
        ("maildir", "pypop: cannot deliver to Maildir %s/Maildir: No space left on device\n", "d Maildir 0\n"),
        ("spool", "pypop: cannot write a spool file in %s: No space left on device\n", ""),
    ],
)
def test_full_disk_is_74_and_loses_nothing(dovecot, one, tmp_path, how, expected, left):
    full = tmp_path / "full"
    full.mkdir()
    env = pop_env(dovecot, tmp_path, TMPDIR=str(tmp_path))
    if how == "mbox":
        args = ["--mbox", full / "inbox", "--delete"]
    elif how == "maildir":
        args = ["--maildir", full / "Maildir", "--delete"]
    else:  # the mbox has room; the spool in $TMPDIR has not (a message over what is held in memory)
        args = ["--mbox", tmp_path / "inbox", "--delete"]
        env["TMPDIR"] = str(full)
    rc, err, files = in_small_tmpfs(full, pypop_argv(dovecot, *args), env, tmp_path)
    assert (rc, err) == (74, expected % full)
    if how == "maildir":
        left += "d Maildir/cur 0\nd Maildir/new 0\nd Maildir/tmp 0\n"
        files = "\n".join(" ".join(f.split()[:2]) + " 0" if f.startswith("d ") else f for f in files.split("\n"))
    assert files == left  # nothing half-written, no spool file, no lock
    assert dovecot.count() == 1  # still on the server
    seen, _lock, pending = pop3.state_paths(
        dovecot.user, config.split_url("pop3://%s:%d" % (dovecot.host, dovecot.port), kind="pop"), env
    )
    assert pop3.read_seen(seen) == {} and not os.path.exists(pending)  # not recorded as fetched
    # with room again, the next run gets it whole
    env["TMPDIR"] = str(tmp_path)
    r = subprocess.run(
        pypop_argv(dovecot, "--mbox", tmp_path / "again", "--delete"), env={**os.environ, **env}, capture_output=True
    )
    assert (r.returncode, r.stderr) == (0, b"")
    ((_line, body),) = read_mbox(tmp_path / "again")
    assert body == one
    assert dovecot.count() == 0
