"""pypop: fetch, list and delete mail over POP3 into an mbox, a Maildir, a command or stdout."""

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

    def connect(self):
        from pipemail import config, pop3

        if self.proxy:
            config.split_proxy(self.proxy)  # a bad --proxy is a usage error, before the file is read
        cfg = config.load()
        account = cfg.account(self.account)
        server = self.server or account.pop
        if not server:
            raise config.ConfigError(
                "no POP server: give --server pop3s://HOST (or pop3://), or set pop in the account "
                "(see pipemail.conf(5))"
            )
        if "://" not in server:
            server = "pop3://" + server
        url = config.split_url(server, kind="pop")
        if self.port:
            url.port = self.port
        user = self.user or url.user or account.user
        if not user:
            raise config.ConfigError("no POP user: give --user, user@ in the URL, or user in the account")
        password = config.password(account, user, url.host)
        client = pop3.Client(
            url,
            timeout=self.timeout,
            log=self.log,
            tls=self.tls or account.tls or "auto",
            trust_file=self.tls_trust_file or account.tls_trust_file,
            warn=lambda m: warn("pypop", m),
            proxy=config.proxy(account, self.proxy),
        )
        try:
            client.login(user, password)
        except BaseException:
            client.close()
            raise
        self.url, self.user_name = url, user
        return client


@click.group(cls=Group, epilog=EPILOG, no_args_is_help=False, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--account", metavar="NAME", help="Use account NAME of the configuration.")
@click.option("--server", metavar="HOST|URL", help="pop3s://HOST[:PORT] (TLS, 995) or pop3://HOST or HOST (STLS, 110).")
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
    "-v", "--verbose", is_flag=True, help="Show the POP3 dialogue on standard error (PASS and AUTH redacted)."
)
@click.version_option(__version__, "--version", prog_name="pypop", message="%(prog)s %(version)s")
@click.pass_context
def command(ctx, account, server, port, user, tls, tls_trust_file, proxy, timeout, verbose):
    """Fetch, list and delete mail over POP3."""
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


@command.command("stat")
@click.pass_obj
def stat_cmd(s):
    """Say how many messages there are and their total size."""
    with s.connect() as client:
        count, size = client.stat()
        client.quit()
    click.echo("%d messages, %d bytes" % (count, size))
    return 0


@command.command("list")
@click.pass_obj
def list_cmd(s):
    """List message numbers and sizes."""
    with s.connect() as client:
        for n, size in client.list():
            click.echo("%d %d" % (n, size))
        client.quit()
    return 0


@command.command("uidl")
@click.pass_obj
def uidl_cmd(s):
    """List message numbers and unique ids."""
    with s.connect() as client:
        for n, uid in client.uidl():
            click.echo("%d %s" % (n, uid))
        client.quit()
    return 0


@command.command("retr")
@click.argument("numbers", type=int, nargs=-1, required=True)
@click.pass_obj
def retr_cmd(s, numbers):
    """Write messages N... to standard output (as an mbox when more than one)."""
    from pipemail.pop3 import StreamSink

    out = stdout_stream()
    with s.connect() as client:
        messages = client.retr_many(numbers)
        if len(numbers) == 1:
            for _n, chunks in messages:
                for chunk in chunks:
                    out.write(chunk)
            out.flush()
        else:
            StreamSink(out).store(("-", chunks) for _n, chunks in messages)
        client.quit()
    return 0


@command.command("dele")
@click.argument("numbers", type=int, nargs=-1, required=True)
@click.pass_obj
def dele_cmd(s, numbers):
    """Delete messages N... (at the end of the session)."""
    with s.connect() as client:
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
@click.pass_obj
def fetch_cmd(s, mbox, maildir, mda, every, delete, limit, max_size):
    """Retrieve new messages and deliver them (default: standard output, as an mbox)."""
    from pipemail import pop3
    from pipemail.errors import UsageError, shown
    from pipemail.sizes import parse_size

    if sum(x is not None for x in (mbox, maildir, mda)) > 1:
        raise UsageError("give one of --mbox, --maildir and --mda")
    if delete and not (mbox or maildir or mda):
        raise UsageError("--delete to standard output is refused: a pipe cannot be flushed to disk")
    size = parse_size(max_size) if max_size is not None else None
    with s.connect() as client:
        state, lock_path, pending = pop3.state_paths(s.user_name, s.url)
        if s.log:  # named after the user, host and port as given: spelled otherwise, all is new
            s.log("=== UIDL file (what was fetched): %s" % shown(state))
            s.log("=== lock: %s" % shown(lock_path))
            s.log("=== pending record: %s" % shown(pending))
        fd = pop3.lock(lock_path, "%s at %s" % (s.user_name, s.url.host))
        try:
            if mbox:
                sink = pop3.MboxSink(os.path.expanduser(mbox), pending, state, warn=lambda m: warn("pypop", m))
            elif maildir:
                sink = pop3.MaildirSink(os.path.expanduser(maildir))
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
            client.quit()
        finally:
            os.close(fd)
    if s.verbose or _stderr_is_tty():
        warn("pypop", "%d message%s fetched" % (stored, "" if stored == 1 else "s"))
    return 0


def _stderr_is_tty():
    import sys

    return sys.stderr is not None and sys.stderr.isatty()


def main():
    run(command, "pypop", quiet_pipe=False)  # never killed by SIGPIPE: what a reader did not get is not recorded
