"""POP3 retrieval and delivery that loses nothing.

A small POP3 client of its own (the transcript is redacted, RETR is pipelined
when the server offers PIPELINING, and each message is read as a stream of
chunks, dot-unstuffed and with LF line ends, never held whole), and the delivery
rules that make a fetch safe to kill at any moment: messages are stored in
batches, flushed and fsynced, their UIDLs recorded, and only then deleted; the
next run settles an mbox batch that a killed run left: it records the messages
stored whole, and cuts away a torn one only when the file still ends with
exactly its bytes (see pipemail.mailbox.Pending).
"""

import os
import stat

from pipemail import spool
from pipemail.errors import (
    EX_TEMPFAIL,
    CantCreateError,
    ConfigError,
    IOFailure,
    NoPermError,
    PipemailError,
    TempFailError,
    UnavailableError,
    describe_oserror,
    shown,
)
from pipemail.network import (
    POP3_CLEARTEXT,
    TIMED_OUT,
    allow_cleartext,
    cert_subject,
    connect,
    proxy_words,
    tls_context,
    why,
    wrap_tls,
)

BATCH = 100
RECV = 1 << 18  # bytes asked of the socket at a time
GATHER = 1 << 16  # a message's chunks are at least this long (TLS gives a record a read): fewer, faster
_TEMP_CODES = ("[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]")


class Client:
    """One POP3 session: ``+OK``/``-ERR`` replies, multi-line answers, a redacted transcript.

    A context manager: the connection is closed when the ``with`` block ends, however it
    ends; a session that fails before it is set up (the greeting, STLS, TLS) closes it too.
    """

    recv_size = RECV

    def __init__(self, url, *, timeout=30, log=None, tls="auto", trust_file=None, warn=None, proxy=None):
        self.url = url
        self.where = url.host
        self.log = log
        self.timeout = timeout
        self.buf = bytearray()  # grows by amortised appends; searched only where new bytes came
        self.capa = set()
        self._context = None
        self._trust_file = trust_file
        self.step = "the greeting"  # what the session waits for, for the words of a timeout
        self.proxy = proxy  # a proxy URL to go through (network.connect), or None
        self.sock = connect(url.host, url.port, timeout, proxy=proxy)
        try:
            self._setup(tls, warn)
        except BaseException:
            self.close()  # a failed greeting, STLS, TLS or policy does not leak the socket
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _setup(self, tls, warn):
        url, log = self.url, self.log
        if log is not None:
            log(
                "=== connected to %s port %d%s%s"
                % (url.host, url.port, " (TLS)" if url.scheme == "pop3s" else "", proxy_words(self.proxy))
            )
        if url.scheme == "pop3s":
            self._start_tls()
        self.expect_ok("greeting")
        self.capa = self.capabilities()
        if url.scheme == "pop3":
            if "STLS" in self.capa:
                self.command("STLS")
                self.expect_ok("STLS")
                self._start_tls()
                self.capa = self.capabilities()
            else:
                allow_cleartext(POP3_CLEARTEXT, url.host, tls, self.where, warn, proxy=self.proxy)

    def _start_tls(self):
        self.sock = wrap_tls(self.sock, tls_context(self._trust_file), self.url.host, self.where)
        if self.log is not None:
            self.log("=== TLS started (%s); certificate: %s" % (self.sock.version(), cert_subject(self.sock)))

    # -- the wire --
    def _fill(self):
        try:
            data = self.sock.recv(self.recv_size)
        except TimeoutError:
            raise TempFailError(self._timed_out()) from None
        except OSError as exc:
            raise TempFailError("connection to %s failed: %s" % (self.where, why(exc))) from None
        if not data:
            raise TempFailError("%s closed the connection" % self.where)
        self.buf += data

    def _timed_out(self):
        return TIMED_OUT % (self.where, self.timeout, self.step)

    def line(self):
        """One reply line, within the timeout as a whole (a server that drips it byte by byte times out too)."""
        import time

        deadline = None
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > 1 << 16:
                raise UnavailableError("%s sent an overlong reply line" % self.where)
            if deadline is None:
                deadline = time.monotonic() + self.timeout
            left = deadline - time.monotonic()
            if left <= 0:
                raise TempFailError(self._timed_out())
            self.sock.settimeout(left)
            try:
                self._fill()
            finally:
                self.sock.settimeout(self.timeout)

    def command(self, text, redact=None):
        self.step = text.split(" ", 1)[0]  # the verb alone: no argument (a password) in a message
        try:
            self.sock.sendall(text.encode("utf-8") + b"\r\n")
        except TimeoutError:
            raise TempFailError(self._timed_out()) from None
        except OSError as exc:
            raise TempFailError("connection to %s failed: %s" % (self.where, why(exc))) from None
        if self.log is not None:
            self.log("C: " + (redact or text))

    def expect_ok(self, step, auth=False):
        reply = self.line().decode("utf-8", "replace")
        if self.log is not None:
            self.log("S: " + reply)
        if reply.startswith("+OK"):
            return reply
        if reply.startswith("+ ") or reply == "+":
            return reply
        raise _error(step, self.where, reply, auth)

    def multiline(self):
        """The data of a multi-line answer, dot-unstuffed, lines ending in \\n."""
        searched = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", max(searched - 4, 0))
            if i >= 0:
                data = bytes(self.buf[: i + 2])
                del self.buf[: i + 5]
                if data.startswith(b".."):
                    data = data[1:]
                return data.replace(b"\r\n..", b"\r\n.").replace(b"\r\n", b"\n")
            searched = len(self.buf)
            self._fill()

    def data_chunks(self):
        """The data of a multi-line answer as a stream: chunks of GATHER to about twice
        ``recv_size`` bytes (the last may be shorter), dot-unstuffed, CRLF made LF, correct
        wherever the reads cut it (a line's leading dot, a CRLF or the final ``.`` line split
        across reads).  The generator ends once the final ``.`` line is read; it must be read
        to its end before the next reply."""
        buf = self.buf
        gather = min(GATHER, self.recv_size)
        start = True  # buf[0] begins a line
        searched = 0  # buf[:searched] holds no end of the data
        while True:
            if start:
                if len(buf) < 3 and b".\r\n".startswith(buf):  # too little yet to tell
                    self._fill()
                    continue
                if buf.startswith(b".\r\n"):
                    del buf[:3]
                    return
                if buf.startswith(b".."):
                    del buf[:1]
                start = False
            end = buf.find(b"\r\n.\r\n", max(searched - 4, 0))
            if end >= 0:
                piece = bytes(buf[: end + 2])
                del buf[: end + 5]
                yield _unstuffed(piece)
                return
            if len(buf) < gather:  # the data goes on: more comes
                searched = len(buf)
                self._fill()
                continue
            searched = 0
            nl = buf.rfind(b"\r\n")
            if nl >= 0:  # whole lines: the next line's start waits in buf for the next read
                cut, start = nl + 2, True
            else:  # within a long line: all but a last byte that may be a CR
                cut = len(buf) - 1
            if cut > 0:
                piece = bytes(buf[:cut])
                del buf[:cut]
                yield _unstuffed(piece)
            self._fill()

    # -- commands --
    def capabilities(self):
        self.command("CAPA")
        try:
            self.expect_ok("CAPA")
        except UnavailableError:
            return set()
        return {line.upper() for line in self.multiline().decode("utf-8", "replace").split("\n") if line}

    def login(self, user, password):
        import base64

        if password is None:
            raise ConfigError(
                "no password for %s at %s: set PIPEMAIL_PASSWORD, password_command or ~/.netrc (see pipemail.conf(5))"
                % (user, self.where)
            )
        if any(c.startswith("SASL") and "PLAIN" in c.split() for c in self.capa):
            token = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
            self.command("AUTH PLAIN " + token, redact="AUTH PLAIN <redacted>")
            self.expect_ok("AUTH PLAIN", auth=True)
            return
        self.command("USER " + user)
        self.expect_ok("USER", auth=True)
        self.command("PASS " + password, redact="PASS <redacted>")
        self.expect_ok("PASS", auth=True)

    def stat(self):
        self.command("STAT")
        parts = self.expect_ok("STAT").split()
        return int(parts[1]), int(parts[2])

    def _listing(self, cmd):
        self.command(cmd)
        self.expect_ok(cmd)
        out = []
        for line in self.multiline().decode("utf-8", "replace").split("\n"):
            if line.strip():
                n, value = line.split(None, 1)
                out.append((int(n), value.strip()))
        if self.log is not None:
            self.log("S: <%d lines>" % len(out))
        return out

    def list(self):
        return [(n, int(size)) for n, size in self._listing("LIST")]

    def uidl(self):
        return self._listing("UIDL")

    def _pipelined(self, verb, numbers):
        """Send ``VERB n`` for each number, up to 16 ahead when the server offers PIPELINING;
        yield each number once its +OK arrived (a multi-line answer is for the caller to read)."""
        window = 16 if "PIPELINING" in self.capa else 1
        todo, pending = list(numbers), []
        while todo or pending:
            while todo and len(pending) < window:
                n = todo.pop(0)
                self.command("%s %d" % (verb, n))
                pending.append(n)
            n = pending.pop(0)
            self.expect_ok("%s %d" % (verb, n))
            yield n

    def retr_many(self, numbers):
        """Yield ``(n, chunks)``, RETRs pipelined when the server allows: ``chunks`` streams the
        message (see :meth:`data_chunks`), to be read before the next one is asked for (what
        is left of it is read and dropped then)."""
        for n in self._pipelined("RETR", numbers):
            counted = _Counted(self.data_chunks())
            yield n, counted
            for _chunk in counted:
                pass
            if self.log is not None:
                self.log("S: <message %d, %d bytes>" % (n, counted.size))

    def dele_many(self, numbers):
        for _n in self._pipelined("DELE", numbers):
            pass

    def quit(self):
        self.command("QUIT")
        self.expect_ok("QUIT")  # deletions take effect only now
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _unstuffed(piece):
    """Wire bytes that begin where no line does or after an unstuffed first dot: LF line ends."""
    if b"\r\n." in piece:
        piece = piece.replace(b"\r\n..", b"\r\n.")
    return piece.replace(b"\r\n", b"\n")


class _Counted:
    """An iterator of byte chunks that counts the bytes it gave (``size``)."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.size = 0

    def __iter__(self):
        return self

    def __next__(self):
        chunk = next(self._chunks)
        self.size += len(chunk)
        return chunk


def _error(step, where, reply, auth):
    text = reply[4:].strip() if reply.startswith("-ERR") else reply
    message = "%s refused by %s: %s" % (step, where, reply)
    if any(code in text for code in _TEMP_CODES):
        return TempFailError(message)
    if "[AUTH]" in text or (auth and "[SYS/PERM]" not in text):
        return NoPermError(message)
    return UnavailableError(message)


# -- where fetched mail goes -------------------------------------------------------------


def state_paths(user, url, env=None):
    """The UIDL file, lock and pending-record paths for ``user`` at the server of ``url``."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    d = os.path.join(base, "pipemail", "pop")
    name = "%s@%s_%d" % (user or "-", url.host, url.port)
    name = "".join(c if c.isalnum() or c in "@._-" else "_" for c in name)
    return os.path.join(d, name + ".uidl"), os.path.join(d, name + ".lock"), os.path.join(d, name + ".pending")


def lock(path, label):
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise TempFailError("another pypop is fetching for %s; try again when it is done" % label) from None
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    return fd


def read_seen(path):
    """``{uid: durable}``: the UIDLs fetched before, and whether they were stored on disk
    (a line ``UID -`` is one that only went to standard output)."""
    seen = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                parts = line.decode("utf-8", "replace").split()
                if parts:
                    seen[parts[0]] = seen.get(parts[0], False) or len(parts) == 1
    except FileNotFoundError:
        pass
    return seen


def _append_fsync(path, lines):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for line in lines))
        os.fsync(fd)
    finally:
        os.close(fd)


class MboxSink:
    """Append to an mbox, locked (see pipemail.mailbox), with a record that settles a killed run.

    Before a batch is appended, ``pending`` records what it will write (a
    :class:`pipemail.mailbox.Pending`: the mbox's path, device and inode, the
    offset before the batch, and each message's UID, end and block hashes).
    The next run, under the mailbox's lock, records the UIDs of the messages
    found there whole (not fetched twice), cuts a torn message away only when
    the file still ends with exactly its bytes, and otherwise leaves the file
    alone and says so (the torn message is fetched again).
    """

    durable = True
    stores_each = False  # the whole batch is appended at once, or nothing (see store)

    def __init__(self, path, pending, seen_path, warn=None):
        self.path = path
        self.pending = pending
        self.seen_path = seen_path
        self.warn = warn
        self.recover()

    def recover(self):
        """Settle a killed run's pending record (done when the sink is made; again by a caller
        that let go of the lock meanwhile: pypop fetch --idle)."""
        from pipemail import mailbox

        try:
            record = mailbox.Pending.load(self.pending)
        except (OSError, ValueError):
            record = None
            if self.warn:
                self.warn("%s is not a pending record pypop can read: ignored" % shown(self.pending))
        if record is not None:  # settled even when its ids are recorded: a killed --all run's torn tail
            try:
                locked = mailbox.lock(record.path, create=False, warn=self.warn)
            except PipemailError:
                whole = []
                if self.warn:
                    self.warn(
                        "%s, appended to by a killed run, is gone: what that run fetched is fetched again"
                        % shown(record.path)
                    )
            else:
                try:
                    whole = record.settle(locked.fd, self.warn)
                finally:
                    mailbox.unlock(locked)
            seen = read_seen(self.seen_path)
            whole = [uid for uid in whole if uid != "-" and not seen.get(uid)]  # "-": stored without a UID
            if whole:
                _append_fsync(self.seen_path, whole)
        try:
            os.unlink(self.pending)
        except FileNotFoundError:
            pass

    def store(self, items):
        """Store ``items``, ``(uid, chunks)`` each message as it is read: all of them are
        received first (into memory up to :data:`MEMORY` bytes, the rest into a spool
        file), so that the record can name their bytes before the first is appended."""
        from pipemail import mailbox

        with Spool() as spool:
            held = [(uid, spool.add(_framed(chunks))) for uid, chunks in items]
            locked = mailbox.lock(self.path, warn=self.warn)
            try:
                self._append(locked.fd, spool, held)
            finally:
                mailbox.unlock(locked)

    def _append(self, fd, spool, held):
        from pipemail import mailbox

        if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/null, a FIFO: nothing could be trusted as stored
            raise CantCreateError(
                "cannot write mailbox %s: not a regular file (a device or pipe cannot be flushed to disk; "
                "fetch without --mbox writes to standard output)" % shown(self.path)
            )
        before = os.lseek(fd, 0, os.SEEK_END)
        first = mailbox.separator(fd, before)  # on its own From_ line after a torn tail

        def data(i):
            if i == 0 and first:
                yield first
            yield from spool.chunks(held[i][1])

        try:
            record = mailbox.Pending.plan(
                os.path.abspath(self.path), os.fstat(fd), before, [(uid, data(i)) for i, (uid, _h) in enumerate(held)]
            )
            record.save(self.pending)
        except OSError as exc:
            raise IOFailure("cannot write %s: %s" % (shown(self.pending), describe_oserror(exc))) from None
        try:
            pos = before
            for i in range(len(held)):  # each message its own write calls, cut at page boundaries
                pos = mailbox.write_chunks_at_end(fd, pos, data(i))
            os.fsync(fd)
        except BaseException as exc:  # a failed write, or SIGTERM: nothing half-written, nothing recorded
            try:
                os.ftruncate(fd, before)
                os.fsync(fd)
            except OSError:
                pass  # the pending record stays: the next run cuts these bytes away, as after a kill
            else:
                self.done()
            if isinstance(exc, OSError):
                raise IOFailure("cannot write %s: %s" % (shown(self.path), describe_oserror(exc))) from None
            raise

    def done(self):
        try:
            os.unlink(self.pending)
        except FileNotFoundError:
            pass


class MaildirSink:
    """Deliver each message into a Maildir, with a record that settles a killed run.

    Before a message is renamed into new/, its file name and label (its UIDL, or
    pypop's IMAP label) are appended to ``pending``; the record is flushed with
    new/ at the end of each batch and removed once the batch is recorded
    (:meth:`done`).  A file appears in new/ only whole, so the next run records the
    label of every file the record names that is in new/ (or, moved there by a mail
    reader, in cur/): a run killed mid-batch delivers nothing twice.
    """

    durable = True
    stores_each = True  # a message is in new/ before the next one is read (new/ flushed even on failure)

    def __init__(self, path, pending=None, seen_path=None, warn=None):
        from pipemail import mailbox

        self.path = path
        self.pending = pending
        self.seen_path = seen_path
        self.warn = warn
        mailbox.make_maildir(path)
        if pending is not None:
            self.recover()

    def recover(self):
        """Settle a killed run's pending record (see the class): its labels of the messages found
        in the Maildir are appended to ``seen_path``, and the record removed."""
        try:
            with open(self.pending, "rb") as f:
                lines = f.read().decode("utf-8", "surrogateescape").split("\n")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure("cannot read %s: %s" % (shown(self.pending), describe_oserror(exc))) from None
        entries = [line.split(" ", 1) for line in lines if " " in line]
        if entries:
            try:
                present = set(os.listdir(os.path.join(self.path, "new")))
                present.update(n.split(":", 1)[0] for n in os.listdir(os.path.join(self.path, "cur")))
            except OSError as exc:
                raise IOFailure("cannot read Maildir %s: %s" % (shown(self.path), describe_oserror(exc))) from None
            seen = read_seen(self.seen_path)
            whole = [label for name, label in entries if name in present and label != "-" and not seen.get(label)]
            if whole:
                _append_fsync(self.seen_path, whole)
        self.done()

    def store(self, items):
        """Each message streamed into tmp/, flushed, named in the record, renamed into new/;
        new/ and the record flushed once a batch."""
        from pipemail import mailbox

        record = None
        try:
            if self.pending is not None:
                try:
                    record = os.open(self.pending, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError as exc:
                    raise IOFailure("cannot write %s: %s" % (shown(self.pending), describe_oserror(exc))) from None
            for uid, chunks in items:
                name = mailbox.maildir_name()
                if record is not None:
                    try:
                        os.write(record, ("%s %s\n" % (name, uid)).encode("utf-8", "surrogateescape"))
                    except OSError as exc:
                        raise IOFailure("cannot write %s: %s" % (shown(self.pending), describe_oserror(exc))) from None
                mailbox.deliver_maildir(self.path, chunks, sync_dir=False, name=name)
        finally:  # those delivered before a failure are stored too (stores_each)
            mailbox.fsync_dir(os.path.join(self.path, "new"))
            if record is not None:
                try:
                    os.fsync(record)
                finally:
                    os.close(record)

    def done(self):
        if self.pending is not None:
            try:
                os.unlink(self.pending)
            except FileNotFoundError:
                pass


class MdaSink:
    """Each message to a command's standard input (``/bin/sh -c``), judged by its exit status.

    0 is stored, 75 a temporary failure, anything else a permanent one; the
    message stays on the server unless it is stored.  A command that exits
    without reading the whole message is judged the same way, and ``warn``
    says so; pypop never dies of the broken pipe.
    """

    durable = True
    stores_each = True  # the command has taken a message (exit 0) before the next one is read

    def __init__(self, command, warn=None):
        self.command = command
        self.warn = warn

    def store(self, items):
        for _uid, chunks in items:
            status, unread, size = feed_command(self.command, chunks)
            if unread and self.warn is not None:
                self.warn(
                    "the MDA %r did not read the whole message (%d of %d bytes unread)" % (self.command, unread, size)
                )
            if status != 0:
                cls = TempFailError if status == EX_TEMPFAIL else UnavailableError
                how = "exited %d" % status if status > 0 else "was killed by signal %d" % -status
                raise cls("the MDA %r %s; the message stays on the server" % (self.command, how))

    def done(self):
        pass


def feed_command(command, data):
    """Run ``/bin/sh -c command`` with ``data`` (bytes, or byte chunks read one at a time) on its
    standard input: (exit status, bytes it left unread, bytes in all).

    pypop holds the read end of the pipe too, so a command that exits early
    raises no SIGPIPE or EPIPE: the writes stop when it is gone (the rest of
    ``data`` is still read, and counted), and what is left in the pipe is
    counted once it has exited.  When reading ``data`` fails, the command is
    killed before its input ends: it never takes a torn message for a whole one.
    """
    import fcntl
    import select
    import struct
    import subprocess
    import termios

    r, w = os.pipe()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=r, stdout=subprocess.DEVNULL)
    except OSError as exc:
        os.close(r)
        os.close(w)
        raise ConfigError("cannot run /bin/sh for the MDA %r: %s" % (command, describe_oserror(exc))) from None
    if isinstance(data, bytes | bytearray | memoryview):
        data = (data,)
    try:
        os.set_blocking(w, False)
        size = unwritten = 0
        gone = False
        for chunk in data:
            size += len(chunk)
            view = memoryview(chunk)
            while view and not gone:
                try:
                    view = view[os.write(w, view[: 1 << 16]) :]
                except BlockingIOError:
                    if proc.poll() is not None:
                        gone = True  # gone without reading the rest
                        break
                    select.select([], [w], [], 0.05)
            unwritten += len(view)
        os.close(w)
        w = None
        status = proc.wait()
        (left,) = struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4))
        return status, unwritten + left, size
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if w is not None:
            os.close(w)
        os.close(r)


class StreamSink:
    durable = False  # a pipe cannot be flushed to disk: what went there is never deleted on its account
    stores_each = False

    def __init__(self, stream):
        self.stream = stream

    def store(self, items):
        try:
            for _uid, chunks in items:
                for piece in _framed(chunks):
                    self.stream.write(piece)
            self.stream.flush()
        except BrokenPipeError:  # the reader is gone (pypop fetch | head): this batch is not recorded
            raise IOFailure(
                "cannot write to standard output: its reader is gone (Broken pipe); "
                "the messages not recorded as fetched are fetched again next time"
            ) from None

    def done(self):
        pass


HEAD_PEEK = 1 << 20  # bytes of a message read ahead for its Return-Path


def _framed(chunks):
    """A message's chunks framed for an mbox (:func:`pipemail.mailbox.mbox_chunks`), the ``From ``
    line naming the Return-Path of its header, found in at most HEAD_PEEK bytes read ahead."""
    from pipemail.mailbox import mbox_chunks

    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if b"\n\n" in head or len(head) >= HEAD_PEEK:
            break
    return mbox_chunks(_chain(head, chunks), _sender(head))


def _chain(first, rest):
    if first:
        yield first
    yield from rest


def _sender(raw):
    """The envelope sender for the ``From `` line: the Return-Path, when the header has one."""
    end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else 8192]
    if b"return-path:" not in head.lower():
        return "MAILER-DAEMON"
    import re

    m = re.search(rb"(?mi)^Return-Path:\s*<([^>\s]*)>", head)
    return m.group(1).decode("utf-8", "replace") if m and m.group(1) else "MAILER-DAEMON"


BATCH_BYTES = 32 << 20  # a batch is held (see Spool) until it is stored: bounded in bytes too
MEMORY = 4 << 20  # bytes of a batch held in memory in all: the rest goes to a spool file
SPOOL_BLOCK = 1 << 20  # a spool file is read back this much at a time


class Spool:
    """The messages of a batch, held until they are stored: in memory up to ``memory``
    bytes in all, the rest in one private temporary file in ``$TMPDIR`` (default /tmp;
    mode 0600, and unlinked from the start (O_TMPFILE): it is gone on every exit, even a
    kill).  :meth:`add` takes a message's chunks and gives a handle; :meth:`chunks` reads
    the message again from it, as often as needed.  A spool file that cannot be created
    or written (a full disk) is an IOFailure (74)."""

    def __init__(self, memory=None):
        self.memory = MEMORY if memory is None else memory
        self.held = 0  # bytes held in memory
        self.dir = spool.tmpdir()
        self.file = None
        self.end = 0  # bytes in the file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def add(self, chunks):
        pieces, size = [], 0
        chunks = iter(chunks)
        for chunk in chunks:
            if self.held + size + len(chunk) > self.memory:  # this message goes to the file
                start = self.end
                for piece in pieces:
                    self._write(piece)
                self._write(chunk)
                for chunk in chunks:
                    self._write(chunk)
                return (start, self.end - start)
            pieces.append(chunk)
            size += len(chunk)
        self.held += size
        return pieces

    def chunks(self, handle):
        if isinstance(handle, list):
            yield from handle
            return
        start, length = handle
        pos, end = start, start + length
        while pos < end:
            try:
                data = os.pread(self.file.fileno(), min(SPOOL_BLOCK, end - pos), pos)
            except OSError as exc:
                raise IOFailure(
                    "cannot read the spool file in %s: %s" % (shown(self.dir), describe_oserror(exc))
                ) from None
            if not data:
                raise IOFailure("cannot read the spool file in %s: it was cut short" % shown(self.dir))
            yield data
            pos += len(data)

    def _write(self, chunk):
        if self.file is None:
            self.file = spool.spool_file(prefix="pypop-", buffering=0)
        try:
            view, pos = memoryview(chunk), self.end
            while view:
                n = os.pwrite(self.file.fileno(), view, pos)
                view, pos = view[n:], pos + n
            self.end = pos
        except OSError as exc:
            raise IOFailure("cannot write a spool file in %s: %s" % (shown(self.dir), describe_oserror(exc))) from None


def _batches(todo, sizes):
    """At most BATCH messages and BATCH_BYTES bytes a batch (a larger message goes alone)."""
    batch, total = [], 0
    for item in todo:
        size = sizes.get(item[0], 0)
        if batch and (len(batch) >= BATCH or total + size > BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


def _advancing(chunks, advance, size):
    """``chunks``, advancing the progress bar by their bytes, and at their end to ``size`` (LIST's)."""
    got = 0
    for chunk in chunks:
        got += len(chunk)
        advance(len(chunk))
        yield chunk
    if size > got:
        advance(size - got)


def fetch(
    client, sink, state, *, every=False, delete=False, limit=None, max_size=None, warn=None, log=None, progress=None
):
    """Retrieve new (or all) messages into ``sink``; returns (stored, skipped).

    ``progress(count, total_bytes)``, when given, returns a callable advanced by
    the bytes of each message retrieved (a progress bar), or None.
    """
    seen_path = state
    seen = read_seen(seen_path)
    uidl = client.uidl()
    sizes = dict(client.list())
    todo = [(n, uid) for n, uid in uidl if every or uid not in seen]
    skipped = 0
    if max_size is not None:
        big = [(n, uid) for n, uid in todo if sizes.get(n, 0) > max_size]
        for n, _uid in big:
            if warn:
                warn("message %d is %d bytes, over --max-size: left on the server" % (n, sizes[n]))
        skipped = len(big)
        todo = [(n, uid) for n, uid in todo if sizes.get(n, 0) <= max_size]
    if limit is not None:
        todo = todo[:limit]
    stored = 0
    if delete:  # stored on disk by an earlier run that was stopped before its DELE (or its QUIT)
        fetching = {n for n, _uid in todo}
        done = [n for n, uid in uidl if seen.get(uid) and n not in fetching]
        if done:
            client.dele_many(done)
    mark = "" if sink.durable else " -"
    advance = progress(len(todo), sum(sizes.get(n, 0) for n, _uid in todo)) if progress and todo else None
    for batch in _batches(todo, sizes):
        uids = dict(batch)
        delivered = []  # the UIDLs the sink asked past (stored, with a sink that stores_each)

        def items(batch=batch, uids=uids, delivered=delivered):
            for n, chunks in client.retr_many([n for n, _ in batch]):
                yield uids[n], chunks if advance is None else _advancing(chunks, advance, sizes.get(n, 0))
                delivered.append(uids[n])

        try:
            sink.store(items())  # appended, flushed, fsynced
        except BaseException:
            if sink.stores_each and delivered:  # those before the failure are stored: not again
                try:
                    _append_fsync(seen_path, [uid + mark for uid in delivered])
                except OSError:
                    pass  # the first error is the one to tell
            raise
        _append_fsync(seen_path, [uid + mark for _n, uid in batch])  # then recorded
        sink.done()
        if delete:
            client.dele_many([n for n, _ in batch])  # then deleted
        stored += len(batch)
    # forget UIDLs no longer on the server
    on_server = {uid for _n, uid in uidl}
    kept = sorted((uid, durable) for uid, durable in read_seen(seen_path).items() if uid in on_server)
    tmp = seen_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"".join(u.encode() + (b"\n" if durable else b" -\n") for u, durable in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, seen_path)
    return stored, skipped


__all__ = ["Client", "fetch", "MboxSink", "MaildirSink", "MdaSink", "StreamSink"]
