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


# The targets are addresses: commas and white space separate them, quotes keep a local part
# whole, and a word that is not an address is said and dropped, never sent as a mangled one.


def test_white_space_separates_targets_on_a_line_and_across_continuations():
    text = "sp: a@example.org\n  b@example.org\nsame: c@example.org d@example.org,e@example.org\n"
    assert expand(text, "sp") == (["a@example.org", "b@example.org"], [])
    assert expand(text, "same") == (["c@example.org", "d@example.org", "e@example.org"], [])


def test_a_quoted_local_part_is_kept_whole_with_its_quotes():
    text = 'x: "a, b"@example.org, "john doe"@example.org "q\\"x"@example.org\n'
    got = ['"a, b"@example.org', '"john doe"@example.org', '"q\\"x"@example.org']
    assert expand(text, "x") == (got, [])


def test_a_quoted_command_with_spaces_and_commas_is_one_target_skipped_whole():
    got, said = expand('root: "|/usr/bin/procmail -a x, y" admin@example.org\n', "root")
    assert got == ["admin@example.org"]
    assert said == ["aliases A: root: |/usr/bin/procmail -a x, y is not run, written or read by pysendmail: skipped"]


def test_an_unquoted_command_runs_to_the_next_comma():
    got, said = expand("root: |/usr/bin/procmail -f- -m, admin@example.org\n", "root")
    assert got == ["admin@example.org"]
    assert said == ["aliases A: root: |/usr/bin/procmail -f- -m is not run, written or read by pysendmail: skipped"]


def test_a_comment_after_an_address_is_said_and_dropped_not_glued_to_it():
    got, said = expand("withcomment: z@example.org # trailing comment\n", "withcomment")
    assert got == ["z@example.org"]
    assert said == [
        "aliases A: line 1: withcomment: # trailing comment is not an address "
        "(a comment is a line of its own, starting with #): skipped"
    ]


def test_a_hash_inside_an_address_is_part_of_it():
    assert expand("x: a#b@example.org\n", "x") == (["a#b@example.org"], [])


def test_words_that_are_not_addresses_are_said_with_their_line_and_dropped():
    text = "root: admin@example.org\nops: a@, @example.org,\n a@b@example.org ok@example.org\n"
    got, said = expand(text, "ops")
    assert got == ["ok@example.org"]
    assert said == [
        "aliases A: line 2: ops: a@ is not an address: skipped",
        "aliases A: line 2: ops: @example.org is not an address: skipped",
        "aliases A: line 3: ops: a@b@example.org is not an address: skipped",
    ]
    assert expand(text, "root") == (["admin@example.org"], [])  # said only when that entry is used


def test_a_display_name_and_a_comment_are_not_addresses_of_their_own():
    text = 'root: Admin Person <admin@example.org>, "The Ops" <ops@example.org>, b@example.org (backup)\n'
    assert expand(text, "root") == (["admin@example.org", "ops@example.org", "b@example.org"], [])


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_name():
    table = aliases.parse(b"\xef\xbb\xbfroot: admin@example.org\n", "A")
    assert table.expand("root") == ["admin@example.org"]


def test_crlf_line_ends():
    text = b"# admins\r\nroot: admin@example.org,\r\n  second@example.org\r\ncron: root\r\n"
    assert aliases.parse(text, "A").expand("cron") == ["admin@example.org", "second@example.org"]


def test_pysendmail_sends_to_each_target_and_says_what_it_dropped(run, tmp_path, smtp_server):
    """The reviewer's file, end to end: each RCPT TO is one address, never two glued together
    or one with a comment in it; the dropped words are said on stderr."""
    srv = smtp_server()
    (tmp_path / "aliases").write_text(
        '\ufeffroot: a@example.org\n  b@example.org  # the admins\nq: "a, b"@example.org\n'
    )
    config = tmp_path / "config.toml"
    config.write_text(
        'queue = "%s"\n[accounts.main]\nfrom = "Alerts <alerts@example.com>"\ntransport = "%s"\ntls = "none"\n'
        'aliases = "%s"\n' % (tmp_path / "queue", srv.url, tmp_path / "aliases")
    )
    env = {"HOME": str(tmp_path), "PIPEMAIL_CONFIG": str(config), "TMPDIR": str(tmp_path)}
    r = run("pysendmail", "-i", "root", "q", input=b"Subject: x\n\nbody\n", env=env)
    assert r.stderr == (
        "pysendmail: aliases %s: line 2: root: # the admins is not an address "
        "(a comment is a line of its own, starting with #): skipped\n" % (tmp_path / "aliases")
    )
    assert r.returncode == 0
    assert [(f, rcpts) for f, rcpts, _ in srv.messages] == [
        ("alerts@example.com", ["a@example.org", "b@example.org", '"a, b"@example.org'])
    ]
