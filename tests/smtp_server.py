"""A real SMTP server for the tests: aiosmtpd's Controller on loopback, with STARTTLS
(certificates from trustme), AUTH and scripted refusals where a test needs them.

Every message it receives goes through the message lint (tests/lint.py), whatever
handle_DATA a test puts in place: a message that fails it fails the test at teardown
(``smtp_server(lint=False)`` for a test that sends a hostile message on purpose)."""

import socket
import ssl

import pytest


def free_port(host="127.0.0.1"):
    # aiosmtpd 1.4.6 cannot start on port 0: pick one ourselves
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """What the server got, and how it should answer."""

    def __init__(self):
        self.messages = []  # (mail_from, [rcpt], bytes)
        self.rcpt_replies = {}  # address -> reply, e.g. "550 5.1.1 user unknown"
        self.data_reply = None  # e.g. "554 5.6.0 rejected"
        self.data_command_replies = {}  # the Nth DATA command -> a reply instead of 354, e.g. {2: "554 no"}
        self.data_commands = 0
        self.logins = []
        self.error_answers = []  # what the client answered to the error challenge of a refused token
        self.host = "127.0.0.1"
        self.port = None
        self.ca_file = None
        self.lint = True
        self.lint_failures = []  # (envelope recipients, what the lint said)
        self.ehlo_names = []  # the name each EHLO gave
        self.bulk = False  # DATA read in one piece (_bulk_data), not a line at a time

    def check(self, envelope):
        """The lint of a received message; a failure is recorded, and fails the test at teardown."""
        if not self.lint:
            return
        from lint import lint

        try:
            lint(envelope.original_content)
        except AssertionError as exc:
            self.lint_failures.append((list(envelope.rcpt_tos), str(exc)))

    @property
    def url(self):
        return "smtp://%s:%d" % (self.host, self.port)

    # aiosmtpd handler hooks
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo_names.append(hostname)
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    xoauth2 = None  # (user, "Bearer TOKEN") that AUTH XOAUTH2 accepts
    oauthbearer = None  # (user, "Bearer TOKEN") that AUTH OAUTHBEARER accepts

    async def _oauth(self, server, args, mech):
        """A token as Gmail checks it: a wrong one gets its JSON error as a 334 challenge first,
        and the 535 only after the client's answer (recorded in error_answers)."""
        import base64

        from aiosmtpd.smtp import AuthResult

        blob = base64.b64decode(args[1]).decode()
        if mech == "OAUTHBEARER":
            gs2, _, blob = blob.partition("\x01")
            user = dict(f.split("=", 1) for f in gs2.split(",") if "=" in f).get("a")
        fields = dict(f.split("=", 1) for f in blob.split("\x01") if "=" in f)
        if mech == "XOAUTH2":
            user = fields.get("user")
        ok = (user, fields.get("auth")) == getattr(self, mech.lower())
        self.logins.append((mech, user, ok))
        if not ok:
            answer = await server.challenge_auth('{"status":"401","schemes":"bearer"}')
            self.error_answers.append(answer)
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server, args):
        return await self._oauth(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server, args):
        return await self._oauth(server, args, "OAUTHBEARER")

    data_delay = 0  # seconds to wait before answering the end of DATA (a slow server)

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            import asyncio

            await asyncio.sleep(self.data_delay)
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Message accepted"


async def _bulk_data(smtp, arg):
    """aiosmtpd 1.4.6's smtp_DATA, the message read in one piece instead of a line at a time.

    aiosmtpd reads DATA with one readuntil(CRLF) and a dozen Python steps per line: 4-5 s of
    the test process's CPU for 100 MB of base64, where the client that sends it takes under
    one.  This reads up to the CRLF.CRLF that ends the data and then does what aiosmtpd does:
    the same checks (a line over line_length_limit: 500; over data_size_limit: 552; both only
    after the whole message is read), the same dot-unstuffing, the same handler hook and
    replies.  Only a server whose size limit a test raised for a big message reads this way."""
    if await smtp.check_helo_needed():
        return
    if await smtp.check_auth_needed("DATA"):
        return
    if not smtp.envelope.rcpt_tos:
        await smtp.push("503 Error: need RCPT command")
        return
    if arg:
        await smtp.push("501 Syntax: DATA")
        return
    await smtp.push("354 End data with <CR><LF>.<CR><LF>")
    from aiosmtpd.smtp import MISSING

    assert not smtp._decode_data  # the fixture's servers keep the bytes
    reader = smtp._reader
    limit = reader._limit
    reader._limit = 1 << 40  # the whole message may sit in the buffer
    try:
        data = b""
        first = await reader.readuntil(b"\r\n")
        if first != b".\r\n":  # else an empty message
            # the first line's CRLF put back, so that a "." line right after it ends the data too
            reader._buffer[:0] = b"\r\n"
            data = first + (await reader.readuntil(b"\r\n.\r\n"))[2:-3]
    finally:
        reader._limit = limit
    # aiosmtpd's verdicts, the first one it would come to: a line over its limit, or the data over its size
    lines = data.split(b"\r\n")[:-1]  # every line without its CRLF (data ends with one)
    too_long_at = None  # the bytes aiosmtpd has counted when it finds the first line too long
    if lines and max(map(len, lines)) + 2 > smtp.line_length_limit:
        at = 0
        for line in lines:
            if len(line) + 2 > smtp.line_length_limit:
                # a line whose CRLF is past the reader's limit (= line_length_limit) is too long before
                # it is counted; one of a byte or two more is counted first
                too_long_at = at + (len(line) + 2 if len(line) <= smtp.line_length_limit else 0)
                break
            at += len(line) + 2
    too_much = bool(smtp.data_size_limit) and len(data) > smtp.data_size_limit
    if too_long_at is not None or too_much:
        if too_long_at is not None and not (too_much and too_long_at > smtp.data_size_limit):
            await smtp.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        else:
            await smtp.push("552 Error: Too much mail data")
        smtp._set_post_data_state()
        return
    if data.startswith(b"."):
        data = data[1:]
    original_content = data.replace(b"\r\n.", b"\r\n")  # every CRLF in data ends a line
    smtp.envelope.content = original_content
    smtp.envelope.original_content = original_content
    status = await smtp._call_handler_hook("DATA")
    smtp._set_post_data_state()
    await smtp.push("250 OK" if status is MISSING else status)


def _controller_class():
    from aiosmtpd.controller import Controller

    class _Controller(Controller):
        def factory(self):
            """aiosmtpd's own server, with the DATA command refused where the handler says."""
            smtp = super().factory()
            handler, data = self.handler, smtp._smtp_methods["DATA"]

            async def smtp_DATA(arg):
                handler.data_commands += 1
                reply = handler.data_command_replies.get(handler.data_commands)
                if reply:
                    await smtp.push(reply)
                    return None
                if handler.bulk:
                    return await _bulk_data(smtp, arg)
                return await data(arg)

            smtp._smtp_methods["DATA"] = smtp_DATA
            hook = smtp._handle_hooks["DATA"]  # the handler's, or the one a test put in its place

            async def linted(server, session, envelope):
                handler.check(envelope)
                return await hook(server, session, envelope)

            smtp._handle_hooks["DATA"] = linted
            return smtp

    return _Controller


@pytest.fixture
def smtp_server(tmp_path):
    """smtp_server(tls=False, auth=None, size=None, smtputf8=True, lint=True) -> a running Server."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    _Controller = _controller_class()
    controllers = []

    handlers = []

    def start(
        tls=False, auth=None, size=None, smtputf8=True, implicit_tls=False, xoauth2=None, oauthbearer=None, lint=True
    ):
        handler = Server()
        handler.lint = lint
        handlers.append(handler)
        if xoauth2 is not None or oauthbearer is not None:
            handler.xoauth2, handler.oauthbearer = xoauth2, oauthbearer
            kwargs_auth = {"auth_require_tls": False}
        else:
            kwargs_auth = {}
        kwargs = {"enable_SMTPUTF8": smtputf8, "decode_data": False}
        if size is not None:
            kwargs["data_size_limit"] = size
            handler.bulk = size > 32 << 20  # a limit raised for a big message: read DATA in one piece
        if tls or implicit_tls:
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            handler.ca_file = str(tmp_path / ("ca-%d.pem" % len(controllers)))
            ca.cert_pem.write_to_path(handler.ca_file)
            if tls:
                kwargs["tls_context"] = context
        if auth is not None:

            def authenticator(server, session, envelope, mechanism, auth_data):
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and (auth_data.login.decode(), auth_data.password.decode()) == auth
                )
                handler.logins.append(
                    (mechanism, auth_data.login.decode() if isinstance(auth_data, LoginPassword) else None, ok)
                )
                return AuthResult(success=ok, handled=False)  # handled=True (the default) sends no reply

            kwargs["authenticator"] = authenticator
            kwargs["auth_require_tls"] = bool(tls)
        kwargs.update(kwargs_auth)
        # a token mechanism is offered only by a server given a token for it
        kwargs["auth_exclude_mechanism"] = [
            m for m, t in (("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)) if t is None
        ]
        handler.port = free_port()
        controller = _Controller(
            handler, hostname="127.0.0.1", port=handler.port, ssl_context=context if implicit_tls else None, **kwargs
        )
        controller.start()
        controllers.append(controller)
        return handler

    yield start
    for c in controllers:
        c.stop()
    failures = [f for h in handlers for f in h.lint_failures]
    if failures:
        pytest.fail(
            "%d message(s) received fail the lint (tests/lint.py):\n%s"
            % (len(failures), "\n".join("to %s: %s" % (", ".join(rcpts), why) for rcpts, why in failures))
        )


class RawServer:
    """A scripted loopback server for faults aiosmtpd will not produce (a 421 greeting, a hang-up)."""

    def __init__(self, script):
        import threading

        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            f = conn.makefile("rb")
            for expect, reply in self.script:
                if expect is not None:
                    line = f.readline()
                    if not line:
                        return
                    if expect == "DATA-BODY":
                        while line and line not in (b".\r\n",):
                            line = f.readline()
                if reply is None:
                    return  # hang up
                conn.sendall(reply.encode() + b"\r\n")

    def close(self):
        self.sock.close()
