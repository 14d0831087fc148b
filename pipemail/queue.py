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
part, as 661BB27D86270-4242-9A3F0C: sorted by name they are sorted by time, and two
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
up to 3 hours (5, 10, 20, 40, 80, 160, 180, 180... minutes); a message queued by
pysendmail after its own failed try starts at 5 minutes.  ``--run-queue`` sends
what is due; ``-q`` sends everything now.  Recipients the server refused with 4xx stay
queued; those it accepted are not sent to again.  A message still undelivered after
its lifetime (5 days; ``queue_lifetime = "5d"``, "12h", "90m" or seconds) is tried once
more by the next run, due or not, and when that try fails too, or when a try is refused
for good, moves to failed/ with the server's last answer and is appended to the dead
letter of the user who queued it (~user/dead.letter, with X-Pipemail-Undelivered-To
naming the recipients not reached, so that ``pymail --resend`` can send it again),
written as that user: a root run forks, and the child takes the user's groups, gid
and uid before it opens the file; root never writes in a user's home.

What is "for good".  A 5xx reply (to the greeting, EHLO, MAIL FROM, a recipient or the
message), a message larger than the server's SIZE, an international address for a server
without SMTPUTF8, a malformed message.  Everything else is tried again: no connection, a
timeout, TLS, a refused or failing login, a failing password_command, a proxy down, a 4xx.
A server that took the message (250 to its final dot) just before the run was killed gets
it again from the next run: SMTP cannot tell (RFC 1047); nothing is lost either way.

What a run says.  One line for each message that leaves the queue:

    ID: sent to a@x, b@y
    ID: failed for c@z: ANSWER; kept in DIR/failed/ID.msg and /home/u/dead.letter
    ID: sent to a@x; failed for c@z: ANSWER; kept in ...

(a message refused for good for some recipients while others wait says its failed part
when it happens, and "sent to" with every recipient reached when it leaves).  When the
dead letter cannot be written, "kept in DIR/failed/ID.msg (not in a dead letter: WHY)".
:func:`run` returns 0, or 75 when a message it tried stays queued.

The listing (``-bp``, mailq), oldest first, queued then failed then dropped::

    ID                          STATE       AGE       SIZE  TRIES  SENDER -> RECIPIENTS
    661BB27D86270-24176-03AAE5  queued    2h23m        156      1  a@example.com -> b@example.com
                                last answer: 421 4.7.0 busy
    661BB28740E3B-24435-E49FC0  dropped     16m        212      0  (sender and recipients when the queue run takes it)
    -- 1 queued, 1 dropped

AGE is 45s, 12m, 2h23m or 3d04h; "mail queue is empty" when there is nothing.  Only the
queue's owner can list it (the system queue: root).

The maildrop.  A drop is one file: a first line ``PIPEMAIL-DROP 1 {json}`` (the
request, argv-derived settings as a JSON object) and then the message as it was
received.  It is written under a name beginning with a dot, fsynced, and renamed to
its ID; dot-names are files being written and are left alone (removed when older
than a day).  Root's run opens each drop with O_NOFOLLOW|O_NONBLOCK and takes only
regular files with one link; the drop's owner (the file's uid) is who dropped it.
A symlink, a FIFO, a device, a directory, a hard link, a file with a bad first line is
skipped with a warning and left where it is.  A user cannot fsync the maildrop (mode 1733
gives no read permission), so a drop is durable once the filesystem commits the rename;
its bytes are fsynced before it.

Permissions.  A user's queue is 0700 (DIR, tmp/, q/, failed/); the system queue's DIR is
0755 and owned by root, its tmp/, q/ and failed/ 0700, its maildrop/ 1733.  A queue
directory that is a symlink or belongs to another user is refused (exit 78).
"""

import errno
import json
import os
import stat
import time

from pipemail.errors import (
    EX_OK,
    EX_TEMPFAIL,
    CantCreateError,
    ConfigError,
    DataError,
    IOFailure,
    NoPermError,
    NoUserError,
    PipemailError,
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
    for root (``uid`` 0; the current user's by default), else $XDG_STATE_HOME/pipemail/queue
    (~/.local/state/pipemail/queue)."""
    if cfg is not None and cfg.queue:
        return cfg.queue
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return SYSTEM_DIR
    env = os.environ if env is None else env
    home = env.get("HOME") or os.path.expanduser("~")
    state = env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")  # as pypop's state
    return os.path.join(state, "pipemail", "queue")


def backoff(tries):
    """Seconds to wait after the ``tries``-th failed try: 5 minutes, doubling, at most 3 hours."""
    return min(FIRST_RETRY * 2 ** max(tries - 1, 0), MAX_RETRY)


_last_micro = 0


def new_id(now=None):
    """A queue ID: sortable by time (within a process, in the order made), unique across processes."""
    global _last_micro
    micro = max(int((time.time() if now is None else now) * 1_000_000), _last_micro + 1)
    _last_micro = micro
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


# -- the queue run ----------------------------------------------------------------------------


def run(q, deliver, *, due_only, now=None, lifetime=LIFETIME, say, warn, env=None, batch=BATCH):
    """Send the queue ``q``; EX_OK, or EX_TEMPFAIL when some message tried stays queued.

    ``deliver(items)`` sends a list of :class:`Item` (each its own envelope, one SMTP session
    for them all) and yields ``(Report, None)`` or ``(None, exception)`` for each, in order.
    ``due_only`` (``--run-queue``): only what is due by its backoff, and what has outlived
    ``lifetime`` (seconds; None for :data:`LIFETIME`); else (``-q``) everything now.  ``say(line)``
    once for each message that leaves the queue, sent or failed; ``warn(line)`` for what the
    run skips.  ``env``: the environment whose $DEAD names the dead letter of a message the
    running user queued (another user's goes to ~user/dead.letter, written as that user).
    ``now`` is the time the run takes as the present (the tests').  Messages queued while it
    runs are looked for again at its end and sent too."""
    now = time.time() if now is None else now
    lifetime = LIFETIME if lifetime is None else lifetime
    _clean(q, time.time())
    handled = set()
    deferred = False
    for _round in range(100):  # messages keep arriving: a run still ends
        try:
            qids = sorted(n[:-4] for n in os.listdir(q.q) if n.endswith(".msg") and n[:-4] not in handled)
        except OSError as exc:
            raise IOFailure("cannot read the queue %s: %s" % (shown(q.q), describe_oserror(exc))) from None
        if not qids:
            break
        for start in range(0, len(qids), batch):
            items = []
            try:
                for qid in qids[start : start + batch]:
                    handled.add(qid)
                    item = _take(q, qid, now, due_only, lifetime, warn)
                    if item is not None:
                        items.append(item)
                if items:
                    deferred |= _send(q, items, deliver, now, lifetime, say, warn, env)
            finally:
                for item in items:
                    item.close()
    return EX_TEMPFAIL if deferred else EX_OK


def _clean(q, now):
    """Remove what kills left: files in tmp/ older than a day, and envelopes without a message."""
    try:
        for name in os.listdir(q.tmp):
            _remove_stale(os.path.join(q.tmp, name), now)
        present = set(os.listdir(q.q))
    except OSError as exc:
        raise IOFailure("cannot read the queue %s: %s" % (shown(q.path), describe_oserror(exc))) from None
    for name in present:
        if name.endswith(".env") and name[:-4] + ".msg" not in present:
            _remove_stale(os.path.join(q.q, name), now)


def _take(q, qid, now, due_only, lifetime, warn):
    """The message ``qid`` open and locked as an :class:`Item`, or None: gone, held by another run,
    not due, or without a readable envelope."""
    import fcntl

    path = os.path.join(q.q, qid + ".msg")
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC)
    except FileNotFoundError:
        return None  # sent by another run meanwhile
    except OSError as exc:
        _warn(warn, "%s: cannot read %s: %s; left in the queue" % (qid, shown(path), describe_oserror(exc)))
        return None
    item = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another run is sending it
        st = os.fstat(fd)
        if st.st_nlink == 0 or not stat.S_ISREG(st.st_mode):
            return None  # another run sent it and removed it after we opened it
        try:
            envelope = read_envelope(os.path.join(q.q, qid + ".env"))
        except (DataError, OSError) as exc:
            why = describe_oserror(exc) if isinstance(exc, OSError) else str(exc)
            _warn(warn, "%s: no usable envelope (%s); left in the queue" % (qid, why))
            return None
        if due_only and envelope.due > now and now - envelope.queued < lifetime:
            return None
        item = Item(qid, fd, st.st_size, envelope, "the queued message %s" % qid)
        return item
    finally:
        if item is None:
            os.close(fd)


def read_envelope(path):
    """The :class:`Envelope` in the file ``path``; OSError, or DataError when it is no envelope."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    return Envelope.parse(data, shown(path))


def permanent(exc):
    """Whether the failure ``exc`` of a delivery is for good: a 5xx reply from the server (AUTH's
    535 included: ``exc.smtp_code`` >= 500), a refused recipient, a malformed message.  Anything
    else (no connection, a timeout, a TLS failure, AUTH not offered, a failing password_command,
    a proxy down, a 4xx) is tried again until the message's lifetime ends.  The one rule of
    pysendmail's first try and of the queue run."""
    if isinstance(exc, (DataError, NoUserError)):
        return True
    return isinstance(exc, PipemailError) and exc.smtp_code is not None and exc.smtp_code >= 500


def _send(q, items, deliver, now, lifetime, say, warn, env):
    """Deliver ``items`` and settle each by its answer; whether some stay queued."""
    deferred = False
    failure = None
    try:
        results = iter(deliver(items))
    except PipemailError as err:  # it could not even start (a bad configuration)
        failure = err
    for item in items:
        report = exc = None
        if failure is None:
            try:
                report, exc = next(results)
            except StopIteration:
                failure = PipemailError("the delivery gave no answer for the message")
            except PipemailError as err:  # the delivery failed as a whole
                failure = err
        if failure is not None:
            report, exc = None, failure
        deferred |= _settle(q, item, report, exc, now, lifetime, say, warn, env)
    return deferred


def _settle(q, item, report, exc, now, lifetime, say, warn, env):
    """Act on the answer for ``item``: remove it, requeue it with its backoff, or fail it
    (failed/ and the owner's dead letter) for the recipients refused for good.  Whether it stays."""
    envelope = item.envelope
    temp, perm, accepted = {}, {}, []
    if exc is not None:
        answer = str(exc)
        for r in item.recipients:
            (perm if permanent(exc) else temp)[r] = answer
    else:
        accepted = [r for r in report.accepted if r in item.recipients]
        for r, (code, text) in report.refused.items():
            (temp if code < 500 else perm)[r] = text
    delivered = envelope.delivered + accepted
    remaining = [r for r in item.recipients if r in temp]
    if remaining and now - envelope.queued >= lifetime:
        for r in remaining:
            perm[r] = "%s (given up after %s in the queue)" % (temp[r], _age(now - envelope.queued))
        remaining = []
    said = []
    if perm:
        said.append(_fail_for(q, item, perm, delivered, now, warn, env))
    if remaining:
        envelope.recipients = remaining
        envelope.delivered = delivered
        envelope.tries += 1
        envelope.due = now + backoff(envelope.tries)
        envelope.answer = _answers([temp[r] for r in remaining])
        q._rewrite_env(item.qid, envelope)
        for line in said:
            say(line)
        return True
    for name in (item.qid + ".msg", item.qid + ".env"):  # the message first: a run that lists sees it gone
        _unlink(os.path.join(q.q, name))
    _fsync_dir(q.q)
    if delivered:
        said.insert(0, "%s: sent to %s" % (item.qid, ", ".join(delivered)))
    if said:
        say("; ".join([said[0]] + [line.split(": ", 1)[1] for line in said[1:]]))
    return False


def _answers(texts):
    seen = []
    for t in texts:
        if t not in seen:
            seen.append(t)
    return "; ".join(seen)


def _fail_for(q, item, perm, delivered, now, warn, env):
    """Give up on ``item`` for the recipients ``perm`` (address -> answer): append it to its owner's
    dead letter, then link it into failed/ with its envelope; the line to say."""
    rcpts = list(perm)
    answer = _answers(perm.values())
    path, why = dead_letter(item, rcpts, env)
    envelope = item.envelope
    failed = Envelope(
        envelope.sender, rcpts, envelope.owner, envelope.queued, envelope.tries + 1, now, answer, delivered
    )
    name, n = item.qid, 1
    while os.path.lexists(os.path.join(q.failed, name + ".msg")) or os.path.lexists(
        os.path.join(q.failed, name + ".env")
    ):
        name, n = "%s.%d" % (item.qid, n), n + 1
    where = os.path.join(q.failed, name + ".msg")
    q._rewrite_env(name, failed, where=q.failed)
    try:
        os.link(os.path.join(q.q, item.qid + ".msg"), where)
        _fsync_dir(q.failed)
    except OSError as exc:
        raise IOFailure("cannot move %s to %s: %s" % (item.qid, shown(q.failed), describe_oserror(exc))) from None
    kept = "kept in %s and %s" % (shown(where), shown(path)) if path else "kept in %s (%s)" % (shown(where), why)
    return "%s: failed for %s: %s; %s" % (item.qid, ", ".join(rcpts), answer, kept)


def dead_letter(item, undelivered, env=None):
    """Append ``item`` to its owner's dead letter for ``undelivered``; ``(path, None)``, or
    ``(None, why)`` when it could not be written.  The running user's own message goes to
    $DEAD (in ``env``) or ~/dead.letter; another user's, when running as root, to that user's
    ~/dead.letter, written by a child process that has become that user (groups, gid, uid)
    before it opens anything: root never writes in a user's home."""
    from pipemail import transport

    owner = item.envelope.owner
    if owner == os.geteuid():
        path = transport.dead_letter_path(None, env)
        try:
            transport.save_dead_letter(path, item.segments, item.sender, undelivered)
        except PipemailError as exc:
            return None, "not in a dead letter: %s" % exc
        return path, None
    if os.geteuid() != 0:
        return None, "not in a dead letter: it was queued by uid %d, and only root writes as another user" % owner
    import pwd

    try:
        pw = pwd.getpwuid(owner)
    except KeyError:
        return None, "not in a dead letter: uid %d has no account" % owner
    path = os.path.join(pw.pw_dir, "dead.letter")
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, as the owner (its coverage is not collected)
        status = 1
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            transport.save_dead_letter(path, item.segments, item.sender, undelivered)
            status = 0
        except BaseException as exc:  # everything is said through the pipe, nothing printed
            try:
                os.write(w, str(exc).encode("utf-8", "replace")[:4000])
            except BaseException:
                pass
        finally:
            os._exit(status)
    os.close(w)
    said = b""
    while True:
        data = os.read(r, 4096)
        if not data:
            break
        said += data
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return None, "not in a dead letter: %s" % (said.decode("utf-8", "replace") or "the writer failed")
    return path, None


def dead_letter_of(owner, chunks, sender, undelivered, env=None):
    """:func:`dead_letter` for a message that is not queued (a drop root's run cannot accept):
    ``chunks`` appended to ``owner``'s dead letter, written as that user; ``(path, None)``, or
    ``(None, why)`` when it could not be written."""

    class Returned:
        def __init__(self):
            self.envelope = Envelope(sender, list(undelivered), owner, time.time())
            self.segments = chunks
            self.sender = sender

    return dead_letter(Returned(), undelivered, env)


# -- listing (-bp, mailq) -------------------------------------------------------------------


class Entry:
    """One line of the listing: ``qid``, ``state`` ("queued", "failed" or "dropped"), ``age``
    (seconds), ``size`` (bytes), ``sender``, ``recipients``, ``tries``, ``answer`` (the last
    one, or None).  A drop has only its size and age (its envelope is worked out when the queue
    run takes it): sender None, recipients [], tries 0."""

    def __init__(self, qid, state, age, size, sender=None, recipients=(), tries=0, answer=None):
        self.qid = qid
        self.state = state
        self.age = age
        self.size = size
        self.sender = sender
        self.recipients = list(recipients)
        self.tries = tries
        self.answer = answer

    def __repr__(self):
        return "Entry(%r, %r)" % (self.qid, self.state)


def listing(q, now=None):
    """What the queue ``q`` holds: queued, then failed, then dropped (the maildrop, when it can
    be read: root) messages, each oldest first, as :class:`Entry`.  NoPermError when the
    queue cannot be read (the system queue, for a user)."""
    now = time.time() if now is None else now
    entries = []
    for state, where in (("queued", q.q), ("failed", q.failed)):
        try:
            found = sorted(os.listdir(where))
        except FileNotFoundError:
            continue
        except PermissionError:
            raise NoPermError("cannot list the queue %s: Permission denied (only its owner can)" % shown(q.path))
        except OSError as exc:
            raise IOFailure("cannot list the queue %s: %s" % (shown(q.path), describe_oserror(exc))) from None
        for name in found:
            if not name.endswith(".msg"):
                continue
            qid = name[:-4]
            try:
                size = os.stat(os.path.join(where, name)).st_size
                envelope = read_envelope(os.path.join(where, qid + ".env"))
            except (OSError, DataError):
                continue  # sent meanwhile, or torn: nothing to list
            entries.append(
                Entry(
                    qid,
                    state,
                    max(now - envelope.queued, 0),
                    size,
                    envelope.sender,
                    envelope.recipients,
                    envelope.tries,
                    envelope.answer,
                )
            )
    try:
        dropped = sorted(n for n in os.listdir(q.maildrop) if not n.startswith("."))
    except OSError:
        dropped = []
    for name in dropped:
        try:
            st = os.lstat(os.path.join(q.maildrop, name))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            entries.append(Entry(name, "dropped", max(now - st.st_mtime, 0), st.st_size))
    return entries


def _age(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm" % (seconds // 60)
    if seconds < 86400:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


def format_listing(entries, now=None):
    """The lines ``pysendmail -bp`` (mailq) prints for ``entries``: a heading, then for each
    message its ID, state, age, size in bytes, tries and ``sender -> recipients``, with the
    last answer on a line of its own below it; "mail queue is empty" when there is none."""
    if not entries:
        return ["mail queue is empty"]
    width = max(len(e.qid) for e in entries)
    lines = ["%-*s  %-7s  %6s  %9s  %5s  %s" % (width, "ID", "STATE", "AGE", "SIZE", "TRIES", "SENDER -> RECIPIENTS")]
    for e in entries:
        who = "(sender and recipients when the queue run takes it)"
        if e.state != "dropped":
            who = "%s -> %s" % (e.sender or "<>", ", ".join(e.recipients))
        lines.append("%-*s  %-7s  %6s  %9d  %5d  %s" % (width, e.qid, e.state, _age(e.age), e.size, e.tries, who))
        if e.answer:
            lines.append("%*s  last answer: %s" % (width, "", " ".join(e.answer.split())))
    counts = [(n, s) for s in ("queued", "failed", "dropped") if (n := sum(e.state == s for e in entries))]
    lines.append("-- %s" % ", ".join("%d %s" % c for c in counts))
    return lines


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
    "Entry",
    "default_dir",
    "backoff",
    "new_id",
    "run",
    "permanent",
    "dead_letter",
    "read_envelope",
    "listing",
    "format_listing",
]
