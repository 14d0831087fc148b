"""aliases(5) as pysendmail reads it: continuation lines, comments, case, default:, recursion,
loops, and entries that are never run or followed."""

import pytest

from pipemail import aliases
from pipemail.errors import ConfigError


def expand(text, name):
    said = []
    got = aliases.parse(text.encode(), "A").expand(name, said.append)
    return got, said


def test_a_name_maps_to_its_addresses_with_continuations_and_comments():
    text = "# admins\nroot: admin@example.org,\n  second@example.org\n\t, third@example.org\n# end\nbob: bob@x.org\n"
    assert expand(text, "root") == (["admin@example.org", "second@example.org", "third@example.org"], [])


def test_names_are_matched_without_regard_to_case():
    assert expand("Root: admin@example.org\n", "ROOT") == (["admin@example.org"], [])


def test_recursion_and_duplicates():
    text = "cron: root, ops\nroot: admin@example.org\nops: admin@example.org, ops@example.org\n"
    assert expand(text, "cron") == (["admin@example.org", "ops@example.org"], [])


def test_default_takes_unknown_names_but_not_listed_ones():
    text = "root: admin@example.org\ndefault: catch@example.org\n"
    assert expand(text, "www-data") == (["catch@example.org"], [])
    assert expand(text, "root") == (["admin@example.org"], [])


def test_an_unknown_name_without_default_is_itself():
    assert expand("root: a@example.org\n", "bob") == (["bob"], [])


def test_a_name_that_lists_itself_keeps_its_own_mailbox():
    assert expand("root: root, admin@example.org\n", "root") == (["root", "admin@example.org"], [])


def test_a_loop_is_said_and_stops():
    got, said = expand("a: b\nb: c\nc: a, x@example.org\n", "a")
    assert got == ["a", "x@example.org"]
    assert said == ["aliases A: a loops back to a: delivered to a as it is"]


@pytest.mark.parametrize("target", ['"|/usr/bin/procmail -f-"', "|cat", "/var/mail/root", ":include:/etc/list"])
def test_commands_files_and_includes_are_never_followed(target):
    got, said = expand("root: %s, admin@example.org\n" % target, "root")
    assert got == ["admin@example.org"]
    assert said == ["aliases A: root: %s is not run, written or read by pysendmail: skipped" % target.strip('"')]


def test_a_line_without_a_colon_is_a_config_error():
    with pytest.raises(ConfigError) as exc:
        aliases.parse(b"root admin@example.org\n", "/etc/x")
    assert str(exc.value) == "aliases file /etc/x: line 1: not 'name: address, ...': root admin@example.org"


def test_a_continuation_before_any_alias_is_a_config_error():
    with pytest.raises(ConfigError, match="line 1: a continuation line before any alias"):
        aliases.parse(b"  admin@example.org\n", "/etc/x")


def test_a_missing_default_file_is_no_aliases(monkeypatch, tmp_path):
    monkeypatch.setattr(aliases, "DEFAULT_PATH", str(tmp_path / "none"))
    table = aliases.load(None)
    assert not table and table.expand("root") == ["root"]


def test_a_missing_named_file_is_78(tmp_path):
    with pytest.raises(ConfigError) as exc:
        aliases.load(str(tmp_path / "none"))
    assert exc.value.exit_code == 78
    assert str(exc.value) == (
        "aliases file %s: No such file or directory (the account's aliases key names it)" % (tmp_path / "none")
    )
