"""The README's recipe that makes pysendmail the machine's sendmail, run as it is written, on
top of Debian's default MTA (Exim, whose package makes /usr/sbin/sendmail, /usr/lib/sendmail,
/usr/bin/mailq and /usr/bin/newaliases links to exim4), and its undo.

The shell lines are taken from README.md between ``<!-- recipe:NAME -->`` and
``<!-- /recipe -->`` (and the man page must show the same lines), so the README, the man page
and this test cannot drift apart.  Each test runs in the private mount and PID namespace of
tests/test_sendmail_callers.py, with overlays over every place the recipe writes (/usr/sbin,
/usr/bin, /usr/lib, /etc, /var/lib/dpkg, /root, /home) and tmpfs over /run and /var/spool:
the real system is checked to be as it was after each test.  In the namespace:

- the four paths are Exim's links, as the real system has them;
- the install recipe runs twice (a second run must change nothing), with pysendmail's
  directory on root's PATH as an installation puts it there;
- ``mail -s`` (bsd-mailx) as root sends at once; as the user pmtest (no configuration of its
  own, no access to the account's secret) it drops into the maildrop that the recipe's
  ``newaliases`` made;
- the command of the recipe's /etc/cron.d line, run as cron would run it, sends the drop;
  root's ``pysendmail -q`` then has nothing left;
- the undo recipe runs, and the four paths must be Exim's links again, exactly (readlink),
  with no diversion, no ``.distrib``/``.orig`` and no /etc/cron.d/pysendmail left.
"""

import os
import pwd
import re
import shlex

import pytest
from test_sendmail_callers import (
    ACCOUNT_FROM,
    ADMIN,
    HOST,
    WATCHED,
    Namespace,
    field,
    parse,
    system_state,
)

from conftest import ROOT, command_path, tool

NAMES = ["/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"]
USER = "pmtest"

SETUP = """\
set -eu
S={scratch}
mount -t tmpfs -o mode=0755 tmpfs "$S"
for d in etc root home usr-sbin usr-bin usr-lib var-lib-dpkg; do mkdir "$S/$d" "$S/$d.work"; done
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$S/etc,workdir=$S/etc.work" /etc
mount -t overlay overlay -o "lowerdir=/root,upperdir=$S/root,workdir=$S/root.work" /root
mount -t overlay overlay -o "lowerdir=/home,upperdir=$S/home,workdir=$S/home.work" /home
mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$S/usr-sbin,workdir=$S/usr-sbin.work" /usr/sbin
mount -t overlay overlay -o "lowerdir=/usr/bin,upperdir=$S/usr-bin,workdir=$S/usr-bin.work" /usr/bin
mount -t overlay overlay -o "lowerdir=/usr/lib,upperdir=$S/usr-lib,workdir=$S/usr-lib.work" /usr/lib
mount -t overlay overlay -o "lowerdir=/var/lib/dpkg,upperdir=$S/var-lib-dpkg,workdir=$S/var-lib-dpkg.work" \\
    /var/lib/dpkg
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/spool
mkdir -m 0755 /run/callers /run/callers/log
mkdir -m 1777 /run/callers/tmp
mount --bind {log} /run/callers/log
rm -rf /etc/pipemail /etc/cron.d/pysendmail
mkdir -m 0755 /etc/pipemail
cp {config} /etc/pipemail/config.toml
chmod {config_mode:o} /etc/pipemail/config.toml
cp {aliases} /etc/aliases
chmod 0644 /etc/aliases
export TMPDIR=/run/callers/tmp
set +e

{body}
"""


class RecipeNamespace(Namespace):
    """The callers' namespace, without their wrapper: the four names are what the system has."""

    SETUP = SETUP


def recipe(name, text=None):
    """The shell lines of README.md's block ``name``, as they are to be pasted."""
    text = (ROOT / "README.md").read_text() if text is None else text
    found = re.findall(r"^<!-- recipe:%s -->\n(.*?)^<!-- /recipe -->$" % re.escape(name), text, re.M | re.S)
    assert len(found) == 1, "README.md has %d recipe:%s blocks" % (len(found), name)
    lines = found[0].splitlines()
    assert lines and all(line.startswith("    ") for line in lines), found[0]
    return "".join(line[4:] + "\n" for line in lines)


def man_recipe(name):
    """The lines of pysendmail.8's block ``name`` (between ``.\\" recipe:NAME`` and ``.\\" /recipe``),
    as they read (roff's escapes undone)."""
    text = (ROOT / "man" / "man8" / "pysendmail.8").read_text()
    found = re.findall(r'^\.\\" recipe:%s\n(.*?)^\.\\" /recipe$' % re.escape(name), text, re.M | re.S)
    assert len(found) == 1, "pysendmail.8 has %d recipe:%s blocks" % (len(found), name)
    lines = [line for line in found[0].splitlines() if line not in (".nf", ".fi", ".RS", ".RE", ".PP")]
    text = "".join(line + "\n" for line in lines)
    for roff, plain in (("\\-", "-"), ("\\(aq", "'"), ("\\(dq", '"'), ("\\e", "\\"), ("\\&", "")):
        text = text.replace(roff, plain)
    return text


@pytest.mark.parametrize("name", ["install-debian", "install-other", "undo-debian", "undo-other", "user-queue"])
def test_the_man_page_shows_the_readmes_recipe(name):
    assert man_recipe(name) == recipe(name)


def readlinks():
    return {p: os.readlink(p) if os.path.islink(p) else None for p in NAMES}


EXIM = {
    "/usr/sbin/sendmail": "exim4",
    "/usr/lib/sendmail": "../sbin/exim4",
    "/usr/bin/mailq": "../sbin/exim4",
    "/usr/bin/newaliases": "../sbin/exim4",
}

# the real system's state that no test may change (checked after each test)
RECIPE_WATCHED = WATCHED + NAMES[2:] + ["/var/lib/dpkg/diversions", "/etc/cron.d", "/home/%s" % USER]


@pytest.fixture
def real_system():
    if os.geteuid() != 0:
        pytest.fail("the recipe's tests mount in a private namespace (unshare -m): run them as root (bash tests/run)")
    if readlinks() != EXIM:
        pytest.fail("the four sendmail names are not Exim's links (%r): tests/run installs exim4" % readlinks())
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.fail("there is no user %s: run the README's test command (bash tests/run), which creates it" % USER)
    before = system_state(RECIPE_WATCHED)
    yield
    assert system_state(RECIPE_WATCHED) == before, "the test changed the real system"


SHOW = """\
show() {{  # the four names, any moved-aside copy, the diversions and the cron.d file, into $1
    for f in {names}; do
        for g in "$f" "$f.distrib" "$f.orig"; do
            if [ -L "$g" ]; then echo "$g -> $(readlink "$g")"; elif [ -e "$g" ]; then echo "$g (a file)"; fi
        done
    done >"/run/callers/log/$1.links"
    dpkg-divert --list | grep -e sendmail -e mailq -e newaliases | sort >"/run/callers/log/$1.diversions"
    cat /etc/cron.d/pysendmail >"/run/callers/log/$1.crond" 2>/dev/null
}}
"""

BODY = """\
export PATH={bindir}:$PATH   # where the installation put pysendmail
chmod 0711 /root             # the test's Python lives under /root; pmtest must run it
ln -sfn {mailx} /etc/alternatives/mail
show before
{install}
echo $? >/run/callers/log/install.rc
{install}
echo $? >/run/callers/log/install-again.rc
show installed
echo "hi from root" | mail -s "from root" root >/run/callers/log/root-mail.out 2>&1
echo $? >/run/callers/log/root-mail.rc
{setpriv} --reuid={user} --regid={user} --clear-groups \\
    env -i HOME=/home/{user} PATH=/usr/bin:/bin TMPDIR=/run/callers/tmp \\
    sh -c 'echo "hi from {user}" | mail -s "from {user}" root' >/run/callers/log/user-mail.out 2>&1
echo $? >/run/callers/log/user-mail.rc
ls -A /var/spool/pipemail/maildrop >/run/callers/log/dropped.txt
# the cron.d line's command, as cron runs it: sh -c, as root, PATH=/usr/bin:/bin
env -i PATH=/usr/bin:/bin HOME=/root sh -c "$(cut -d' ' -f7- /etc/cron.d/pysendmail)" >/run/callers/log/run.out 2>&1
echo $? >/run/callers/log/run.rc
pysendmail -q >/run/callers/log/q.out 2>&1
echo $? >/run/callers/log/q.rc
ls -A /var/spool/pipemail/maildrop /var/spool/pipemail/q >/run/callers/log/left.txt
{undo}
echo $? >/run/callers/log/undo.rc
show undone
"""


@pytest.mark.parametrize("system", ["debian", "other"])
def test_the_readmes_recipe_makes_pysendmail_the_sendmail_and_its_undo_puts_exim_back(
    real_system, tmp_path, smtp_server, system
):
    """Both forms of the README's recipe (dpkg-divert on Debian, mv elsewhere), run twice on top
    of Exim's links: all four names become links to pysendmail, a cron.d line runs the queue
    with the full path; root's and pmtest's ``mail -s`` arrive rewritten and aliased (pmtest's
    through the maildrop and the cron.d line's queue run); the undo puts Exim's four links back
    exactly, with nothing left beside them."""
    srv = smtp_server()
    ns = RecipeNamespace(tmp_path, srv)
    pysendmail = command_path("pysendmail")
    if len(pysendmail) != 1:
        pytest.fail("pysendmail is not installed beside this Python: pip install -e . (tests/run does)")
    (pysendmail,) = pysendmail
    body = SHOW.format(names=" ".join(NAMES)) + BODY.format(
        bindir=shlex.quote(os.path.dirname(pysendmail)),
        mailx=shlex.quote(tool("bsd-mailx")),
        setpriv=shlex.quote(tool("setpriv")),
        user=USER,
        install=recipe("install-" + system),
        undo=recipe("undo-" + system),
    )
    proc = ns.run(body)
    log = ns.log

    def read(name):
        path = log / name
        return path.read_text() if path.exists() else None

    diag = "namespace: rc=%d stdout=%r stderr=%r; logs: %r" % (
        proc.returncode,
        proc.stdout,
        proc.stderr,
        {p.name: p.read_text() for p in sorted(log.iterdir()) if p.is_file()},
    )
    exim = "".join("%s -> %s\n" % (p, EXIM[p]) for p in NAMES)
    assert read("before.links") == exim, diag
    assert read("before.diversions") == "", diag
    assert (read("install.rc"), read("install-again.rc")) == ("0\n", "0\n"), diag
    # installed: the four are pysendmail; Exim's links kept beside them (dpkg-divert: .distrib, registered)
    moved = ".distrib" if system == "debian" else ".orig"
    assert read("installed.links") == "".join(
        "%s -> %s\n%s%s -> %s\n" % (p, pysendmail, p, moved, EXIM[p]) for p in NAMES
    ), diag
    if system == "debian":
        assert read("installed.diversions") == "".join(
            "local diversion of %s to %s.distrib\n" % (p, p) for p in sorted(NAMES)
        ), diag
    else:
        assert read("installed.diversions") == "", diag
    assert read("installed.crond") == "*/5 * * * * root %s --run-queue\n" % pysendmail, diag
    # mail(1) as root: sent at once; as pmtest: dropped, then sent by the cron.d line's run
    assert (read("root-mail.rc"), read("root-mail.out")) == ("0\n", ""), diag
    assert read("user-mail.rc") == "0\n", diag
    assert re.fullmatch(r"(pysendmail: dropped as \S+ into /var/spool/pipemail/maildrop: .*\n)?", read("user-mail.out"))
    assert len(read("dropped.txt").split()) == 1, diag
    assert read("run.rc") == "0\n", diag
    assert (read("q.rc"), read("q.out")) == ("0\n", ""), diag
    assert read("left.txt") == "/var/spool/pipemail/maildrop:\n\n/var/spool/pipemail/q:\n", diag
    got = sorted((parse(raw)["Subject"], mail_from, rcpts, raw) for mail_from, rcpts, raw in srv.messages)
    assert [(s, f, r) for s, f, r, _ in got] == [
        ("from pmtest", ACCOUNT_FROM, [ADMIN]),
        ("from root", ACCOUNT_FROM, [ADMIN]),
    ], diag
    assert field(got[0][3], "From") == 'From: "%s (%s)" <%s>' % (USER, HOST, ACCOUNT_FROM)
    assert field(got[1][3], "From") == 'From: "root (%s)" <%s>' % (HOST, ACCOUNT_FROM)
    assert [parse(raw).get_content() for *_, raw in got] == ["hi from pmtest\n", "hi from root\n"]
    # undone: Exim's four links exactly, nothing beside them, no diversion, no cron.d line
    assert read("undo.rc") == "0\n", diag
    assert read("undone.links") == exim, diag
    assert read("undone.diversions") == "", diag
    assert read("undone.crond") == "", diag


USER_BODY = """\
export PATH={bindir}:$PATH
chmod 0711 /root
mkdir -p /var/spool/cron/crontabs
chgrp crontab /var/spool/cron/crontabs
chmod 1730 /var/spool/cron/crontabs
as_user() {{
    {setpriv} --reuid={user} --regid={user} --clear-groups \\
        env -i HOME=/home/{user} PATH="$PATH" TMPDIR=/run/callers/tmp "$@"
}}
as_user mkdir -p /home/{user}/.config/pipemail
as_user cp /run/callers/log/down.toml /home/{user}/.config/pipemail/config.toml
printf 'Subject: queued\\n\\nwhile the server was down\\n' | as_user pysendmail -i root >/run/callers/log/send.out 2>&1
echo $? >/run/callers/log/send.rc
as_user cp /run/callers/log/up.toml /home/{user}/.config/pipemail/config.toml
as_user sh -c {line} >/run/callers/log/crontab.out 2>&1
echo $? >/run/callers/log/crontab.rc
grep -v '^#' /var/spool/cron/crontabs/{user} >/run/callers/log/crontab.txt
# the crontab line's command, as cron runs it: sh -c as the user, PATH=/usr/bin:/bin
cron_run() {{
    as_user env PATH=/usr/bin:/bin sh -c "$(grep -v '^#' /var/spool/cron/crontabs/{user} | cut -d' ' -f6-)" \\
        >/run/callers/log/$1.out 2>&1
    echo $? >/run/callers/log/$1.rc
    ls -A /home/{user}/.local/state/pipemail/queue/q >/run/callers/log/$1.left
}}
cron_run early     # the next try is due 5 minutes after the first: nothing goes yet
# five minutes later: the envelope's next try made due now
as_user sed -i 's/^"due": [0-9.e+-]*/"due": 0/' /home/{user}/.local/state/pipemail/queue/q/*.env
cron_run due
"""


def test_a_user_with_an_own_configuration_runs_their_queue_from_the_readmes_crontab_line(
    real_system, tmp_path, smtp_server
):
    """pmtest with a configuration of its own: a message sent while its server is down waits in
    ~/.local/state/pipemail/queue (root's run never sees it); the README's user crontab line,
    run by pmtest, installs the queue run with pysendmail's full path, and that command, run as
    cron runs it, sends the message."""
    from smtp_server import free_port
    from test_sendmail_callers import config_text

    srv = smtp_server()
    ns = RecipeNamespace(tmp_path, srv)
    (pysendmail,) = command_path("pysendmail")
    for name, url in (("down.toml", "smtp://127.0.0.1:%d" % free_port()), ("up.toml", srv.url)):
        (ns.log / name).write_text(config_text(url))  # /run/callers/log in the namespace
        (ns.log / name).chmod(0o644)
    proc = ns.run(
        USER_BODY.format(
            bindir=shlex.quote(os.path.dirname(pysendmail)),
            setpriv=shlex.quote(tool("setpriv")),
            user=USER,
            line=shlex.quote(recipe("user-queue")),
        )
    )
    log = ns.log

    def read(name):
        path = log / name
        return path.read_text() if path.exists() else None

    diag = "namespace: rc=%d stdout=%r stderr=%r; logs: %r" % (
        proc.returncode,
        proc.stdout,
        proc.stderr,
        {p.name: p.read_text() for p in sorted(log.iterdir()) if p.is_file()},
    )
    assert read("send.rc") == "0\n", diag
    assert re.fullmatch(
        r"pysendmail: queued as \S+ in /home/%s/\.local/state/pipemail/queue for %s: .*\n" % (USER, re.escape(ADMIN)),
        read("send.out"),
    ), diag
    assert (read("crontab.rc"), read("crontab.out")) == ("0\n", ""), diag
    assert read("crontab.txt") == "*/5 * * * * %s --run-queue\n" % pysendmail, diag
    qid = read("send.out").split()[3]
    assert (read("early.rc"), read("early.left")) == ("0\n", "%s.env\n%s.msg\n" % (qid, qid)), diag
    assert (read("due.rc"), read("due.left")) == ("0\n", ""), diag
    assert [(f, r) for f, r, _ in srv.messages] == [(ACCOUNT_FROM, [ADMIN])], diag
    assert parse(srv.messages[0][2]).get_content() == "while the server was down\n"
