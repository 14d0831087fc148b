"""A real MTA for the tests: Debian's Exim, run with a configuration of our own.

The ``exim`` fixture starts ``exim4 -bdf`` (a foreground daemon) listening on
127.0.0.1 only, at a port picked here, with its spool, logs, pid file and the
mailbox all in a fresh temporary directory; /etc/exim4 and the system's own
Exim (if one runs) are not touched. It accepts mail from anyone who can reach
loopback for ``pmtest@localhost`` and ``pmtest@pipemail.test``, refuses every
other recipient at RCPT with a 5xx, and delivers at once (no queueing) into an
mbox file owned by the unprivileged user ``pmtest`` (Debian's Exim will not
deliver to root). Mail for ``dovecot@pipemail.test`` goes, as pmtest, into the
Maildir given to ``.deliver_into()`` (a Dovecot user's, for end-to-end tests).

Needs root (Exim keeps root privilege with ``-C`` only when the caller is
root; see ``exim_user`` in CONFIG) and the setup done by ``bash tests/run``:
the exim4-daemon-light package, the user pmtest and /dev/null mode 666.

Use it from a test module with ``import mta`` and ``exim = mta.exim`` (an
assignment, so test parameters named exim do not trip ruff's F811).
The fixture is session-scoped: call ``exim.clear()`` before counting.
"""

import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

USER = "pmtest"
DOMAINS = ("pipemail.test", "localhost")
HOST = "127.0.0.1"
SETUP_HINT = "run the README's test command as root (bash tests/run)"

CONFIG = """\
# Written by pipemail's tests/mta.py for one test session.
primary_hostname = pipemail.test
qualify_domain = pipemail.test
domainlist local_domains = {domains}

local_interfaces = {host}
daemon_smtp_ports = {port}
disable_ipv6 = true

spool_directory = {spool}
log_file_path = {logs}/%slog
pid_file_path = {dir}/exim.pid
keep_environment =
# Exim gives up root for good when it re-executes itself with -C from a
# process running as the Exim user (as a daemon's reception process does to
# deliver), so it could no longer become pmtest. Staying root instead keeps
# delivery immediate without listing this file in /etc/exim4/trusted_configs.
# Local delivery still runs as pmtest: the Debian build never delivers as root.
exim_user = root
exim_group = root

# Nothing that needs DNS or other hosts, and no TLS (no certificate here).
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =

# Deliver every message as soon as it is received, however many arrive.
queue_only = false
smtp_accept_queue_per_connection = 0
smtp_accept_max = 0
smtp_accept_reserve = 0

acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  deny    message = relay not permitted
          !domains = +local_domains
  require verify = recipient
  accept

begin routers

# dovecot@: into the Maildir named in {dir}/dovecot-maildir (deliver_into()),
# as an MTA delivers into the Maildir a POP3 server serves.
dovecot:
  driver = accept
  domains = +local_domains
  local_parts = dovecot
  transport = dovecot_maildir

pmtest:
  driver = accept
  domains = +local_domains
  local_parts = {user}
  check_local_user
  transport = mailbox

begin transports

mailbox:
  driver = appendfile
  file = {mailbox}
  user = {user}
  mode = 0600
  home_directory = {maildir}
  current_directory = {maildir}
  delivery_date_add
  envelope_to_add
  return_path_add

dovecot_maildir:
  driver = appendfile
  directory = ${{readfile{{{dir}/dovecot-maildir}}{{}}}}
  maildir_format
  user = {user}
  mode = 0600
  delivery_date_add
  envelope_to_add
  return_path_add

begin retry

*  *  F,1m,5s
"""

FROM_LINE = re.compile(rb"^From [^\n]*\n", re.MULTILINE)


def exim_binary():
    for name in ("exim4", "exim"):
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
        if path:
            return path
    pytest.fail("Exim is not installed (Debian package exim4-daemon-light): %s" % SETUP_HINT)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Exim:
    """A running Exim daemon: .host, .port, .mailbox, .messages(), .wait_for(n)."""

    def __init__(self, binary):
        self.binary = binary
        self.host = HOST
        self.port = None
        self.proc = None
        self.dir = Path(tempfile.mkdtemp(prefix="pipemail-exim-"))
        # pmtest must reach the mailbox's directory in here.
        self.dir.chmod(0o755)
        self.spool = self.dir / "spool"
        self.logs = self.dir / "log"
        self.maildir = self.dir / "mail"
        self.mailbox = self.maildir / USER
        self.config = self.dir / "exim.conf"

    # -- setup and teardown -------------------------------------------------

    def _prepare(self):
        for d in (self.spool, self.logs):
            d.mkdir(mode=0o700)
        target = pwd.getpwnam(USER)
        self.maildir.mkdir(mode=0o755)
        os.chown(self.maildir, target.pw_uid, target.pw_gid)

    def _write_config(self, port):
        self.config.write_text(
            CONFIG.format(
                domains=" : ".join(DOMAINS),
                host=HOST,
                port=port,
                spool=self.spool,
                logs=self.logs,
                dir=self.dir,
                user=USER,
                mailbox=self.mailbox,
                maildir=self.maildir,
            )
        )
        # Exim refuses a configuration that others can write.
        self.config.chmod(0o644)

    def start(self):
        self._prepare()
        errors = []
        for _attempt in range(5):
            port = free_port()
            self._write_config(port)
            with open(self.logs / "daemon.out", "ab") as out:
                self.proc = subprocess.Popen(
                    [self.binary, "-C", str(self.config), "-bdf"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    start_new_session=True,
                )
            if self._await_banner(port):
                self.port = port
                return self
            errors.append(self._diagnostics())
            self._stop_daemon()
        self.close()
        pytest.fail("Exim did not start:\n%s" % "\n".join(errors[-1:]))

    def _await_banner(self, port, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _stop_daemon(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Exim's daemon is the leader of its own session; reception and
            # delivery processes it forked are in the same process group.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None

    def close(self):
        self._stop_daemon()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the tests use --------------------------------------------------

    def messages(self):
        """The delivered messages, oldest first, each as the bytes Exim stored.

        Each is the message without the mbox "From " separator line: Exim's
        Return-path, Envelope-to, Delivery-date and Received headers, then the
        received headers and body, with LF line ends. Body lines starting with
        "From " appear as ">From " (mbox escaping).
        """
        try:
            with open(self.mailbox, "rb") as f:
                # Exim appends under an fcntl lock: never read half a message.
                fcntl.lockf(f, fcntl.LOCK_SH)
                try:
                    data = f.read()
                finally:
                    fcntl.lockf(f, fcntl.LOCK_UN)
        except FileNotFoundError:
            return []
        seps = list(FROM_LINE.finditer(data))
        ends = [m.start() for m in seps[1:]] + [len(data)]
        # appendfile writes "From ...\n", the message, then a "\n" suffix.
        chunks = [data[m.end() : end] for m, end in zip(seps, ends, strict=True)]
        return [c[:-1] if c.endswith(b"\n") else c for c in chunks]

    def clear(self):
        """Empty the mailbox (the fixture is shared by the whole session)."""
        try:
            with open(self.mailbox, "r+b") as f:
                fcntl.lockf(f, fcntl.LOCK_EX)
                f.truncate(0)
        except FileNotFoundError:
            pass

    def wait_for(self, n, timeout=10):
        """Wait until at least n messages are in the mailbox; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                pytest.fail(
                    "Exim delivered %d of %d messages in %ss\n%s" % (len(msgs), n, timeout, self._diagnostics())
                )
            time.sleep(0.05)

    def deliver_into(self, maildir):
        """Deliver mail for dovecot@pipemail.test into ``maildir`` (pmtest must own it)."""
        target = self.dir / "dovecot-maildir"
        target.write_text(str(maildir))
        target.chmod(0o644)

    def log(self, name="main"):
        try:
            return (self.logs / ("%slog" % name)).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _diagnostics(self):
        parts = []
        for name in ("main", "reject", "panic", "daemon.out"):
            path = self.logs / (name if "." in name else "%slog" % name)
            try:
                text = path.read_text(errors="replace").strip()
            except FileNotFoundError:
                continue
            if text:
                parts.append("--- %s ---\n%s" % (path.name, text[-4000:]))
        return "\n".join(parts) or "(Exim wrote no logs)"


@pytest.fixture(scope="session")
def exim():
    """A running Exim on 127.0.0.1:<port> delivering pmtest@pipemail.test to .mailbox."""
    binary = exim_binary()
    if os.geteuid() != 0:
        pytest.fail("the Exim tests must run as root (Exim keeps privilege with -C only for root): %s" % SETUP_HINT)
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.fail("the test user %s does not exist: %s" % (USER, SETUP_HINT))
    devnull = os.stat("/dev/null").st_mode & 0o777
    if devnull != 0o666:
        pytest.fail("/dev/null is mode %o, Exim needs 666 (chmod 666 /dev/null): %s" % (devnull, SETUP_HINT))
    server = Exim(binary).start()
    try:
        yield server
    finally:
        server.close()
