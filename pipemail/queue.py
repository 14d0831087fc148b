"""pysendmail's queue: a message accepted is a message delivered, eventually.

Layout of a queue directory DIR (``queue = DIR`` in the configuration, else
/var/spool/pipemail for root, ~/.local/state/pipemail/queue for a user)::

    DIR/tmp/         files being written (removed by a queue run when older than a day)
    DIR/q/           queued messages: ID.msg (the message as it is to be sent, LF line
                     ends) and ID.env (its envelope, a small JSON object: sender,
                     recipients, owner uid, queued time, tries, next try, last answer,
                     the account it was accepted for and the proxy its command line gave)
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

Accounts.  A run sends each message through the account it was accepted for (its
envelope's ``account``; none recorded: the run's own) and through the proxy the sender's
command line gave (root's own pysendmail only: a drop never chooses a proxy), else the
account's: the messages are grouped by account and proxy, one SMTP session for each.  A
message whose account is no longer in the configuration stays queued with the answer
"account NAME is no longer configured", and fails at the end of its lifetime.

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

The listing (``-bp``, mailq), oldest first, queued then failed then dropped, in the shape
of Postfix's mailq so that the scripts written for it work::

    -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
    661BB27D86270-24176-03AAE5*      156 Thu Dec  3 12:00:00  a@example.com
                                         (tried 3 times: 421 4.7.0 busy)
                                              b@example.com

    661BB28740E3B-24435-E49FC0!      212 Thu Dec  3 12:10:00  a@example.com
                              (tried once: 550 5.1.1 unknown)
                                              c@example.com

    661BB29740E3B-1234-E49FC1       212 Thu Dec  3 12:20:00  (maildrop queue, sender UID 1001)

    -- 0 Kbytes in 3 Requests.

``*``: a queue run is sending it now (its lock, read from /proc/locks); ``!``: it failed (in
failed/); "Mail queue is empty" when there is nothing.  Files in the maildrop that are no
drop are not listed.

The maildrop.  A drop is one file: a first line ``PIPEMAIL-DROP 1 {json}`` (the
request, argv-derived settings as a JSON object) and then the message as it was
received.  It is written under a name beginning with a dot, fsynced, and renamed to
its ID; dot-names are files being written and are left alone (removed when older
than a day).  Root's run opens each drop with O_NOFOLLOW|O_NONBLOCK and takes only
regular files with one link; the drop's owner (the file's uid) is who dropped it.
A symlink, a FIFO, a device, a directory, a hard link, a file with a bad first line is moved
to DIR/corrupt/ (0700) with a warning, once, as Postfix's pickup does. A user cannot fsync
the maildrop (mode 1733 gives no read permission), so a drop is durable once the filesystem
commits the rename; its bytes are fsynced before it. Root's run also takes the maildrop of
/var/spool/pipemail when the system-wide file names another queue (:func:`fallback`): users
who cannot read that file drop there. A drop is at most ``drop_max_size`` (100M by default;
0: no limit): :meth:`Queue.drop` stops writing past it (DataError, 65) and
:meth:`Queue.drops` gives a larger one with its ``refuse_reason``, judged by the file's size
before anything of it is read (a sparse file counts by its size).

Permissions.  A user's queue is 0700 (DIR, tmp/, q/, failed/); the system queue's DIR is
0755 and owned by root, its tmp/ 0700, its maildrop/ 1733, and its q/ and failed/ 0755 with
envelopes 0644 (messages 0600), so that every user may list it, as Postfix's mailq lets them
(an envelope whose proxy URL holds a user name or password stays 0600, and is not listed to
users).  A queue
directory that is a symlink or belongs to another user is refused (exit 78).
"""

import errno
import itertools
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
from pipemail.mailbox import fsync_dir

LIFETIME = 5 * 86400  # seconds a message may wait before it fails (``queue_lifetime``)
FIRST_RETRY = 5 * 60  # seconds before the second try; doubled after each failed try
MAX_RETRY = 3 * 3600  # ... up to this
STALE = 86400  # a temporary file older than this was left by a kill
BATCH = 100  # messages per SMTP session (each holds an open file and its lock)
DROP_MAGIC = b"PIPEMAIL-DROP 1 "
DROP_HEAD_LIMIT = 1 << 16  # the drop's first line is at most this long
SYSTEM_DIR = "/var/spool/pipemail"
DROP_MAX_SIZE = 100 << 20  # the largest message a user may drop (``drop_max_size``; 0: no limit)
ENV_VERSION = 1

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


def fallback(cfg):
    """The default system queue (/var/spool/pipemail) when ``cfg`` is the system-wide file and its
    ``queue`` names another directory, else None.  A user who cannot read that file (mode 0600,
    as when it holds the password) cannot know its ``queue``, and drops into the default
    maildrop: root's queue run takes that maildrop too, and -bi makes it."""
    if cfg is None or not cfg.system or not cfg.queue:
        return None
    if os.path.abspath(cfg.queue) == os.path.abspath(SYSTEM_DIR):
        return None
    return Queue(SYSTEM_DIR, drop_max_size=drop_limit(cfg))


def drop_limit(cfg):
    """The largest message the maildrop takes, in bytes (0: no limit): the configuration's
    ``drop_max_size``, else :data:`DROP_MAX_SIZE`."""
    if cfg is not None and cfg.drop_max_size is not None:
        return cfg.drop_max_size
    return DROP_MAX_SIZE


def size_text(n):
    """``n`` bytes as a size is written in the configuration: 100M, 512K, 1G, else bytes."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n and n % factor == 0:
            return "%d%s" % (n // factor, unit)
    return "%d bytes" % n


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


class Envelope:
    """What the queue knows of a message: ``sender``, ``recipients`` (those still to reach),
    ``delivered`` (those reached already), ``owner`` (uid), ``queued`` (time), ``tries``,
    ``due`` (time of the next try), ``answer`` (the server's last answer, or None), ``account``
    (the name of the account it was accepted for; None: the queue run's) and ``proxy`` (the proxy
    URL the sender's command line gave, "" for none; None: the account's own)."""

    def __init__(
        self,
        sender,
        recipients,
        owner,
        queued,
        tries=0,
        due=None,
        answer=None,
        delivered=(),
        account=None,
        proxy=None,
    ):
        self.sender = sender
        self.recipients = list(recipients)
        self.delivered = list(delivered)
        self.owner = owner
        self.queued = queued
        self.tries = tries
        self.due = queued if due is None else due
        self.answer = answer
        self.account = account
        self.proxy = proxy

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
                    "account": self.account,
                    "proxy": self.proxy,
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
                doc.get("account"),
                doc.get("proxy"),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError) as exc:
            raise DataError("%s is not a queue envelope: %s" % (label, exc)) from None
        ok = isinstance(env.sender, str) and all(isinstance(r, str) for r in env.recipients + env.delivered)
        ok = ok and all(v is None or isinstance(v, str) for v in (env.answer, env.account, env.proxy))
        if not ok:
            raise DataError("%s is not a queue envelope: bad field types" % label)
        return env


class Item:
    """A queued message a run is sending, locked: ``qid``, ``segments`` (re-iterable chunks of
    the message, read from its file), ``size``, ``sender``, ``recipients`` (those still to
    reach), ``account`` and ``proxy`` (its envelope's) and ``envelope`` (:class:`Envelope`).
    It is also what transport.deliver_each takes as a message with its own envelope."""

    def __init__(self, qid, fd, size, envelope, label):
        from pipemail.transport import FileChunks

        self.qid = qid
        self.fd = fd
        self.size = size
        self.envelope = envelope
        self.sender = envelope.sender
        self.recipients = list(envelope.recipients)
        self.account = envelope.account
        self.proxy = envelope.proxy
        self.segments = FileChunks(fd, 0, size, label)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)  # the lock goes with it
            self.fd = None


class Drop:
    """A message in the maildrop, open: ``name``, ``uid`` (the file's owner: who dropped it),
    ``request`` (dict), ``chunks`` (the raw message as re-iterable chunks), ``size``;
    :meth:`remove` once it is queued.  ``refuse_reason``: None, or why the queue run must not
    take it (over ``drop_max_size``: its chunks are not to be read, let alone copied)."""

    def __init__(self, maildrop, name, fd, st, request, offset, refuse_reason=None):
        from pipemail.transport import FileChunks

        self.maildrop = maildrop  # the directory it is in
        self.name = name
        self.fd = fd
        self.uid = st.st_uid
        self._ino = (st.st_dev, st.st_ino)
        self.request = request
        self.size = st.st_size - offset
        self.mtime = st.st_mtime
        self.chunks = FileChunks(fd, offset, self.size, "the drop %s" % name)
        self.refuse_reason = refuse_reason

    def head(self, limit=DROP_HEAD_LIMIT):
        """The message's header block (up to its blank line, at most ``limit`` bytes, cut at a line
        end), read alone: what goes back to the owner of a drop that is never read whole."""
        data = os.pread(self.fd, limit, self.chunks.start)
        ends = [i + 1 for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]  # after its last line end
        if not ends:
            ends = [data.rfind(b"\n") + 1]
        return data[: min(ends)]

    def remove(self):
        """Remove the drop (it is queued); the maildrop is flushed to disk."""
        d = self.maildrop
        try:
            st = os.stat(os.path.join(d, self.name), follow_symlinks=False)
            if (st.st_dev, st.st_ino) == self._ino:
                os.unlink(os.path.join(d, self.name))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure("cannot remove the drop %s: %s" % (self.name, describe_oserror(exc))) from None
        fsync_dir(d)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Queue:
    """A queue directory (see the module's words): :meth:`ensure`, :meth:`add`, :meth:`drop`,
    :meth:`drops`; :func:`run` sends it, :func:`listing` lists it."""

    def __init__(self, path, drop_max_size=DROP_MAX_SIZE, fallback=None):
        self.path = os.fsdecode(path)
        self.drop_max_size = drop_max_size  # bytes, 0 for no limit: what drop() writes and drops() takes
        self.fallback = fallback  # a Queue whose maildrop root's run takes too (see :func:`fallback`)
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
        self._make_parents(0o755 if system else 0o700)
        listed = 0o755 if system else 0o700  # every user lists the system queue (mailq), as Postfix's
        dirs = [(self.path, top_mode), (self.tmp, 0o700), (self.q, listed), (self.failed, listed)]
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
            st = _check_dir(path, me)
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
        return self

    def check(self, owner=None):
        """Refuse (ConfigError, 78, the lines :meth:`ensure` says) a queue directory that is a
        symlink, not a directory, or not owned by ``owner`` (this user by default; root for the
        system queue), as -bp must before it lists it.  A queue not made yet is fine."""
        owner = os.geteuid() if owner is None else owner
        for path in (self.path, self.q, self.failed):
            try:
                _check_dir(path, owner)
            except (FileNotFoundError, PermissionError):
                pass  # not made yet, or not reachable: listing() says which
        return self

    def _make_parents(self, mode):
        """Make the queue directory's missing parents, each ``mode`` whatever the umask: 0755 for
        the system queue (every user must pass through them to reach its maildrop), 0700 for a
        user's.  Parents that exist are left as they are."""
        missing = []
        parent = os.path.dirname(os.path.abspath(self.path))
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o700)
                os.chmod(path, mode)
            except FileExistsError:
                pass
            except OSError as exc:
                raise CantCreateError(
                    "cannot create the queue %s: %s" % (shown(self.path), describe_oserror(exc))
                ) from None

    # -- adding -----------------------------------------------------------------------------
    def _write_tmp(self, name, chunks, mode=0o600):
        """Write ``chunks`` to tmp/``name`` (new, ``mode``), flushed and fsynced; its size."""
        path = os.path.join(self.tmp, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CantCreateError("cannot queue in %s: %s" % (shown(self.path), describe_oserror(exc))) from None
        size = 0
        try:
            if mode != 0o600:
                os.fchmod(fd, mode)
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

    def add(self, chunks, sender, recipients, *, owner=None, answer=None, now=None, account=None, proxy=None):
        """Queue the message ``chunks`` (re-iterable bytes, LF line ends, as it is to be sent) for
        ``recipients`` from ``sender``; its ID.  Durable when it returns.  ``owner``: the uid whose
        dead letter gets it if it fails (the caller's by default); ``answer``: the server's answer
        to a try made already (then the next try is due after the first backoff); ``account``: the
        name of the account it was accepted for, which the queue run sends it through; ``proxy``:
        the proxy URL the sender's command line gave ("" for none), else None (the account's)."""
        now = time.time() if now is None else now
        owner = os.getuid() if owner is None else owner
        if not recipients:
            raise DataError("nothing to queue: the message has no recipients")
        env = Envelope(sender, recipients, owner, now, account=account, proxy=proxy)
        if answer is not None:
            env.tries, env.due, env.answer = 1, now + backoff(1), answer
        qid = new_id(now)
        try:
            self._write_tmp(qid + ".env", [env.dump()], self._env_mode(env))
            self._write_tmp(qid + ".msg", chunks)
            os.rename(os.path.join(self.tmp, qid + ".env"), os.path.join(self.q, qid + ".env"))
            os.rename(os.path.join(self.tmp, qid + ".msg"), os.path.join(self.q, qid + ".msg"))
            fsync_dir(self.q)
        except BaseException as exc:
            for name in (qid + ".env", qid + ".msg"):
                _unlink(os.path.join(self.tmp, name))
            if not os.path.exists(os.path.join(self.q, qid + ".msg")):
                _unlink(os.path.join(self.q, qid + ".env"))
            if isinstance(exc, OSError):
                raise IOFailure("cannot queue in %s: %s" % (shown(self.path), describe_oserror(exc))) from None
            raise
        return qid

    def _env_mode(self, env):
        """0644 for an envelope of a queue every user may list (q/ is 0755: the system queue), so
        that mailq works for them; 0600 otherwise, and for an envelope whose proxy URL holds a
        user name or password.  A message itself is always 0600."""
        try:
            listed = stat.S_IMODE(os.stat(self.q).st_mode) & 0o005 == 0o005
        except OSError:
            listed = False
        return 0o644 if listed and "@" not in (env.proxy or "") else 0o600

    def _rewrite_env(self, qid, env, where=None):
        """Replace ``where``/ID.env (q/ by default) by ``env``, atomically and durably."""
        where = self.q if where is None else where
        name = qid + ".env." + os.urandom(3).hex()
        self._write_tmp(name, [env.dump()], self._env_mode(env))
        try:
            os.rename(os.path.join(self.tmp, name), os.path.join(where, qid + ".env"))
            fsync_dir(where)
        except OSError as exc:
            _unlink(os.path.join(self.tmp, name))
            raise IOFailure("cannot update the queue %s: %s" % (shown(self.path), describe_oserror(exc))) from None

    # -- the maildrop -------------------------------------------------------------------------
    def drop(self, chunks, request):
        """Drop the message ``chunks`` (raw, as received) with ``request`` (a dict of JSON values)
        into the maildrop, as any user: written to a dot-name, fsynced, renamed; its name.  A message
        over :attr:`drop_max_size` is a DataError (65): the writing stops there and the partial
        file is removed."""
        limit = self.drop_max_size
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
                "cannot drop the message into %s: %s (%s)"
                % (shown(self.maildrop), describe_oserror(exc), self._drop_hint(exc))
            ) from None
        try:
            try:
                size = -len(head)
                for chunk in itertools.chain([head], chunks):
                    size += len(chunk)
                    if limit and size > limit:
                        raise DataError(
                            "the message is over %s, the largest a user may drop (drop_max_size): not dropped"
                            % size_text(limit)
                        )
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
            fsync_dir(self.maildrop)
        except IOFailure:
            pass
        return name

    def _drop_hint(self, exc):
        """What to do when the maildrop cannot be written, by ``exc``'s errno."""
        if exc.errno == errno.ENOENT:
            return "root's pysendmail -bi, or newaliases, makes it"
        if exc.errno in (errno.EACCES, errno.EPERM):
            path = os.path.abspath(self.maildrop)
            parts = [path]
            while os.path.dirname(parts[-1]) != parts[-1]:
                parts.append(os.path.dirname(parts[-1]))
            for d in reversed(parts):  # from / down: the first one this user cannot pass through
                need = os.W_OK | os.X_OK if d == path else os.X_OK
                try:
                    st = os.stat(d)
                except OSError:
                    break
                if not os.access(d, need):
                    if d == path:
                        return "%s is mode %04o, not 1733: root's pysendmail -bi sets it" % (
                            shown(d),
                            stat.S_IMODE(st.st_mode),
                        )
                    return "%s is mode %04o: users cannot pass through it to the maildrop; as root: chmod a+x %s" % (
                        shown(d),
                        stat.S_IMODE(st.st_mode),
                        shown(d),
                    )
        return "root's pysendmail -bi makes the maildrop"

    def maildrops(self, warn=None):
        """The maildrops root's run takes, as ``(path, label)``: this queue's, then its :attr:`fallback`'s
        when that and its queue are directories of this user's (a symlink or another's is skipped
        with a warning)."""
        found = [(self.maildrop, "the maildrop")]
        if self.fallback is not None and os.path.abspath(self.fallback.maildrop) != os.path.abspath(self.maildrop):
            where = self.fallback.maildrop
            try:
                sts = [os.lstat(self.fallback.path), os.lstat(where)]
            except OSError:
                return found  # none made: nothing dropped there
            if not all(stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() for st in sts):
                _warn(warn, "skipping the maildrop %s: not a directory of this user's" % shown(where))
            else:
                found.append((where, "the maildrop %s" % shown(where)))
        return found

    def drops(self, warn=None, now=None):
        """The drops waiting in the maildrops (:meth:`maildrops`), oldest first, each a :class:`Drop`
        open and locked until the next one is asked for (or :meth:`Drop.close`).  Dot-names (being
        written) are left alone, and removed when older than a day; anything but a regular file with
        one link and a good first line is moved to corrupt/ with a warning; a drop another run holds is
        skipped.  A drop over :attr:`drop_max_size` (its file's size, not its blocks) comes with its
        ``refuse_reason``: never read nor copied."""
        now = time.time() if now is None else now
        for maildrop, label in self.maildrops(warn):
            yield from self._drops_in(maildrop, label, warn, now)

    def _drops_in(self, maildrop, label, warn, now):
        import fcntl

        try:
            names = sorted(os.listdir(maildrop))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure("cannot read the maildrop %s: %s" % (shown(maildrop), describe_oserror(exc))) from None
        for name in names:
            path = os.path.join(maildrop, name)
            if name.startswith("."):
                _remove_stale(path, now)
                continue
            try:
                fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC)
            except FileNotFoundError:
                continue  # taken by another run
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    _set_aside(maildrop, name, label, _why_not_regular(exc), warn)
                else:
                    _warn(warn, "skipping %s in %s: %s" % (shown(name), label, describe_oserror(exc)))
                continue
            drop = None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    _set_aside(maildrop, name, label, "not a regular file", warn)
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another run has it
                st = os.fstat(fd)
                if st.st_nlink == 0:
                    continue  # another run took it and removed it
                if st.st_nlink != 1:
                    _set_aside(maildrop, name, label, "it has %d links" % st.st_nlink, warn)
                    continue
                try:
                    request, offset = _read_drop_head(fd)
                except DataError as exc:
                    _set_aside(maildrop, name, label, str(exc), warn)
                    continue
                why = None
                if self.drop_max_size and st.st_size - offset > self.drop_max_size:
                    why = "it is %d bytes, over drop_max_size (%s)" % (
                        st.st_size - offset,
                        size_text(self.drop_max_size),
                    )
                drop = Drop(maildrop, name, fd, st, request, offset, why)
            except OSError as exc:
                _warn(warn, "skipping %s in %s: %s" % (shown(name), label, describe_oserror(exc)))
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

    ``deliver(account, proxy, items)`` sends a list of :class:`Item` (each its own envelope, one
    SMTP session for them all) through the account named ``account`` (None: the run's own) and
    ``proxy`` (None: the account's; "" direct), and yields ``(Report, None)`` or ``(None,
    exception)`` for each, in order; an exception raised by the call itself (an account no
    longer configured) is the answer for them all.  The messages are grouped by their envelope's
    account and proxy: one session for each.
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
                groups = {}
                for item in items:
                    groups.setdefault((item.account, item.proxy), []).append(item)
                for (account, proxy), group in groups.items():
                    deferred |= _send(q, group, account, proxy, deliver, now, lifetime, say, warn, env)
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


def _send(q, items, account, proxy, deliver, now, lifetime, say, warn, env):
    """Deliver ``items`` through ``account`` and ``proxy`` and settle each by its answer; whether
    some stay queued."""
    deferred = False
    failure = None
    untried = []  # the session broke before these were tried: a new session sends them at once
    try:
        results = iter(deliver(account, proxy, items))
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
        if exc is not None and exc.untried:
            untried.append(item)
            continue
        deferred |= _settle(q, item, report, exc, now, lifetime, say, warn, env)
    if untried:  # one message the server closed on never holds back the others (each session tries one at least)
        deferred |= _send(q, untried, account, proxy, deliver, now, lifetime, say, warn, env)
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
    fsync_dir(q.q)
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
        envelope.sender,
        rcpts,
        envelope.owner,
        envelope.queued,
        envelope.tries + 1,
        now,
        answer,
        delivered,
        envelope.account,
        envelope.proxy,
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
        fsync_dir(q.failed)
    except OSError as exc:
        raise IOFailure("cannot move %s to %s: %s" % (item.qid, shown(q.failed), describe_oserror(exc))) from None
    kept = "kept in %s and %s" % (shown(where), shown(path)) if path else "kept in %s (%s)" % (shown(where), why)
    return "%s: failed for %s: %s; %s" % (item.qid, ", ".join(rcpts), answer, kept)


# Seconds root's run gives the child writing a user's dead letter (the user may hold its lock).
DEAD_LETTER_SECONDS = 10


def dead_letter(item, undelivered, env=None, wrap=()):
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
            transport.save_dead_letter(path, item.segments, item.sender, undelivered, wrap=wrap)
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
            transport.save_dead_letter(path, item.segments, item.sender, undelivered, wrap=wrap)
            status = 0
        except BaseException as exc:  # everything is said through the pipe, nothing printed
            try:
                os.write(w, str(exc).encode("utf-8", "replace")[:4000])
            except BaseException:
                pass
        finally:
            os._exit(status)
    os.close(w)
    import select
    import signal

    said = b""
    deadline = time.monotonic() + DEAD_LETTER_SECONDS
    try:
        while True:  # the child is the user's (who may lock the file, or stop it): never waited for unbounded
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                said = b"%s was still locked or not written after %d s" % (
                    path.encode("utf-8", "surrogateescape"),
                    DEAD_LETTER_SECONDS,
                )
                break
            data = os.read(r, 4096)
            if not data:
                break
            said += data
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return None, "not in a dead letter: %s" % (said.decode("utf-8", "replace") or "the writer failed")
    return path, None


def dead_letter_of(owner, chunks, sender, undelivered, env=None, wrap=()):
    """:func:`dead_letter` for a message that is not queued (a drop root's run cannot accept):
    ``chunks`` appended to ``owner``'s dead letter, written as that user; ``(path, None)``, or
    ``(None, why)`` when it could not be written.  ``wrap``: see :class:`pipemail.transport.Kept`."""

    class Returned:
        def __init__(self):
            self.envelope = Envelope(sender, list(undelivered), owner, time.time())
            self.segments = chunks
            self.sender = sender

    return dead_letter(Returned(), undelivered, env, wrap=wrap)


# -- listing (-bp, mailq) -------------------------------------------------------------------


class Entry:
    """One message of the listing: ``qid``, ``state`` ("queued", "failed" or "dropped"), ``age``
    (seconds), ``arrival`` (the time it was queued or dropped), ``size`` (bytes), ``sender``,
    ``recipients``, ``tries``, ``answer`` (the last one, or None), ``owner`` (the uid who queued
    or dropped it) and ``locked`` (a queue run is sending it now).  A drop has only its size,
    time and owner (its envelope is worked out when the queue run takes it): sender None,
    recipients [], tries 0."""

    def __init__(
        self,
        qid,
        state,
        age,
        size,
        sender=None,
        recipients=(),
        tries=0,
        answer=None,
        owner=None,
        arrival=None,
        locked=False,
    ):
        self.qid = qid
        self.state = state
        self.age = age
        self.size = size
        self.sender = sender
        self.recipients = list(recipients)
        self.tries = tries
        self.answer = answer
        self.owner = owner
        self.arrival = arrival
        self.locked = locked

    def __repr__(self):
        return "Entry(%r, %r)" % (self.qid, self.state)


def _flocked():
    """The (device, inode) pairs that hold a flock now, from /proc/locks (Linux); empty elsewhere.
    Read rather than tried: a listing that took a lock, even for a moment, could make a queue
    run skip the message."""
    held = set()
    try:
        with open("/proc/locks", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return held
    for line in text.splitlines():
        words = line.split()
        if "FLOCK" not in words or "->" in words:
            continue
        for word in words:
            parts = word.split(":")
            if len(parts) == 3:
                try:
                    held.add((os.makedev(int(parts[0], 16), int(parts[1], 16)), int(parts[2])))
                except ValueError:
                    pass
                break
    return held


def listing(q, now=None):
    """What the queue ``q`` holds: queued, then failed, then dropped (its maildrops, when they can
    be read: root) messages, each oldest first, as :class:`Entry`.  NoPermError when the queue
    cannot be read (a user's queue, for another user); in the system queue, q/ and failed/ are
    0755 and envelopes 0644, so every user lists it (as Postfix's mailq), but reads no message.
    A file of the maildrop without a drop's first line is not listed."""
    now = time.time() if now is None else now
    entries = []
    locks = None
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
                st = os.stat(os.path.join(where, name))
                envelope = read_envelope(os.path.join(where, qid + ".env"))
            except (OSError, DataError):
                continue  # sent meanwhile, torn, or not readable by this user: nothing to list
            if state == "queued" and locks is None:
                locks = _flocked()
            entries.append(
                Entry(
                    qid,
                    state,
                    max(now - envelope.queued, 0),
                    st.st_size,
                    envelope.sender,
                    envelope.recipients,
                    envelope.tries,
                    envelope.answer,
                    envelope.owner,
                    envelope.queued,
                    state == "queued" and (st.st_dev, st.st_ino) in locks,
                )
            )
    for maildrop, _label in q.maildrops():
        try:
            dropped = sorted(n for n in os.listdir(maildrop) if not n.startswith("."))
        except OSError:
            dropped = []
        for name in dropped:
            st = _drop_stat(os.path.join(maildrop, name))
            if st is not None:
                entries.append(
                    Entry(name, "dropped", max(now - st.st_mtime, 0), st.st_size, owner=st.st_uid, arrival=st.st_mtime)
                )
    return entries


def _set_aside(maildrop, name, label, why, warn):
    """Move ``name``, which is no drop (a symlink, a FIFO, a directory, a hard link, a file without
    a drop's first line), from ``maildrop`` to corrupt/ beside it (mode 0700), as Postfix's pickup
    does: said once, then never looked at again (nor followed, nor read).  When it cannot be
    moved it is skipped, and said again by the next run."""
    corrupt = os.path.join(os.path.dirname(maildrop), "corrupt")
    try:
        try:
            os.mkdir(corrupt, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(corrupt)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(errno.EEXIST, "%s is not a directory of this user's" % shown(corrupt))
        target = os.path.join(corrupt, name)
        if os.path.lexists(target):
            target += "." + os.urandom(3).hex()
        os.rename(os.path.join(maildrop, name), target)
    except OSError as exc:
        _warn(warn, "skipping %s in %s: %s (not moved aside: %s)" % (shown(name), label, why, describe_oserror(exc)))
        return
    _warn(warn, "moved %s from %s to %s: %s" % (shown(name), label, shown(corrupt), why))


def _check_dir(path, owner):
    """The lstat of the queue directory ``path``; ConfigError when it is no directory or is not
    ``owner``'s, with what to do."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            "the queue %s is not a directory (a symlink or a file is in the way): not used; remove it "
            "(it is made again), or set queue = DIR in the configuration (pipemail.conf(5))" % shown(path)
        )
    if st.st_uid != owner:
        raise ConfigError(
            "the queue %s is owned by uid %d, not by %s (uid %d): not used; give it to uid %d "
            "(chown -R %d %s), or remove it (it is made again)"
            % (shown(path), st.st_uid, "root" if owner == 0 else "this user", owner, owner, owner, shown(path))
        )
    return st


def _drop_stat(path):
    """The stat of the drop at ``path`` when it is one (a regular file with one link whose first
    line is a drop's), else None: junk in the maildrop is no mail."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        if os.pread(fd, len(DROP_MAGIC), 0) != DROP_MAGIC:
            return None
        return st
    except OSError:
        return None
    finally:
        os.close(fd)


HEADING = "%-11s %8s %-20s %s" % ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")


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
    """The lines ``pysendmail -bp`` (mailq) prints for ``entries``, in the shape of Postfix's
    mailq (so that scripts written for it work): a heading; for each message its ID (followed
    by ``*`` when a queue run is sending it, ``!`` when it failed), size, arrival time and
    sender, then the last answer in parentheses with the number of tries, then each recipient,
    indented; a blank line between messages; a trailer "-- N Kbytes in M Requests.".  A drop
    says "(maildrop queue, sender UID N)".  "Mail queue is empty" when there is none."""
    if not entries:
        return ["Mail queue is empty"]
    lines = [HEADING]
    total = 0
    for n, e in enumerate(entries):
        if n:
            lines.append("")
        mark = "*" if e.locked else "!" if e.state == "failed" else " "
        when = time.asctime(time.localtime(e.arrival if e.arrival is not None else 0))
        if e.state == "dropped":
            lines.append("%-10s%s %8d %20.20s (maildrop queue, sender UID %s)" % (e.qid, mark, e.size, when, e.owner))
        else:
            lines.append("%-10s%s %8d %20.20s %s" % (e.qid, mark, e.size, when, e.sender or "MAILER-DAEMON"))
            if e.answer:
                tried = "once" if e.tries == 1 else "%d times" % e.tries
                reason = "tried %s: %s" % (tried, " ".join(e.answer.split()))
                lines.append("%*s(%s)" % (max(76 - len(reason), 0), "", reason))
            lines += ["%42s%s" % ("", r) for r in e.recipients]
        total += e.size
    count = len(entries)
    lines += ["", "-- %d Kbytes in %d Request%s." % (total // 1024, count, "" if count == 1 else "s")]
    return lines


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


__all__ = [
    "LIFETIME",
    "Queue",
    "Item",
    "Drop",
    "Envelope",
    "Entry",
    "default_dir",
    "drop_limit",
    "fallback",
    "size_text",
    "DROP_MAX_SIZE",
    "backoff",
    "new_id",
    "run",
    "permanent",
    "dead_letter",
    "read_envelope",
    "listing",
    "format_listing",
]
