"""What every pipemail command shares: exit codes, one-line errors, quiet pipes.

A command is a :class:`Command`; its console script calls :func:`run`.
"""

import os
import signal
import sys

import click

from pipemail.errors import (
    EX_IOERR,
    EX_SOFTWARE,
    EX_USAGE,
    IOFailure,
    PipemailError,
    UsageError,
    describe_oserror,
)

STDIO_NAMES = ("-", "/dev/stdout")


def check_timeout(seconds):
    """``--timeout``'s value, refused (UsageError) unless a finite number of seconds over 0:
    sockets take neither 0 (non-blocking) nor a negative, NaN or infinite time."""
    import math

    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError("--timeout %g: give a number of seconds over 0" % seconds)
    return seconds


def warn(prog, message):
    """One diagnostic line on stderr (taking a progress bar off its line first)."""
    progress = sys.modules.get("pipemail.progress")
    if progress is not None:
        progress.clear_line()
    click.echo("%s: %s" % (prog, message), err=True)


class _Main:
    """Reports errors as one line and exits with sysexits codes.

    Usage errors exit 64, a :class:`PipemailError` its own code, an OSError 74,
    anything else 70 (with a traceback only when ``PIPEMAIL_DEBUG`` is set).
    The callback returns the exit code.
    """

    def main(self, args=None, prog_name=None, **extra):
        return _main(self, super(), args, prog_name, extra)

    def invoke(self, ctx):
        # A broken pipe (seen when SIGPIPE is ignored) is an error of ours, not click's silent exit 1.
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            if _stdout_gone():
                raise IOFailure("cannot write to standard output: its reader is gone (Broken pipe)") from None
            raise IOFailure(describe_oserror(exc)) from None


class Command(_Main, click.Command):
    """A click command with pipemail's one-line errors and exit codes."""


class Group(_Main, click.Group):
    """A click group (pypop's commands) with the same one-line errors and exit codes."""


def _main(cmd, base, args, prog_name, extra):
    prog = prog_name or cmd.name
    extra["standalone_mode"] = False
    try:
        code = base.main(args, prog_name=prog, **extra)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except (click.UsageError, UsageError) as exc:
        ours = isinstance(exc, UsageError)
        text = str(exc) if ours else exc.format_message()
        if not (ours and exc.reported):
            warn(prog, "%s (see '%s --help')" % (text.rstrip("."), prog))
        code = EX_USAGE
    except (click.Abort, KeyboardInterrupt):
        code = 130
    except PipemailError as exc:
        if not exc.reported:
            warn(prog, str(exc))
        code = exc.exit_code
    except OSError as exc:
        if os.environ.get("PIPEMAIL_DEBUG"):
            raise
        name = exc.filename
        where = "%s: " % os.fsdecode(name) if name else ""
        warn(prog, where + describe_oserror(exc))
        code = EX_IOERR
    except Exception as exc:
        if os.environ.get("PIPEMAIL_DEBUG"):
            raise
        warn(
            prog,
            "internal error: %s: %s (rerun with PIPEMAIL_DEBUG=1 for a traceback, "
            "and please report it)" % (type(exc).__name__, exc),
        )
        code = EX_SOFTWARE
    if _stdout_gone():  # what is still buffered goes nowhere, instead of a traceback at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    sys.exit(code if isinstance(code, int) else 0)


def _stdout_gone():
    """Whether standard output is a pipe whose reader has closed it (only seen when SIGPIPE is ignored)."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


def _terminate(signum, frame):
    # Unwind (removing temporary files) instead of dying on the spot.
    sys.exit(128 + signum)


def run(command, prog, quiet_pipe=True):
    """Console-script entry: tidy on SIGTERM, and on a closed pipe quiet (``quiet_pipe``: killed by
    SIGPIPE, as ``... | head`` expects) or not (SIGPIPE ignored: a closed standard output is an error,
    said in one line, exit status 74; for a command that must not count as delivered what a reader
    never got, nor die while feeding a command)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL if quiet_pipe else signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    command.main(prog_name=prog)


def stdin_stream():
    if sys.stdin is None:
        raise IOFailure("standard input is closed")
    return sys.stdin.buffer


def progress_bar(prog, label, total=None, unit="bytes"):
    """A progress bar on stderr when it is a terminal, else None (see pipemail.progress)."""
    from pipemail import progress

    return progress.bar(prog, label, total, unit)


def stdout_stream():
    if sys.stdout is None:
        raise IOFailure("standard output is closed")
    return sys.stdout.buffer
