"""pyunshar: extract shell archives without ever running them."""

import os

import click

from pipemail import __version__
from pipemail.cli import Command, progress_bar, run, stdin_stream, warn

EPILOG = """\b
Examples:
  pyunshar stuff.shar
  pyunshar -d restore companyMega.*        # parts in any order
  pyunshar -d restore backups.mbox         # every archive in a mailbox
  pyunshar -l ~/Maildir                    # list what the archives hold
  pymail ... | pyunshar                    # from standard input

pyunshar never runs a shell: it reads archives written by pyshar and by GNU
shar (default options, -L, -m, -x, -Q, -B, -T, -V) and creates the files
itself, only below DIR, never setuid, never over an existing file unless -c.
Modes are the archive's masked by the umask (exact for root); directories
that existed before keep their mode and time.
Archives are found after mail headers, in MIME attachments, mboxes and
Maildirs; split archives are put together by their identifier."""


@click.command(cls=Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-d", "--directory", default=".", metavar="DIR", show_default=True, help="Extract below DIR, and nowhere else."
)
@click.option("-c", "--overwrite", is_flag=True, help="Replace existing files.")
@click.option(
    "-e",
    "--split-at-exit",
    is_flag=True,
    help="Split concatenated archives at 'exit 0' lines (always done; accepted for GNU).",
)
@click.option(
    "-l", "--list", "list_only", is_flag=True, help="List size, mode and name of each member instead of extracting."
)
@click.version_option(__version__, "--version", prog_name="pyunshar", message="%(prog)s %(version)s")
@click.argument("inputs", nargs=-1, metavar="[FILE|MAILBOX]...")
def command(directory, overwrite, split_at_exit, list_only, inputs):  # noqa: ARG001 (-e is always on)
    """Extract the shell archives in FILEs, mboxes and Maildirs (default: standard input)."""
    from pipemail.shar import show
    from pipemail.unshar import unshar

    items = [("stdin", stdin_stream()) if i == "-" else i for i in inputs or ("-",)]

    def report(name, status):
        if status == "ok":
            if bar is not None:
                bar.interrupt()  # "x - NAME" on a line of its own
            click.echo("x - %s" % show(name))

    bar = (
        None
        if list_only
        else progress_bar("pyunshar", "extracting into %s" % (os.path.basename(os.path.abspath(directory)) or "/"))
    )
    try:
        errors = unshar(
            items,
            directory,
            overwrite=overwrite,
            list_only=list_only,
            on_error=lambda exc: warn("pyunshar", exc),
            on_file=report,
            emit=click.echo,
            advance=bar,
            on_warning=lambda message: warn("pyunshar", message),
        )
    finally:
        if bar is not None:
            bar.close()
    return errors[0].exit_code if errors else 0


def main():
    run(command, "pyunshar")
