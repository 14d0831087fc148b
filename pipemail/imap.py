"""IMAP retrieval: a client on Python's imaplib that streams messages and idles.

Public API (what pypop's IMAP fetch builds on)::

    Client(url, *, timeout=30, log=None, tls="auto", trust_file=None, warn=None, proxy=None)
        # a context manager; url: pipemail.config.URL with scheme imap or imaps
        .capabilities            # frozenset of upper-case words, refreshed after STARTTLS and login
        .has(word) -> bool       # e.g. has("UIDPLUS"), has("MOVE"), has("IDLE")
        .login(user, password, auth=None)   # auth: None (AUTHENTICATE PLAIN if offered, else
                                 # LOGIN), "plain", "login", "xoauth2", "oauthbearer" (password = token);
                                 # a mechanism without AUTH=... in CAPABILITY: UnavailableError, unsent
        .select(mailbox, readonly=False) -> Folder(name, uidvalidity, uidnext, exists, readonly)
                                 # mailbox: its wire name (modified UTF-7, e.g. "Entw&APw-rfe"),
                                 # quoted here; EXAMINE when readonly
        .new_uids(last, undeleted=False) -> [uid, ...]   # UIDs > last, ascending (n:* holds the highest
                                 # UID: filtered here); [] at once when SELECT's UIDNEXT says
                                 # nothing is new (any EXISTS seen since voids that UIDNEXT)
        .index(uids) -> [(uid, size, message_id or None), ...]
        .headers(uids) -> [(uid, size, header bytes), ...]   # BODY.PEEK[HEADER]: for the key of a
                                 # message without a Message-ID (pipemail.imapstate.message_key)
                                 # RFC822.SIZE (the CRLF size) and Message-ID, for matching
                                 # what was stored after a UIDVALIDITY change
        .fetch(uids, batch=BATCH) -> iterator of (uid, size, chunks)
                                 # one UID FETCH (UID RFC822.SIZE BODY.PEEK[]) per batch; chunks
                                 # streams the message with LF line ends, never held whole;
                                 # read it (or not) before taking the next item; \\Seen not set;
                                 # a message expunged meanwhile is just not given, nor is a UID
                                 # not asked for or given twice (a broken server); an iterator
                                 # left midway leaves the session fit only for close()
        .add_flags(uids, flags) / .remove_flags(uids, flags)   # flags: e.g. ["\\Seen"]
        .delete(uids) -> bool    # \\Deleted, then UID EXPUNGE of exactly these UIDs when the server
                                 # has UIDPLUS (True); without UIDPLUS the flag only (False); never
                                 # a plain EXPUNGE or CLOSE
        .move(uids, mailbox) -> bool   # UID MOVE if offered (True), else UID COPY + delete(uids)
                                 # (what delete returns)
        .idle(reissue=IDLE_REISSUE, tick=1.0)   # IMAP IDLE: a context manager whose value iterates
                                 # Event(kind, number, line) or None (every tick seconds of quiet:
                                 # check a stop flag); re-issued (DONE + IDLE) every reissue
                                 # seconds, DONE's answer awaited within the timeout (a hung server
                                 # is found there); leaving the with block sends DONE; a drop or
                                 # BYE is TempFailError.  with c.idle() as events: for e in events:
                                 # An EXISTS seen during an earlier command (FETCH, SEARCH, NOOP...)
                                 # comes first, before IDLE is sent (the server says it only once)
        .noop()                  # NOOP: the server tells what changed (an EXISTS: see idle)
        .unselect()              # UNSELECT when offered (never CLOSE: it expunges); else nothing
        .logout() / .close()

    uid_set(uids) -> "1:5,7,9:12"

Errors are pipemail's: a refused login NoPermError (77), a drop, timeout or BYE
TempFailError (75), a refused command UnavailableError (69), bad settings ConfigError (78).

How it is made.  The connection is made by pipemail.network (timeout, proxy, TLS and
its verification, the plaintext policy: imaps:// is TLS from the first byte, imap://
must offer STARTTLS except on loopback or with tls="none"), then handed to an imaplib
subclass (its ``open`` takes the socket).  imaplib serves the small commands; two things
it cannot do are done here on its connection: a FETCH response is read by this module
(imaplib would read every literal whole and keep a whole batch until the command ends),
so that each message is streamed to the caller while it arrives, and IDLE (imaplib has
none before 3.14).  The ``-v`` transcript (``log``) comes from the wire, LOGIN and
AUTHENTICATE redacted: no password or token is ever logged; a literal is logged as
its size.
"""

import re

from pipemail.errors import ConfigError, NoPermError, PipemailError, TempFailError, UnavailableError
from pipemail.network import (
    IMAP_CLEARTEXT,
    TIMED_OUT,
    allow_cleartext,
    cert_subject,
    connect,
    proxy_words,
    tls_context,
    why,
    wrap_tls,
)

BATCH = 100  # UIDs per UID FETCH: one round trip per batch, a batch's answers streamed
CHUNK = 1 << 18  # bytes of a literal read at a time
IDLE_REISSUE = 25 * 60  # seconds; RFC 2177: servers may end an IDLE after 30 minutes
SET_SIZE = 500  # UIDs per STORE/EXPUNGE/MOVE/COPY command, to keep command lines short
LINE_MAX = 16 << 20  # bytes of one response line (imaplib's 1,000,000 is a UID SEARCH of ~150,000 UIDs)
LITERAL_MAX = 16 << 20  # bytes of a literal imaplib reads whole (header fields: a message is streamed)
ANSWER_MAX = 32 << 20  # bytes of lines and imaplib's literals after one command (a streamed message not
# counted): imaplib keeps every untagged line until the command ends, so a server's flood must end

_FETCH = re.compile(rb"\* (\d+) FETCH \(")
_LITERAL = re.compile(rb"\{(\d+)\}$")
_UID = re.compile(rb"[( ]UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UNTAGGED = re.compile(rb"\* (?:(\d+) )?([A-Za-z]+)")
_TEMP_CODES = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]", "[OVERQUOTA]")


class Folder:
    """A selected mailbox: ``name`` (the wire name), ``uidvalidity``, ``uidnext`` (None if the
    server did not say), ``exists`` (messages in it), ``readonly``."""

    __slots__ = ("name", "uidvalidity", "uidnext", "exists", "readonly")

    def __init__(self, name, uidvalidity, uidnext, exists, readonly):
        self.name = name
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.exists = exists
        self.readonly = readonly

    def __repr__(self):
        return "Folder(%s)" % ", ".join("%s=%r" % (a, getattr(self, a)) for a in self.__slots__)


class Event:
    """An untagged response seen while idling: ``kind`` (``EXISTS``, ``EXPUNGE``, ``RECENT``,
    ``FETCH``, ``OK``...), ``number`` (the N of ``* N EXISTS``, or None) and the ``line`` (str)."""

    __slots__ = ("kind", "number", "line")

    def __init__(self, kind, number, line):
        self.kind = kind
        self.number = number
        self.line = line

    def __repr__(self):
        return "Event(%r, %r, %r)" % (self.kind, self.number, self.line)


def uid_set(uids):
    """A UID set for a command: ascending runs joined, ``1:5,7,9:12``."""
    out = []
    start = prev = None
    for uid in sorted(set(uids)):
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            out.append(str(start) if start == prev else "%d:%d" % (start, prev))
        start = prev = uid
    if start is not None:
        out.append(str(start) if start == prev else "%d:%d" % (start, prev))
    return ",".join(out)


def quote(text):
    """``text`` as an IMAP quoted string (ConfigError for a CR, LF or NUL, which no quoted string holds)."""
    if any(c in text for c in "\r\n\0"):
        raise ConfigError("a line break or NUL cannot be sent in an IMAP string")
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


_connection_class = None


def _connection():
    """The imaplib subclass, made at first use (imaplib pulls in ssl and more: ~14 ms)."""
    global _connection_class
    if _connection_class is not None:
        return _connection_class
    import imaplib

    class Connection(imaplib.IMAP4):
        """imaplib on a socket made by pipemail.network, its wire logged with redaction."""

        def __init__(self, sock, host, port, log):
            self._premade = sock
            self._log_line = log
            self.redact = False  # set while LOGIN/AUTHENTICATE lines go out
            self.violation = None  # what the server sent that no IMAP server may (the session is over)
            self.answered = 0  # bytes read since the last line sent (see ANSWER_MAX)
            super().__init__(host, port, None)

        def open(self, host="", port=0, timeout=None):
            self.host = host
            self.port = port
            self.sock = self._premade
            self.file = self.sock.makefile("rb")

        def restart_file(self):
            """After the socket was wrapped in TLS: a reader on the new socket."""
            self.file = self.sock.makefile("rb")

        def send(self, data):
            if self._log_line is not None and data != b"\r\n":
                text = data.rstrip(b"\r\n").decode("utf-8", "replace")
                if self.redact:
                    words = text.split(" ")
                    if len(words) > 2 and words[1].upper() == "LOGIN":
                        text = "%s LOGIN %s <redacted>" % (words[0], words[2])
                    elif not (len(words) > 1 and words[1].upper() == "AUTHENTICATE"):
                        text = "<redacted>"
                self._log_line("C: " + text)
            self.answered = 0
            super().send(data)

        def _get_line(self):
            line = super()._get_line()
            if self._log_line is not None:
                self._log_line("S: " + _tame(line.rstrip(b"\r\n").decode("utf-8", "replace")))
            return line

        def readline(self):
            line = self.file.readline(LINE_MAX + 1)
            if len(line) > LINE_MAX:  # a server that never ends its line
                self.violation = "a line of more than %d bytes" % LINE_MAX
                raise self.abort(self.violation)
            self._count(len(line))
            return line

        def _count(self, n):
            self.answered += n
            if self.answered > ANSWER_MAX:  # an endless flood of untagged lines
                self.violation = "more than %d bytes in answer to one command" % ANSWER_MAX
                raise self.abort(self.violation)

        def read(self, size):
            if size > LITERAL_MAX:  # imaplib would allocate it at once: a MemoryError
                self.violation = "a literal of %d bytes (at most %d expected)" % (size, LITERAL_MAX)
                raise self.abort(self.violation)
            self._count(size)
            data = super().read(size)
            if self._log_line is not None:
                self._log_line("S: <literal, %d bytes>" % len(data))
            return data

    _connection_class = Connection
    return Connection


class Client:
    """One IMAP session (see the module's docstring for its methods)."""

    def __init__(self, url, *, timeout=30, log=None, tls="auto", trust_file=None, warn=None, proxy=None):
        import imaplib

        self._imaplib = imaplib
        self.url = url
        self.where = url.host
        self.timeout = timeout
        self.log = log
        self.proxy = proxy
        self.step = "the greeting"
        self.capabilities = frozenset()
        self.folder = None
        self._conn = None
        self._broken = False  # a response was left half read: the session can only be closed
        self._missed = None  # an EXISTS seen outside IDLE, for idle() to give first
        self._trust_file = trust_file
        sock = connect(url.host, url.port, timeout, proxy=proxy)
        try:
            if log is not None:
                log(
                    "=== connected to %s port %d%s%s"
                    % (url.host, url.port, " (TLS)" if url.scheme == "imaps" else "", proxy_words(proxy))
                )
            if url.scheme == "imaps":
                sock = self._tls(sock)
            with self._errors():
                self._conn = _connection()(sock, url.host, url.port, log)
            self._refresh(self._conn.capabilities)
            if url.scheme == "imap":
                if "STARTTLS" in self.capabilities:
                    self.step = "STARTTLS"
                    with self._errors():
                        _ok(self._conn, *self._conn._simple_command("STARTTLS"))
                        self._conn.sock = self._tls(self._conn.sock)
                        self._conn.restart_file()
                        self._conn._tls_established = True
                        self._conn._get_capabilities()
                    self._refresh(self._conn.capabilities)
                else:
                    allow_cleartext(IMAP_CLEARTEXT, url.host, tls, self.where, warn, proxy=proxy)
        except BaseException:
            self.close(sock)
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _tls(self, sock):
        sock = wrap_tls(sock, tls_context(self._trust_file), self.url.host, self.where)
        if self.log is not None:
            self.log("=== TLS started (%s); certificate: %s" % (sock.version(), cert_subject(sock)))
        return sock

    def _refresh(self, words):
        self.capabilities = frozenset(w.upper() for w in words)

    def has(self, word):
        """Whether the server offers ``word`` (``UIDPLUS``, ``MOVE``, ``IDLE``, ``AUTH=PLAIN``...)."""
        return word.upper() in self.capabilities

    # -- errors --
    def _errors(self, auth=False):
        return _Errors(self, auth)

    def _timed_out(self):
        return TIMED_OUT % (self.where, self.timeout, self.step)

    # -- login --
    def login(self, user, password, auth=None):
        """Log in as ``user``: see the module's docstring for ``auth``; capabilities refreshed after."""
        if password is None:
            raise ConfigError(
                "no password for %s at %s: set PIPEMAIL_PASSWORD, password_command or ~/.netrc (see pipemail.conf(5))"
                % (user, self.where)
            )
        mech = (auth or ("plain" if self.has("AUTH=PLAIN") else "login")).lower()
        conn = self._conn
        if mech == "login":
            if self.has("LOGINDISABLED"):
                raise UnavailableError("%s does not allow LOGIN here (LOGINDISABLED)" % self.where)
            self.step = "LOGIN"
            conn.redact = True
            conn._encoding = "utf-8"
            try:
                with self._errors(auth=True):
                    _ok(conn, *conn._simple_command("LOGIN", quote(user), quote(password)))
                    conn.state = "AUTH"
            finally:
                conn.redact = False
                conn._encoding = "ascii"
        elif mech in ("plain", "xoauth2", "oauthbearer"):
            if not self.has("AUTH=" + mech.upper()):  # an auth key naming what the server lacks
                offered = ", ".join(sorted(w[5:] for w in self.capabilities if w.startswith("AUTH="))) or "none"
                raise UnavailableError(
                    "%s does not offer AUTHENTICATE %s (its mechanisms: %s)" % (self.where, mech.upper(), offered)
                )
            from pipemail import sasl

            if mech == "plain":
                secret = sasl.plain(user, password)
            elif mech == "xoauth2":
                secret = sasl.xoauth2(user, password)
            else:
                secret = sasl.oauthbearer(user, password, self.url.host, self.url.port)
            answers = [sasl.ERROR_ANSWER.get(mech.upper(), b""), secret]

            def respond(challenge):
                # The first + gets the secret; a later one is an OAuth error report (a JSON document),
                # answered as its mechanism says so that the server gives its final NO.
                return answers.pop() if answers else b""

            self.step = "AUTHENTICATE " + mech.upper()
            conn.redact = True
            try:
                with self._errors(auth=True):
                    conn.authenticate(mech.upper(), respond)
            finally:
                conn.redact = False
        else:
            raise ConfigError("unknown auth mechanism %s for IMAP (plain, login, xoauth2, oauthbearer)" % mech)
        fresh = conn.untagged_responses.pop("CAPABILITY", None)
        with self._errors():
            if fresh:
                words = fresh[-1].decode("ascii", "replace").split()
            else:
                self.step = "CAPABILITY"
                typ, dat = conn.capability()
                words = dat[-1].decode("ascii", "replace").split()
        self._refresh(words)

    # -- mailboxes --
    def select(self, mailbox, readonly=False):
        """SELECT (EXAMINE when ``readonly``) the mailbox of wire name ``mailbox``: a :class:`Folder`."""
        from pipemail import utf7

        conn = self._conn
        try:  # said in errors as the user writes it: Entwürfe, not Entw&APw-rfe
            name = _tame(utf7.decode(mailbox, strict=False))
        except utf7.Error:
            name = mailbox
        self.step = ("EXAMINE " if readonly else "SELECT ") + name
        with self._errors():
            conn.untagged_responses.clear()
            _ok(conn, *conn._simple_command("EXAMINE" if readonly else "SELECT", quote(mailbox)))
            conn.state = "SELECTED"
            conn.is_readonly = readonly or "READ-ONLY" in conn.untagged_responses
        responses = conn.untagged_responses

        def number(key):
            values = responses.get(key)
            try:
                return int(values[-1]) if values else None
            except ValueError:
                return None

        uidvalidity = number("UIDVALIDITY")
        if uidvalidity is None:
            raise UnavailableError("%s gave no UIDVALIDITY for %s" % (self.where, mailbox))
        self.folder = Folder(mailbox, uidvalidity, number("UIDNEXT"), number("EXISTS") or 0, conn.is_readonly)
        self._missed = None
        responses.clear()
        return self.folder

    def unselect(self):
        """Leave the selected mailbox without expunging (UNSELECT; without it nothing is sent:
        the next SELECT or LOGOUT leaves it without expunging too).  Never CLOSE."""
        if self.folder is None:
            return
        if self.has("UNSELECT"):
            self.step = "UNSELECT"
            with self._errors():
                _ok(self._conn, *self._conn._simple_command("UNSELECT"))
                self._conn.state = "AUTH"
        self.folder = None

    def noop(self):
        """NOOP: the server reports what changed (an EXISTS voids SELECT's UIDNEXT for new_uids),
        or ends a session it can no longer serve (a UIDVALIDITY changed under it: TempFailError)."""
        conn = self._conn
        self.step = "NOOP"
        with self._errors():
            _ok(conn, *conn._simple_command("NOOP"))
        self._collect()
        self._conn.untagged_responses.clear()

    # -- listing --
    def new_uids(self, last, undeleted=False):
        """The UIDs above ``last`` in the selected mailbox, ascending (``undeleted``: only
        those not flagged \\Deleted)."""
        folder = self.folder
        if folder is not None and folder.uidnext is not None and folder.uidnext <= last + 1:
            return []
        self.step = "UID SEARCH"
        with self._errors():
            typ, dat = self._conn.uid("SEARCH", "UID %d:*%s" % (last + 1, " UNDELETED" if undeleted else ""))
            if typ != "OK":
                raise self._conn.error(_text(dat))
        self._collect()
        uids = set()
        for part in dat:
            if part:
                uids.update(int(w) for w in part.split() if w.isdigit())
        return sorted(u for u in uids if u > last)

    def index(self, uids):
        """``[(uid, size, message_id)]`` of ``uids``: RFC822.SIZE and the Message-ID (None if none),
        read as :func:`pipemail.imapstate.message_id` reads it from a stored message's header."""
        from pipemail.imapstate import message_id

        return [
            (uid, size, message_id(header or b""))
            for uid, size, header in self._sections(uids, "HEADER.FIELDS (MESSAGE-ID)", SET_SIZE * 2)
        ]

    def headers(self, uids):
        """``[(uid, size, header)]`` of ``uids``: RFC822.SIZE and the whole header (bytes, CRLF,
        the blank line included), 50 a command (imaplib holds a command's answer whole)."""
        return self._sections(uids, "HEADER", 50)

    def _sections(self, uids, section, per):
        out = []
        uids = sorted(set(uids))
        for start in range(0, len(uids), per):
            part = uids[start : start + per]
            wanted = set(part)
            self.step = "UID FETCH"
            with self._errors():
                typ, dat = self._conn.uid("FETCH", uid_set(part), "(UID RFC822.SIZE BODY.PEEK[%s])" % section)
                if typ != "OK":
                    raise self._conn.error(_text(dat))
            self._collect()
            for item in dat:
                if not isinstance(item, tuple):
                    continue
                head, header = item
                u, s = _UID.search(head), _SIZE.search(head)
                if not u or not s or int(u.group(1)) not in wanted:  # a stray or repeated UID: dropped
                    continue
                wanted.discard(int(u.group(1)))
                out.append((int(u.group(1)), int(s.group(1)), header))
        out.sort()
        return out

    # -- fetching --
    def fetch(self, uids, batch=BATCH):
        """Yield ``(uid, size, chunks)`` for each of ``uids`` the server still has, in the order
        the server answers; ``size`` is RFC822.SIZE (CRLF).  ``chunks`` is an iterator of
        bytes with LF line ends, to be read before the next item (what is left is dropped)."""
        uids = sorted(set(uids))
        for start in range(0, len(uids), batch):
            yield from self._fetch_batch(uids[start : start + batch])

    def _fetch_batch(self, uids):
        conn = self._conn
        self.step = "UID FETCH"
        with self._errors():
            tag = conn._command("UID", "FETCH", uid_set(uids), "(UID RFC822.SIZE BODY.PEEK[])")
        self._broken = True  # until the tagged answer is read
        wanted = set(uids)  # each asked-for UID given once: a server's stray or repeated one is dropped
        while True:
            with self._errors():
                line = conn._get_line()
            if line.startswith(tag + b" "):
                conn.tagged_commands.pop(tag, None)
                self._broken = False
                status = line[len(tag) + 1 :].split(b" ", 1)
                if status[0] != b"OK":
                    raise _refused("UID FETCH", self.where, line[len(tag) + 1 :].decode("utf-8", "replace"))
                return
            m = _FETCH.match(line)
            if not m:
                self._untagged(line)
                continue
            head = line
            uid = _UID.search(head)
            size = _SIZE.search(head)
            literal = _LITERAL.search(head)
            while literal:
                n = int(literal.group(1))
                is_body = head[: literal.start()].rstrip().endswith(b"BODY[]")
                if not is_body or (uid and not self._wanted(wanted, int(uid.group(1)))):
                    self._skip(n)
                elif uid:
                    body = _Literal(self, n)
                    yield int(uid.group(1)), int(size.group(1)) if size else n, body
                    body.drain()
                    if self.log is not None:
                        self.log("S: <message, %d bytes>" % n)
                else:  # the UID comes after the body: hold it on disk until the UID is known
                    held = self._spool(n)
                    with self._errors():
                        tail = conn._get_line()
                    uid = _UID.search(tail)
                    size = size or _SIZE.search(tail)
                    if uid and self._wanted(wanted, int(uid.group(1))):
                        yield int(uid.group(1)), int(size.group(1)) if size else n, _from_file(held)
                    held.close()
                    head = tail
                    literal = _LITERAL.search(head)
                    continue
                with self._errors():
                    head = conn._get_line()
                uid = uid or _UID.search(head)
                size = size or _SIZE.search(head)
                literal = _LITERAL.search(head)

    def _wanted(self, wanted, uid):
        """Whether ``uid`` was asked for and not given yet (then it counts as given)."""
        if uid in wanted:
            wanted.discard(uid)
            return True
        if self.log is not None:
            self.log("=== UID %d not asked for, or given twice: dropped" % uid)
        return False

    def _read(self, n):
        self.step = "UID FETCH"
        with self._errors():
            data = self._conn.file.read(n)
        if len(data) < n:
            raise TempFailError("%s closed the connection in the middle of a message" % self.where)
        return data

    def _skip(self, n):
        while n:
            n -= len(self._read(min(n, CHUNK)))

    def _spool(self, n):
        import tempfile

        f = tempfile.TemporaryFile()
        for chunk in _Literal(self, n):
            f.write(chunk)
        f.seek(0)
        return f

    def _untagged(self, line):
        """An untagged line outside IDLE: a BYE ends the session; an EXISTS is kept for idle()."""
        if line.startswith(b"* BYE"):
            raise TempFailError(
                "%s closed the connection: %s" % (self.where, _tame(line[5:].strip().decode("utf-8", "replace")))
            )
        m = _UNTAGGED.match(line)
        if m and m.group(1) and m.group(2).upper() == b"EXISTS":
            self._exists(int(m.group(1)))

    def _exists(self, number):
        """New mail was announced outside IDLE: SELECT's UIDNEXT is stale, and idle() must say so
        at once (the server will not announce it again)."""
        if self.folder is not None:
            self.folder.uidnext = None
        self._missed = Event("EXISTS", number, "* %d EXISTS" % number)

    def _collect(self):
        """The EXISTS that imaplib kept from a command's answer (see :meth:`_exists`)."""
        values = self._conn.untagged_responses.pop("EXISTS", None)
        if values:
            try:
                self._exists(int(values[-1]))
            except ValueError:
                pass

    # -- flags, deleting, moving --
    def _uid_command(self, verb, uids, *args):
        conn = self._conn
        uids = sorted(set(uids))
        for start in range(0, len(uids), SET_SIZE):
            self.step = "UID " + verb
            with self._errors():
                typ, dat = conn.uid(verb, uid_set(uids[start : start + SET_SIZE]), *args)
                if typ != "OK":
                    raise conn.error(_text(dat))
            self._collect()

    def add_flags(self, uids, flags):
        self._uid_command("STORE", uids, "+FLAGS.SILENT", "(%s)" % " ".join(flags))

    def remove_flags(self, uids, flags):
        self._uid_command("STORE", uids, "-FLAGS.SILENT", "(%s)" % " ".join(flags))

    def delete(self, uids):
        """Flag ``uids`` \\Deleted and, with UIDPLUS, UID EXPUNGE exactly them: True; without
        UIDPLUS the flag only (False): a plain EXPUNGE could remove messages never fetched."""
        self.add_flags(uids, ["\\Deleted"])
        if not self.has("UIDPLUS"):
            return False
        self._uid_command("EXPUNGE", uids)
        return True

    def move(self, uids, mailbox):
        """Move ``uids`` to the mailbox of wire name ``mailbox``: UID MOVE when offered (True); else
        UID COPY, then :meth:`delete` (its answer: False when the originals are only flagged)."""
        if self.has("MOVE"):
            self._uid_command("MOVE", uids, quote(mailbox))
            return True
        self._uid_command("COPY", uids, quote(mailbox))
        return self.delete(uids)

    # -- IDLE --
    def idle(self, reissue=IDLE_REISSUE, tick=1.0):
        """IMAP IDLE in the selected mailbox, as a context manager giving an iterator::

            with client.idle() as events:
                for event in events:    # an Event, or None after tick seconds of quiet
                    if event is not None and event.kind == "EXISTS":
                        break

        Every ``reissue`` seconds DONE is sent and IDLE again (its tagged answer must come within
        the timeout: a server that hangs is found so).  Leaving the ``with`` block sends DONE and
        reads its answer.  A dropped connection or a BYE is a TempFailError."""
        import contextlib

        if not self.has("IDLE"):
            raise UnavailableError("%s does not offer IDLE" % self.where)
        return contextlib.closing(self._idle(reissue, tick))

    def _idle(self, reissue, tick):
        import time

        missed, self._missed = self._missed, None
        if missed is not None:  # announced during an earlier command: IDLE would not say it again
            yield missed
        tag = self._idle_start()
        since = time.monotonic()
        try:
            while True:
                left = reissue - (time.monotonic() - since)
                if left <= 0:
                    self._idle_done(tag)
                    tag = None
                    tag = self._idle_start()
                    since = time.monotonic()
                    continue
                line = self._idle_line(min(tick, left))
                if line is None:
                    if reissue - (time.monotonic() - since) > 0:
                        yield None
                    continue
                event = self._event(line)
                if event is not None:
                    if event.kind == "EXISTS" and self.folder is not None:
                        self.folder.uidnext = None  # SELECT's UIDNEXT is stale now: new_uids asks
                    yield event
        except PipemailError:
            tag = None  # the connection broke: no DONE on it
            raise
        finally:
            if tag is not None:
                self._idle_done(tag)

    def _idle_start(self):
        conn = self._conn
        self.step = "IDLE"
        with self._errors():
            tag = conn._new_tag()
            conn.send(tag + b" IDLE\r\n")
        self._broken = True
        while True:
            with self._errors():
                line = conn._get_line()
            if line.startswith(b"+"):
                return tag
            if line.startswith(tag + b" "):
                conn.tagged_commands.pop(tag, None)
                self._broken = False
                raise _refused("IDLE", self.where, line[len(tag) + 1 :].decode("utf-8", "replace"))
            self._untagged(line)

    def _idle_done(self, tag):
        conn = self._conn
        self.step = "IDLE (DONE)"
        with self._errors():
            conn.send(b"DONE\r\n")
            while True:
                line = conn._get_line()
                if line.startswith(tag + b" "):
                    break
                self._untagged(line)
        conn.tagged_commands.pop(tag, None)
        self._broken = False
        if not line[len(tag) + 1 :].startswith(b"OK"):
            raise _refused("IDLE", self.where, line[len(tag) + 1 :].decode("utf-8", "replace"))

    def _idle_line(self, wait):
        """One line that arrives within ``wait`` seconds, or None."""
        import select

        conn = self._conn
        self.step = "IDLE"
        if not self._buffered():
            try:
                ready, _, _ = select.select([conn.sock], [], [], wait)
            except InterruptedError:  # pragma: no cover (PEP 475 retries)
                return None
            if not ready:
                return None
        with self._errors():
            return conn._get_line()

    def _buffered(self):
        """Whether bytes already read from the socket wait in imaplib's reader or in TLS."""
        import ssl

        conn = self._conn
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            return bool(conn.file.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError:
            return True  # let the read that follows tell what went wrong
        finally:
            sock.settimeout(timeout)

    def _event(self, line):
        self._untagged(line)
        self._missed = None  # given now, as this event
        m = _UNTAGGED.match(line)
        if not m:
            return None
        return Event(
            m.group(2).decode("ascii").upper(),
            int(m.group(1)) if m.group(1) else None,
            line.decode("utf-8", "replace"),
        )

    # -- the end --
    def logout(self):
        if self._conn is not None and not self._broken:
            self.step = "LOGOUT"
            try:
                with self._errors():
                    self._conn.logout()
            except TempFailError:
                pass
        self.close()

    def close(self, sock=None):
        conn, self._conn = self._conn, None
        for thing in (conn and conn.file, conn and conn.sock, sock):
            if thing is not None:
                try:
                    thing.close()
                except OSError:
                    pass


class _Errors:
    """Turns imaplib's and the socket's errors into pipemail's, in the words of the step."""

    def __init__(self, client, auth):
        self.client = client
        self.auth = auth

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, PipemailError) or not isinstance(exc, Exception):
            return False
        client = self.client
        imaplib = client._imaplib
        where = client.where
        if isinstance(exc, TimeoutError):
            client._broken = True
            raise TempFailError(client._timed_out()) from None
        if isinstance(exc, imaplib.IMAP4.abort):
            client._broken = True
            text = _text(exc.args)
            if client._conn is not None and client._conn.violation:
                raise TempFailError("%s sent %s during %s" % (where, client._conn.violation, client.step)) from None
            if "EOF" in text:
                raise TempFailError("%s closed the connection during %s" % (where, client.step)) from None
            if " => " in text:  # imaplib's words for a BYE: "command: NOOP => the server's words"
                text = text.split(" => ", 1)[1]
                raise TempFailError("%s ended the session during %s: %s" % (where, client.step, text)) from None
            raise TempFailError("connection to %s broken during %s: %s" % (where, client.step, text)) from None
        if isinstance(exc, imaplib.IMAP4.error):
            raise _refused(client.step, where, _text(exc.args), self.auth) from None
        if isinstance(exc, OSError):
            client._broken = True
            raise TempFailError("connection to %s failed: %s" % (where, why(exc))) from None
        return False


def _ok(conn, typ, dat):
    """imaplib answers NO without raising: raise its error for anything but OK."""
    if typ != "OK":
        raise conn.error(_text(dat))


def _text(args):
    """The words of an imaplib error or answer (bytes or str, a list of them)."""
    parts = []
    for a in args if isinstance(args, list | tuple) else [args]:
        if isinstance(a, bytes):
            a = a.decode("utf-8", "replace")
        if a is not None:
            parts.append(str(a))
    return _tame(" ".join(parts))


def _tame(text):
    """A server's words fit for one line on a terminal: a control character (an escape
    sequence, a CR) shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _refused(step, where, text, auth=False):
    text = _tame(text)
    message = "%s refused by %s: %s" % (step, where, text)
    if any(code in text for code in _TEMP_CODES):
        return TempFailError(message)
    if auth or "[AUTHENTICATIONFAILED]" in text or "[AUTHORIZATIONFAILED]" in text:
        return NoPermError(message)
    return UnavailableError(message)


class _Literal:
    """A literal of ``n`` bytes on the wire as an iterator of chunks, CRLF made LF."""

    def __init__(self, client, n):
        self.client = client
        self.left = n
        self.cr = False

    def __iter__(self):
        return self

    def __next__(self):
        if not self.left:
            if self.cr:
                self.cr = False
                return b"\r"
            raise StopIteration
        data = self.client._read(min(self.left, CHUNK))
        self.left -= len(data)
        if self.cr:
            data = b"\r" + data
        self.cr = data.endswith(b"\r") and self.left > 0
        if self.cr:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n")

    def drain(self):
        if self.left:
            self.client._skip(self.left)
            self.left = 0
        self.cr = False


def _from_file(f):
    while True:
        data = f.read(CHUNK)
        if not data:
            return
        yield data
