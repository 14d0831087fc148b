"""pymail's transports under faults: a hanging sendmail, SMTP servers that stall or drip, --check,
several messages to standard output, what is kept after a configuration error, passwords in URLs.

The stalling SMTP servers come from tests/stalling.py (a real listening socket
on 127.0.0.1 that speaks as far as the fault needs); the rest runs against aiosmtpd.
"""

import itertools
import os
import subprocess
import time

import pytest
from stalling import StallingServer

from conftest import command_path


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def pymail(*args, home, input=b"hello\n", env=None, timeout=60):
    """Run pymail; (exit status, stdout bytes, stderr text, seconds it took)."""
    full = {**os.environ, "HOME": str(home)}
    full.pop("PIPEMAIL_DEBUG", None)
    full.update(env or {})
    start = time.monotonic()
    proc = subprocess.run(
        command_path("pymail") + [str(a) for a in args], input=input, capture_output=True, env=full, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr.decode(), time.monotonic() - start


def kept(home):
    dead = home / "dead.letter"
    return dead.read_bytes() if dead.exists() else b""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: only its parent (gone) would reap it
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- 1. passwords in URLs are never shown ------------------------------------------------------


def test_a_password_in_the_transport_option_is_redacted_everywhere(home):
    code, _out, err, _t = pymail("--transport", "smtp://alice:PASSWORD@mail.example.org", "to@example.org", home=home)
    assert code == 64
    assert err.splitlines()[0] == (
        "pymail: bad transport URL 'smtp://alice:<redacted>@mail.example.org': no password in the URL "
        "(see pipemail.conf(5) for where passwords go)"
    )
    assert err.splitlines()[1].startswith("pymail: the message is kept in")  # stdin is read: it is kept
    assert "PASSWORD" not in err and b"PASSWORD" not in kept(home)
    code, _out, err, _t = pymail("-v", "--transport", "imap://alice:PASSWORD@host", "to@example.org", home=home)
    assert code == 64 and "imap://alice:<redacted>@host" in err and "PASSWORD" not in err
    assert b"PASSWORD" not in kept(home)


def test_a_password_in_the_config_files_transport_is_redacted(home, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[accounts.a]\ntransport = "smtp://alice:PASSWORD@mail.example.org"\n')
    code, _out, err, _t = pymail("-v", "to@example.org", home=home, env={"PIPEMAIL_CONFIG": str(cfg)})
    assert code == 78
    assert err.splitlines()[0] == (
        "pymail: config file %s: account 'a': bad transport URL 'smtp://alice:<redacted>@mail.example.org': "
        "no password in the URL (see pipemail.conf(5) for where passwords go)" % cfg
    )
    assert "PASSWORD" not in err and b"PASSWORD" not in kept(home)


# -- 2. a sendmail that hangs is killed at --timeout --------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        # never reads its standard input: pymail's writes fill the pipe and would block forever
        'sleep 300 & echo $! > "$0.child"; wait',
        # reads the whole message, then hangs
        'cat > /dev/null; sleep 300 & echo $! > "$0.child"; wait',
    ],
    ids=["never-reads", "reads-then-hangs"],
)
def test_a_hanging_sendmail_is_killed_at_the_timeout_and_the_message_kept(home, tmp_path, script):
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\n%s\n" % script.replace("$0", str(sendmail)))
    sendmail.chmod(0o755)
    body = b"".join(os.urandom(32).hex().encode() + b"\n" for _ in range(6000))  # far more than a pipe holds
    code, _out, err, took = pymail(
        "--timeout", "1.5", "--transport", "sendmail:%s" % sendmail, "to@example.org", input=body, home=home
    )
    assert code == 75
    assert err.splitlines()[0] == "pymail: %s did not finish within 1.5 s; killed" % sendmail
    assert "the message is kept in" in err.splitlines()[1]
    assert took < 15
    dead = kept(home)
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in dead and body[:1000] in dead
    child = int((tmp_path / "sendmail.child").read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)  # its process group was killed, not only the program


def test_a_sendmail_that_stops_reading_and_exits_is_judged_by_its_status(home, tmp_path):
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\nhead -c 10 > /dev/null\necho 'queue full' >&2\nexit 75\n")
    sendmail.chmod(0o755)
    code, _out, err, _t = pymail(
        "--transport", "sendmail:%s" % sendmail, "to@example.org", input=b"x" * 500_000 + b"\n", home=home
    )
    assert code == 75 and err.splitlines()[0] == "pymail: %s refused the message: queue full" % sendmail
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in kept(home)


def test_a_sendmail_that_exits_0_without_reading_the_whole_message_is_told(home, tmp_path):
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\nhead -c 10 > /dev/null\nexit 0\n")
    sendmail.chmod(0o755)
    code, _out, err, _t = pymail(
        "--transport", "sendmail:%s" % sendmail, "to@example.org", input=b"x" * 500_000 + b"\n", home=home
    )
    assert code == 0 and kept(home) == b""  # its exit status judges: it took the message
    assert err == "pymail: %s exited 0 without reading the whole message: it may have sent it cut short\n" % sendmail
    reads_all = tmp_path / "reads-all"
    reads_all.write_text("#!/bin/sh\ncat > /dev/null\n")
    reads_all.chmod(0o755)
    code, _out, err, _t = pymail("--transport", "sendmail:%s" % reads_all, "to@example.org", home=home)
    assert (code, err) == (0, "")


# -- 3. SMTP servers that stall ------------------------------------------------------------------


def smtp_url(srv):
    return "smtp://127.0.0.1:%d" % srv.port


def test_smtp_timeout_during_data_says_timed_out(home):
    srv = StallingServer(b"220 hi\r\n", [b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"])
    code, _out, err, took = pymail("--timeout", "1", "--transport", smtp_url(srv), "to@example.org", home=home)
    srv.close()
    assert code == 75
    assert err.splitlines()[0] == "pymail: 127.0.0.1 timed out after 1 s during DATA"
    assert b"\r\nhello\r\n.\r\n" in srv.got  # the whole message went; the 250 never came
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in kept(home) and took < 15


def test_smtp_server_that_stops_reading_the_message_times_out_during_data(home, tmp_path):
    srv = StallingServer(b"220 hi\r\n", [b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"], read_body=False)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 << 20))  # more than loopback's socket buffers hold
    code, _out, err, took = pymail(
        "--timeout", "2", "-a", big, "--transport", smtp_url(srv), "to@example.org", input=b"", home=home
    )
    srv.close()
    assert code == 75 and err.splitlines()[0] == "pymail: 127.0.0.1 timed out after 2 s during DATA"
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in kept(home) and took < 30


def test_smtp_timeout_after_the_greeting_says_timed_out(home):
    srv = StallingServer(b"220 hi\r\n")
    code, _out, err, _t = pymail("--timeout", "1", "--transport", smtp_url(srv), "to@example.org", home=home)
    srv.close()
    assert code == 75 and err.splitlines()[0] == "pymail: 127.0.0.1 timed out after 1 s during EHLO"
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in kept(home)


def test_a_server_that_drips_its_greeting_times_out(home):
    # each line well within the timeout, the greeting never ends
    srv = StallingServer(drip=itertools.repeat(b"220-still greeting you\r\n"), interval=0.2)
    code, _out, err, took = pymail(
        "--timeout", "1.5", "--transport", smtp_url(srv), "to@example.org", home=home, timeout=30
    )
    srv.close()
    assert code == 75
    assert err.splitlines()[0] == "pymail: 127.0.0.1 timed out after 1.5 s during the greeting"
    assert took < 10 and b"X-Pipemail-Undelivered-To: to@example.org\n" in kept(home)


def test_aiosmtpd_slow_to_answer_the_message_times_out(smtp_server, home):
    srv = smtp_server()
    srv.data_delay = 3  # aiosmtpd answers the end of DATA only after 3 s
    code, _out, err, _t = pymail("--timeout", "1", "--transport", smtp_url(srv), "to@example.org", home=home)
    assert code == 75 and err.splitlines()[0] == "pymail: 127.0.0.1 timed out after 1 s during DATA"


# -- 4. --check says what it checked ---------------------------------------------------------------


def test_check_through_sendmail_says_what_was_and_was_not_checked(home, tmp_path):
    sendmail = tmp_path / "sendmail"
    sendmail.write_text("#!/bin/sh\necho called >> %s\n" % (tmp_path / "calls"))
    sendmail.chmod(0o755)
    code, out, err, _t = pymail("--check", "--transport", "sendmail:%s" % sendmail, "a@example.org", home=home)
    assert (code, out) == (0, b"")
    assert err == "pymail: check: sendmail:%s is executable; recipients are not checked without SMTP\n" % sendmail
    assert not (tmp_path / "calls").exists() and kept(home) == b""
    code, _out, err, _t = pymail("--check", "--transport", "sendmail:%s" % (tmp_path / "nope"), "a@x.org", home=home)
    assert code == 78 and err == "pymail: cannot run %s: No such file or directory\n" % (tmp_path / "nope")
    assert kept(home) == b""  # --check keeps nothing


def test_check_through_local_transports(home, tmp_path):
    box = tmp_path / "out.mbox"
    code, _out, err, _t = pymail("--check", "--transport", "mbox:%s" % box, "a@example.org", home=home)
    assert code == 0 and not box.exists()
    assert err == (
        "pymail: check: mbox:%s can be created (nothing was written); recipients are not checked without SMTP\n" % box
    )
    md = tmp_path / "Maildir"
    code, _out, err, _t = pymail("--check", "--transport", "maildir:%s" % md, "a@example.org", home=home)
    assert code == 0 and not md.exists() and "check: maildir:%s can be created (nothing was written)" % md in err
    code, out, err, _t = pymail("--check", "--transport", "-", "a@example.org", home=home)
    assert (code, out) == (0, b"")
    assert (
        err
        == "pymail: check: the message would be written to standard output; recipients are not checked without SMTP\n"
    )
    code, _out, err, _t = pymail("--check", "--transport", "mbox:%s" % (tmp_path / "no" / "x"), "a@x.org", home=home)
    assert code == 73 and err == "pymail: cannot write mailbox %s: No such file or directory\n" % (
        tmp_path / "no" / "x"
    )


# -- 5. several messages to standard output are an mbox --------------------------------------------


def test_max_size_parts_to_stdout_are_an_mbox_that_pyunshar_reassembles(home, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(150_000))
    code, out, err, _t = pymail(
        "--max-size", "40K", "-a", big, "-s", "backup", "--transport", "-", "x@example.org", input=b"", home=home
    )
    assert (code, err) == (0, "")
    assert out.startswith(b"From ") and out.count(b"\n\nFrom ") >= 3  # one message of the mbox a part
    unshar = subprocess.run(
        command_path("pyunshar") + ["-d", str(tmp_path / "out")], input=out, capture_output=True, timeout=60
    )
    assert unshar.returncode == 0, unshar.stderr
    assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()


def test_one_message_to_stdout_stays_as_it_is(home):
    code, out, _err, _t = pymail("--transport", "-", "-s", "x", "a@example.org", input=b"From here\nbody\n", home=home)
    assert code == 0 and out.startswith(b"Date: ") and out.endswith(b"\n\nFrom here\nbody\n")


# -- 6. a configuration error keeps the message ------------------------------------------------------


def test_a_config_error_keeps_the_message_and_says_where(home, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[accounts.a]\ntransport = "smtp://127.0.0.1:1"\nuser = "me"\npassword = "PASSWORD"\n')
    cfg.chmod(0o644)
    code, _out, err, _t = pymail(
        "-s",
        "nightly",
        "to@example.org",
        input=b"the cron job's output\n",
        home=home,
        env={"PIPEMAIL_CONFIG": str(cfg)},
    )
    assert code == 78
    dead = home / "dead.letter"
    assert err.splitlines() == [
        "pymail: %s holds a password and is readable by others: chmod 600 %s" % (cfg, cfg),
        "pymail: the message is kept in %s for to@example.org (pymail --resend %s sends it again)" % (dead, dead),
    ]
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in kept(home) and b"\n\nthe cron job's output\n" in kept(home)
    assert b"PASSWORD" not in kept(home)


@pytest.mark.parametrize(
    "config, first_line",
    [
        ("[accounts.a\n", "pymail: config file {cfg}: "),  # TOML that does not parse
        ('default = "b"\n[accounts.a]\n', "pymail: config file {cfg}: default account 'b' is not defined"),
        ('[accounts.a]\ntransport = "bogus:x"\n', "pymail: config file {cfg}: account 'a': unknown transport URL"),
    ],
    ids=["syntax", "no-such-default", "bad-transport"],
)
def test_a_broken_config_file_keeps_the_message(home, tmp_path, config, first_line):
    cfg = tmp_path / "config.toml"
    cfg.write_text(config)
    code, _out, err, _t = pymail("-s", "nightly", "to@example.org", home=home, env={"PIPEMAIL_CONFIG": str(cfg)})
    assert code == 78
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(first_line.format(cfg=cfg))
    assert lines[1].startswith("pymail: the message is kept in %s for to@example.org" % (home / "dead.letter"))
    assert b"Subject: nightly\n" in kept(home) and b"\n\nhello\n" in kept(home)


def test_no_transport_at_all_keeps_the_message_and_resend_sends_it(smtp_server, home, tmp_path):
    code, _out, err, _t = pymail(
        "to@example.org", home=home, env={"PIPEMAIL_SENDMAIL": str(tmp_path / "no-sendmail")}, input=b"precious\n"
    )
    assert code == 78 and err.startswith("pymail: no transport: give --transport smtp://HOST")
    assert "the message is kept in" in err.splitlines()[1]
    srv = smtp_server()
    code, _out, err, _t = pymail("--transport", smtp_url(srv), "--resend", home / "dead.letter", home=home, input=b"")
    assert code == 0, err
    assert srv.messages[0][1] == ["to@example.org"] and srv.messages[0][2].endswith(b"\r\n\r\nprecious\r\n")


def test_check_and_stdout_keep_nothing_on_a_config_error(home, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[accounts.a\n")
    for args in (["--check"], ["--transport", "-"]):
        code, _out, _err, _t = pymail(*args, "to@example.org", home=home, env={"PIPEMAIL_CONFIG": str(cfg)})
        assert code == 78 and kept(home) == b""


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(home, value):
    code, out, err, _t = pymail("--timeout", value, "--transport", "smtp://127.0.0.1:1", "to@example.org", home=home)
    assert (code, out) == (64, b"")
    assert err == ("pymail: --timeout %s: give a number of seconds over 0 (see 'pymail --help')\n" % value)
    assert kept(home) == b""


def test_help_says_what_check_does_with_a_transport_other_than_smtp(home):
    code, out, _err, _t = pymail("--help", home=home)
    text = " ".join(out.decode().split())
    assert code == 0
    assert (
        "--check Send nothing: over SMTP walk EHLO to RCPT TO for every recipient, then RSET; with another "
        "transport check what can be checked without sending, and say what was not." in text
    )


def test_a_dead_letter_that_cannot_be_written_is_said_once_after_the_reason(home):
    dead = home / "no" / "such" / "dead.letter"
    code, _out, err, _t = pymail(
        "--transport", "smtp://127.0.0.1:1", "to@example.org", home=home, env={"DEAD": str(dead)}
    )
    assert code == 74
    assert err.splitlines() == [
        "pymail: cannot connect to 127.0.0.1 port 1: Connection refused",
        "pymail: the message could not be kept: cannot write mailbox %s: No such file or directory" % dead,
    ]


def test_ehlo_gives_this_machines_name_as_hostname_says(smtp_server, home):
    # not smtplib's getfqdn(), which says "localhost" where /etc/hosts reads "127.0.0.1 localhost NAME"
    import subprocess

    from pipemail.message import fqdn

    srv = smtp_server()
    code, _out, err, _t = pymail("--transport", smtp_url(srv), "to@example.org", home=home)
    assert code == 0, err
    assert srv.ehlo_names == [fqdn()]
    name = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert fqdn() == name or fqdn().split(".")[0] == name.split(".")[0]
    assert fqdn().split(".")[0] != "localhost"
