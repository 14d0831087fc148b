"""The pyshar format is written once (pipemail.sharformat): pyshar writes with its templates and
pyunshar parses with patterns made from the same templates; no module spells them again."""

import ast
from pathlib import Path

import pytest

from pipemail import sharformat as fmt

NAME = b"dir/it's a\nname\x01"


@pytest.mark.parametrize(
    "template, values, fields",
    [
        (fmt.DIR, (fmt.quote(NAME), fmt.quote(b"shown")), (NAME,)),
        (fmt.FILE, (fmt.quote(NAME), fmt.quote(b"shown")), (NAME,)),
        (fmt.MORE, (fmt.quote(NAME), fmt.quote(b"shown")), (NAME,)),
        (fmt.DONE, (123, b"ab" * 32, 0o640, b"202601021304.05"), (123, "ab" * 32, 0o640, b"202601021304.05")),
        (fmt.DONE, (0, b"0" * 64, 0o7, b"-"), (0, "0" * 64, 0o7, b"-")),
        (fmt.DIRMODE, (fmt.quote(NAME), fmt.quote(b"s"), 0o755, b"-"), (NAME, 0o755, b"-")),
        (fmt.TAIL, (fmt.quote(b"last line 'without' newline"),), (b"last line 'without' newline",)),
    ],
)
def test_every_statement_the_writer_makes_parses_back(template, values, fields):
    line = template % values
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert fmt.statement(line) == (template, fields)


@pytest.mark.parametrize(
    "line",
    [
        b"pm_dir 'a'\n",  # no SHOWN
        b"pm_dir 'a' 'b'; rm -rf /\n",
        b"pm_file a b\n",  # unquoted
        b"pm_done 1 abc 0644 -\n",  # short digest
        b"pm_done 1 " + b"a" * 64 + b" 644 -\n",  # mode not four digits
        b"pm_dirmode 'd' 'd' 0755 yesterday\n",
        b"if pm_ok; then printf %s 'x' >> \"./$pm_n\"; fi; rm -rf /\n",
        b"rm -rf /\n",
        b"pm_end\n",  # not a statement with fields
    ],
)
def test_anything_else_is_not_a_statement(line):
    assert fmt.statement(line) is None


def test_the_header_lines_parse_back():
    head = b"#!/bin/sh\n# comment\n" + fmt.PART_LINE % (b"0123456789abcdef", 3) + b"12".ljust(fmt.COUNT_WIDTH) + b"\n"
    assert fmt.find_part_line(head) == ("0123456789abcdef", 3, 12)
    assert fmt.find_part_line(head.replace(b"pyshar", b"pyshaR")) is None
    assert fmt.is_id_line(fmt.ID_LINE % (b"0123456789abcdef", 3) + b"12".ljust(fmt.COUNT_WIDTH) + b"\n")
    assert not fmt.is_id_line(fmt.ID_LINE % (b"0123456789abcdef", 3) + b"12; rm -rf /\n")


def test_the_writer_and_the_parser_spell_no_part_of_the_format_themselves():
    """shar.py and unshar.py (and uu.py, which passes archives over) hold no literal of the format."""
    markers = ("PYSHAR_EOF", "pm_dir", "pm_file", "pm_more", "pm_done", "pm_dirmode", "pm_unb64", "pm_end",
               "pm_id=", "begin-base64 600", "# pyshar archive", "pm_nl")  # fmt: skip
    root = Path(fmt.__file__).parent
    found = []
    for module in ("shar.py", "unshar.py", "uu.py"):
        tree = ast.parse((root / module).read_text())
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and id(node) not in docstrings:
                text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
                found += ["%s:%d: %r" % (module, node.lineno, m) for m in markers if m in text]
    assert found == []
