"""pysendmail as this machine's /usr/sbin/sendmail, called by the real programs that call it:
Debian's cron daemon, bsd-mailx, s-nail and git send-email, each sending through aiosmtpd on
loopback (tests/smtp_server.py).  The tests assert what the server received: the envelope
(MAIL FROM, RCPT), the rewritten From, the aliased recipient, Date and Message-ID; and, through
a logging wrapper, the exact argv each caller passed.  With cron also: the server down (the
message queued, exit 0, sent once by ``sendmail -q``), and a user's crontab (pmtest: the message
dropped into the maildrop without reading the account's secret, sent by root's queue run).

Everything happens in a private mount and PID namespace (``unshare -m -p -f --propagation
private --kill-child --mount-proc``), so nothing on the real system changes:

- /usr/sbin is an overlay whose ``sendmail`` is a symbolic link, as the README's ``ln -s``
  makes it (the real one is Exim's link here), to the wrapper: /run/callers/sendmail, which
  logs its argv, runs pysendmail, and logs its exit status and standard error into
  /run/callers/log (the test's directory, bind-mounted there so that a user's job reaches it);
- /etc is an overlay holding /etc/pipemail/config.toml (the system-wide file, found at its
  default path: no PIPEMAIL_* variable is given) and /etc/aliases (the aliases' default path),
  without /etc/crontab and /etc/cron.d (no system job runs);
- /root is an overlay (a dead letter or a queue under root's home stays in it);
- /run and /var/spool are tmpfs (cron's pid file and @reboot mark, the crontab, the system
  queue /var/spool/pipemail);
- the namespace's init is a shell that ends when the caller's sendmail runs are done; its end
  kills every process left in the namespace (cron), and the mounts go with it.  If pytest is
  killed instead, the chain setpriv --pdeathsig / timeout -s KILL / unshare --kill-child kills
  the namespace at once (test_a_killed_test_leaves_no_process_behind), and ``timeout`` ends it
  after NS_LIMIT seconds in any case.  After each test the fixture checks that the real
  system's sendmail links, /etc/pipemail, /etc/aliases, /etc/crontab, root's crontabs, /run's
  cron files, /var/spool/pipemail and root's dead letter are as they were, and no cron runs.

What each caller passed, observed on this machine (Debian 12) first with a stub sendmail that
logged its argv, environment and standard input:

- cron 3.0pl1 (``cron -f``, an ``@reboot`` job of root's crontab with MAILTO=root):
  ``-FCronDaemon -i -B8BITMIME -oem root``, as the crontab's owner, with the daemon's own
  environment plus PATH=/usr/bin:/bin (no HOME); the message has ``From: root (Cron
  Daemon)``, ``To: root``, ``Subject: Cron <root@HOST> CMD``, MIME fields and X-Cron-Env
  lines, and no Date or Message-ID.  @reboot jobs run at start when /run/crond.reboot does
  not exist (hence the tmpfs over /run); the mail goes out milliseconds after.
- bsd-mailx 8.1.2 (``echo body | mail -s "nightly report" root``): ``-i -t``; To, Subject,
  MIME fields; no From, Date or Message-ID.
- s-nail 14.9.24 (``s-nail -s subj root``, its default mta /usr/sbin/sendmail): ``-i --
  root``; Date, To, Subject, User-Agent; no From, no Message-ID.
- git send-email 2.39.5 (``--smtp-server=/usr/sbin/sendmail``): ``-i root dev@example.com``
  (the author is Cc'd) and, with sendemail.envelopeSender, ``-f root -i root
  dev@example.com``; From (the author), Date and Message-Id are set.  It needs Mail::Address
  (libmailtools-perl, a Recommends of git-email), installed by tests/run.

None of them runs /usr/lib/sendmail (each ran /usr/sbin/sendmail: the argv[0] the stub logged),
so that one is left alone.
"""

import email
import email.policy
import email.utils
import os
import pwd
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from smtp_server import free_port

from pipemail.message import fqdn

from conftest import command_path, tool

FQDN = fqdn()  # this machine's name, as `hostname` gives it
HOST = FQDN.split(".")[0]  # what "(vm)" says on host vm
ACCOUNT_FROM = "alerts@example.com"
ADMIN = "admin@example.org"  # root's alias
NS_LIMIT = 25  # seconds a namespace may live, whatever happens
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# The real system's state that no test may change (checked after each test).
WATCHED = [
    "/usr/sbin/sendmail",
    "/usr/lib/sendmail",
    "/etc/pipemail",
    "/etc/aliases",
    "/etc/crontab",
    "/run/crond.reboot",
    "/run/crond.pid",
    "/var/spool/pipemail",
    "/var/spool/cron/crontabs",
    "/root/dead.letter",
    "/root/.local/state/pipemail",
]

WRAPPER = """\
#!/bin/sh
# /usr/sbin/sendmail of the namespace: log the argv, run pysendmail, log its status and stderr
n=/run/callers/log/$(date +%s%N).$$
printf '%s\\0' "$@" >"$n.argv"
{pysendmail} "$@" 2>"$n.err"
rc=$?
echo "$rc" >"$n.rc.tmp" && mv "$n.rc.tmp" "$n.rc"
cat "$n.err" >&2
exit "$rc"
"""

SETUP = """\
set -eu
S={scratch}
mount -t tmpfs -o mode=0755 tmpfs "$S"
for d in etc root usr-sbin; do mkdir "$S/$d" "$S/$d.work"; done
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$S/etc,workdir=$S/etc.work" /etc
mount -t overlay overlay -o "lowerdir=/root,upperdir=$S/root,workdir=$S/root.work" /root
mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$S/usr-sbin,workdir=$S/usr-sbin.work" /usr/sbin
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/spool
mkdir -m 0755 /run/callers /run/callers/log
mkdir -m 1777 /run/callers/tmp
mount --bind {log} /run/callers/log
cp {wrapper} /run/callers/sendmail
ln -sfn /run/callers/sendmail /usr/sbin/sendmail
rm -rf /etc/crontab /etc/cron.d /etc/pipemail
mkdir -m 0755 /etc/pipemail
cp {config} /etc/pipemail/config.toml
chmod {config_mode:o} /etc/pipemail/config.toml
cp {aliases} /etc/aliases
chmod 0644 /etc/aliases
export TMPDIR=/run/callers/tmp

# wait_for N: until N sendmail runs have ended (their .rc logged), at most 20 s
wait_for() {{
    i=0
    while [ "$(ls /run/callers/log | grep -c '[.]rc$')" -lt "$1" ] && [ "$i" -lt 200 ]; do
        sleep 0.1
        i=$((i + 1))
    done
}}

{body}
"""


def config_text(url):
    return (
        'default = "main"\n'
        "[accounts.main]\n"
        'from = "Alerts <%s>"\n'
        'transport = "%s"\n'
        'tls = "none"\n'
        'domain = "example.com"\n' % (ACCOUNT_FROM, url)
    )


ALIASES = "# /etc/aliases of the test\npostmaster: root\nroot: %s\ncron: root\n" % ADMIN


class Run:
    """One pysendmail run as the wrapper logged it."""

    def __init__(self, base):
        self.argv = Path(base + ".argv").read_bytes().decode().split("\0")[:-1]
        self.uid = os.stat(base + ".argv").st_uid  # who ran it
        rc = Path(base + ".rc")
        self.returncode = int(rc.read_text()) if rc.exists() else None
        err = Path(base + ".err")
        self.stderr = err.read_text() if err.exists() else ""

    def __repr__(self):
        return "Run(argv=%r, uid=%d, returncode=%r, stderr=%r)" % (self.argv, self.uid, self.returncode, self.stderr)


class Namespace:
    """A private namespace where /usr/sbin/sendmail is pysendmail (through the logging wrapper).
    ``SETUP`` is the script that makes it (a subclass may make another)."""

    SETUP = SETUP

    def __init__(self, tmp_path, srv, config=None, config_mode=0o600, aliases=ALIASES):
        self.dir = tmp_path
        self.srv = srv
        self.log = tmp_path / "log"  # /run/callers/log in the namespace
        self.log.mkdir()
        self.log.chmod(0o1777)  # a user's cron job logs its sendmail run too
        self.scratch = tmp_path / "scratch"  # the tmpfs holding the overlays' upper layers
        self.scratch.mkdir()
        self.config = tmp_path / "config.toml"
        self.config.write_text(config or config_text(srv.url))
        self.config_mode = config_mode
        self.aliases = tmp_path / "aliases"
        self.aliases.write_text(aliases)
        self.wrapper = tmp_path / "sendmail"
        pysendmail = " ".join(shlex.quote(a) for a in command_path("pysendmail"))
        self.wrapper.write_text(WRAPPER.format(pysendmail=pysendmail))
        self.wrapper.chmod(0o755)

    def command(self, body):
        """(argv, env) that run the shell ``body`` in the namespace, after the mounts.

        Each link of the chain dies with the one before it: setpriv's parent-death signal
        kills ``timeout`` when this process dies (pytest killed) and ``unshare`` when
        ``timeout`` dies; ``--kill-child`` kills the namespace's init when ``unshare`` dies,
        and with its init the kernel kills every process of the PID namespace.  ``timeout``
        ends it all after NS_LIMIT seconds in any case."""
        q = lambda p: shlex.quote(str(p))  # noqa: E731
        script = self.SETUP.format(
            scratch=q(self.scratch),
            wrapper=q(self.wrapper),
            config=q(self.config),
            config_mode=self.config_mode,
            aliases=q(self.aliases),
            log=q(self.log),
            body=body,
        )
        path = self.dir / "namespace.sh"
        path.write_text(script)
        # The namespace's environment, as a daemon started at boot gets it: none of the test's
        # (conftest's PIPEMAIL_SYSTEM_CONFIG among them): pysendmail finds /etc/pipemail/config.toml.
        env = {"PATH": PATH, "HOME": "/root", "LOGNAME": "root", "USER": "root", "LANG": "C.UTF-8"}
        setpriv = [tool("setpriv"), "--pdeathsig", "KILL"]
        argv = [*setpriv, tool("timeout"), "-s", "KILL", str(NS_LIMIT), *setpriv, tool("unshare")]
        argv += ["--mount", "--pid", "--fork", "--propagation", "private", "--kill-child", "--mount-proc"]
        argv += ["sh", str(path)]
        return argv, env

    def run(self, body):
        """Run the shell ``body`` in the namespace to its end; its CompletedProcess."""
        argv, env = self.command(body)
        pipe = subprocess.PIPE
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, env=env, cwd=self.dir) as proc:
            try:
                out, err = proc.communicate(timeout=NS_LIMIT + 5)
            finally:
                proc.kill()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def runs(self):
        """The pysendmail runs the wrapper logged, in the order they started."""
        return [Run(str(p).removesuffix(".argv")) for p in sorted(self.log.glob("*.argv"), key=lambda p: p.name)]


def system_state(paths=WATCHED):
    """What the real system has at ``paths``, which a test could change, and whether a cron daemon runs."""
    state = {}
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            state[path] = None
            continue
        if stat.S_ISLNK(st.st_mode):
            state[path] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            try:
                state[path] = ("dir", st.st_mode, sorted(os.listdir(path)))
            except PermissionError:
                state[path] = ("dir", st.st_mode)
        else:
            state[path] = ("file", st.st_mode, st.st_size, st.st_mtime_ns)
    state["cron processes"] = cron_pids()
    return state


def cron_pids():
    """The cron daemons (and their children) running in a PID namespace other than this
    process's: the tests' own (a cron of the real system does not count)."""
    ours = os.readlink("/proc/self/ns/pid")
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if (
                    os.readlink("/proc/%s/exe" % pid) == "/usr/sbin/cron"
                    and os.readlink("/proc/%s/ns/pid" % pid) != ours
                ):
                    pids.append(int(pid))
            except OSError:
                pass
    return sorted(pids)


@pytest.fixture
def real_system():
    """After the test, the real system must be as it was (root only: the tests mount)."""
    if os.geteuid() != 0:
        pytest.fail("the callers' tests mount in a private namespace (unshare -m): run them as root (bash tests/run)")
    before = system_state()
    yield
    assert system_state() == before, "the test changed the real system"


@pytest.fixture
def ns(real_system, tmp_path, smtp_server):
    """A Namespace with a fresh aiosmtpd."""
    return Namespace(tmp_path, smtp_server())


def parse(raw):
    return email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)


def head_lines(raw):
    """The header lines (unfolded) as the server received them, as text."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    lines = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += line
        else:
            lines.append(line)
    return lines


def field(raw, name):
    """The one header line ``name: ...`` of the message, unfolded (failing if there are 0 or 2)."""
    found = [line for line in head_lines(raw) if line.lower().startswith(name.lower() + ":")]
    assert len(found) == 1, "%d %s fields in %r" % (len(found), name, head_lines(raw))
    return found[0]


def one_message(ns, proc, argv):
    """The one message the server received, after the one sendmail run, with exactly ``argv``,
    that exited 0 and said nothing."""
    runs = ns.runs()
    diag = "namespace: rc=%d stdout=%r stderr=%r; runs: %r" % (proc.returncode, proc.stdout, proc.stderr, runs)
    assert [r.argv for r in runs] == [argv], diag
    assert (runs[0].returncode, runs[0].stderr) == (0, ""), diag
    assert len(ns.srv.messages) == 1, diag
    return ns.srv.messages[0]


DATE = re.compile(r"Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), +\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")


def assert_stamped(raw, message_id_domain=FQDN):
    """One Date, of now, and one Message-ID, at ``message_id_domain`` (this host's name where
    pysendmail made it: not localhost)."""
    date = field(raw, "Date")
    assert DATE.fullmatch(date), date
    when = email.utils.parsedate_to_datetime(date.partition(": ")[2]).timestamp()
    assert abs(when - time.time()) < 300, date
    message_id = field(raw, "Message-ID")
    assert re.fullmatch(r"Message-I[Dd]: <[^<>@\s]+@%s>" % re.escape(message_id_domain), message_id), message_id


# root's crontab with MAILTO=root and an @reboot job; cron started in the background
CRON_JOB = """\
mkdir -p /var/spool/cron/crontabs
chgrp crontab /var/spool/cron/crontabs
chmod 1730 /var/spool/cron/crontabs
printf 'MAILTO=root\\n@reboot echo the nightly job ran\\n' >/var/spool/cron/crontabs/root
chmod 0600 /var/spool/cron/crontabs/root
%s -f -L 15 </dev/null >/dev/null 2>&1 &
"""
CRON_ARGV = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]


def cron_job():
    return CRON_JOB % shlex.quote(tool("cron"))


def assert_cron_message(raw):
    """cron's message as rewritten: From the account with the host in the display name, To
    qualified (as an MTA does; the envelope went to the alias), cron's fields kept, stamped."""
    assert field(raw, "From") == 'From: "Cron Daemon (%s)" <%s>' % (HOST, ACCOUNT_FROM)
    assert field(raw, "To") == "To: root@example.com"
    assert field(raw, "Subject") == "Subject: Cron <root@%s> echo the nightly job ran" % HOST
    assert "X-Cron-Env: <MAILTO=root>" in head_lines(raw)
    assert_stamped(raw)
    assert parse(raw).get_content() == "the nightly job ran\n"


def test_cron_mails_a_jobs_output_through_pysendmail(ns):
    """Debian's cron daemon runs an @reboot job of root's crontab (MAILTO=root) and mails its
    output: sendmail gets cron's argv; the message arrives from the account's address with the
    host in the display name (cron said ``From: root (Cron Daemon)``), to root's alias, with
    the Date and Message-ID cron leaves out, and cron's own fields kept."""
    proc = ns.run(cron_job() + "wait_for 1\n")
    mail_from, rcpts, raw = one_message(ns, proc, CRON_ARGV)
    assert (mail_from, rcpts) == (ACCOUNT_FROM, [ADMIN])
    assert_cron_message(raw)


def test_cron_with_the_server_down_queues_and_q_sends_it_later(ns, tmp_path):
    """The server unreachable when cron mails: pysendmail queues the message in the system
    queue (/var/spool/pipemail, root's default) and exits 0, so cron logs no "got status N
    from MTA" and nothing is lost; once the server is back, ``sendmail -q`` sends it,
    rewritten as it was accepted, once, and the queue is empty."""
    down = tmp_path / "config-down.toml"
    down.write_text(config_text("smtp://127.0.0.1:%d" % free_port()))
    log = shlex.quote(str(ns.log))
    proc = ns.run(
        "cp %s /etc/pipemail/config.toml\n" % shlex.quote(str(down))
        + cron_job()
        + "wait_for 1\n"
        + "ls -A /var/spool/pipemail/q >%s/queued.txt\n" % log
        + "cp %s /etc/pipemail/config.toml\n" % shlex.quote(str(ns.config))
        + "/usr/sbin/sendmail -q\n"
        + "ls -A /var/spool/pipemail/q >%s/left.txt\n" % log
    )
    runs = ns.runs()
    diag = "namespace: rc=%d stdout=%r stderr=%r; runs: %r" % (proc.returncode, proc.stdout, proc.stderr, runs)
    assert [r.argv for r in runs] == [CRON_ARGV, ["-q"]], diag
    cron_run, queue_run = runs
    assert cron_run.returncode == 0, diag
    queued = r"pysendmail: queued as (\S+) in /var/spool/pipemail for %s: cannot connect to .*\n" % re.escape(ADMIN)
    found = re.fullmatch(queued, cron_run.stderr)
    assert found, diag
    qid = found.group(1)
    assert (ns.log / "queued.txt").read_text().split() == [qid + ".env", qid + ".msg"], diag
    assert queue_run.returncode == 0, diag
    assert queue_run.stderr == "pysendmail: %s: sent to %s\n" % (qid, ADMIN), diag
    assert len(ns.srv.messages) == 1, diag
    mail_from, rcpts, raw = ns.srv.messages[0]
    assert (mail_from, rcpts) == (ACCOUNT_FROM, [ADMIN])
    assert_cron_message(raw)
    assert (ns.log / "left.txt").read_text() == "", diag


def test_bsd_mailx_the_articles_command_line(ns):
    """``echo ... | mail -s "nightly report" root``, the article's line unchanged, with mail(1)
    being bsd-mailx (the alternative set in the namespace's /etc): sendmail gets ``-i -t``; the
    message, without From, Date or Message-ID, gets all three."""
    mailx = tool("bsd-mailx")
    proc = ns.run(
        "ln -sfn %s /etc/alternatives/mail\n"
        'echo "all backups done" | mail -s "nightly report" root\n'
        "wait_for 1\n" % shlex.quote(mailx)
    )
    mail_from, rcpts, raw = one_message(ns, proc, ["-i", "-t"])
    assert (mail_from, rcpts) == (ACCOUNT_FROM, [ADMIN])
    assert field(raw, "From") == 'From: "root (%s)" <%s>' % (HOST, ACCOUNT_FROM)
    assert field(raw, "To") == "To: root@example.com"
    assert field(raw, "Subject") == "Subject: nightly report"
    assert_stamped(raw)
    assert parse(raw).get_content() == "all backups done\n"


def test_s_nail(ns):
    """``s-nail -s "disk report" root`` with its default mta, /usr/sbin/sendmail: ``-i -- root``;
    its Date is kept, a Message-ID and a From are added."""
    snail = tool("s-nail")
    proc = ns.run('echo "disk 91%% full" | %s -s "disk report" root\nwait_for 1\n' % shlex.quote(snail))
    mail_from, rcpts, raw = one_message(ns, proc, ["-i", "--", "root"])
    assert (mail_from, rcpts) == (ACCOUNT_FROM, [ADMIN])
    assert field(raw, "From") == 'From: "root (%s)" <%s>' % (HOST, ACCOUNT_FROM)
    assert field(raw, "To") == "To: root@example.com"
    assert field(raw, "Subject") == "Subject: disk report"
    assert field(raw, "User-Agent").startswith("User-Agent: s-nail ")
    assert_stamped(raw)
    assert parse(raw).get_content() == "disk 91% full\n"


AUTHOR = "A U Thor <dev@example.com>"
IDENT = ["-c", "user.name=A U Thor", "-c", "user.email=dev@example.com"]


def git_patch(tmp_path):
    """A patch made by git format-patch in a new repository: (repo, patch path)."""
    git = tool("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"PATH": PATH, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C.UTF-8"}

    def g(*args):
        subprocess.run([git, *IDENT, *args], cwd=repo, env=env, check=True, capture_output=True)

    g("init", "-q")
    (repo / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    g("add", "hello.c")
    g("commit", "-q", "-m", "Add hello.c", "-m", "A program that says hi.")
    g("format-patch", "-q", "-1", "-o", str(tmp_path / "patches"))
    (patch,) = sorted((tmp_path / "patches").iterdir())
    return repo, patch


@pytest.mark.parametrize(
    "envelope, argv, mail_from",
    [
        (None, ["-i", "root", "dev@example.com"], "dev@example.com"),
        ("root", ["-f", "root", "-i", "root", "dev@example.com"], ACCOUNT_FROM),
    ],
    ids=["plain", "envelope-sender"],
)
def test_git_send_email(ns, tmp_path, envelope, argv, mail_from):
    """``git send-email --smtp-server=/usr/sbin/sendmail`` of a real patch to root (git Cc's the
    author): the author's From, of the account's domain, is kept and is the envelope sender,
    root goes to its alias.  With sendemail.envelopeSender=root git passes ``-f root``, a bare
    local name: the envelope sender becomes the account's address, the From stays."""
    repo, patch = git_patch(tmp_path)
    config = IDENT + (["-c", "sendemail.envelopeSender=" + envelope] if envelope else [])
    cmd = [tool("git"), *config, "send-email", "--smtp-server=/usr/sbin/sendmail", "--confirm=never"]
    cmd += ["--to=root", "--quiet", str(patch)]
    proc = ns.run(
        "cd %s\nexport GIT_CONFIG_NOSYSTEM=1 HOME=%s\n%s </dev/null\nwait_for 1\n"
        % (shlex.quote(str(repo)), shlex.quote(str(tmp_path)), shlex.join(cmd))
    )
    got_from, rcpts, raw = one_message(ns, proc, argv)
    assert (got_from, sorted(rcpts)) == (mail_from, sorted([ADMIN, "dev@example.com"]))
    assert field(raw, "From") == "From: " + AUTHOR
    assert field(raw, "To") == "To: root@example.com"
    assert field(raw, "Cc") == "Cc: " + AUTHOR
    assert field(raw, "Subject") == "Subject: [PATCH] Add hello.c"
    assert_stamped(raw, message_id_domain="example.com")  # git's own Message-Id, kept
    body = parse(raw).get_content()
    assert body.startswith("A program that says hi.\n---\n hello.c | 2 ++\n")
    assert '\n+int main(void) { puts("hi"); return 0; }\n' in body


def test_a_users_cron_job_drops_into_the_maildrop_and_roots_queue_run_sends_it(real_system, tmp_path, smtp_server):
    """A user's crontab (pmtest, no MAILTO: the mail goes to the user): cron runs sendmail as
    pmtest, who has no configuration of its own and may not use the system account's secret
    (password_command, run by root alone): pysendmail drops the message into the maildrop that
    root's ``sendmail -bi`` made, and exits 0; root's ``sendmail -q`` sends it through the
    account, rewritten as pmtest's: the account's address, "Cron Daemon (HOST)", the bare name
    pmtest qualified with the domain.  (In the namespace, /root is 0711 so that pmtest can
    start the test's Python, which lives under /root.)"""
    user = "pmtest"
    try:
        pwd.getpwnam(user)
    except KeyError:
        pytest.fail("there is no user %s: run the README's test command (bash tests/run), which creates it" % user)
    srv = smtp_server(auth=(ACCOUNT_FROM, "secret"))
    config = config_text(srv.url) + (
        'user = "%s"\npassword_command = "echo secret; touch /run/callers/log/secret-read-by-$(id -u)"\n' % ACCOUNT_FROM
    )
    ns = Namespace(tmp_path, srv, config=config, config_mode=0o644)
    crontab = "/var/spool/cron/crontabs/" + user
    proc = ns.run(
        "/usr/sbin/sendmail -bi\n"
        "chmod 0711 /root\n"
        "mkdir -p /var/spool/cron/crontabs\n"
        "chgrp crontab /var/spool/cron/crontabs\n"
        "chmod 1730 /var/spool/cron/crontabs\n"
        "printf '@reboot echo the user job ran\\n' >%s\n"
        "chown %s:crontab %s\n"
        "chmod 0600 %s\n"
        "%s -f -L 15 </dev/null >/dev/null 2>&1 &\n"
        "wait_for 2\n"
        "ls -A /var/spool/pipemail/maildrop >/run/callers/log/dropped.txt\n"
        "/usr/sbin/sendmail -q\n"
        "ls -A /var/spool/pipemail/maildrop /var/spool/pipemail/q >/run/callers/log/left.txt\n"
        % (crontab, user, crontab, crontab, shlex.quote(tool("cron")))
    )
    runs = ns.runs()
    diag = "namespace: rc=%d stdout=%r stderr=%r; runs: %r" % (proc.returncode, proc.stdout, proc.stderr, runs)
    assert [r.argv for r in runs] == [["-bi"], ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", user], ["-q"]], diag
    made, dropped, queue_run = runs
    assert made.returncode == 0, diag
    assert (made.uid, dropped.uid, queue_run.uid) == (0, pwd.getpwnam(user).pw_uid, 0), diag
    (name,) = (ns.log / "dropped.txt").read_text().split()
    assert dropped.returncode == 0, diag
    assert name and dropped.stderr == "", diag  # silent, as postdrop: the user's cron job gets no second mail
    assert queue_run.returncode == 0, diag
    assert [p.name for p in ns.log.glob("secret-read-by-*")] == ["secret-read-by-0"], diag  # never by pmtest
    assert len(srv.messages) == 1 and [ok for _, _, ok in srv.logins] == [True], diag
    mail_from, rcpts, raw = srv.messages[0]
    assert (mail_from, rcpts) == (ACCOUNT_FROM, [user + "@example.com"])
    assert field(raw, "From") == 'From: "Cron Daemon (%s)" <%s>' % (HOST, ACCOUNT_FROM)
    assert field(raw, "To") == "To: %s@example.com" % user
    assert field(raw, "Subject") == "Subject: Cron <%s@%s> echo the user job ran" % (user, HOST)
    assert_stamped(raw)
    assert parse(raw).get_content() == "the user job ran\n"
    assert (ns.log / "left.txt").read_text() == "/var/spool/pipemail/maildrop:\n\n/var/spool/pipemail/q:\n", diag


def processes(marker):
    """The pids of the processes whose command line holds ``marker``."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if marker.encode() in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:
                pass
    return pids


def test_a_killed_test_leaves_no_process_behind(ns, tmp_path):
    """The test process killed (SIGKILL, no clean-up of its own) while cron and a job of its run
    in the namespace: within a few seconds, no process of the namespace is left (and the
    fixture checks that the real system is as it was: no crontab, no /run/crond.pid)."""
    marker_job, marker_init = "301.5", "302.5"  # sleep's arguments, to find them in /proc
    body = (
        "mkdir -p /var/spool/cron/crontabs\n"
        "printf '@reboot sleep %s\\n' >/var/spool/cron/crontabs/root\n"
        "chmod 0600 /var/spool/cron/crontabs/root\n"
        "%s -f </dev/null >/dev/null 2>&1 &\n"
        "sleep %s\n" % (marker_job, shlex.quote(tool("cron")), marker_init)
    )
    argv, env = ns.command(body)
    # A stand-in for pytest: a Python process that starts the namespace, then is killed.
    standin = subprocess.Popen([sys.executable, "-c", STANDIN, *argv], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not (processes(marker_job) and processes(marker_init)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes(marker_job) and processes(marker_init) and cron_pids(), "cron and its job did not start"
        os.kill(standin.pid, signal.SIGKILL)
        standin.wait()
        deadline = time.monotonic() + 5
        while (processes(marker_job) or processes(marker_init) or cron_pids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes(marker_job) == processes(marker_init) == cron_pids() == []
    finally:
        standin.kill()
        standin.wait()


STANDIN = "import subprocess, sys\nsubprocess.run(sys.argv[1:])\n"
