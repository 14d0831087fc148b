"""Private spool files in $TMPDIR: what must outlive a failure without being held in memory.

Standard input is spooled (a message that fails must reach the dead letter whole,
and choosing 7bit or quoted-printable takes a full pass); pymail --max-size writes
its archive parts into a spool directory.  A spool file has no name (O_TMPFILE, or
unlinked at once): it is gone on any exit, a kill included.  A spool directory is
mode 0700 and removed when its block ends, on an error, Ctrl-C or SIGTERM (the
commands turn SIGTERM into an unwinding exit).  An unwritable $TMPDIR or a full
disk is an IOFailure (74), and nothing is left behind.
"""

import os

from pipemail.errors import IOFailure, describe_oserror, shown

BLOCK = 1 << 20


def tmpdir(env=None):
    """Where spools go: $TMPDIR, else /tmp (never another directory in its place, silently)."""
    env = os.environ if env is None else env
    return env.get("TMPDIR") or "/tmp"


def spool_file(env=None, prefix="pymail-", buffering=-1):
    """A private spool file (mode 0600, no name), open for reading and writing; IOFailure when it cannot be made."""
    import tempfile

    where = tmpdir(env)
    try:
        return tempfile.TemporaryFile(prefix=prefix, dir=where, buffering=buffering)
    except OSError as exc:
        raise IOFailure("cannot make a spool file in %s: %s" % (shown(where), describe_oserror(exc))) from None


def spool_dir(env=None):
    """A private spool directory (mode 0700) as a context manager giving its path, removed when the
    block ends; IOFailure when it cannot be made."""
    import tempfile

    where = tmpdir(env)
    try:
        return tempfile.TemporaryDirectory(prefix="pymail-", dir=where)
    except OSError as exc:
        raise IOFailure("cannot make a spool directory in %s: %s" % (shown(where), describe_oserror(exc))) from None


def spool(chunks, env=None, what="standard input"):
    """Write ``chunks`` (bytes) to a new spool file; the file, at its start.  IOFailure (74) when
    the spool cannot be written (a full disk): the file is gone with it."""
    f = spool_file(env)
    try:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
    except OSError as exc:
        f.close()
        raise IOFailure("cannot spool %s in %s: %s" % (what, shown(tmpdir(env)), describe_oserror(exc))) from None
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def read_chunks(stream, size=BLOCK):
    """The bytes of the binary ``stream`` in chunks of up to ``size`` bytes."""
    while True:
        data = stream.read(size)
        if not data:
            return
        yield data
