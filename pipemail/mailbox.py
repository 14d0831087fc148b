"""The mailbox layer: the one place that writes (and, next, reads) mbox files and Maildirs.

pypop's ``--mbox`` and ``--maildir``, pymail's ``mbox:`` and ``maildir:``
transports, its dead letter and ``pymail --resend`` go through this module.
Every message goes as a stream of byte chunks, read one at a time, never held
whole:

- :func:`mbox_chunks` frames a message for an mbox (``From `` line, mboxrd
  quoting by :func:`quoted`, correct across chunk boundaries, final blank line).
- :func:`deliver_maildir` writes a message to tmp/, flushes it to disk and
  renames it into new/, leaving nothing in tmp/ when it fails.

- :func:`lock` takes an fcntl lock on the mailbox, then a dot-lock
  (``PATH.lock``, created by link(2) from a file that already holds the
  owner's PID and host name, as liblockfile writes it).  A dot-lock whose
  owner is gone (its PID no longer exists on this host), or that is older
  than :data:`STALE_AFTER` seconds and names no owner on this host, is
  broken at once, with a warning.  A live one is waited for :data:`WAIT`
  seconds; then the writer goes on under the fcntl lock alone, with a
  warning.
- :func:`append` writes one message (bytes or chunks) at the end, after the newlines needed
  for its ``From `` line to follow a blank line (a file whose last append was
  cut short by a kill ends mid-line), and cuts its own bytes away again if
  the write fails; SIGTERM and SIGINT wait until it is written whole.
- :class:`Pending` is pypop's record of a batch being appended: what it
  wrote, block by block, so that a run killed in the middle can be settled
  later by removing exactly its own torn bytes, and only when the file still
  ends with them.

Reading, as streams too:

- :func:`mbox_messages` splits an mbox read forward only (standard input included) into
  messages, each an iterator of chunks, with the one split rule and mboxrd unquoting.
- :func:`maildir_messages` opens the messages of a Maildir one at a time, in delivery order.
- :func:`iter_messages` turns what a user names (mbox files, Maildirs, single messages,
  other files, standard input) into :class:`MailInput` items, each a message or a text that
  is no mail, as a stream; :func:`classify` tells which an input is from its first bytes.
"""

import io
import os
import re
import stat

from pipemail.errors import CantCreateError, IOFailure, NoInputError, describe_oserror, shown

STALE_AFTER = 300  # seconds: a dot-lock this old whose owner cannot be checked is stale (liblockfile)
WAIT = 10.0  # seconds a live dot-lock is waited for
PAGE = 4096  # blocks of the pending record end at multiples of this file offset ...
CHUNK = 1 << 16  # ... and so do the write calls, of at most this many bytes each

_held = set()  # the dot-locks this process holds: one that names this PID and is not here is stale


# -- the bytes of a message ------------------------------------------------------------------


_QUOTABLE = re.compile(rb"^(?=>*From )", re.MULTILINE)  # a place to put one more ">" (a literal: no template)
_MAY_BECOME_QUOTABLE = re.compile(rb">*(?:F(?:r(?:o(?:m)?)?)?)?")  # the start of a line that may yet be a From_


def mbox_chunks(chunks, sender, extra_headers=()):
    """One mbox message as a stream: the ``From `` line, ``extra_headers``, the message's
    ``chunks`` mboxrd-quoted (:func:`quoted`), a blank line.  Chunks are read one at a time."""
    import time

    yield b"From %s %s\n" % (
        sender.encode("utf-8", "surrogateescape") or b"MAILER-DAEMON",
        time.asctime(time.gmtime()).encode(),
    )
    head = b"".join(b"%s: %s\n" % (n.encode(), v.encode("utf-8", "surrogateescape")) for n, v in extra_headers)
    if head:
        yield head
    yield from quoted(chunks)
    yield b"\n"


def mbox_bytes(segments, sender, extra_headers=()):
    """One mbox message in one buffer (see :func:`mbox_chunks`): for what is small."""
    return b"".join(mbox_chunks(segments, sender, extra_headers))


def quoted(chunks):
    """A message given as byte ``chunks`` (cut anywhere), mboxrd-quoted: every line that starts
    with ``From ``, after any number of ``>``, gets one ``>`` more.  Correct across chunk
    boundaries: the start of a line that may still become such a line (``>>Fr``) is held back
    until the next chunk decides.  The last chunk yielded ends with a newline (one is added
    to a message without it)."""
    carry = b""  # the start of a line, not yet known to be quotable or not
    mid = False  # the next byte continues a line already yielded: it is no line start
    last = b"\n"
    for chunk in chunks:
        if not chunk:
            continue
        if mid:
            nl = chunk.find(b"\n")
            if nl < 0:
                yield chunk
                last = chunk
                continue
            yield chunk[: nl + 1]
            last, mid = b"\n", False
            chunk = chunk[nl + 1 :]
            if not chunk:
                continue
        data = carry + chunk if carry else chunk
        carry = b""
        cut = data.rfind(b"\n") + 1
        body, tail = data[:cut], data[cut:]
        if body:
            yield _QUOTABLE.sub(b">", body) if b"From " in body else body
            last = body
        if tail:
            if _MAY_BECOME_QUOTABLE.fullmatch(tail):
                carry = tail
            else:
                tail = _QUOTABLE.sub(b">", tail)
                yield tail
                last, mid = tail, True
    if carry:
        yield carry
        last = carry
    if not last.endswith(b"\n"):
        yield b"\n"


def quote(seg, at_start=True):
    """``From `` lines of one buffer quoted one level more (mboxrd); ``seg`` may begin mid-line
    (``at_start`` false).  For a stream, :func:`quoted`."""
    if b"From " not in seg:  # nothing to quote: most messages (the regex costs 30 us a 10 KB message)
        return seg
    if at_start:
        return _QUOTABLE.sub(b">", seg)
    nl = seg.find(b"\n")
    if nl < 0:
        return seg
    return seg[: nl + 1] + _QUOTABLE.sub(b">", seg[nl + 1 :])


def separator(fd, end=None):
    """The newlines to write at ``end`` (the file's size) of ``fd`` so that a ``From `` line
    written next follows a blank line: none for an empty file or one ending in a blank line."""
    if end is None:
        end = os.fstat(fd).st_size
    if end == 0:
        return b""
    tail = os.pread(fd, 2, max(end - 2, 0))
    if tail.endswith(b"\n\n") or (tail == b"\n" and end == 1):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


# -- reading ---------------------------------------------------------------------------------

READ_BLOCK = 1 << 20  # an mbox is read this much at a time
MAX_FROM_LINE = 1 << 16  # a From_ line longer than this is cut (the rest is dropped)
_UNQUOTE = re.compile(rb"^>(?=>*From )", re.MULTILINE)


def mbox_messages(stream, label="mbox"):
    """The messages of the mbox ``stream`` (binary, read forward only), one at a time, as
    ``(from_line, chunks)``: the ``From `` line without its newline, and the message's
    bytes as an iterator of chunks of at most about :data:`READ_BLOCK` bytes, unquoted
    one level (mboxrd: ``>From `` becomes ``From ``, ``>>From `` becomes ``>From ``).

    The one rule for where a message ends, the one pipemail's writers keep: before a line
    that starts with ``From `` and follows a blank line (or begins the file); that blank
    line ends the message and is not part of it.  A ``From `` line that follows no blank
    line is a line of the body (mboxo writers leave such lines unquoted).

    ``chunks`` is valid until the next message is asked for (what is not read of it is
    skipped then).  Memory stays bounded whatever the size of the mbox or of a line.  An
    empty stream has no messages; one that does not begin with ``From `` is a DataError;
    a read that fails is an IOFailure."""
    reader = _MboxReader(stream, label)
    reader.fill(5)
    if not reader.buf:
        return
    if not reader.buf.startswith(b"From "):
        from pipemail.errors import DataError

        raise DataError("%s: not an mbox (it does not begin with a 'From ' line)" % label)
    while True:
        from_line = reader.from_line()
        if from_line is None:
            return
        body = reader.body()
        yield from_line, body
        for _chunk in body:  # what the caller did not read
            pass


class _MboxReader:
    """The state of :func:`mbox_messages`: ``buf`` holds bytes not yet given out, from a line start."""

    def __init__(self, stream, label):
        self.read = stream.read
        self.label = label
        self.buf = bytearray()
        self.eof = False
        self.at_separator = True  # buf begins with the From_ line of the next message

    def fill(self, want=None):
        """Read until ``buf`` holds ``want`` bytes (a block) or the stream ends; False if nothing more came."""
        got = False
        want = READ_BLOCK if want is None else want
        while len(self.buf) < want and not self.eof:
            try:
                data = self.read(READ_BLOCK)
            except OSError as exc:
                raise IOFailure("cannot read %s: %s" % (self.label, describe_oserror(exc))) from None
            if not data:
                self.eof = True
                break
            self.buf += data
            got = True
        return got

    def from_line(self):
        """The next message's From_ line (None at the end), taken out of ``buf``."""
        if not self.at_separator:
            return None
        while True:
            nl = self.buf.find(b"\n", 0, MAX_FROM_LINE)
            if nl >= 0 or len(self.buf) >= MAX_FROM_LINE or not self.fill(len(self.buf) + READ_BLOCK):
                break
        if not self.buf:
            return None
        if nl < 0:  # cut at MAX_FROM_LINE, or the file ends in it
            line = bytes(self.buf[:MAX_FROM_LINE])
            del self.buf[:MAX_FROM_LINE]
            self._skip_line()
            return line
        line = bytes(self.buf[:nl])
        del self.buf[: nl + 1]
        return line

    def _skip_line(self):
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                del self.buf[: nl + 1]
                return
            self.buf.clear()
            if not self.fill():
                return

    def body(self):
        """The current message's bytes, unquoted, up to its end (see :func:`mbox_messages`)."""
        self.at_separator = False
        held = False  # a blank line read and not given out: the message's end, if a From_ line follows
        mid = False  # buf begins inside a line already partly given out
        need = None
        while True:
            self.fill(need)
            need = None
            buf = self.buf
            if not buf:  # the end of the mbox: a held blank line was the last message's end
                return
            if mid:
                nl = buf.find(b"\n")
                cut = len(buf) if nl < 0 else nl + 1
                piece = bytes(buf[:cut])
                del buf[:cut]
                mid = nl < 0
                yield piece
                continue
            if held and buf.startswith(b"From "):
                self.at_separator = True
                return
            if held:
                if len(buf) < 5 and not self.eof and b"From "[: len(buf)] == bytes(buf):
                    need = 5  # too little to tell yet
                    continue
                yield b"\n"
                held = False
            if buf.startswith(b"\nFrom "):  # a blank line, then the next message
                del buf[:1]
                self.at_separator = True
                return
            sep = buf.find(b"\n\nFrom ")
            if sep >= 0:  # the message ends with its line before the blank one
                piece = bytes(buf[: sep + 1])
                del buf[: sep + 2]
                self.at_separator = True
                if piece:
                    yield _unquoted(piece)
                return
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # no whole line in a full block, or the end of the mbox
                if not self.eof and len(buf) < READ_BLOCK:
                    need = READ_BLOCK
                    continue
                if not self.eof and len(buf) < MAX_FROM_LINE and _MAY_BECOME_QUOTABLE.fullmatch(buf):
                    need = len(buf) + READ_BLOCK  # ">>Fro": whether it is unquoted waits for more
                    continue
                piece = bytes(buf)
                buf.clear()
                mid = not self.eof
                yield _unquoted(piece)
                continue
            if buf[cut - 1 : cut] == b"\n" and (cut == 1 or buf[cut - 2 : cut - 1] == b"\n"):
                piece = bytes(buf[: cut - 1])  # the last whole line is blank: held
                held = True
            else:
                piece = bytes(buf[:cut])
            del buf[:cut]
            if piece:
                yield _unquoted(piece)


def _unquoted(piece):
    if b">" not in piece:
        return piece
    return _UNQUOTE.sub(b"", piece)


class ChunkStream(io.RawIOBase):
    """A readable binary stream over an iterator of byte chunks (:func:`mbox_messages`'s, a message
    being composed), for code that wants a file object; read forward only."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._left = b""

    def readable(self):
        return True

    def readinto(self, b):
        while not self._left:
            try:
                self._left = memoryview(next(self._chunks))  # sliced without copying
            except StopIteration:
                return 0
        n = min(len(b), len(self._left))
        b[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


# -- locking ---------------------------------------------------------------------------------


class Locked:
    """A mailbox held locked: ``fd`` open read-write (appending), ``dotlock`` the path of the
    dot-lock taken, or None when the writer went on without one."""

    def __init__(self, path, fd, dotlock):
        self.path = path
        self.fd = fd
        self.dotlock = dotlock


def lock(path, *, create=True, warn=None, wait=WAIT):
    """Open the mbox ``path`` (created 0600 when ``create``) and lock it: fcntl, then the dot-lock.

    If the file was replaced while we waited for the fcntl lock (``pymail --resend``
    rewrites the dead letter), the new file is opened and locked instead.
    Raises CantCreateError (or, when not ``create``, NoInputError) when it cannot be opened.
    """
    import fcntl

    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if create:
                raise CantCreateError("cannot write mailbox %s: %s" % (_shown(path), describe_oserror(exc))) from None
            from pipemail.errors import NoInputError

            raise NoInputError("cannot read %s: %s" % (_shown(path), describe_oserror(exc))) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)  # /dev/null (DEAD=/dev/null) takes no dot-lock
        dl = dotlock(os.fsdecode(path) + ".lock", warn=warn, wait=wait) if regular else None
    except BaseException:
        os.close(fd)
        raise
    return Locked(path, fd, dl)


def unlock(locked):
    """Remove the dot-lock (if one was taken), then close the file (which drops the fcntl lock)."""
    try:
        if locked.dotlock is not None:
            _held.discard(locked.dotlock)
            try:
                os.unlink(locked.dotlock)
            except FileNotFoundError:
                pass
    finally:
        os.close(locked.fd)


def boot_id():
    """This boot of the host (Linux's /proc/sys/kernel/random/boot_id), or None where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).strip() or None
    except OSError:
        return None


def owner_text():
    """What a dot-lock of ours holds: the PID in ASCII (as liblockfile writes it), the host name,
    and the boot id when the host has one (a PID from before a reboot names no owner)."""
    import socket

    text = b"%d\n%s\n" % (os.getpid(), socket.gethostname().encode("utf-8", "replace"))
    boot = boot_id()
    return text + b"%s\n" % boot if boot else text


def dotlock(lockpath, *, warn=None, wait=WAIT):
    """Create the dot-lock ``lockpath``; its path, or None if it could not be had.

    A stale one is broken (see :func:`stale`) and ``warn`` told so; a live one is
    waited for ``wait`` seconds, then None (with a warning).  A directory where
    no lock can be created (a mail spool we may not write) also gives None.
    """
    import time

    tmp = "%s.%d.tmp" % (lockpath, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        return None
    try:
        try:
            os.write(fd, owner_text())
        finally:
            os.close(fd)
        deadline = time.monotonic() + wait
        holder = None
        while True:
            try:
                os.link(tmp, lockpath)
                _held.add(lockpath)
                return lockpath
            except FileExistsError:
                pass
            except OSError:  # no hard links here (some FUSE and FAT file systems): create it in place
                if _create(lockpath):
                    return lockpath
                if not os.path.lexists(lockpath):
                    return None
            why, holder, seen = _examine(lockpath)
            if why is not None and _break(lockpath, why, seen, warn):
                continue
            if time.monotonic() >= deadline:
                if warn:
                    warn(
                        "%s is held by %s; went on after %g s under the fcntl lock alone"
                        % (_shown(lockpath), holder or "another program", wait)
                    )
                return None
            time.sleep(0.05)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _create(lockpath):
    try:
        fd = os.open(lockpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        return False
    try:
        os.write(fd, owner_text())
    finally:
        os.close(fd)
    _held.add(lockpath)
    return True


def stale(lockpath, now=None):
    """``(why, holder)``: why the dot-lock is stale (None when it is live or gone), and who holds it.

    Stale: its owner's PID (first line, in ASCII) no longer exists on this host (the
    second line, when there is one, names the host); or, when it names no owner that
    can be checked here, it is older than STALE_AFTER seconds.
    """
    why, holder, _seen = _examine(lockpath, now)
    return why, holder


def _examine(lockpath, now=None):
    import socket
    import time

    try:
        with open(lockpath, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read(512)
    except OSError:
        return None, None, None
    seen = (st.st_ino, st.st_mtime_ns)
    lines = text.split(b"\n")
    try:
        pid = int(lines[0].strip(b"\0 \t") or b"0")
    except ValueError:
        pid = 0
    host = lines[1].strip().decode("utf-8", "replace") if len(lines) > 1 and lines[1].strip() else None
    here = host is None or host == socket.gethostname()
    holder = "process %d" % pid if pid > 0 else None
    if holder and host and not here:
        holder += " on %s" % host
    if pid > 0 and here:
        boot = lines[2].strip() if len(lines) > 2 else b""
        if boot and boot_id() not in (None, boot):
            return "its owner, process %d, ran before the host was last started" % pid, holder, seen
        if pid == os.getpid():
            if lockpath in _held:
                return None, holder, seen
            return "it names this process, which did not take it", holder, seen  # a PID used again
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "its owner, process %d, is gone" % pid, holder, seen
        except OSError:
            pass  # EPERM: it exists
        return None, holder, seen  # a live owner on this host: never broken by age
    age = (time.time() if now is None else now) - st.st_mtime
    if age > STALE_AFTER:
        return "it is %d minutes old" % (age // 60), holder, seen
    return None, holder, seen


def _break(lockpath, why, seen, warn):
    """Remove the stale dot-lock examined as ``seen`` unless it changed since; True if it is gone."""
    try:
        st = os.stat(lockpath)
        if (st.st_ino, st.st_mtime_ns) != seen:
            return False
        os.unlink(lockpath)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if warn:
        warn("broke the stale lock %s (%s)" % (_shown(lockpath), why))
    return True


# -- appending -------------------------------------------------------------------------------


def chunks(start, data):
    """``(offset, piece)`` of ``data`` written at file offset ``start``: pieces end at a
    multiple of PAGE (or at the end of ``data``), at most CHUNK bytes, so that a write cut
    short by a kill ends where a piece or a page does."""
    view = memoryview(data)
    pos, end = start, start + len(data)
    while pos < end:
        stop = min(end, (pos + CHUNK) // PAGE * PAGE)
        yield pos, view[pos - start : stop - start]
        pos = stop


def write_at_end(fd, start, data):
    """Write ``data`` at the end of ``fd`` (opened O_APPEND, whose size is ``start``), piece by piece."""
    for _pos, piece in chunks(start, data):
        while piece:
            piece = piece[os.write(fd, piece) :]


def write_chunks_at_end(fd, start, data):
    """Write the byte chunks ``data`` (an iterable, read one chunk at a time) at the end of
    ``fd`` (opened O_APPEND, whose size is ``start``): the same write calls as
    :func:`write_at_end` of their concatenation, holding at most about CHUNK bytes.
    Returns the offset where they end."""
    pos, buf = start, bytearray()
    for chunk in data:
        buf += chunk
        while len(buf) > CHUNK:  # the next piece ends before the data does: at a multiple of PAGE
            stop = (pos + CHUNK) // PAGE * PAGE
            write_at_end(fd, pos, memoryview(buf)[: stop - pos])
            del buf[: stop - pos]
            pos = stop
    write_at_end(fd, pos, buf)
    return pos + len(buf)


def append(path, data, *, warn=None):
    """Append the mbox message ``data`` (bytes, or an iterable of byte chunks read one at a
    time: :func:`mbox_chunks`) to ``path``, locked, on its own ``From `` line; flushed to disk.
    If writing fails, or reading a chunk raises, its bytes are cut away again and the error
    goes on.  SIGTERM, SIGINT and SIGHUP wait until the message is written whole: what is
    being kept (a dead letter) is not lost."""
    import signal

    if isinstance(data, bytes | bytearray | memoryview):
        data = (data,)
    locked = lock(path, warn=warn)
    try:
        fd = locked.fd
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/null, a FIFO: written, nothing to undo
                try:
                    for chunk in data:
                        write_at_end(fd, 0, chunk)
                except OSError as exc:
                    raise IOFailure("cannot write mailbox %s: %s" % (_shown(path), describe_oserror(exc))) from None
                return
            end = os.lseek(fd, 0, os.SEEK_END)
            pos = end
            try:
                first = separator(fd, end)
                if first:
                    write_at_end(fd, pos, first)
                    pos += len(first)
                for chunk in data:
                    write_at_end(fd, pos, chunk)
                    pos += len(chunk)
                os.fsync(fd)
            except BaseException as exc:
                try:
                    os.ftruncate(fd, end)  # nothing half-written
                except OSError:
                    pass  # left torn: the next append still starts on its own From_ line
                if isinstance(exc, OSError):
                    raise IOFailure("cannot write mailbox %s: %s" % (_shown(path), describe_oserror(exc))) from None
                raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    finally:
        unlock(locked)


# -- Maildir ---------------------------------------------------------------------------------

_deliveries = 0  # this process's deliveries so far: the Q part of a Maildir name


def maildir_name():
    """A new Maildir file name: ``TIME.M<usec>P<pid>Q<n>.HOST``, unique on this host."""
    import socket
    import time

    global _deliveries
    _deliveries += 1
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return "%d.M%dP%dQ%d.%s" % (now, int(now * 1e6) % 1000000, os.getpid(), _deliveries, host)


def make_maildir(top):
    """Create ``top`` and its tmp/, new/ and cur/ as needed (CantCreateError when it cannot)."""
    for sub in ("tmp", "new", "cur"):
        try:
            os.makedirs(os.path.join(top, sub), exist_ok=True)
        except OSError as exc:
            raise CantCreateError("cannot use Maildir %s: %s" % (_shown(top), describe_oserror(exc))) from None


def deliver_maildir(top, chunks, *, sync_dir=True, name=None):
    """Deliver one message, given as byte ``chunks`` read one at a time, into the Maildir
    ``top``: written to tmp/, flushed to disk, renamed into new/ (and new/ itself flushed,
    unless ``sync_dir`` is false: the caller does it once for several).  The path in new/.
    ``name``, when given, is the file's name (from :func:`maildir_name`, named in a record first).

    Nothing is left in tmp/ when it fails, or when reading a chunk raises (the error goes on):
    CantCreateError (73) when the file cannot be created, IOFailure (74) when writing fails
    (a full disk)."""
    make_maildir(top)
    name = name or maildir_name()
    tmp = os.path.join(top, "tmp", name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise CantCreateError("cannot deliver to Maildir %s: %s" % (_shown(top), describe_oserror(exc))) from None
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        new = os.path.join(top, "new", name)
        os.rename(tmp, new)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise IOFailure("cannot deliver to Maildir %s: %s" % (_shown(top), describe_oserror(exc))) from None
        raise
    if sync_dir:
        fsync_dir(os.path.join(top, "new"))
    return new


def fsync_dir(path):
    """Flush a directory's entries to disk (a rename into it survives a crash); IOFailure if it fails."""
    try:
        dfd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise IOFailure("cannot flush %s to disk: %s" % (_shown(path), describe_oserror(exc))) from None


# -- pypop's record of a batch being appended -------------------------------------------------


def _hash(data):
    import hashlib

    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _block_hashes(start, data):
    """``(end, hashes)`` of the byte chunks ``data`` written at ``start``: one hash a block of
    :func:`blocks`, computed as the chunks come."""
    import hashlib

    hashes, pos = [], start
    h, stop = None, (start // PAGE + 1) * PAGE
    for chunk in data:
        view = memoryview(chunk)
        while view:
            if h is None:
                h = hashlib.blake2b(digest_size=8)
            take = min(len(view), stop - pos)
            h.update(view[:take])
            view = view[take:]
            pos += take
            if pos == stop:
                hashes.append(h.hexdigest())
                h, stop = None, stop + PAGE
    if h is not None:
        hashes.append(h.hexdigest())
    return pos, hashes


def blocks(start, end):
    """The blocks ``(from, to)`` that bytes ``start``..``end`` are hashed in: cut at multiples of PAGE."""
    pos = start
    while pos < end:
        stop = min(end, (pos // PAGE + 1) * PAGE)
        yield pos, stop
        pos = stop


class Pending:
    """What a batch appends to an mbox: its path, device and inode, the offset before the
    batch, and for each message its UID, end offset and the hashes of its blocks.

    Every place where a kill can cut the batch short is a block boundary (a message's
    end, or a multiple of PAGE; see :func:`chunks`), so :meth:`settle` can tell exactly
    which of the bytes at the end of the file are this batch's.
    """

    MAGIC = "pipemail-pending 2"

    def __init__(self, path, dev, ino, before, entries):
        self.path = path
        self.dev = dev
        self.ino = ino
        self.before = before
        self.entries = entries  # [(uid, end, [hash, ...])]

    @classmethod
    def plan(cls, path, st, before, items):
        """The record for writing ``items`` at ``before``: ``(uid, data)``, each message's bytes,
        or an iterable of its byte chunks (cut anywhere, read one at a time)."""
        entries, pos = [], before
        for uid, data in items:
            if isinstance(data, bytes | bytearray | memoryview):
                data = (data,)
            end, hashes = _block_hashes(pos, data)
            entries.append((uid, end, hashes))
            pos = end
        return cls(path, st.st_dev, st.st_ino, before, entries)

    def dump(self):
        lines = [self.MAGIC, self.path, "%d %d %d" % (self.dev, self.ino, self.before)]
        lines.extend(" ".join([uid, str(end), *hashes]) for uid, end, hashes in self.entries)
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")

    @classmethod
    def parse(cls, data):
        """The record in ``data``; ValueError if it is not one."""
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        if len(lines) < 4 or lines[0] != cls.MAGIC or lines[-1] != "":
            raise ValueError("not a pending record")
        dev, ino, before = (int(x) for x in lines[2].split())
        entries = []
        for line in lines[3:-1]:
            uid, end, *hashes = line.split(" ")
            entries.append((uid, int(end), hashes))
        return cls(lines[1], dev, ino, before, entries)

    def save(self, path):
        """Write the record to ``path`` atomically and durably (before the batch's first byte)."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self.dump())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        """The record at ``path``, None if there is none; ValueError if it cannot be read as one."""
        try:
            with open(path, "rb") as f:
                return cls.parse(f.read())
        except FileNotFoundError:
            return None

    def settle(self, fd, warn=None):
        """Under the mailbox's lock (``fd``): the UIDs of the messages stored whole; a torn
        message of this batch is cut away when the file ends with it, else left (with a warning).
        Bytes that do not verify as this batch's are never touched."""
        name = _shown(self.path)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            if warn:
                warn(
                    "%s was replaced since a killed run appended to it: left as it is "
                    "(what that run fetched is fetched again)" % name
                )
            return []
        size = st.st_size
        if size < self.before:
            if warn:
                warn(
                    "%s is shorter than when a killed run began appending to it: left as it is "
                    "(what that run fetched is fetched again)" % name
                )
            return []
        whole, pos, last_end = [], self.before, self.before
        for uid, end, hashes in self.entries:
            spans = list(blocks(pos, end))
            good = len(spans) == len(hashes)
            for (a, b), h in zip(spans, hashes, strict=False) if good else ():
                if b > size or _hash(os.pread(fd, b - a, a)) != h:
                    good = False
                    break
                pos = b
            if not good:
                break
            whole.append(uid)
            last_end = end
        if pos == last_end:  # nothing of ours torn
            if len(whole) < len(self.entries) and size > pos and warn:
                warn(
                    "%s: a killed run stored %d of its %d messages whole; what follows them is not its own "
                    "and is left as it is; the rest is fetched again" % (name, len(whole), len(self.entries))
                )
            return whole
        if pos == size:
            os.ftruncate(fd, last_end)
            os.fsync(fd)
            if warn:
                warn(
                    "cut away %d bytes of a message torn by a killed run at the end of %s; it is fetched again"
                    % (size - last_end, name)
                )
        elif warn:
            warn(
                "%s holds %d bytes of a message torn by a killed run (from offset %d), followed by mail "
                "written since: left as it is; the message is fetched again" % (name, pos - last_end, last_end)
            )
        return whole


def _shown(path):
    return shown(os.fsdecode(path))


__all__ = [
    "Locked",
    "ChunkStream",
    "Pending",
    "append",
    "chunks",
    "deliver_maildir",
    "dotlock",
    "fsync_dir",
    "lock",
    "maildir_name",
    "make_maildir",
    "mbox_bytes",
    "mbox_chunks",
    "mbox_messages",
    "quote",
    "quoted",
    "separator",
    "stale",
    "unlock",
    "write_at_end",
    "write_chunks_at_end",
]


# -- iterating inputs ------------------------------------------------------------------------

#: How much of an input is looked at to tell an mbox, a message and a plain text apart.
HEAD_SIZE = 64 * 1024
#: Chunk size for reading inputs and copying a non-seekable plain text to a temporary file.
SPOOL_CHUNK = 1 << 20

# A header field (RFC 5322 ftext, then ":"; obsolete syntax allows blanks before the colon).
_HEADER_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")


class MailInput:
    """One item of :func:`iter_messages`: a message, or a text that is no mail.

    ``kind`` is ``"message"`` or ``"text"``; ``label`` names the input (a path, ``stdin``);
    ``number`` is the message's number in its mbox (1, 2, ...), None for a message that
    is a file of its own (a Maildir's, an ``.eml``); ``stream`` a readable binary stream,
    valid until the iteration goes on.  A text from a file is the open file itself, at
    its start; a text whose first lines all end in CRLF is read with LF line ends.
    """

    __slots__ = ("kind", "label", "number", "stream")

    def __init__(self, kind, label, stream, number=None):
        self.kind = kind
        self.label = label
        self.stream = stream
        self.number = number

    def __repr__(self):
        return "MailInput(%r, %r, number=%r)" % (self.kind, self.label, self.number)


def iter_messages(inputs):
    """The messages and texts of ``inputs``, one :class:`MailInput` at a time, as streams.

    ``inputs``: a list of paths (str, bytes, os.PathLike) and ``(label, binary stream)``
    pairs (standard input).  A directory with ``cur/`` and ``new/`` is a Maildir (see
    :func:`maildir_messages`); any other directory is refused.  A file or stream is an
    mbox, one message or a plain text as :func:`classify` says from its first
    :data:`HEAD_SIZE` bytes.  An mbox is read forward only, as a stream
    (:func:`mbox_messages`; with LF line ends when every line of its first HEAD_SIZE
    bytes ends in CRLF), and so is a message.  A plain text that cannot seek (a pipe) is
    copied to an anonymous temporary file first, so that its reader may seek; a seekable
    stream is read from its position.  Raises NoInputError for an input that is missing,
    unreadable, or a directory that is no Maildir (when the iteration reaches it),
    IOFailure when reading an mbox fails.
    """
    if isinstance(inputs, (str, bytes, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        if isinstance(item, tuple):
            label, stream = item
            yield from _stream_messages(label, stream)
            continue
        name = os.fsdecode(os.fspath(item))
        if os.path.isdir(name):
            if os.path.isdir(os.path.join(name, "cur")) and os.path.isdir(os.path.join(name, "new")):
                for path, f in maildir_messages(name):
                    yield MailInput("message", path, f)
                continue
            raise NoInputError("%s: is a directory, not a Maildir" % name)
        try:
            f = open(name, "rb")
        except OSError as exc:
            raise NoInputError("cannot open %s: %s" % (name, describe_oserror(exc))) from None
        with f:
            yield from _stream_messages(name, f)


def maildir_messages(top):
    """``(path, open binary file)`` for each message of the Maildir ``top``, one open at a time.

    Every message in ``new/`` and ``cur/``, ordered by file name (Maildir names begin with the
    delivery time, so this is delivery order, and a message moved from ``new/`` to ``cur/``
    keeps its place), ties broken new before cur.  Names starting with ``.``, ``tmp/``
    (deliveries in progress) and anything that is not a regular file are skipped, and so is a
    message gone since the listing.  Each file is closed when the iteration goes on."""
    import stat as stat_

    entries = []
    for order, sub in enumerate(("new", "cur")):
        directory = os.path.join(top, sub)
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise NoInputError("cannot read %s: %s" % (directory, describe_oserror(exc))) from None
        entries.extend((name, order, sub) for name in names if not name.startswith("."))
    entries.sort()
    for name, _order, sub in entries:
        path = os.path.join(top, sub, name)
        try:
            if not stat_.S_ISREG(os.stat(path).st_mode):
                continue
            f = open(path, "rb")
        except FileNotFoundError:
            continue  # moved or deleted by a mail reader since the listing
        except OSError as exc:
            raise NoInputError("cannot open %s: %s" % (path, describe_oserror(exc))) from None
        with f:
            yield path, f


def classify(head, complete=False):
    """``"mbox"``, ``"message"`` or ``"plain"``: what an input starting with ``head`` is.

    An mbox begins with ``From ``; a message with an RFC 5322 header block (every line a
    ``Name: value`` field with a valid field name, or a continuation line, ended by a blank
    line, or by the end of the input when ``complete`` says that ``head`` is all of it).
    """
    if head.startswith(b"From "):
        return "mbox"
    lines = head.split(b"\n")
    if not complete:
        lines.pop()  # cut anywhere: an unfinished line proves nothing
    fields = 0
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return "message" if fields else "plain"
        if line[:1] in (b" ", b"\t"):
            if not fields:
                return "plain"
        elif _HEADER_FIELD.match(line):
            fields += 1
        else:
            return "plain"
    # No blank line: a message only if the input ends with its header block.
    return "message" if complete and fields else "plain"


class Prefixed(io.RawIOBase):
    """A readable stream that gives ``head`` first, then the rest of ``stream``."""

    def __init__(self, head, stream):
        self._head = memoryview(head)
        self._read = stream.read

    def readable(self):
        return True

    def readinto(self, b):
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._read(len(b))
        if not data:
            return 0
        n = len(data)  # a raw stream may give fewer bytes, never more
        b[:n] = data
        return n


def _read_head(label, stream):
    chunks = []
    got = 0
    try:
        while got < HEAD_SIZE:
            chunk = stream.read(HEAD_SIZE - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
    return b"".join(chunks)


def _stream_messages(label, stream):
    start = None
    try:
        if stream.seekable():
            start = stream.tell()
    except (AttributeError, OSError, ValueError):
        start = None
    head = _read_head(label, stream)
    kind = classify(head, complete=len(head) < HEAD_SIZE)
    if start is not None:
        try:
            stream.seek(start)
        except OSError as exc:
            raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
        whole = stream
    else:
        whole = io.BufferedReader(Prefixed(head, stream), 1 << 16)
    if kind == "mbox":
        if _crlf_lines(head[: head.rfind(b"\n") + 1]):
            # saved by a Windows client: its blank lines are CRLF ones
            whole = io.BufferedReader(CRLFToLF(whole), SPOOL_CHUNK)
        for number, (_from_line, chunks) in enumerate(mbox_messages(whole, label), 1):
            yield MailInput("message", label, io.BufferedReader(ChunkStream(chunks), SPOOL_CHUNK), number)
    elif kind == "message":
        yield MailInput("message", label, whole)
    elif start is not None:
        yield MailInput("text", label, _lf_text(head, stream))
    else:
        with _spool(label, whole) as spooled:
            yield MailInput("text", label, _lf_text(head, spooled))


def _lf_text(head, stream):
    """``stream`` itself, or read with LF line ends when every line in ``head`` ends in CRLF."""
    if _crlf_lines(head):
        return io.BufferedReader(CRLFToLF(stream))
    return stream


def _crlf_lines(data):
    """Whether ``data`` has lines and every one of them ends in CRLF."""
    lines = data.count(b"\n")
    return lines > 0 and data.count(b"\r\n") == lines


def _spool(label, stream):
    """Copy a plain text that cannot seek to an anonymous temporary file, at its start."""
    import tempfile

    try:
        spooled = tempfile.TemporaryFile()
    except OSError as exc:
        raise IOFailure("cannot create a temporary file for %s: %s" % (label, describe_oserror(exc))) from None
    try:
        while True:
            try:
                chunk = stream.read(SPOOL_CHUNK)
            except OSError as exc:
                raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
            if not chunk:
                break
            try:
                spooled.write(chunk)
            except OSError as exc:
                raise IOFailure("cannot copy %s to a temporary file: %s" % (label, describe_oserror(exc))) from None
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


class CRLFToLF(io.RawIOBase):
    """A stream of CRLF lines read with LF line ends (a lone CR is kept)."""

    def __init__(self, stream):
        self._stream = stream
        self._out = b""  # converted, not yet read
        self._cr = False  # a CR held back: the next read says whether an LF follows

    def readable(self):
        return True

    def readinto(self, b):
        while not self._out:
            data = self._stream.read(SPOOL_CHUNK)
            if not data:
                self._out, self._cr = (b"\r" if self._cr else b""), False
                break
            if self._cr:
                data = b"\r" + data
            self._cr = data.endswith(b"\r")
            self._out = memoryview((data[:-1] if self._cr else data).replace(b"\r\n", b"\n"))
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n
