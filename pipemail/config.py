"""Accounts and credentials for pymail and pypop: the TOML file, URLs and passwords.

The file (``$PIPEMAIL_CONFIG``, else ``~/.config/pipemail/config.toml``) holds named
accounts and names one of them the default::

    default = "work"
    [accounts.work]
    from = "Me <me@example.com>"
    transport = "smtp://mail.example.com:587"
    user = "me@example.com"
    password_command = "pass show mail/work"

:func:`load` reads it into a :class:`Config`; :meth:`Config.account` picks an
:class:`Account`; :func:`password` looks its password up (environment, command,
protected key, ``~/.netrc``); :func:`split_url` parses transport and POP URLs.
Everything wrong in the file is a :class:`~pipemail.errors.ConfigError` (exit 78);
a bad URL given on the command line is a :class:`~pipemail.errors.UsageError` (64).

Heavy modules (tomllib, netrc, subprocess, ipaddress, urllib) are imported inside the
functions that need them: pipelines pay the start-up on every call.
"""

import os
import stat

from pipemail.errors import ConfigError, PasswordCommandError, UsageError, describe_oserror

DEFAULT_PATH = "~/.config/pipemail/config.toml"

# Seconds a password_command may run before it is killed (tests lower it).
PASSWORD_COMMAND_TIMEOUT = 30

AUTH_METHODS = ("plain", "login", "xoauth2", "oauthbearer")  # oauthbearer: IMAP only
TLS_MODES = ("auto", "none")

# TOML key -> Account attribute.
ACCOUNT_KEYS = {
    "from": "from_",
    "transport": "transport",
    "pop": "pop",
    "user": "user",
    "password_command": "password_command",
    "password": "password",
    "auth": "auth",
    "tls": "tls",
    "tls_trust_file": "tls_trust_file",
    "domain": "domain",
    "aliases": "aliases",
    "proxy": "proxy",
    "crypto": "crypto",
    "smime_cert": "smime_cert",
    "smime_key": "smime_key",
    "smime_certs": "smime_certs",
    "key_password_command": "key_password_command",
    "pgp_key": "pgp_key",
    "sign": "sign",
    "encrypt": "encrypt",
}
CRYPTO_KINDS = ("smime", "openpgp")
_BOOLEAN_KEYS = ("sign", "encrypt")
TOP_KEYS = ("default", "accounts", "queue", "queue_lifetime", "drop_max_size")

# Read when the user has no file of their own (root, cron, daemons: pysendmail);
# $PIPEMAIL_SYSTEM_CONFIG names another (tests, a chroot).
SYSTEM_PATH = "/etc/pipemail/config.toml"

DEFAULT_PORTS = {"smtp": 587, "smtps": 465, "pop3": 110, "pop3s": 995, "imap": 143, "imaps": 993}
TRANSPORT_SCHEMES = ("smtp", "smtps", "sendmail", "mbox", "maildir", "-")
POP_SCHEMES = ("pop3", "pop3s")
IMAP_SCHEMES = ("imap", "imaps")

_TRANSPORT_HINT = "use smtp://, smtps://, sendmail:, mbox:, maildir: or -"
_POP_HINT = "use pop3:// or pop3s://"
_IMAP_HINT = "use imap:// or imaps://"
_FETCH_HINT = "use pop3://, pop3s://, imap:// or imaps://"


class Account:
    """One ``[accounts.NAME]`` table.  Keys the file does not set are None, except
    ``tls`` ("auto").  ``mode_ok`` says whether the file it came from has no group or
    other permission bits (a ``password`` key is refused otherwise); ``config_path``
    names that file (None for the empty account)."""

    __slots__ = (
        "name",
        "from_",
        "transport",
        "pop",
        "user",
        "password_command",
        "password",
        "auth",
        "tls",
        "tls_trust_file",
        "domain",
        "aliases",
        "proxy",
        "crypto",
        "smime_cert",
        "smime_key",
        "smime_certs",
        "key_password_command",
        "pgp_key",
        "sign",
        "encrypt",
        "mode_ok",
        "config_path",
    )

    def __init__(
        self,
        name=None,
        from_=None,
        transport=None,
        pop=None,
        user=None,
        password_command=None,
        password=None,
        auth=None,
        tls="auto",
        tls_trust_file=None,
        domain=None,
        aliases=None,
        proxy=None,
        crypto=None,
        smime_cert=None,
        smime_key=None,
        smime_certs=None,
        key_password_command=None,
        pgp_key=None,
        sign=None,
        encrypt=None,
        mode_ok=True,
        config_path=None,
    ):
        self.name = name
        self.from_ = from_
        self.transport = transport
        self.pop = pop
        self.user = user
        self.password_command = password_command
        self.password = password
        self.auth = auth
        self.tls = tls
        self.tls_trust_file = tls_trust_file
        self.domain = domain  # qualifies bare local names (root) for SMTP
        self.aliases = aliases  # pysendmail: local names -> addresses (None: /etc/aliases)
        self.proxy = proxy  # socks5://, socks5h://, http:// (CONNECT) for SMTP and POP3
        self.crypto = crypto  # "smime" or "openpgp": how --sign and --encrypt sign and encrypt
        self.smime_cert = smime_cert  # S/MIME: our certificate (PEM), and its private key
        self.smime_key = smime_key
        self.smime_certs = smime_certs  # S/MIME: a directory of recipients' certificates, ADDRESS.pem
        self.key_password_command = key_password_command  # the signing/decryption key's passphrase
        self.pgp_key = pgp_key  # OpenPGP: the signing key (gpg -u), in the user's GnuPG keyring
        self.sign = sign  # True/False: sign (encrypt) every message unless an option says otherwise
        self.encrypt = encrypt
        self.mode_ok = mode_ok
        self.config_path = config_path

    def __repr__(self):
        # The password itself never appears: reprs end up in logs and tracebacks.
        fields = []
        for attr in self.__slots__:
            value = getattr(self, attr)
            if attr == "password" and value is not None:
                value = "<hidden>"
            elif attr == "proxy" and value is not None:
                value = redact_url(value)  # socks5://user:<redacted>@host:port
            fields.append("%s=%r" % (attr, value))
        return "Account(%s)" % ", ".join(fields)

    def __eq__(self, other):
        if not isinstance(other, Account):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    __hash__ = None


class Config:
    """The parsed file: ``path`` (str), ``found`` (whether it existed), ``default``
    (the top-level ``default`` key or None), ``accounts`` (name -> Account),
    ``mode_ok`` (no group or other bits on the file), ``queue`` (the top-level
    ``queue`` key, pysendmail's queue directory, or None), ``queue_lifetime`` (the
    top-level ``queue_lifetime`` key in seconds, or None: how long a message may wait
    in the queue, queue.LIFETIME when not set), ``drop_max_size`` (the top-level
    ``drop_max_size`` key in bytes, 0 for no limit, or None: the largest message a user
    may drop into the maildrop, queue.DROP_MAX_SIZE when not set) and ``system``
    (whether it is the system-wide file, read because the user has none)."""

    def __init__(
        self,
        path,
        accounts=None,
        default=None,
        found=True,
        mode_ok=True,
        queue=None,
        system=False,
        queue_lifetime=None,
        drop_max_size=None,
    ):
        self.path = path
        self.accounts = dict(accounts or {})
        self.default = default
        self.found = found
        self.mode_ok = mode_ok
        self.queue = queue
        self.queue_lifetime = queue_lifetime
        self.drop_max_size = drop_max_size
        self.system = system

    def __repr__(self):
        return "Config(path=%r, default=%r, accounts=%r)" % (self.path, self.default, sorted(self.accounts))

    def account(self, name=None):
        """The account ``name``; without a name the default one, else the only one,
        else an empty ``Account()``.  An unknown ``name`` is a ConfigError."""
        if name is not None:
            if name in self.accounts:
                return self.accounts[name]
            if not self.found:
                raise ConfigError("no account %r: config file %s: No such file or directory" % (name, self.path))
            if not self.accounts:
                raise ConfigError("no account %r in %s; it defines no accounts" % (name, self.path))
            raise ConfigError("no account %r in %s; accounts: %s" % (name, self.path, ", ".join(sorted(self.accounts))))
        if self.default is not None:
            return self.accounts[self.default]  # load() checked that it exists
        if len(self.accounts) == 1:
            return next(iter(self.accounts.values()))
        if self.accounts:  # guessing could send through the wrong server, or none
            raise ConfigError(
                '%s has several accounts (%s) and no default: give --account NAME or set default = "NAME"'
                % (self.path, ", ".join(sorted(self.accounts)))
            )
        return Account()


def system_path(env=None):
    """The system-wide file: ``$PIPEMAIL_SYSTEM_CONFIG`` or /etc/pipemail/config.toml."""
    env = os.environ if env is None else env
    return env.get("PIPEMAIL_SYSTEM_CONFIG") or SYSTEM_PATH


def default_path(env=None):
    """The file :func:`load` reads without a path: ``$PIPEMAIL_CONFIG``, else the user's
    (``~/.config/pipemail/config.toml``) unless it is missing and the system-wide one
    exists; and whether it was named (so that it must exist)."""
    env = os.environ if env is None else env
    named = env.get("PIPEMAIL_CONFIG")
    if named:
        return named, True
    mine = os.path.expanduser(DEFAULT_PATH)
    if not os.path.lexists(mine) and os.path.lexists(system_path(env)):
        return system_path(env), False
    return mine, False


def load(path=None, env=None):
    """Read the configuration: ``path``, else ``$PIPEMAIL_CONFIG`` (from ``env``,
    default ``os.environ``), else ``~/.config/pipemail/config.toml``, else (the user
    has none) the system-wide file, :func:`system_path`.

    A missing file at the default location is an empty Config; a missing file that
    was named, a TOML syntax error, an unknown key or a bad value is a ConfigError.
    A ``password`` key is taken only from a file without group or other permission
    bits, and from the system-wide file only when root owns it too.
    """
    if path is not None:
        path, named = os.fspath(path), True
    else:
        path, named = default_path(env)
    system = not named and path == system_path(env)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError as exc:
        if named:
            raise ConfigError("config file %s: %s" % (path, describe_oserror(exc)))
        return Config(path, found=False, system=system)
    except OSError as exc:
        raise ConfigError("config file %s: %s" % (path, describe_oserror(exc)))
    mode_ok = not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and (not system or st.st_uid == 0)

    import tomllib

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("config file %s: line %d: not valid UTF-8" % (path, line))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file %s: %s" % (path, exc))
    return _build(path, doc, mode_ok, system)


def _build(path, doc, mode_ok, system=False):
    where = "config file %s" % path
    for key in doc:
        if key not in TOP_KEYS:
            raise ConfigError(
                "%s: unknown key %r (top-level keys: %s; accounts go in [accounts.NAME])"
                % (where, key, ", ".join(TOP_KEYS))
            )
    default = doc.get("default")
    if default is not None and not isinstance(default, str):
        raise ConfigError("%s: 'default' must be a string, the name of an account" % where)
    tables = doc.get("accounts", {})
    if not isinstance(tables, dict):
        raise ConfigError("%s: 'accounts' must be a table: write [accounts.NAME]" % where)
    accounts = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError("%s: accounts.%s must be a table: write [accounts.%s]" % (where, name, name))
        accounts[name] = _account(where, path, name, table, mode_ok)
    if default is not None and default not in accounts:
        known = ", ".join(sorted(accounts)) or "none"
        raise ConfigError("%s: default account %r is not defined; accounts: %s" % (where, default, known))
    queue = doc.get("queue")
    if queue is not None:
        if not isinstance(queue, str) or not queue:
            raise ConfigError("%s: 'queue' must be a directory, as queue = \"/var/spool/pipemail\"" % where)
        queue = os.path.expanduser(queue)
    lifetime = doc.get("queue_lifetime")
    if lifetime is not None:
        lifetime = parse_duration(lifetime, "%s: 'queue_lifetime'" % where)
    drop_max = doc.get("drop_max_size")
    if drop_max is not None:
        drop_max = _size(drop_max, "%s: 'drop_max_size'" % where)
    return Config(
        path,
        accounts,
        default,
        found=True,
        mode_ok=mode_ok,
        queue=queue,
        system=system,
        queue_lifetime=lifetime,
        drop_max_size=drop_max,
    )


def _size(value, what):
    """Bytes of a size key, as pipemail.sizes parses sizes ("100M", "512K", a number of KiB); 0 is allowed."""
    from pipemail.sizes import parse_size

    try:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise UsageError("not a size")
        return parse_size(value)
    except UsageError:
        raise ConfigError(
            '%s must be a size: a number of KiB, or a number with K, M or G, as "100M"; 0 for no limit; got %r'
            % (what, value)
        ) from None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value, what="a duration"):
    """Seconds (an int) from ``value``: a whole number of seconds (a TOML integer or digits),
    or digits with one unit ``s``, ``m``, ``h``, ``d`` ("5d", "12h", "90m"); more than zero.
    ConfigError (78) naming ``what`` otherwise."""
    seconds = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        digits = text[:-1] if unit else text
        if digits.isascii() and digits.isdigit():
            seconds = int(digits) * (unit or 1)
    if seconds is None or seconds <= 0:
        raise ConfigError(
            '%s must be a time more than zero: seconds, or a number with s, m, h or d, as "5d", "12h", "90m"; got %r'
            % (what, value)
        )
    return seconds


def _account(where, path, name, table, mode_ok):
    values = {}
    for key, value in table.items():
        if key not in ACCOUNT_KEYS:
            raise ConfigError(
                "%s: unknown key %r in account %r (keys: %s)" % (where, key, name, ", ".join(sorted(ACCOUNT_KEYS)))
            )
        if key in _BOOLEAN_KEYS:
            if not isinstance(value, bool):
                raise ConfigError("%s: account %r: %r must be true or false" % (where, name, key))
        elif not isinstance(value, str):
            raise ConfigError("%s: account %r: %r must be a string" % (where, name, key))
        values[ACCOUNT_KEYS[key]] = value
    for key, choices in (("auth", AUTH_METHODS), ("tls", TLS_MODES), ("crypto", CRYPTO_KINDS)):
        if values.get(key) is not None:  # a choice among fixed words, in any case
            values[key] = values[key].lower()
            if values[key] not in choices:
                raise ConfigError(
                    "%s: account %r: %s %r: use %s" % (where, name, key, table[key], _alternatives(choices))
                )
    for key in ("tls_trust_file", "aliases", "smime_cert", "smime_key", "smime_certs"):
        if values.get(key) is not None:
            values[key] = os.path.expanduser(values[key])
    domain = values.get("domain")
    if domain is not None:
        import re

        if not re.fullmatch(r"[^\s@<>,;:\"\\()\[\]]+", domain) or domain.startswith(".") or ".." in domain:
            raise ConfigError(
                '%s: account %r: domain %r: give a domain name, as domain = "example.com"' % (where, name, domain)
            )
    for key, kind in (("transport", "transport"), ("pop", "fetch"), ("proxy", "proxy")):
        if values.get(key) is not None:
            try:
                split_proxy(values[key]) if kind == "proxy" else split_url(values[key], kind=kind)
            except UsageError as exc:
                raise ConfigError("%s: account %r: %s" % (where, name, exc))
    return Account(name=name, mode_ok=mode_ok, config_path=path, **values)


def _alternatives(words):
    quoted = ['"%s"' % w for w in words]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


# -- passwords ---------------------------------------------------------------------


def password(account, user, host, env=None):
    """The password (or XOAUTH2 token) for ``user`` at ``host``, or None.

    Looked up in this order: ``PIPEMAIL_PASSWORD`` in ``env`` (default os.environ;
    an empty value counts as unset), the account's ``password_command`` (run with
    ``/bin/sh -c`` in ``env``, its first line of output), its ``password`` key (only
    from a file without group or other permission bits), then ``machine host`` in
    ``~/.netrc`` whose login is ``user`` (any login when ``user`` is None).
    The password is never part of a message or a repr.
    """
    env = os.environ if env is None else env
    value = env.get("PIPEMAIL_PASSWORD")
    if value:
        return value
    if account is None:
        account = Account()
    if account.password_command is not None:
        return run_password_command(account.password_command, env=env, account=account.name)
    if account.password is not None:
        if not account.mode_ok:
            path = account.config_path
            raise ConfigError("%s holds a password and is readable by others: chmod 600 %s" % (path, path))
        return account.password
    entry = netrc_entry(host, user)
    return entry[1] if entry else None


def proxy(account, given=None):
    """The proxy URL to go through, or None: ``given`` (``--proxy``; "" for none) when it
    is not None, else the account's ``proxy`` key.  A key that holds the proxy's password
    is taken only from a file without group or other permission bits, as a ``password``
    key is (ConfigError otherwise)."""
    if given is not None:
        return given or None
    url = account.proxy if account is not None else None
    if url and not account.mode_ok and split_proxy(url).password is not None:
        path = account.config_path
        raise ConfigError("%s holds a password and is readable by others: chmod 600 %s" % (path, path))
    return url


def run_password_command(command, env=None, account=None, timeout=None, key="password_command"):
    """The first line of what ``/bin/sh -c command`` prints, without its newline.

    Standard input is /dev/null (it may be the message being sent).  A command that
    fails, is killed, runs longer than ``timeout`` (default PASSWORD_COMMAND_TIMEOUT
    seconds) or prints nothing is a PasswordCommandError (a ConfigError, 78) naming its exit status and the first
    line of its standard error.  ``key``: the configuration key that gave it, as messages name it.
    """
    import signal
    import subprocess

    timeout = PASSWORD_COMMAND_TIMEOUT if timeout is None else timeout
    what = key if account is None else "account %r: %s" % (account, key)
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            start_new_session=True,  # so that a timeout kills the whole command
        )
    except OSError as exc:
        raise PasswordCommandError("%s: cannot run /bin/sh: %s" % (what, describe_oserror(exc)))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:  # pragma: no cover - already gone
            proc.kill()
        proc.communicate()
        raise PasswordCommandError("%s did not finish within %g seconds" % (what, timeout))
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:  # pragma: no cover
            pass
        proc.wait()
        raise
    first_err = _first_line(err).decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if proc.returncode < 0:
            status = "was killed by signal %d" % -proc.returncode
        else:
            status = "failed with exit status %d" % proc.returncode
        raise PasswordCommandError("%s %s%s" % (what, status, ": " + first_err if first_err else ""))
    line = _first_line(out)
    if not line:
        raise PasswordCommandError("%s printed no password" % what)
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise PasswordCommandError("%s printed a password that is not valid UTF-8" % what)


def _first_line(data):
    line = data.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def netrc_entry(host, user=None):
    """``(login, password)`` from ``~/.netrc`` for ``machine host`` when its login
    is ``user`` (any login when ``user`` is None), else None.  The ``default``
    entry is not used: it would hand one password to every server.  A ~/.netrc
    that cannot be parsed, or is readable by others, is a ConfigError."""
    if not host:
        return None
    import netrc

    path = os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError("%s: %s" % (path, describe_oserror(exc)))
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("%s is readable by others: chmod 600 %s" % (path, path))
    try:
        parsed = netrc.netrc()  # no argument: the stdlib's ownership check applies too
    except FileNotFoundError:  # pragma: no cover - removed since the stat above
        return None
    except netrc.NetrcParseError as exc:
        if exc.lineno:
            raise ConfigError("%s: line %d: %s" % (path, exc.lineno, exc.msg))
        raise ConfigError("%s: %s" % (path, exc.msg))
    except OSError as exc:
        raise ConfigError("%s: %s" % (path, describe_oserror(exc)))
    for name in dict.fromkeys((host, host.lower())):
        entry = parsed.hosts.get(name)
        if entry is None:
            continue
        login, _account, secret = entry
        if user is not None and login != user:
            return None
        if not secret:
            return None
        return login, secret
    return None


# -- URLs --------------------------------------------------------------------------


class URL:
    """A parsed transport or POP URL: ``scheme`` (smtp, smtps, pop3, pop3s,
    sendmail, mbox, maildir or -), ``user``, ``host`` (IPv6 without brackets),
    ``port`` (the scheme's default when not given) and ``path`` (sendmail, mbox,
    maildir; ~ expanded).  Fields that do not apply are None."""

    __slots__ = ("scheme", "user", "host", "port", "path")

    def __init__(self, scheme, user=None, host=None, port=None, path=None):
        self.scheme = scheme
        self.user = user
        self.host = host
        self.port = port
        self.path = path

    @property
    def implicit_tls(self):
        """True for smtps://, pop3s:// and imaps://: TLS from the first byte."""
        return self.scheme in ("smtps", "pop3s", "imaps")

    @property
    def netloc(self):
        """``host:port`` for messages, with an IPv6 host in brackets."""
        if self.host is None:
            return None
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)

    def __repr__(self):
        return "URL(%s)" % ", ".join("%s=%r" % (a, getattr(self, a)) for a in self.__slots__)

    def __eq__(self, other):
        if not isinstance(other, URL):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    __hash__ = None


def split_url(url, kind=None):
    """Parse a transport or POP URL into a :class:`URL`.

    ``smtp://[user@]host[:port]``, ``smtps://...``, ``pop3://...``, ``pop3s://...``,
    ``imap://...``, ``imaps://...``
    (an IPv6 host in brackets: ``smtp://[::1]:2525``), ``sendmail:`` or
    ``sendmail:/path``, ``mbox:PATH``, ``maildir:DIR``, ``-``.  ``kind`` limits the
    schemes: "transport" (pymail's), "pop" (pypop's POP3), "imap" (pypop's IMAP),
    "fetch" (either: pypop's --server and the ``pop`` key) or None (transport and POP).
    Anything else is a UsageError.  A password in the URL
    is refused: passwords never go on the command line.
    """
    if kind == "transport":
        schemes, hint, what = TRANSPORT_SCHEMES, _TRANSPORT_HINT, "transport URL"
    elif kind == "pop":
        schemes, hint, what = POP_SCHEMES, _POP_HINT, "POP URL"
    elif kind == "imap":
        schemes, hint, what = IMAP_SCHEMES, _IMAP_HINT, "IMAP URL"
    elif kind == "fetch":
        schemes, hint, what = POP_SCHEMES + IMAP_SCHEMES, _FETCH_HINT, "POP or IMAP URL"
    elif kind is None:
        schemes, hint, what = TRANSPORT_SCHEMES + POP_SCHEMES, _TRANSPORT_HINT, "transport URL"
    else:
        raise ValueError("kind must be 'transport', 'pop', 'imap', 'fetch' or None, not %r" % (kind,))

    def bad(reason=None):
        shown_url = redact_url(url) if isinstance(url, str) else url
        if reason is None:
            return UsageError("unknown %s %r: %s" % (what, shown_url, hint))
        return UsageError("bad %s %r: %s" % (what, shown_url, reason))

    if not isinstance(url, str):
        raise bad()
    if url == "-":
        if "-" not in schemes:
            raise bad()
        return URL("-")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in schemes:
        raise bad()
    if scheme in DEFAULT_PORTS:
        if not rest.startswith("//"):
            raise bad()
        return _split_server(scheme, rest[2:], bad)
    if scheme == "sendmail":
        return URL("sendmail", path=os.path.expanduser(rest) if rest else None)
    # mbox:PATH, maildir:DIR
    if not rest:
        raise bad("%s: needs a path, as in %s:%s" % (scheme, scheme, "~/mail/out" if scheme == "mbox" else "~/Maildir"))
    return URL(scheme, path=os.path.expanduser(rest))


REDACTED = "<redacted>"
_PATH_SCHEMES = ("sendmail:", "mbox:", "maildir:")


def redact_url(text):
    """``text`` (a URL, or what was given as one) with the password of its userinfo replaced.

    ``smtp://alice:s3cret@host`` -> ``smtp://alice:<redacted>@host``.  Whatever
    stands between the scheme's ``//`` (or the start, when there is none) and
    the last ``@`` is the userinfo; what follows its first ``:`` is redacted,
    so that a malformed URL (``alice:pw@host``, ``smtp:alice:pw@host``, a
    password holding ``@`` or ``/``) shows no password either.  The paths of
    ``sendmail:``, ``mbox:`` and ``maildir:`` are left as they are.  Every
    message and transcript that echoes a URL, or what the user gave as one,
    goes through this function.
    """
    if text[:8].lower().startswith(_PATH_SCHEMES) and not text.partition(":")[2].startswith("//"):
        return text
    at = text.rfind("@")
    if at < 0:
        return text
    slashes = text.find("://")
    start = slashes + 3 if 0 <= slashes < at else 0
    colon = text.find(":", start, at)
    if colon < 0:
        return text
    return text[: colon + 1] + REDACTED + text[at:]


class Proxy:
    """A parsed proxy URL: ``scheme`` (socks5, socks5h or http), ``host``, ``port``, and
    ``user`` and ``password`` (percent-decoded, or None) to log in to the proxy with;
    ``shown`` is the URL as messages and transcripts give it (its password redacted).
    ``rdns``: whether the proxy resolves the destination's name (socks5h, http)."""

    __slots__ = ("scheme", "host", "port", "user", "password", "shown")

    def __init__(self, scheme, host, port, user=None, password=None, shown=None):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.shown = shown

    @property
    def rdns(self):
        return self.scheme != "socks5"

    def __repr__(self):
        return "Proxy(%s)" % self.shown  # never the password


def split_proxy(url):
    """Parse a proxy URL (the ``proxy`` key, ``--proxy``) into a :class:`Proxy`.

    ``socks5://[USER[:PASSWORD]@]HOST:PORT`` (this machine resolves the mail
    server's name), ``socks5h://...`` (the proxy resolves it), ``http://...``
    (HTTP CONNECT; the proxy resolves it).  The port must be given.  Anything
    else is a UsageError whose message shows the URL with its password redacted;
    the config file turns it into a ConfigError.  Defined once, for both.
    """
    shown_url = redact_url(url) if isinstance(url, str) else url

    def bad(reason=None):
        if reason is None:
            return UsageError("unknown proxy URL %r: %s" % (shown_url, _PROXY_HINT))
        return UsageError("bad proxy URL %r: %s" % (shown_url, reason))

    if not isinstance(url, str):
        raise bad()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in PROXY_SCHEMES:
        raise bad()
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise bad("only [user[:password]@]host:port may follow %s://" % scheme)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in rest):
        raise bad("it contains a space or a control character")
    userinfo, at, hostport = rest.rpartition("@")
    user = password = None
    if at:
        from urllib.parse import unquote

        name, colon, secret = userinfo.partition(":")
        if not name:
            raise bad("empty user name before '@'")
        user = unquote(name)
        password = unquote(secret) if colon else None
        if scheme != "http" and any(len(v.encode("utf-8", "surrogateescape")) > 255 for v in (user, password) if v):
            raise bad("a SOCKS5 user name or password is at most 255 bytes")  # RFC 1929
    host, port = _split_host_port(scheme, hostport, bad, None, PROXY_PORTS[scheme])
    return Proxy(scheme, host, port, user, password, redact_url(url))


PROXY_SCHEMES = ("socks5", "socks5h", "http")
PROXY_PORTS = {"socks5": 1080, "socks5h": 1080, "http": 3128}  # in the examples of messages only
_PROXY_HINT = "use socks5://HOST:PORT, socks5h://HOST:PORT or http://HOST:PORT"


def _split_server(scheme, rest, bad):
    """``[user@]host[:port][/]`` of a server URL."""
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise bad("only [user@]host[:port] may follow %s://" % scheme)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in rest):
        raise bad("it contains a space or a control character")
    userinfo, at, hostport = rest.rpartition("@")
    user = None
    if at:
        if ":" in userinfo:
            raise bad("no password in the URL (see pipemail.conf(5) for where passwords go)")
        if not userinfo:
            raise bad("empty user name before '@'")
        from urllib.parse import unquote

        user = unquote(userinfo)
    host, port = _split_host_port(scheme, hostport, bad, DEFAULT_PORTS[scheme])
    return URL(scheme, user=user, host=host, port=port)


def _split_host_port(scheme, hostport, bad, default_port, example_port=None):
    """``host[:port]`` or ``[IPv6][:port]``: (host, port); ``default_port`` None: the port must be given
    (``example_port`` shows how)."""
    port_text = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise bad("no ']' after the IPv6 address")
        host = hostport[1:end]
        after = hostport[end + 1 :]
        if after:
            if not after.startswith(":"):
                raise bad("':port' or nothing must follow ']'")
            port_text = after[1:]
        import ipaddress

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad("%r is not an IPv6 address" % host)
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        elif ":" in port_text:
            raise bad("write an IPv6 address in brackets, as in %s://[::1]:%d" % (scheme, default_port or example_port))
    if not host:
        raise bad("no host name")
    if port_text is None:
        if default_port is None:
            shown_host = "[%s]" % host if ":" in host else host
            raise bad("give its port, as in %s://%s:%d" % (scheme, shown_host, example_port))
        port = default_port
    else:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise bad("port %r: use a number from 1 to 65535" % port_text)
        port = int(port_text)
    return host, port
