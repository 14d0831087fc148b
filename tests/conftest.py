import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A shell without job control starts a background job (`bash tests/run &`, nohup) with SIGINT
# ignored, and an ignored signal stays ignored across exec: every command a test starts would
# then ignore the Ctrl-C the tests send it and run into their timeouts. Python's own handler
# here is reset to the default in those children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# No test reads the machine's /etc/pipemail/config.toml: a test that wants a
# system-wide file names its own.
os.environ["PIPEMAIL_SYSTEM_CONFIG"] = "/nonexistent/pipemail-tests/config.toml"


def pytest_sessionstart(session):
    """Byte-compile pipemail/ once for this interpreter. Where PYTHONDONTWRITEBYTECODE is set (many
    CI images set it) no command writes its .pyc files, and every one of the thousands of commands
    the tests start compiled the modules it imports again: about 70 ms a start of the ~100 ms one
    costs. compileall writes them whatever that variable says; a .pyc is checked against its source's
    mtime and size at each import, so an edited module is compiled afresh as ever."""
    import compileall

    compileall.compile_dir(ROOT / "pipemail", quiet=2)


def command_path(name):
    """The installed console script beside this interpreter, else the bin/ launcher."""
    installed = Path(sys.executable).parent / name
    return [str(installed)] if installed.exists() else [sys.executable, str(ROOT / "bin" / name)]


def tool(name):
    """The path of a real tool the tests run against; tests/run installs them all."""
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is not installed: run the README's test command (bash tests/run)" % name)
    return path


class Result:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr.decode("utf-8", "replace")


@pytest.fixture
def run():
    """run(command, *args, input=b"", cwd=None, env=None) -> Result."""

    def _run(name, *args, input=b"", cwd=None, env=None, umask=None):
        full_env = dict(os.environ)
        full_env.pop("PIPEMAIL_DEBUG", None)
        if env:
            full_env.update(env)
        cmd = command_path(name) + [os.fsdecode(a) if isinstance(a, Path) else a for a in args]
        # subprocess's own umask, not a preexec_fn: a preexec_fn makes it fork() the whole pytest
        # process (about 10 ms each at 100 MB) where it can vfork() otherwise.
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            cwd=cwd,
            env=full_env,
            umask=-1 if umask is None else umask,
            timeout=120,
        )
        return Result(proc)

    return _run


# Fixtures offered to every test module: a real SMTP server (aiosmtpd) and a real MTA (Exim).
from cryptokeys import gnupg, gpgsm_home, pki  # noqa: E402, F401
from smtp_server import smtp_server  # noqa: E402, F401
