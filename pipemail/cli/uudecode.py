"""pyuudecode: decode every uuencoded or base64 block in its inputs, safely."""

import click

from pipemail import __version__
from pipemail.cli import STDIO_NAMES, Command, progress_bar, run, stdin_stream, stdout_stream, warn
from pipemail.errors import IOFailure

EPILOG = """\b
Examples:
  pyuudecode photo.uue                  # writes the name in its header
  pyuudecode < saved-mail.txt           # every block in the mail
  pyuudecode -o photo.jpg photo.uue
  pyuudecode -o - photo.uue | file -
  pyuudecode -s -f parts/*.uue          # keep relative directories, replace files

Names in headers are untrusted: only their last component is used unless -s,
absolute paths and '..' are always refused (but '-' and /dev/stdout mean
standard output), existing files are kept unless -f, a file appears only once
its block decoded completely, and its mode is the header's masked by the umask
(exact for root), never setuid, setgid or sticky."""


@click.command(cls=Command, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-o",
    "--output-file",
    "outfile",
    metavar="OUTFILE",
    help="Write every block to OUTFILE, one after another ('-' or /dev/stdout: "
    "standard output), instead of the names in the headers.",
)
@click.option("-f", "--force", is_flag=True, help="Replace existing files named by headers.")
@click.option(
    "-s",
    "--keep-paths",
    is_flag=True,
    help="Keep the relative directories of header names (created as needed).",
)
@click.option("-c", "--ignore-chmod", is_flag=True, help="Ignore errors setting the mode of output files.")
@click.version_option(__version__, "--version", prog_name="pyuudecode", message="%(prog)s %(version)s")
@click.argument("files", nargs=-1, metavar="[FILE]...")
def command(outfile, force, keep_paths, ignore_chmod, files):
    """Decode every uuencoded and base64 block in FILEs (default: standard input)."""
    from pipemail import uu
    from pipemail.safefile import Output

    inputs = [("stdin", stdin_stream()) if f == "-" else f for f in files or ("-",)]
    output = outfile
    stdout = None
    if outfile in STDIO_NAMES:
        output = Output.to_stream(stdout_stream())
    elif outfile is None:
        try:  # for headers naming '-' or /dev/stdout
            stdout = Output.to_stream(stdout_stream())
        except IOFailure:  # closed: such headers are refused, the others written
            pass
    bar = progress_bar("pyuudecode", _label(files), _total(inputs))
    try:
        errors = uu.decode_inputs(
            inputs,
            output,
            force=force,
            keep_paths=keep_paths,
            ignore_chmod_errors=ignore_chmod,
            stdout=stdout,
            on_error=lambda exc: warn("pyuudecode", exc),
            advance=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    return errors[0].exit_code if errors else 0


def _label(files):
    import os

    if not files or files == ("-",):
        return "standard input"
    return os.path.basename(files[0]) + (" and %d more" % (len(files) - 1) if len(files) > 1 else "")


def _total(inputs):
    """The bytes to read, when every input is a regular file (else None: no percentage)."""
    import os
    import stat

    from pipemail.progress import file_size

    total = 0
    for item in inputs:
        if isinstance(item, tuple):
            size = file_size(item[1])
        else:
            try:
                st = os.stat(item)
            except OSError:
                continue
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
        if size is None:
            return None
        total += size
    return total


def main():
    run(command, "pyuudecode")
