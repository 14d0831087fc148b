"""pysendmail: the machine's /usr/sbin/sendmail, through a pipemail account, with a queue.

The command line is parsed by hand: sendmail's options are single letters glued to
their values (``-FCronDaemon``, ``-oem``, ``-B8BITMIME``), which no option library
takes as sendmail's callers give them.  Whatever is not accepted is refused with one
line and exit 64, never taken as a message.
"""

import os
import sys

from pipemail import __version__
from pipemail.cli import error_code, leave, warn
from pipemail.errors import EX_USAGE

PROG = "pysendmail"

HELP = """\
Usage: pysendmail [OPTIONS] [--] RECIPIENT...
       pysendmail -t [OPTIONS]          (recipients from To, Cc and Bcc)
       pysendmail -q | --run-queue | -bp | -bi

  Send the message on standard input through the pipemail account, as
  /usr/sbin/sendmail: cron, mail(1), git send-email and daemons call it.
  A message that cannot go now is queued and sent by the queue run.

Options:
  -t                Take the recipients from the message's To, Cc and Bcc (Bcc is removed).
  -i, -oi           A line holding a lone "." is part of the message, not its end.
  -f ADDR, -r ADDR  The envelope sender (a bare local name becomes the account's address).
  -F NAME           The sender's full name, for a From the message lacks or has local.
  -v                Say each rewrite, and the SMTP dialogue (AUTH redacted).
  -oX, -B TYPE, -N DSN, -R HDRS, -V ENVID, -L TAG, -O OPT=VALUE, -n, -U, -G
                    Accepted and ignored, as callers pass them (-oem, -odi, -B8BITMIME).
  -bm               Read a message and send it (the default).
  -bp               List the queue (as mailq).
  -bi               Nothing to rebuild; as root, make the system queue's directories.
  -q                Take the maildrop (root) and send everything queued, now.
  --run-queue       As -q, but only what is due by its backoff (for cron or a timer).
  --account NAME    Use account NAME of the configuration.
  --proxy URL       Reach the server through a proxy (socks5://, socks5h://, http://);
                    '' for none, whatever the account says.
  --version         Show the version and exit.
  -h, --help        Show this message and exit.

Examples:
  echo "Subject: test" | pysendmail -v root
  pysendmail -t < message.eml
  pysendmail -q
  mailq
  ln -s "$(command -v pysendmail)" /usr/sbin/sendmail

Refused: -bs, -bd, -bt, -bv, -q with an interval or a flag, and any other
option (exit 64).  Exit status 0 also when the message was queued (said on
standard error) or dropped for root's queue run (silently).  See pysendmail(8)."""

_REFUSED = {
    "s": "pysendmail does not speak SMTP on standard input: give the message with -t or RECIPIENT operands",
    "d": "pysendmail is no daemon: run pysendmail --run-queue from cron or a systemd timer",
    "D": "pysendmail is no daemon: run pysendmail --run-queue from cron or a systemd timer",
    "t": "there are no address rewriting rules to test",
    "v": "recipients are not verified apart from sending: pymail --check does that",
    "a": "ARPANET mode is not supported",
    "h": "there is no host status",
    "H": "there is no host status",
    "P": "there are no queue counts: pysendmail -bp lists the queue",
}


class Args:
    def __init__(self):
        self.mode = "m"  # m (send), p (list), i (aliases), q (run the queue)
        self.due_only = False
        self.request = None
        self.recipients = []
        self.read_recipients = False
        self.ignore_dots = False
        self.sender = None
        self.sender_flag = "-f"
        self.full_name = None
        self.verbose = False
        self.account = None
        self.proxy = None
        self.help = False
        self.version = False


class Refused(Exception):
    """An option pysendmail does not take: the line to say (exit 64)."""


def parse_args(argv, name=PROG):
    """The :class:`Args` of ``argv`` (without the program name); Refused for what is not taken.
    ``name``: the name it was called by (mailq is -bp, newaliases -bi)."""
    a = Args()
    if name == "mailq":
        a.mode = "p"
    elif name == "newaliases":
        a.mode = "i"
    args = list(argv)
    i = 0

    def value(opt, rest):
        nonlocal i
        if rest:
            return rest
        i += 1
        if i >= len(args):
            raise Refused("%s needs a value" % opt)
        return args[i]

    while i < len(args):
        arg = args[i]
        if arg == "--":
            a.recipients += args[i + 1 :]
            break
        if arg.startswith("--"):
            opt, eq, val = arg.partition("=")
            if opt in ("--help",):
                a.help = True
            elif opt == "--version":
                a.version = True
            elif opt == "--run-queue":
                a.mode, a.due_only = "q", True
            elif opt in ("--account", "--proxy"):
                v = val if eq else value(opt, "")
                setattr(a, opt[2:], v)
            else:
                raise Refused("%s is not supported (see '%s --help')" % (opt, PROG))
            if eq and opt not in ("--account", "--proxy"):
                raise Refused("%s takes no value" % opt)
            i += 1
            continue
        if not arg.startswith("-") or arg == "-":
            a.recipients.append(arg)
            i += 1
            continue
        j = 1
        while j < len(arg):
            c, rest = arg[j], arg[j + 1 :]
            if c == "t":
                a.read_recipients = True
            elif c == "i":
                a.ignore_dots = True
            elif c == "v":
                a.verbose = True
            elif c == "h":
                a.help = True
            elif c in "fr":
                a.sender = value("-" + c, rest)
                a.sender_flag = "-" + c
                break
            elif c == "F":
                a.full_name = value("-F", rest)
                break
            elif c in "BNRVLO":  # body type, DSN, DSN return, envelope id, log tag, -O Option=value: ignored
                value("-" + c, rest)
                break
            elif c in "nUG":  # no aliasing, initial submission, gateway: accepted, ignored
                pass
            elif c == "o":
                if not rest:
                    raise Refused("-o needs an option glued to it, as -oi or -oem")
                if rest == "i":
                    a.ignore_dots = True
                break  # any other -oX: accepted and ignored
            elif c == "b":
                if rest in ("m", "p", "i"):
                    a.mode = rest
                elif rest in _REFUSED:
                    raise Refused("-b%s is not supported (%s)" % (rest, _REFUSED[rest]))
                else:
                    raise Refused("-b%s is not supported (pysendmail takes -bm, -bp and -bi)" % rest)
                break
            elif c == "q":
                if rest[:1].isdigit():
                    raise Refused(
                        "-q%s is not supported (pysendmail -q sends the queue once; "
                        "its periodic runs are pysendmail --run-queue from cron or a timer)" % rest
                    )
                if rest:
                    raise Refused(
                        "-q%s is not supported (pysendmail -q takes no flag or queue selection: "
                        "it sends everything queued, now, in the foreground)" % rest
                    )
                a.mode = "q"
            else:
                raise Refused("-%s is not supported (see '%s --help')" % (c, PROG))
            j += 1
        i += 1
    if name == "mailq":
        _mailq_only(a, argv)
    return a


def _mailq_only(a, argv):
    """Called as mailq: the queue's listing and nothing else (-v and --help, --version taken)."""
    for arg in argv:
        if arg in ("-v", "--help", "-h", "--version", "-bp"):
            continue
        if arg.startswith("-"):
            raise Refused("%s is not supported (mailq lists the queue; it takes only -v)" % arg)
        raise Refused("mailq takes no RECIPIENT operands")


def main(argv=None):
    import signal

    signal.signal(signal.SIGTERM, _terminate)  # unwind: spool and temporary files go
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    name = os.path.basename(sys.argv[0]) if argv is None else PROG
    argv = sys.argv[1:] if argv is None else argv
    prog = name if name in ("mailq", "newaliases") else PROG
    try:
        code = command(argv, name)
    except Refused as exc:
        warn(prog, str(exc))
        code = EX_USAGE
    except (Exception, KeyboardInterrupt) as exc:
        code = error_code(prog, exc)
    leave(code)


def _terminate(signum, frame):
    sys.exit(128 + signum)


def command(argv, name=PROG):
    """Run pysendmail with ``argv``; the exit code."""
    a = parse_args(argv, name)
    if a.help:
        sys.stdout.write(HELP + "\n")
        return 0
    if a.version:
        sys.stdout.write("%s %s\n" % (PROG, __version__))
        return 0
    from pipemail import sendmail

    if a.mode != "m" and a.recipients:
        raise Refused(
            "%s takes no RECIPIENT operands" % {"p": "-bp", "i": "-bi", "q": "-q"}[a.mode]
            if not a.due_only
            else "--run-queue takes no RECIPIENT operands"
        )
    if a.proxy is not None:
        _check_proxy(a.proxy)
    req = sendmail.Request(
        recipients=a.recipients,
        read_recipients=a.read_recipients,
        sender=a.sender,
        full_name=a.full_name,
        ignore_dots=a.ignore_dots,
        sender_flag=a.sender_flag,
        account=a.account,
        proxy=a.proxy,
    )
    say = (lambda line: warn(PROG, line)) if a.verbose else None
    log = (lambda line: sys.stderr.write(line + "\n")) if a.verbose else None
    ctx = sendmail.Context(warn=lambda line: warn(PROG, line), verbose=say, log=log)
    if a.mode == "p":
        for line in sendmail.listing(req, ctx):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return 0
    if a.mode == "i":
        made = sendmail.make_dirs(ctx)
        if made is not None and a.verbose:
            warn(PROG, "the system queue is %s (its maildrop %s/maildrop)" % (made, made))
        return 0
    if a.mode == "q":
        say, ctx.warn = _channels(a.due_only)
        return sendmail.run_queue(req, ctx, due_only=a.due_only, say=say)
    if sys.stdin is None:
        from pipemail.errors import IOFailure

        raise IOFailure("standard input is closed")
    return sendmail.submit(sys.stdin.buffer, req, ctx)


def _check_proxy(url):
    """--proxy's URL checked (a UsageError, 64, when it is not one); "" goes direct."""
    if url:
        from pipemail.config import split_proxy

        split_proxy(url)


def _channels(due_only):
    """``(say, warn)`` of a queue run: what leaves the queue, and warnings.  For --run-queue with
    standard error no terminal (cron, a timer) both go to syslog (LOG_MAIL), nothing to standard
    error, so that a junk file in the maildrop does not mail cron's owner on every run; when
    syslog cannot be reached (no /dev/log, as in most containers) what leaves the queue is said
    on standard error, and warnings nowhere.  Otherwise both on standard error."""
    on_stderr = lambda line: warn(PROG, line)  # noqa: E731
    if not due_only or _isatty(2):
        return on_stderr, on_stderr
    if not _syslog_reachable():
        return on_stderr, lambda line: None
    import syslog

    syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_MAIL)
    return (lambda line: syslog.syslog(syslog.LOG_INFO, line)), (lambda line: syslog.syslog(syslog.LOG_WARNING, line))


def _syslog_reachable(path="/dev/log"):
    """Whether the syslog socket takes a connection (the syslog module drops lines silently when
    it cannot)."""
    import socket

    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(path)
            return True
        except OSError:
            continue
        finally:
            s.close()
    return False


def _isatty(fd):
    try:
        return os.isatty(fd)
    except OSError:
        return False
