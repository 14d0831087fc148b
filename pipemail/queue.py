"""pysendmail's queue: a message accepted is a message delivered, eventually.

Layout of a queue directory DIR (``queue = DIR`` in the configuration, else
/var/spool/pipemail for root, ~/.local/state/pipemail/queue for a user)::

    DIR/tmp/         files being written (removed by a queue run when older than a day)
    DIR/q/           queued messages: ID.msg (the message as it is to be sent, LF line
                     ends) and ID.env (its envelope, a small JSON object: sender,
                     recipients, owner uid, queued time, tries, next try, last answer)
    DIR/failed/      messages given up on: ID.msg and ID.env, the envelope holding the
                     server's last answer (kept until the administrator removes them)
    DIR/maildrop/    the system queue only, mode 1733 (as Postfix's): where any user
                     drops a message for root's queue run, without privilege

Queue IDs are the time in microseconds (13 hex digits), the process id and a random
part, as 5F1C2A3B4D5E6-4242-9A3F: sorted by name they are sorted by time, and two
processes never make the same one.

Durability.  A message is queued by writing its envelope, then the message, to tmp/,
each flushed and fsynced, then renaming the envelope into q/, then the message, then
fsyncing q/.  A queue run looks only at ID.msg files, so a kill at any point leaves
either nothing the run sees (files in tmp/, or an ID.env alone, removed when older than
a day) or a whole entry.  An envelope is rewritten (tmp/, fsync, rename over) after
each try.  Nothing is removed from q/ before the server answered 250 to the message's
final dot: a run killed in the middle of DATA leaves the message queued, and the next
run sends it (a server that did not see the final dot does not count it).

Concurrency.  Each message is locked while a run works on it (flock, LOCK_EX|LOCK_NB,
on ID.msg): a message another run holds is skipped, never waited for, and after
taking its lock a run checks that the file is still linked (another run may have sent
and removed it in between).  There is no global lock that a hung run could hold
forever; a lock dies with its process.  Messages queued during a run are looked for
again at its end and sent by it, or by the next run.

Tries.  After each failed try the next one is due after 5 minutes, doubling each time
up to 3 hours (5, 10, 20, 40, 80, 160, 180, 180... minutes).  ``--run-queue`` sends
what is due; ``-q`` sends everything now.  Recipients the server refused with 4xx stay
queued; those it accepted are not sent to again.  A message still undelivered after
its lifetime (5 days, ``queue_lifetime``) when a try fails, or refused with a 5xx at
any try, moves to failed/ with the server's last answer and is appended to the dead
letter of the user who queued it (~user/dead.letter, with X-Pipemail-Undelivered-To
naming the recipients not reached, so that ``pymail --resend`` can send it again),
written as that user: a root run forks, and the child takes the user's groups, gid
and uid before it opens the file; root never writes in a user's home.

The maildrop.  A drop is one file: a first line ``PIPEMAIL-DROP 1 {json}`` (the
request, argv-derived settings as a JSON object) and then the message as it was
received.  It is written under a name beginning with a dot, fsynced, and renamed to
its ID; dot-names are files being written and are left alone (removed when older
than a day).  Root's run opens each drop with O_NOFOLLOW|O_NONBLOCK and takes only
regular files with one link; the drop's owner (the file's uid) is who dropped it.
A symlink, a FIFO, a device, a directory, a file with a bad first line is skipped with
a warning.
"""

import errno
import json
import os
import stat
import time

from pipemail.errors import (
    CantCreateError,
    ConfigError,
    DataError,
    IOFailure,
    describe_oserror,
    shown,
)

LIFETIME = 5 * 86400  # seconds a message may wait before it fails (``queue_lifetime``)
FIRST_RETRY = 5 * 60  # seconds before the second try; doubled after each failed try
MAX_RETRY = 3 * 3600  # ... up to this
STALE = 86400  # a temporary file older than this was left by a kill
BATCH = 100  # messages per SMTP session (each holds an open file and its lock)
DROP_MAGIC = b"PIPEMAIL-DROP 1 "
DROP_HEAD_LIMIT = 1 << 16  # the drop's first line is at most this long
SYSTEM_DIR = "/var/spool/pipemail"
ENV_VERSION = 1

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def default_dir(cfg, env=None, uid=None):
    """Where the queue is: ``cfg.queue`` (the configuration's ``queue``), else /var/spool/pipemail
    for root (``uid`` 0; the current user's by default), else ~/.local/state/pipemail/queue."""
    if cfg is not None and cfg.queue:
        return cfg.queue
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return SYSTEM_DIR
    env = os.environ if env is None else env
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "state", "pipemail", "queue")


def backoff(tries):
    """Seconds to wait after the ``tries``-th failed try: 5 minutes, doubling, at most 3 hours."""
    return min(FIRST_RETRY * 2 ** max(tries - 1, 0), MAX_RETRY)


def new_id(now=None):
    """A queue ID: sortable by time, unique across processes."""
    micro = int((time.time() if now is None else now) * 1_000_000)
    return "%013X-%d-%s" % (micro, os.getpid(), os.urandom(3).hex().upper())


def _fsync_dir_fd(fd, label):
    try:
        os.fsync(fd)
    except OSError as exc:
        raise IOFailure("cannot flush %s to disk: %s" % (label, describe_oserror(exc))) from None


class Envelope:
    """What the queue knows of a message: ``sender``, ``recipients`` (those still to reach),
    ``delivered`` (those reached already), ``owner`` (uid), ``queued`` (time), ``tries``,
    ``due`` (time of the next try), ``answer`` (the server's last answer, or None)."""

    def __init__(self, sender, recipients, owner, queued, tries=0, due=None, answer=None, delivered=()):
        self.sender = sender
        self.recipients = list(recipients)
        self.delivered = list(delivered)
        self.owner = owner
        self.queued = queued
        self.tries = tries
        self.due = queued if due is None else due
        self.answer = answer

    def dump(self):
        return (
            json.dumps(
                {
                    "version": ENV_VERSION,
                    "sender": self.sender,
                    "recipients": self.recipients,
                    "delivered": self.delivered,
                    "owner": self.owner,
                    "queued": self.queued,
                    "tries": self.tries,
                    "due": self.due,
                    "answer": self.answer,
                },
                ensure_ascii=False,
                indent=0,
            ).encode("utf-8")
            + b"\n"
        )

    @classmethod
    def parse(cls, data, label):
        try:
            doc = json.loads(data.decode("utf-8"))
            env = cls(
                doc["sender"],
                doc["recipients"],
                int(doc["owner"]),
                float(doc["queued"]),
                int(doc["tries"]),
                float(doc["due"]),
                doc.get("answer"),
                doc.get("delivered", ()),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as exc:
            raise DataError("%s is not a queue envelope: %s" % (label, exc)) from None
        ok = isinstance(env.sender, str) and all(isinstance(r, str) for r in env.recipients + env.delivered)
        if not ok or (env.answer is not None and not isinstance(env.answer, str)):
            raise DataError("%s is not a queue envelope: bad field types" % label)
        return env


class Item:
    """A queued message a run is sending, locked: ``qid``, ``segments`` (re-iterable chunks of
    the message, read from its file), ``size``, ``sender``, ``recipients`` (those still to
    reach) and ``envelope`` (:class:`Envelope`).  It is also what transport.deliver_each takes
    as a message with its own envelope."""

    def __init__(self, qid, fd, size, envelope, label):
        from pipemail.transport import FileChunks

        self.qid = qid
        self.fd = fd
        self.size = size
        self.envelope = envelope
        self.sender = envelope.sender
        self.recipients = list(envelope.recipients)
        self.segments = FileChunks(fd, 0, size, label)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)  # the lock goes with it
            self.fd = None


class Drop:
    """A message in the maildrop, open: ``name``, ``uid`` (the file's owner: who dropped it),
    ``request`` (dict), ``chunks`` (the raw message as re-iterable chunks), ``size``;
    :meth:`remove` once it is queued."""

    def __init__(self, queue, name, fd, st, request, offset):
        from pipemail.transport import FileChunks

        self._queue = queue
        self.name = name
        self.fd = fd
        self.uid = st.st_uid
        self._ino = (st.st_dev, st.st_ino)
        self.request = request
        self.size = st.st_size - offset
        self.mtime = st.st_mtime
        self.chunks = FileChunks(fd, offset, self.size, "the drop %s" % name)

    def remove(self):
        """Remove the drop (it is queued); the maildrop is flushed to disk."""
        d = self._queue.maildrop
        try:
            st = os.stat(os.path.join(d, self.name), follow_symlinks=False)
            if (st.st_dev, st.st_ino) == self._ino:
                os.unlink(os.path.join(d, self.name))
            fd = os.open(d, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            try:
                _fsync_dir_fd(fd, shown(d))
            finally:
                os.close(fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise IOFailure("cannot remove the drop %s: %s" % (self.name, describe_oserror(exc))) from None

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Queue:
    """A queue directory (see the module's words): :meth:`ensure`, :meth:`add`, :meth:`drop`,
    :meth:`drops`; :func:`run` sends it, :func:`listing` lists it."""

    def __init__(self, path):
        self.path = os.fsdecode(path)
        self.tmp = os.path.join(self.path, "tmp")
        self.q = os.path.join(self.path, "q")
        self.failed = os.path.join(self.path, "failed")
        self.maildrop = os.path.join(self.path, "maildrop")

    def __repr__(self):
        return "Queue(%r)" % self.path

    # -- making it --------------------------------------------------------------------------
    def ensure(self, system=False):
        """Make the directories, idempotently: DIR and its tmp/, q/ and failed/ mode 0700 (a user's
        queue); for the system queue DIR is 0755, owned by root, and maildrop/ is 1733.  A
        directory in the way that is a symlink, not a directory, or not owned by the user
        (root for the system queue) is a ConfigError (78): the queue is not used."""
        me = os.geteuid()
        top_mode = 0o755 if system else 0o700
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, 0o700, exist_ok=True)
        except OSError as exc:
            raise CantCreateError(
                "cannot create the queue %s: %s" % (shown(self.path), describe_oserror(exc))
            ) from None
        dirs = [(self.path, top_mode), (self.tmp, 0o700), (self.q, 0o700), (self.failed, 0o700)]
        if system:
            dirs.append((self.maildrop, 0o1733))
        for path, mode in dirs:
            try:
                os.mkdir(path, 0o700)
                os.chmod(path, mode)  # not masked by the umask
            except FileExistsError:
                pass
            except OSError as exc:
                raise CantCreateError("cannot create the queue %s: %s" % (shown(path), describe_oserror(exc))) from None
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigError("the queue %s is not a directory (a symlink or a file is in the way)" % shown(path))
            if st.st_uid != me:
                raise ConfigError(
                    "the queue %s is owned by uid %d, not by this user (uid %d): not used"
                    % (shown(path), st.st_uid, me)
                )
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
        return self

    # -- adding -----------------------------------------------------------------------------
    def _write_tmp(self, name, chunks):
        """Write ``chunks`` to tmp/``name`` (new), flushed and fsynced; its size."""
        path = os.path.join(self.tmp, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CantCreateError("cannot queue in %s: %s" % (shown(self.path), describe_oserror(exc))) from None
        size = 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    size += n
                    view = view[n:]
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            _unlink(path)
            raise IOFailure("cannot queue in %s: %s" % (shown(self.path), describe_oserror(exc))) from None
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return size

    def add(self, chunks, sender, recipients, *, owner=None, answer=None, now=None):
        """Queue the message ``chunks`` (re-iterable bytes, LF line ends, as it is to be sent) for
        ``recipients`` from ``sender``; its ID.  Durable when it returns.  ``owner``: the uid whose
        dead letter gets it if it fails (the caller's by default); ``answer``: the server's answer
        to a try made already (then the next try is due after the first backoff)."""
        now = time.time() if now is None else now
        owner = os.getuid() if owner is None else owner
        if not recipients:
            raise DataError("nothing to queue: the message has no recipients")
        env = Envelope(sender, recipients, owner, now)
        if answer is not None:
            env.tries, env.due, env.answer = 1, now + backoff(1), answer
        qid = new_id(now)
        try:
            self._write_tmp(qid + ".env", [env.dump()])
            self._write_tmp(qid + ".msg", chunks)
            os.rename(os.path.join(self.tmp, qid + ".env"), os.path.join(self.q, qid + ".env"))
            os.rename(os.path.join(self.tmp, qid + ".msg"), os.path.join(self.q, qid + ".msg"))
            _fsync_dir(self.q)
        except BaseException as exc:
            for name in (qid + ".env", qid + ".msg"):
                _unlink(os.path.join(self.tmp, name))
            if not os.path.exists(os.path.join(self.q, qid + ".msg")):
                _unlink(os.path.join(self.q, qid + ".env"))
            if isinstance(exc, OSError):
                raise IOFailure("cannot queue in %s: %s" % (shown(self.path), describe_oserror(exc))) from None
            raise
        return qid

    def _rewrite_env(self, qid, env, where=None):
        """Replace ``where``/ID.env (q/ by default) by ``env``, atomically and durably."""
        where = self.q if where is None else where
        name = qid + ".env." + os.urandom(3).hex()
        self._write_tmp(name, [env.dump()])
        try:
            os.rename(os.path.join(self.tmp, name), os.path.join(where, qid + ".env"))
            _fsync_dir(where)
        except OSError as exc:
            _unlink(os.path.join(self.tmp, name))
            raise IOFailure("cannot update the queue %s: %s" % (shown(self.path), describe_oserror(exc))) from None

    # -- the maildrop -------------------------------------------------------------------------
    def drop(self, chunks, request):
        """Drop the message ``chunks`` (raw, as received) with ``request`` (a dict of JSON values)
        into the maildrop, as any user: written to a dot-name, fsynced, renamed; its name."""
        head = DROP_MAGIC + json.dumps(request, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
        if len(head) > DROP_HEAD_LIMIT:
            raise DataError("the request of the drop is too long (%d bytes)" % len(head))
        name = new_id()
        temp = "." + name
        path = os.path.join(self.maildrop, temp)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CantCreateError(
                "cannot drop the message into %s: %s" % (shown(self.maildrop), describe_oserror(exc))
            ) from None
        try:
            try:
                for chunk in _chained([head], chunks):
                    view = memoryview(chunk)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(path, os.path.join(self.maildrop, name))
        except BaseException as exc:
            _unlink(path)
            if isinstance(exc, OSError):
                raise IOFailure(
                    "cannot drop the message into %s: %s" % (shown(self.maildrop), describe_oserror(exc))
                ) from None
            raise
        try:  # a maildrop 1733 cannot be opened for reading by its users: flushed when it can be
            _fsync_dir(self.maildrop)
        except IOFailure:
            pass
        return name

    def drops(self, warn=None, now=None):
        """The drops waiting in the maildrop, oldest first, each a :class:`Drop` open and locked
        until the next one is asked for (or :meth:`Drop.close`).  Dot-names (being written) are
        left alone, and removed when older than a day; anything but a regular file with one link
        and a good first line is skipped with a warning; a drop another run holds is skipped."""
        import fcntl

        now = time.time() if now is None else now
        try:
            names = sorted(os.listdir(self.maildrop))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure("cannot read the maildrop %s: %s" % (shown(self.maildrop), describe_oserror(exc))) from None
        for name in names:
            path = os.path.join(self.maildrop, name)
            if name.startswith("."):
                _remove_stale(path, now)
                continue
            try:
                fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC)
            except FileNotFoundError:
                continue  # taken by another run
            except OSError as exc:
                _warn(warn, "skipping %s in the maildrop: %s" % (shown(name), _why_not_regular(exc)))
                continue
            drop = None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    _warn(warn, "skipping %s in the maildrop: not a regular file" % shown(name))
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another run has it
                st = os.fstat(fd)
                if st.st_nlink == 0:
                    continue  # another run took it and removed it
                if st.st_nlink != 1:
                    _warn(warn, "skipping %s in the maildrop: it has %d links" % (shown(name), st.st_nlink))
                    continue
                try:
                    request, offset = _read_drop_head(fd)
                except DataError as exc:
                    _warn(warn, "skipping %s in the maildrop: %s" % (shown(name), exc))
                    continue
                drop = Drop(self, name, fd, st, request, offset)
            except OSError as exc:
                _warn(warn, "skipping %s in the maildrop: %s" % (shown(name), describe_oserror(exc)))
                continue
            finally:
                if drop is None:
                    os.close(fd)
            try:
                yield drop
            finally:
                drop.close()


def _chained(*iterables):
    for it in iterables:
        yield from it


def _warn(warn, text):
    if warn is not None:
        warn(text)


def _why_not_regular(exc):
    if exc.errno == errno.ELOOP:
        return "a symbolic link"
    return describe_oserror(exc)


def _read_drop_head(fd):
    """The request of the drop open at ``fd`` and where its message starts; DataError if it is no drop."""
    head = os.pread(fd, DROP_HEAD_LIMIT + 1, 0)
    if not head.startswith(DROP_MAGIC):
        raise DataError("not a pipemail drop (no %s line)" % DROP_MAGIC.decode().strip())
    end = head.find(b"\n")
    if end < 0:
        raise DataError("its first line is cut short or too long")
    try:
        request = json.loads(head[len(DROP_MAGIC) : end].decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError("its request is not JSON: %s" % exc) from None
    if not isinstance(request, dict):
        raise DataError("its request is not a JSON object")
    return request, end + 1


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_stale(path, now):
    """Remove ``path`` (not following a symlink) if it was last changed more than a day ago."""
    try:
        st = os.lstat(path)
        if now - st.st_mtime > STALE and not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return True
    except OSError:
        pass
    return False


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError as exc:
        raise IOFailure("cannot flush %s to disk: %s" % (shown(path), describe_oserror(exc))) from None
    try:
        _fsync_dir_fd(fd, shown(path))
    finally:
        os.close(fd)


__all__ = [
    "LIFETIME",
    "Queue",
    "Item",
    "Drop",
    "Envelope",
    "default_dir",
    "backoff",
    "new_id",
]
