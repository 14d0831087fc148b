"""pypop and the pipes it writes to, against the real Dovecot of tests/pop3server.py: an MDA that exits
without reading, a reader of standard output that goes away; and passwords given in its URLs."""

import os
import subprocess

import pop3server
import pytest
from stalling import StallingServer

from conftest import command_path

dovecot = pop3server.dovecot

BIG = b"y" * 299 + b"\n"  # a line of the bodies below; 1000 of them fill any pipe


def msg(n, lines=1000):
    return b"From: s@example.org\nTo: pmtest@example.org\nSubject: message %d\n\n" % n + BIG * lines


@pytest.fixture
def pop(run, dovecot, tmp_path):
    dovecot.clear(dovecot.user)
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PIPEMAIL_PASSWORD": dovecot.password}

    def _pop(*args, server=None):
        srv = server or "pop3://%s:%d" % (dovecot.host, dovecot.port)
        return run(
            "pypop", "--server", srv, "--user", dovecot.user, "--tls-trust-file", dovecot.ca_file, *args, env=env
        )

    _pop.env = env
    _pop.argv = lambda *args: (
        command_path("pypop")
        + [
            "--server",
            "pop3://%s:%d" % (dovecot.host, dovecot.port),
            "--user",
            dovecot.user,
            "--tls-trust-file",
            dovecot.ca_file,
            *args,
        ]
    )
    return _pop


def test_an_mda_that_exits_0_without_reading_counts_as_stored_with_a_warning(pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1))
    size = len(msg(1))
    r = pop("fetch", "--mda", "true", "--delete")
    assert r.returncode == 0
    assert r.stderr == "pypop: the MDA 'true' did not read the whole message (%d of %d bytes unread)\n" % (size, size)
    assert dovecot.count(dovecot.user) == 0  # stored, as its exit status says: deleted with --delete


def test_an_mda_that_exits_75_without_reading_keeps_the_message_on_the_server(pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1))
    size = len(msg(1))
    r = pop("fetch", "--mda", "exit 75", "--delete")
    assert r.returncode == 75
    assert r.stderr.splitlines() == [
        "pypop: the MDA 'exit 75' did not read the whole message (%d of %d bytes unread)" % (size, size),
        "pypop: the MDA 'exit 75' exited 75; the message stays on the server",
    ]
    assert dovecot.count(dovecot.user) == 1
    out = tmp_path / "got"
    r = pop("fetch", "--mda", "cat > %s" % out)  # not recorded as fetched: offered again
    assert (r.returncode, r.stderr) == (0, "") and out.read_bytes() == msg(1)


def test_an_mda_that_reads_part_then_fails_is_said_and_judged_by_its_status(pop, dovecot, tmp_path):
    dovecot.put(dovecot.user, msg(1))
    r = pop("fetch", "--mda", "head -c 100 > /dev/null; exit 3")
    assert r.returncode == 69
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("pypop: the MDA 'head -c 100 > /dev/null; exit 3' did not read")
    assert lines[1] == "pypop: the MDA 'head -c 100 > /dev/null; exit 3' exited 3; the message stays on the server"


def test_an_mda_that_reads_everything_says_nothing(pop, dovecot, tmp_path):
    for n in range(3):
        dovecot.put(dovecot.user, msg(n, lines=3))
    out = tmp_path / "got"
    r = pop("fetch", "--mda", "cat >> %s" % out, "--delete")
    assert (r.returncode, r.stderr) == (0, "") and out.read_bytes().count(b"Subject: message") == 3


def test_fetch_into_a_pipe_closed_early_is_an_error_and_records_nothing_it_did_not_write(pop, dovecot, tmp_path):
    for n in range(4):
        dovecot.put(dovecot.user, msg(n))
    env = {**os.environ, **pop.env}
    env.pop("PIPEMAIL_DEBUG", None)
    fetch = subprocess.Popen(pop.argv("fetch"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = subprocess.Popen(["head", "-c", "10"], stdin=fetch.stdout, stdout=subprocess.PIPE)
    fetch.stdout.close()  # head holds the only read end
    assert head.communicate(timeout=60)[0] == b"From MAILE"
    err = fetch.stderr.read().decode()
    assert fetch.wait(timeout=60) == 74
    assert err == (
        "pypop: cannot write to standard output: its reader is gone (Broken pipe); "
        "the messages not recorded as fetched are fetched again next time\n"
    )
    box = tmp_path / "box"
    r = pop("fetch", "--mbox", str(box))  # nothing was recorded: all four come again
    assert (r.returncode, r.stderr) == (0, "")
    assert box.read_bytes().count(b"\nSubject: message ") == 4


def test_list_into_a_closed_pipe_is_one_line_not_a_traceback(pop, dovecot):
    for n in range(3):
        dovecot.put(dovecot.user, msg(n, lines=1))
    env = {**os.environ, **pop.env}
    proc = subprocess.Popen(pop.argv("list"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    gone = "pypop: cannot write to standard output: its reader is gone (Broken pipe)\n"
    assert (proc.wait(timeout=60), err) == (74, gone)


@pytest.mark.parametrize(
    "server, shown",
    [
        ("pop3://pmtest:PASSWORD@127.0.0.1", "bad POP or IMAP URL 'pop3://pmtest:<redacted>@127.0.0.1'"),
        ("pmtest:PASSWORD@127.0.0.1", "bad POP or IMAP URL 'pop3://pmtest:<redacted>@127.0.0.1'"),
        ("imaps://pmtest:PASSWORD@127.0.0.1", "bad POP or IMAP URL 'imaps://pmtest:<redacted>@127.0.0.1'"),
        ("smtp://pmtest:PASSWORD@127.0.0.1", "unknown POP or IMAP URL 'smtp://pmtest:<redacted>@127.0.0.1'"),
    ],
)
def test_a_password_in_the_server_option_is_never_shown(run, tmp_path, server, shown):
    r = run("pypop", "-v", "--server", server, "stat", env={"HOME": str(tmp_path)})
    assert r.returncode == 64 and r.stderr.startswith("pypop: " + shown) and "PASSWORD" not in r.stderr


def test_a_password_in_the_pop_key_is_never_shown(run, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[accounts.a]\npop = "pop3s://me:PASSWORD@pop.example.org"\n')
    r = run("pypop", "-v", "stat", env={"HOME": str(tmp_path), "PIPEMAIL_CONFIG": str(cfg)})
    assert r.returncode == 78 and "pop3s://me:<redacted>@pop.example.org" in r.stderr and "PASSWORD" not in r.stderr


# -- a POP3 server that stalls or drips ------------------------------------------------------------


@pytest.mark.parametrize(
    "greeting, drip, step",
    [
        (b"+OK hello\r\n", None, "CAPA"),  # greets, then never answers
        (b"+OK " + b"z" * 10_000 + b"\r\n", 0.1, "the greeting"),  # every byte in time, the line never ends
    ],
    ids=["stalls", "drips"],
)
def test_a_pop3_server_that_stalls_times_out_with_the_step(run, tmp_path, greeting, drip, step):
    srv = (
        StallingServer(greeting) if drip is None else StallingServer(drip=(bytes([b]) for b in greeting), interval=drip)
    )
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PIPEMAIL_PASSWORD": "x"}
    server = "pop3://127.0.0.1:%d" % srv.port
    r = run("pypop", "--timeout", "1", "--server", server, "--user", "me", "stat", env=env)
    srv.close()
    assert (r.returncode, r.stderr) == (75, "pypop: 127.0.0.1 timed out after 1 s during %s\n" % step)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(run, tmp_path, value):
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "PIPEMAIL_PASSWORD": "x"}
    r = run("pypop", "--timeout", value, "--server", "pop3://127.0.0.1:1", "--user", "me", "stat", env=env)
    assert (r.returncode, r.stdout) == (64, b"")
    assert r.stderr == "pypop: --timeout %s: give a number of seconds over 0 (see 'pypop --help')\n" % value
