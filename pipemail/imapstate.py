"""What pypop fetched over IMAP, per account and folder: UIDVALIDITY, UIDs, and an index.

Two files per folder, in the account's state directory (:func:`account_dir`:
``$XDG_STATE_HOME/pipemail/imap/USER@HOST_PORT/``, ``~/.local/state`` without it):

``NAME.state``
    UIDVALIDITY, ``last`` (every UID up to it is settled: stored, or known to be
    stored), ``extra`` (settled UIDs above ``last``) and ``volatile`` (settled UIDs that
    went only to a sink that cannot be flushed to disk, standard output: never deleted
    or moved on their account), rewritten whole on every
    checkpoint: a temporary file, fsync, rename, fsync of the directory.  A reader
    never sees half of it.

``NAME.index``
    one line per settled message, appended and fsynced before the state is
    rewritten: ``UIDVALIDITY UID SIZE KEY``.  SIZE is RFC822.SIZE (the message with
    CRLF line ends, as the server counts it); KEY is the Message-ID, or for a
    message without one the SHA-256 of its header (:func:`message_key`), after
    ``volatile:`` when the message went only to standard output (see ``volatile``
    above; such a line is never matched after a UIDVALIDITY change).  The
    index is the journal: lines past the checkpoint recorded in the state (a run
    killed between the two writes) are settled when the state is loaded.  And it
    is what survives a change of UIDVALIDITY: a server that renumbers a folder
    makes every UID meaningless, but KEY and SIZE still say which of its
    messages were stored before (:meth:`FolderState.matcher`), so none is fetched
    twice, where getmail6 fetches the whole folder again.

The caller holds the account's lock (one pypop per account, e.g. :func:`pipemail.pop3.lock` on
a file in :func:`account_dir`) while it uses these.

Use::

    st = FolderState(account_dir(user, host, port), "Entwürfe")
    changed = st.begin(uidvalidity)             # the former UIDVALIDITY (say so), or None
    if st.up_to_date(uidnext) and not st.recovering:
        return                                  # UIDNEXT says nothing new: no UID SEARCH
    todo = st.new(uids_on_server)               # uid > last, not settled (n:* always holds the top UID)
    if st.recovering:                           # after a change: RFC822.SIZE and the key of todo first
        match = st.matcher()                    # (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)], and for those
        known = [Stored(u, size, key)           #  without one, of a size in match.hashed_sizes(),
                                                #  BODY.PEEK[HEADER]: message_key(header))
                 for u, size, key in headers if match.take(key, size)]
        st.stored(known)                        # settled without fetching them
    ...store a batch, fsync it...
    st.stored([Stored(uid, size, message_key(header)), ...])   # then flags or deletes may follow
    st.finish_recovery()                        # once every UID of todo was offered

A UID of ``todo`` that is not passed to :meth:`FolderState.stored` (too big, a failed MDA, a run
stopped by SIGTERM) keeps ``last`` below it, so it is offered again by the next run; UIDs stored
above it wait in ``extra``.  The index is read whole only on a first run without a state file and
while recovering from a UIDVALIDITY change (:meth:`FolderState.matcher`: about 220 bytes of memory
per message stored); a normal run only appends to it.
"""

import hashlib
import os
import re
from collections import Counter
from typing import NamedTuple

from pipemail.errors import DataError, IOFailure, describe_oserror, shown

__all__ = [
    "HASHED",
    "KEY_HEADER",
    "FolderState",
    "Matcher",
    "Stored",
    "account_dir",
    "canonical",
    "folder_stem",
    "message_id",
    "message_key",
]

MAGIC = "pipemail-imap-state 1"
KEY_HEADER = 1 << 16  # bytes of a header (LF) that name a message without a Message-ID
HASHED = "header-sha256:"
VOLATILE = "volatile:"  # before the key of an index line whose message went only to standard output


class Stored(NamedTuple):
    """One settled message: its UID, its RFC822.SIZE (CRLF) and its key (:func:`message_key`)."""

    uid: int
    size: int
    key: str


def account_dir(user, host, port, env=None):
    """The state directory of ``user`` at ``host``:``port`` (not created here)."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    name = "%s@%s_%d" % (user or "-", host, port)
    name = "".join(c if c.isalnum() or c in "@._-" else "_" for c in name)
    return os.path.join(base, "pipemail", "imap", name)


def canonical(folder):
    """``folder`` as one name: ``inbox``, ``Inbox``... are ``INBOX`` (case-insensitive, RFC 3501)."""
    return "INBOX" if folder.upper() == "INBOX" else folder


def folder_stem(folder):
    """The file name stem for ``folder`` (the name as the user writes it): its modified UTF-7
    form made safe for a file name, then 8 hex digits of a hash of the exact name (so
    ``a/b`` and ``a_b`` never share files).  ``INBOX`` in any case is INBOX (RFC 3501)."""
    from pipemail import utf7

    folder = canonical(folder)
    wire = utf7.encode(folder)
    safe = "".join(c if c.isalnum() or c in "@._-&," else "_" for c in wire)[:80] or "_"
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return "%s.%s" % (safe, hashlib.sha256(folder.encode("utf-8")).hexdigest()[:8])


_FIELD = re.compile(rb"(?im)^message-id[ \t]*:((?:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*))")
_MSGID = re.compile(rb"<[^<>\s]*>")


def message_id(header):
    """The Message-ID of a header block (bytes: the whole header, or the
    ``BODY[HEADER.FIELDS (MESSAGE-ID)]`` literal), unfolded, ``<...>`` included; or None."""
    end = re.search(rb"\r?\n\r?\n", header)
    m = _FIELD.search(header, 0, end.start() + 1 if end else len(header))
    if m is None:
        return None
    value = re.sub(rb"\s+", b" ", m.group(1)).strip()
    token = _MSGID.search(value)
    value = token.group(0) if token else value.split(b" ")[0]
    return value.decode("utf-8", "surrogateescape") or None


def message_key(header):
    """The key that names a message in the index: its Message-ID, else ``header-sha256:``
    and the SHA-256 of its header (line ends as LF, up to the blank line, at most its first
    :data:`KEY_HEADER` bytes).  ``header`` is the start of the message (at least
    :data:`KEY_HEADER` bytes of it, or all of it, with LF or CRLF line ends: a stored message's
    first bytes read ahead), or what ``BODY.PEEK[HEADER]`` gives (also cut after twice
    :data:`KEY_HEADER` bytes): the same key, however long the header."""
    mid = message_id(header)
    if mid is not None:
        return mid
    head = header.replace(b"\r\n", b"\n")
    end = head.find(b"\n\n")
    if end >= 0:
        head = head[: end + 1]
    return HASHED + hashlib.sha256(head[:KEY_HEADER]).hexdigest()


class Matcher:
    """Which messages of a renumbered folder were stored before: :meth:`take` answers once for
    each stored copy (a message stored twice before is recognised twice, not a third time)."""

    def __init__(self, counts):
        self._counts = counts

    def take(self, key, size):
        """True (and one copy used up) if a message with ``key`` and ``size`` was stored."""
        k = (key, size)
        if self._counts.get(k, 0) > 0:
            self._counts[k] -= 1
            return True
        return False

    def __len__(self):
        return sum(n for n in self._counts.values() if n > 0)

    def hashed_sizes(self):
        """The sizes of the messages left to recognise that had no Message-ID (their key is the
        header's hash): only a message of one of these sizes needs its header read."""
        return {size for (key, size), n in self._counts.items() if n > 0 and key.startswith(HASHED)}


class FolderState:
    """The fetch state of one folder of one account (see the module's docstring)."""

    def __init__(self, directory, folder):
        self.directory = directory
        self.folder = canonical(folder)
        stem = folder_stem(folder)
        self.state_path = os.path.join(directory, stem + ".state")
        self.index_path = os.path.join(directory, stem + ".index")
        self.uidvalidity = None
        self.last = 0
        self.extra = set()
        self.volatile = set()  # settled UIDs stored only where nothing is flushed to disk (stdout)
        self.recovering = False
        self._checkpoint = 0  # bytes of the index the state covers
        self._offered = []
        self._tail_checked = False
        self._replayed = False
        self._load()

    # -- reading ------------------------------------------------------------------------

    def _load(self):
        try:
            with open(self.state_path, "rb") as f:
                text = f.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise IOFailure("cannot read %s: %s" % (shown(self.state_path), describe_oserror(exc))) from None
        if text is not None:
            self._parse(text)
        if self.uidvalidity is None:
            return
        size = self._index_size()
        if size < self._checkpoint:  # the index was cut or compacted after the checkpoint
            self._checkpoint = size
        elif size > self._checkpoint:  # a run stopped between its two writes: settle what it recorded
            for v, uid, _size, key in self._index_lines(self._checkpoint):
                if v == self.uidvalidity and uid > self.last:
                    self.extra.add(uid)
                    self._replayed = True
                if v == self.uidvalidity:
                    self._mark(uid, key)

    def _parse(self, text):
        lines = text.split("\n")
        bad = DataError(
            "%s is not a state file pypop can read; move it away to fetch the folder as new" % shown(self.state_path)
        )
        if not lines or lines[0] != MAGIC or not text.endswith("\n"):
            raise bad
        fields = {}
        for line in lines[1:-1]:
            key, _, value = line.partition(" ")
            fields[key] = value
        try:
            self.uidvalidity = int(fields["uidvalidity"])
            self.last = int(fields["last"])
            self.extra = _parse_ranges(fields.get("extra", ""))
            self.volatile = _parse_ranges(fields.get("volatile", ""))
            self._checkpoint = int(fields["index"])
            self.recovering = fields.get("recovering", "0") == "1"
        except (KeyError, ValueError):
            raise bad from None
        if self.uidvalidity <= 0 or self.last < 0 or self._checkpoint < 0:
            raise bad

    def _index_size(self):
        """The index's bytes up to its last newline (a torn last line does not count)."""
        try:
            fd = os.open(self.index_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise IOFailure("cannot read %s: %s" % (shown(self.index_path), describe_oserror(exc))) from None
        try:
            return _whole_end(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def _index_lines(self, start=0):
        """``(uidvalidity, uid, size, key)`` of each whole line from ``start`` on (a torn last line,
        without its newline, is no line; an unreadable one is skipped)."""
        try:
            f = open(self.index_path, "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure("cannot read %s: %s" % (shown(self.index_path), describe_oserror(exc))) from None
        with f:
            f.seek(start)
            for line in f:
                if not line.endswith(b"\n"):
                    break
                parts = line[:-1].split(b" ", 3)
                if len(parts) != 4:
                    continue
                try:
                    v, uid, size = int(parts[0]), int(parts[1]), int(parts[2])
                except ValueError:
                    continue
                yield v, uid, size, parts[3].decode("utf-8", "surrogateescape")

    # -- the run ------------------------------------------------------------------------

    def begin(self, uidvalidity):
        """Start a run on a folder whose UIDVALIDITY is ``uidvalidity``. Returns None, or the
        former UIDVALIDITY when it changed: then every UID recorded is void (``last`` 0, no
        ``extra``), and :attr:`recovering` is set until :meth:`finish_recovery` (new messages
        are first matched against the index by :meth:`matcher`)."""
        uidvalidity = int(uidvalidity)
        if uidvalidity <= 0:
            raise DataError("the server gave folder %s UIDVALIDITY %d, not a UIDVALIDITY" % (self.folder, uidvalidity))
        if self.uidvalidity is None:  # a first run, or a state file lost: the index still tells
            self.uidvalidity = uidvalidity
            for v, uid, _size, key in self._index_lines():
                if v == uidvalidity:
                    self.extra.add(uid)
                    self._mark(uid, key)
                else:
                    self.recovering = True
            self._checkpoint = self._index_size()
            self._save()
            return None
        if self.uidvalidity == uidvalidity:
            if self._replayed:
                self._checkpoint = self._index_size()
                self._save()
                self._replayed = False
            return None
        old = self.uidvalidity
        self.uidvalidity = uidvalidity
        self.last = 0
        self.extra = set()
        self.volatile = set()
        self._offered = []
        self.recovering = True
        self._checkpoint = self._index_size()
        self._save()
        return old

    def new(self, uids):
        """The UIDs of ``uids`` (the server's, any order) not settled yet, ascending: above
        ``last`` (``UID SEARCH n:*`` always answers the highest UID, even when it is below n)
        and not in ``extra``. They are the run's offer: ``last`` moves over them only as
        each is settled in turn, so one left behind (too big, failed) is offered again."""
        todo = sorted({int(u) for u in uids if int(u) > self.last and int(u) not in self.extra})
        self._offered = todo
        return list(todo)

    def up_to_date(self, uidnext):
        """Whether a folder whose SELECT gave ``uidnext`` (UIDNEXT) can hold nothing new: every
        UID the server can have assigned is at most ``last``. Saves the ``UID SEARCH``."""
        return self.uidvalidity is not None and int(uidnext) <= self.last + 1

    def matcher(self):
        """A :class:`Matcher` over what was stored under former UIDVALIDITYs, less what is
        settled under the current one (for a key, the most copies any one former
        UIDVALIDITY saw)."""
        per = {}
        now = Counter()
        for v, _uid, size, key in self._index_lines():
            if key.startswith(VOLATILE):  # went to a pipe only: if it is there, fetch it again
                continue
            if v == self.uidvalidity:
                now[(key, size)] += 1
            else:
                per.setdefault(v, Counter())[(key, size)] += 1
        counts = Counter()
        for c in per.values():
            for k, n in c.items():
                counts[k] = max(counts[k], n)
        counts.subtract(now)
        return Matcher(counts)

    def stored(self, entries, durable=True):
        """Settle ``entries`` (:class:`Stored`): stored (and flushed) by this run, or known
        from the index. Appends them to the index (fsync), then rewrites the state.

        ``durable`` false: they went where nothing can be flushed to disk (standard output);
        they are settled (not fetched again) but kept in :attr:`volatile`, recorded in the
        state before the index names them, so that no later run deletes or moves them as
        stored.  A durable store of a volatile UID (``--all`` into an mbox) clears it."""
        entries = list(entries)
        if self.uidvalidity is None:
            raise RuntimeError("FolderState.stored() before begin()")
        if not entries:
            return
        uids = {e.uid for e in entries}
        if not durable and not uids <= self.volatile:
            self.volatile |= uids
            self._save()
        elif durable:
            self.volatile -= uids
        lines = []
        for e in entries:
            key = (e.key or "-").replace("\r", " ").replace("\n", " ")
            if not durable:  # so that the index alone still tells (a lost state file)
                key = VOLATILE + key
            lines.append(b"%d %d %d %s\n" % (self.uidvalidity, e.uid, e.size, key.encode("utf-8", "surrogateescape")))
        self._append(b"".join(lines))
        settled = self.extra | {e.uid for e in entries}
        for uid in sorted(settled.union(self._offered)):  # UIDs neither offered nor settled do not exist
            if uid <= self.last:
                continue
            if uid not in settled:
                break
            self.last = max(self.last, uid)
        self.extra = {u for u in settled if u > self.last}
        self._save()

    def _mark(self, uid, key):
        """The volatile set as an index line about ``uid`` says (the last line about it wins)."""
        if key.startswith(VOLATILE):
            self.volatile.add(uid)
        else:
            self.volatile.discard(uid)

    def finish_recovery(self):
        """End the recovery from a UIDVALIDITY change: the index keeps only the lines of the
        current UIDVALIDITY (what the former ones name and was not found is gone from the server)."""
        if not self.recovering:
            return
        data = b"".join(
            b"%d %d %d %s\n" % (v, uid, size, key.encode("utf-8", "surrogateescape"))
            for v, uid, size, key in self._index_lines()
            if v == self.uidvalidity
        )
        self._replace(self.index_path, data)
        self.recovering = False
        self._checkpoint = len(data)
        self._tail_checked = True
        self._save()

    # -- writing ------------------------------------------------------------------------

    def _mkdir(self):
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise IOFailure("cannot create %s: %s" % (shown(self.directory), describe_oserror(exc))) from None

    def _append(self, data):
        self._mkdir()
        try:
            fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if not self._tail_checked:
                    end = _cut_torn_tail(fd, end)
                    self._tail_checked = True
                os.lseek(fd, end, os.SEEK_SET)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if end == 0:
                _fsync_dir(self.directory)
        except OSError as exc:
            raise IOFailure("cannot write %s: %s" % (shown(self.index_path), describe_oserror(exc))) from None
        self._checkpoint = end + len(data)

    def _save(self):
        text = "%s\nfolder %s\nuidvalidity %d\nlast %d\nextra %s\nindex %d\nrecovering %d\n" % (
            MAGIC,
            _one_line(self.folder),
            self.uidvalidity,
            self.last,
            _format_ranges(self.extra),
            self._checkpoint,
            1 if self.recovering else 0,
        )
        if self.volatile:
            text += "volatile %s\n" % _format_ranges(self.volatile)
        self._replace(self.state_path, text.encode("utf-8", "surrogateescape"))

    def _replace(self, path, data):
        import tempfile

        self._mkdir()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        except OSError as exc:
            raise IOFailure("cannot write %s: %s" % (shown(path), describe_oserror(exc))) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(self.directory)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise IOFailure("cannot write %s: %s" % (shown(path), describe_oserror(exc))) from None


def _one_line(text):
    return text.replace("\r", " ").replace("\n", " ")


def _cut_torn_tail(fd, end):
    """Cut a last line without its newline (an append torn by a crash); the new end."""
    keep = _whole_end(fd, end)
    if keep != end:
        os.ftruncate(fd, keep)
    return keep


def _whole_end(fd, end):
    """The offset just after the last newline before ``end`` (0 if none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            keep = start + i + 1
            break
        pos = start
    else:
        keep = 0
    return keep


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _format_ranges(uids):
    out = []
    run = None
    for u in sorted(uids):
        if run and u == run[1] + 1:
            run[1] = u
        else:
            if run:
                out.append(run)
            run = [u, u]
    if run:
        out.append(run)
    return ",".join("%d" % a if a == b else "%d-%d" % (a, b) for a, b in out) or "-"


def _parse_ranges(text):
    uids = set()
    if text in ("", "-"):
        return uids
    for part in text.split(","):
        a, sep, b = part.partition("-")
        lo, hi = int(a), int(b) if sep else int(a)
        if lo <= 0 or hi < lo:
            raise ValueError(part)
        uids.update(range(lo, hi + 1))
    return uids
