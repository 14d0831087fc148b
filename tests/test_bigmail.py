"""Big files by mail, end to end over real servers: pymail --max-size (or the article's
pyshar -L loop) through aiosmtpd or Exim into Dovecot's Maildir, pypop fetch, pyunshar."""

import os
import shlex
import subprocess

import mta
import pop3server
import pytest

from conftest import command_path

dovecot = pop3server.dovecot
exim = mta.exim

SIZE = 10 * 1024 * 1024  # over a dozen 1 MiB parts; memory is tests/test_*_memory.py's
BULK = 64 << 20  # aiosmtpd's limit raised: the server reads each message in one piece (tests/smtp_server.py)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "backup.tgz"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def inbox(dovecot):
    dovecot.clear(dovecot.user)
    yield dovecot
    dovecot.clear(dovecot.user)


def pop_args(dovecot):
    return ["--server", "pop3://%s:%d" % (dovecot.host, dovecot.port), "--user", dovecot.user]


def pop_env(dovecot, tmp):
    return {
        "HOME": str(tmp),
        "XDG_STATE_HOME": str(tmp / "state"),  # a state of its own: every message is new to this fetch
        "PIPEMAIL_PASSWORD": dovecot.password,
    }


def fetch_and_unshar(run, dovecot, tmp, how):
    """Fetch everything from Dovecot, reassemble with pyunshar from an mbox, a Maildir or a pipe."""
    tmp.mkdir()
    env = pop_env(dovecot, tmp)
    pop = pop_args(dovecot) + ["--tls-trust-file", str(dovecot.ca_file)]
    out = tmp / "out"
    if how == "stdin":  # pypop fetch | pyunshar -d out, through a real sh
        line = "%s | %s" % (
            shlex.join(command_path("pypop") + pop + ["fetch"]),
            shlex.join(command_path("pyunshar") + ["-d", str(out)]),
        )
        proc = subprocess.run(["sh", "-c", line], capture_output=True, env={**os.environ, **env}, timeout=300, cwd=tmp)
        return proc.returncode, proc.stderr.decode(), out
    where = tmp / ("inbox.mbox" if how == "mbox" else "Maildir")
    r = run("pypop", *pop, "fetch", "--" + how, where, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    u = run("pyunshar", "-d", out, where, env=env)
    return u.returncode, u.stderr, out


def send_big(run, transport, rcpt, big, tmp_path, *extra):
    r = run(
        "pymail",
        "--transport",
        transport,
        "--max-size",
        "1M",
        "-s",
        "backup",
        "-a",
        big,
        *extra,
        rcpt,
        input=b"tonight's backup\n",
        env={"HOME": str(tmp_path)},
    )
    assert (r.returncode, r.stderr) == (0, "")


def check_parts(raws):
    from email import message_from_bytes

    n = len(raws)
    assert n >= 13  # 10 MB, base64: 13.5 MB in mails of 1 MiB
    subjects = sorted(message_from_bytes(raw)["Subject"] for raw in raws)
    assert subjects == ["backup [part %02d/%d]" % (i, n) for i in range(1, n + 1)]
    assert all(len(raw) <= 1024 * 1024 for raw in raws)
    return n


def test_through_aiosmtpd_into_dovecot(run, smtp_server, inbox, big, tmp_path):
    srv = smtp_server(size=BULK)
    send_big(run, srv.url, "pmtest@example.org", big, tmp_path)
    raws = [raw for _f, _rc, raw in srv.messages]
    check_parts(raws)
    for raw in raws:  # the server's local delivery: into the Maildir Dovecot serves
        inbox.put(inbox.user, raw.replace(b"\r\n", b"\n"))
    for how in ("mbox", "maildir", "stdin"):
        code, err, out = fetch_and_unshar(run, inbox, tmp_path / how, how)
        assert (code, err) == (0, ""), how
        assert sorted(os.listdir(out)) == ["backup.tgz"]
        assert (out / "backup.tgz").read_bytes() == big.read_bytes(), how


def test_through_exim_into_dovecot_and_one_part_lost(run, exim, inbox, big, tmp_path):
    exim.deliver_into(inbox.maildir())
    send_big(run, "smtp://%s:%d" % (exim.host, exim.port), "dovecot@pipemail.test", big, tmp_path)
    n = check_parts(inbox.messages())  # Exim delivered every part into the Maildir itself
    for how in ("mbox", "maildir", "stdin"):
        code, err, out = fetch_and_unshar(run, inbox, tmp_path / how, how)
        assert (code, err) == (0, ""), how
        assert (out / "backup.tgz").read_bytes() == big.read_bytes(), how

    # one part lost on the way: named, and nothing half-written
    lost = next(p for p in inbox._messages(inbox.user) if b"[part 05/" in p.read_bytes())
    lost.unlink()
    for how in ("mbox", "maildir", "stdin"):
        code, err, out = fetch_and_unshar(run, inbox, tmp_path / ("lost-" + how), how)
        assert code == 65, (how, err)
        assert "part 5 of %d is missing; nothing of this archive was extracted" % n in err, how
        assert not out.exists() or os.listdir(out) == [], how


def test_the_articles_sendoff_loop(run, smtp_server, inbox, big, tmp_path):
    """pyshar -L 4000 -o companyMega, then one pymail -a per part, in a real sh loop."""
    srv = smtp_server(size=BULK)
    work = tmp_path / "work"
    work.mkdir()
    os.link(big, work / "companyMega.logs.tar.gz")
    env = {**os.environ, "HOME": str(tmp_path)}
    env["PATH"] = os.path.dirname(command_path("pymail")[0]) + os.pathsep + env["PATH"]
    if len(command_path("pymail")) > 1:  # no installed scripts: the bin/ launchers
        env["PATH"] = os.path.dirname(command_path("pymail")[1]) + os.pathsep + env["PATH"]
    script = (
        "set -e\n"
        "pyshar -q -L 4000 -o companyMega companyMega.logs.tar.gz\n"
        "for f in companyMega.[0-9]*; do\n"
        '  pymail -s "$f" -a "$f" --transport %s pmtest@example.org < /dev/null\n'
        "done\n" % srv.url
    )
    proc = subprocess.run(["sh", "-c", script], cwd=work, env=env, capture_output=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (0, b"")
    parts = sorted(p for p in os.listdir(work) if p.startswith("companyMega.0"))
    assert len(parts) == 4 and len(srv.messages) == 4  # 10 MB, base64 in the archive: 13.5 MB in 4000 KiB parts
    assert all(os.path.getsize(work / p) <= 4000 * 1024 for p in parts)
    for _f, _rc, raw in reversed(srv.messages):
        inbox.put(inbox.user, raw.replace(b"\r\n", b"\n"))
    code, err, out = fetch_and_unshar(run, inbox, tmp_path / "fetched", "mbox")
    assert (code, err) == (0, "")
    assert (out / "companyMega.logs.tar.gz").read_bytes() == big.read_bytes()
