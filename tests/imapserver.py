"""A real IMAP server for the tests: Debian's Dovecot 2.3 imapd, run with a configuration of our own.

Built on tests/pop3server.py (the same skeleton: its own directory under /tmp with
base_dir, state_dir, log, certificate and homes; a static userdb serving every user as
the unprivileged pmtest; failed logins answered at once), serving IMAP only:

- ``.port``: plain IMAP offering STARTTLS (LOGIN allowed before it too);
- ``.ssl_port``: IMAP over TLS from the first byte (imaps).

It listens on 127.0.0.1 and on ::1.  Clients of 127.0.0.1 see the normal server (UIDPLUS
and MOVE offered); clients of ::1 see a server that hides UIDPLUS and MOVE (Dovecot's
``remote ::1 { imap_capability = ... }``; Dovecot still runs the commands if sent, so a
test asserts on outcomes or the transcript, never on a refusal).  The certificate covers
localhost, 127.0.0.1 and ::1.

INBOX and the folder ``Entwürfe`` (``Entw&APw-rfe`` on the wire) exist for every user.
Messages are put in by writing files into the Maildir (``.put``), 1,000 in a tenth of a
second; Dovecot sees them at the next SELECT (or, while a client idles, through inotify
within about half a second).  ``mailbox_idle_check_interval`` is 1 s, so an IDLE test
cannot fall back to Dovecot's 30 s poll.

The fixture ``imap_dovecot`` is session-scoped: call ``.clear()`` first.  Use it from a
test module with ``import imapserver`` and ``imap_dovecot = imapserver.imap_dovecot``.

The fixture ``imap_oauth_dovecot`` (module-scoped; a second Dovecot, ~0.1 s to start) is the same
server offering AUTHENTICATE XOAUTH2 and OAUTHBEARER too: Dovecot's own oauth2 passdb checks
each token by RFC 7662 introspection at a ``TokenServer`` on 127.0.0.1 (http.server in a
thread, the test's stand-in for the identity provider) that takes ``.token`` for ``.user``
and records every token it is asked about in ``.tokens.seen``.
"""

import itertools
import os
import pwd
import re
import signal
import socket
import subprocess
import time

import pop3server
import pytest
from pop3server import HOST, SETUP_HINT, SYSTEM_USER, binary, free_port

HOST6 = "::1"
FOLDER = "Entwürfe"
FOLDER_WIRE = "Entw&APw-rfe"  # modified UTF-7, as on the wire and as the Maildir++ folder's name

#: What clients of ::1 are offered after login: Dovecot 2.3.19's list without UIDPLUS and MOVE.
HIDDEN_CAPABILITY = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE LIST-EXTENDED "
    "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY "
    "SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)

CONFIG = """\
# Written by pipemail's tests/imapserver.py for one test session.
# Dovecot 2.3 syntax (Debian 12); doveconf -c THIS_FILE -n shows what it means.
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = pipemail-imap-test
protocols = imap
listen = {host}, {host6}
shutdown_clients = yes
stats_writer_socket_path =

ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes

# See tests/pop3server.py: failed logins answered at once, no anvil penalty.
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
# Tests open a few sessions at once (an IDLE and an APPEND).
mail_max_userip_connections = 50
# If inotify failed, IDLE would poll every 30 s: 1 s keeps an IDLE test honest either way.
mailbox_idle_check_interval = 1 secs

namespace inbox {{
  inbox = yes
  separator = /
  mailbox {folder} {{
    auto = create
  }}
}}

service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {ssl_port}
    ssl = yes
  }}
}}

# Clients from ::1 see a server without UIDPLUS and MOVE (the commands still work).
remote {host6} {{
  imap_capability = {hidden}
}}
"""


_order = itertools.count(1)


class ImapDovecot(pop3server.Dovecot):
    """A running Dovecot imapd: .host, .host6, .port, .ssl_port, .ca_file, .user, .password, .put()..."""

    #: A user whose password is UTF-8 with a quote and a backslash (LOGIN must quote it).
    UTF8_USER = "pmutf"
    UTF8_PASSWORD = 'pä"ss\\wörd'

    def __init__(self, dovecot, doveadm):
        super().__init__(dovecot, doveadm)
        self.users[self.UTF8_USER] = self.UTF8_PASSWORD

    def _prepare(self):
        import trustme

        ca = trustme.CA(organization_name="pipemail tests")
        cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
        ca.cert_pem.write_to_path(str(self.ca_file))
        key = self.dir / "key.pem"
        key.touch(mode=0o600)
        cert.private_key_pem.write_to_path(str(key))
        with open(self.dir / "cert.pem", "wb") as f:
            for pem in cert.cert_chain_pems:
                f.write(pem.bytes())
        users = self.dir / "users"
        users.write_text("".join("%s:{PLAIN}%s\n" % item for item in self.users.items()), encoding="utf-8")
        users.chmod(0o644)
        (self.dir / "home").mkdir(mode=0o755)
        for user in self.users:
            self._mkdir(self.dir / "home" / user)
            self._maildir_dirs(user)
            self._folder_dirs(user, FOLDER)

    def _write_config(self, port, ssl_port):
        self.config.write_text(
            CONFIG.format(
                dir=self.dir,
                host=HOST,
                host6=HOST6,
                port=port,
                ssl_port=ssl_port,
                uid=self.uid,
                gid=self.gid,
                folder=FOLDER,
                hidden=HIDDEN_CAPABILITY,
            ),
            encoding="utf-8",
        )
        self.config.chmod(0o644)

    def _await_greeting(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is None:
                self.pid = self._read_pid()
            elif pop3server._proc_state(self.pid) in (None, "Z"):
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"* OK"):
                        s.sendall(b"a LOGOUT\r\n")
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    @property
    def host6(self):
        return HOST6

    # -- folders -------------------------------------------------------------

    def folder_path(self, user=None, folder=None):
        """The Maildir (Path) of ``folder`` (None: INBOX) of ``user``: Maildir++ ``.NAME`` in mUTF-7."""
        md = self.maildir(user or self.user)
        if folder is None or folder.upper() == "INBOX":
            return md
        if folder != FOLDER:
            raise KeyError("the test Dovecot has INBOX and %s only, not %r" % (FOLDER, folder))
        return md / ("." + FOLDER_WIRE)

    def _folder_dirs(self, user, folder):
        path = self.folder_path(user, folder)
        self._mkdir(path)
        for sub in ("cur", "new", "tmp"):
            self._mkdir(path / sub)
        marker = path / "maildirfolder"
        marker.touch()
        os.chown(marker, self.uid, self.gid)
        return path

    def put(self, user, message, name=None, folder=None):
        """Deliver ``message`` into ``folder`` (None: INBOX) of ``user``, as pop3server's put does."""
        if folder is None or folder.upper() == "INBOX":
            return super().put(user, message, name)
        if isinstance(message, str):
            message = message.encode()
        path = self._folder_dirs(user or self.user, folder)
        name = name or "%d.M%dP%dQ%d.pipemail" % (
            time.time(),
            time.time_ns() % 1000000,
            os.getpid(),
            next(pop3server._unique),
        )
        tmp = path / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, self.uid, self.gid)
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(message)
        finally:
            os.close(fd)
        os.rename(tmp, path / "new" / name)
        return path / "new" / name

    def put_many(self, messages, user=None, folder=None):
        """Deliver each of ``messages`` (bytes) in order: their UIDs ascend in that order."""
        for message in messages:  # names never reused (Dovecot's uidlist remembers them), in order
            self.put(
                user, message, name="%d.Q%09dP%d.pipemail" % (time.time(), next(_order), os.getpid()), folder=folder
            )

    def folder_messages(self, user=None, folder=None):
        """{file name: bytes} of the messages in ``folder`` (new/ and cur/)."""
        path = self.folder_path(user, folder)
        found = {}
        for sub in ("new", "cur"):
            for n in os.listdir(path / sub):
                found[n] = (path / sub / n).read_bytes()
        return found

    def clear(self, user=None):
        """Remove every message of ``user`` (all users when None) in INBOX and the folder."""
        super().clear(user)
        bumped = time.time() + 2
        for u in [user] if user else list(self.users):
            path = self.folder_path(u, FOLDER)
            for sub in ("new", "cur", "tmp"):
                for n in os.listdir(path / sub):
                    try:
                        os.unlink(path / sub / n)
                    except FileNotFoundError:
                        pass
            # Dovecot rescans a Maildir when the mtime of new/ or cur/ differs from the one it
            # recorded; files removed within the second of its last scan would go unseen.
            for md in (self.maildir(u), path):
                for sub in ("new", "cur"):
                    os.utime(md / sub, (bumped, bumped))

    def admin(self, *args):
        """Run ``doveadm -c CONFIG ARGS``; its stdout (a failure fails the test)."""
        proc = subprocess.run([self.doveadm, "-c", str(self.config), *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            pytest.fail("doveadm %s exited %d: %s" % (" ".join(args), proc.returncode, proc.stderr))
        return proc.stdout

    def set_uidvalidity(self, value, folder="INBOX", user=None):
        self.admin("mailbox", "update", "-u", user or self.user, "--uid-validity", str(value), folder)

    def flags(self, user=None, folder="INBOX"):
        """{uid: set of flags} of ``folder``, as doveadm sees them."""
        out = self.admin("fetch", "-u", user or self.user, "uid flags", "mailbox", folder, "all")
        result, uid = {}, None
        for line in out.splitlines():
            m = re.match(r"uid: (\d+)", line)
            if m:
                uid = int(m.group(1))
                result[uid] = set()
            m = re.match(r"flags: ?(.*)", line)
            if m and uid is not None:
                result[uid] = set(m.group(1).split())
        return result

    def imap_processes(self):
        """The pids of the running imap session processes (children of the master)."""
        master = self.pid or self._read_pid()
        found = []
        for pid in pop3server._children(master):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv0 = f.read().split(b"\0")[0]
            except OSError:
                continue
            if argv0.endswith(b"/imap"):
                found.append(pid)
        return found

    def kill_sessions(self, sig=signal.SIGKILL):
        for pid in self.imap_processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


# -- OAuth 2.0: Dovecot's oauth2 passdb and a stand-in for the identity provider -------------

#: CONFIG with AUTHENTICATE XOAUTH2 and OAUTHBEARER offered, their tokens checked by Dovecot's
#: oauth2 passdb (RFC 7662 introspection, POSTed to the test's token server); PLAIN and LOGIN
#: still go to the passwd-file.
OAUTH_CONFIG = CONFIG.replace("auth_mechanisms = plain login\n", "auth_mechanisms = plain login xoauth2 oauthbearer\n")
OAUTH_CONFIG = OAUTH_CONFIG.replace(
    "  args = scheme=PLAIN username_format=%u {dir}/users\n}}\n",
    "  args = scheme=PLAIN username_format=%u {dir}/users\n"
    "  mechanisms = plain login\n"
    "}}\n"
    "passdb {{\n"
    "  driver = oauth2\n"
    "  mechanisms = xoauth2 oauthbearer\n"
    "  args = {dir}/dovecot-oauth2.conf.ext\n"
    "}}\n",
)
OAUTH_CONFIG = OAUTH_CONFIG.replace(
    "instance_name = pipemail-imap-test\n", "instance_name = pipemail-imap-oauth-test\n"
)
assert OAUTH_CONFIG.count("xoauth2") == 2 and "driver = oauth2" in OAUTH_CONFIG and "oauth-test" in OAUTH_CONFIG

#: Dovecot 2.3's oauth2 settings (doc.dovecot.org/2.3 configuration_manual/authentication/oauth2):
#: no tokeninfo_url, so every token is POSTed (token=...) to the introspection URL, whose JSON
#: answer must say "active": true and the user logging in as "username".
OAUTH2_SETTINGS = """\
# Written by pipemail's tests/imapserver.py: the test's token server stands in for the provider.
introspection_mode = post
introspection_url = {url}
username_attribute = username
active_attribute = active
active_value = true
"""


class TokenServer:
    """An RFC 7662 introspection endpoint on 127.0.0.1 (http.server in a thread): ``.tokens``
    maps each valid token to its user; any other token is ``{"active": false}``.  ``.seen``
    lists the tokens asked about, in order.  ``.url`` is what Dovecot POSTs to."""

    def __init__(self, tokens):
        import http.server
        import json
        import threading
        import urllib.parse

        self.tokens = dict(tokens)
        self.seen = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"))
                token = (form.get("token") or [""])[0]
                owner.seen.append(token)
                user = owner.tokens.get(token)
                answer = {"active": True, "username": user} if user else {"active": False}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://%s:%d/introspect" % (HOST, self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="token-server", daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class OAuthImapDovecot(ImapDovecot):
    """ImapDovecot that also takes AUTHENTICATE XOAUTH2 and OAUTHBEARER, checking each token at
    ``introspection_url`` (Dovecot's oauth2 passdb): ``.token`` is valid for ``.user``."""

    def __init__(self, dovecot, doveadm, introspection_url):
        super().__init__(dovecot, doveadm)
        self.introspection_url = introspection_url

    def _prepare(self):
        super()._prepare()
        settings = self.dir / "dovecot-oauth2.conf.ext"
        settings.write_text(OAUTH2_SETTINGS.format(url=self.introspection_url), encoding="utf-8")
        settings.chmod(0o644)

    def _write_config(self, port, ssl_port):
        self.config.write_text(
            OAUTH_CONFIG.format(
                dir=self.dir,
                host=HOST,
                host6=HOST6,
                port=port,
                ssl_port=ssl_port,
                uid=self.uid,
                gid=self.gid,
                folder=FOLDER,
                hidden=HIDDEN_CAPABILITY,
            ),
            encoding="utf-8",
        )
        self.config.chmod(0o644)


@pytest.fixture(scope="session")
def imap_dovecot():
    """A running Dovecot imapd on 127.0.0.1 and ::1 (STARTTLS on .port, imaps on .ssl_port)."""
    daemon = binary("dovecot")
    doveadm = binary("doveadm")
    if os.geteuid() != 0:
        pytest.fail("the Dovecot tests must run as root (Dovecot serves mail as %s): %s" % (SYSTEM_USER, SETUP_HINT))
    if not os.path.exists("/usr/lib/dovecot/imap"):
        pytest.fail("Dovecot's imapd is not installed (Debian package dovecot-imapd): %s" % SETUP_HINT)
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.fail("the test user %s does not exist: %s" % (SYSTEM_USER, SETUP_HINT))
    server = ImapDovecot(daemon, doveadm).start()
    try:
        yield server
    finally:
        server.close()


#: The one token the test's identity provider takes (for ImapDovecot's user).
OAUTH_TOKEN = "ya29.pipemail-test-Token_0123456789-abcdefghijklmnop"


@pytest.fixture(scope="module")
def imap_oauth_dovecot():
    """A running OAuthImapDovecot (module-scoped: only the OAuth tests need it) with its token
    server: ``.token`` (OAUTH_TOKEN) is active for ``.user``; ``.tokens`` is the TokenServer."""
    daemon = binary("dovecot")
    doveadm = binary("doveadm")
    if os.geteuid() != 0:
        pytest.fail("the Dovecot tests must run as root (Dovecot serves mail as %s): %s" % (SYSTEM_USER, SETUP_HINT))
    tokens = TokenServer({OAUTH_TOKEN: SYSTEM_USER})
    try:
        server = OAuthImapDovecot(daemon, doveadm, tokens.url).start()
        server.token, server.tokens = OAUTH_TOKEN, tokens
        try:
            yield server
        finally:
            server.close()
    finally:
        tokens.close()


__all__ = [
    "ImapDovecot",
    "OAuthImapDovecot",
    "TokenServer",
    "imap_dovecot",
    "imap_oauth_dovecot",
    "HOST",
    "HOST6",
    "FOLDER",
    "FOLDER_WIRE",
    "free_port",
]
