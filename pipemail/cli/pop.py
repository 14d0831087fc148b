"""pypop: fetch, list and delete mail over POP3 or IMAP into an mbox, a Maildir, a command or stdout."""

import os

import click

from pipemail import __version__
from pipemail.cli import Group, check_timeout, progress_bar, run, stdout_stream, warn

EPILOG = """\b
Examples:
  pypop --server pop3s://pop.example.com --user me stat
  pypop fetch --mbox ~/mail/inbox                 # new messages only
  pypop fetch --maildir ~/Maildir --delete        # deleted once stored
  pypop fetch --mda 'procmail -d me'
  pypop fetch | pyunshar -d restore               # archives from mail
  pypop -v list
  pypop --server imaps://imap.example.com fetch --folder INBOX --folder Archiv --mbox ~/mail/inbox

The password comes from PIPEMAIL_PASSWORD, the account's password_command,
a protected password key, or ~/.netrc; never from the command line."""


class Session:
    """The group's options, shared by every subcommand; ``url`` and ``user_name`` are known once connected."""

    def __init__(self, *, account, server, port, user, tls, tls_trust_file, timeout, log, verbose, proxy=None):
        self.account = account
        self.server = server
        self.port = port
        self.user = user
        self.tls = tls
        self.tls_trust_file = tls_trust_file
        self.timeout = timeout
        self.log = log
        self.verbose = verbose
        self.proxy = proxy  # --proxy URL; "" for none; None: the account's
        self.url = None  # set by connect()
        self.user_name = None  # set by connect()
        self.imap = False  # set by connect(): an imap:// or imaps:// server

    def resolve(self):
        """``(account, url)`` of the server, read from the options and the configuration; sets
        ``self.imap`` (an imap:// or imaps:// server).  Nothing is connected yet."""
        from pipemail import config

        if self.proxy:
            config.split_proxy(self.proxy)  # a bad --proxy is a usage error, before the file is read
        cfg = config.load()
        account = cfg.account(self.account)
        server = self.server or account.pop
        if not server:
            raise config.ConfigError(
                "no POP or IMAP server: give --server pop3s://HOST (or pop3://, imaps://, imap://), "
                "or set pop in the account (see pipemail.conf(5))"
            )
        if "://" not in server:
            server = "pop3://" + server
        url = config.split_url(server, kind="fetch")
        if self.port:
            url.port = self.port
        self.imap = url.scheme in config.IMAP_SCHEMES
        return account, url

    def connect(self):
        """A logged-in client: pop3.Client, or imap.Client for imap:// and imaps:// (``self.imap``)."""
        from pipemail import config

        account, url = self.resolve()
        user = self.user or url.user or account.user
        if not user:
            raise config.ConfigError("no user: give --user, user@ in the URL, or user in the account")
        password = config.password(account, user, url.host)
        if self.imap:
            from pipemail import imap as module
        else:
            from pipemail import pop3 as module
        client = module.Client(
            url,
            timeout=self.timeout,
            log=self.log,
            tls=self.tls or account.tls or "auto",
            trust_file=self.tls_trust_file or account.tls_trust_file,
            warn=lambda m: warn("pypop", m),
            proxy=config.proxy(account, self.proxy),
        )
        try:
            if self.imap:
                client.login(user, password, auth=account.auth)
            else:
                client.login(user, password)
        except BaseException:
            client.close()
            raise
        self.url, self.user_name = url, user
        return client


@click.group(cls=Group, epilog=EPILOG, no_args_is_help=False, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--account", metavar="NAME", help="Use account NAME of the configuration.")
@click.option(
    "--server",
    metavar="HOST|URL",
    help="pop3s://HOST[:PORT] (TLS, 995), pop3://HOST or HOST (STLS, 110), imaps://HOST (993) or imap://HOST (143).",
)
@click.option("--port", type=int, metavar="N", help="The server's port.")
@click.option("--user", metavar="USER", help="Log in as USER.")
@click.option(
    "--tls", type=click.Choice(["auto", "none"]), help="auto: require STLS except on loopback; none: allow plaintext."
)
@click.option("--tls-trust-file", metavar="PATH", help="Trust the CA certificates in PATH.")
@click.option(
    "--proxy",
    metavar="URL",
    help="Reach the server through a proxy: socks5://HOST:PORT, socks5h://... or http://... (CONNECT); '' for none.",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, metavar="S", help="Limit on every network wait."
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show the POP3 or IMAP dialogue on standard error (passwords and tokens redacted).",
)
@click.version_option(__version__, "--version", prog_name="pypop", message="%(prog)s %(version)s")
@click.pass_context
def command(ctx, account, server, port, user, tls, tls_trust_file, proxy, timeout, verbose):
    """Fetch, list and delete mail over POP3 or IMAP."""
    check_timeout(timeout)
    log = (lambda line: click.echo(line, err=True)) if verbose else None
    ctx.obj = Session(
        account=account,
        server=server,
        port=port,
        user=user,
        tls=tls,
        tls_trust_file=tls_trust_file,
        timeout=timeout,
        log=log,
        verbose=verbose,
        proxy=proxy,
    )


FOLDER_HELP = "IMAP: the folder (default INBOX); messages are named by UID."


def _folder_option(f):
    return click.option("--folder", default="INBOX", show_default=True, metavar="NAME", help=FOLDER_HELP)(f)


def _no_folder(s, folder):
    from pipemail.errors import UsageError

    if not s.imap and folder != "INBOX":
        raise UsageError("--folder is for IMAP servers (imap:// or imaps://); POP3 has one mailbox")


def _select(client, folder, readonly=True):
    from pipemail import utf7

    return client.select(utf7.encode(folder), readonly=readonly)


def _check_uids(client, uids, folder):
    """UnavailableError (69) naming the UIDs the selected folder does not have."""
    from pipemail.errors import UnavailableError

    missing = sorted(set(uids) - {u for u, _s, _m in client.index(uids)})
    if missing:
        raise UnavailableError("no message with UID %s in %s" % (", ".join(str(u) for u in missing), folder))


@command.command("stat")
@_folder_option
@click.pass_obj
def stat_cmd(s, folder):
    """Say how many messages there are and their total size."""
    with s.connect() as client:
        _no_folder(s, folder)
        if s.imap:
            _select(client, folder)
            sizes = [size for _u, size, _m in client.index(client.new_uids(0))]
            count, size = len(sizes), sum(sizes)
            client.logout()
        else:
            count, size = client.stat()
            client.quit()
    click.echo("%d messages, %d bytes" % (count, size))
    return 0


@command.command("list")
@_folder_option
@click.pass_obj
def list_cmd(s, folder):
    """List message numbers (IMAP: UIDs) and sizes."""
    with s.connect() as client:
        _no_folder(s, folder)
        if s.imap:
            _select(client, folder)
            for uid, size, _m in client.index(client.new_uids(0)):
                click.echo("%d %d" % (uid, size))
            client.logout()
            return 0
        for n, size in client.list():
            click.echo("%d %d" % (n, size))
        client.quit()
    return 0


@command.command("uidl")
@_folder_option
@click.pass_obj
def uidl_cmd(s, folder):
    """List message numbers and unique ids (IMAP: UID and UIDVALIDITY.UID)."""
    with s.connect() as client:
        _no_folder(s, folder)
        if s.imap:
            f = _select(client, folder)
            for uid in client.new_uids(0):
                click.echo("%d %d.%d" % (uid, f.uidvalidity, uid))
            client.logout()
            return 0
        for n, uid in client.uidl():
            click.echo("%d %s" % (n, uid))
        client.quit()
    return 0


@command.command("retr")
@click.argument("numbers", type=int, nargs=-1, required=True)
@_folder_option
@click.pass_obj
def retr_cmd(s, numbers, folder):
    """Write messages N... (IMAP: UIDs) to standard output (as an mbox when more than one)."""
    from pipemail.pop3 import StreamSink

    out = stdout_stream()
    with s.connect() as client:
        _no_folder(s, folder)
        if s.imap:
            _select(client, folder)
            wanted = list(dict.fromkeys(numbers))
            _check_uids(client, wanted, folder)
            messages = ((uid, chunks) for uid, _size, chunks in client.fetch(wanted))
        else:
            messages = client.retr_many(numbers)
        if len(numbers) == 1:
            for _n, chunks in messages:
                for chunk in chunks:
                    out.write(chunk)
            out.flush()
        else:
            StreamSink(out).store(("-", chunks) for _n, chunks in messages)
        client.logout() if s.imap else client.quit()
    return 0


@command.command("dele")
@click.argument("numbers", type=int, nargs=-1, required=True)
@_folder_option
@click.pass_obj
def dele_cmd(s, numbers, folder):
    """Delete messages N... (POP3: at the end of the session; IMAP: UIDs, expunged with UIDPLUS)."""
    with s.connect() as client:
        _no_folder(s, folder)
        if s.imap:
            _select(client, folder, readonly=False)
            _check_uids(client, numbers, folder)
            if not client.delete(numbers):
                from pipemail.imapfetch import FLAG_ONLY

                warn("pypop", FLAG_ONLY % (s.url.host, folder))
            client.logout()
            return 0
        client.dele_many(numbers)
        client.quit()
    return 0


@command.command("fetch")
@click.option(
    "--mbox", metavar="PATH", help="Append to the mbox PATH (locked; a killed run's own torn message is cut away)."
)
@click.option("--maildir", metavar="DIR", help="Deliver into the Maildir DIR (created if missing).")
@click.option("--mda", metavar="COMMAND", help="Run COMMAND for each message, the message on its standard input.")
@click.option("--all", "every", is_flag=True, help="Fetch every message, not only the new ones.")
@click.option("--delete", is_flag=True, help="Delete each message from the server once it is stored.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Fetch at most N messages.")
@click.option(
    "--max-size", metavar="SIZE", help="Leave messages larger than SIZE on the server (a bare number is KiB)."
)
@click.option(
    "--folder",
    "folders",
    multiple=True,
    metavar="NAME",
    help="IMAP: fetch from folder NAME (repeatable; default INBOX).",
)
@click.option("--move-to", metavar="FOLDER", help="IMAP: move each message to FOLDER once it is stored.")
@click.option("--mark-seen", is_flag=True, help="IMAP: flag each message \\Seen once it is stored.")
@click.option("--idle", is_flag=True, help="IMAP: stay connected and fetch new mail as it arrives (IDLE).")
@click.option(
    "--idle-reissue",
    type=click.FloatRange(min=1),
    default=1500.0,
    show_default=True,
    metavar="S",
    help="With --idle: end and re-issue IDLE every S seconds.",
)
@click.pass_obj
def fetch_cmd(s, mbox, maildir, mda, every, delete, limit, max_size, folders, move_to, mark_seen, idle, idle_reissue):
    """Retrieve new messages and deliver them (default: standard output, as an mbox)."""
    from pipemail import pop3
    from pipemail.errors import UsageError, shown
    from pipemail.sizes import parse_size

    if sum(x is not None for x in (mbox, maildir, mda)) > 1:
        raise UsageError("give one of --mbox, --maildir and --mda")
    if delete and move_to:
        raise UsageError("give one of --delete and --move-to")
    if (delete or move_to) and not (mbox or maildir or mda):
        what = "--delete" if delete else "--move-to"
        raise UsageError("%s to standard output is refused: a pipe cannot be flushed to disk" % what)
    if idle and (every or limit):
        raise UsageError("--idle fetches what is new as it comes: not with --all or --limit")
    if idle and len(set(folders)) > 1:
        raise UsageError("--idle watches one folder: give one --folder (one pypop --idle per folder)")
    size = parse_size(max_size) if max_size is not None else None
    s.resolve()
    if not s.imap and (folders or move_to or mark_seen or idle):
        raise UsageError("--folder, --move-to, --mark-seen and --idle are for IMAP servers (imap:// or imaps://)")
    with s.connect() as client:
        if s.imap:
            from pipemail import imapfetch, imapstate

            directory = imapstate.account_dir(s.user_name, s.url.host, s.url.port)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            lock_path = os.path.join(directory, "lock")
            pending = os.path.join(directory, "mbox.pending")
            state = imapfetch.recovery_path(directory)
            if s.log:
                s.log("=== state directory (what was fetched): %s" % shown(directory))
        else:
            state, lock_path, pending = pop3.state_paths(s.user_name, s.url)
            if s.log:  # named after the user, host and port as given: spelled otherwise, all is new
                s.log("=== UIDL file (what was fetched): %s" % shown(state))
                s.log("=== lock: %s" % shown(lock_path))
                s.log("=== pending record: %s" % shown(pending))
        label = "%s at %s" % (s.user_name, s.url.host)
        held = [pop3.lock(lock_path, label)]  # --idle lets go of it while idling (see _idle)
        try:
            if mbox:
                sink = pop3.MboxSink(os.path.expanduser(mbox), pending, state, warn=lambda m: warn("pypop", m))
            elif maildir:
                sink = pop3.MaildirSink(os.path.expanduser(maildir), pending + "-maildir", state)
            elif mda:
                sink = pop3.MdaSink(mda, warn=lambda m: warn("pypop", m))
            else:
                sink = pop3.StreamSink(stdout_stream())
            bars = []

            def progress(count, total):
                label = "%d message%s from %s" % (count, "" if count == 1 else "s", s.url.host)
                bars.append(progress_bar("pypop", label, total))
                return bars[-1]

            try:
                if idle:
                    stored = _idle(
                        s,
                        client,
                        sink,
                        directory,
                        (folders or ("INBOX",))[0],
                        idle_reissue,
                        size,
                        delete,
                        move_to,
                        mark_seen,
                        (lock_path, label, held),
                    )
                    client = None
                elif s.imap:
                    stored, skipped = imapfetch.fetch(
                        client,
                        sink,
                        directory,
                        list(dict.fromkeys(folders)) or ["INBOX"],
                        every=every,
                        delete=delete,
                        move_to=move_to,
                        mark_seen=mark_seen,
                        limit=limit,
                        max_size=size,
                        warn=lambda m: warn("pypop", m),
                        log=s.log,
                        progress=None if s.log else progress,
                    )
                else:
                    stored, skipped = pop3.fetch(
                        client,
                        sink,
                        state,
                        every=every,
                        delete=delete,
                        limit=limit,
                        max_size=size,
                        warn=lambda m: warn("pypop", m),
                        log=s.log,
                        progress=None if s.log else progress,  # -v: the dialogue, not a bar
                    )
            finally:
                for bar in bars:
                    if bar is not None:
                        bar.close()
            if client is not None:
                client.logout() if s.imap else client.quit()
        finally:
            if held:
                os.close(held.pop())
    if s.verbose or _stderr_is_tty():
        warn("pypop", "%d message%s fetched" % (stored, "" if stored == 1 else "s"))
    return 0


def _idle(s, client, sink, directory, folder, reissue, max_size, delete, move_to, mark_seen, lock):
    """fetch --idle: SIGTERM (and SIGINT) end it between batches or while idling, exit status 0.

    The account's lock (``lock``: its path, its label, and a list holding the descriptor the
    caller took) is held only while fetching: a cron ``pypop fetch`` or a ``--idle`` on another
    folder of the account runs while this one idles; this one waits for the lock to fetch."""
    import contextlib
    import signal
    import time

    from pipemail import imapfetch, pop3
    from pipemail.errors import TempFailError

    lock_path, label, held = lock

    stopped = []

    def stop_handler(signum, frame):
        stopped.append(signum)

    old = {sig: signal.signal(sig, stop_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    first = [client]

    def connect():
        return first.pop() if first else s.connect()

    @contextlib.contextmanager
    def hold():
        if held:  # the caller's, taken before the sink was made
            fd = held.pop()
        else:
            fd = None
            while fd is None and not stopped:
                try:
                    fd = pop3.lock(lock_path, label)
                except TempFailError:  # another pypop is fetching for the account: wait for it
                    time.sleep(0.2)
            if fd is not None and isinstance(sink, pop3.MboxSink | pop3.MaildirSink):
                sink.recover()  # a run killed while this one idled may have left a pending record
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    try:
        return imapfetch.idle(
            connect,
            sink,
            directory,
            folder,
            stop=lambda: bool(stopped),
            reissue=reissue,
            tick=0.2,
            warn=lambda m: warn("pypop", m),
            log=s.log,
            delete=delete,
            move_to=move_to,
            mark_seen=mark_seen,
            max_size=max_size,
            hold=hold,
        )
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _stderr_is_tty():
    import sys

    return sys.stderr is not None and sys.stderr.isatty()


def main():
    run(command, "pypop", quiet_pipe=False)  # never killed by SIGPIPE: what a reader did not get is not recorded
