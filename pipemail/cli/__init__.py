"""What every pipemail command shares: exit codes, one-line errors, quiet pipes.

A command is a :class:`Command`; its console script calls :func:`run`.
"""

import os
import signal
import sys

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
    click = sys.modules.get("click")
    if click is None:  # a command without click (pysendmail, for its start-up time)
        sys.stderr.write("%s: %s\n" % (prog, message))
        sys.stderr.flush()
        return
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


def __getattr__(name):
    """``Command`` (a click command with pipemail's one-line errors and exit codes) and ``Group``
    (a click group, pypop's commands, the same): made when first asked for, so that a command
    without click (pysendmail) does not pay for importing it."""
    if name not in ("Command", "Group"):
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import click

    globals()["Command"] = type("Command", (_Main, click.Command), {"__doc__": __getattr__.__doc__})
    globals()["Group"] = type("Group", (_Main, click.Group), {"__doc__": __getattr__.__doc__})
    return globals()[name]


def error_code(prog, exc):
    """Say ``exc`` (raised by a command) in one line and give its exit code: a PipemailError its own
    (a UsageError 64, with a pointer to --help), an OSError 74, a KeyboardInterrupt 130, anything
    else 70 (with a traceback, re-raised, only when ``PIPEMAIL_DEBUG`` is set)."""
    if isinstance(exc, UsageError):
        if not exc.reported:
            warn(prog, "%s (see '%s --help')" % (str(exc).rstrip("."), prog))
        return EX_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, PipemailError):
        if not exc.reported:
            warn(prog, str(exc))
        return exc.exit_code
    if os.environ.get("PIPEMAIL_DEBUG"):
        raise exc
    if isinstance(exc, OSError):
        name = exc.filename
        where = "%s: " % os.fsdecode(name) if name else ""
        warn(prog, where + describe_oserror(exc))
        return EX_IOERR
    warn(
        prog,
        "internal error: %s: %s (rerun with PIPEMAIL_DEBUG=1 for a traceback, "
        "and please report it)" % (type(exc).__name__, exc),
    )
    return EX_SOFTWARE


def leave(code):
    """Exit with ``code``; what is still buffered for a closed standard output goes nowhere,
    instead of a traceback at exit."""
    if _stdout_gone():
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    sys.exit(code if isinstance(code, int) else 0)


def _main(cmd, base, args, prog_name, extra):
    import click

    prog = prog_name or cmd.name
    extra["standalone_mode"] = False
    try:
        code = base.main(args, prog_name=prog, **extra)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        warn(prog, "%s (see '%s --help')" % (exc.format_message().rstrip("."), prog))
        code = EX_USAGE
    except click.Abort:
        code = 130
    except Exception as exc:
        code = error_code(prog, exc)
    except KeyboardInterrupt as exc:
        code = error_code(prog, exc)
    leave(code)


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
