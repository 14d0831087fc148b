"""pymail's job: compose, pick the transport, deliver, and keep what did not go out."""

import os

from pipemail import message, transport
from pipemail.errors import IOFailure, PipemailError, UsageError, shown


class Options:
    """How to send: the options of the command line that are not about the message."""

    def __init__(
        self,
        account=None,
        transport=None,
        user=None,
        tls=None,
        trust_file=None,
        timeout=30.0,
        log=None,
        check=False,
        dead_letter=None,
        warn=None,
        stdout=None,
        env=None,
        progress=None,
    ):
        self.account = account
        self.transport = transport
        self.user = user
        self.tls = tls
        self.trust_file = trust_file
        self.timeout = timeout
        self.log = log
        self.check = check
        self.dead_letter = dead_letter
        self.warn = warn or (lambda m: None)
        self.stdout = stdout
        self.env = os.environ if env is None else env
        self.progress = progress  # progress(label, total, unit) -> a bar to advance, or None


def _unique(addrs):
    seen = set()
    return [a for a in addrs if not (a in seen or seen.add(a))]


def send_mail(
    body,
    opts,
    *,
    subject=None,
    to=(),
    cc=(),
    bcc=(),
    sender=None,
    attach=(),
    headers=(),
    read_recipients=False,
    stdin_name=None,
    max_size=None,
):
    """Send ``body`` (stdin's bytes); the exit code."""
    from email.utils import formatdate, getaddresses, make_msgid, parseaddr

    from pipemail import config

    account = config.load(env=opts.env).account(opts.account)
    from_pair = message.addresses([sender])[0] if sender else None
    if from_pair is None and account.from_:
        from_pair = message.addresses([account.from_])[0]
    if from_pair is None:
        from_pair = ("", message.default_from())
    to_p, cc_p, bcc_p = message.addresses(to), message.addresses(cc), message.addresses(bcc)
    extra = [message.parse_header_option(h) for h in headers]
    if read_recipients:
        if attach:
            raise UsageError("-t takes the whole message from standard input: it cannot add -a attachments")
        msg = message.from_stdin_message(body)
        listed = getaddresses([v for v in (msg.header(h) for h in ("To", "Cc", "Bcc")) if v])  # 3.13: no empties
        rcpts = [a for _, a in listed if a] + [a for _, a in to_p + cc_p + bcc_p]
        msg.remove_header("Bcc")
        if subject is not None:  # -s with -t: the option wins
            msg.remove_header("Subject")
            msg.add_header("Subject", message.encode_header_value(message.check_value("subject", subject)))
        if msg.header("Date") is None:
            msg.add_header("Date", formatdate(localtime=True))
        if msg.header("Message-ID") is None:
            msg.add_header("Message-ID", make_msgid(domain=message.fqdn()))
        if msg.header("From") is None:
            msg.add_header("From", message.format_address(from_pair))
        else:
            from_pair = parseaddr(msg.header("From"))
        for name, value in extra:
            msg.add_header(name, value)
    else:
        rcpts = [a for _, a in to_p + cc_p + bcc_p]
        msg = message.compose(
            body,
            subject=subject,
            sender=from_pair,
            to=to_p,
            cc=cc_p,
            extra_headers=extra,
            attachments=attach,
            stdin_name=stdin_name,
        )
    rcpts = _unique(rcpts)
    if not rcpts:
        raise UsageError("no recipients: give RECIPIENT operands (or -t with To/Cc/Bcc in the message)")
    if max_size is not None and not read_recipients and attach and msg.size() > max_size:
        return _send_in_parts(
            body,
            opts,
            account,
            max_size,
            subject=subject,
            sender=from_pair,
            to=to_p,
            cc=cc_p,
            extra=extra,
            attach=attach,
            stdin_name=stdin_name,
            rcpts=rcpts,
        )
    return _deliver(msg, from_pair[1], rcpts, opts, account)


_PART_OVERHEAD = 8192  # headers, MIME framing and the part's own header lines, with room to spare


def _send_in_parts(body, opts, account, max_size, *, subject, sender, to, cc, extra, attach, stdin_name, rcpts):
    """--max-size: what does not fit goes as a pyshar archive split into mails of at most max_size."""
    import tempfile

    from pipemail import shar

    def compose(files, part_subject):
        return message.compose(
            body,
            subject=part_subject,
            sender=sender,
            to=to,
            cc=cc,
            extra_headers=extra,
            attachments=files,
            stdin_name=stdin_name,
        )

    riding, packed = [], []
    for path in attach:  # the attachments that fit ride in the first mail, with room for a part
        if compose(riding + [path], subject).size() <= max_size // 2:
            riding.append(path)
        else:
            packed.append(path)
    first = compose(riding, subject).size()
    room = max_size - first - _PART_OVERHEAD
    if room * 57 // 78 < 16 * 1024:
        raise UsageError(
            "--max-size %d leaves too little room for archive parts: give at least %d"
            % (max_size, first + _PART_OVERHEAD + 16 * 1024 * 78 // 57 + 1)
        )
    name = os.path.basename(os.fsdecode(packed[0])) or "parts"
    # members named as the attachments are: by their base names
    members = [shar.Member(os.fsencode(os.path.basename(os.fsdecode(p))), os.fsencode(p), os.stat(p)) for p in packed]

    def part_mail(n, total, data, part_name, seven_bit):
        tag = "[part %0*d/%d]" % (max(2, len(str(total))), n, total)
        part_subject = "%s %s" % (subject, tag) if subject else tag
        if n == 1:
            msg = compose(riding, part_subject)
        else:
            msg = message.compose(b"", subject=part_subject, sender=sender, to=to, cc=cc, extra_headers=extra)
        msg.parts.append(message.attachment_part(data, part_name, "application/x-shar", seven_bit=seven_bit))
        if msg.boundary is None:
            msg.boundary = "=_pipemail_" + os.urandom(12).hex()
            msg.headers.append(("Content-Type", 'multipart/mixed; boundary="%s"' % msg.boundary))
        return msg

    with tempfile.TemporaryDirectory(prefix="pymail-") as tmp:
        # An archive is 7-bit text: parts go as they are (7bit), sized for CRLF line ends, when
        # every one then fits; else (long runs of short lines, names that are not ASCII) the
        # archive is written again in parts sized for base64.
        for limit, seven_bit in ((room * 64 // 66, True), (room * 57 // 78, False)):
            for old in os.listdir(tmp):
                os.unlink(os.path.join(tmp, old))
            packing = _bar(opts, "packing %s" % name, sum(m.size for m in members), "bytes")
            try:
                parts = shar.write_archive(
                    members, prefix=os.fsencode(os.path.join(tmp, name)), limit=limit, advance=packing
                )
            finally:
                if packing is not None:
                    packing.close()
            if not seven_bit or all(
                _wire_size(part_mail(n, len(parts), _read(part), os.path.basename(os.fsdecode(part)), True)) <= max_size
                for n, part in enumerate(parts, 1)
            ):
                break
        total, codes, sent = len(parts), [], []
        url = transport.resolve(opts.transport, account, opts.env)
        keep = not opts.check and url.scheme != "-"
        current = []

        def mails():
            for n, part in enumerate(parts, 1):
                segments = list(
                    part_mail(n, total, _read(part), os.path.basename(os.fsdecode(part)), seven_bit).segments()
                )
                current[:] = [segments]
                yield segments, sum(len(s) + s.count(b"\n") for s in segments)

        sending = _bar(opts, "sending %s" % name, total, "parts")
        said = None
        try:  # one SMTP session for all the parts: one login, one password lookup
            for n, (report, exc) in enumerate(
                transport.deliver_each(url, mails(), sender[1], rcpts, **_options(opts, account, rcpts + [sender[1]])),
                1,
            ):
                if exc is not None:
                    code = exc.exit_code
                    if str(exc) != said:  # a session that failed fails every part after it alike: said once
                        said = str(exc)
                        opts.warn(said)
                    if keep:
                        _keep(opts, current[0], sender[1], getattr(exc, "undelivered", rcpts), said, quiet=True)
                else:
                    code = _settle(report, current[0], sender[1], opts, keep, quiet=True)
                codes.append(code)
                if code == 0:
                    sent.append(n)
                if sending is not None:
                    sending(1)
        except (KeyboardInterrupt, SystemExit):
            if keep and current and len(codes) < total:
                _keep(opts, current[0], sender[1], rcpts, "interrupted")
            raise
        finally:
            if sending is not None:
                sending.close()
    failed = [n for n, c in enumerate(codes, 1) if c]
    if failed:
        where = transport.dead_letter_path(opts.dead_letter, opts.env)
        opts.warn(
            "sent %d of %d parts; not sent: %s%s"
            % (
                len(sent),
                total,
                ", ".join(str(n) for n in failed),
                " (kept in %s: pymail --resend %s sends them again)" % (shown(where), shown(where)) if keep else "",
            )
        )
        bad = [c for c in codes if c]
        return 75 if 75 in bad else bad[0]
    return 0


def _read(path):
    with open(os.fsdecode(path), "rb") as f:
        return f.read()


def _wire_size(msg):
    """The message's size in SMTP DATA: CRLF line ends, and a dot doubled where a line starts with one."""
    return sum(len(s) + s.count(b"\n") + s.count(b"\n.") for s in msg.segments())


def _bar(opts, label, total, unit):
    return opts.progress(label, total, unit) if opts.progress is not None and opts.log is None else None


def _deliver(msg, envelope_from, rcpts, opts, account):
    url = transport.resolve(opts.transport, account, opts.env)
    segments = list(msg.segments())
    keep = not opts.check and url.scheme != "-"
    try:
        report = _send(opts, url, account, segments, envelope_from, rcpts)
    except PipemailError as exc:
        if keep:
            opts.warn(str(exc))  # the reason first, then where the message went
            exc.reported = True
            _keep(opts, segments, envelope_from, getattr(exc, "undelivered", rcpts), str(exc))
        raise
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM from cron's timeout: keep it all the same
        if keep:
            _keep(opts, segments, envelope_from, rcpts, "interrupted")
        raise
    return _settle(report, segments, envelope_from, opts, keep)


def _settle(report, segments, envelope_from, opts, keep, quiet=False):
    """Say who refused the message and keep it for them; the exit code."""
    for _addr, (_code, text) in report.refused.items():
        opts.warn(text)
    if report.refused and keep:
        _keep(opts, segments, envelope_from, report.undelivered, None, quiet=quiet)
    if opts.check:
        for addr in report.accepted:
            opts.warn("check: %s would be accepted" % addr)
    return report.exit_code()


def _options(opts, account, addresses):
    """The keyword arguments of transport.deliver and deliver_each from the command line's options."""
    return {
        "account": account,
        "user": opts.user,
        "tls": opts.tls,
        "trust_file": opts.trust_file,
        "timeout": opts.timeout,
        "log": opts.log,
        "check": opts.check,
        "smtputf8": message.needs_smtputf8(addresses),
        "warn": opts.warn,
        "stdout": opts.stdout,
        "env": opts.env,
    }


def _send(opts, url, account, segments, sender, rcpts):
    """One delivery by ``url`` with the options of the command line."""
    size = sum(len(s) + s.count(b"\n") for s in segments)
    return transport.deliver(url, segments, size, sender, rcpts, **_options(opts, account, rcpts + [sender]))


def _keep(opts, segments, sender, undelivered, why, quiet=False):
    path = transport.dead_letter_path(opts.dead_letter, opts.env)
    try:
        transport.save_dead_letter(path, segments, sender, undelivered)
    except PipemailError as exc:
        raise IOFailure("%s; and the message could not be kept: %s" % (why or "not delivered", exc)) from None
    if not quiet:
        opts.warn(
            "the message is kept in %s for %s (pymail --resend %s sends it again)"
            % (shown(path), ", ".join(undelivered), shown(path))
        )


def resend(path, opts):
    """Send every message of the dead letter ``path`` to the recipients it missed; keep what fails again.

    The file stays locked from reading to its atomic rewrite, so that a pymail
    failing meanwhile appends to the new file (mbox_append checks), not to a
    file about to be replaced.  With ``check`` nothing is sent or rewritten.
    """
    import re

    from pipemail import config
    from pipemail.safefile import Output

    account = config.load(env=opts.env).account(opts.account)
    url = transport.resolve(opts.transport, account, opts.env)
    fd = transport.lock_mbox(path)
    try:
        remaining = []
        codes = []
        for from_line, raw in transport.read_mbox(path, fd):
            head_end = raw.find(b"\n\n")
            head = raw[: head_end + 1] if head_end >= 0 else raw
            m = re.search(rb"(?mi)^X-Pipemail-Undelivered-To: *(.*)\n", head)
            rcpts = [r.strip() for r in m.group(1).decode().split(",") if r.strip()] if m else []
            body = raw[: m.start()] + raw[m.end() :] if m else raw
            sender = from_line[5:].split(b" ", 1)[0].decode("utf-8", "surrogateescape")
            if not rcpts:
                opts.warn("a message in %s names no undelivered recipients; kept as it is" % shown(path))
                remaining.append((sender, body, rcpts))
                continue
            try:
                report = _send(opts, url, account, [body], sender, rcpts)
            except PipemailError as exc:
                opts.warn(str(exc))
                remaining.append((sender, body, getattr(exc, "undelivered", rcpts)))
                codes.append(exc.exit_code)
                continue
            for _addr, (_c, text) in report.refused.items():
                opts.warn(text)
            if report.refused:
                remaining.append((sender, body, report.undelivered))
                codes.append(report.exit_code())
        code = 75 if 75 in codes else (codes[0] if codes else 0)  # as for one message: try-again wins
        if opts.check:
            return code
        out = Output.to_path(path)
        try:
            for sender, body, rcpts in remaining:
                extra = [("X-Pipemail-Undelivered-To", ", ".join(rcpts))] if rcpts else []
                out.write(transport.mbox_bytes([body], sender, extra))
            out.commit(0o600)
        except BaseException:
            out.abort()
            raise
    finally:
        os.close(fd)
    if remaining:
        opts.warn("resend: %d message%s kept in %s" % (len(remaining), "" if len(remaining) == 1 else "s", shown(path)))
    else:
        opts.warn("resend: all messages went out (%s)" % shown(path))
    return code
