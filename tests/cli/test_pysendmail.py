"""pysendmail as /usr/sbin/sendmail: every caller's argv from issue 12 against a real SMTP
server (aiosmtpd on loopback), the rewrites (exact From, MAIL FROM, RCPT), aliases, the lone
dot, refused options, the queue on a temporary failure, the dead letter on a 5xx, the
maildrop of a caller that is not root, and bounded memory."""

import email
import email.policy
import email.utils
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_server import free_port
from test_proxy import MICROSOCKS_OUT, microsocks, peers  # noqa: F401 (microsocks: a fixture)

from pipemail.message import fqdn

from conftest import ROOT, command_path

HOST = fqdn().split(".")[0]  # what "(vm)" says on host vm


def parse(raw):
    return email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)


def header_bytes(raw, name):
    """The raw header line ``name: ...`` (unfolded) as the server received it."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    lines = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += line
        else:
            lines.append(line)
    found = [line for line in lines if line.lower().startswith(name.lower().encode() + b":")]
    return found


class Setup:
    """A configuration, an aliases file, a queue and a home of the test's own."""

    def __init__(self, tmp_path, url, aliases="root: admin@example.org\ncron: root\n", extra="", top=""):
        self.dir = tmp_path
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.queue = tmp_path / "queue"
        self.aliases = tmp_path / "aliases"
        self.aliases.write_text(aliases)
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            '%squeue = "%s"\n[accounts.main]\nfrom = "Alerts <alerts@example.com>"\ntransport = "%s"\n'
            'tls = "none"\naliases = "%s"\n%s' % (top, self.queue, url, self.aliases, extra)
        )
        self.config.chmod(0o600)

    def env(self, **more):
        env = {"HOME": str(self.home), "PIPEMAIL_CONFIG": str(self.config), "TMPDIR": str(self.dir)}
        env.update(more)
        return env

    def queued(self):
        """The envelopes in queue/q, as dicts."""
        q = self.queue / "q"
        if not q.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(q.glob("*.env"))]

    def queued_messages(self):
        q = self.queue / "q"
        return [p.read_bytes() for p in sorted(q.glob("*.msg"))] if q.exists() else []

    def dead_letter(self):
        path = self.home / "dead.letter"
        return path.read_bytes() if path.exists() else b""

    def terminated(self, message, until, settle=0.0):
        """``pysendmail -i root`` given ``message``, sent SIGTERM (a caller's timeout) once ``until()``
        holds (it is waited for up to 20 s) and ``settle`` seconds more; ``(exit status, stderr)``."""
        import signal
        import time

        env = {**os.environ, **self.env()}
        env.pop("PIPEMAIL_DEBUG", None)
        p = subprocess.Popen(
            command_path("pysendmail") + ["-i", "root"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        p.stdin.write(message)
        p.stdin.close()
        deadline = time.monotonic() + 20
        while not until() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(settle)
        p.send_signal(signal.SIGTERM)
        err = p.stderr.read().decode()
        return p.wait(20), err


@pytest.fixture
def setup(tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url)
    s.srv = srv
    return s


def sendmail(run, s, *args, input=b"", env=None):
    return run("pysendmail", *args, input=input, env=s.env(**(env or {})))


CRON_MESSAGE = (
    b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@vm> echo hi\n"
    b"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
    b"X-Cron-Env: <SHELL=/bin/sh>\n\nhi\n"
)
CRON_FROM = b'From: "Cron Daemon (%s)" <alerts@example.com>' % HOST.encode()


# (name, argv, message, envelope sender, recipients, From line as received)
CALLERS = [
    (
        "cron",
        ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        CRON_MESSAGE,
        "alerts@example.com",
        ["admin@example.org"],
        CRON_FROM,
    ),
    (
        "cronie",
        ["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"],
        CRON_MESSAGE,
        "alerts@example.com",
        ["admin@example.org"],
        CRON_FROM,
    ),
    (
        "bsd-mailx",
        ["-i", "-t"],
        b"To: cron\nSubject: nightly\n\nreport\n",
        "alerts@example.com",
        ["admin@example.org"],
        b'From: "root (%s)" <alerts@example.com>' % HOST.encode(),
    ),
    (
        "s-nail",
        ["-i", "--", "root"],
        b"Date: Thu, 03 Dec 2026 10:00:00 +0000\nTo: root\nSubject: s\n\nbody\n",
        "alerts@example.com",
        ["admin@example.org"],
        b'From: "root (%s)" <alerts@example.com>' % HOST.encode(),
    ),
    (
        "mutt",
        ["-oem", "-oi", "--", "root"],
        b"From: Admin <root@%s>\nTo: root\nSubject: m\n\nbody\n" % fqdn().encode(),
        "alerts@example.com",
        ["admin@example.org"],
        b'From: "Admin (%s)" <alerts@example.com>' % HOST.encode(),
    ),
    (
        "git send-email",
        ["-i", "root", "dev@example.net"],
        b"From: Jane Dev <jane@example.com>\nTo: dev@example.net\nCc: root\nSubject: [PATCH] x\n\npatch\n",
        "jane@example.com",
        ["admin@example.org", "dev@example.net"],
        b"From: Jane Dev <jane@example.com>",
    ),
    (
        "git send-email -f",
        ["-f", "jane@example.com", "-i", "dev@example.net", "root"],
        b"From: Jane Dev <jane@example.com>\nTo: dev@example.net\nSubject: [PATCH] y\n\npatch\n",
        "jane@example.com",
        ["dev@example.net", "admin@example.org"],
        b"From: Jane Dev <jane@example.com>",
    ),
    (
        "logwatch",
        ["-t"],
        b"To: root\nFrom: logwatch@%s\nSubject: Logwatch\n\nlog\n" % fqdn().encode(),
        "alerts@example.com",
        ["admin@example.org"],
        b'From: "logwatch (%s)" <alerts@example.com>' % HOST.encode(),
    ),
    (
        "unattended-upgrades",
        ["-oi", "-t"],
        b"Subject: upgrades\nTo: root\n\ndone\n",
        "alerts@example.com",
        ["admin@example.org"],
        b'From: "root (%s)" <alerts@example.com>' % HOST.encode(),
    ),
]


@pytest.mark.parametrize("name, argv, msg, sender, rcpts, from_line", CALLERS, ids=[c[0] for c in CALLERS])
def test_every_caller_is_delivered_rewritten_and_aliased(run, setup, name, argv, msg, sender, rcpts, from_line):
    r = sendmail(run, setup, *argv, input=msg)
    assert (r.returncode, r.stderr, r.stdout) == (0, "", b"")
    ((mail_from, got_rcpts, raw),) = setup.srv.messages
    assert (mail_from, got_rcpts) == (sender, rcpts)
    assert header_bytes(raw, "From") == [from_line]
    m = parse(raw)
    assert m["Date"] and m["Message-ID"].endswith("@%s>" % fqdn())
    assert "Bcc" not in m
    assert setup.queued() == [] and setup.dead_letter() == b""


def test_verbose_says_each_rewrite(run, setup):
    r = sendmail(run, setup, "-v", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root", input=CRON_MESSAGE)
    assert r.returncode == 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("pysendmail: ")]
    assert lines == [
        "pysendmail: alias root -> admin@example.org",
        'pysendmail: From: root (Cron Daemon) -> "Cron Daemon (%s)" <alerts@example.com>' % HOST,
        "pysendmail: envelope sender root -> alerts@example.com",
        "pysendmail: To root -> root@example.com (the account's domain)",
        "pysendmail: Date: added",
        "pysendmail: Message-ID: added",
    ]
    assert "C: MAIL FROM:<alerts@example.com>" in r.stderr  # the dialogue too


def test_header_recipients_get_the_domain_and_bcc_is_removed(run, setup):
    msg = b"To: root, bob\nCc: carol@example.net\nBcc: secret@example.net\nSubject: x\n\nbody\n"
    r = sendmail(run, setup, "-t", input=msg)
    assert (r.returncode, r.stderr) == (0, "")
    ((_f, rcpts, raw),) = setup.srv.messages
    assert rcpts == ["admin@example.org", "bob@example.com", "carol@example.net", "secret@example.net"]
    assert header_bytes(raw, "To") == [b"To: root@example.com, bob@example.com"]
    assert header_bytes(raw, "Bcc") == [] and b"secret" not in raw


def test_dash_f_bare_name_counts_as_local(run, setup):
    r = sendmail(run, setup, "-f", "root", "-i", "admin@example.org", input=b"Subject: x\n\nbody\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, _r, raw),) = setup.srv.messages
    assert mail_from == "alerts@example.com"
    assert header_bytes(raw, "From") == [b'From: "root (%s)" <alerts@example.com>' % HOST.encode()]


def test_dash_capital_f_names_a_missing_from(run, setup):
    r = sendmail(run, setup, "-FBackup Job", "-i", "admin@example.org", input=b"Subject: x\n\nbody\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, _r, raw),) = setup.srv.messages
    assert header_bytes(raw, "From") == [b'From: "Backup Job (%s)" <alerts@example.com>' % HOST.encode()]


def test_a_foreign_from_is_kept_and_the_envelope_is_the_accounts(run, setup):
    r = sendmail(run, setup, "-i", "admin@example.org", input=b"From: Me <me@gmail.example>\nSubject: x\n\nb\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, _r, raw),) = setup.srv.messages
    assert mail_from == "alerts@example.com"
    assert header_bytes(raw, "From") == [b"From: Me <me@gmail.example>"]


def test_date_and_message_id_are_kept_when_present(run, setup):
    msg = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <given@example.com>\nSubject: x\n\nb\n"
    r = sendmail(run, setup, "-i", "admin@example.org", input=msg)
    assert r.returncode == 0
    ((_m, _r, raw),) = setup.srv.messages
    assert header_bytes(raw, "Date") == [b"Date: Mon, 1 Jan 2024 00:00:00 +0000"]
    assert header_bytes(raw, "Message-ID") == [b"Message-ID: <given@example.com>"]


def test_a_message_without_headers_is_a_body(run, setup):
    r = sendmail(run, setup, "-i", "root", input=b"hello world\nsecond line\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, rcpts, raw),) = setup.srv.messages
    assert rcpts == ["admin@example.org"]
    m = parse(raw)
    assert m.get_content() == "hello world\nsecond line\n"
    assert m["Date"] and m["Message-ID"] and m["From"]


# -- the lone dot -------------------------------------------------------------------------------


def test_a_lone_dot_ends_the_message_without_i(run, setup):
    r = sendmail(run, setup, "admin@example.org", input=b"Subject: x\n\nbefore\n..kept\n.\nafter\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, _r, raw),) = setup.srv.messages
    assert parse(raw).get_content() == "before\n..kept\n"


def test_a_lone_dot_with_crlf_ends_it_too(run, setup):
    r = sendmail(run, setup, "admin@example.org", input=b"Subject: x\r\n\r\nbefore\r\n.\r\nafter\r\n")
    assert r.returncode == 0
    ((_m, _r, raw),) = setup.srv.messages
    assert parse(raw).get_content() == "before\n"


@pytest.mark.parametrize("flag", ["-i", "-oi"])
def test_with_i_a_lone_dot_is_part_of_the_message(run, setup, flag):
    r = sendmail(run, setup, flag, "admin@example.org", input=b"Subject: x\n\nbefore\n.\nafter\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, _r, raw),) = setup.srv.messages
    assert parse(raw).get_content() == "before\n.\nafter\n"


# -- refused ------------------------------------------------------------------------------------


REFUSED = [
    (
        ["-bs"],
        "pysendmail: -bs is not supported (pysendmail does not speak SMTP on standard input: "
        "give the message with -t or RECIPIENT operands)",
    ),
    (
        ["-bd"],
        "pysendmail: -bd is not supported (pysendmail is no daemon: run pysendmail --run-queue "
        "from cron or a systemd timer)",
    ),
    (["-bx"], "pysendmail: -bx is not supported (pysendmail takes -bm, -bp and -bi)"),
    (
        ["-q30m"],
        "pysendmail: -q30m is not supported (pysendmail -q sends the queue once; its periodic runs "
        "are pysendmail --run-queue from cron or a timer)",
    ),
    (["-X", "/tmp/log", "root"], "pysendmail: -X is not supported (see 'pysendmail --help')"),
    (["-it", "-C/etc/mail.cf"], "pysendmail: -C is not supported (see 'pysendmail --help')"),
    (["--daemon"], "pysendmail: --daemon is not supported (see 'pysendmail --help')"),
    (["-F"], "pysendmail: -F needs a value"),
    (["-o"], "pysendmail: -o needs an option glued to it, as -oi or -oem"),
    (["-q", "root"], "pysendmail: -q takes no RECIPIENT operands"),
]


@pytest.mark.parametrize("argv, line", REFUSED, ids=[" ".join(a) for a, _l in REFUSED])
def test_refused_options_are_one_line_and_64_and_nothing_is_sent(run, setup, argv, line):
    r = sendmail(run, setup, *argv, input=b"To: root\nSubject: x\n\nbody\n")
    assert (r.returncode, r.stderr, r.stdout) == (64, line + "\n", b"")
    assert setup.srv.messages == [] and setup.queued() == [] and setup.dead_letter() == b""


def test_no_recipients_is_64_and_the_message_kept(run, setup):
    r = sendmail(run, setup, "-t", "-i", input=b"Subject: x\n\nbody\n")
    assert r.returncode == 64
    assert r.stderr.splitlines() == [
        "pysendmail: no recipients: give RECIPIENT operands, or -t with To, Cc or Bcc in the message",
        "pysendmail: the message is kept in %s/dead.letter" % setup.home,
    ]
    dead = setup.dead_letter()
    assert b"X-Pipemail-Undelivered-To: root\n" in dead and dead.endswith(b"Subject: x\n\nbody\n\n")


def test_help_and_version(run, setup):
    r = sendmail(run, setup, "--help")
    assert r.returncode == 0 and b"Examples:" in r.stdout and b"--run-queue" in r.stdout
    r = sendmail(run, setup, "--version")
    assert r.returncode == 0 and r.stdout.startswith(b"pysendmail ")


def test_bi_is_nothing_to_do(run, setup):
    r = sendmail(run, setup, "-bi")
    assert (r.returncode, r.stderr, r.stdout) == (0, "", b"")


# -- aliases ------------------------------------------------------------------------------------


def test_default_alias_takes_every_other_name(run, tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url, aliases="root: admin@example.org\ndefault: ops@example.org\n")
    r = sendmail(run, s, "-i", "www-data", "root", input=b"Subject: x\n\nb\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, rcpts, _raw),) = srv.messages
    assert rcpts == ["ops@example.org", "admin@example.org"]


def test_command_file_and_include_aliases_are_never_run_and_warned(run, tmp_path, smtp_server):
    srv = smtp_server()
    witness = tmp_path / "ran"
    s = Setup(
        tmp_path,
        srv.url,
        aliases='root: "|touch %s", /var/mail/x, :include:/etc/list,\n  admin@example.org\n' % witness,
    )
    r = sendmail(run, s, "-i", "root", input=b"Subject: x\n\nb\n")
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        "pysendmail: aliases %s: root: |touch %s is not run, written or read by pysendmail: skipped"
        % (s.aliases, witness),
        "pysendmail: aliases %s: root: /var/mail/x is not run, written or read by pysendmail: skipped" % s.aliases,
        "pysendmail: aliases %s: root: :include:/etc/list is not run, written or read by pysendmail: skipped"
        % s.aliases,
    ]
    ((_m, rcpts, _raw),) = srv.messages
    assert rcpts == ["admin@example.org"] and not witness.exists()


def test_an_alias_loop_is_said_and_stops(run, tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url, aliases="a: b\nb: a, admin@example.org\n")
    r = sendmail(run, s, "-i", "a", input=b"Subject: x\n\nb\n")
    assert r.returncode == 0
    assert r.stderr == "pysendmail: aliases %s: a loops back to a: delivered to a as it is\n" % s.aliases
    ((_m, rcpts, _raw),) = srv.messages
    assert rcpts == ["a@example.com", "admin@example.org"]


def test_a_missing_named_aliases_file_is_78_and_the_message_kept(run, tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url)
    s.aliases.unlink()
    r = sendmail(run, s, "-i", "root", input=b"Subject: x\n\nb\n")
    assert r.returncode == 78
    assert r.stderr.splitlines()[0] == (
        "pysendmail: aliases file %s: No such file or directory (the account's aliases key names it)" % s.aliases
    )
    assert b"X-Pipemail-Undelivered-To: root\n" in s.dead_letter() and srv.messages == []


def test_a_bare_name_without_any_domain_is_78(run, tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url)
    s.config.write_text('[accounts.main]\ntransport = "%s"\ntls = "none"\naliases = "%s"\n' % (srv.url, s.aliases))
    r = sendmail(run, s, "-i", "bob", input=b"Subject: x\n\nb\n")
    assert r.returncode == 78
    assert r.stderr.splitlines()[0] == (
        'pysendmail: recipient bob has no domain, which SMTP needs: set domain = "example.com" (or from) in '
        "account main of %s (see pipemail.conf(5)), or map it in the aliases file" % s.config
    )


# -- the queue, the dead letter ----------------------------------------------------------------


def test_server_down_queues_and_exits_0(run, tmp_path):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    r = sendmail(run, s, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root", input=CRON_MESSAGE)
    assert r.returncode == 0
    (env,) = s.queued()
    qid = sorted((s.queue / "q").glob("*.env"))[0].name[: -len(".env")]
    answer = "cannot connect to 127.0.0.1 port %d: Connection refused" % port
    assert r.stderr == (
        "pysendmail: queued as %s in %s for admin@example.org: %s (pysendmail -q sends it now; "
        "pysendmail --run-queue retries it)\n" % (qid, s.queue, answer)
    )
    assert (env["sender"], env["recipients"], env["tries"], env["answer"]) == (
        "alerts@example.com",
        ["admin@example.org"],
        1,
        answer,
    )
    (raw,) = s.queued_messages()
    assert header_bytes(raw, "From") == [CRON_FROM] and raw.endswith(b"\n\nhi\n")
    assert s.dead_letter() == b""


def test_a_failing_password_command_queues(run, tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url, extra='user = "alerts@example.com"\npassword_command = "echo locked >&2; exit 3"\n')
    r = sendmail(run, s, "-i", "root", input=b"Subject: x\n\nb\n")
    assert r.returncode == 0
    (env,) = s.queued()
    assert env["answer"] == "account 'main': password_command failed with exit status 3: locked"
    assert "pysendmail: queued as " in r.stderr and srv.messages == []


def test_a_4xx_recipient_is_queued(run, setup):
    setup.srv.rcpt_replies["admin@example.org"] = "451 4.3.0 try later"
    r = sendmail(run, setup, "-i", "root", "ok@example.net", input=b"Subject: x\n\nb\n")
    assert r.returncode == 0
    ((_m, rcpts, _raw),) = setup.srv.messages
    assert rcpts == ["ok@example.net"]
    (env,) = setup.queued()
    assert env["recipients"] == ["admin@example.org"]
    assert "451" in env["answer"] and "pysendmail: queued as" in r.stderr


def test_a_5xx_recipient_is_67_and_kept_in_the_dead_letter(run, setup):
    setup.srv.rcpt_replies["admin@example.org"] = "550 5.1.1 no such user"
    r = sendmail(run, setup, "-i", "root", input=b"Subject: x\n\nb\n")
    assert r.returncode == 67
    assert setup.queued() == []
    dead = setup.dead_letter()
    assert b"X-Pipemail-Undelivered-To: admin@example.org\n" in dead and dead.startswith(b"From alerts@example.com ")
    assert "550 5.1.1 no such user" in r.stderr
    assert "the message is kept in %s/dead.letter for admin@example.org" % setup.home in r.stderr


def test_a_5xx_to_data_is_69_and_kept(run, setup):
    setup.srv.data_reply = "554 5.6.0 rejected"
    r = sendmail(run, setup, "-i", "root", input=b"Subject: x\n\nb\n")
    assert r.returncode == 69
    assert setup.queued() == [] and b"X-Pipemail-Undelivered-To: admin@example.org\n" in setup.dead_letter()


def test_mixed_answers_queue_the_4xx_and_keep_the_5xx(run, setup):
    setup.srv.rcpt_replies["admin@example.org"] = "452 4.2.2 mailbox full"
    setup.srv.rcpt_replies["gone@example.net"] = "550 5.1.1 no such user"
    r = sendmail(run, setup, "-i", "root", "gone@example.net", "ok@example.net", input=b"Subject: x\n\nb\n")
    assert r.returncode == 67
    ((_m, rcpts, _raw),) = setup.srv.messages
    assert rcpts == ["ok@example.net"]
    (env,) = setup.queued()
    assert env["recipients"] == ["admin@example.org"]
    dead = setup.dead_letter()
    assert b"X-Pipemail-Undelivered-To: gone@example.net\n" in dead and b"admin@" not in dead.split(b"\n\n")[0]


def test_a_malformed_message_is_65_and_kept(run, setup):
    r = sendmail(run, setup, "-i", "root", input=b"Subject: " + b"x" * (2 << 20) + b"\n\nb\n")
    assert r.returncode == 65
    assert "header block is over" in r.stderr
    assert setup.srv.messages == [] and setup.queued() == [] and setup.dead_letter()


# -- names, memory --------------------------------------------------------------------------


def _linked(tmp_path, name):
    """``name`` (mailq, newaliases) as a symlink to the pysendmail console script."""
    target = command_path("pysendmail")
    link = tmp_path / name
    if len(target) == 1:
        link.symlink_to(target[0])
        return [str(link)]
    link.symlink_to(ROOT / "bin" / "pysendmail")
    return [sys.executable, str(link)]


def test_newaliases_is_bi_and_makes_the_system_queue_as_root(tmp_path, setup):
    argv = _linked(tmp_path, "newaliases")
    p = subprocess.run(argv, capture_output=True, env={**os.environ, **setup.env()}, timeout=60)
    assert (p.returncode, p.stderr, p.stdout) == (0, b"", b"")
    if os.geteuid() == 0:
        st = os.stat(setup.queue / "maildrop")
        assert stat.S_IMODE(st.st_mode) == 0o1733 and st.st_uid == 0


def test_mailq_name_is_bp(tmp_path, setup):
    argv = _linked(tmp_path, "mailq")
    p = subprocess.run(argv + ["-X"], capture_output=True, env={**os.environ, **setup.env()}, timeout=60)
    assert (p.returncode, p.stderr) == (64, b"mailq: -X is not supported (see 'pysendmail --help')\n")


def test_an_80mb_message_in_bounded_memory(tmp_path, smtp_server):
    from peak import BIG_MB, LIMIT_MB, peak

    srv = smtp_server(size=300 << 20, lint=False)
    s = Setup(tmp_path, srv.url)
    src = tmp_path / "big.eml"
    line = b"x" * 76 + b"\n"
    with open(src, "wb") as f:
        f.write(b"To: root\nSubject: big\n\n")
        block = line * ((1 << 20) // len(line))
        for _ in range(BIG_MB):
            f.write(block)
    p = peak("pysendmail", "-t", stdin=src, env=s.env())
    assert (p.returncode, p.stderr) == (0, ""), p
    assert p.mb < LIMIT_MB, p
    ((_m, rcpts, raw),) = srv.messages
    assert rcpts == ["admin@example.org"]
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert len(body) == BIG_MB * len(block) // len(line) * (len(line) + 1)


def test_an_80mb_message_queued_in_bounded_memory(tmp_path):
    from peak import BIG_MB, LIMIT_MB, peak

    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % free_port())
    src = tmp_path / "big.eml"
    with open(src, "wb") as f:
        f.write(b"To: root\nSubject: big\n\n")
        for _ in range(BIG_MB):
            f.write(os.urandom(1 << 19).hex().encode()[:-1] + b"\n")
    p = peak("pysendmail", "-t", "-i", stdin=src, env=s.env())
    assert p.returncode == 0 and "queued as" in p.stderr, p
    assert p.mb < LIMIT_MB, p
    (raw,) = s.queued_messages()
    assert raw.endswith(Path(src).read_bytes()[-1000:])


# -- the queue run, the listing, the maildrop ---------------------------------------------------


def test_q_sends_what_waited_once_when_the_server_is_back(run, tmp_path, smtp_server):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    for n in range(3):
        r = sendmail(run, s, "-i", "root", input=b"Subject: n%d\n\nbody %d\n" % (n, n))
        assert r.returncode == 0 and "queued as" in r.stderr
    r = sendmail(run, s, "-q")
    assert len(s.queued()) == 3  # still down: each stays, tries counted
    assert (r.returncode, r.stderr) == (
        75,
        "pysendmail: 3 messages stay queued in %s (pysendmail -bp shows the server's last answer)\n" % s.queue,
    )
    assert [e["tries"] for e in s.queued()] == [2, 2, 2]
    srv = smtp_server()
    s.config.write_text(s.config.read_text().replace("127.0.0.1:%d" % port, "127.0.0.1:%d" % srv.port))
    qids = [p.name[:-4] for p in sorted((s.queue / "q").glob("*.env"))]
    r = sendmail(run, s, "-q")
    assert r.returncode == 0
    assert r.stderr.splitlines() == ["pysendmail: %s: sent to admin@example.org" % q for q in qids]
    assert sorted(m[2].split(b"Subject: ")[1][:2] for m in srv.messages) == [b"n0", b"n1", b"n2"]
    assert all(m[:2] == ("alerts@example.com", ["admin@example.org"]) for m in srv.messages)
    assert s.queued() == []
    r = sendmail(run, s, "-q")
    assert (r.returncode, r.stderr, len(srv.messages)) == (0, "", 3)  # nothing twice


def test_bp_lists_the_queue(run, tmp_path):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    r = sendmail(run, s, "-bp")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"Mail queue is empty\n", "")
    sendmail(run, s, "-i", "root", input=b"Subject: x\n\nbody\n")
    r = sendmail(run, s, "-bp")
    assert r.returncode == 0
    (qid,) = [p.name[:-4] for p in (s.queue / "q").glob("*.env")]
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    assert lines[1].split()[0] == qid and lines[1].endswith("  alerts@example.com")  # Postfix's mailq shape
    assert lines[2].strip() == "(tried once: cannot connect to 127.0.0.1 port %d: Connection refused)" % port
    assert lines[3] == " " * 42 + "admin@example.org"
    assert lines[4:] == ["", "-- 0 Kbytes in 1 Request."]


def test_mailq_lists_the_queue(tmp_path, run):
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % free_port())
    argv = _linked(tmp_path, "mailq")
    p = subprocess.run(argv, capture_output=True, env={**os.environ, **s.env()}, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"Mail queue is empty\n", b"")


@pytest.fixture
def system_queue(tmp_path, smtp_server, monkeypatch):
    """A system-wide configuration (readable by all, its secret behind password_command) whose
    queue is a root-owned directory with a 1733 maildrop; a server; the env of a user without
    a file of its own."""
    import shutil
    import tempfile

    from pipemail.queue import Queue

    srv = smtp_server(auth=("alerts@example.com", "secret"))
    top = tempfile.mkdtemp(prefix="pipemail-sysq-", dir="/tmp")
    os.chmod(top, 0o755)
    queue_dir = os.path.join(top, "queue")
    Queue(queue_dir).ensure(system=True)
    aliases = tmp_path / "aliases"
    aliases.write_text("root: admin@example.org\n")
    config = Path(top) / "config.toml"
    config.write_text(
        'queue = "%s"\n[accounts.main]\nfrom = "Alerts <alerts@example.com>"\ntransport = "%s"\ntls = "none"\n'
        'aliases = "%s"\nuser = "alerts@example.com"\npassword_command = "echo secret; touch %s/read-by-$(id -u)"\n'
        % (queue_dir, srv.url, aliases, top)
    )
    config.chmod(0o644)
    monkeypatch.delenv("PIPEMAIL_CONFIG", raising=False)
    monkeypatch.setenv("PIPEMAIL_SYSTEM_CONFIG", str(config))
    monkeypatch.setenv("TMPDIR", "/tmp")
    yield srv, Path(top), Path(queue_dir)
    shutil.rmtree(top)


def test_a_user_without_a_config_drops_into_the_maildrop_and_root_q_sends_it(run, system_queue, monkeypatch):
    import pwd

    import unprivileged

    srv, top, queue_dir = system_queue
    with unprivileged.user_dir() as home:
        monkeypatch.setenv("HOME", home)
        code, out, err = unprivileged.run(
            "sendmail", "-i", "root", input=b"Subject: backup\n\nuser job\n", cwd=home, umask=0o022
        )
    assert (code, err) == (0, "")  # a drop is the normal path: silent, as postdrop is
    (name,) = [n for n in os.listdir(queue_dir / "maildrop") if not n.startswith(".")]
    uid = os.stat(queue_dir / "maildrop" / name).st_uid
    if unprivileged.is_root():
        user = unprivileged.USER
        assert uid == pwd.getpwnam(user).pw_uid
    else:
        user = pwd.getpwuid(os.getuid()).pw_name
    assert srv.messages == srv.logins == [] and list(top.glob("read-by-*")) == []  # the secret never read
    monkeypatch.setenv("HOME", str(top))
    r = run("pysendmail", "-q")
    assert r.returncode == 0, r.stderr
    ((mail_from, rcpts, raw),) = srv.messages
    assert (mail_from, rcpts) == ("alerts@example.com", ["admin@example.org"])
    assert [p.name for p in top.glob("read-by-*")] == ["read-by-0"] and srv.logins[0][2] is True
    assert header_bytes(raw, "From") == [b'From: "%s (%s)" <alerts@example.com>' % (user.encode(), HOST.encode())]
    assert os.listdir(queue_dir / "maildrop") == [] and os.listdir(queue_dir / "q") == []
    # the trace field naming who dropped it, first, as Postfix's "from userid"
    first = raw.split(b"\r\n")[:2]
    assert first[0] == b"Received: by %s (pipemail pysendmail, from userid %d (%s));" % (
        fqdn().encode(),
        uid,
        user.encode(),
    )
    assert email.utils.parsedate_to_datetime(first[1].strip().decode()).tzinfo is not None


def test_a_drop_is_said_with_v(run, system_queue, monkeypatch):
    import unprivileged

    srv, top, queue_dir = system_queue
    with unprivileged.user_dir() as home:
        monkeypatch.setenv("HOME", home)
        code, out, err = unprivileged.run(
            "sendmail", "-v", "-i", "root", input=b"Subject: x\n\nb\n", cwd=home, umask=0o022
        )
    (name,) = [n for n in os.listdir(queue_dir / "maildrop") if not n.startswith(".")]
    assert (code, err) == (
        0,
        "pysendmail: dropped as %s into %s/maildrop: root's queue run (pysendmail -q, or --run-queue) sends it\n"
        % (name, queue_dir),
    )


# -- through a proxy ------------------------------------------------------------------------


def test_through_a_real_socks5_proxy(run, setup, microsocks):  # noqa: F811 (the fixture)
    seen = peers(setup.srv)
    r = sendmail(run, setup, "--proxy", microsocks.url("socks5h"), "-i", "root", input=b"Subject: p\n\nbody\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, rcpts, _raw),) = setup.srv.messages
    assert (mail_from, rcpts) == ("alerts@example.com", ["admin@example.org"])
    assert seen == [MICROSOCKS_OUT]  # the server saw the proxy, not us


def test_a_proxy_that_is_down_queues(run, setup):
    proxy = "socks5://127.0.0.1:%d" % free_port()
    r = sendmail(run, setup, "--proxy", proxy, "-i", "root", input=b"Subject: p\n\nbody\n")
    assert r.returncode == 0
    (env,) = setup.queued()
    assert env["answer"].startswith(
        "cannot connect to 127.0.0.1 port %d through proxy %s: " % (setup.srv.port, proxy)
    ), env["answer"]
    assert "pysendmail: queued as " in r.stderr and setup.srv.messages == []


def test_a_bad_proxy_url_is_64(run, setup):
    r = sendmail(run, setup, "--proxy", "ftp://127.0.0.1:21", "-i", "root", input=b"Subject: p\n\nbody\n")
    assert r.returncode == 64 and r.stderr.startswith("pysendmail: unknown proxy URL 'ftp://127.0.0.1:21'")
    assert setup.srv.messages == [] and setup.queued() == []


# A private /dev (tmpfs) with only what a command needs, and /dev/log bound to a socket the test
# listens on, or no /dev/log at all (as in most containers): the machine's /dev is left alone.
NS_DEV = """set -e
d=$1; shift
mkdir -p "$d/olddev"
mount --bind /dev "$d/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom tty; do touch /dev/$n; mount --bind "$d/olddev/$n" /dev/$n; done
ln -s /proc/self/fd /dev/fd
if [ -n "$LOGSOCK" ]; then touch /dev/log; mount --bind "$LOGSOCK" /dev/log; fi
exec "$@"
"""


def in_private_dev(s, args, syslog=None):
    """pysendmail ``args`` in a mount namespace whose /dev/log is the datagram socket ``syslog``
    (a path), or absent; standard error a pipe (as from cron).  ``(exit code, stderr text)``."""
    script = s.dir / "ns.sh"
    script.write_text(NS_DEV)
    env = {**os.environ, **s.env(), "LOGSOCK": str(syslog or "")}
    env.pop("PIPEMAIL_DEBUG", None)
    argv = ["unshare", "-m", "--propagation", "private", "sh", str(script), str(s.dir)] + command_path("pysendmail")
    p = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60)
    return p.returncode, p.stderr.decode()


def _queue_two_then_make_one_due(run, s, port, srv):
    for n in range(2):
        assert sendmail(run, s, "-i", "root", input=b"Subject: n%d\n\nbody\n" % n).returncode == 0
    s.config.write_text(s.config.read_text().replace("127.0.0.1:%d" % port, "127.0.0.1:%d" % srv.port))
    first = sorted((s.queue / "q").glob("*.env"))[0]
    env = json.loads(first.read_text())
    env["due"] = 0
    first.write_text(json.dumps(env))
    (s.queue / "maildrop" / "0000000000000-1-JUNK").write_bytes(b"not a drop\n")  # a user's junk
    return first.name[: -len(".env")]


def test_run_queue_from_cron_says_everything_to_syslog_and_nothing_on_stderr(run, tmp_path, smtp_server):
    import socket

    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    srv = smtp_server()
    qid = _queue_two_then_make_one_due(run, s, port, srv)
    path = str(tmp_path / "log.sock")
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind(path)
    log.settimeout(0.5)
    try:
        code, err = in_private_dev(s, ["--run-queue"], syslog=path)
        got = []
        while True:
            try:
                got.append(log.recv(65536).decode())
            except TimeoutError:
                break
    finally:
        log.close()
    assert (code, err) == (0, "")  # only what is due, and said to syslog: standard error is no terminal
    ((_m, _r, raw),) = srv.messages
    assert b"Subject: n0" in raw and len(s.queued()) == 1
    said = [line.split("]: ", 1) for line in got]
    assert [(head[:4], "pysendmail[" in head, text) for head, text in said] == [
        (
            "<20>",
            True,
            "moved 0000000000000-1-JUNK from the maildrop to %s/corrupt: not a pipemail drop (no PIPEMAIL-DROP 1 line)"
            % s.queue,
        ),
        ("<22>", True, "%s: sent to admin@example.org" % qid),
    ]  # LOG_MAIL: warning, then info


def test_run_queue_without_syslog_says_what_leaves_the_queue_on_stderr(run, tmp_path, smtp_server):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    srv = smtp_server()
    qid = _queue_two_then_make_one_due(run, s, port, srv)
    code, err = in_private_dev(s, ["--run-queue"])
    # what left the queue said once, where cron sees it; the junk's warning (every run) is not
    assert (code, err) == (0, "pysendmail: %s: sent to admin@example.org\n" % qid)
    assert len(srv.messages) == 1 and len(s.queued()) == 1
    code, err = in_private_dev(s, ["--run-queue"])
    assert (code, err, len(srv.messages)) == (0, "", 1)  # nothing due: nothing said


def test_sigterm_while_sending_queues_the_message(setup):
    import signal

    setup.srv.data_delay = 3
    # in DATA, waiting for the server's answer to the final dot
    code, err = setup.terminated(b"Subject: slow\n\nbody\n", lambda: setup.srv.data_commands >= 1, settle=0.3)
    assert code == 128 + signal.SIGTERM
    (env_,) = setup.queued()
    assert (env_["recipients"], env_["answer"]) == (["admin@example.org"], "interrupted while it was being sent")
    assert "pysendmail: queued as " in err


def test_q_by_a_user_of_the_system_file_is_77(run, system_queue, monkeypatch):
    import unprivileged

    with unprivileged.user_dir() as home:
        monkeypatch.setenv("HOME", home)
        code, out, err = unprivileged.run("sendmail", "-q", cwd=home, umask=0o022)
    assert (code, out) == (77, b"")
    assert err == (
        "pysendmail: the system queue is root's: its queue run (pysendmail --run-queue in root's crontab, "
        "or sudo pysendmail -q) sends what you drop\n"
    )


# -- nothing lost, nothing stalled (review of issue 12) ------------------------------------------


POISON = ":>x,;a@b.c"  # the stdlib's address parser raises AttributeError on it (IndexError, TypeError on others)


@pytest.mark.parametrize("operand", [POISON, "\t:root,", "a=@[\t"])
def test_an_unparsable_operand_is_65_and_the_message_kept(run, setup, operand):
    r = sendmail(run, setup, "-i", "--", operand, input=b"Subject: x\n\nthe only copy\n")
    assert r.returncode == 65
    assert r.stderr.splitlines() == [
        "pysendmail: not a mail address: %s" % operand.replace("\t", "\\t"),
        "pysendmail: the message is kept in %s/dead.letter" % setup.home,
    ]
    assert setup.dead_letter().endswith(b"Subject: x\n\nthe only copy\n\n") and setup.srv.messages == []


def _pmtest_dead_letter():
    """pmtest's dead letter (where root's run returns its drops), and its size now."""
    import pwd

    import unprivileged

    path = Path(pwd.getpwnam(unprivileged.USER).pw_dir) / "dead.letter"
    return path, path.stat().st_size if path.exists() else None


def _restore(path, size):
    if size is None:
        path.unlink(missing_ok=True)
    else:
        os.truncate(path, size)


def test_drops_root_cannot_accept_go_back_to_their_user_and_never_stop_the_run(run, system_queue, monkeypatch):
    import pwd

    import unprivileged

    from pipemail.queue import Queue

    srv, top, queue_dir = system_queue
    assert unprivileged.is_root(), "root's queue run is root's"
    pw = pwd.getpwnam(unprivileged.USER)
    base = {"read_recipients": False, "sender": None, "full_name": None, "ignore_dots": True, "user": "x"}
    drops = [  # what a user can write into the 1733 maildrop by hand, past their own pysendmail's checks
        ({**base, "recipients": [POISON]}, b"Subject: poison\n\np1\n", "not a mail address: %s" % POISON),
        ({**base, "recipients": [], "read_recipients": True}, b"Subject: none\n\np2\n", NO_RCPT),
        ({**base, "recipients": ["root"], "full_name": "a\nb"}, b"Subject: F\n\np3\n", F_BREAK),
        ({**base, "recipients": ["root"], "account": "nope"}, b"Subject: acct\n\np4\n", None),
        ({**base, "recipients": ["root"]}, b"Subject: innocent\n\nfine\n", None),
    ]
    q = Queue(queue_dir)
    names = []
    for request, raw, _why in drops:
        names.append(q.drop([raw], request))
        os.chown(queue_dir / "maildrop" / names[-1], pw.pw_uid, pw.pw_gid)
    dead, size = _pmtest_dead_letter()
    try:
        monkeypatch.setenv("HOME", str(top))
        r = run("pysendmail", "-q")
        returned = dead.read_bytes()[size or 0 :]
    finally:
        _restore(dead, size)
    assert r.returncode == 0, r.stderr
    ((_m, rcpts, raw),) = srv.messages  # the innocent one went out
    assert rcpts == ["admin@example.org"] and b"\r\n\r\nfine\r\n" in raw
    assert os.listdir(queue_dir / "maildrop") == [] and os.listdir(queue_dir / "q") == []
    lines = r.stderr.splitlines()
    whys = [w for _r, _raw, w in drops[:3]] + [
        "no account 'nope' in %s; accounts: main" % os.environ["PIPEMAIL_SYSTEM_CONFIG"]
    ]
    assert lines[:4] == [
        "pysendmail: drop %s from %s not accepted: %s; returned to %s" % (n, pw.pw_name, w, dead)
        for n, w in zip(names, whys, strict=False)
    ]
    assert len(lines) == 5 and lines[4].endswith(": sent to admin@example.org")  # each said once
    for _request, body, _why in drops[:4]:  # each kept as it came, for the owner's pymail --resend
        assert body + b"\n" in returned
    assert (
        returned.count(b"\nX-Pipemail-Undelivered-To: ") == 4 and b"Undelivered-To: %s\n" % POISON.encode() in returned
    )
    r = run("pysendmail", "-q")
    assert (r.returncode, r.stderr) == (0, "")  # said once: the next run has nothing to say


NO_RCPT = "no recipients: give RECIPIENT operands, or -t with To, Cc or Bcc in the message"
F_BREAK = "-F holds a line break, which would inject a header: a\\nb"


@pytest.mark.parametrize(
    "argv, message, code, why",
    [
        (["-t"], b"Subject: none\n\nb\n", 64, NO_RCPT),
        (["-i", "--", POISON], b"Subject: p\n\nb\n", 65, "not a mail address: %s" % POISON),
        (["-F", "a\nb", "root"], b"Subject: F\n\nb\n", 65, F_BREAK),
        (["-r", "a@x.org,b@y.org", "root"], b"Subject: r\n\nb\n", 65, "-r takes one address: a@x.org,b@y.org"),
        (["-i", "/etc/passwd"], b"Subject: f\n\nb\n", 64, None),
    ],
    ids=["no-recipients", "bad-operand", "bad-F", "two-senders", "a-file"],
)
def test_a_user_is_refused_before_dropping_what_root_would_refuse(
    run, system_queue, monkeypatch, argv, message, code, why
):
    import unprivileged

    srv, top, queue_dir = system_queue
    with unprivileged.user_dir() as home:
        monkeypatch.setenv("HOME", home)
        got, out, err = unprivileged.run("sendmail", *argv, input=message, cwd=home, umask=0o022)
        dead = (Path(home) / "dead.letter").read_bytes()
    assert got == code
    lines = err.splitlines()
    assert len(lines) == 2 and lines[1] == "pysendmail: the message is kept in %s/dead.letter" % home
    if why is not None:
        assert lines[0] == "pysendmail: " + why
    assert dead.endswith(message + b"\n") and os.listdir(queue_dir / "maildrop") == []


def test_a_message_is_kept_when_it_can_be_neither_sent_nor_queued(run, tmp_path):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    real = tmp_path / "real"
    real.mkdir()
    s.queue.symlink_to(real)  # the queue is refused (78)
    r = sendmail(run, s, "-i", "root", input=b"Subject: important\n\nthe only copy\n")
    assert r.returncode == 78
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith(
        "pysendmail: not sent (cannot connect to 127.0.0.1 port %d: Connection refused) and not queued: "
        "the queue %s " % (port, s.queue)
    )
    assert lines[1] == (
        "pysendmail: the message is kept in %s/dead.letter for admin@example.org (pymail --resend %s/dead.letter "
        "sends it again)" % (s.home, s.home)
    )
    assert s.dead_letter().endswith(b"\n\nthe only copy\n\n") and os.listdir(real) == []


def test_mixed_answers_keep_the_4xx_part_when_the_queue_cannot_take_it(run, tmp_path, smtp_server):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url)
    (tmp_path / "real").mkdir()
    s.queue.symlink_to(tmp_path / "real")
    srv.rcpt_replies["admin@example.org"] = "452 4.2.2 mailbox full"
    r = sendmail(run, s, "-i", "root", "ok@example.net", input=b"Subject: x\n\nb\n")
    assert r.returncode == 78
    ((_m, rcpts, _raw),) = srv.messages
    assert rcpts == ["ok@example.net"]
    assert r.stderr.splitlines()[0].startswith("pysendmail: not sent (RCPT TO:<admin@example.org> refused by ")
    assert b"X-Pipemail-Undelivered-To: admin@example.org\n" in s.dead_letter()


def test_sigterm_keeps_the_message_when_the_queue_cannot_take_it(tmp_path, smtp_server):
    import signal

    srv = smtp_server()
    s = Setup(tmp_path, srv.url)
    (tmp_path / "real").mkdir()
    s.queue.symlink_to(tmp_path / "real")
    srv.data_delay = 3
    code, err = s.terminated(b"Subject: slow\n\nthe only copy\n", lambda: srv.data_commands >= 1, settle=0.3)
    assert code == 128 + signal.SIGTERM
    assert "pysendmail: not sent (interrupted while it was being sent) and not queued: " in err
    assert s.dead_letter().endswith(b"\n\nthe only copy\n\n")


@pytest.mark.parametrize("text", ['root: "|/usr/bin/procmail"\n', "root: /var/mail/root\n", "root:\n"])
def test_an_alias_that_leaves_no_recipient_is_64_and_the_message_kept(run, tmp_path, smtp_server, text):
    srv = smtp_server()
    s = Setup(tmp_path, srv.url, aliases=text)
    r = sendmail(run, s, "-i", "root", input=b"Subject: x\n\nthe only copy\n")
    assert r.returncode == 64
    lines = r.stderr.splitlines()
    assert lines[-2:] == [
        "pysendmail: no recipients: root has no mail address in the aliases file %s (only |command, /file or "
        ":include: targets, which pysendmail skips, or none): map it to an address there" % s.aliases,
        "pysendmail: the message is kept in %s/dead.letter" % s.home,
    ]
    assert srv.messages == [] and s.dead_letter().endswith(b"\n\nthe only copy\n\n")


# -- one rule for what is permanent --------------------------------------------------------------


def test_auth_refused_is_permanent_for_the_first_try_and_for_the_queue(run, tmp_path, smtp_server):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port, extra='user = "alerts@example.com"\n')
    wrong = {"PIPEMAIL_PASSWORD": "wrong"}
    assert sendmail(run, s, "-i", "root", input=b"Subject: q\n\nqueued first\n", env=wrong).returncode == 0
    srv = smtp_server(auth=("alerts@example.com", "secret"))
    s.config.write_text(s.config.read_text().replace("127.0.0.1:%d" % port, "127.0.0.1:%d" % srv.port))
    r = sendmail(run, s, "-i", "root", input=b"Subject: now\n\nfirst try\n", env=wrong)
    assert r.returncode == 77 and r.stderr.splitlines()[0].startswith("pysendmail: AUTH PLAIN refused by ")
    assert s.dead_letter().count(b"\nX-Pipemail-Undelivered-To: admin@example.org\n") == 1
    assert len(s.queued()) == 1
    r = sendmail(run, s, "-q", env=wrong)  # the same answer in the queue run: failed at once, not retried
    assert s.queued() == [] and len(list((s.queue / "failed").glob("*.msg"))) == 1, r.stderr
    assert s.dead_letter().count(b"\nX-Pipemail-Undelivered-To: admin@example.org\n") == 2
    assert b"queued first" in s.dead_letter()


def test_auth_not_offered_is_queued_as_the_queue_retries_it(run, setup):
    r = sendmail(run, setup, "-i", "root", input=b"Subject: x\n\nb\n", env={"PIPEMAIL_PASSWORD": "pw"})
    setup.config.write_text(setup.config.read_text() + 'user = "alerts@example.com"\n')
    r = sendmail(run, setup, "-i", "root", input=b"Subject: y\n\nb\n", env={"PIPEMAIL_PASSWORD": "pw"})
    assert r.returncode == 0 and setup.dead_letter() == b""
    (env,) = setup.queued()
    assert env["answer"].endswith("does not offer AUTH, and a user is set (alerts@example.com)")


# -- rewriting -----------------------------------------------------------------------------------


def test_an_empty_from_counts_as_absent(run, setup):
    r = sendmail(run, setup, "-i", "admin@example.org", input=b"From: \nSubject: x\n\nb\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, _r, raw),) = setup.srv.messages
    assert mail_from == "alerts@example.com"
    assert header_bytes(raw, "From") == [b'From: "root (%s)" <alerts@example.com>' % HOST.encode()]


def test_bare_names_in_a_from_list_are_qualified(run, setup):
    r = sendmail(run, setup, "-i", "admin@example.org", input=b"From: a@example.org, root\nSubject: x\n\nb\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, _r, raw),) = setup.srv.messages
    assert header_bytes(raw, "From") == [b"From: a@example.org, root@example.com"]


@pytest.mark.parametrize("operand", ["/etc/passwd", "|/bin/sh"])
def test_a_file_or_program_operand_is_refused_and_the_message_kept(run, setup, operand):
    r = sendmail(run, setup, "-i", operand, input=b"Subject: x\n\nthe only copy\n")
    assert r.returncode == 64
    assert r.stderr.splitlines() == [
        "pysendmail: cannot mail directly to files or programs: %s (give a mail address, or map a name in the "
        "aliases file)" % operand,
        "pysendmail: the message is kept in %s/dead.letter" % setup.home,
    ]
    assert setup.srv.messages == [] and b"the only copy" in setup.dead_letter()


# -- options real callers pass -------------------------------------------------------------------


def test_options_of_mutt_postfix_and_msmtp_callers_are_accepted_and_ignored(run, setup):
    argv = ["-R", "hdrs", "-V", "envid1", "-n", "-U", "-G", "-L", "tag", "-O", "DeliveryMode=b", "-Rfull", "-i"]
    r = sendmail(run, setup, *argv, "root", input=b"Subject: x\n\nb\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, rcpts, _raw),) = setup.srv.messages
    assert rcpts == ["admin@example.org"]


@pytest.mark.parametrize(
    "argv, line",
    [
        (["-q"], "mailq: -q is not supported (mailq lists the queue; it takes only -v)"),
        (["-bm"], "mailq: -bm is not supported (mailq lists the queue; it takes only -v)"),
        (["root"], "mailq: mailq takes no RECIPIENT operands"),
    ],
)
def test_mailq_only_lists(tmp_path, setup, argv, line):
    p = subprocess.run(
        _linked(tmp_path, "mailq") + argv, capture_output=True, env={**os.environ, **setup.env()}, timeout=60
    )
    assert (p.returncode, p.stderr.decode(), p.stdout) == (64, line + "\n", b"")
    assert setup.srv.messages == [] and setup.queued() == []


def test_qf_is_refused_in_accurate_words(run, setup):
    r = sendmail(run, setup, "-qf")
    assert (r.returncode, r.stderr) == (
        64,
        "pysendmail: -qf is not supported (pysendmail -q takes no flag or queue selection: it sends everything "
        "queued, now, in the foreground)\n",
    )


def test_r_with_two_addresses_says_r(run, setup):
    r = sendmail(run, setup, "-r", "a@x.org,b@y.org", "-i", "root", input=b"Subject: x\n\nb\n")
    assert r.returncode == 65
    assert r.stderr.splitlines()[0] == "pysendmail: -r takes one address: a@x.org,b@y.org"


# -- who sends: users with a configuration of their own ------------------------------------------


def test_a_user_whose_file_has_no_transport_drops_into_the_maildrop(run, system_queue, monkeypatch):
    import unprivileged

    srv, top, queue_dir = system_queue
    with unprivileged.user_dir() as home:
        conf = Path(home) / ".config" / "pipemail"
        conf.mkdir(parents=True)
        (conf / "config.toml").write_text('[accounts.fetch]\npop = "pop3://127.0.0.1:1"\n')
        unprivileged.give(home)
        monkeypatch.setenv("HOME", home)
        code, out, err = unprivileged.run("sendmail", "-i", "root", input=b"Subject: x\n\nb\n", cwd=home, umask=0o022)
    assert (code, err) == (0, "")
    assert len([n for n in os.listdir(queue_dir / "maildrop") if not n.startswith(".")]) == 1


def test_a_users_queue_honours_xdg_state_home(run, system_queue, monkeypatch):
    import unprivileged

    srv, top, queue_dir = system_queue
    with unprivileged.user_dir() as home:
        conf = Path(home) / "config.toml"
        conf.write_text(
            '[accounts.main]\nfrom = "me@example.com"\ntransport = "smtp://127.0.0.1:%d"\ntls = "none"\n'
            'aliases = "/dev/null"\n' % free_port()
        )
        unprivileged.give(home)
        monkeypatch.setenv("HOME", home)
        monkeypatch.setenv("PIPEMAIL_CONFIG", str(conf))
        monkeypatch.setenv("XDG_STATE_HOME", home + "/state")
        code, out, err = unprivileged.run(
            "sendmail", "-i", "a@example.org", input=b"Subject: x\n\nb\n", cwd=home, umask=0o022
        )
        queued = list((Path(home) / "state" / "pipemail" / "queue" / "q").glob("*.env"))
    assert code == 0 and "queued as" in err, err
    assert len(queued) == 1


# -- fast start ----------------------------------------------------------------------------------


def test_bi_imports_neither_transport_nor_message(setup):
    code = (
        "import sys; from pipemail.cli import sendmail; assert sendmail.command(['-bi']) == 0; "
        "heavy = ('pipemail.transport', 'pipemail.message', 'smtplib', 'email.utils'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env={**os.environ, **setup.env()}, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"[]\n", b"")


def test_nul_bytes_are_passed_on_as_sendmail_does(run, setup):
    r = sendmail(run, setup, "-i", "root", input=b"Subject: x\n\nbinary \x00 byte\n")
    assert (r.returncode, r.stderr) == (0, "")
    ((_m, _r, raw),) = setup.srv.messages
    assert raw.endswith(b"\r\n\r\nbinary \x00 byte\r\n")


def test_a_bad_f_is_65_and_kept_under_the_callers_own_name(run, setup):
    r = sendmail(run, setup, "-f", "a\nFrom evil", "-i", "root", input=b"Subject: x\n\nthe only copy\n")
    assert r.returncode == 65
    assert r.stderr.splitlines()[0] == (
        "pysendmail: address holds a line break, which would inject a header: a\\nFrom evil"
    )
    dead = setup.dead_letter()
    assert dead.startswith(b"From root ") and dead.count(b"\nFrom ") == 0 and b"the only copy" in dead
