"""pysendmail's job: take a message as /usr/sbin/sendmail does, make it one a provider takes,
send it now through the account, and queue what cannot go now.

A message is read from standard input into a private spool file (bounded memory at
any size).  Without ``-i``/``-oi`` a line holding a lone ``.`` ends it, as sendmail
does outside SMTP; no other dot is touched (``..`` stays ``..``: dot-stuffing is
SMTP's, not the command line's).  The header block is read up to its blank line, or
up to the first line that is not a header field (which starts the body, as sendmail
and Postfix take ``echo hi | sendmail root``).

The rewrites (each said through ``verbose``, pysendmail's ``-v``):

- the sender is *local* when it is absent, a bare name (``root``) or an address at
  this host (``root@vm``, ``root@localhost``): then the envelope sender and From
  become the account's address, From keeping its display name (or ``-F NAME``, or
  the local name) with this host's name added: ``"Cron Daemon (vm)"
  <alerts@example.com>``, so that ten hosts are told apart.  A real From is kept;
  the envelope sender is ``-f``/From when it is of the account's domain, else the
  account's address (what a provider takes).
- recipients: operands, and with ``-t`` To, Cc and Bcc (Bcc is removed); local
  names go through the aliases file (:mod:`pipemail.aliases`), and those left bare
  get the account's ``domain`` (in the header fields too: ``To: root`` becomes
  ``To: root@example.com``).
- Date and Message-ID are added when missing.

Then it is sent through the account.  A temporary failure (unreachable, a timeout,
4xx, a failing ``password_command``, a proxy down) queues it (:mod:`pipemail.queue`)
and counts as done; a 5xx keeps it in the dead letter, as pymail does.  A caller
that is not root whose configuration is the system-wide file drops the message into
the system queue's maildrop instead, and never reads the account's secret: root's
queue run (``pysendmail -q``) accepts each drop as that user would have been.
"""

import os

from pipemail.errors import (
    EX_OK,
    CantCreateError,
    ConfigError,
    DataError,
    IOFailure,
    PipemailError,
    TempFailError,
    UsageError,
    shown,
)

LOCAL_HOSTS = ("localhost", "localhost.localdomain", "localhost4", "localhost6")


class Request:
    """What the command line asks (everything a drop must carry for root to accept it later)."""

    def __init__(
        self,
        recipients=(),
        read_recipients=False,
        sender=None,
        full_name=None,
        ignore_dots=False,
        account=None,
        proxy=None,
        timeout=30.0,
        sender_flag="-f",
    ):
        self.recipients = list(recipients)
        self.read_recipients = read_recipients
        self.sender = sender  # -f / -r
        self.sender_flag = sender_flag  # which of the two gave it (said in its errors)
        self.full_name = full_name  # -F
        self.ignore_dots = ignore_dots  # -i / -oi
        self.account = account  # --account
        self.proxy = proxy  # --proxy
        self.timeout = timeout

    def as_drop(self, user):
        """The plain JSON values a drop carries (queue.Queue.drop's ``request``)."""
        return {
            "recipients": list(self.recipients),
            "read_recipients": bool(self.read_recipients),
            "sender": self.sender,
            "sender_flag": self.sender_flag,
            "full_name": self.full_name,
            "ignore_dots": bool(self.ignore_dots),
            "account": self.account,
            "proxy": self.proxy,
            "user": user,
        }

    @classmethod
    def from_drop(cls, request):
        """The Request of a drop's ``request``; DataError when it is not one this code wrote."""

        def value(key, kinds, default=None):
            v = request.get(key, default)
            if v is not None and not isinstance(v, kinds):
                raise DataError("the drop's request has a bad %r" % key)
            return v

        if not isinstance(request, dict):
            raise DataError("the drop's request is not a JSON object")
        rcpts = value("recipients", list, [])
        if not all(isinstance(r, str) for r in rcpts):
            raise DataError("the drop's request has a bad 'recipients'")
        return cls(
            recipients=rcpts,
            read_recipients=bool(value("read_recipients", bool, False)),
            sender=value("sender", str),
            sender_flag="-r" if request.get("sender_flag") == "-r" else "-f",
            full_name=value("full_name", str),
            ignore_dots=True,  # the dot rule was applied when it was read
            account=value("account", str),
            proxy=value("proxy", str),
        )


class Context:
    """Who is sending and how things are said: ``env``, ``warn(line)``, ``verbose(line)``
    (the rewrites, -v), ``log(line)`` (the SMTP dialogue, -v), ``user`` (the login name
    of the sender: the caller, or the drop's owner) and ``uid``."""

    def __init__(self, env=None, warn=None, verbose=None, log=None, user=None, uid=None):
        self.env = os.environ if env is None else env
        self.warn = warn or (lambda m: None)
        self.verbose = verbose or (lambda m: None)
        self.log = log
        self.uid = os.getuid() if uid is None else uid
        self.user = user or login_name(self.uid)


def login_name(uid):
    """The login name of ``uid`` (from the password database, never from the environment)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# -- reading --------------------------------------------------------------------------------


def until_dot(stream, block=None):
    """The bytes of ``stream`` up to a line holding a lone ``.`` (``.\\n``, ``.\\r\\n``, or ``.``
    at the end), that line excluded: sendmail's end of a message without ``-i``."""
    at_start = True
    while True:
        line = stream.readline(block)
        if not line:
            return
        if at_start and line in (b".\n", b".\r\n", b"."):
            return
        at_start = line.endswith(b"\n")
        yield line


def read_message(stream, ignore_dots, env=None):
    """Standard input spooled to a private file (see :mod:`pipemail.spool`), at its start."""
    from pipemail import message, spool, transport

    chunks = spool.read_chunks(stream) if ignore_dots else transport.gathered(until_dot(stream), message.CHUNK)
    return spool.spool(chunks, env)


def parse(data):
    """A :class:`pipemail.message.Message` of the message ``data`` (bytes or a source): its header
    fields as given (bytes kept; a line over 998 folded at its white space), its body with LF line
    ends.  The header block ends at a blank line or at the first line that is not a field (which
    starts the body); a leading mbox ``From `` line is dropped.  DataError for a header block
    over 1 MiB or a field line that cannot be folded (:func:`pipemail.message.header_block`)."""
    from pipemail import headers, message

    src = message.source(data)
    fields, body_at = message.header_block(src, lenient=True)
    fields = [(name, headers.fold_given(name, value)) for name, value in fields]
    return message.Message(fields, raw_body=message.LineEnds(src.tail(body_at)))


# -- addresses --------------------------------------------------------------------------------


_HOST = []  # the names of this host, looked up once (getfqdn may ask the resolver)


def _names():
    from pipemail import message

    if not _HOST:
        import socket

        full = message.fqdn()
        try:
            plain = socket.gethostname()
        except OSError:
            plain = full
        _HOST.append((full, plain))
    return _HOST[0]


def host_name():
    """This host's short name, as ``hostname -s`` gives it (what a From line is told apart by)."""
    return _names()[0].split(".")[0]


def local_domains():
    """The domains that mean this host: its names and localhost."""
    full, plain = _names()
    return {full.lower(), plain.lower(), host_name().lower(), *LOCAL_HOSTS}


def local_part(addr):
    """The local name of ``addr`` when it is local (bare, or at this host), else None."""
    if not addr:
        return None
    if "@" not in addr:
        return addr
    local, _, domain = addr.rpartition("@")
    return local if domain.lower() in local_domains() else None


def _unfold(value):
    return value.replace("\r", "").replace("\n", "") if value is not None else None


def _address(account):
    """The account's address: its ``from``'s, else its ``user`` when that is an address; or None."""
    from pipemail import message

    if account.from_:
        addr = message.header_address(account.from_)[1]
        if addr and "@" in addr:
            return addr
    if account.user and "@" in account.user:
        return account.user
    return None


def _domain(account):
    """The domain bare names get: ``domain``, else the domain of the account's address."""
    if account.domain:
        return account.domain
    addr = _address(account)
    return addr.rpartition("@")[2] if addr else None


def _qualify(addr, domain, account, ctx, what):
    if "@" in addr:
        return addr
    if not domain:
        raise ConfigError(
            '%s %s has no domain, which SMTP needs: set domain = "example.com" (or from) in account %s '
            "of %s (see pipemail.conf(5)), or map it in the aliases file"
            % (what, shown(addr), account.name or "(none)", account.config_path or "the configuration")
        )
    ctx.verbose("%s %s -> %s@%s (the account's domain)" % (what, addr, addr, domain))
    return "%s@%s" % (addr, domain)


def recipients(msg, req, account, ctx):
    """The envelope recipients: operands, and with -t the message's To, Cc and Bcc; local names
    through the aliases file, bare ones qualified.  UsageError when there are none."""
    from pipemail import aliases, message

    given = _operands(req.recipients) if req.recipients else []
    if req.read_recipients:
        listed = [v for h in ("To", "Cc", "Bcc") for v in _all(msg, h)]
        given = _no_paths([a for _n, a in message.header_addresses([_unfold(v) for v in listed if v]) if a]) + given
    if not given:
        raise UsageError(NO_RECIPIENTS)
    table = None
    domain = _domain(account)
    out = []
    for addr in given:
        name = local_part(addr)
        if name is None:
            out.append(addr)
            continue
        if table is None:
            table = aliases.load(account.aliases)
        targets = table.expand(name, ctx.warn)
        if targets != [name]:
            ctx.verbose("alias %s -> %s" % (name, ", ".join(targets)))
        out += [_qualify(t, domain, account, ctx, "recipient") for t in targets]
    if not out:  # every name aliased to nothing, or to what is skipped: nobody to send it to
        raise UsageError(
            "no recipients: %s has no mail address in the aliases file %s (only |command, /file or "
            ":include: targets, which pysendmail skips, or none): map it to an address there"
            % (", ".join(given), table.path)
        )
    seen = set()
    return [a for a in out if not (a.lower() in seen or seen.add(a.lower()))]


def _operands(values):
    """The addresses of the RECIPIENT operands; DataError for what is not one, UsageError for a
    file or a program (as sendmail: mail is never written to a file or piped by pysendmail)."""
    from pipemail import message

    return _no_paths([a for _n, a in message.addresses(values)])


def _no_paths(addrs):
    for a in addrs:
        if a.startswith(("/", "|")):
            raise UsageError(
                "cannot mail directly to files or programs: %s (give a mail address, or map a name "
                "in the aliases file)" % shown(a)
            )
    return addrs


def _all(msg, name):
    return [v for n, v in msg.headers if n.lower() == name.lower()]


def rewrite(msg, req, account, ctx):
    """Rewrite ``msg`` in place as a provider wants it; the envelope sender."""
    from email.utils import formatdate, make_msgid

    from pipemail import headers, message

    mine = _address(account)
    domain = _domain(account)
    from_value = _unfold(msg.header("From"))
    if from_value is not None and not from_value.strip():
        from_value = None  # an empty From is no From: it gets the account's address
    name, from_addr = message.header_address(from_value) if from_value is not None else ("", "")
    given = _sender_option(req.sender, req.sender_flag) or from_addr  # -f ADDR, else From's
    full_name = message.check_value("-F", req.full_name) if req.full_name else None
    who = local_part(from_addr) if from_value is not None else None
    if from_value is None or who is not None:  # no From, or a local one: the account's address
        local = who or local_part(_sender_option(req.sender, req.sender_flag) or "") or ctx.user
        display = name or full_name or local
        display = "%s (%s)" % (display, host_name())
        addr = mine or _qualify(local, domain, account, ctx, "sender")
        value = headers.address_list("From", [(display, addr)])
        msg.remove_header("From")
        msg.headers.insert(0, ("From", value))
        ctx.verbose("From: %s -> %s" % ("(none)" if from_value is None else shown(from_value), value.replace("\n", "")))
    if given and local_part(given) is None and (mine is None or _same_domain(given, domain)):
        sender = given
    else:
        sender = mine or _qualify(local_part(given) or ctx.user, domain, account, ctx, "sender")
        if given != sender:
            ctx.verbose("envelope sender %s -> %s" % (shown(given) if given else "(none)", sender))
    for field in ("From", "To", "Cc"):  # bare names in the header fields get the domain, as an MTA gives them
        for i, (n, v) in enumerate(msg.headers):
            if n.lower() != field.lower():
                continue
            pairs = message.header_addresses([_unfold(v)])
            if not any(a and "@" not in a for _d, a in pairs):
                continue
            pairs = [(d, _qualify(a, domain, account, ctx, field) if a and "@" not in a else a) for d, a in pairs]
            msg.headers[i] = (n, headers.address_list(n, [p for p in pairs if p[1]]))
    if msg.header("Bcc") is not None:
        msg.remove_header("Bcc")
        ctx.verbose("Bcc: removed")
    if msg.header("Date") is None:
        msg.add_header("Date", formatdate(localtime=True))
        ctx.verbose("Date: added")
    if msg.header("Message-ID") is None:
        msg.add_header("Message-ID", make_msgid(domain=message.fqdn()))
        ctx.verbose("Message-ID: added")
    return sender


def _sender_option(value, flag="-f"):
    """The address of -f/-r (``flag``), checked (DataError for what is not one address); None for
    none or the null sender (``<>``, which a message from the account cannot use)."""
    from pipemail import message

    if not value or value.strip() in ("<>", ""):
        return None
    pairs = message.addresses([value])
    if len(pairs) != 1:
        raise DataError("%s takes one address: %s" % (flag, shown(value)))
    return pairs[0][1]


def _same_domain(addr, domain):
    return bool(domain) and addr.rpartition("@")[2].lower() == domain.lower()


def prepare(data, req, account, ctx):
    """``(msg, sender, recipients)`` of the message ``data`` (a source) as it is to be sent."""
    msg = parse(data)
    rcpts = recipients(msg, req, account, ctx)
    sender = rewrite(msg, req, account, ctx)
    return msg, sender, rcpts


# -- configuration, queue -----------------------------------------------------------------------


def must_drop(env=None, uid=None):
    """Whether this caller drops into the system maildrop: not root, and it has no sending
    configuration of its own: its configuration would be the system-wide file (it has no file
    of its own, and none is named), or its own file has no account with a transport (a pypop
    user's, with only ``pop`` accounts)."""
    from pipemail import config

    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return False
    path, named = config.default_path(env)
    if not named and path == config.system_path(env):
        return True
    try:
        cfg = config.load(env=env)
    except ConfigError:
        return False  # said when it is loaded to send
    return cfg.found and not cfg.system and not any(a.transport is not None for a in cfg.accounts.values())


def system_queue(env=None):
    """The system queue, for a caller that may not read the system-wide file's secret: the file's
    ``queue`` when it can be read, else /var/spool/pipemail."""
    from pipemail import config, queue

    try:  # the system-wide file itself, not the user's own (which may have no sending account)
        cfg = config.load(config.system_path(env), env=env)
    except ConfigError:
        cfg = None
    return queue.Queue(queue.default_dir(cfg, env, uid=0), drop_max_size=queue.drop_limit(cfg))


def load_account(req, env):
    """``(config, account)``; ConfigError when there is no account to send with."""
    from pipemail import config

    cfg = config.load(env=env)
    account = cfg.account(req.account)
    if account.transport is None:
        raise ConfigError(
            'pysendmail sends through an account with a transport: set transport = "smtp://HOST" '
            "in %s (see pipemail.conf(5))" % cfg.path
        )
    return cfg, account


def user_queue(cfg, env):
    from pipemail import queue

    q = queue.Queue(queue.default_dir(cfg, env), drop_max_size=queue.drop_limit(cfg), fallback=queue.fallback(cfg))
    q.ensure(system=os.geteuid() == 0)
    return q


# -- the command --------------------------------------------------------------------------------


def submit(stream, req, ctx):
    """pysendmail -bm: read, rewrite, send, queue or keep; the exit code."""
    from pipemail import message

    spooled = read_message(stream, req.ignore_dots, ctx.env)
    try:
        data = message.FileData(spooled, "standard input")
        if must_drop(ctx.env, ctx.uid):
            try:
                check(data, req)
            except PipemailError as exc:  # what root's run would refuse, refused now
                _keep_raw(data, req, ctx, exc)
                raise
            return _drop(spooled, req, ctx)
        account = None
        try:
            cfg, account = load_account(req, ctx.env)
            msg, sender, rcpts = prepare(data, req, account, ctx)
            copies = wrapped(msg, sender, rcpts, account, ctx.env)
        except PipemailError as exc:  # not sent, and not lost; never kept in clear unmarked
            _keep_raw(data, req, ctx, exc, _wraps(account, req, ctx))
            raise
        except Exception:  # a bug: said by the caller as one, and the message kept all the same
            _keep_raw(data, req, ctx, None, _wraps(account, req, ctx))
            raise
        if copies is None:
            return _send_now(cfg, account, msg, sender, rcpts, req, ctx)
        codes, failure = [], None
        for copy, group in copies:  # a Bcc recipient's own encrypted copy goes (or is queued) on its own
            try:
                codes.append(_send_now(cfg, account, copy, sender, group, req, ctx))
            except PipemailError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return next((c for c in codes if c), EX_OK)
    finally:
        spooled.close()


def _wraps(account, req, ctx):
    """What the account says to do to the message (sign, encrypt), as far as it is known: the
    mark of a message kept unwrapped (pipemail.transport.WRAP_HEADER)."""
    from pipemail import secure

    if account is not None:
        return secure.account_wraps(account)
    return secure.config_wraps(req.account, ctx.env)


def wrapped(msg, sender, rcpts, account, env=None):
    """``[(message, recipients)]``: ``msg`` signed and/or encrypted as the account's ``sign`` and
    ``encrypt`` say (pipemail.secure), one copy for the recipients its To and Cc show and one for
    each other recipient (Bcc, operands) when encrypted; None when the account does neither."""
    if not (account.sign or account.encrypt):
        return None
    from pipemail import message, secure

    s = secure.settings(account, env=env)
    s.command = "pysendmail"
    groups = [rcpts]
    # the signer is the From field's address (what readers check), else the envelope's
    try:
        signer = message.header_address(_unfold(msg.header("From") or ""))[1] or sender
    except PipemailError:
        signer = sender
    keys = secure.prepare(s, signer, rcpts)  # every key checked before anything is sent or queued (78)
    if s.encrypt:
        listed = [_unfold(v) for h in ("To", "Cc") for v in _all(msg, h)]
        shown = {a.lower() for _n, a in message.header_addresses(listed) if a}
        seen = [a for a in rcpts if a.lower() in shown]
        groups = ([seen] if seen else []) + [[a] for a in rcpts if a.lower() not in shown]
    return [(secure.wrap(msg, s, signer, g, keys), g) for g in groups]


def check(data, req):
    """What a user's pysendmail checks before it drops a message, as root's run would refuse it:
    -f/-F, the RECIPIENT operands, the header block, and with -t that it names a recipient."""
    from pipemail import message

    if req.full_name:
        message.check_value("-F", req.full_name)
    _sender_option(req.sender, req.sender_flag)
    if req.recipients:
        _operands(req.recipients)
    msg = parse(data)
    if msg.header("From") is not None:
        message.header_address(_unfold(msg.header("From")))
    listed = [v for h in ("To", "Cc", "Bcc") for v in _all(msg, h)]
    found = [a for _n, a in message.header_addresses([_unfold(v) for v in listed if v]) if a]
    if req.read_recipients:
        _no_paths(found)
    if not req.recipients and not (req.read_recipients and found):
        raise UsageError(NO_RECIPIENTS)


NO_RECIPIENTS = "no recipients: give RECIPIENT operands, or -t with To, Cc or Bcc in the message"


def _drop(spooled, req, ctx):
    from pipemail import message, transport

    q = system_queue(ctx.env)
    chunks = transport.FileChunks(spooled.fileno(), 0, os.fstat(spooled.fileno()).st_size, "standard input")
    try:
        name = q.drop(chunks, req.as_drop(ctx.user))
    except PipemailError as exc:
        # over drop_max_size: 65; else queue.Queue.drop's line says what to do
        failure = exc if isinstance(exc, DataError) else TempFailError(str(exc))
        _keep_raw(message.FileData(spooled, "standard input"), req, ctx, failure)
        raise failure from None
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (a caller's timeout): kept, not lost
        _keep_raw(message.FileData(spooled, "standard input"), req, ctx, None)
        raise
    ctx.verbose(
        "dropped as %s into %s/maildrop: root's queue run (pysendmail -q, or --run-queue) sends it"
        % (name, shown(q.path))
    )
    return EX_OK


def _kept_for(data, req, user):
    """The recipients a message kept as it came is for: its operands, and with -t those of its
    header fields, as far as they can be read; else the sender's own name."""
    from pipemail import message

    rcpts = list(req.recipients)
    if req.read_recipients:
        try:
            msg = parse(data)
            listed = [_unfold(v) for h in ("To", "Cc", "Bcc") for v in _all(msg, h)]
            rcpts += [a for _n, a in message.header_addresses(listed) if a]
        except PipemailError:
            pass
    # a recipient is a line of the kept message's header (X-Pipemail-Undelivered-To): no line breaks
    rcpts = [r for r in rcpts if r and "\n" not in r and "\r" not in r]
    return rcpts or [user]  # none to be found: the sender's own name, as sendmail returns it


def _kept_sender(req, user):
    """The sender of the kept message's mbox ``From`` line: -f as given when it is one word (a
    malformed -f may hold white space or a line break), else the sender's own name."""
    sender = req.sender
    return sender if sender and sender.isprintable() and not any(c.isspace() for c in sender) else user


def _keep_raw(data, req, ctx, exc, wrap=()):
    """A message that cannot be taken (a configuration error, a malformed one): said, and kept as it
    came in the caller's dead letter, for the recipients it named.  ``exc`` None: a bug, said by
    the caller.  ``wrap``: what the account says to do to it (sign, encrypt), marked in the dead
    letter so that pymail --resend does it first, or refuses: never sent in clear."""
    from pipemail import transport

    path = transport.dead_letter_path(None, ctx.env)
    rcpts = _kept_for(data, req, ctx.user)
    if exc is not None:
        ctx.warn(str(exc))
        exc.reported = True
    try:
        transport.save_dead_letter(path, data, _kept_sender(req, ctx.user), rcpts, ctx.warn, wrap=wrap)
    except PipemailError as kept:
        ctx.warn("the message could not be kept: %s" % kept)
        return
    if wrap:
        words = {("sign",): "signed", ("encrypt",): "encrypted"}.get(tuple(wrap), "signed and encrypted")
        ctx.warn(
            "the message is kept in %s, marked to be %s: pymail --resend %s does so as the account says "
            "once it can, and never sends it in clear" % (shown(path), words, shown(path))
        )
        return
    ctx.warn("the message is kept in %s" % shown(path))


def _options(account, req, ctx, addresses):
    from pipemail import message

    return {
        "account": account,
        "timeout": req.timeout,
        "log": ctx.log,
        "smtputf8": message.needs_smtputf8(addresses),
        "warn": ctx.warn,
        "env": ctx.env,
        "proxy": req.proxy,
    }


def _send_now(cfg, account, msg, sender, rcpts, req, ctx):
    from pipemail import queue, transport

    segments = msg.segments()
    try:
        url = transport.resolve(None, account, ctx.env)
        size = msg.size() if url.scheme in ("smtp", "smtps") else None
    except PipemailError as exc:  # nothing tried: kept
        _keep(segments, sender, rcpts, ctx, exc)
        raise
    answers = []  # the server's answer, kept as soon as it is given: QUIT is still to come
    try:
        options = _options(account, req, ctx, rcpts + [sender])
        for answer in transport.deliver_each(url, [(segments, size)], sender, rcpts, **options):
            answers.append(answer)
        ((report, failure),) = answers
        if failure is not None:
            raise failure
    except PipemailError as exc:
        undelivered = rcpts if exc.undelivered is None else exc.undelivered
        if queue.permanent(exc):  # the one rule the queue run follows too
            _keep(segments, sender, undelivered, ctx, exc)
            raise
        return _queue(cfg, segments, sender, undelivered, str(exc), ctx, account, req)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (a caller's timeout): queued, not lost
        left = rcpts
        if answers and answers[0][0] is not None:  # the server took it (250 to the final dot): only QUIT was left
            left = [a for a, (c, _t) in answers[0][0].refused.items() if c < 500]
        try:
            if left:
                _queue(cfg, segments, sender, left, "interrupted while it was being sent", ctx, account, req)
        except PipemailError:
            pass  # said, and kept in the dead letter
        raise
    except Exception:  # a bug: said by the caller as one, and the message kept all the same
        _keep(segments, sender, rcpts, ctx, None)
        raise
    temporary = {a: t for a, (c, t) in report.refused.items() if c < 500}
    permanent = {a: t for a, (c, t) in report.refused.items() if c >= 500}
    code = EX_OK
    if temporary:
        try:
            _queue(cfg, segments, sender, list(temporary), next(iter(temporary.values())), ctx, account, req)
        except PipemailError as exc:
            code = exc.exit_code
    if permanent:
        from pipemail.errors import NoUserError

        for text in permanent.values():
            ctx.warn(text)
        _keep(segments, sender, list(permanent), ctx, None)
        code = code or NoUserError.exit_code
    return code


def _queue(cfg, segments, sender, rcpts, answer, ctx, account, req):
    """Queue the message for ``rcpts`` and say so; when the queue cannot take it, the message is
    kept in the dead letter and the queue's error raised (said: reported).  The queue run sends it
    through the same ``account``, and the proxy the command line gave (``req.proxy``)."""
    try:
        q = user_queue(cfg, ctx.env)
        qid = q.add(segments, sender, list(rcpts), owner=ctx.uid, answer=answer, account=account.name, proxy=req.proxy)
    except PipemailError as exc:
        ctx.warn("not sent (%s) and not queued: %s" % (answer, exc))
        exc.reported = True
        _keep(segments, sender, list(rcpts), ctx, None)
        raise
    except Exception:  # a bug: said by the caller as one, and the message kept all the same
        _keep(segments, sender, list(rcpts), ctx, None)
        raise
    ctx.warn(
        "queued as %s in %s for %s: %s (pysendmail -q sends it now; pysendmail --run-queue retries it)"
        % (qid, shown(q.path), ", ".join(rcpts), answer)
    )
    return EX_OK


def _keep(segments, sender, undelivered, ctx, exc):
    from pipemail import transport

    path = transport.dead_letter_path(None, ctx.env)
    if exc is not None:
        ctx.warn(str(exc))
        exc.reported = True
    transport.keep_dead_letter(path, segments, sender, undelivered, ctx.warn)


# -- the queue run -------------------------------------------------------------------------------


def received(uid, user, now=None):
    """The trace field a message accepted from a drop gets, naming who dropped it (Postfix's form):
    ``by HOST (pipemail pysendmail, from userid UID (NAME)); DATE``."""
    import re
    from email.utils import formatdate

    from pipemail import message

    name = re.sub(r"[^A-Za-z0-9._-]", "?", user)
    return "by %s (pipemail pysendmail, from userid %d (%s));\n\t%s" % (
        message.fqdn(),
        uid,
        name,
        formatdate(now, localtime=True),
    )


def accept_drops(q, req_account, ctx, cfg=None, say=None):
    """Root's queue run: each drop of ``q``'s maildrop accepted as its owner would have been
    (rewritten, a Received field naming the owner added, queued with the owner's uid), then
    removed.  A drop that cannot be accepted (malformed, no recipients, an unknown account, any
    failure but the queue's own) goes back to its owner's dead letter, written as the owner, and
    is removed; said once.  One drop never stops the run for the others.  The number accepted."""
    from pipemail import config, message, queue, spool

    n = 0
    for drop in q.drops(warn=ctx.warn):
        who = Context(env=ctx.env, warn=ctx.warn, verbose=ctx.verbose, log=ctx.log, uid=drop.uid)
        req = account = None
        if drop.refuse_reason is not None:  # over drop_max_size: never read, never copied
            _refuse_drop(drop, who, ctx, say or ctx.warn, queue)
            continue
        try:
            req = Request.from_drop(drop.request)
            if req_account is not None and req.account is None:
                req.account = req_account
            cfg = config.load(env=ctx.env) if cfg is None else cfg
            account = cfg.account(req.account)
            with spool.spool(drop.chunks, ctx.env, "the drop") as f:
                msg, sender, rcpts = prepare(message.FileData(f, "drop %s" % drop.name), req, account, who)
                msg.headers.insert(0, ("Received", received(drop.uid, who.user)))
                for copy, group in wrapped(msg, sender, rcpts, account, ctx.env) or [(msg, rcpts)]:
                    q.add(copy.segments(), sender, group, owner=drop.uid, account=account.name)  # never a user's proxy
        except (IOFailure, CantCreateError) as exc:  # the queue's own trouble: the drop waits for the next run
            ctx.warn("drop %s from %s left in the maildrop: %s" % (drop.name, who.user, exc))
            continue
        except Exception as exc:  # noqa: BLE001 - whatever it is, the others go on
            why = str(exc) if isinstance(exc, PipemailError) else "internal error: %s: %s" % (type(exc).__name__, exc)
            from pipemail import secure

            wrap = secure.account_wraps(account) if account is not None else ()
            _return_drop(drop, req, who, why, ctx, say or ctx.warn, queue, wrap)
            continue
        drop.remove()
        n += 1
    return n


def _refuse_drop(drop, who, ctx, say, queue):
    """A drop over drop_max_size, never read whole: its header block and a line saying why go back
    to its owner's dead letter (written as the owner), then it is removed; or it is left in the
    maildrop when that cannot be written.  Said once."""
    try:
        req = Request.from_drop(drop.request)
    except PipemailError:
        req = Request()
    notice = drop.head() + b"\npysendmail: not sent, and its body not kept: %s\n" % drop.refuse_reason.encode()
    rcpts = [r for r in req.recipients if r and "\n" not in r and "\r" not in r] or [who.user]
    path, not_kept = queue.dead_letter_of(drop.uid, [notice], _kept_sender(req, who.user), rcpts, ctx.env)
    if path is None:
        ctx.warn("drop %s from %s left in the maildrop: %s (%s)" % (drop.name, who.user, drop.refuse_reason, not_kept))
        return
    drop.remove()
    say(
        "drop %s from %s not accepted: %s; its header returned to %s"
        % (drop.name, who.user, drop.refuse_reason, shown(path))
    )


def _return_drop(drop, req, who, why, ctx, say, queue, wrap=()):
    """A drop root's run cannot accept: back to its owner's dead letter (written as the owner), then
    removed; or left in the maildrop when it cannot be written there.  Said once.  ``wrap``: what
    its account says to do to it, marked (never kept in clear unmarked)."""
    from pipemail import message

    req = req or Request()
    with os.fdopen(os.dup(drop.fd), "rb") as f:  # read with pread: the drop's own offset is left alone
        rcpts = _kept_for(message.FileData(f, "drop %s" % drop.name, start=drop.chunks.start), req, who.user)
    path, not_kept = queue.dead_letter_of(drop.uid, drop.chunks, _kept_sender(req, who.user), rcpts, ctx.env, wrap=wrap)
    if path is None:
        ctx.warn("drop %s from %s left in the maildrop: %s (%s)" % (drop.name, who.user, why, not_kept))
        return
    drop.remove()
    say("drop %s from %s not accepted: %s; returned to %s" % (drop.name, who.user, why, shown(path)))


def deliverer(cfg, account, req, ctx, missing=None):
    """queue.run's ``deliver(name, proxy, batch)``: the queue.Items of ``batch``, each with its own
    envelope, over one SMTP session (one login, one password lookup) of the account ``name`` of
    ``cfg`` (None: ``account``, the run's), through ``proxy`` (None: the run's --proxy, else the
    account's).  An account no longer in the configuration is a ConfigError: its messages stay
    queued (and fail at the end of their lifetime).  ``account`` None: the run has none of its own
    (``missing``, the ConfigError saying why, is the answer for a message that names none)."""
    from pipemail import transport

    def deliver(name, proxy, batch):
        used = account
        if name is None and account is None:
            raise missing
        if name is not None and (account is None or name != account.name):
            if name not in cfg.accounts:
                raise ConfigError("account %s is no longer configured" % name)
            used = cfg.accounts[name]
        if used.transport is None:  # never the local sendmail, which may be pysendmail itself
            raise ConfigError("account %s has no transport: set one, or the message fails at its lifetime" % name)
        url = transport.resolve(None, used, ctx.env)
        # no addresses for the session as a whole: SMTPUTF8 is decided per message, by its own envelope
        options = _options(used, req, ctx, [])
        if proxy is not None:
            options["proxy"] = proxy
        return transport.deliver_each(url, batch, None, None, **options)

    return deliver


def run_queue(req, ctx, *, due_only, say):
    """pysendmail -q (``due_only`` False) and --run-queue (True): take the drops (root), then
    send what is queued; the exit code of queue.run."""
    from pipemail import queue

    if must_drop(ctx.env, ctx.uid):
        from pipemail.errors import NoPermError

        raise NoPermError(
            "the system queue is root's: its queue run (pysendmail --run-queue in root's crontab, "
            "or sudo pysendmail -q) sends what you drop"
        )
    try:
        cfg, account = load_account(req, ctx.env)
        missing = None
    except ConfigError as exc:  # no default account: each message goes through its own still
        from pipemail import config

        if req.account is not None:
            raise
        cfg, account, missing = config.load(env=ctx.env), None, exc
    q = user_queue(cfg, ctx.env)
    if os.geteuid() == 0:
        accept_drops(q, req.account, ctx, cfg, say=say)
    code = queue.run(
        q,
        deliverer(cfg, account, req, ctx, missing),
        due_only=due_only,
        lifetime=cfg.queue_lifetime,
        say=say,
        warn=ctx.warn,
        env=ctx.env,
    )
    if code != EX_OK and not due_only:  # -q by hand: why nothing was said of what stays
        left = sum(e.state == "queued" for e in queue.listing(q))
        ctx.warn(
            "%d message%s stay%s queued in %s (pysendmail -bp shows the server's last answer)"
            % (left, "" if left == 1 else "s", "s" if left == 1 else "", shown(q.path))
        )
    return code


def listing(req, ctx):
    """The lines of -bp (mailq): the queue this caller's mail goes to."""
    from pipemail import config, queue

    if must_drop(ctx.env, ctx.uid):
        q, owner = system_queue(ctx.env), 0
    else:
        cfg = config.load(env=ctx.env)
        q, owner = queue.Queue(queue.default_dir(cfg, ctx.env), fallback=queue.fallback(cfg)), os.geteuid()
    q.check(owner)  # a symlink or another's directory is refused, as sending refuses it
    return queue.format_listing(queue.listing(q))


def make_dirs(ctx):
    """-bi (newaliases) as root: the system queue's directories (the maildrop users drop into);
    the queue directory said.  Nothing for another user."""
    from pipemail import config, queue

    if os.geteuid() != 0:
        return None
    cfg = config.load(env=ctx.env)
    q = queue.Queue(queue.default_dir(cfg, ctx.env, uid=0))
    q.ensure(system=True)
    if queue.fallback(cfg) is not None:  # the maildrop of the users who cannot read the file
        queue.fallback(cfg).ensure(system=True)
    return q.path


__all__ = ["Request", "Context", "submit", "run_queue", "listing", "make_dirs", "UsageError"]
