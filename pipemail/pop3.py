"""POP3 retrieval and delivery that loses nothing.

A small POP3 client of its own (the transcript is redacted, RETR is pipelined
when the server offers PIPELINING, and reading is in bulk), and the delivery
rules that make a fetch safe to kill at any moment: messages are stored in
batches, flushed and fsynced, their UIDLs recorded, and only then deleted; the
next run settles an mbox batch that a killed run left: it records the messages
stored whole, and cuts away a torn one only when the file still ends with
exactly its bytes (see pipemail.mailbox.Pending).
"""

import os
import stat

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
    tls_context,
    why,
    wrap_tls,
)

BATCH = 100
_TEMP_CODES = ("[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]")


class Client:
    """One POP3 session: ``+OK``/``-ERR`` replies, multi-line answers, a redacted transcript."""

    def __init__(self, url, *, timeout=30, log=None, tls="auto", trust_file=None, warn=None):
        self.url = url
        self.where = url.host
        self.log = log
        self.timeout = timeout
        self.buf = bytearray()  # grows by amortised appends; searched only where new bytes came
        self.capa = set()
        self._context = None
        self._trust_file = trust_file
        self.step = "the greeting"  # what the session waits for, for the words of a timeout
        self.sock = connect(url.host, url.port, timeout)
        if log is not None:
            log("=== connected to %s port %d%s" % (url.host, url.port, " (TLS)" if url.scheme == "pop3s" else ""))
        try:
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
                    allow_cleartext(POP3_CLEARTEXT, url.host, tls, self.where, warn)
        except BaseException:  # a failed greeting, TLS or policy: the socket is not left open
            self.sock.close()
            raise

    def _start_tls(self):
        self.sock = wrap_tls(self.sock, tls_context(self._trust_file), self.url.host, self.where)
        if self.log is not None:
            self.log("=== TLS started (%s); certificate: %s" % (self.sock.version(), cert_subject(self.sock)))

    # -- the wire --
    def _fill(self):
        try:
            data = self.sock.recv(1 << 18)
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
        """Yield ``(n, bytes)``, RETRs pipelined when the server allows."""
        for n in self._pipelined("RETR", numbers):
            data = self.multiline()
            if self.log is not None:
                self.log("S: <message %d, %d bytes>" % (n, len(data)))
            yield n, data

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
        os.write(fd, b"".join(line.encode() + b"\n" for line in lines))
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

    def __init__(self, path, pending, seen_path, warn=None):
        self.path = path
        self.pending = pending
        self.seen_path = seen_path
        self.warn = warn
        self._recover()

    def _recover(self):
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

    def store(self, messages, uids=()):
        from pipemail import mailbox

        uids = list(uids) or ["-"] * len(messages)
        locked = mailbox.lock(self.path, warn=self.warn)
        try:
            fd = locked.fd
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # /dev/null, a FIFO: nothing could be trusted as stored
                raise CantCreateError(
                    "cannot write mailbox %s: not a regular file (a device or pipe cannot be flushed to disk; "
                    "fetch without --mbox writes to standard output)" % shown(self.path)
                )
            before = os.lseek(fd, 0, os.SEEK_END)
            datas = [mailbox.mbox_bytes([raw], _sender(raw)) for raw in messages]
            if datas:
                datas[0] = mailbox.separator(fd, before) + datas[0]  # on its own From_ line after a torn tail
            try:
                record = mailbox.Pending.plan(
                    os.path.abspath(self.path), os.fstat(fd), before, zip(uids, datas, strict=True)
                )
                record.save(self.pending)
            except OSError as exc:
                raise IOFailure("cannot write %s: %s" % (shown(self.pending), describe_oserror(exc))) from None
            try:
                pos = before
                for data in datas:  # each message its own write calls, cut at page boundaries
                    mailbox.write_at_end(fd, pos, data)
                    pos += len(data)
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
        finally:
            mailbox.unlock(locked)

    def done(self):
        try:
            os.unlink(self.pending)
        except FileNotFoundError:
            pass


class MaildirSink:
    durable = True

    def __init__(self, path):
        from pipemail import mailbox

        self.path = path
        mailbox.make_maildir(path)

    def store(self, messages, uids=()):
        from pipemail import mailbox

        for raw in messages:
            mailbox.deliver_maildir(self.path, [raw], sync_dir=False)
        mailbox.fsync_dir(os.path.join(self.path, "new"))

    def done(self):
        pass


class MdaSink:
    """Each message to a command's standard input (``/bin/sh -c``), judged by its exit status.

    0 is stored, 75 a temporary failure, anything else a permanent one; the
    message stays on the server unless it is stored.  A command that exits
    without reading the whole message is judged the same way, and ``warn``
    says so; pypop never dies of the broken pipe.
    """

    durable = True

    def __init__(self, command, warn=None):
        self.command = command
        self.warn = warn

    def store(self, messages, uids=()):
        for raw in messages:
            status, unread = feed_command(self.command, raw)
            if unread and self.warn is not None:
                self.warn(
                    "the MDA %r did not read the whole message (%d of %d bytes unread)"
                    % (self.command, unread, len(raw))
                )
            if status != 0:
                cls = TempFailError if status == EX_TEMPFAIL else UnavailableError
                how = "exited %d" % status if status > 0 else "was killed by signal %d" % -status
                raise cls("the MDA %r %s; the message stays on the server" % (self.command, how))

    def done(self):
        pass


def feed_command(command, data):
    """Run ``/bin/sh -c command`` with ``data`` on its standard input: (exit status, bytes it left unread).

    pypop holds the read end of the pipe too, so a command that exits early
    raises no SIGPIPE or EPIPE: the writes stop when it is gone, and what is
    left in the pipe is counted once it has exited.
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
    try:
        os.set_blocking(w, False)
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(w, view[: 1 << 16]) :]
            except BlockingIOError:
                if proc.poll() is not None:
                    break  # gone without reading the rest
                select.select([], [w], [], 0.05)
        os.close(w)
        w = None
        status = proc.wait()
        (left,) = struct.unpack("i", fcntl.ioctl(r, termios.FIONREAD, b"\0" * 4))
        return status, len(view) + left
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

    def __init__(self, stream):
        self.stream = stream

    def store(self, messages, uids=()):
        from pipemail.mailbox import mbox_bytes

        try:
            for raw in messages:
                self.stream.write(mbox_bytes([raw], _sender(raw)))
            self.stream.flush()
        except BrokenPipeError:  # the reader is gone (pypop fetch | head): this batch is not recorded
            raise IOFailure(
                "cannot write to standard output: its reader is gone (Broken pipe); "
                "the messages not recorded as fetched are fetched again next time"
            ) from None

    def done(self):
        pass


def _sender(raw):
    """The envelope sender for the ``From `` line: the Return-Path, when the header has one."""
    end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else 8192]
    if b"return-path:" not in head.lower():
        return "MAILER-DAEMON"
    import re

    m = re.search(rb"(?mi)^Return-Path:\s*<([^>\s]*)>", head)
    return m.group(1).decode("utf-8", "replace") if m and m.group(1) else "MAILER-DAEMON"


BATCH_BYTES = 32 << 20  # a batch is held in memory until it is stored: bounded in bytes too


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
        messages = []
        for n, data in client.retr_many([n for n, _ in batch]):
            messages.append(data)
            if advance is not None:
                advance(sizes.get(n, len(data)))
        sink.store(messages, [uid for _n, uid in batch])  # appended, flushed, fsynced
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
