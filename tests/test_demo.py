"""bin/demo, the README's first quick-start command, run as it is: it must pass on a fresh machine."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, tool

DEMO = ROOT / "bin" / "demo"


def demo(*args, cmd=None, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("PIPEMAIL_")}
    full.update(env or {})
    proc = subprocess.run(
        (cmd or [sys.executable, str(DEMO)]) + list(args),
        capture_output=True,
        text=True,
        env=full,
        cwd="/",
        timeout=300,
    )
    return proc


def check(proc, pop):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for n in range(1, 8):
        assert "[%d/7] " % n in out
    assert pop in out
    assert out.count(" identical") == 2 and "DIFFERENT" not in out
    assert "demo: all of it came back byte for byte" in out
    removed = out.strip().splitlines()[-1]
    assert removed.startswith("demo: removed /tmp/pipemail-demo-")
    assert not os.path.exists(removed.split()[-1])  # cleaned up after itself
    left = subprocess.run(["pgrep", "-f", "pipemail-demo"], capture_output=True, text=True).stdout
    assert left == ""  # no server left running


def test_demo_as_the_readme_runs_it():
    """20 MB through aiosmtpd, Dovecot serving the Maildir as an unprivileged user (CI runs as root)."""
    tool("dovecot")
    proc = demo()
    check(proc, "POP3 server (Dovecot 2.3")
    assert "a 20 MB backup in mails of at most 1 MB" in proc.stdout
    assert "$ pypop fetch --mbox backups.mbox" in proc.stdout and proc.stderr == ""


def test_demo_without_dovecot_reads_the_maildir():
    proc = demo("--no-dovecot", "--size", "3")
    check(proc, "POP3 server: none (--no-dovecot); the mail will be read from the Maildir directly")
    assert "pypop" not in proc.stdout


def test_demo_as_an_ordinary_user_runs_dovecot_rootless():
    """A fresh machine's user is not root: Dovecot then runs wholly as that user."""
    if os.geteuid() != 0:
        pytest.fail("this test runs the demo as the user pmtest and needs root to switch: bash tests/run")
    pwd.getpwnam("pmtest")
    # Debian's python3: the test venv's interpreter may sit where pmtest cannot reach (under /root)
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.fail("Debian's python3 is missing: run the README's test command (bash tests/run)")
    import aiosmtpd
    import attr
    import click
    import magic
    import public

    place = Path(tempfile.mkdtemp(prefix="pipemail-demo-test-"))
    try:
        place.chmod(0o755)
        site = place / "site"
        for mod in (aiosmtpd, attr, click, magic, public):  # pure Python: any python3 imports them
            src = Path(mod.__file__)
            if src.name == "__init__.py":
                shutil.copytree(src.parent, site / src.parent.name)
            else:
                site.mkdir(exist_ok=True)
                shutil.copy(src, site)
        shutil.copytree(ROOT / "pipemail", place / "checkout" / "pipemail")
        shutil.copytree(ROOT / "bin", place / "checkout" / "bin")
        os.chmod(place, 0o755)
        subprocess.run(["chmod", "-R", "a+rX", str(place)], check=True)
        proc = demo(
            "--size",
            "3",
            cmd=["runuser", "-u", "pmtest", "--", python, str(place / "checkout" / "bin" / "demo")],
            env={"PYTHONPATH": "%s:%s" % (site, place / "checkout"), "HOME": "/tmp"},
        )
    finally:
        shutil.rmtree(place, ignore_errors=True)
    check(proc, "serving that Maildir as user pmtest")
