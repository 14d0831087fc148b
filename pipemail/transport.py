"""Delivering a message: SMTP (STARTTLS, SMTPS, AUTH), sendmail, mbox, Maildir, stdout.

Every transport takes the message as byte segments (lines ending in ``\\n``)
and an envelope, and returns a :class:`Report` of who got it and who did not
(with the server's words); an error that stops the whole delivery is raised
as the PipemailError subclass of its exit code, with ``undelivered`` set.
"""

import os

from pipemail import mailbox
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
    TempFailError,
    UnavailableError,
    describe_oserror,
    shown,
)
from pipemail.network import (
    CANNOT_CONNECT,
    SMTP_CLEARTEXT,
    TIMED_OUT,
    UNTRUSTED,
    allow_cleartext,
    cert_subject,
    connect,
    proxy_words,
    tls_context,
    why,
    wrap_tls,
)


class Report:
    """Who got the message, who did not and why (``{addr: (code, text)}``)."""

    def __init__(self, accepted=(), refused=None, checked=None):
        self.accepted = list(accepted)
        self.refused = dict(refused or {})
        # --check without SMTP: what was checked, in words (None: the server took each of ``accepted``)
        self.checked = checked

    @property
    def undelivered(self):
        return list(self.refused)

    def exit_code(self):
        if not self.refused:
            return EX_OK
        if any(code < 500 for code, _ in self.refused.values()):
            return TempFailError.exit_code
        return NoUserError.exit_code


def _fail(cls, message, recipients, smtp_code=None):
    exc = cls(message)
    exc.undelivered = list(recipients or ())
    exc.smtp_code = smtp_code
    return exc


class Outgoing:
    """A message with its own envelope, for :func:`deliver_each` and :func:`smtp_deliveries`:
    ``segments`` (re-iterable byte chunks), ``size``, ``sender``, ``recipients``.  Any object
    with these four attributes will do (queue.Item is one)."""

    def __init__(self, segments, size, sender, recipients):
        self.segments = segments
        self.size = size
        self.sender = sender
        self.recipients = list(recipients)


def _envelope(message, sender, recipients):
    """``(segments, size, sender, recipients)`` of one of the ``messages`` given to a delivery:
    a ``(segments, size)`` pair takes the call's envelope, an :class:`Outgoing` has its own."""
    if isinstance(message, tuple):
        segments, size = message
        return segments, size, sender, recipients
    return message.segments, message.size, message.sender, message.recipients


def _undelivered_for(exc, recipients, call_recipients):
    """``exc`` for a message sent to ``recipients``: itself when they are the call's, else a copy
    whose ``undelivered`` names them (one failure, each message its own recipients)."""
    if recipients is call_recipients:
        return exc
    import copy

    other = copy.copy(exc)
    other.undelivered = list(recipients)
    return other


# -- local transports ---------------------------------------------------------------------


def deliver_mbox(path, segments, sender, recipients, warn=None):
    """Append the message to the mbox at ``path`` (see :func:`pipemail.mailbox.append`)."""
    mailbox.append(path, gathered(mailbox.mbox_chunks(segments, sender), mailbox.CHUNK), warn=warn)
    return Report(recipients)


def deliver_maildir(path, segments, recipients):
    """Deliver the message into the Maildir at ``path`` (see :func:`pipemail.mailbox.deliver_maildir`)."""
    mailbox.deliver_maildir(path, gathered(segments, mailbox.CHUNK))
    return Report(recipients)


def deliver_stdout(stream, segments, recipients, sender=None):
    """Write the message to ``stream``; with ``sender``, as one message of an mbox (one of several).
    Written chunk by chunk (the stream's own buffer gathers small ones)."""
    if sender is not None:
        segments = mailbox.mbox_chunks(segments, sender)
    for seg in segments:
        stream.write(seg)
    stream.flush()
    return Report(recipients)


WRITE_SIZE = 1 << 16  # bytes gathered for one write to a socket or a pipe


def gathered(chunks, size=WRITE_SIZE):
    """``chunks`` (cut anywhere, some tiny) gathered into buffers of about ``size`` bytes or more
    (the last one shorter), so that each write is a big one whatever the cuts."""
    buf = bytearray()
    for chunk in chunks:
        if not buf and len(chunk) >= size:  # big enough as it is: not copied
            yield chunk
            continue
        buf += chunk
        if len(buf) >= size:
            yield buf
            buf = bytearray()
    if buf:
        yield buf


def smtp_data(chunks, size=WRITE_SIZE):
    """What SMTP DATA sends for the message ``chunks`` (LF line ends, cut anywhere): CRLF line
    ends, a dot doubled at the start of a line (RFC 5321 4.5.2), and the end marker ``.``,
    with a CRLF before it for a message that does not end with a newline.  Done on the
    stream, correct across chunk boundaries, in buffers of about ``size`` bytes: a line
    split as ``\n`` | ``.`` is stuffed as one that is not."""
    at_start = True  # the next byte begins a line
    for raw in gathered(chunks, size):
        out = raw.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n..")
        if at_start and raw[:1] == b".":
            out = b"." + out
        at_start = raw[-1:] == b"\n"
        if len(out) < size:  # the last one: the end marker goes with it, one write, no wait on a delayed ACK
            out += b".\r\n" if at_start else b"\r\n.\r\n"
            yield out
            return
        yield out
    yield b".\r\n" if at_start else b"\r\n.\r\n"


def sendmail_path(url_path=None, env=None):
    env = os.environ if env is None else env
    return url_path or env.get("PIPEMAIL_SENDMAIL") or "/usr/sbin/sendmail"


def deliver_sendmail(path, segments, sender, recipients, timeout=None, warn=None):
    """Hand the message to ``path -i -f sender -- recipients...`` on its standard input.

    ``timeout`` (seconds, None for none) bounds the whole run, writing the
    message included: a sendmail that does not read, or reads and hangs, is
    killed with its process group and the delivery is a TempFailError.
    Its exit status judges the delivery; one that exits 0 without reading the
    whole message (a wrapper that reads a line, say) is told to ``warn``.
    """
    import signal
    import subprocess

    for r in recipients:
        if r.startswith("-"):
            raise _fail(DataError, "refusing recipient %s: it would be read as an option" % shown(r), recipients)
    argv = [path, "-i", "-f", sender, "--", *recipients]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except OSError as exc:
        raise _fail(ConfigError, "cannot run %s: %s" % (path, describe_oserror(exc)), recipients) from None
    try:  # a sendmail that exits early must not take pymail (and the dead letter) with it
        old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except ValueError:  # not the main thread: SIGPIPE is Python's default there (ignored) anyway
        old = None
    try:
        err, unread = _run_fed(proc, segments, timeout)
    except subprocess.TimeoutExpired:
        raise _fail(TempFailError, "%s did not finish within %g s; killed" % (path, timeout), recipients) from None
    except BaseException:  # interrupted: a sendmail left with half a message on a closed pipe could send it
        _kill_group(proc)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGPIPE, old)
    status = proc.returncode
    if status != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else "exit status %d" % status if status > 0 else "killed by signal %d" % -status
        cls = TempFailError if status == EX_TEMPFAIL else UnavailableError
        raise _fail(cls, "%s refused the message: %s" % (path, why), recipients)
    if unread and warn is not None:
        warn("%s exited 0 without reading the whole message: it may have sent it cut short" % path)
    return Report(recipients)


def _kill_group(proc):
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # already gone
        pass
    proc.wait()


def _run_fed(proc, segments, timeout):
    """Write ``segments`` to ``proc``'s stdin and read its stderr until it exits, within ``timeout``.

    The writes are non-blocking and the waits bounded, so that a program that
    never reads holds nothing up past the timeout; at the timeout its process
    group is killed and TimeoutExpired raised.  Its stderr (the last 8 KB), and the
    number of bytes it refused (a closed pipe; 0 when all were written, though what
    was still in the pipe when it exited was not read either).
    """
    import selectors
    import subprocess
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    stdin, stderr = proc.stdin.fileno(), proc.stderr.fileno()
    os.set_blocking(stdin, False)
    chunks = (memoryview(buf) for buf in gathered(segments))  # read one at a time, in big writes
    view = next(chunks, None)
    err, unread = b"", 0
    with selectors.DefaultSelector() as sel:
        if view is None:
            proc.stdin.close()
        else:
            sel.register(stdin, selectors.EVENT_WRITE)
        sel.register(stderr, selectors.EVENT_READ)
        while sel.get_map():
            if deadline is None:
                wait = None if view is not None else 0.05
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    _kill_group(proc)
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                if view is None:
                    wait = min(wait, 0.05)
            ready = sel.select(wait)
            if not ready and view is None and proc.poll() is not None:
                break  # it is gone; something it started may hold stderr open: not waited for
            for key, _events in ready:
                if key.fd == stdin:
                    try:
                        n = os.write(stdin, view[:WRITE_SIZE])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading: its exit status says why
                        unread += len(view) + sum(len(c) for c in chunks)
                        n, view = 0, None
                    if view is not None:
                        view = view[n:] or next(chunks, None)
                    if view is None:
                        sel.unregister(stdin)
                        proc.stdin.close()
                else:
                    data = os.read(stderr, 1 << 16)
                    if not data:
                        sel.unregister(stderr)
                    err = (err + data)[-8192:]
    if not proc.stdin.closed:
        proc.stdin.close()
    wait = None if deadline is None else max(deadline - time.monotonic(), 0)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise
    proc.stderr.close()
    return err, unread


# -- SMTP --------------------------------------------------------------------------------


def _smtp_classes():
    import smtplib

    class Client(smtplib.SMTP):
        """smtplib with a transcript (AUTH redacted) and a streaming DATA."""

        log = None
        redact = False
        step = "connecting"  # what the session waits for, for the words of a timeout
        _rbuf = None  # what was read past the last reply line; made by _get_socket
        implicit_tls = False  # smtps: TLS from the first byte, by ``self.context``
        proxy = None  # a proxy URL to connect through (network.connect)

        def _get_socket(self, host, port, timeout):
            self.step = "connecting"
            sock = connect(host, port, timeout, proxy=self.proxy)
            if self.implicit_tls:
                sock = wrap_tls(sock, self.context, self._host)
            self.step = "the greeting"
            self._rbuf = bytearray()
            return sock

        def starttls(self, *args, **kwargs):
            reply = super().starttls(*args, **kwargs)
            self._rbuf = bytearray()  # RFC 3207: nothing read before TLS counts after it
            return reply

        def putcmd(self, cmd, args=""):
            verb = cmd.upper()
            self.step = "AUTH" if self.redact else {"MAIL": "MAIL FROM", "RCPT": "RCPT TO"}.get(verb, verb)
            if not self.redact:
                cmd = cmd.upper()  # smtplib sends "ehlo", "rset": show and send them as RFC 5321 writes them
                for word in ("from:", "to:"):  # and "from:<a>" (Python 3.13) as "FROM:<a>"
                    if args[: len(word)].lower() == word:
                        args = word.upper() + args[len(word) :]
            if self.log is not None:
                line = ("%s %s" % (cmd, args)).strip() if args else cmd
                if self.redact:
                    word = line.split(" ", 1)[0]
                    line = "%s <redacted>" % word if word.upper() == "AUTH" else "<redacted>"
                self.log("C: " + line)
            super().putcmd(cmd, args)

        def getreply(self):
            """A reply, all its lines within the timeout (a server that drips ``220-`` lines times out too)."""
            import time

            deadline = time.monotonic() + self.timeout
            resp = []
            while True:
                line = self._line(deadline)
                if not line:
                    self.close()
                    raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
                if len(line) > smtplib._MAXLINE:
                    self.close()
                    raise smtplib.SMTPResponseException(500, "Line too long.")
                resp.append(line[4:].strip(b" \t\r\n"))
                try:
                    code = int(line[:3])
                except ValueError:
                    code = -1
                    break
                if line[3:4] != b"-":
                    break
            msg = b"\n".join(resp)
            if self.log is not None:
                lines = msg.decode("utf-8", "replace").split("\n") or [""]
                for i, text in enumerate(lines):
                    self.log("S: %d%s%s" % (code, "-" if i < len(lines) - 1 else " ", text))
            return code, msg

        def _line(self, deadline):
            """One line of the server's, read by this client's own buffer with the time left to ``deadline``."""
            import time

            while True:
                end = self._rbuf.find(b"\n")
                if end >= 0 or len(self._rbuf) > smtplib._MAXLINE:
                    end = end + 1 if end >= 0 else len(self._rbuf)
                    line = bytes(self._rbuf[:end])
                    del self._rbuf[:end]
                    return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(1 << 16)
                except TimeoutError:
                    raise
                except OSError as exc:
                    self.close()
                    raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed: %s" % exc) from None
                finally:
                    if self.sock is not None:
                        self.sock.settimeout(self.timeout)
                if not data:
                    line = bytes(self._rbuf)
                    self._rbuf.clear()
                    return line
                self._rbuf += data

        def data_stream(self, segments):
            """DATA with the message streamed from its chunks (see :func:`smtp_data`)."""
            self.putcmd("data")
            code, msg = self.getreply()
            if code != 354:
                return code, msg
            for buf in smtp_data(segments):
                self.sock.sendall(buf)
            if self.log is not None:
                self.log("C: <the message>")
                self.log("C: .")
            return self.getreply()

    class SSLClient(Client, smtplib.SMTP_SSL):
        implicit_tls = True

    return Client, SSLClient


class _LazyContext:
    """No TLS context yet: made when STARTTLS is offered."""


def deliver_smtp(url, segments, size, sender, recipients, **options):
    """Deliver over SMTP; a :class:`Report`, or an exception carrying ``undelivered``.

    ``options``: those of :func:`smtp_deliveries`.
    """
    return _one(smtp_deliveries(url, [(segments, size)], sender, recipients, **options))


def _one(deliveries):
    """The Report of a one-message delivery, the session run to its end (QUIT); or its exception raised."""
    ((report, exc),) = list(deliveries)
    if exc is not None:
        raise exc
    return report


def smtp_deliveries(
    url,
    messages,
    sender,
    recipients,
    *,
    user=None,
    password=None,
    auth=None,
    tls="auto",
    trust_file=None,
    timeout=30,
    log=None,
    check=False,
    smtputf8=False,
    warn=None,
    proxy=None,
):
    """Deliver each of ``messages`` over one SMTP session (through ``proxy``, a proxy URL,
    when given).  A message is a ``(segments, size)`` pair, sent from ``sender`` to
    ``recipients``, or an :class:`Outgoing` (any object with ``segments``, ``size``,
    ``sender`` and ``recipients``) with its own envelope: one session carries messages
    from different senders to different recipients (pysendmail's queue run).

    An :class:`Outgoing` message whose own sender or recipients are not ASCII is sent with
    SMTPUTF8 whatever ``smtputf8`` says (which is for the messages that take the call's
    envelope, and any that must go with it).

    Yields ``(Report, None)`` or ``(None, exception)`` for each message, in
    order.  A Report's ``refused`` keeps each recipient's reply code, so 4xx (try
    again) and 5xx (refused for good) stay told apart.  An exception caused by a
    server's reply carries its code as ``smtp_code`` (None for a failed connection,
    TLS, a timeout).  A message the server refuses leaves the session usable for the
    next; when the session itself fails (connection, TLS, AUTH, a hang-up), that
    message and every one after it get the failure, without a new try, each
    exception's ``undelivered`` naming that message's recipients.
    """
    import smtplib
    import ssl

    Client, SSLClient = _smtp_classes()
    host, port = url.host, url.port
    where = host
    messages = iter(messages)

    recipients = [] if recipients is None else recipients

    def all_fail(exc, untried=False):
        """``exc`` for every message left; ``untried``: the session broke before they were tried."""
        for message in messages:
            failure = _undelivered_for(exc, _envelope(message, sender, recipients)[3], recipients)
            if untried:
                import copy

                failure = copy.copy(failure) if failure is exc else failure
                failure.untried = True
            yield None, failure

    # certificates are loaded only when TLS is used (it costs 20 ms), but a bad trust file is said at once
    context = tls_context(trust_file) if trust_file or url.scheme == "smtps" else _LazyContext()
    if log is not None:
        log(
            "=== connecting to %s port %d%s%s"
            % (host, port, " (TLS)" if url.scheme == "smtps" else "", proxy_words(proxy))
        )
    try:
        from pipemail.message import fqdn

        name = fqdn()  # EHLO with this machine's name, not smtplib's getfqdn() (localhost on many hosts)
        client = (
            SSLClient(timeout=timeout, context=context, local_hostname=name)
            if url.scheme == "smtps"
            else Client(timeout=timeout, local_hostname=name)
        )
        client.log = log
        client.proxy = proxy
        client._host = host  # smtplib checks the certificate against it (set by __init__ only)
        code, msg = client.connect(host, port)  # by network.connect and wrap_tls (_get_socket)
        if code != 220:
            raise smtplib.SMTPConnectError(code, msg)
    except smtplib.SMTPConnectError as exc:
        cls = TempFailError if exc.smtp_code < 500 else UnavailableError
        yield from all_fail(
            _fail(
                cls,
                "%s refused the connection: %d %s" % (where, exc.smtp_code, _text(exc.smtp_error)),
                recipients,
                exc.smtp_code,
            )
        )
        return
    except PipemailError as exc:  # no connection, or its TLS failed (network's words)
        exc.undelivered = list(recipients)
        yield from all_fail(exc)
        return
    except (OSError, smtplib.SMTPException) as exc:
        if _timed_out(exc) and client.step != "connecting":
            failure = _fail(TempFailError, TIMED_OUT % (where, timeout, client.step), recipients)
        else:
            failure = _fail(TempFailError, CANNOT_CONNECT % (host, port, why(exc)), recipients)
        yield from all_fail(failure)
        return

    def session_failure(exc):
        if isinstance(exc, PipemailError):
            return exc
        if isinstance(exc, ssl.SSLCertVerificationError):
            return _fail(UnavailableError, UNTRUSTED % (where, exc.verify_message), recipients)
        if _timed_out(exc):
            return _fail(TempFailError, TIMED_OUT % (where, timeout, client.step), recipients)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return _fail(TempFailError, "%s closed the connection" % where, recipients)
        return _fail(TempFailError, "connection to %s failed: %s" % (where, why(exc)), recipients)

    failures = (PipemailError, OSError, smtplib.SMTPException)
    try:
        try:
            _start(client, context, trust_file, url, recipients, user, password, auth, tls, log, warn)
        except failures as exc:
            yield from all_fail(session_failure(exc))
            return
        for message in messages:
            segments, size, m_sender, m_recipients = _envelope(message, sender, recipients)
            # SMTPUTF8 for a message whose own envelope needs it (the others go without, to any server)
            utf8 = smtputf8 or (
                m_recipients is not recipients and not all(a.isascii() for a in [m_sender, *m_recipients])
            )
            try:
                report = _transaction(client, where, segments, size, m_sender, m_recipients, check, utf8)
            except PipemailError as exc:  # the server refused this message: the session goes on
                yield None, exc
                if exc.smtp_code == 421:  # ... unless it closes the connection (RFC 5321 4.2.2)
                    yield from all_fail(_fail(TempFailError, "%s closed the connection" % where, recipients), True)
                    return
                continue
            except (OSError, smtplib.SMTPException) as exc:
                failure = session_failure(exc)
                yield None, _undelivered_for(failure, m_recipients, recipients)
                yield from all_fail(failure, untried=True)
                return
            yield report, None
        try:
            client.quit()
        except Exception:  # every message is settled; a failed goodbye changes nothing
            pass
    finally:
        try:
            client.close()
        except Exception:  # closing what failed: nothing more to say
            pass


def _timed_out(exc):
    """Whether ``exc`` is a wait that ran out (smtplib reports some as SMTPServerDisconnected)."""
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _text(raw):
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return " ".join(str(raw).split())


def _reply_error(step, where, code, msg, recipients):
    cls = TempFailError if code < 500 else UnavailableError
    return _fail(cls, "%s refused by %s: %d %s" % (step, where, code, _text(msg)), recipients, code)


def _start(client, context, trust_file, url, recipients, user, password, auth, tls, log, warn):
    """EHLO, STARTTLS as the options say, EHLO again, AUTH."""
    where = url.host
    code, msg = client.ehlo()
    if code != 250:
        code, msg = client.helo()
        if code != 250:
            raise _reply_error("EHLO", where, code, msg, recipients)
    if url.scheme == "smtp":
        if client.has_extn("starttls"):
            if isinstance(context, _LazyContext):
                context = tls_context(trust_file)
            code, msg = client.starttls(context=context)
            if log is not None:
                log("=== TLS started (%s); certificate: %s" % (client.sock.version(), cert_subject(client.sock)))
            code, msg = client.ehlo()
            if code != 250:
                raise _reply_error("EHLO", where, code, msg, recipients)
        else:
            try:
                allow_cleartext(SMTP_CLEARTEXT, url.host, tls, where, warn, proxy=client.proxy)
            except UnavailableError as exc:
                exc.undelivered = list(recipients)
                raise
    elif log is not None:
        log("=== TLS (%s); certificate: %s" % (client.sock.version(), cert_subject(client.sock)))
    if user:
        _authenticate(client, where, user, password, auth, recipients, url.host, url.port)


def _transaction(client, where, segments, size, sender, recipients, check, smtputf8):
    """MAIL FROM, RCPT TO each, DATA (RSET instead with ``check`` or when nobody was accepted)."""
    import smtplib

    limit = client.esmtp_features.get("size", "")
    if limit.isdigit() and int(limit) and size > int(limit):
        raise _fail(
            UnavailableError,
            "the message is %d bytes and %s accepts at most %s (SIZE): split it "
            "(pymail --max-size, pyshar -L) or send it another way" % (size, where, limit),
            recipients,
            552,  # what the server answers such a message (RFC 1870): refused for good
        )
    options = []
    if limit.isdigit() and int(limit):
        options.append("SIZE=%d" % size)
    if smtputf8:
        if not client.has_extn("smtputf8"):
            raise _fail(
                UnavailableError,
                "an address needs SMTPUTF8, which %s does not offer" % where,
                recipients,
                553,  # what a server answers such an address without SMTPUTF8 (RFC 6531): refused for good
            )
        options.append("SMTPUTF8")
    if client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    code, msg = client.mail(sender, options)
    if code != 250:
        try:
            client.rset()  # ready for the next message, if any
        except (OSError, smtplib.SMTPException):
            pass
        raise _reply_error("MAIL FROM:<%s>" % sender, where, code, msg, recipients)
    report = Report()
    for r in recipients:
        code, msg = client.rcpt(r)
        if code in (250, 251):
            report.accepted.append(r)
        else:
            report.refused[r] = (code, "RCPT TO:<%s> refused by %s: %d %s" % (r, where, code, _text(msg)))
    if check or not report.accepted:
        client.rset()
        return report
    code, msg = client.data_stream(segments)
    if code != 250:
        try:
            client.rset()  # a DATA refused before its 354 leaves the transaction open
        except (OSError, smtplib.SMTPException):
            pass
        raise _reply_error("the message (DATA)", where, code, msg, recipients)
    return report


def _authenticate(client, where, user, password, auth, recipients, host, port):
    import base64
    import smtplib

    from pipemail import sasl

    if password is None:
        raise _fail(
            ConfigError,
            "no password for %s at %s: set PIPEMAIL_PASSWORD, password_command or ~/.netrc "
            "(see pipemail.conf(5))" % (user, where),
            recipients,
        )
    if not client.has_extn("auth"):
        raise _fail(UnavailableError, "%s does not offer AUTH, and a user is set (%s)" % (where, user), recipients)
    offered = client.esmtp_features.get("auth", "").upper().split()
    mech = (auth or ("plain" if "PLAIN" in offered else "login")).upper()
    if auth and mech not in offered:  # the account names a way this server does not take: nothing sent
        raise _fail(
            UnavailableError,
            "%s does not offer AUTH %s (its mechanisms: %s)" % (where, mech, ", ".join(sorted(offered)) or "none"),
            recipients,
        )
    client.redact = True
    try:
        if mech in ("XOAUTH2", "OAUTHBEARER"):
            make = sasl.xoauth2 if mech == "XOAUTH2" else lambda u, t: sasl.oauthbearer(u, t, host, port)
            secret = make(user, password)
            code, msg = client.docmd("AUTH", "%s %s" % (mech, base64.b64encode(secret).decode()))
            if code == 334:  # the token refused, the reason as a challenge: end the exchange for the 5xx
                code, msg = client.docmd(base64.b64encode(sasl.ERROR_ANSWER[mech]).decode())
        elif mech == "PLAIN":
            code, msg = client.docmd("AUTH", "PLAIN " + base64.b64encode(sasl.plain(user, password)).decode())
        elif mech == "LOGIN":
            code, msg = client.docmd("AUTH", "LOGIN " + base64.b64encode(user.encode()).decode())
            if code == 334:
                code, msg = client.docmd(base64.b64encode(password.encode()).decode())
        else:
            raise _fail(ConfigError, "unknown auth mechanism %s" % mech, recipients)
    except smtplib.SMTPException as exc:
        raise _fail(NoPermError, "AUTH failed at %s: %s" % (where, exc), recipients) from None
    finally:
        client.redact = False
    if code != 235:
        cls = TempFailError if 400 <= code < 500 else NoPermError
        raise _fail(cls, "AUTH %s refused by %s: %d %s" % (mech, where, code, _text(msg)), recipients, code)


__all__ = [
    "Report",
    "Outgoing",
    "deliver_smtp",
    "smtp_deliveries",
    "deliver_sendmail",
    "deliver_mbox",
    "deliver_maildir",
    "deliver_stdout",
    "check_local",
    "LENGTH_HEADER",
    "UNDELIVERED_HEADER",
    "Kept",
    "FileChunks",
    "save_dead_letter",
    "dead_letters",
    "read_dead_letter",
    "smtp_data",
    "gathered",
]


# -- choosing and running a transport; dead letters -----------------------------------------


def dead_letter_path(path=None, env=None):
    env = os.environ if env is None else env
    return path or env.get("DEAD") or os.path.join(os.path.expanduser("~"), "dead.letter")


def resolve(transport=None, account=None, env=None):
    """The transport URL to use: the option, the account's, else local sendmail if there is one."""
    from pipemail.config import split_url

    url = transport or (account.transport if account is not None else None)
    if url:
        return split_url(url, kind="transport")
    path = sendmail_path(env=env)
    if os.access(path, os.X_OK):
        return split_url("sendmail:" + path)
    raise ConfigError(
        "no transport: give --transport smtp://HOST (or smtps://, sendmail:, mbox:, maildir:, -), "
        "or set one in ~/.config/pipemail/config.toml (see pipemail.conf(5))"
    )


def deliver(url, segments, size, sender, recipients, **options):
    """Deliver one message by ``url`` (a config.URL); a Report, or an exception with ``undelivered``.

    ``options``: those of :func:`deliver_each`.
    """
    return _one(deliver_each(url, [(segments, size)], sender, recipients, **options))


def _smtp_options(url, account, user, tls, trust_file, env):
    """Who to log in as, with what, and how TLS goes: the command line's, else the URL's or the account's."""
    from pipemail import config

    user = user or url.user or (account.user if account is not None else None)
    return {
        "user": user,
        "password": config.password(account, user, url.host, env) if user else None,
        "auth": account.auth if account is not None else None,
        "tls": tls or (account.tls if account is not None and account.tls else "auto"),
        "trust_file": trust_file or (account.tls_trust_file if account is not None else None),
    }


def deliver_each(
    url,
    messages,
    sender,
    recipients,
    *,
    account=None,
    user=None,
    tls=None,
    trust_file=None,
    timeout=30,
    log=None,
    check=False,
    smtputf8=False,
    warn=None,
    stdout=None,
    stdout_mbox=False,
    env=None,
    proxy=None,
):
    """Deliver each of ``messages`` by ``url``: ``(segments, size)`` pairs, the same envelope
    (``sender``, ``recipients``) for all, or :class:`Outgoing` messages each with its own.

    Over SMTP one session carries them all (one login, one password lookup);
    other transports take them one by one.  To ``-`` (``stdout``) each message
    is written as it is, or with ``stdout_mbox`` (the caller sends several) as
    one message of an mbox, so that the output can be told apart.  With
    ``check`` nothing is sent: SMTP goes up to RCPT TO, other transports are
    checked as :func:`check_local` says.  Yields ``(Report, None)`` or
    ``(None, exception)`` for each message, in order.  ``proxy``: the proxy URL
    SMTP goes through; None takes the account's ``proxy``, "" none at all.
    """
    if url.scheme in ("smtp", "smtps"):
        try:
            options = _smtp_options(url, account, user, tls, trust_file, env)
            from pipemail import config

            proxy = config.proxy(account, proxy)
        except PipemailError as exc:
            exc.undelivered = list(recipients or ())
            for message in messages:
                yield None, _undelivered_for(exc, _envelope(message, sender, recipients)[3], recipients)
            return
        yield from smtp_deliveries(
            url,
            messages,
            sender,
            recipients,
            **options,
            timeout=timeout,
            log=log,
            check=check,
            smtputf8=smtputf8,
            warn=warn,
            proxy=proxy,
        )
        return
    for message in messages:  # re-iterable chunks: never gathered into a list
        segments, _size, m_sender, m_rcpts = _envelope(message, sender, recipients)
        try:
            if check:
                report = check_local(url, m_rcpts, env)
            elif url.scheme == "sendmail":
                report = deliver_sendmail(sendmail_path(url.path, env), segments, m_sender, m_rcpts, timeout, warn)
            elif url.scheme == "mbox":
                report = deliver_mbox(url.path, segments, m_sender, m_rcpts, warn)
            elif url.scheme == "maildir":
                report = deliver_maildir(url.path, segments, m_rcpts)
            else:
                report = deliver_stdout(stdout, segments, m_rcpts, m_sender if stdout_mbox else None)
        except PipemailError as exc:
            yield None, exc
            continue
        yield report, None


_NOT_CHECKED = "recipients are not checked without SMTP"


def check_local(url, recipients, env=None):
    """--check for a transport other than SMTP: what can be checked without sending, in a Report's ``checked``.

    The sendmail program must be executable (else ConfigError, as sending
    would say), an mbox or a Maildir writable or creatable (else
    CantCreateError); nothing is written, and no recipient is checked.
    """
    if url.scheme == "sendmail":
        path = sendmail_path(url.path, env)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            why = "No such file or directory" if not os.path.exists(path) else "Permission denied"
            raise _fail(ConfigError, "cannot run %s: %s" % (path, why), recipients)
        said = "sendmail:%s is executable; %s" % (path, _NOT_CHECKED)
    elif url.scheme in ("mbox", "maildir"):
        path = os.path.abspath(url.path)
        what = "mailbox" if url.scheme == "mbox" else "Maildir"
        if os.path.exists(path):
            how, why = "can be written to", None
            if url.scheme == "maildir" and not os.path.isdir(path):
                why = "Not a directory"
            elif url.scheme == "mbox" and os.path.isdir(path):
                why = "Is a directory"
            elif not os.access(path, os.W_OK):
                why = "Permission denied"
        else:
            how, why = "can be created", None
            parent = os.path.dirname(path)
            if url.scheme == "maildir":  # made with its parents
                while not os.path.exists(parent):
                    parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                why = "No such file or directory"
            elif not os.access(parent, os.W_OK):
                why = "Permission denied"
        if why is not None:
            raise _fail(CantCreateError, "cannot write %s %s: %s" % (what, shown(url.path), why), recipients)
        said = "%s:%s %s (nothing was written); %s" % (url.scheme, shown(url.path), how, _NOT_CHECKED)
    else:
        said = "the message would be written to standard output; %s" % _NOT_CHECKED
    return Report(recipients, checked=said)


# -- the dead letter: written here, read back by pymail --resend ----------------------------------
#
# Each kept message is one mbox message whose first header lines are pipemail's own:
#     X-Pipemail-Length: N              the size of the message kept (before mboxrd quoting)
#     X-Pipemail-Undelivered-To: a, b   the recipients it did not reach (folded between them)
#     X-Pipemail-Wrap: sign, encrypt   (only on a message kept unwrapped that was to be signed
#                                      and/or encrypted: --resend wraps it first, or refuses)
# then the message as it was to be sent.  The length tells a message cut short by a
# kill (SIGKILL cannot be held off) from a whole one.  Older dead letters have no length.

LENGTH_HEADER = "X-Pipemail-Length"
UNDELIVERED_HEADER = "X-Pipemail-Undelivered-To"
WRAP_HEADER = "X-Pipemail-Wrap"
WRAPS = ("sign", "encrypt")  # the words of WRAP_HEADER, in this order


class Kept:
    """A message of a dead letter, never held whole: ``sender``, ``segments`` (its bytes as
    re-iterable chunks: the message being sent, or a spool file's :class:`FileChunks`),
    ``undelivered`` (recipients), ``length`` (the size it was kept with; None in dead letters
    older than the header), ``size`` (the bytes ``segments`` holds; counted when not given)
    and ``headed`` (whether it holds a blank line, the end of its header block: how a
    message of an older dead letter is told torn; looked for when not given); ``wrap`` (of
    :data:`WRAPS`: what was to be done to a message kept unwrapped, which --resend does first)."""

    def __init__(self, sender, segments, undelivered, length=None, size=None, headed=None, wrap=()):
        self.sender = sender
        self.segments = segments
        self.undelivered = undelivered
        self.length = length
        self.wrap = tuple(w for w in WRAPS if w in wrap)
        if size is None or headed is None:
            counted, blank = _scan(segments)
            size = counted if size is None else size
            headed = blank if headed is None else headed
        self.size = size
        self.headed = headed

    @property
    def torn(self):
        """Whether a kill cut the message short while it was being kept."""
        if self.length is not None:
            return self.length != self.size
        return bool(self.size) and not self.headed  # no end to its header block

    def mbox_chunks(self):
        """The message as the dead letter holds it, as a stream of chunks (a torn one keeps the
        length it was meant to have, or its lack of one).  ``segments`` is read once more; if it
        does not give ``size`` bytes again (a file changed meanwhile), IOFailure is raised
        at its end, and :func:`pipemail.mailbox.append` cuts what it wrote away."""
        headers = []
        if self.length is not None or not self.torn:
            headers.append((LENGTH_HEADER, str(self.size if self.length is None else self.length)))
        if self.undelivered:  # folded between addresses: 300 of them made a 6,000-byte line
            from pipemail import headers as fields

            value = fields.address_list(UNDELIVERED_HEADER, [("", r) for r in self.undelivered])
            headers.append((UNDELIVERED_HEADER, value))
        if self.wrap:
            headers.append((WRAP_HEADER, ", ".join(self.wrap)))
        return mailbox.mbox_chunks(self._counted(), self.sender, headers)

    def _counted(self):
        total = 0
        for seg in self.segments:
            total += len(seg)
            yield seg
        if total != self.size:
            from pipemail.errors import IOFailure

            raise IOFailure("the message changed while it was kept (%d bytes, then %d)" % (self.size, total))


def _scan(segments):
    """One pass over ``segments``, counting, not holding: its size, and whether it holds a blank line."""
    size, blank, last = 0, False, b""
    for seg in segments:
        if not seg:
            continue
        if not blank and (b"\n\n" in seg or (last == b"\n" and seg[:1] == b"\n")):
            blank = True
        size += len(seg)
        last = bytes(seg[-1:])
    return size, blank


def keep_dead_letter(path, segments, sender, undelivered, warn, wrap=()):
    """Keep the message in the dead letter ``path`` and say where (``warn``), with how to send it
    again; IOFailure when it cannot be kept (why it was not delivered has been said already: the
    line says only what was lost).  pymail's and pysendmail's one way to keep a message.
    ``wrap``: see :class:`Kept`."""
    try:
        save_dead_letter(path, segments, sender, undelivered, warn, wrap=wrap)
    except PipemailError as exc:
        raise IOFailure("the message could not be kept: %s" % exc) from None
    warn(
        "the message is kept in %s for %s (pymail --resend %s sends it again)"
        % (shown(path), ", ".join(undelivered), shown(path))
    )


def save_dead_letter(path, segments, sender, undelivered, warn=None, wrap=()):
    """Append the message ``segments`` (re-iterable chunks) to the dead letter ``path``, for the
    recipients ``undelivered``: a pass that counts its length (X-Pipemail-Length), then one that
    writes it, chunk by chunk; nothing is held whole, nothing half-written is left."""
    size, ends = 0, True
    for seg in segments:
        if seg:
            size += len(seg)
            ends = seg[-1:] == b"\n"
    length = size if ends else size + 1  # a newline is added, as mbox_chunks ends it
    kept = Kept(sender, segments, list(undelivered), length, size=size, headed=True, wrap=wrap)
    # gathered into blocks: small chunks are not each a write (a kill tears the file at a block's end)
    mailbox.append(path, gathered(kept.mbox_chunks(), mailbox.CHUNK), warn=warn)


class FileChunks:
    """The bytes ``start`` to ``start + length`` of the open file ``fd`` as re-iterable chunks
    of at most :data:`BLOCK` bytes, read when iterated (os.pread: the file offset is left alone).
    A file that turns out shorter is an IOFailure (``label`` names it)."""

    BLOCK = 1 << 20

    def __init__(self, fd, start, length, label="the spool file"):
        self.fd = fd
        self.start = start
        self.length = length
        self.label = label

    def __iter__(self):
        from pipemail.errors import IOFailure

        pos, end = self.start, self.start + self.length
        while pos < end:
            try:
                data = os.pread(self.fd, min(self.BLOCK, end - pos), pos)
            except OSError as exc:
                raise IOFailure("cannot read %s: %s" % (self.label, describe_oserror(exc))) from None
            if not data:
                raise IOFailure("cannot read %s: it is shorter than it was" % self.label)
            pos += len(data)
            yield data


HEAD_LIMIT = 1 << 20  # pipemail's own lines are looked for in at most this much of a message's start


def _pipemail_lines(chunks):
    """``(length, undelivered, wrap, rest)`` of a dead letter's message given as ``chunks``: pipemail's
    own header lines taken from its start; ``rest`` the message's chunks after them (an iterator
    that reads ``chunks`` on)."""
    chunks = iter(chunks)
    head = bytearray()
    for chunk in chunks:
        head += chunk
        if b"\n\n" in head or len(head) >= HEAD_LIMIT:
            break
    raw = bytes(head)
    del head
    fields = {}
    while True:  # pipemail's own lines come first, right after the From_ line
        name, colon, rest = raw.partition(b":")
        key = name.decode("ascii", "replace").lower()
        if not colon or key not in (LENGTH_HEADER.lower(), UNDELIVERED_HEADER.lower(), WRAP_HEADER.lower()):
            break
        if key in fields:
            break
        end = rest.find(b"\n")
        while end >= 0 and rest[end + 1 : end + 2] in (b" ", b"\t"):  # folded
            end = rest.find(b"\n", end + 1)
        if end < 0:
            break
        fields[key] = b" ".join(rest[:end].split()).decode("utf-8", "surrogateescape")
        raw = rest[end + 1 :]
    length = fields.get(LENGTH_HEADER.lower())
    rcpts = [r.strip() for r in fields.get(UNDELIVERED_HEADER.lower(), "").split(",") if r.strip()]
    length = int(length) if length is not None and length.isdigit() else None
    wrap = [w.strip().lower() for w in fields.get(WRAP_HEADER.lower(), "").split(",") if w.strip()]

    def rest_chunks():
        if raw:
            yield raw
        yield from chunks

    return length, rcpts, wrap, rest_chunks()


def _sender(from_line):
    return from_line[5:].split(b" ", 1)[0].decode("utf-8", "surrogateescape")


def dead_letters(stream, spool, label="dead.letter"):
    """The messages of the dead letter ``stream`` (binary, read forward), one at a time, as
    ``(Kept, last)``: each message is written to the open file ``spool`` (its fd; truncated
    for each) and its Kept reads it from there (:class:`FileChunks`), so that nothing is held
    whole; ``last`` tells whether it is the dead letter's last message.  A Kept is valid
    until the next one is asked for.  IOFailure when the spool cannot be written (a full disk)."""
    from pipemail.errors import IOFailure

    messages = mailbox.mbox_messages(stream, label)
    item = next(messages, None)
    while item is not None:
        from_line, chunks = item
        length, rcpts, wrap, rest = _pipemail_lines(chunks)
        size, blank, last = 0, False, b""
        try:
            os.ftruncate(spool, 0)
            for chunk in rest:
                if not chunk:
                    continue
                if not blank and (b"\n\n" in chunk or (last == b"\n" and chunk[:1] == b"\n")):
                    blank = True
                view = memoryview(chunk)
                while view:
                    n = os.pwrite(spool, view, size)
                    size += n
                    view = view[n:]
                last = chunk[-1:]
        except OSError as exc:
            raise IOFailure("cannot spool a message of %s: %s" % (label, describe_oserror(exc))) from None
        kept = Kept(_sender(from_line), FileChunks(spool, 0, size), rcpts, length, size=size, headed=blank, wrap=wrap)
        item = next(messages, None)
        yield kept, item is None


def read_dead_letter(path, fd=None):
    """The :class:`Kept` messages of the dead letter ``path`` (read through ``fd`` when given), each
    held in memory: for small dead letters (the tests); pymail --resend uses :func:`dead_letters`."""
    out = []
    for from_line, raw in read_mbox(path, fd):
        length, rcpts, wrap, rest = _pipemail_lines([raw])
        out.append(Kept(_sender(from_line), list(rest), rcpts, length, wrap=wrap))
    return out


def lock_mbox(path, warn=None):
    """Open ``path`` and hold its locks (those mailbox.append takes): a :class:`pipemail.mailbox.Locked`
    whose ``fd`` is read, and which is given back to :func:`pipemail.mailbox.unlock`."""
    return mailbox.lock(path, create=False, warn=warn)


def read_mbox(path, fd=None):
    """The messages of an mbox as ``(from_line, bytes)``, each held in memory: for small mailboxes
    (the tests); a stream is :func:`pipemail.mailbox.mbox_messages`."""
    label = shown(os.fsdecode(path))
    try:
        if fd is not None:
            f = os.fdopen(os.dup(fd), "rb")
            f.seek(0)
        else:
            f = open(path, "rb")
    except OSError as exc:
        from pipemail.errors import NoInputError

        raise NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))) from None
    with f:
        return [(line, b"".join(chunks)) for line, chunks in mailbox.mbox_messages(f, label)]
