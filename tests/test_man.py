"""Every command's man page documents each option of its --help and renders cleanly."""

import importlib
import re
import shutil
import subprocess

import click
import pytest
from click.testing import CliRunner

from conftest import ROOT

# command name -> module holding its click ``command``; add each new command here.
MODULES = {
    "pyuuencode": "pipemail.cli.uuencode",
    "pyuudecode": "pipemail.cli.uudecode",
    "pyshar": "pipemail.cli.shar",
    "pyunshar": "pipemail.cli.unshar",
    "pymail": "pipemail.cli.mail",
    "pypop": "pipemail.cli.pop",
    "pysendmail": "pipemail.cli.sendmail",  # no click: its HELP is the --help text
    "pymime": "pipemail.cli.mime",
}
# the man page section of each command (1 unless said)
SECTIONS = {"pysendmail": 8}
COMMANDS = list(MODULES)

# An option line of click's help: two spaces, then "-x, --long-name ARG" and its help
# (continuation lines of the help are indented further).
OPTION_LINE = re.compile(r"^ {2}(-\S.*?)(?:\s{2,}|$)")
OPTION_TOKEN = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)")
FONT_ESCAPE = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)")


def help_text(name, *subcommand):
    """``name --help``, or with ``subcommand`` the help of one command of a click group."""
    module = importlib.import_module(MODULES[name])
    if not isinstance(module.command, click.Command):  # pysendmail parses sendmail's argv itself
        assert not subcommand
        return module.HELP + "\n"
    command = module.command
    result = CliRunner().invoke(command, [*subcommand, "--help"], prog_name=name)
    assert result.exit_code == 0, result.output
    return result.output


def help_texts(name):
    """The help of ``name`` and, for a click group (pypop), of each of its commands."""
    command = importlib.import_module(MODULES[name]).command
    texts = [help_text(name)]
    for sub in sorted(getattr(command, "commands", {})):
        texts.append(help_text(name, sub))
    return texts


def help_options(text):
    """Every option token (``-x``, ``--long-name``) in the Options section of ``text``."""
    lines = text.splitlines()
    start = lines.index("Options:") + 1
    options = []
    for line in lines[start:]:
        if not line.strip():
            break  # the end of the section: the epilog follows
        match = OPTION_LINE.match(line)
        if match:
            options += OPTION_TOKEN.findall(match.group(1))
    return options


def page_path(name):
    section = SECTIONS.get(name, 1)
    return ROOT / "man" / ("man%d" % section) / ("%s.%d" % (name, section))


# Pages that document no command's --help: they are only checked to render cleanly.
OTHER_PAGES = [ROOT / "man" / "man5" / "pipemail.conf.5"]


def page_text(name):
    """The page's source with ``\\-`` as ``-`` and font escapes removed."""
    text = page_path(name).read_text(encoding="utf-8")
    return FONT_ESCAPE.sub("", text.replace("\\-", "-").replace("\\%", ""))


def groff():
    path = shutil.which("groff")
    if path is None:
        pytest.fail("groff is not installed: run the README's test command (bash tests/run)")
    return path


def test_help_options_are_found():
    options = help_options(help_text("pyuudecode"))
    assert {"-o", "--output-file", "-f", "--force", "--version", "-h", "--help"} <= set(options)
    assert "OUTFILE" not in options


def test_group_subcommand_options_are_found():
    texts = help_texts("pypop")
    assert len(texts) == 1 + len(importlib.import_module(MODULES["pypop"]).command.commands)
    options = {opt for text in texts for opt in help_options(text)}
    assert {"--server", "--tls-trust-file", "--mbox", "--maildir", "--mda", "--max-size", "--limit"} <= options


@pytest.mark.parametrize("name", COMMANDS)
def test_every_help_option_is_in_the_man_page(name):
    options = [opt for text in help_texts(name) for opt in help_options(text)]
    assert options, "no options found in %s --help" % name
    text = page_text(name)
    missing = [opt for opt in options if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), text)]
    assert not missing, "%s: options of --help missing from %s" % (missing, page_path(name))


@pytest.mark.parametrize("path", [page_path(name) for name in COMMANDS] + OTHER_PAGES, ids=lambda path: path.name)
def test_man_page_renders_without_warnings(path):
    assert path.is_file(), "%s is missing" % path
    proc = subprocess.run(
        [groff(), "-man", "-ww", "-Tutf8", "-z", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert proc.stderr == ""


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_examples(name):
    assert "Examples:" in help_text(name)
