"""Running a pipemail command as an ordinary user (pmtest), for the rules that differ for root.

The test interpreter lives where only root may read (pyenv under /root), so
pmtest cannot start it.  Instead the command starts as root, imports what it
will need (the commands import modules lazily, inside functions), then gives
up root with setgid/setuid and runs its console-script entry point, as
installed.  When the tests themselves do not run as root, it just runs as the
current user.  tests/run creates the user pmtest.
"""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager

USER = "pmtest"

# What the commands import inside functions: imported before root is given up.
_LAZY = [
    "_strptime",
    "fcntl",
    "json",
    "pwd",
    "tomllib",
    "pipemail.aliases",
    "pipemail.cli.sendmail",
    "pipemail.config",
    "pipemail.message",
    "pipemail.queue",
    "pipemail.sendmail",
    "pipemail.spool",
    "pipemail.transport",
    "binascii",
    "calendar",
    "datetime",
    "difflib",
    "email.parser",
    "email.policy",
    "hashlib",
    "mailbox",
    "pipemail.cli.unshar",
    "pipemail.cli.uudecode",
    "pipemail.lines",
    "pipemail.mailbox_io",
    "pipemail.progress",
    "pipemail.safefile",
    "pipemail.shar",
    "pipemail.unshar",
    "pipemail.unshar_api",
    "pipemail.unshar_gnu",
    "pipemail.uu",
    "stat",
    "struct",
    "tempfile",
    "time",
    "encodings.idna",
    "pipemail.network",
    "smtplib",
    "email.utils",
    "email.headerregistry",
    "pipemail.headers",
]

_BOOT = """
import importlib, os, sys
for name in sys.argv[5].split(","):
    importlib.import_module(name)
uid, gid, umask = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3], 8)
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
os.umask(umask)
module = importlib.import_module("pipemail.cli." + sys.argv[4])
sys.argv = ["py" + sys.argv[4]] + sys.argv[6:]
module.main()
"""


def is_root():
    return os.geteuid() == 0


def _user():
    import pytest

    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pytest.fail("there is no user %s: run the README's test command (bash tests/run), which creates it" % USER)


@contextmanager
def user_dir():
    """A fresh directory the unprivileged user owns (under /tmp: pytest's tmp_path is root's, 0700)."""
    path = tempfile.mkdtemp(prefix="pipemail-pmtest-", dir="/tmp")
    try:
        give(path)
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path)


def give(path):
    """Make ``path`` and everything below it the unprivileged user's."""
    if not is_root():
        return
    pw = _user()
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)


def run(command, *args, input=b"", cwd, umask):
    """Run ``command`` ("uudecode", "unshar": pipemail.cli's module) as pmtest.

    Returns ``(exit code, stdout bytes, stderr text)``.
    """
    uid = gid = -1
    if is_root():
        pw = _user()
        uid, gid = pw.pw_uid, pw.pw_gid
    env = dict(os.environ)
    env.pop("PIPEMAIL_DEBUG", None)
    argv = [sys.executable, "-I", "-c", _BOOT, str(uid), str(gid), "%o" % umask, command, ",".join(_LAZY)]
    proc = subprocess.run(
        argv + [os.fsdecode(a) for a in args], input=input, capture_output=True, cwd=cwd, env=env, timeout=120
    )
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "ModuleNotFoundError" not in stderr and "PermissionError" not in stderr, (
        "a module the command imports lazily is missing from tests/unprivileged.py's _LAZY: " + stderr
    )
    return proc.returncode, proc.stdout, stderr
