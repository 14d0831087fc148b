#!/usr/bin/env python3
"""Benchmark pypop over IMAP: fetch 1,000 messages of 10 KB from a Dovecot imapd over TLS (imaps) on
loopback, next to getmail6, mbsync (isync) and fetchmail (with procmail as its mbox MDA).

A standalone benchmark, not a test: it prints tables and always exits 0.  It starts its own Dovecot
(imap only, 127.0.0.1, a port of its own, a trustme certificate) in a temporary directory, so it needs
root (the mail belongs to the unprivileged user pmtest, as in the tests) and a venv's Python (trustme).
The pypop row runs when `pypop fetch --server imaps://...` works; until then it says why not.
See bench/README.md.

Units: times in s, peak RSS in MB (2**20 bytes), 1 KB = 1024 bytes.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
from benchlib import CHILD_ENV, DATA_DIR, DROPPED_ENV, REPO_DIR, find_venvs, print_table, run_child, verdict

IMAP_DIR = DATA_DIR / "imap"
HOME_DIR = IMAP_DIR / "home"  # pypop's empty HOME: no ~/.config/pipemail or ~/.netrc of the caller
STATE_DIR = IMAP_DIR / "state"  # pypop's XDG_STATE_HOME, removed before every fresh run
OUT_MBOX = IMAP_DIR / "out.mbox"  # pypop's and the imaplib loop's mbox
USER = "pmtest"
PASSWORD = "secret"
APT_COMMAND = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
    "dovecot-imapd getmail6 isync fetchmail procmail"
)

for _key in [k for k in CHILD_ENV if k.startswith("PIPEMAIL_") or k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")]:
    del CHILD_ENV[_key]
CHILD_ENV["HOME"] = str(HOME_DIR)
CHILD_ENV["XDG_STATE_HOME"] = str(STATE_DIR)
CHILD_ENV["PIPEMAIL_PASSWORD"] = PASSWORD
assert benchlib.CHILD_ENV is CHILD_ENV

# The floor: imaplib in batches of 100 UIDs, literals whole in memory, appended to an mbox with no
# locking, no ">From " quoting and no fsync.  It promises nothing; it shows what the protocol costs.
IMAPLIB_LOOP = """\
import imaplib, os, ssl, sys
port, ca, out = sys.argv[1:4]
M = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ssl.create_default_context(cafile=ca))
M.login("pmtest", os.environ["PIPEMAIL_PASSWORD"])
M.select("INBOX", readonly=True)
uids = M.uid("SEARCH", "ALL")[1][0].split()
with open(out, "ab") as f:
    for i in range(0, len(uids), 100):
        for item in M.uid("FETCH", b",".join(uids[i:i + 100]), "(BODY.PEEK[])")[1]:
            if isinstance(item, tuple):
                f.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\\n" + item[1].replace(b"\\r\\n", b"\\n") + b"\\n")
M.logout()
"""

CONFIG = """\
# Written by pipemail's bench/imap_bench.py. Dovecot 2.3 syntax (Debian 12).
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = pipemail-imapbench-{pid}
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
stats_writer_socket_path =
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
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
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


# ---------------------------------------------------------------------------
# The messages


def make_message(i: int, size: int) -> bytes:
    """Message i (0-based), `size` bytes with LF line ends; no body line starts with "From "."""
    head = (
        f"From: Bench Sender <sender{i}@example.org>\n"
        f"To: pmtest@example.com\n"
        f"Subject: imap bench {i:05d}\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
        f"Message-ID: <bench-{i}@pipemail.test>\n"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=us-ascii\n"
        f"\n"
    ).encode()
    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")
    lines = []
    length = len(head)
    k = i
    while length < size:
        lines.append((" ".join(words[(k + j * 7) % len(words)] for j in range(11)) + f" {k:06d}\n").encode())
        length += len(lines[-1])
        k += 1
    data = head + b"".join(lines)
    return data[: size - 1] + b"\n"


MSGID_RE = re.compile(rb"^Message-ID: <bench-(\d+)@pipemail\.test>\r?$", re.M | re.I)


def check_ids(found: list[int], n: int, what: str) -> str | None:
    if sorted(found) != list(range(n)):
        dup = len(found) - len(set(found))
        return f"{what}: {len(set(found))} of the {n} messages, {dup} twice or more"
    return None


def check_mbox(path: Path, n: int) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "no mbox written"
    if n and not data.startswith(b"From "):
        return "the mbox does not start with a From line"
    seps = len(re.findall(rb"^From ", data, re.M))
    if seps != n:
        return f"{seps} From_ lines in the mbox, not {n}"
    return check_ids([int(m) for m in MSGID_RE.findall(data)], n, "mbox")


def maildir_ids(root: Path) -> list[int]:
    found = []
    for sub in ("new", "cur"):
        d = root / sub
        if d.is_dir():
            for f in d.iterdir():
                found += [int(m) for m in MSGID_RE.findall(f.read_bytes()[:4096])]
    return found


def check_maildir(root: Path, n: int) -> str | None:
    return check_ids(maildir_ids(root), n, "Maildir")


def stored_ids(kind: str, path: Path) -> list[int]:
    """The serial numbers of the messages in an output (by Message-ID; a copy counts again)."""
    if kind == "maildir":
        return maildir_ids(path)
    try:
        return [int(m) for m in MSGID_RE.findall(path.read_bytes())]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Dovecot imapd on 127.0.0.1:.port (imaps), mail of pmtest in .maildir, CA in .ca_file."""

    def __init__(self, parent: Path):
        import trustme  # a venv's Python (the test extra)

        pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.dir = Path(tempfile.mkdtemp(prefix="pipemail-imapbench-", dir=parent))
        self.dir.chmod(0o755)
        ca = trustme.CA(organization_name="pipemail bench")
        cert = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")  # fetchmail wants the CN
        self.ca_file = self.dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))
        with open(self.dir / "cert.pem", "wb") as f:
            for pem in cert.cert_chain_pems:
                f.write(pem.bytes())
        (self.dir / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        self.maildir = self.dir / "home" / USER / "Maildir"
        for d in (self.maildir.parent, self.maildir, *(self.maildir / s for s in ("cur", "new", "tmp"))):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.uid, self.gid)
        self.port = None
        self.pid = None

    def start(self) -> Server:
        for _ in range(5):
            port = free_port()
            (self.dir / "dovecot.conf").write_text(
                CONFIG.format(dir=self.dir, uid=self.uid, gid=self.gid, port=port, pid=os.getpid())
            )
            with open(self.dir / "dovecot.out", "ab") as out:
                rc = subprocess.call(
                    [shutil.which("dovecot") or "/usr/sbin/dovecot", "-c", str(self.dir / "dovecot.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    timeout=30,
                )
            if rc == 0 and self._await(port):
                self.port = port
                return self
            self.stop()
        raise SystemExit(f"bench: Dovecot did not start; see {self.dir}/dovecot.log and dovecot.out")

    def _await(self, port: int) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                self.pid = int((self.dir / "run" / "master.pid").read_text())
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=2) as s,
                    self.context().wrap_socket(s, server_hostname="localhost") as t,
                ):
                    if t.recv(512).startswith(b"* OK"):
                        return True
            except (OSError, ValueError):
                time.sleep(0.02)
        return False

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def stop(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        self.pid = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def fill(self, messages: list[bytes]) -> None:
        """The Maildir holds exactly `messages` (written into tmp/, renamed into new/), then one SELECT
        makes Dovecot index them: every timed run starts from the same indexed folder."""
        for sub in ("cur", "new", "tmp"):
            for f in (self.maildir / sub).iterdir():
                f.unlink()
        for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.cache", "dovecot.index.log"):
            (self.maildir / name).unlink(missing_ok=True)
        stamp = int(time.time())
        for i, raw in enumerate(messages):
            name = f"{stamp}.M{i}P{os.getpid()}.bench"
            tmp = self.maildir / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchown(fd, self.uid, self.gid)
                os.write(fd, raw)
            finally:
                os.close(fd)
            os.rename(tmp, self.maildir / "new" / name)
        self.imap("NOOP")

    def imap(self, *commands: str) -> list:
        """Run UID commands in INBOX (read-write) as pmtest; their results."""
        import imaplib

        m = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self.context())
        try:
            m.login(USER, PASSWORD)
            m.select("INBOX")
            return [m.uid(*c.split(" ", 2)) for c in commands if c != "NOOP"]
        finally:
            m.logout()

    def new_uidvalidity(self) -> None:
        """Give INBOX a new UIDVALIDITY, UIDs and flags unchanged: the nastiest case for a client."""
        import imaplib

        m = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self.context())
        try:
            m.login(USER, PASSWORD)
            now = int(m.status("INBOX", "(UIDVALIDITY)")[1][0].split()[-1].rstrip(b")"))
        finally:
            m.logout()
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        subprocess.run(
            [doveadm, "-c", str(self.dir / "dovecot.conf"), "mailbox", "update", "-u", USER]
            + ["--uid-validity", str(now + 1000), "INBOX"],
            check=True,
            capture_output=True,
        )

    def unseen(self) -> None:
        """No message \\Seen (fetchmail fetches only unseen messages and sets \\Seen)."""
        self.imap("STORE 1:* -FLAGS.SILENT (\\Seen)")


def dovecot_version() -> str:
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    return out.split()[0] if out.split() else "?"


def tool_version(argv: list[str], pattern: str) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=CHILD_ENV)
    except OSError:
        return "?"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(1) if m else "?"


# ---------------------------------------------------------------------------
# The commands


@dataclass
class Cmd:
    label: str
    argv: list[str]
    reset: object  # callable(): the client's state and output as before a first run
    kind: str  # "mbox" or "maildir"
    output: Path
    ok_codes: tuple = (0,)
    again_codes: tuple = (0,)
    again: bool = True  # whether a second run is meaningful (the imaplib loop keeps no state)
    walls: dict[str, list[float]] = field(default_factory=lambda: {"fresh": [], "again": []})
    rss: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, n: int) -> str | None:
        return check_maildir(self.output, n) if self.kind == "maildir" else check_mbox(self.output, n)


def truncate_owned(path: Path, uid: int, gid: int) -> None:
    with open(path, "wb"):
        pass
    os.chown(path, uid, gid)


def make_cmds(venvs, server: Server, wanted: set[str]) -> list[Cmd]:
    port, ca = server.port, str(server.ca_file)
    uid, gid = server.uid, server.gid
    cmds: list[Cmd] = []

    def reset_pypop():
        OUT_MBOX.unlink(missing_ok=True)
        Path(str(OUT_MBOX) + ".lock").unlink(missing_ok=True)
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        STATE_DIR.mkdir(parents=True)

    if "pypop" in wanted:
        for label, bindir in venvs:
            argv = [str(bindir / "pypop"), "--server", f"imaps://127.0.0.1:{port}", "--user", USER]
            argv += ["--tls-trust-file", ca, "fetch", "--mbox", str(OUT_MBOX)]
            cmds.append(Cmd(f"pypop-{label}", argv, reset_pypop, "mbox", OUT_MBOX))

    gdir = IMAP_DIR / "getmail"
    gmbox = IMAP_DIR / "getmail.mbox"
    if "getmail" in wanted and shutil.which("getmail"):
        gdir.mkdir(parents=True, exist_ok=True)
        (gdir / "getmailrc").write_text(
            "[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = 127.0.0.1\n"
            f'port = {port}\nusername = {USER}\npassword = {PASSWORD}\nmailboxes = ("INBOX",)\n'
            f"ca_certs = {ca}\n\n[destination]\ntype = Mboxrd\npath = {gmbox}\nuser = {USER}\n\n"
            "[options]\nread_all = false\ndelete = false\nverbose = 0\nmessage_log =\n"
        )
        (gdir / "getmailrc").chmod(0o600)

        def reset_getmail():
            for f in gdir.glob("oldmail-*"):
                f.unlink()
            truncate_owned(gmbox, uid, gid)  # getmail delivers as pmtest into an existing mbox

        argv = [shutil.which("getmail"), "--getmaildir", str(gdir), "--rcfile", str(gdir / "getmailrc")]
        cmds.append(Cmd("getmail6", argv, reset_getmail, "mbox", gmbox))

    mdir = IMAP_DIR / "mbsync"
    mmail = mdir / "mail"
    if "mbsync" in wanted and shutil.which("mbsync"):
        mdir.mkdir(parents=True, exist_ok=True)
        # Host localhost: mbsync 1.4 does not match a certificate's IP addresses; SSLType is 1.4's name
        (mdir / "mbsyncrc").write_text(
            f"IMAPAccount bench\nHost localhost\nPort {port}\nUser {USER}\nPass {PASSWORD}\n"
            f"SSLType IMAPS\nCertificateFile {ca}\n\nIMAPStore bench-remote\nAccount bench\n\n"
            f"MaildirStore bench-local\nPath {mmail}/\nInbox {mmail}/INBOX\nSubFolders Verbatim\n\n"
            "Channel bench\nFar :bench-remote:\nNear :bench-local:\nPatterns INBOX\nSync Pull\n"
            "Create Near\nExpunge None\nSyncState *\n"
        )

        def reset_mbsync():
            shutil.rmtree(mmail, ignore_errors=True)
            mmail.mkdir(parents=True)

        argv = [shutil.which("mbsync"), "-c", str(mdir / "mbsyncrc"), "-q", "bench"]
        cmds.append(Cmd("mbsync", argv, reset_mbsync, "maildir", mmail / "INBOX"))

    fdir = IMAP_DIR / "fetchmail"
    fmbox = fdir / "fetchmail.mbox"
    if "fetchmail" in wanted and shutil.which("fetchmail") and shutil.which("procmail") and shutil.which("runuser"):
        fdir.mkdir(parents=True, exist_ok=True)
        os.chown(fdir, uid, gid)
        (fdir / "empty.rc").write_text("")
        rc = fdir / "fetchmailrc"
        rc.write_text(
            f"set no syslog\npoll localhost protocol IMAP port {port}\n"
            f"  user {USER} password {PASSWORD} is {USER} here\n"
            f"  ssl sslcertck sslcertfile {ca}\n  folder INBOX\n  keep\n"
            f'  mda "{shutil.which("procmail")} -f %F DEFAULT={fmbox} {fdir}/empty.rc"\n'
        )
        rc.chmod(0o600)
        for f in (rc, fdir / "empty.rc"):
            os.chown(f, uid, gid)

        def reset_fetchmail():
            truncate_owned(fmbox, uid, gid)
            (fdir / ".fetchids").unlink(missing_ok=True)
            server.unseen()

        # fetchmail refuses to run as root with good reason; it runs as pmtest, procmail delivering
        argv = [shutil.which("runuser"), "-u", USER, "--", "env", f"HOME={fdir}", shutil.which("fetchmail")]
        argv += ["-f", str(rc), "--pidfile", str(fdir / "pid"), "-s"]
        # exit 1: "no mail", what a second run says
        cmds.append(Cmd("fetchmail", argv, reset_fetchmail, "mbox", fmbox, again_codes=(0, 1)))

    if "imaplib" in wanted:
        for label, bindir in venvs:
            argv = [str(bindir / "python"), "-c", IMAPLIB_LOOP, str(port), ca, str(OUT_MBOX)]
            cmds.append(Cmd(f"imaplib-loop-{label}", argv, reset_pypop, "mbox", OUT_MBOX, again=False))
    return cmds


def run_pair(cmd: Cmd, server: Server, n: int, record: bool) -> None:
    """A fresh run (client state reset: every message new), checked, then at once a second run
    (nothing new), checked: the output must not change."""
    cmd.reset()
    os.sync()
    res = run_child(cmd.argv)
    if res.returncode not in cmd.ok_codes:
        cmd.failures.append(f"exit {res.returncode} after {res.wall:.0f} s: {res.stderr.strip()[:300]}")
        return
    problem = cmd.check(n)
    if problem:
        cmd.failures.append(problem)
        return
    if not cmd.again:
        if record:
            cmd.walls["fresh"].append(res.wall)
            cmd.rss.append(res.maxrss_mb)
        return
    again = run_child(cmd.argv)
    if again.returncode not in cmd.again_codes:
        cmd.failures.append(f"second run: exit {again.returncode}: {again.stderr.strip()[:300]}")
    elif problem := cmd.check(n):
        cmd.failures.append(f"second run: {problem}")
    elif record:
        cmd.walls["again"].append(again.wall)
    if record:
        cmd.walls["fresh"].append(res.wall)
        cmd.rss.append(max(res.maxrss_mb, again.maxrss_mb))


def uidvalidity_round(cmds: list[Cmd], server: Server, n: int, timeout: float) -> list[list[str]]:
    """For each command: a fresh run, then INBOX gets a new UIDVALIDITY, then a run again: the
    copies it stored twice (a client that trusts the old UIDs stores every message again)."""
    rows = []
    for cmd in cmds:
        if not cmd.again:
            continue
        cmd.reset()
        first = run_child(cmd.argv)
        if first.returncode not in cmd.ok_codes or cmd.check(n):
            rows.append([cmd.label, "n/a", "n/a", f"first run failed (exit {first.returncode})"])
            continue
        server.new_uidvalidity()
        start = time.perf_counter()
        try:
            p = subprocess.run(cmd.argv, env=CHILD_ENV, capture_output=True, timeout=timeout)
            wall = time.perf_counter() - start
            said = (p.stderr or p.stdout).decode("utf-8", "replace").strip().splitlines()
            said = said[0][:90] if said else ""
            code = f"exit {p.returncode}"
        except subprocess.TimeoutExpired:
            wall, said, code = timeout, "", f"killed after {timeout:.0f} s"
        ids = stored_ids(cmd.kind, cmd.output)
        rows.append([cmd.label, f"{wall:.2f}", str(len(ids) - len(set(ids))), f"{code}; {said}" if said else code])
    return rows


def probe_pypop(cmds: list[Cmd], server: Server, n: int) -> tuple[list[Cmd], list[str]]:
    """Drop the pypop rows whose command does not work yet (it will once IMAP lands in pypop)."""
    kept, notes = [], []
    for cmd in cmds:
        if cmd.label.startswith("pypop-"):
            cmd.reset()
            res = run_child(cmd.argv)
            problem = None if res.returncode == 0 else f"exit {res.returncode}: {res.stderr.strip()[:200]}"
            problem = problem or cmd.check(n)
            if problem:
                notes.append(f"{cmd.label}: `pypop fetch --server imaps://...` does not work here ({problem})")
                continue
        kept.append(cmd)
    return kept, notes


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs of each command (default 3)")
    parser.add_argument("--messages", type=int, default=1000, metavar="N", help="messages to fetch (default 1000)")
    parser.add_argument("--size", type=int, default=10240, metavar="BYTES", help="size of each (default 10240)")
    parser.add_argument(
        "--venv", action="append", metavar="DIR", help="venv with pypop (repeatable; default .venv-3.11, .venv-3.13)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["pypop", "getmail", "mbsync", "fetchmail", "imaplib"],
        help="run only these commands (repeatable; default all)",
    )
    parser.add_argument(
        "--uidvalidity",
        action="store_true",
        help="also: a run after INBOX got a new UIDVALIDITY (duplicates stored; getmail6 takes 12 s or more)",
    )
    parser.add_argument("--server-dir", metavar="DIR", help="where the server's directory is made (default /tmp)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.messages < 1 or args.size < 400:
        parser.error("--runs and --messages must be at least 1, --size at least 400")
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (Dovecot serves the mail of pmtest; fetchmail runs as pmtest)")
    if not shutil.which("dovecot") or not Path("/usr/lib/dovecot/imap").exists():
        raise SystemExit(f"bench: Dovecot's imapd is missing ({APT_COMMAND})")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        raise SystemExit(f"bench: no user {USER} (bash tests/run creates it)") from None
    wanted = set(args.only or ["pypop", "getmail", "mbsync", "fetchmail", "imaplib"])
    venvs = find_venvs(args.venv, ("pypop",))
    shutil.rmtree(IMAP_DIR, ignore_errors=True)
    HOME_DIR.mkdir(parents=True)
    messages = [make_message(i, args.size) for i in range(args.messages)]

    server = Server(Path(args.server_dir or "/tmp")).start()
    try:
        server.fill(messages)
        return report(args, venvs, server, messages, wanted)
    finally:
        server.close()
        shutil.rmtree(IMAP_DIR, ignore_errors=True)


def report(args, venvs, server: Server, messages: list[bytes], wanted: set[str]) -> int:
    n = len(messages)
    cmds = make_cmds(venvs, server, wanted)
    cmds, notes = probe_pypop(cmds, server, n)
    missing = [
        t
        for t, exe in (("getmail", "getmail"), ("mbsync", "mbsync"), ("fetchmail", "fetchmail"))
        if t in wanted and not shutil.which(exe)
    ]
    print(f"{len(cmds)} commands x {args.runs} runs (a fresh run, then a second with nothing new) ...", file=sys.stderr)
    for cmd in cmds:  # one untimed warm-up each
        run_pair(cmd, server, n, record=False)
    for run in range(args.runs):
        order = cmds[run % len(cmds) :] + cmds[: run % len(cmds)] if cmds else []
        before = {c.label: len(c.walls["fresh"]) for c in cmds}
        for cmd in order:
            run_pair(cmd, server, n, record=True)
        line = ", ".join(
            f"{c.label} {c.walls['fresh'][-1]:.2f}" if len(c.walls["fresh"]) > before[c.label] else f"{c.label} failed"
            for c in cmds
        )
        print(f"  run {run + 1}/{args.runs}: {line}", file=sys.stderr)
    floor = max(run_child(["true"]).maxrss_mb for _ in range(3))
    uv_rows = uidvalidity_round(cmds, server, n, 300) if args.uidvalidity else []

    print()
    print("pipemail IMAP fetch benchmark (issue 14)")
    dropped = ", ".join(f"{k}={os.environ[k]}" for k in DROPPED_ENV) or "none"
    print(f"environment of the commands: PYTHON* variables dropped ({dropped}), byte code in bench/data/pycache")
    print(
        f"server: Dovecot {dovecot_version()} imapd on 127.0.0.1:{server.port}, imaps (TLS from the first byte), "
        f"trustme certificate, user {USER}; its Maildir in {server.dir}"
    )
    total = n * args.size / benchlib.MB
    print(
        f"fetched: {n} messages of {args.size} bytes ({total:.1f} MB, LF in the Maildir), INBOX indexed by "
        "Dovecot before every run; every client's state and output removed before each fresh run"
    )
    versions = []
    if shutil.which("getmail"):
        versions.append("getmail6 " + tool_version(["getmail", "--version"], r"getmail (\S+)"))
    if shutil.which("mbsync"):
        versions.append("mbsync " + tool_version(["mbsync", "--version"], r"isync (\S+)"))
    if shutil.which("fetchmail"):
        versions.append("fetchmail " + tool_version(["fetchmail", "--version"], r"release (\d[\d.]*)"))
    print("anchors: " + (", ".join(versions) or "none installed"))
    print()
    print(f"Fetch, {args.runs} alternating runs (best and median wall time; 'again': the run right after, nothing new)")
    rows = []
    for cmd in cmds:
        fresh, again = cmd.walls["fresh"], cmd.walls["again"]
        rss = max(cmd.rss, default=None)
        rows.append(
            [
                cmd.label,
                fmt(min(fresh, default=None)),
                fmt(statistics.median(fresh) if fresh else None),
                fmt(n / min(fresh) if fresh else None, ".0f"),
                fmt(statistics.median(again) if again else None),
                fmt(rss, ".1f") if rss is None or rss > floor + 0.05 else f"<= {floor:.1f}",
                f"{len(fresh)}/{args.runs}",
            ]
        )
    print_table(rows, ["command", "best s", "median s", "msg/s", "again s", "peak RSS MB", "ok runs"])

    misses = 0
    by = {c.label: c for c in cmds}
    anchors = [a for a in ("getmail6", "mbsync", "fetchmail") if a in by and by[a].walls["fresh"]]
    pypops = [c for c in cmds if c.label.startswith("pypop-")]
    if pypops and anchors:
        print()
        print("Speed-up: anchor's median time / pypop's median time (target > 1: faster than each)")
        rows = []
        for p in pypops:
            row = [p.label]
            for a in anchors:
                mine, theirs = p.walls["fresh"], by[a].walls["fresh"]
                if mine and theirs:
                    r = statistics.median(theirs) / statistics.median(mine)
                    misses += r <= 1
                    row.append(f"{r:.1f} {verdict(r > 1)}")
                else:
                    misses += 1
                    row.append("n/a MISS")
            rows.append(row)
        print_table(rows, ["", *anchors])

    if uv_rows:
        print()
        print("After a UIDVALIDITY change (doveadm mailbox update --uid-validity; UIDs and flags unchanged):")
        print_table(uv_rows, ["command", "wall s", "stored twice", "said"])

    print()
    print("what each stores and promises:")
    print("  pypop: mbox (From_ quoting, locked), fsync per batch before the UIDs are recorded")
    print("  getmail6: mboxrd, a forked child per message (as pmtest), flush + fsync per message")
    print("  mbsync: Maildir (it has no mbox store), fsync per message")
    print("  fetchmail: procmail's mbox (as pmtest; no fsync), tracks nothing but \\Seen over IMAP")
    print("  imaplib-loop: the floor; no locking, no quoting, no fsync, literals whole in memory")
    print(f"(peak RSS: max over the timed runs; floor {floor:.1f} MB, the wrapper that starts each command)")
    print("commands:")
    for cmd in cmds:
        shown = " ".join(a if " " not in a and "\n" not in a else repr(a) for a in cmd.argv)
        if cmd.label.startswith("imaplib-loop"):
            shown = f"{cmd.argv[0]} -c IMAPLIB_LOOP {' '.join(cmd.argv[3:])}"
        print(f"  {cmd.label}: {shown.replace(str(REPO_DIR) + '/', '')}")

    print()
    for note in notes:
        print(f"NOT MEASURED: {note}")
    for tool in missing:
        print(f"NOT MEASURED: {tool} is missing ({APT_COMMAND})")
    problems = []
    for cmd in cmds:
        for f in dict.fromkeys(cmd.failures):
            k = cmd.failures.count(f)
            problems.append(f"{cmd.label}: {f}" + (f" (x{k})" if k > 1 else ""))
    for p in problems:
        print(f"ERROR {p}")
    if not problems:
        print(f"checks: after every run the output held the {n} messages once each (by Message-ID)")
    if not pypops:
        misses += 1
    print(f"targets missed: {misses}" if misses else "all measured targets met")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
