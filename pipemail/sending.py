"""pymail's job: compose, pick the transport, deliver, and keep what did not go out."""

import os

from pipemail import message, transport
from pipemail.errors import (
    EX_IOERR,
    EX_OK,
    EX_TEMPFAIL,
    ChangedError,
    DataError,
    IOFailure,
    PipemailError,
    UsageError,
    shown,
)


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
        proxy=None,
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
        self.proxy = proxy  # --proxy URL (socks5://, socks5h://, http://); else the account's ``proxy``
        # A ConfigError met reading the configuration: raised when the message is to go out, so that
        # the message (composed without the account) is kept in the dead letter like any other failure.
        self.config_error = None
        # what a message kept unwrapped was to be ("sign", "encrypt"): marked in the dead letter
        # (X-Pipemail-Wrap), so that --resend signs/encrypts it first, or refuses; never in clear
        self.kept_wrap = ()


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
    attach_charset=None,
    sign=None,
    encrypt=None,
    crypto_kind=None,
    recipient_certs=(),
):
    """Send ``body`` (stdin: bytes, or its spool as a :class:`pipemail.message.FileData`); the exit code.

    The attachments are opened first and held open until the end: what is sent, and
    kept when it fails, is what was opened (a file that changes meanwhile is an IOFailure).

    ``sign``/``encrypt`` (None: the account's ``sign``/``encrypt``), ``crypto_kind``
    ("smime", "openpgp"; None: the account's ``crypto``) and ``recipient_certs`` (S/MIME
    certificate files) sign and encrypt the message (:mod:`pipemail.secure`).  Every
    recipient's certificate or key is found before anything is sent; a recipient the
    message does not list (Bcc) gets a copy of their own, encrypted to them alone."""
    from email.utils import formatdate, getaddresses, make_msgid, parseaddr

    from pipemail import headers as fields

    account = _account(opts)
    wrapper = _wrapper(opts, account, sign, encrypt, crypto_kind, recipient_certs)
    signing = wrapper is not None and wrapper.sign
    if opts.config_error is not None:  # the account's sign/encrypt, as far as its file can be read
        from pipemail import secure

        opts.kept_wrap = tuple(
            w
            for w in secure.config_wraps(opts.account, opts.env)
            if {"sign": sign, "encrypt": encrypt}[w] is not False  # --no-sign, --no-encrypt
        )
        signing = signing or "sign" in opts.kept_wrap  # composed as it will be signed
    from_pair = _one_address("-r", sender) if sender else None
    if from_pair is None and opts.kept_wrap:  # signed later: with the From its certificate names
        from pipemail import secure

        given = secure.readable_account(opts.account, opts.env).get("from")
        try:
            from_pair = _one_address("from", given) if isinstance(given, str) else None
        except PipemailError:
            from_pair = None
    if from_pair is None and account.from_:
        try:
            from_pair = _one_address("from", account.from_)
        except PipemailError as exc:  # a configuration error: the message is composed and kept all the same
            from pipemail.errors import ConfigError

            opts.config_error = opts.config_error or ConfigError(
                "config file %s: account '%s': %s" % (account.config_path, account.name, exc)
            )
    if from_pair is None:
        from_pair = ("", message.default_from())
    to_p, cc_p, bcc_p = message.addresses(to), message.addresses(cc), message.addresses(bcc)
    extra = [message.parse_header_option(h) for h in headers]
    if attach_charset is not None:
        attach_charset = message.charset_name(attach_charset)
    if read_recipients:
        if attach:
            raise UsageError("-t takes the whole message from standard input: it cannot add -a attachments")
        msg = message.from_stdin_message(body)
        # every To, Cc and Bcc field, not only the first of each (a second Bcc is no less a recipient)
        listed = getaddresses(
            [v.replace("\n", "") for n, v in msg.headers if n.lower() in ("to", "cc", "bcc") and v]  # 3.13: no empties
        )
        in_view = getaddresses([v.replace("\n", "") for n, v in msg.headers if n.lower() in ("to", "cc") and v])
        if msg.header("From") is not None:
            from_pair = parseaddr(msg.header("From").replace("\n", ""))
        qualify = _qualifier(opts, account, [from_pair[1]] + [a for _, a in listed + to_p + cc_p + bcc_p])
        from_pair = (from_pair[0], qualify(from_pair[1]))
        # the message's own headers are the user's, kept as given; the envelope is qualified
        rcpts = [qualify(a) for _, a in listed if a] + [qualify(a) for _, a in to_p + cc_p + bcc_p]
        shown = {qualify(a) for _, a in in_view if a}  # the others are not in the message: Bcc
        msg.remove_header("Bcc")
        if subject is not None:  # -s with -t: the option wins
            msg.remove_header("Subject")
            msg.add_header("Subject", message.subject_value(subject))
        if msg.header("Date") is None:
            msg.add_header("Date", formatdate(localtime=True))
        if msg.header("Message-ID") is None:
            msg.add_header("Message-ID", make_msgid(domain=message.fqdn()))
        if msg.header("From") is None:
            msg.add_header("From", fields.address_list("From", [from_pair]))
        for name, value in extra:
            msg.add_header(name, fields.field_value(name, value))
    else:
        attach = [message.open_attachment(p) for p in attach]  # 66 before anything else; held open
        qualify = _qualifier(opts, account, [a for _, a in [from_pair] + to_p + cc_p + bcc_p])
        from_pair = (from_pair[0], qualify(from_pair[1]))
        to_p, cc_p, bcc_p = ([(n, qualify(a)) for n, a in pairs] for pairs in (to_p, cc_p, bcc_p))
        rcpts = [a for _, a in to_p + cc_p + bcc_p]
        shown = {a for _, a in to_p + cc_p}
        msg = message.compose(
            body,
            subject=subject,
            sender=from_pair,
            to=to_p,
            cc=cc_p,
            extra_headers=extra,
            attachments=attach,
            stdin_name=stdin_name,
            attach_charset=attach_charset,
            signing=signing,
        )
    rcpts = _unique(rcpts)
    if not rcpts:
        raise UsageError("no recipients: give RECIPIENT operands (or -t with To/Cc/Bcc in the message)")
    groups, keys = [rcpts], None
    if wrapper is not None:
        from pipemail import secure

        # the signing certificate or key, and every recipient's, checked before anything is sent (78)
        keys = secure.prepare(wrapper, from_pair[1], rcpts)
    if wrapper is not None and wrapper.encrypt:
        seen = [a for a in rcpts if a in shown]
        groups = ([seen] if seen else []) + [[a] for a in rcpts if a not in shown]
    limit = max_size
    if max_size is not None and wrapper is not None:
        limit = wrapper.room(max_size, max(len(g) for g in groups))
    if max_size is not None and msg.size() > limit:
        if read_recipients or not attach:
            return _refuse(
                msg,
                from_pair[1],
                rcpts,
                opts,
                account,
                UsageError(
                    "the message is %d bytes, over --max-size %s, and only attachments are split: "
                    "give the data with -a FILE"
                    % (msg.size(), _kib(max_size))
                    + (" (and the recipients with operands, not -t)" if read_recipients else "")
                    + (" (signed or encrypted: %d bytes before it is wrapped)" % limit if limit != max_size else "")
                ),
                wrapper,
            )
        try:
            plan = _plan_parts(
                body,
                limit,
                subject=subject,
                sender=from_pair,
                to=to_p,
                cc=cc_p,
                extra=extra,
                attach=attach,
                stdin_name=stdin_name,
                attach_charset=attach_charset,
                signing=signing,
                given=max_size,
                grow=None if wrapper is None else lambda n: wrapper.overhead(n, max(len(g) for g in groups)),
            )
        except UsageError as exc:
            return _refuse(msg, from_pair[1], rcpts, opts, account, exc, wrapper)
        if wrapper is not None:
            plan.wrap = _wrapping(wrapper, from_pair[1], keys)
        return _send_in_parts(plan, opts, account, max_size, from_pair[1], rcpts, groups)
    if wrapper is None:
        return _deliver(msg, from_pair[1], rcpts, opts, account)
    from pipemail import secure

    copies = [(secure.wrap(msg, wrapper, from_pair[1], g, keys), g) for g in groups]
    if len(copies) == 1:
        return _deliver(copies[0][0], from_pair[1], copies[0][1], opts, account)
    return _deliver_copies(copies, from_pair[1], opts, account)


def _wrapper(opts, account, sign, encrypt, kind, recipient_certs):
    """The :class:`pipemail.secure.Settings` of the options and the account, or None (nothing to sign or encrypt)."""
    if not (sign or encrypt or kind or recipient_certs or account.sign or account.encrypt):
        return None
    if opts.config_error is not None and (sign or encrypt):
        # nothing is kept: the dead letter would hold in clear what was to be signed or encrypted
        raise opts.config_error
    from pipemail import secure

    return secure.settings(
        account, sign=sign, encrypt=encrypt, kind=kind, recipient_certs=recipient_certs, env=opts.env
    )


def _wrapping(wrapper, sender, keys):
    """``wrap(msg, recipients)``: ``msg`` signed and/or encrypted to ``recipients``."""
    from pipemail import secure

    return lambda msg, rcpts: secure.wrap(msg, wrapper, sender, rcpts, keys)


def _deliver_copies(copies, sender, opts, account):
    """Each ``(message, recipients)`` of ``copies`` with an envelope of its own (a Bcc recipient's copy,
    encrypted to them alone), over one SMTP session; keep what fails; the exit code."""
    everyone = [a for _m, g in copies for a in g]
    try:
        url = _resolve(opts, account)
    except PipemailError as exc:
        keep = _keeps(opts, None)
        if keep:
            opts.warn(str(exc))
            exc.reported = True
            for msg, group in copies:
                _keep(opts, msg.segments(), sender, group)
        raise
    keep = _keeps(opts, url)
    smtp = url.scheme in ("smtp", "smtps")
    outgoing = [transport.Outgoing(m.segments(), m.size() if smtp else None, sender, g) for m, g in copies]
    said, codes, settled = set(), [], 0
    options = _options(opts, account, everyone + [sender])
    deliveries = transport.deliver_each(url, outgoing, sender, everyone, stdout_mbox=True, **options)
    try:
        for (msg, group), (report, exc) in zip(copies, deliveries, strict=True):
            settled += 1
            if exc is not None:
                if str(exc) not in said:
                    said.add(str(exc))
                    opts.warn(str(exc))
                if keep:
                    _keep(opts, msg.segments(), sender, group if exc.undelivered is None else exc.undelivered)
                codes.append(exc.exit_code)
            else:
                codes.append(_settle(report, msg.segments(), sender, opts, keep))
    except (KeyboardInterrupt, SystemExit):
        if keep:
            for msg, group in copies[settled:]:
                _keep(opts, msg.segments(), sender, group)
        raise
    finally:
        deliveries.close()
    codes = [c for c in codes if c]
    return EX_TEMPFAIL if EX_TEMPFAIL in codes else (codes[0] if codes else EX_OK)


def _one_address(what, value):
    """The one ``(name, addr)`` of ``value``: a From that lists two must not lose the second silently."""
    from pipemail.errors import DataError

    pairs = message.addresses([value])
    if len(pairs) != 1:
        raise DataError("%s takes one address: %s" % (what, shown(value)))
    return pairs[0]


def _account(opts):
    """The account of the options; when the configuration is wrong, an empty one and ``opts.config_error`` set.

    Standard input is read by then: the message is composed all the same and
    kept in the dead letter when the error is raised (see :func:`_resolve`).
    """
    from pipemail import config

    try:
        return config.load(env=opts.env).account(opts.account)
    except config.ConfigError as exc:
        opts.config_error = exc
        return config.Account()


def _resolve(opts, account):
    """The transport URL, or the configuration error met earlier, or the one of resolving it
    (a bad --transport, or a bad --proxy: a UsageError, whatever the transport)."""
    if opts.config_error is not None:
        raise opts.config_error
    if opts.proxy:
        from pipemail.config import split_proxy

        split_proxy(opts.proxy)
    return transport.resolve(opts.transport, account, opts.env)


def _qualifier(opts, account, addrs):
    """How bare local names (``root``) go: as given to sendmail and the local transports (the MTA
    qualifies them, as for mailx); over SMTP with the account's ``domain``.  Without one, the
    ConfigError is raised at delivery (:func:`_resolve`), and the message is kept."""
    if not any(a and message.is_bare(a) for a in addrs) or opts.config_error is not None:
        return _as_given
    try:
        url = transport.resolve(opts.transport, account, opts.env)
    except PipemailError:  # the same error at delivery, where the message is kept
        return _as_given
    try:
        return _domain_qualifier(url, account, addrs)
    except PipemailError as exc:
        opts.config_error = exc
        return _as_given


def _as_given(addr):
    return addr


def _domain_qualifier(url, account, addrs):
    """A function giving the bare names among ``addrs`` the account's domain when ``url`` is SMTP;
    a ConfigError saying how to set it when there is none."""
    bare = [a for a in addrs if a and message.is_bare(a)]
    if not bare or url.scheme not in ("smtp", "smtps"):
        return _as_given
    if not account.domain:
        from pipemail.errors import ConfigError

        raise ConfigError(
            '%s has no domain, which SMTP needs: set domain = "example.com" in the account '
            "(see pipemail.conf(5)), or write %s@DOMAIN" % (shown(bare[0]), shown(bare[0]))
        )
    return lambda addr: "%s@%s" % (addr, account.domain) if addr and message.is_bare(addr) else addr


_PART_OVERHEAD = 8192  # headers, MIME framing and the part's own header lines, with room to spare


class _Plan:
    """What --max-size sends: the attachments that ride in the first mail, and the archive's members."""

    def __init__(self, compose, subject, riding, packed, members, name, room, signing=False):
        self.compose = compose  # compose(files, subject) -> Message, with the body and the envelope's headers
        self.subject = subject
        self.riding = riding
        self.packed = packed  # the attachments in the archive, held open (FileData)
        self.members = members
        self.name = name
        self.room = room  # bytes left in a mail for its archive part
        self.signing = signing  # parts are to be signed: 7bit only when safe to sign
        self.wrap = None  # wrap(msg, recipients): a part mail signed and/or encrypted to them

    def part_mail(self, n, total, part, part_name, seven_bit):
        """Part mail ``n`` of ``total``, its archive part the source ``part``."""
        tag = "[part %0*d/%d]" % (max(2, len(str(total))), n, total)
        part_subject = "%s %s" % (self.subject, tag) if self.subject else tag
        msg = self.compose(self.riding, part_subject, n == 1)
        msg.parts.append(
            message.attachment_part(part, part_name, "application/x-shar", seven_bit=seven_bit, signing=self.signing)
        )
        if msg.boundary is None:
            msg.make_mixed()
        return msg


def _plan_parts(
    body,
    max_size,
    *,
    subject,
    sender,
    to,
    cc,
    extra,
    attach,
    stdin_name,
    attach_charset=None,
    signing=False,
    given=None,
    grow=None,
):
    """Which attachments ride in the first mail and which go in the archive; UsageError when no part fits.

    ``attach``: the attachments, held open.  Sizes are computed, not made: composing costs
    no pass over an attachment (base64 sizes come from the file's size).  ``given``: the
    --max-size the user gave (``max_size`` is what is left of it once signed/encrypted), and
    ``grow(n)`` the size n bytes take once wrapped: what a refusal says (None: not wrapped)."""
    from pipemail import shar

    def compose(files, part_subject, first=True):
        if not first:  # the body and the attachments that fit go in the first mail only
            return message.compose(
                b"", subject=part_subject, sender=sender, to=to, cc=cc, extra_headers=extra, signing=signing
            )
        return message.compose(
            body,
            subject=part_subject,
            sender=sender,
            to=to,
            cc=cc,
            extra_headers=extra,
            attachments=files,
            stdin_name=stdin_name,
            attach_charset=attach_charset,
            signing=signing,
        )

    riding, packed = [], []
    for src in attach:  # the attachments that fit ride in the first mail, with room for a part
        if compose(riding + [src], subject).size() <= max_size // 2:
            riding.append(src)
        else:
            packed.append(src)
    first = compose(riding, subject).size()
    room = max_size - first - _PART_OVERHEAD
    if room * 57 // 78 < 16 * 1024:
        need = first + _PART_OVERHEAD + 16 * 1024 * 78 // 57 + 1
        if grow is not None:
            need = grow(need)  # the size that works once each part is signed/encrypted
        raise UsageError(
            "--max-size %s leaves too little room for archive parts%s: give at least %dK"
            % (_kib(max_size if given is None else given), "" if grow is None else " once wrapped", -(-need // 1024))
        )
    name = os.path.basename(os.fsdecode(packed[0].path)) or "parts"
    # members named as the attachments are: by their base names; read through the descriptors
    # held open (/dev/fd/N), so that the archive holds the files that were opened
    members = []
    for src in packed:
        base = os.fsencode(os.path.basename(os.fsdecode(src.path)))
        fd_path = b"/dev/fd/%d" % src.fd
        where = fd_path if os.path.exists(fd_path) else os.fsencode(src.path)
        members.append(shar.Member(base, where, os.fstat(src.fd)))
    return _Plan(compose, subject, riding, packed, members, name, room, signing)


def _send_in_parts(plan, opts, account, max_size, sender, rcpts, groups=None):
    """--max-size: the archive split into mails of at most max_size, all over one session; the exit code.

    The archive is written part by part into a private spool directory in $TMPDIR (removed on
    every exit), and each mail is made from its part file while it is sent.  With ``plan.wrap``
    each part mail is signed and/or encrypted on its own, once for each of ``groups`` (the
    recipients that see each other, then each Bcc recipient alone), each group its own session."""
    from pipemail import shar, spool

    with spool.spool_dir(opts.env) as tmp:
        # An archive is 7-bit text: parts go as they are (7bit), sized for CRLF line ends, when
        # every one then fits (always, for binary files: base64 lines are long); else (a text
        # file of long runs of short lines) the archive is written again in parts sized for
        # base64.  Names that are not ASCII are never 7bit: written once, for base64.
        tries = [(plan.room * 64 // 66, True), (plan.room * 57 // 78, False)]
        if not all(m.name.isascii() and b"\r" not in m.name for m in plan.members):
            tries = tries[1:]  # names that are not ASCII: never 7bit, so written once, for base64
        for limit, seven_bit in tries:
            for old in os.listdir(tmp):
                os.unlink(os.path.join(tmp, old))
            packing = _bar(opts, "packing %s" % plan.name, sum(m.size for m in plan.members), "bytes")
            try:
                parts = shar.write_archive(
                    plan.members, prefix=os.fsencode(os.path.join(tmp, plan.name)), limit=limit, advance=packing
                )
            except OSError as exc:  # a full $TMPDIR
                from pipemail.errors import describe_oserror

                raise IOFailure(
                    "cannot write the archive in %s: %s" % (shown(spool.tmpdir(opts.env)), describe_oserror(exc))
                ) from None
            finally:
                if packing is not None:
                    packing.close()
            for src in plan.packed:  # what was archived is what was opened
                src.check()
            stats = {}
            wrapped = {}  # (group, n): the part mail signed/encrypted, made once (encryption is random)

            def plain(n, parts=parts, seven_bit=seven_bit, stats=stats):
                path = parts[n - 1]
                part = message.FileData(open(path, "rb"), shown(os.fsdecode(path)))
                part.stats = stats.get(n)
                msg = plan.part_mail(n, len(parts), part, os.path.basename(os.fsdecode(path)), seven_bit)
                stats[n] = part.stats  # counted once (7bit), not again for the send and the dead letter
                return msg

            def mail_for(g, plain=plain, wrapped=wrapped):
                if plan.wrap is None:
                    return plain

                def mail(k):
                    if (g, k) not in wrapped:
                        wrapped[(g, k)] = plan.wrap(plain(k), groups[g])
                    return wrapped[(g, k)]

                return mail

            count = len(parts)
            if not seven_bit or all(mail_for(0)(n).wire_size() <= max_size for n in range(1, count + 1)):
                break
        if plan.wrap is None:
            return _send_parts(plain, count, opts, account, plan.name, sender, rcpts)
        for g in range(1, len(groups)):  # every copy's first part wrapped before anything is sent
            mail_for(g)(1)
        codes = []
        for g, grp in enumerate(groups):
            try:
                codes.append(_send_parts(mail_for(g), count, opts, account, plan.name, sender, grp))
            except PipemailError:
                if g:  # what went out is said: the refusal is of the copies not yet sent
                    opts.warn(
                        "the parts went to %s before this; not to %s"
                        % (", ".join(a for x in groups[:g] for a in x), ", ".join(a for x in groups[g:] for a in x))
                    )
                raise
        codes = [c for c in codes if c]
        return EX_TEMPFAIL if EX_TEMPFAIL in codes else (codes[0] if codes else EX_OK)


def _send_parts(mail, total, opts, account, name, sender, rcpts):
    """Send part mails 1..total (``mail(n)`` composes one), keep what fails, and say what went out."""
    try:
        url, failure = _resolve(opts, account), None
    except PipemailError as exc:  # every part fails, and is kept, as when a session fails
        url, failure = None, exc
        exc.undelivered = list(rcpts)
    keep = _keeps(opts, url)
    where = transport.dead_letter_path(opts.dead_letter, opts.env)
    results = {}  # n: (exit code, the recipients it did not reach)
    kept, lost = set(), []
    said = set()

    def segments(n):
        return mail(n).segments()

    def say(text):  # what holds for every part (a session that failed, a refused recipient) is said once
        if text not in said:
            said.add(text)
            opts.warn(text)

    def keep_part(n, seg, undelivered):
        try:
            transport.save_dead_letter(where, seg, sender, undelivered, opts.warn, wrap=opts.kept_wrap)
        except PipemailError as exc:
            if not lost:
                say("cannot keep what was not sent in %s: %s" % (shown(where), exc))
            lost.append(n)
        else:
            kept.add(n)

    def mails():
        for n in range(1, total + 1):
            msg = mail(n)
            seg = msg.segments()
            current[:] = [n, seg]
            yield seg, msg.size()

    current = []
    sending = _bar(opts, "sending %s" % name, total, "parts")
    interrupted = None
    if failure is not None:
        deliveries = ((None, failure) for _mail in mails())
    else:
        options = _options(opts, account, rcpts + [sender])
        deliveries = transport.deliver_each(url, mails(), sender, rcpts, stdout_mbox=total > 1, **options)
    try:  # one SMTP session for all the parts: one login, one password lookup
        for report, exc in deliveries:
            n, seg = current
            if exc is not None:
                say(str(exc))
                results[n] = (exc.exit_code, list(rcpts if exc.undelivered is None else exc.undelivered))
            else:
                for _addr, (_code, text) in report.refused.items():
                    say(text)
                for text in _checked(report) if opts.check else ():
                    say(text)
                results[n] = (report.exit_code(), list(report.undelivered))
            if keep and results[n][1]:
                keep_part(n, seg, results[n][1])
            if sending is not None:
                sending(1)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM from cron's timeout
        interrupted = exc
    finally:
        deliveries.close()  # an SMTP session cut short is closed, without a goodbye that could hang
        if sending is not None:
            sending.close()
    if interrupted is not None:
        # what was not settled is kept, the part on its way included: sent twice, pyunshar takes it once
        for n in range(1, total + 1):
            if n not in results:
                results[n] = (EX_TEMPFAIL, list(rcpts))
                if keep:
                    keep_part(n, current[1] if current and current[0] == n else segments(n), rcpts)
            elif keep and results[n][1] and n not in kept and n not in lost:
                keep_part(n, segments(n), results[n][1])
    failed = {n: r for n, r in results.items() if r[1]}
    if failed:
        everyone = set(rcpts)
        not_sent, missed = [], {}  # missed: the recipients a part missed (when others took it): the parts
        for n, (_c, u) in failed.items():
            if set(u) >= everyone:
                not_sent.append(n)
            else:
                missed.setdefault(tuple(u), []).append(n)
        words = [
            "%s%s %d of %d parts"
            % (
                "interrupted: " if interrupted else "",
                "checked" if opts.check else "sent",
                total - len(not_sent),
                total,
            )
        ]
        if not_sent:
            words.append("not sent: %s" % _ranges(not_sent))
        for who, ns in missed.items():
            words.append("not delivered to %s: %s" % (", ".join(who), _ranges(ns)))
        line = "; ".join(words)
        if kept:
            line += " (kept in %s: pymail --resend %s sends them again)" % (shown(where), shown(where))
        if lost:
            line += "; parts %s are lost" % _ranges(lost) if len(lost) > 1 else "; part %d is lost" % lost[0]
        opts.warn(line)
    if interrupted is not None:
        raise interrupted
    if lost:
        return EX_IOERR
    codes = [c for c, _u in failed.values() if c]
    return EX_TEMPFAIL if EX_TEMPFAIL in codes else (codes[0] if codes else EX_OK)


def _kib(size):
    """A size as --max-size takes it: 20K, or bytes where it is no whole number of KiB."""
    return "%dK" % (size // 1024) if size % 1024 == 0 else "%d bytes" % size


def _ranges(numbers):
    """1, 2, 3, 5 -> '1-3, 5'."""
    out, numbers = [], sorted(numbers)
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else "%d-%d" % (numbers[i], numbers[j]))
        i = j + 1
    return ", ".join(out)


def _refuse(msg, sender, rcpts, opts, account, exc, wrapper=None):
    """A message that cannot go as asked: said, kept in the dead letter (stdin is read: nothing is lost).

    Not one that was to be signed or encrypted (``wrapper``): the dead letter would hold it in
    clear, and --resend would send it so."""
    if wrapper is not None:
        raise exc
    try:
        url = _resolve(opts, account)
    except PipemailError:  # the refusal is said; a wrong configuration shows when it is sent again
        url = None
    _fail_kept(opts, _keeps(opts, url), exc, msg.segments(), sender, rcpts)
    raise exc


def _fail_kept(opts, keep, exc, segments, sender, undelivered):
    """Say ``exc`` and keep the message for ``undelivered``, the reason first, then where it went."""
    if keep:
        opts.warn(str(exc))
        exc.reported = True
        _keep(opts, segments, sender, undelivered)


def _bar(opts, label, total, unit):
    return opts.progress(label, total, unit) if opts.progress is not None and opts.log is None else None


def _deliver(msg, envelope_from, rcpts, opts, account):
    segments = msg.segments()  # made while it is read, each time
    try:  # the configuration is wrong, or the transport: stdin is read, the message composed: it is kept
        url = _resolve(opts, account)
    except PipemailError as exc:
        _fail_kept(opts, _keeps(opts, None), exc, segments, envelope_from, rcpts)
        raise
    keep = _keeps(opts, url)
    try:
        size = msg.size() if url.scheme in ("smtp", "smtps") else None  # SIZE: a pass over QP text, else none
        report = _send(opts, url, account, segments, envelope_from, rcpts, size=size)
    except ChangedError:  # an attachment changed under pymail: no dead letter of a message never given
        raise
    except PipemailError as exc:
        _fail_kept(opts, keep, exc, segments, envelope_from, rcpts if exc.undelivered is None else exc.undelivered)
        raise
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM from cron's timeout: keep it all the same
        if keep:
            _keep(opts, segments, envelope_from, rcpts)
        raise
    return _settle(report, segments, envelope_from, opts, keep)


def _keeps(opts, url):
    """Whether what does not go out is kept in the dead letter: not for --check, nor printed (-).

    ``url`` None: the transport is not known (the configuration is wrong): kept unless ``--transport -``.
    """
    if url is None:
        return not opts.check and opts.transport != "-"
    return not opts.check and url.scheme != "-"


def _checked(report):
    """The lines --check says of a delivery that went through: what was checked, or who would get it."""
    if report.checked is not None:
        return ["check: %s" % report.checked]
    return ["check: %s would be accepted" % addr for addr in report.accepted]


def _settle(report, segments, envelope_from, opts, keep):
    """Say who refused the message and keep it for them; the exit code."""
    for _addr, (_code, text) in report.refused.items():
        opts.warn(text)
    if report.refused and keep:
        _keep(opts, segments, envelope_from, report.undelivered)
    if opts.check:
        for text in _checked(report):
            opts.warn(text)
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
        "proxy": opts.proxy,
    }


def _send(opts, url, account, segments, sender, rcpts, stdout_mbox=False, size=None):
    """One delivery by ``url`` with the options of the command line (``stdout_mbox``: one of several to -);
    ``size`` the message's CRLF size, which only SMTP uses (SIZE): counted on a pass over ``segments``
    when not given."""
    if size is None and url.scheme in ("smtp", "smtps"):
        size = message.crlf_size(segments)
    options = _options(opts, account, rcpts + [sender])
    return transport.deliver(url, segments, size, sender, rcpts, stdout_mbox=stdout_mbox, **options)


def _keep(opts, segments, sender, undelivered):
    """Keep the message in the dead letter and say where (:func:`transport.keep_dead_letter`)."""
    path = transport.dead_letter_path(opts.dead_letter, opts.env)
    transport.keep_dead_letter(path, segments, sender, undelivered, opts.warn, wrap=opts.kept_wrap)
    if opts.kept_wrap:
        opts.warn(
            "it is kept unwrapped, marked to be %s: pymail --resend does so as the account says, "
            "and never sends it in clear" % _wrap_words(opts.kept_wrap)
        )


def _wrap_words(wrap):
    return {("sign",): "signed", ("encrypt",): "encrypted"}.get(tuple(wrap), "signed and encrypted")


def resend(path, opts):
    """Send every message of the dead letter ``path`` to the recipients it missed; keep what fails again.

    The file stays locked from reading to its atomic rewrite, so that a pymail
    failing meanwhile appends to the new file (mailbox.lock checks), not to a
    file about to be replaced.  With ``check`` nothing is sent or rewritten.
    Nothing is held whole: the dead letter is read as a stream, each message
    spooled to a private file in $TMPDIR (mode 0600, without a name: gone on
    any exit, a kill included) and sent from it; what remains goes to another
    such file as it is settled, and is copied to the new dead letter at the end.
    """

    from pipemail import config, mailbox, spool

    account = config.load(env=opts.env).account(opts.account)
    url = _resolve(opts, account)
    label = shown(os.fsdecode(path))
    locked = transport.lock_mbox(path, opts.warn)
    try:
        # two nameless files in $TMPDIR: the message being sent, and what remains (a kill leaves neither)
        with spool.spool_file(opts.env) as sending, spool.spool_file(opts.env) as kept:
            with os.fdopen(os.dup(locked.fd), "rb") as stream:
                stream.seek(0)
                letters = transport.dead_letters(stream, sending.fileno(), label)
                remaining, code = _resend_each(letters, opts, url, account, kept, path)
            if not opts.check:
                _rewrite(path, kept)
    finally:
        mailbox.unlock(locked)
    if remaining:
        opts.warn("resend: %d message%s kept in %s" % (remaining, "" if remaining == 1 else "s", shown(path)))
    else:
        opts.warn("resend: all messages went out (%s)" % shown(path))
    return code


def _rewrite(path, kept):
    """Replace the dead letter ``path`` atomically by the spool file ``kept`` (what remains)."""
    from pipemail.safefile import Output

    with Output.to_path(path) as out:
        kept.seek(0)
        while block := _read_spool(kept, path):
            out.write(block)
        if out.replaces:
            out.file.flush()
            os.fsync(out.file.fileno())  # on disk before it replaces the dead letter
        out.commit(0o600)


def _read_spool(f, path):
    try:
        return f.read(1 << 20)
    except OSError as exc:
        from pipemail.errors import describe_oserror

        raise IOFailure("cannot read back what remains of %s: %s" % (shown(path), describe_oserror(exc))) from None


def _resend_each(letters, opts, url, account, kept, path):
    """Send each ``(Kept, last)`` of ``letters``; what remains is written to the file ``kept`` as it is
    settled (not with --check).  ``(how many remain, the exit code)``."""
    remaining = 0
    codes = []
    several = None  # to -: each message as one of an mbox when the dead letter holds more than one

    def keep(letter):
        nonlocal remaining
        remaining += 1
        if opts.check:
            return
        try:
            for chunk in transport.gathered(letter.mbox_chunks()):
                kept.write(chunk)
            kept.flush()  # a full disk is said here, of this file
        except OSError as exc:
            from pipemail.errors import describe_oserror

            raise IOFailure("cannot spool what remains of %s: %s" % (shown(path), describe_oserror(exc))) from None

    for number, (letter, last) in enumerate(letters, 1):
        if several is None:
            several = not last
        sender, rcpts = letter.sender, letter.undelivered
        if letter.torn:  # sending it would send a message cut in two
            opts.warn(
                "message %d in %s was cut short while it was kept (%d of %s bytes; a killed run?): "
                "kept as it is, not sent"
                % (number, shown(path), letter.size, letter.length if letter.length is not None else "?")
            )
            keep(letter)
            codes.append(DataError.exit_code)
            continue
        if not rcpts:
            opts.warn("a message in %s names no undelivered recipients; kept as it is" % shown(path))
            keep(letter)
            continue
        if letter.wrap:  # kept unwrapped: signed/encrypted now as the account says, or kept
            try:
                copies = _wrap_letter(letter, opts, account, number, path)
            except PipemailError as exc:
                opts.warn(
                    "message %d in %s is to be %s, and cannot be: %s; kept as it is, never sent in clear"
                    % (number, shown(path), _wrap_words(letter.wrap), exc)
                )
                keep(letter)
                codes.append(exc.exit_code)
                continue
            missed, failed = [], []
            for copy, group in copies:
                try:
                    qualify = _domain_qualifier(url, account, [sender] + group)
                    report = _send(
                        opts, url, account, copy.segments(), qualify(sender), [qualify(r) for r in group],
                        stdout_mbox=several or len(copies) > 1,
                    )  # fmt: skip
                except PipemailError as exc:
                    opts.warn(str(exc))
                    missed += group if exc.undelivered is None else exc.undelivered
                    failed.append(exc.exit_code)
                    continue
                for _addr, (_c, text) in report.refused.items():
                    opts.warn(text)
                missed += report.undelivered
                if report.refused:
                    failed.append(report.exit_code())
            if missed:  # kept unwrapped and marked again, for those it missed
                keep(_again(letter, missed))
                codes += failed
            continue
        try:  # bare names kept for want of a domain go out with the one set since
            qualify = _domain_qualifier(url, account, [sender] + rcpts)
            report = _send(
                opts, url, account, letter.segments, qualify(sender), [qualify(r) for r in rcpts], stdout_mbox=several
            )
        except PipemailError as exc:
            opts.warn(str(exc))
            keep(_again(letter, rcpts if exc.undelivered is None else exc.undelivered))
            codes.append(exc.exit_code)
            continue
        for _addr, (_c, text) in report.refused.items():
            opts.warn(text)
        if report.refused:
            keep(_again(letter, report.undelivered))
            codes.append(report.exit_code())
    code = EX_TEMPFAIL if EX_TEMPFAIL in codes else (codes[0] if codes else EX_OK)  # as for one message: try-again wins
    return remaining, code


def _again(letter, undelivered):
    """``letter`` kept again for ``undelivered``, with the length it has (it was whole: it was sent)."""
    return transport.Kept(
        letter.sender, letter.segments, list(undelivered), size=letter.size, headed=letter.headed, wrap=letter.wrap
    )


def _wrap_letter(letter, opts, account, number, path):
    """``[(message, recipients)]``: a dead letter's message kept unwrapped, signed and/or encrypted
    as its mark says with the account's keys, a copy for the recipients its To and Cc show and
    one for each other (Bcc); every key checked first.  A PipemailError when it cannot be."""
    from email.utils import formatdate, getaddresses, make_msgid, parseaddr

    from pipemail import secure

    s = secure.settings(account, sign="sign" in letter.wrap, encrypt="encrypt" in letter.wrap, env=opts.env)
    s.command = "pymail --resend"  # which takes no --recipient-cert: the words do not name it
    f = os.fdopen(os.dup(letter.segments.fd), "rb")
    msg = message.from_stdin_message(message.FileData(f, "message %d in %s" % (number, shown(path))))
    rcpts = list(letter.undelivered)
    listed = [v.replace("\n", "") for n, v in msg.headers if n.lower() in ("to", "cc")]
    in_view = {a.lower() for _n, a in getaddresses(listed) if a}
    msg.remove_header("Bcc")
    if msg.header("Date") is None:  # a message pysendmail kept as it came: what -t adds
        msg.add_header("Date", formatdate(localtime=True))
    if msg.header("Message-ID") is None:
        msg.add_header("Message-ID", make_msgid(domain=message.fqdn()))
    sender = parseaddr((msg.header("From") or "").replace("\n", ""))[1] or letter.sender
    keys = secure.prepare(s, sender, rcpts)
    groups = [rcpts]
    if s.encrypt:
        seen = [a for a in rcpts if a.lower() in in_view]
        groups = ([seen] if seen else []) + [[a] for a in rcpts if a.lower() not in in_view]
    return [(secure.wrap(msg, s, sender, g, keys), g) for g in groups]
