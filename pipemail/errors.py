"""Errors raised by pipemail's core, each carrying its exit code (sysexits.h).

The core raises these; a command prints ``prog: message`` on one line and exits
with ``exit_code``.  Nothing else about an error reaches the user.
"""

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class PipemailError(Exception):
    """Base of every error pipemail reports to the user.

    ``reported``: the command already said it (a warn line before keeping the
    message), so the one-line report at exit is skipped.  ``undelivered``: for a
    delivery that failed, the recipients it did not reach (None: not a delivery,
    or all of them).  ``smtp_code``: for a delivery a server's reply stopped, that
    reply's code (a 4xx: try again; a 5xx: refused for good), else None.  ``untried``: for one
    of several messages over one session, the session broke before this message was tried (a new
    session may send it at once: it is no try of its own).
    """

    exit_code = EX_SOFTWARE
    reported = False
    undelivered = None
    smtp_code = None
    untried = False


class UsageError(PipemailError):
    """Bad options or arguments."""

    exit_code = EX_USAGE


class DataError(PipemailError):
    """Malformed input: bad encoding, truncated archive, header injection."""

    exit_code = EX_DATAERR


class NoInputError(PipemailError):
    """An input file does not exist or cannot be read."""

    exit_code = EX_NOINPUT


class NoUserError(PipemailError):
    """The server rejected a recipient."""

    exit_code = EX_NOUSER


class UnavailableError(PipemailError):
    """The server refused permanently."""

    exit_code = EX_UNAVAILABLE


class CantCreateError(PipemailError):
    """An output file cannot be created, or would be overwritten."""

    exit_code = EX_CANTCREAT


class IOFailure(PipemailError):
    """Reading or writing failed."""

    exit_code = EX_IOERR


class ChangedError(IOFailure):
    """A file changed (size or modification time) while pymail held it open to send it: what went
    out would not be what was given, so nothing is sent or kept as if it were."""


class TempFailError(PipemailError):
    """Try again later: connection refused, timeout, 4xx reply."""

    exit_code = EX_TEMPFAIL


class NoPermError(PipemailError):
    """Authentication failed, or an unsafe path or mode in the input was refused."""

    exit_code = EX_NOPERM


class ConfigError(PipemailError):
    """Configuration missing or wrong."""

    exit_code = EX_CONFIG


class PasswordCommandError(ConfigError):
    """The account's password_command failed, was killed, timed out or printed nothing: pymail
    exits 78 as for any configuration error, pysendmail queues the message (the command may work
    on the next try: a keyring not yet unlocked, a secret store down)."""


def describe_oserror(exc):
    """The strerror of an OSError, without Python's ``[Errno N]`` decoration."""
    return exc.strerror or str(exc)


def shown(name):
    """``name`` (bytes or str) fit for one line of a message: every byte outside
    printable ASCII, and the backslash, escaped (\\n, \\t, \\\\, \\xNN)."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    out = []
    for c in name:
        if c == 0x5C:
            out.append("\\\\")
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x09:
            out.append("\\t")
        else:
            out.append("\\x%02x" % c)
    return "".join(out)
