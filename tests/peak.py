"""Peak memory of one command: its own ``ru_maxrss``, read through a small reaping wrapper.

A process's ``ru_maxrss`` is the maximum over its whole life, including the moment
before exec when it was a copy of its parent: a command started straight from pytest
(a few hundred MB) would report pytest's pages.  So a bare ``python -I -S`` wrapper
(about 8 MB) starts the command with posix_spawn and reaps it with ``os.wait4``, which
gives the rusage of that one child.  Memory is not noisy like time: tests assert it.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import command_path

LIMIT_MB = 64  # DESIGN.md: peak memory under 64 MB at any size
# A memory test's data: BIG_MB is well over LIMIT_MB, so a command that held it whole (or most
# of it: a bare interpreter is already ~20 MB) cannot pass; the same command with SMALL_MB shows
# that the big one costs no more (within a slack per MB of difference).  80 MB proves what the
# 100 MB these tests used proved, in four fifths of the time.
BIG_MB = 80
SMALL_MB = 10


def slack_mb(per_90_mb):
    """The slack allowed between BIG_MB and SMALL_MB, given as what it was for 90 MB of difference
    (100 MB against 10 MB): the growth allowed per MB stays the same, never larger."""
    return per_90_mb * (BIG_MB - SMALL_MB) / 90


_WRAPPER = """\
import os, sys
fd = int(sys.argv[1])
argv = sys.argv[2:]
pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_CLOSE, fd)])
_, status, usage = os.wait4(pid, 0)
os.write(fd, b"%d %d" % (usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


class Peak:
    def __init__(self, returncode, mb, stderr):
        self.returncode = returncode
        self.mb = mb  # the command's own peak RSS, in MiB
        self.stderr = stderr

    def __repr__(self):
        return "Peak(returncode=%d, mb=%.1f, stderr=%r)" % (self.returncode, self.mb, self.stderr[-500:])


def peak(name, *args, stdin=None, stdout=None, env=None, cwd=None, timeout=600):
    """Run the pipemail command ``name`` (or an argv list) with ``args``; its :class:`Peak`.

    ``stdin`` and ``stdout`` are paths (default: /dev/null), so that no pipe is held in
    this process's memory whatever the size."""
    argv = (list(name) if isinstance(name, list | tuple) else command_path(name)) + [
        os.fsdecode(a) if isinstance(a, Path) else str(a) for a in args
    ]
    full_env = dict(os.environ)
    full_env.pop("PIPEMAIL_DEBUG", None)
    full_env.update(env or {})
    rfd, wfd = os.pipe()
    try:
        with (
            open(stdin if stdin is not None else os.devnull, "rb") as fin,
            open(stdout if stdout is not None else os.devnull, "wb") as fout,
            tempfile.TemporaryFile() as ferr,
        ):
            subprocess.run(
                [sys.executable, "-I", "-S", "-c", _WRAPPER, str(wfd), *argv],
                stdin=fin,
                stdout=fout,
                stderr=ferr,
                pass_fds=(wfd,),
                env=full_env,
                cwd=cwd,
                timeout=timeout,
            )
            os.close(wfd)
            wfd = -1
            report = b""
            while chunk := os.read(rfd, 4096):
                report += chunk
            ferr.seek(0)
            err = ferr.read().decode("utf-8", "replace")
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    maxrss_kb, code = report.split()
    return Peak(int(code), int(maxrss_kb) / 1024.0, err)  # ru_maxrss is in KiB on Linux
