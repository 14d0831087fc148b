"""Running a pipemail command as an ordinary user (pmtest), for the rules that differ for root.

The test interpreter lives where only root may read (pyenv under /root), so
pmtest cannot start it: the command runs in a forked child that gives up root
with setuid, through click's CliRunner, after importing everything the
commands import lazily.  When the tests themselves do not run as root, the
child just runs as the current user.  tests/run creates the user pmtest.
"""

import contextlib
import os
import pickle
import pwd
import shutil
import tempfile
import traceback

USER = "pmtest"

# What the commands import inside functions: imported before root is given up.
_LAZY = [
    "binascii",
    "calendar",
    "click.testing",
    "datetime",
    "difflib",
    "email",
    "email.parser",
    "email.policy",
    "hashlib",
    "mailbox",
    "pipemail.mailbox_io",
    "pipemail.progress",
    "pipemail.safefile",
    "pipemail.shar",
    "pipemail.unshar",
    "pipemail.unshar_api",
    "pipemail.unshar_gnu",
    "pipemail.uu",
    "pipemail.cli.unshar",
    "pipemail.cli.uudecode",
    "stat",
    "struct",
    "tempfile",
    "time",
    "_strptime",
]


def _runner():
    from click.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        return CliRunner()


def is_root():
    return os.geteuid() == 0


@contextlib.contextmanager
def user_dir():
    """A fresh directory the unprivileged user owns (under /tmp: pytest's tmp_path is root's, 0700)."""
    path = tempfile.mkdtemp(prefix="pipemail-pmtest-", dir="/tmp")
    try:
        if is_root():
            pw = pwd.getpwnam(USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path)


def give(path):
    """Make ``path`` and everything below it the unprivileged user's."""
    if not is_root():
        return
    pw = pwd.getpwnam(USER)
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)


def invoke(command, args, *, input=b"", cwd, umask, user=True):
    """Run click ``command`` with ``args`` in a child, as pmtest when ``user`` (and we are root).

    Returns ``(exit_code, stdout_bytes, stderr_text)``.
    """
    import importlib

    for name in _LAZY:
        importlib.import_module(name)
    runner = _runner()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            if user and is_root():
                pw = pwd.getpwnam(USER)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            os.umask(umask)
            os.chdir(cwd)
            result = runner.invoke(command, [os.fsdecode(a) for a in args], input=input)
            payload = (result.exit_code, result.stdout_bytes, result.stderr_bytes.decode("utf-8", "replace"))
        except BaseException:
            payload = ("child failed", traceback.format_exc(), "")
        with os.fdopen(wfd, "wb") as f:
            f.write(pickle.dumps(payload))
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    payload = pickle.loads(data)
    assert payload[0] != "child failed", payload[1]
    return payload
