"""A real POP3 server for the tests: Debian's Dovecot 2.3, run with a configuration of our own.

The ``dovecot`` fixture writes a complete dovecot.conf (nothing from /etc/dovecot
is read) into a fresh directory under /tmp and starts ``dovecot -c FILE``, which
daemonizes. Its base_dir, state_dir, log, certificate and the users' homes all
live in that directory; a system Dovecot, if one runs, is not touched. It serves
POP3 only, on 127.0.0.1 only, at two ports picked here:

- ``.port``: plain POP3 offering STLS (CAPA: TOP UIDL RESP-CODES PIPELINING
  AUTH-RESP-CODE STLS USER SASL PLAIN); USER/PASS is allowed before STLS too.
- ``.ssl_port``: POP3 over TLS from the first byte (pop3s).

The certificate is for ``localhost`` and ``127.0.0.1``, issued by a test CA
made with trustme; trust ``.ca_file`` (or use ``.ssl_context()``). Users come
from a passwd-file: ``.user``/``.password`` (pmtest/secret) and the others in
``.users`` (a password with a space in it). All of them are served as the
unprivileged system user pmtest (Dovecot will not serve mail as root), each
from ``maildir:~/Maildir`` under a home of its own in the temporary directory.
Failed logins are answered at once (``auth_failure_delay = 0``): ``-ERR [AUTH]``.

Messages are put in by writing files into the Maildir (``.put``), as a local
delivery agent would. The fixture is session-scoped: call ``.clear()`` first.

Needs root (Dovecot's master must be root to switch to pmtest) and the setup
done by ``bash tests/run``: the packages dovecot-core and dovecot-pop3d and
the user pmtest. Use it from a test module with ``import pop3server`` and
``dovecot = pop3server.dovecot`` (an assignment, so test parameters named
dovecot do not trip ruff's F811).
"""

import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SYSTEM_USER = "pmtest"
USERS = {"pmtest": "secret", "pmother": "other secret"}
HOST = "127.0.0.1"
SETUP_HINT = "run the README's test command as root (bash tests/run)"
SBIN = "/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/bin"

CONFIG = """\
# Written by pipemail's tests/pop3server.py for one test session.
# Dovecot 2.3 syntax (Debian 12); doveconf -c THIS_FILE -n shows what it means.
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = pipemail-test
protocols = pop3
listen = {host}
shutdown_clients = yes
# No stats process: fewer processes to start and to stop.
stats_writer_socket_path =

ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
# Loopback counts as secure anyway; say so for USER/PASS before STLS.
disable_plaintext_auth = no
auth_mechanisms = plain
auth_failure_delay = 0
auth_verbose = yes

# Failed logins are answered at once: a first passdb only adds nodelay (kept
# since "noauthenticate" makes its result NEXT, not a failure). Without it a
# failure waits for the auth process's 0.5 s failure timer even with
# auth_failure_delay = 0, and each failure from 127.0.0.1 adds an anvil
# penalty that delays the next login from it by 4 s (then 8, 15).
passdb {{
  driver = static
  args = noauthenticate nodelay=yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u
}}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir

service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {ssl_port}
    ssl = yes
  }}
}}
"""

_unique = itertools.count(1)


def binary(name):
    path = shutil.which(name) or shutil.which(name, path=SBIN)
    if path is None:
        pytest.fail("%s is not installed (Debian packages dovecot-core, dovecot-pop3d): %s" % (name, SETUP_HINT))
    return path


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _proc_state(pid):
    """The state letter of a process (R, S, Z...), or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _children(pid):
    """The pids of the live processes whose parent is pid."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] != "Z":
            kids.append(int(entry))
    return kids


class Dovecot:
    """A running Dovecot: .host, .port, .ssl_port, .ca_file, .user, .password, .put(), .count()..."""

    def __init__(self, dovecot, doveadm):
        self.dovecot = dovecot
        self.doveadm = doveadm
        self.host = HOST
        self.port = None
        self.ssl_port = None
        self.users = dict(USERS)
        self.user = SYSTEM_USER
        self.password = self.users[self.user]
        self.pid = None
        # Not under pytest's tmp root (0700): pmtest must reach its home in here.
        self.dir = Path(tempfile.mkdtemp(prefix="pipemail-dovecot-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.config = self.dir / "dovecot.conf"
        self.ca_file = self.dir / "ca.pem"
        self.log_file = self.dir / "dovecot.log"
        self.out_file = self.dir / "dovecot.out"
        pw = pwd.getpwnam(SYSTEM_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    # -- setup and teardown -------------------------------------------------

    def _prepare(self):
        import trustme

        ca = trustme.CA(organization_name="pipemail tests")
        cert = ca.issue_cert("localhost", "127.0.0.1")
        ca.cert_pem.write_to_path(str(self.ca_file))
        key = self.dir / "key.pem"
        key.touch(mode=0o600)
        cert.private_key_pem.write_to_path(str(key))
        with open(self.dir / "cert.pem", "wb") as f:
            for pem in cert.cert_chain_pems:
                f.write(pem.bytes())
        # passwd-file: user:{SCHEME}password:uid:gid:gecos:home:shell:extra;
        # the auth process (user dovecot) reads it.
        users = self.dir / "users"
        users.write_text("".join("%s:{PLAIN}%s\n" % item for item in self.users.items()))
        users.chmod(0o644)
        (self.dir / "home").mkdir(mode=0o755)
        for user in self.users:
            self._mkdir(self.dir / "home" / user)
            self._maildir_dirs(user)

    def _write_config(self, port, ssl_port):
        self.config.write_text(
            CONFIG.format(dir=self.dir, host=HOST, port=port, ssl_port=ssl_port, uid=self.uid, gid=self.gid)
        )
        self.config.chmod(0o644)

    def start(self):
        self._prepare()
        errors = []
        for _attempt in range(5):
            port, ssl_port = free_port(), free_port()
            if port == ssl_port:
                continue
            self._write_config(port, ssl_port)
            # The master binds its listeners, then daemonizes: exit 0 means
            # listening, non-zero (89) a bad config or a port taken meanwhile.
            # Its output goes to a file: the daemon would hold a pipe open.
            with open(self.out_file, "ab") as out:
                rc = subprocess.call(
                    [self.dovecot, "-c", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    timeout=30,
                )
            if rc == 0:
                self.port, self.ssl_port = port, ssl_port
                if self._await_greeting():
                    return self
            errors.append("dovecot -c %s exited %d\n%s" % (self.config, rc, self._diagnostics()))
            self.stop()
        self.close()
        pytest.fail("Dovecot did not start:\n%s" % "\n".join(errors[-1:]))

    def _read_pid(self):
        try:
            return int((self.dir / "run" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _await_greeting(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The daemonized master writes its pid file after the parent exits.
            if self.pid is None:
                self.pid = self._read_pid()
            elif _proc_state(self.pid) in (None, "Z"):
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"+OK"):
                        s.sendall(b"QUIT\r\n")
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self):
        """Stop the server: SIGTERM to the master's process group (the daemonized master leads
        its own session; its children are in that group), then kill whatever of it is left.
        Not ``doveadm stop``, which sends the master the same SIGTERM and then took 3 s (23 s at
        the end of a whole run) to see it gone: the master is gone in 10 ms."""
        pid = self.pid or self._read_pid()
        if pid is None:
            return
        group = [pid, *_children(pid)]
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while any(_proc_state(p) not in (None, "Z") for p in group) and time.monotonic() < deadline:
            time.sleep(0.01)
        for p in group:
            if _proc_state(p) not in (None, "Z"):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pid = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what the tests use --------------------------------------------------

    def ssl_context(self):
        """A client SSLContext that trusts only the test CA (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def maildir(self, user=None):
        """The Path of a user's Maildir (with cur, new and tmp in it)."""
        user = user or self.user
        if user not in self.users:
            raise KeyError("no such POP3 user in the test Dovecot: %r" % user)
        return self.dir / "home" / user / "Maildir"

    def _mkdir(self, path):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, self.uid, self.gid)
        path.chmod(0o700)

    def _maildir_dirs(self, user):
        md = self.maildir(user)
        self._mkdir(md)
        for sub in ("cur", "new", "tmp"):
            self._mkdir(md / sub)
        return md

    def put(self, user, message, name=None):
        """Deliver message (bytes, LF or CRLF line ends) into user's Maildir new/.

        Written into tmp/ and renamed into new/, owned by pmtest, mode 0600.
        The name is unique unless given. Returns the Path of the file in new/.
        """
        if isinstance(message, str):
            message = message.encode()
        md = self._maildir_dirs(user or self.user)
        if name is None:
            name = "%d.M%dP%dQ%d.pipemail" % (time.time(), time.time_ns() % 1000000, os.getpid(), next(_unique))
        elif "/" in name or name.startswith("."):
            raise ValueError("not a Maildir file name: %r" % name)
        tmp = md / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(message)
        finally:
            os.close(fd)
        target = md / "new" / name
        os.rename(tmp, target)
        return target

    def _messages(self, user):
        md = self.maildir(user)
        found = []
        for sub in ("new", "cur"):
            try:
                found += [md / sub / n for n in os.listdir(md / sub) if not n.startswith(".")]
            except FileNotFoundError:
                pass
        return found

    def count(self, user=None):
        """How many messages are in user's Maildir (new/ and cur/)."""
        return len(self._messages(user or self.user))

    def messages(self, user=None):
        """The bytes of the messages in user's Maildir, in no particular order."""
        return [p.read_bytes() for p in self._messages(user or self.user)]

    def clear(self, user=None):
        """Remove every message of user (of all users when None).

        Dovecot's own files (dovecot-uidlist, indexes) are kept, so UIDs, and
        so UIDLs, keep growing: a message put after a clear never reuses one.
        """
        for u in [user] if user else list(self.users):
            md = self.maildir(u)
            for sub in ("new", "cur", "tmp"):
                try:
                    names = os.listdir(md / sub)
                except FileNotFoundError:
                    continue
                for n in names:
                    try:
                        os.unlink(md / sub / n)
                    except FileNotFoundError:
                        pass

    def log(self):
        """Dovecot's log (logins, errors), for failure messages."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _diagnostics(self):
        parts = []
        for path in (self.out_file, self.log_file):
            try:
                text = path.read_text(errors="replace").strip()
            except FileNotFoundError:
                continue
            if text:
                parts.append("--- %s ---\n%s" % (path.name, text[-4000:]))
        return "\n".join(parts) or "(Dovecot wrote no logs)"


def _version(dovecot):
    try:
        out = subprocess.run([dovecot, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail("%s --version failed: %s" % (dovecot, e))
    m = re.match(r"(\d+)\.(\d+)", out.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


@pytest.fixture(scope="session")
def dovecot():
    """A running Dovecot on 127.0.0.1: POP3 with STLS on .port, pop3s on .ssl_port."""
    daemon = binary("dovecot")
    doveadm = binary("doveadm")
    if os.geteuid() != 0:
        pytest.fail("the Dovecot tests must run as root (Dovecot serves mail as %s): %s" % (SYSTEM_USER, SETUP_HINT))
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.fail("the test user %s does not exist: %s" % (SYSTEM_USER, SETUP_HINT))
    version = _version(daemon)
    if version is None or version[:2] != (2, 3):
        pytest.fail(
            "tests/pop3server.py writes a Dovecot 2.3 configuration (Debian 12); %s is version %s"
            % (daemon, ".".join(map(str, version or ())) or "unknown")
        )
    try:
        import trustme  # noqa: F401
    except ImportError:
        pytest.fail("trustme is missing (pip install -e '.[test]'): %s" % SETUP_HINT)
    server = Dovecot(daemon, doveadm).start()
    try:
        yield server
    finally:
        server.close()
