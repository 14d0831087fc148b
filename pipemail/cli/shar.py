"""pyshar: files to a self-unpacking shell archive, optionally split into parts."""

import os

import click

from pipemail import __version__
from pipemail.cli import Command, progress_bar, run, stdin_stream, stdout_stream, warn
from pipemail.errors import UsageError

EPILOG = """\b
Examples:
  pyshar notes.txt photos/ > stuff.shar
  find . -type f | pyshar > all.shar
  find . -print0 | pyshar -0 -q > all.shar
  pyshar -L 4000 -o companyMega companyMega.logs.tar.gz
  for f in companyMega.[0-9]*; do sh "$f"; done      # unpack, in order
  pyunshar companyMega.*                             # or without running anything

The archive runs under any POSIX sh (dash, bash, busybox sh) and needs no
uudecode: binary files are base64, decoded with the first of uudecode, base64,
openssl or python3.  Existing files are kept unless the archive is run as
'sh FILE -c'.  Sizes: a bare number is KiB; K, M, G suffixes."""


@click.command(cls=Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-L",
    "--split-size-limit",
    "limit",
    metavar="SIZE",
    help="Split into parts of at most SIZE (a bare number is KiB); needs -o.",
)
@click.option(
    "-o",
    "--output-prefix",
    "prefix",
    metavar="PREFIX",
    help="Write the archive to files PREFIX.01, PREFIX.02, ... instead of standard output.",
)
@click.option("-c", "--cut-mark", is_flag=True, help="Start each part with a 'Cut Here' line.")
@click.option("-q", "--quiet", is_flag=True, help="Do not report each file on standard error.")
@click.option(
    "-T", "--text-files", "text", is_flag=True, help="Store every file as text (files with a NUL byte stay base64)."
)
@click.option("-B", "--uuencode", "binary", is_flag=True, help="Store every file base64-encoded.")
@click.option(
    "-x",
    "--no-check-existing",
    "no_check",
    is_flag=True,
    help="Make the archive overwrite existing files without 'sh FILE -c'.",
)
@click.option("-m", "--no-timestamp", is_flag=True, help="Do not restore modification times.")
@click.option("-0", "--null", is_flag=True, help="Names on standard input end with NUL, not newline.")
@click.version_option(__version__, "--version", prog_name="pyshar", message="%(prog)s %(version)s")
@click.argument("operands", nargs=-1, metavar="[FILE|DIR]...")
def command(limit, prefix, cut_mark, quiet, text, binary, no_check, no_timestamp, null, operands):
    """Write FILEs and DIRs (default: the names on standard input) as a shell archive."""
    from pipemail import shar
    from pipemail.sizes import parse_size

    if text and binary:
        raise UsageError("-T and -B exclude each other")
    size = None
    if limit is not None:
        if prefix is None:
            raise UsageError("-L needs -o PREFIX: parts are written to files")
        size = parse_size(limit)
    if operands:
        names = [os.fsencode(o) for o in operands]
    else:
        data = stdin_stream().read()
        names = [n for n in data.split(b"\0" if null else b"\n") if n]
        if not names:
            raise UsageError("no files to archive: give FILEs, or their names on standard input")

    def say(message):
        warn("pyshar", message)

    members = shar.collect(names, say)

    def saving(member, kind):
        if not quiet:
            say("saving %s (%s)" % (shar.show(member.name), kind))

    bar = progress_bar(
        "pyshar", os.path.basename(prefix) if prefix else "archive", sum(m.size for m in members if not m.is_dir)
    )
    try:
        names = shar.write_archive(
            members,
            stream=None if prefix else stdout_stream(),
            prefix=os.fsencode(prefix) if prefix else None,
            limit=size,
            check_existing=not no_check,
            timestamps=not no_timestamp,
            force_text=text,
            force_binary=binary,
            cut_mark=cut_mark,
            warn=say,
            on_member=saving,
            advance=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    if names and not quiet:
        say(
            "wrote %d part%s: %s"
            % (len(names), "" if len(names) == 1 else "s", " ".join(os.fsdecode(n) for n in names))
        )
    return 0


def main():
    run(command, "pyshar")
