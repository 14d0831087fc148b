"""Fault injection without hooks in the code: a command run under strace, which delivers a
signal when the command enters the Nth call of a system call (``-e inject=...:signal=...:when=N``).

With ``path``, strace's ``-P`` counts (and kills at) only the calls on that file: the Nth
write to the mbox, the rename onto the UIDL file.  The signal arrives as the call is
entered, so the call itself does not happen: "killed at write N" leaves writes 1..N-1 done.
"""

import os
import random
import signal
import subprocess

from conftest import command_path, tool

SEED = int(os.environ.get("PIPEMAIL_FAULT_SEED", "20261203"))

# the calls of each kind, as the C library makes them
CALLS = {
    "write": "write,pwrite64,writev",
    "rename": "rename,renameat,renameat2",
    "fsync": "fsync,fdatasync",
    "read": "read,recvfrom",
}


def rng(name):
    """A random generator seeded per test: the same kill points on every run (PIPEMAIL_FAULT_SEED changes them)."""
    return random.Random("%d:%s" % (SEED, name))


class Killed:
    def __init__(self, proc, sig):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr.decode("utf-8", "replace")
        self.killed = proc.returncode in (-sig, 128 + sig)  # strace dies of the tracee's signal, or exits with it


def run_killed(name, args, *, call, when, sig=signal.SIGKILL, path=None, env=None, input=b"", timeout=60):
    """Run the command ``name`` with ``args`` under strace, sending ``sig`` at the ``when``-th ``call``
    (a key of CALLS, or strace's own syscall names), on ``path`` only when given.  A Killed."""
    syscalls = CALLS.get(call, call)
    argv = [tool("strace"), "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + syscalls]
    argv += ["-e", "inject=%s:signal=%s:when=%d" % (syscalls, signal.Signals(sig).name[3:], when)]
    if path is not None:
        argv += ["-P", os.fspath(path)]
    full_env = dict(os.environ)
    full_env.pop("PIPEMAIL_DEBUG", None)
    full_env.update(env or {})
    proc = subprocess.run(
        argv + command_path(name) + [os.fspath(a) for a in args],
        input=input,
        capture_output=True,
        env=full_env,
        timeout=timeout,
    )
    return Killed(proc, sig)


def count_calls(name, args, *, call, env=None, input=b"", path=None):
    """How many ``call``s the command makes (on ``path`` only, when given) when nothing is injected
    (to aim a kill at one that happens)."""
    return len(trace_calls(name, args, call=call, env=env, input=input, path=path))


def trace_calls(name, args, *, call, env=None, input=b"", path=None):
    """strace's lines for the ``call``s the command makes (on ``path`` only, when given) when nothing
    is injected, in order."""
    import tempfile

    syscalls = CALLS.get(call, call)
    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.NamedTemporaryFile() as log:
        subprocess.run(
            [tool("strace"), "-f", "-qq", "-o", log.name, "-e", "trace=" + syscalls]
            + (["-P", os.fspath(path)] if path is not None else [])
            + command_path(name)
            + [os.fspath(a) for a in args],
            input=input,
            capture_output=True,
            env=full_env,
            timeout=60,
            check=True,
        )
        lines = open(log.name, "rb").read().decode("utf-8", "replace").splitlines()
    return [line for line in lines if "(" in line and not line.split(None, 1)[-1].startswith(("---", "+++"))]


def fcntl_append(path, data):
    """Another writer: a plain appender that takes the fcntl lock, as procmail or a mail reader would."""
    import fcntl

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        os.close(fd)


def dead_pid():
    """The PID of a process that has just exited (a stale lock's owner)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid
