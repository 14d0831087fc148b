"""pyuuencode: binary to 7-bit text, classic uuencode or base64."""

import os

import click

from pipemail import __version__, uu
from pipemail.cli import STDIO_NAMES, Command, progress_bar, run, stdin_stream, stdout_stream
from pipemail.errors import NoInputError, UsageError, describe_oserror

EPILOG = """\b
Examples:
  pyuuencode photo.jpg photo.jpg > photo.uue
  tar czf - logs | pyuuencode -m logs.tgz | pymail -s logs me@example.com
  pyuuencode -o kitty.uue mykitty.jpg kitty.jpg

With one operand, the data comes from standard input and the operand is the
name written in the header.  Output is byte-identical to GNU uuencode."""


@click.command(cls=Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-m",
    "--base64",
    is_flag=True,
    help="Encode as base64 (begin-base64 ... ====) instead of classic uuencoding.",
)
@click.option(
    "-o",
    "--output-file",
    "outfile",
    metavar="OUTFILE",
    help="Write to OUTFILE, replacing it only when complete, instead of standard output.",
)
@click.version_option(__version__, "--version", prog_name="pyuuencode", message="%(prog)s %(version)s")
@click.argument("operands", nargs=-1, metavar="[INFILE] REMOTENAME")
def command(base64, outfile, operands):
    """Encode INFILE (default, or '-': standard input) as uuencoded text named REMOTENAME."""
    if not 1 <= len(operands) <= 2:
        raise UsageError("expected [INFILE] REMOTENAME, got %d operands" % len(operands))
    infile, name = operands if len(operands) == 2 else ("-",) + operands
    if not name:
        raise UsageError("REMOTENAME must not be empty")
    uu.check_name(name)
    if infile == "-":
        src, opened = stdin_stream(), None
        mode = 0o666 & ~_umask()
    else:
        try:
            src = opened = open(infile, "rb")
            mode = os.fstat(src.fileno()).st_mode & 0o777
        except OSError as exc:
            raise NoInputError("cannot open %s: %s" % (infile, describe_oserror(exc))) from None
    from pipemail import progress

    bar = progress_bar(
        "pyuuencode", "standard input" if infile == "-" else os.path.basename(infile), progress.file_size(src)
    )
    src = progress.reader(src, bar)
    try:
        if outfile is None or outfile in STDIO_NAMES:
            uu.encode_stream(src, stdout_stream(), name, mode, base64=base64)
            stdout_stream().flush()
            return 0
        from pipemail.safefile import Output

        with Output.to_path(outfile) as out:
            uu.encode_stream(src, out, name, mode, base64=base64)
            out.commit(0o666 & ~_umask())
        return 0
    finally:
        if bar is not None:
            bar.close()
        if opened is not None:
            opened.close()


def _umask():
    from pipemail.safefile import current_umask

    return current_umask()


def main():
    run(command, "pyuuencode")
