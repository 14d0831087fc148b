"""pymail: send standard input as a mail, with attachments, and say exactly why it failed."""

import os

import click

from pipemail import __version__
from pipemail.cli import Command, check_timeout, progress_bar, run, stdin_stream, stdout_stream, warn

EPILOG = """\b
Examples:
  uname -a | pymail -s report admin@example.com
  pymail -a backup.tgz -s backup me@example.com < /dev/null
  pymail --max-size 4M -a big.tar.gz -s backup me@example.com < /dev/null
  df -h | pymail -E -s 'disk report' --transport smtp://mail.example.com ops@example.com
  pymail -v --check --transport smtps://mail.example.com me@example.com
  pymail --resend ~/dead.letter
  backup.sh | pymail --sign --encrypt --smime --recipient-cert ops.pem -s backup ops@example.com

Without --transport or a configured account, mail goes through the local
sendmail.  A message that cannot be delivered is appended to the dead letter
(~/dead.letter) with the recipients it missed; --resend sends those again."""


@click.command(cls=Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-s", "--subject", help="The subject (non-ASCII is encoded as RFC 2047).")
@click.option("-c", "--cc", multiple=True, metavar="ADDR", help="Copy to ADDR (repeatable).")
@click.option("-b", "--bcc", multiple=True, metavar="ADDR", help="Blind copy to ADDR: envelope only (repeatable).")
@click.option("-r", "--from", "sender", metavar="ADDR", help="The From address (default: the account's, or user@host).")
@click.option("-a", "--attach", multiple=True, metavar="FILE", help="Attach FILE (repeatable).")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Add a header (repeatable); not From, Sender, To, Cc, Bcc or Subject, which options set.",
)
@click.option("-E", "--skip-empty", is_flag=True, help="Send nothing, and exit 0, when standard input is empty.")
@click.option(
    "-t",
    "--read-recipients",
    is_flag=True,
    help="Standard input is a whole message; send to its To, Cc and Bcc (and any RECIPIENTs).",
)
@click.option("--stdin-name", metavar="NAME", help="File name for binary standard input, which is attached.")
@click.option(
    "--attach-charset",
    metavar="CHARSET",
    help="The charset of text attachments that are neither ASCII nor UTF-8 (default: libmagic's guess).",
)
@click.option("--account", metavar="NAME", help="Use account NAME of the configuration.")
@click.option(
    "--transport",
    metavar="URL",
    help="smtp://[USER@]HOST[:PORT], smtps://..., sendmail:[PATH], mbox:PATH, maildir:DIR or - (stdout).",
)
@click.option("--user", metavar="USER", help="Authenticate as USER (the password never on the command line).")
@click.option(
    "--tls",
    type=click.Choice(["auto", "none"]),
    help="auto: require STARTTLS except on loopback; none: allow plaintext.",
)
@click.option("--tls-trust-file", metavar="PATH", help="Trust the CA certificates in PATH.")
@click.option(
    "--proxy",
    metavar="URL",
    help="Reach the SMTP server through a proxy: socks5://HOST:PORT, socks5h://... or http://... (CONNECT); "
    "'' for none.",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, metavar="SECONDS", help="Limit on every network wait."
)
@click.option("-v", "--verbose", is_flag=True, help="Show the SMTP dialogue on standard error (AUTH redacted).")
@click.option(
    "--check",
    is_flag=True,
    help="Send nothing: over SMTP walk EHLO to RCPT TO for every recipient, then RSET; "
    "with another transport check what can be checked without sending, and say what was not.",
)
@click.option("--dead-letter", metavar="PATH", help="Where undelivered mail goes (default $DEAD or ~/dead.letter).")
@click.option(
    "--resend", metavar="MBOX", help="Send the messages of a dead letter again, each to the recipients it missed."
)
@click.option(
    "--max-size",
    metavar="SIZE",
    help="Keep every mail within SIZE (a bare number is KiB): attachments that do not fit go as a "
    "pyshar archive split over several mails.",
)
@click.option(
    "--sign/--no-sign",
    default=None,
    help="Sign the message (S/MIME or OpenPGP); --no-sign overrides the account's sign = true.",
)
@click.option(
    "--encrypt/--no-encrypt",
    default=None,
    help="Encrypt the message to every recipient (Bcc recipients each get a copy of their own); "
    "--no-encrypt overrides the account's encrypt = true.",
)
@click.option("--smime", is_flag=True, help="Sign/encrypt with S/MIME (default: the account's crypto).")
@click.option("--openpgp", is_flag=True, help="Sign/encrypt with OpenPGP (GnuPG).")
@click.option(
    "--recipient-cert",
    "recipient_certs",
    multiple=True,
    metavar="FILE",
    help="S/MIME: a recipient's certificate (PEM), matched to recipients by its addresses (repeatable).",
)
@click.option("--debug", is_flag=True, help="Show a traceback for internal errors.")
@click.version_option(__version__, "--version", prog_name="pymail", message="%(prog)s %(version)s")
@click.argument("recipients", nargs=-1, metavar="[--] RECIPIENT...")
def command(
    subject,
    cc,
    bcc,
    sender,
    attach,
    headers,
    skip_empty,
    read_recipients,
    stdin_name,
    attach_charset,
    account,
    transport,
    user,
    tls,
    tls_trust_file,
    proxy,
    timeout,
    verbose,
    check,
    dead_letter,
    resend,
    max_size,
    sign,
    encrypt,
    smime,
    openpgp,
    recipient_certs,
    debug,
    recipients,
):
    """Send standard input as a mail to RECIPIENTs."""
    from pipemail import message, sending

    check_timeout(timeout)
    if smime and openpgp:
        from pipemail.errors import UsageError

        raise UsageError("--smime and --openpgp cannot go together: give one")
    crypto_kind = "smime" if smime else "openpgp" if openpgp else None
    if debug:
        os.environ["PIPEMAIL_DEBUG"] = "1"
    log = (lambda line: click.echo(line, err=True)) if verbose else None
    options = sending.Options(
        account=account,
        transport=transport,
        user=user,
        tls=tls,
        trust_file=tls_trust_file,
        timeout=timeout,
        log=log,
        check=check,
        dead_letter=dead_letter,
        warn=lambda m: warn("pymail", m),
        stdout=None,
        progress=lambda label, total, unit: progress_bar("pymail", label, total, unit),
        proxy=proxy,
    )
    if resend:
        given = [
            o
            for o, v in (
                ("RECIPIENT", recipients),
                ("-s", subject),
                ("-a", attach),
                ("-c", cc),
                ("-b", bcc),
                ("-H", headers),
                ("-t", read_recipients),
                ("-r", sender),
                ("--attach-charset", attach_charset),
                ("--sign", sign),
                ("--encrypt", encrypt),
                ("--smime/--openpgp", crypto_kind),
                ("--recipient-cert", recipient_certs),
            )
            if v
        ]
        if given:
            from pipemail.errors import UsageError

            raise UsageError(
                "--resend sends the dead letter's messages as they are: %s cannot go with it" % ", ".join(given)
            )
        return sending.resend(resend, options)
    body = _read_body(stdin_stream())
    if skip_empty and message.is_blank(body):
        return 0
    options.stdout = stdout_stream()
    return sending.send_mail(
        body,
        options,
        subject=subject,
        to=recipients,
        cc=cc,
        bcc=bcc,
        sender=sender,
        attach=attach,
        headers=headers,
        read_recipients=read_recipients,
        stdin_name=stdin_name,
        max_size=_size(max_size),
        attach_charset=attach_charset,
        sign=sign,
        encrypt=encrypt,
        crypto_kind=crypto_kind,
        recipient_certs=recipient_certs,
    )


def _size(text):
    if text is None:
        return None
    from pipemail.sizes import parse_size

    return parse_size(text)


def _read_body(stream):
    """Standard input spooled to a private file in $TMPDIR (see pipemail.spool), as a message source."""
    from pipemail import message, spool

    # a terminal as mailx reads it: up to a line holding a single '.', or end of file
    chunks = iter(lambda: _line(stream), b"") if stream.isatty() else spool.read_chunks(stream)
    return message.FileData(spool.spool(chunks), "standard input")


def _line(stream):
    line = stream.readline()
    return b"" if line.rstrip(b"\r\n") == b"." else line


def main():
    run(command, "pymail")
