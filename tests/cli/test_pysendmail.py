"""pysendmail as /usr/sbin/sendmail: every caller's argv from issue 12 against a real SMTP
server (aiosmtpd on loopback), the rewrites (exact From, MAIL FROM, RCPT), aliases, the lone
dot, refused options, the queue on a temporary failure, the dead letter on a 5xx, the
maildrop of a caller that is not root, and bounded memory."""

import email
import email.policy
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


def test_a_100mb_message_in_bounded_memory(tmp_path, smtp_server):
    from peak import LIMIT_MB, peak

    srv = smtp_server(size=300 << 20, lint=False)
    s = Setup(tmp_path, srv.url)
    src = tmp_path / "big.eml"
    line = b"x" * 76 + b"\n"
    with open(src, "wb") as f:
        f.write(b"To: root\nSubject: big\n\n")
        block = line * ((1 << 20) // len(line))
        for _ in range(100):
            f.write(block)
    p = peak("pysendmail", "-t", stdin=src, env=s.env())
    assert (p.returncode, p.stderr) == (0, ""), p
    assert p.mb < LIMIT_MB, p
    ((_m, rcpts, raw),) = srv.messages
    assert rcpts == ["admin@example.org"]
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert len(body) == 100 * len(block) // len(line) * (len(line) + 1)


def test_a_100mb_message_queued_in_bounded_memory(tmp_path):
    from peak import LIMIT_MB, peak

    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % free_port())
    src = tmp_path / "big.eml"
    with open(src, "wb") as f:
        f.write(b"To: root\nSubject: big\n\n")
        for _ in range(100):
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
    assert code == 0, err
    (name,) = [n for n in os.listdir(queue_dir / "maildrop") if not n.startswith(".")]
    assert err == (
        "pysendmail: dropped as %s into %s/maildrop: root's queue run (pysendmail -q, or --run-queue) sends it\n"
        % (name, queue_dir)
    )
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


def test_run_queue_sends_only_what_is_due_and_says_it_to_syslog_not_stderr(run, tmp_path, smtp_server):
    port = free_port()
    s = Setup(tmp_path, "smtp://127.0.0.1:%d" % port)
    for n in range(2):
        assert sendmail(run, s, "-i", "root", input=b"Subject: n%d\n\nbody\n" % n).returncode == 0
    srv = smtp_server()
    s.config.write_text(s.config.read_text().replace("127.0.0.1:%d" % port, "127.0.0.1:%d" % srv.port))
    r = sendmail(run, s, "--run-queue")
    assert (r.returncode, r.stderr, srv.messages) == (0, "", [])  # neither is due: 5 minutes after the try
    first = sorted((s.queue / "q").glob("*.env"))[0]
    env = json.loads(first.read_text())
    env["due"] = 0
    first.write_text(json.dumps(env))
    r = sendmail(run, s, "--run-queue")
    assert (r.returncode, r.stderr) == (0, "")  # said to syslog: standard error is no terminal
    ((_m, _r, raw),) = srv.messages
    assert b"Subject: n0" in raw and len(s.queued()) == 1


def test_sigterm_while_sending_queues_the_message(setup):
    import signal
    import time

    setup.srv.data_delay = 3
    env = {**os.environ, **setup.env()}
    env.pop("PIPEMAIL_DEBUG", None)
    p = subprocess.Popen(
        command_path("pysendmail") + ["-i", "root"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    p.stdin.write(b"Subject: slow\n\nbody\n")
    p.stdin.close()
    deadline = time.monotonic() + 20
    while setup.srv.data_commands < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # in DATA, waiting for the server's answer to the final dot
    p.send_signal(signal.SIGTERM)
    err = p.stderr.read().decode()
    assert p.wait(20) == 128 + signal.SIGTERM
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
