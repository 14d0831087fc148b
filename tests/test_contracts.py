"""Contracts of the core, checked on its source: exit codes by name, attributes declared.

An exit code is EX_* from pipemail.errors (DESIGN.md's table), never a literal 74 or 75
compared or returned; a module does not read an optional attribute of our own objects with
``getattr(obj, "name", default)`` (the attribute is declared on the class instead).
"""

import ast
from pathlib import Path

import pipemail

ROOT = Path(pipemail.__file__).parent
SOURCES = sorted(ROOT.glob("*.py")) + sorted((ROOT / "cli").glob("*.py"))
EXIT_CODES = set(range(64, 79))
# getattr with a default on objects that are not ours: the os module (O_* flags), the stdlib
# uu module's API (any file object) and a stream the caller gave (a file or a BytesIO)
FOREIGN = {"os", "in_file", "stream"}


def exit_code_literals(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Return) and node.value is not None:
            operands = [node.value, *(node.value.elts if isinstance(node.value, ast.Tuple) else ())]
            if isinstance(node.value, ast.IfExp):
                operands += [node.value.body, node.value.orelse]
        elif isinstance(node, ast.Tuple) and isinstance(getattr(node, "parent", None), ast.Assign):
            operands = node.elts[:1]
        else:
            continue
        for op in operands:
            if isinstance(op, ast.Constant) and type(op.value) is int and op.value in EXIT_CODES:
                yield node.lineno, op.value


def test_exit_codes_are_named_not_typed():
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node
        found += ["%s:%d: %d" % (path.relative_to(ROOT), line, value) for line, value in exit_code_literals(tree)]
    assert found == []


def test_no_getattr_with_a_default_on_our_own_objects():
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and (node.func.id == "hasattr" or len(node.args) == 3)
                and not (isinstance(node.args[0], ast.Name) and node.args[0].id in FOREIGN)
            ):
                found.append("%s:%d: %s" % (path.relative_to(ROOT), node.lineno, ast.unparse(node)))
    assert found == []
