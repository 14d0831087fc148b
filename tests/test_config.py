"""pipemail.config: the TOML file, accounts, password lookup, URLs, loopback."""

import os
import sys

import pytest

from pipemail import config
from pipemail.config import Account, Config, load, password, redact_url, split_url
from pipemail.errors import ConfigError, UsageError

GMAIL = """\
default = "gmail"

[accounts.gmail]
from = "Me <me@gmail.com>"
transport = "smtp://smtp.gmail.com:587"
user = "me@gmail.com"
password_command = "echo s3cret"
auth = "plain"

[accounts.local]
transport = "sendmail:"

[accounts.home]
pop = "pop3s://me@pop.example.net"
tls = "none"
tls_trust_file = "~/certs/ca.pem"
"""


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """HOME is an empty directory: no ~/.netrc, no default config, unless a test writes one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PIPEMAIL_CONFIG", raising=False)
    monkeypatch.delenv("PIPEMAIL_PASSWORD", raising=False)
    return home


def write(path, text, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def write_netrc(home, text, mode=0o600):
    return write(home / ".netrc", text, mode)


# -- finding and reading the file --------------------------------------------------


def test_missing_default_file_is_an_empty_config(home):
    cfg = load(env={})
    assert cfg.path == str(home / ".config/pipemail/config.toml")
    assert cfg.accounts == {}
    assert cfg.default is None
    assert cfg.found is False
    assert cfg.account() == Account()


def test_empty_account_has_everything_none_but_tls():
    acct = Account()
    for attr in ("name", "from_", "transport", "pop", "user", "password_command", "password", "auth"):
        assert getattr(acct, attr) is None
    assert acct.tls == "auto"
    assert acct.tls_trust_file is None
    assert acct.mode_ok is True


def test_default_location_is_read(home):
    path = write(home / ".config/pipemail/config.toml", GMAIL)
    cfg = load(env={})
    assert cfg.path == str(path)
    assert cfg.found is True
    assert sorted(cfg.accounts) == ["gmail", "home", "local"]


def test_pipemail_config_names_the_file(tmp_path):
    path = write(tmp_path / "elsewhere.toml", GMAIL)
    cfg = load(env={"PIPEMAIL_CONFIG": str(path)})
    assert cfg.path == str(path)
    assert cfg.default == "gmail"


def test_pipemail_config_from_os_environ(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", GMAIL)
    monkeypatch.setenv("PIPEMAIL_CONFIG", str(path))
    assert load().path == str(path)


def test_explicit_path_beats_pipemail_config(tmp_path):
    path = write(tmp_path / "a.toml", GMAIL)
    cfg = load(path, env={"PIPEMAIL_CONFIG": str(tmp_path / "nonexistent.toml")})
    assert cfg.path == str(path)


def test_explicit_path_may_be_a_pathlike(tmp_path):
    path = write(tmp_path / "a.toml", GMAIL)
    assert load(path).path == str(path)


def test_missing_explicit_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(str(missing), env={})
    assert str(info.value) == "config file %s: No such file or directory" % missing
    assert info.value.exit_code == 78


def test_missing_file_named_by_pipemail_config_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(env={"PIPEMAIL_CONFIG": str(missing)})
    assert str(info.value) == "config file %s: No such file or directory" % missing


def test_empty_pipemail_config_means_the_default(home):
    assert load(env={"PIPEMAIL_CONFIG": ""}).path == str(home / ".config/pipemail/config.toml")


def test_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path), env={})
    assert str(info.value) == "config file %s: Is a directory" % tmp_path


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\nuser = "x"\nauth = plain\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "config file %s: Invalid value (at line 3, column 8)" % path


def test_duplicate_key_is_a_syntax_error(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\nuser = "x"\nuser = "y"\n')
    with pytest.raises(ConfigError, match=r"Cannot overwrite a value \(at line 3, column 11\)$"):
        load(path)


def test_file_not_utf8(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'[accounts.a]\nuser = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "config file %s: line 2: not valid UTF-8" % path


def test_empty_file_has_no_accounts(tmp_path):
    cfg = load(write(tmp_path / "c.toml", ""))
    assert cfg.found is True
    assert cfg.accounts == {}
    assert cfg.account() == Account()


# -- keys --------------------------------------------------------------------------


def test_every_key_is_read(tmp_path, home):
    path = write(tmp_path / "c.toml", GMAIL)
    cfg = load(path)
    gmail = cfg.accounts["gmail"]
    assert gmail.name == "gmail"
    assert gmail.from_ == "Me <me@gmail.com>"
    assert gmail.transport == "smtp://smtp.gmail.com:587"
    assert gmail.user == "me@gmail.com"
    assert gmail.password_command == "echo s3cret"
    assert gmail.auth == "plain"
    assert gmail.tls == "auto"
    assert gmail.pop is None
    assert gmail.password is None
    assert gmail.config_path == str(path)
    home_acct = cfg.accounts["home"]
    assert home_acct.pop == "pop3s://me@pop.example.net"
    assert home_acct.tls == "none"
    assert home_acct.tls_trust_file == str(home / "certs/ca.pem")


def test_unknown_account_key_is_an_error(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.work]\nusr = "me"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: unknown key 'usr' in account 'work' "
        "(keys: aliases, auth, crypto, domain, encrypt, from, key_password_command, password, password_command, "
        "pgp_key, pop, proxy, sign, smime_cert, smime_certs, smime_key, tls, tls_trust_file, transport, user)" % path
    )


def test_unknown_top_level_key_is_an_error(tmp_path):
    path = write(tmp_path / "c.toml", 'defualt = "work"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: unknown key 'defualt' (top-level keys: default, accounts, queue, queue_lifetime, "
        "drop_max_size; accounts go in [accounts.NAME])" % path
    )


def test_account_keys_at_top_level_are_refused(tmp_path):
    path = write(tmp_path / "c.toml", 'transport = "sendmail:"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'transport'"):
        load(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[accounts.a]\nuser = 3\n", "account 'a': 'user' must be a string"),
        ("default = 1\n[accounts.a]\n", "'default' must be a string, the name of an account"),
        ('accounts = "a"\n', "'accounts' must be a table: write [accounts.NAME]"),
        ("[accounts]\na = 1\n", "accounts.a must be a table: write [accounts.a]"),
    ],
)
def test_wrong_types(tmp_path, text, message):
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "config file %s: %s" % (path, message)


@pytest.mark.parametrize("auth", ["plain", "login", "xoauth2", "oauthbearer", "PLAIN", "OAuthBearer"])
def test_auth_values(tmp_path, auth):
    path = write(tmp_path / "c.toml", '[accounts.a]\nauth = "%s"\n' % auth)
    assert load(path).accounts["a"].auth == auth.lower()


def test_bad_auth(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\nauth = "cram-md5"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        'config file %s: account \'a\': auth \'cram-md5\': use "plain", "login", "xoauth2" or "oauthbearer"' % path
    )


@pytest.mark.parametrize("tls", ["auto", "none", "None"])
def test_tls_values(tmp_path, tls):
    path = write(tmp_path / "c.toml", '[accounts.a]\ntls = "%s"\n' % tls)
    assert load(path).accounts["a"].tls == tls.lower()


def test_bad_tls(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\ntls = "starttls"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "config file %s: account 'a': tls 'starttls': use \"auto\" or \"none\"" % path


def test_bad_transport_in_file_is_a_config_error(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\ntransport = "imap://x"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: account 'a': unknown transport URL 'imap://x': "
        "use smtp://, smtps://, sendmail:, mbox:, maildir: or -" % path
    )
    assert info.value.exit_code == 78


def test_pop_url_as_transport_is_refused(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\ntransport = "pop3s://x"\n')
    with pytest.raises(ConfigError, match="unknown transport URL 'pop3s://x'"):
        load(path)


def test_pop_key_takes_imap_urls(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\npop = "imaps://me@imap.example.org"\n')
    assert load(path).account("a").pop == "imaps://me@imap.example.org"


def test_bad_pop_in_file(tmp_path):
    path = write(tmp_path / "c.toml", '[accounts.a]\npop = "smtp://x"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: account 'a': unknown POP or IMAP URL 'smtp://x': use pop3://, pop3s://, imap:// or imaps://"
        % path
    )


# -- choosing an account -----------------------------------------------------------


def test_named_account(tmp_path):
    cfg = load(write(tmp_path / "c.toml", GMAIL))
    assert cfg.account("local").transport == "sendmail:"


def test_default_account(tmp_path):
    cfg = load(write(tmp_path / "c.toml", GMAIL))
    assert cfg.account().name == "gmail"


def test_only_account_without_default(tmp_path):
    cfg = load(write(tmp_path / "c.toml", '[accounts.solo]\ntransport = "-"\n'))
    assert cfg.default is None
    assert cfg.account().name == "solo"


def test_several_accounts_without_default_is_an_error(tmp_path):
    text = '[accounts.a]\ntransport = "-"\n[accounts.b]\ntransport = "sendmail:"\n'
    path = write(tmp_path / "c.toml", text)
    cfg = load(path)
    with pytest.raises(ConfigError) as info:
        cfg.account()
    assert str(info.value) == (
        '%s has several accounts (a, b) and no default: give --account NAME or set default = "NAME"' % path
    )
    assert cfg.account("b").transport == "sendmail:"


def test_unknown_account(tmp_path):
    path = write(tmp_path / "c.toml", GMAIL)
    with pytest.raises(ConfigError) as info:
        load(path).account("wrok")
    assert str(info.value) == "no account 'wrok' in %s; accounts: gmail, home, local" % path
    assert info.value.exit_code == 78


def test_unknown_account_in_a_file_without_accounts(tmp_path):
    path = write(tmp_path / "c.toml", "")
    with pytest.raises(ConfigError) as info:
        load(path).account("x")
    assert str(info.value) == "no account 'x' in %s; it defines no accounts" % path


def test_unknown_account_without_a_file(home):
    with pytest.raises(ConfigError) as info:
        load(env={}).account("x")
    path = home / ".config/pipemail/config.toml"
    assert str(info.value) == "no account 'x': config file %s: No such file or directory" % path


def test_default_naming_no_account(tmp_path):
    path = write(tmp_path / "c.toml", 'default = "wrok"\n[accounts.work]\n[accounts.home]\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == ("config file %s: default account 'wrok' is not defined; accounts: home, work" % path)


def test_config_constructed_directly():
    cfg = Config("/x", {"a": Account(name="a")}, default="a")
    assert cfg.account().name == "a"


# -- the file's mode ---------------------------------------------------------------


@pytest.mark.parametrize("mode, ok", [(0o600, True), (0o400, True), (0o640, False), (0o644, False), (0o604, False)])
def test_mode_ok(tmp_path, mode, ok):
    cfg = load(write(tmp_path / "c.toml", '[accounts.a]\nuser = "u"\n', mode))
    assert cfg.mode_ok is ok
    assert cfg.accounts["a"].mode_ok is ok


# -- passwords ---------------------------------------------------------------------


def account_from(tmp_path, body, mode=0o600):
    path = write(tmp_path / "c.toml", "[accounts.a]\n" + body, mode)
    return load(path).account("a"), path


def test_pipemail_password_comes_first(tmp_path):
    acct, _ = account_from(tmp_path, 'password_command = "exit 1"\npassword = "key"\n', 0o644)
    assert password(acct, "u", "h", env={"PIPEMAIL_PASSWORD": "fromenv"}) == "fromenv"


def test_pipemail_password_from_os_environ(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEMAIL_PASSWORD", "osenv")
    assert password(Account(), "u", "h") == "osenv"


def test_empty_pipemail_password_is_unset(tmp_path):
    acct, _ = account_from(tmp_path, 'password = "key"\n')
    assert password(acct, "u", "h", env={"PIPEMAIL_PASSWORD": ""}) == "key"


def test_password_command(tmp_path):
    acct, _ = account_from(tmp_path, "password_command = \"printf 'first line\\\\nsecond\\\\n'\"\n")
    assert password(acct, "u", "h", env={}) == "first line"


def test_password_command_beats_password_key(tmp_path):
    acct, _ = account_from(tmp_path, 'password_command = "echo cmd"\npassword = "key"\n')
    assert password(acct, "u", "h", env={}) == "cmd"


def test_password_command_keeps_spaces_and_drops_crlf(tmp_path):
    acct, _ = account_from(tmp_path, "password_command = \"printf ' a b \\\\r\\\\n'\"\n")
    assert password(acct, "u", "h", env={}) == " a b "


def test_password_command_without_final_newline(tmp_path):
    acct, _ = account_from(tmp_path, "password_command = \"printf 'tok'\"\n")
    assert password(acct, "u", "h", env={}) == "tok"


def test_password_command_gets_env_and_no_stdin(tmp_path):
    acct, _ = account_from(tmp_path, 'password_command = "read x || echo \\"$SECRET\\""\n')
    assert password(acct, "u", "h", env={"SECRET": "from-env"}) == "from-env"


def test_password_command_failure(tmp_path):
    acct, _ = account_from(
        tmp_path, 'password_command = "echo out; echo gpg: decryption failed >&2; echo more >&2; exit 3"\n'
    )
    with pytest.raises(ConfigError) as info:
        password(acct, "u", "h", env={})
    assert str(info.value) == "account 'a': password_command failed with exit status 3: gpg: decryption failed"
    assert "out" not in str(info.value)


def test_password_command_failure_without_stderr(tmp_path):
    acct, _ = account_from(tmp_path, 'password_command = "exit 1"\n')
    with pytest.raises(ConfigError) as info:
        password(acct, "u", "h", env={})
    assert str(info.value) == "account 'a': password_command failed with exit status 1"


def test_password_command_killed(tmp_path):
    acct, _ = account_from(tmp_path, 'password_command = "kill -9 $$"\n')
    with pytest.raises(ConfigError) as info:
        password(acct, "u", "h", env={})
    assert str(info.value) == "account 'a': password_command was killed by signal 9"


def test_password_command_printing_nothing(tmp_path):
    acct, _ = account_from(tmp_path, 'password_command = "true"\n')
    with pytest.raises(ConfigError) as info:
        password(acct, "u", "h", env={})
    assert str(info.value) == "account 'a': password_command printed no password"


def test_password_command_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PASSWORD_COMMAND_TIMEOUT", 0.5)
    # The grandchild holds stdout open: the whole process group must be killed.
    acct, _ = account_from(tmp_path, 'password_command = "sleep 30 & sleep 30"\n')
    with pytest.raises(ConfigError) as info:
        password(acct, "u", "h", env={})
    assert str(info.value) == "account 'a': password_command did not finish within 0.5 seconds"


def test_password_command_timeout_default_is_30_seconds():
    assert config.PASSWORD_COMMAND_TIMEOUT == 30


def test_run_password_command_directly():
    assert config.run_password_command("echo tok") == "tok"
    with pytest.raises(ConfigError, match=r"^password_command failed with exit status 2$"):
        config.run_password_command("exit 2", env={})


def test_password_key_in_private_file(tmp_path):
    acct, _ = account_from(tmp_path, 'password = "hunter2"\n', 0o600)
    assert password(acct, "u", "h", env={}) == "hunter2"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_password_key_in_readable_file_is_refused(tmp_path, mode):
    acct, path = account_from(tmp_path, 'password = "hunter2"\n', mode)
    with pytest.raises(ConfigError) as info:
        password(acct, "u", "h", env={})
    assert str(info.value) == "%s holds a password and is readable by others: chmod 600 %s" % (path, path)
    assert info.value.exit_code == 78
    assert "hunter2" not in str(info.value)


def test_readable_file_without_password_key_is_fine(tmp_path):
    acct, _ = account_from(tmp_path, 'user = "u"\n', 0o644)
    assert password(acct, "u", "h", env={}) is None


def test_password_never_in_repr(tmp_path):
    acct, _ = account_from(tmp_path, 'password = "hunter2"\n')
    assert "hunter2" not in repr(acct)
    assert "hunter2" not in repr(load(tmp_path / "c.toml"))
    assert "<hidden>" in repr(acct)


def test_nothing_found_is_none(tmp_path):
    assert password(Account(), "u", "mail.example.com", env={}) is None
    assert password(None, None, None, env={}) is None


def test_netrc_matching_login(home):
    write_netrc(home, "machine mail.example.com login alice password wonderland\n")
    assert password(Account(), "alice", "mail.example.com", env={}) == "wonderland"


def test_netrc_other_login_is_not_used(home):
    write_netrc(home, "machine mail.example.com login alice password wonderland\n")
    assert password(Account(), "bob", "mail.example.com", env={}) is None


def test_netrc_without_user_takes_the_entry(home):
    write_netrc(home, "machine mail.example.com\n  login alice\n  password wonderland\n")
    assert password(Account(), None, "mail.example.com", env={}) == "wonderland"
    assert config.netrc_entry("mail.example.com") == ("alice", "wonderland")


def test_netrc_other_host_and_default_entry_are_not_used(home):
    write_netrc(home, "machine other.example.com login alice password x\ndefault login alice password y\n")
    assert password(Account(), "alice", "mail.example.com", env={}) is None


def test_netrc_host_case_insensitive(home):
    write_netrc(home, "machine mail.example.com login alice password w\n")
    assert password(Account(), "alice", "MAIL.example.com", env={}) == "w"


def test_netrc_comes_last(tmp_path, home):
    write_netrc(home, "machine h login u password fromnetrc\n")
    acct, _ = account_from(tmp_path, 'password = "key"\n')
    assert password(acct, "u", "h", env={}) == "key"
    assert password(Account(), "u", "h", env={}) == "fromnetrc"


def test_netrc_readable_by_others_is_refused(home):
    path = write_netrc(home, "machine h login u password p\n", 0o644)
    with pytest.raises(ConfigError) as info:
        password(Account(), "u", "h", env={})
    assert str(info.value) == "%s is readable by others: chmod 600 %s" % (path, path)


def test_netrc_syntax_error(home):
    path = write_netrc(home, "machine h login u password p\nbogus\n")
    with pytest.raises(ConfigError) as info:
        password(Account(), "u", "h", env={})
    assert str(info.value).startswith("%s: line " % path)
    assert str(info.value).endswith(": bad follower token 'bogus'")


def test_netrc_not_consulted_when_earlier_source_answers(home):
    write_netrc(home, "garbage that would not parse\n", 0o644)
    assert password(Account(), "u", "h", env={"PIPEMAIL_PASSWORD": "p"}) == "p"


# -- URLs --------------------------------------------------------------------------


def url(text, **kw):
    u = split_url(text, **kw)
    return (u.scheme, u.user, u.host, u.port, u.path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("smtp://mail.example.com", ("smtp", None, "mail.example.com", 587, None)),
        ("smtp://mail.example.com:25", ("smtp", None, "mail.example.com", 25, None)),
        ("smtp://mail.example.com/", ("smtp", None, "mail.example.com", 587, None)),
        ("SMTP://Mail.Example.com", ("smtp", None, "Mail.Example.com", 587, None)),
        ("smtp://alice@mail.example.com:2525", ("smtp", "alice", "mail.example.com", 2525, None)),
        ("smtp://me@example.com@mail.example.com", ("smtp", "me@example.com", "mail.example.com", 587, None)),
        ("smtp://me%40example.com@mail.example.com", ("smtp", "me@example.com", "mail.example.com", 587, None)),
        ("smtps://smtp.gmail.com", ("smtps", None, "smtp.gmail.com", 465, None)),
        ("smtps://u@h:4650", ("smtps", "u", "h", 4650, None)),
        ("pop3://pop.example.com", ("pop3", None, "pop.example.com", 110, None)),
        ("pop3s://me@pop.example.com", ("pop3s", "me", "pop.example.com", 995, None)),
        ("smtp://[::1]:2525", ("smtp", None, "::1", 2525, None)),
        ("smtp://[::1]", ("smtp", None, "::1", 587, None)),
        ("smtps://bob@[2001:db8::25]:465", ("smtps", "bob", "2001:db8::25", 465, None)),
        ("smtp://127.0.0.1:1025", ("smtp", None, "127.0.0.1", 1025, None)),
        ("sendmail:", ("sendmail", None, None, None, None)),
        ("sendmail:/usr/lib/sendmail", ("sendmail", None, None, None, "/usr/lib/sendmail")),
        ("mbox:/var/mail/out", ("mbox", None, None, None, "/var/mail/out")),
        ("mbox:relative.mbox", ("mbox", None, None, None, "relative.mbox")),
        ("maildir:/home/me/Maildir", ("maildir", None, None, None, "/home/me/Maildir")),
        ("-", ("-", None, None, None, None)),
    ],
)
def test_split_url(text, expected):
    assert url(text) == expected


def test_split_url_expands_tilde(home):
    assert split_url("mbox:~/out.mbox").path == str(home / "out.mbox")
    assert split_url("maildir:~/Maildir").path == str(home / "Maildir")


def test_url_helpers():
    assert split_url("smtps://h").implicit_tls is True
    assert split_url("pop3s://h").implicit_tls is True
    assert split_url("smtp://h").implicit_tls is False
    assert split_url("smtp://[::1]:25").netloc == "[::1]:25"
    assert split_url("smtp://h").netloc == "h:587"
    assert split_url("-").netloc is None
    assert split_url("smtp://h") == split_url("smtp://h:587")


TRANSPORT_HINT = "use smtp://, smtps://, sendmail:, mbox:, maildir: or -"


@pytest.mark.parametrize(
    "text",
    ["imap://x", "http://x", "", "mail.example.com", "/var/mail/me", "smtp:host", "smtp", "--", "sendmail", "stdout"],
)
def test_unknown_url(text):
    with pytest.raises(UsageError) as info:
        split_url(text)
    assert str(info.value) == "unknown transport URL %r: %s" % (text, TRANSPORT_HINT)
    assert info.value.exit_code == 64


@pytest.mark.parametrize(
    "text, reason",
    [
        ("smtp://", "no host name"),
        ("smtp://:25", "no host name"),
        ("smtp://u@", "no host name"),
        ("smtp://h:", "port '': use a number from 1 to 65535"),
        ("smtp://h:0", "port '0': use a number from 1 to 65535"),
        ("smtp://h:65536", "port '65536': use a number from 1 to 65535"),
        ("smtp://h:smtp", "port 'smtp': use a number from 1 to 65535"),
        ("smtp://h:-1", "port '-1': use a number from 1 to 65535"),
        ("smtp://::1", "write an IPv6 address in brackets, as in smtp://[::1]:587"),
        ("smtp://[::1", "no ']' after the IPv6 address"),
        ("smtp://[::1]x", "':port' or nothing must follow ']'"),
        ("smtp://[nothost]:25", "'nothost' is not an IPv6 address"),
        ("smtp://@h", "empty user name before '@'"),
        ("smtp://h/path", "only [user@]host[:port] may follow smtp://"),
        ("smtp://h?x=1", "only [user@]host[:port] may follow smtp://"),
        ("smtp://h st", "it contains a space or a control character"),
        ("mbox:", "mbox: needs a path, as in mbox:~/mail/out"),
        ("maildir:", "maildir: needs a path, as in maildir:~/Maildir"),
    ],
)
def test_bad_url(text, reason):
    with pytest.raises(UsageError) as info:
        split_url(text)
    assert str(info.value) == "bad transport URL %r: %s" % (text, reason)


@pytest.mark.parametrize(
    "text, shown",
    [
        ("smtp://alice:PASSWORD@host", "smtp://alice:<redacted>@host"),
        ("smtps://alice:PASS@WORD@host:465", "smtps://alice:<redacted>@host:465"),  # an @ in the password
        ("smtp://alice:PA/SS#WORD@host", "smtp://alice:<redacted>@host"),  # what would end a URL's authority
        ("pop3://alice:PASSWORD@[::1]:110", "pop3://alice:<redacted>@[::1]:110"),
        ("imap://alice:PASSWORD@host", "imap://alice:<redacted>@host"),  # a scheme pipemail does not know
        ("alice:PASSWORD@host", "alice:<redacted>@host"),  # no scheme at all
        ("smtp:alice:PASSWORD@host", "smtp:<redacted>@host"),  # no //: the user goes too
        ("smtp://alice@host", "smtp://alice@host"),
        ("smtp://host:25", "smtp://host:25"),
        ("mbox:~/a:b@c", "mbox:~/a:b@c"),  # a path, not a password
        ("maildir:~/Mail/me@example.org", "maildir:~/Mail/me@example.org"),
    ],
)
def test_redact_url(text, shown):
    assert redact_url(text) == shown


@pytest.mark.parametrize(
    "text, kind, line",
    [
        (
            "smtp://alice:PASSWORD@host",
            "transport",
            "bad transport URL 'smtp://alice:<redacted>@host': no password in the URL "
            "(see pipemail.conf(5) for where passwords go)",
        ),
        ("imap://alice:PASSWORD@host", "transport", "unknown transport URL 'imap://alice:<redacted>@host': "),
        ("smtp:alice:PASSWORD@host", "transport", "unknown transport URL 'smtp:<redacted>@host': "),
        ("pop3://alice:PASS WORD@host", "pop", "bad POP URL 'pop3://alice:<redacted>@host': it contains a space"),
        ("smtp://alice:PASSWORD@host", "pop", "unknown POP URL 'smtp://alice:<redacted>@host': "),
    ],
)
def test_bad_url_never_shows_a_password(text, kind, line):
    with pytest.raises(UsageError) as info:
        split_url(text, kind=kind)
    assert str(info.value).startswith(line) and "PASS" not in str(info.value)


def test_a_password_in_the_files_url_is_not_shown(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[accounts.a]\ntransport = "smtp://alice:PASSWORD@host"\npop = "pop3://bob:SECRET@host"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: account 'a': bad transport URL 'smtp://alice:<redacted>@host': "
        "no password in the URL (see pipemail.conf(5) for where passwords go)" % path
    )
    path.write_text('[accounts.a]\npop = "pop3://bob:SECRET@host"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "pop3://bob:<redacted>@host" in str(info.value) and "SECRET" not in str(info.value)


def test_split_url_kinds():
    assert split_url("smtp://h", kind="transport").scheme == "smtp"
    assert split_url("-", kind="transport").scheme == "-"
    assert split_url("pop3s://h", kind="pop").port == 995
    with pytest.raises(UsageError) as info:
        split_url("pop3://h", kind="transport")
    assert str(info.value) == "unknown transport URL 'pop3://h': %s" % TRANSPORT_HINT
    for text in ("smtp://h", "-", "mbox:x"):
        with pytest.raises(UsageError) as info:
            split_url(text, kind="pop")
        assert str(info.value) == "unknown POP URL %r: use pop3:// or pop3s://" % text
    with pytest.raises(ValueError):
        split_url("-", kind="nntp")


# -- start-up cost -----------------------------------------------------------------


def test_no_heavy_imports_at_module_level():
    import subprocess

    code = (
        "import sys; before = set(sys.modules); import pipemail.config; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('pipemail')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the system-wide file (pysendmail's, for root, cron and daemons) ------------------

SYSTEM = """\
queue = "/var/spool/pipemail-test"
[accounts.relay]
from = "alerts@example.com"
transport = "smtp://mail.example.com"
domain = "example.com"
aliases = "~/aliases"
proxy = "socks5h://127.0.0.1:1080"
password = "s3cret"
"""


def test_system_file_is_read_when_the_user_has_none(home, tmp_path):
    sysfile = write(tmp_path / "etc/config.toml", SYSTEM)
    cfg = load(env={"PIPEMAIL_SYSTEM_CONFIG": str(sysfile)})
    assert cfg.path == str(sysfile) and cfg.system
    assert cfg.queue == "/var/spool/pipemail-test"
    acct = cfg.account()
    assert acct.aliases == str(home / "aliases")
    assert acct.proxy == "socks5h://127.0.0.1:1080"
    # owned by the user running the tests: root in CI, where the password key is allowed
    assert acct.mode_ok == (os.getuid() == 0)


def test_user_file_wins_over_the_system_file(home, tmp_path):
    sysfile = write(tmp_path / "etc/config.toml", SYSTEM)
    mine = write(home / ".config/pipemail/config.toml", GMAIL)
    cfg = load(env={"PIPEMAIL_SYSTEM_CONFIG": str(sysfile)})
    assert cfg.path == str(mine) and not cfg.system and cfg.queue is None


def test_system_file_readable_by_others_refuses_its_password(home, tmp_path):
    sysfile = write(tmp_path / "etc/config.toml", SYSTEM, mode=0o644)
    acct = load(env={"PIPEMAIL_SYSTEM_CONFIG": str(sysfile)}).account()
    with pytest.raises(ConfigError, match="readable by others: chmod 600"):
        password(acct, "u", "mail.example.com", env={})


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another owner needs root")
def test_system_file_not_owned_by_root_refuses_its_password(home, tmp_path):
    sysfile = write(tmp_path / "etc/config.toml", SYSTEM)
    os.chown(sysfile, 65534, 65534)
    acct = load(env={"PIPEMAIL_SYSTEM_CONFIG": str(sysfile)}).account()
    assert not acct.mode_ok
    with pytest.raises(ConfigError):
        password(acct, "u", "mail.example.com", env={})


def test_queue_must_be_a_string(tmp_path):
    path = write(tmp_path / "c.toml", "queue = 3\n")
    with pytest.raises(ConfigError, match="'queue' must be a directory"):
        load(path)


# -- queue_lifetime: how long pysendmail's queue keeps trying ------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [('"5d"', 432000), ('"12h"', 43200), ('"90m"', 5400), ('"45s"', 45), ("3600", 3600), ('"600"', 600)],
)
def test_queue_lifetime_units(tmp_path, value, seconds):
    path = write(tmp_path / "c.toml", "queue_lifetime = %s\n" % value)
    assert load(path).queue_lifetime == seconds


def test_queue_lifetime_absent_is_none(tmp_path):
    path = write(tmp_path / "c.toml", 'queue = "/q"\n')
    assert load(path).queue_lifetime is None


@pytest.mark.parametrize("value", ['"5 days"', '"0"', "0", "-3", '"d"', '""', "true", '"1.5h"', "[1]"])
def test_queue_lifetime_bad(tmp_path, value):
    path = write(tmp_path / "c.toml", "queue_lifetime = %s\n" % value)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: 'queue_lifetime' must be a time more than zero: seconds, or a number with "
        's, m, h or d, as "5d", "12h", "90m"; got %r' % (path, __import__("tomllib").loads("v = " + value)["v"])
    )


# -- drop_max_size: the largest message a user may drop into the maildrop ------------------


@pytest.mark.parametrize(
    "value, size",
    [('"100M"', 100 << 20), ('"512k"', 512 << 10), ('"1G"', 1 << 30), ("2048", 2048 << 10), ("0", 0), ('"0"', 0)],
)
def test_drop_max_size_units(tmp_path, value, size):
    path = write(tmp_path / "c.toml", "drop_max_size = %s\n" % value)
    assert load(path).drop_max_size == size


def test_drop_max_size_absent_is_none(tmp_path):
    assert load(write(tmp_path / "c.toml", 'queue = "/q"\n')).drop_max_size is None


@pytest.mark.parametrize("value", ['"100 MB"', '"-1"', "-1", '"M"', '""', "true", '"1.5M"', "[1]", "1.5"])
def test_drop_max_size_bad(tmp_path, value):
    path = write(tmp_path / "c.toml", "drop_max_size = %s\n" % value)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == (
        "config file %s: 'drop_max_size' must be a size: a number of KiB, or a number with K, M or G, "
        'as "100M"; 0 for no limit; got %r' % (path, __import__("tomllib").loads("v = " + value)["v"])
    )


def test_crypto_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(
        tmp_path / "c.toml",
        '[accounts.a]\ncrypto = "OpenPGP"\nsmime_cert = "~/me.pem"\nsmime_key = "~/me.key"\n'
        'smime_certs = "~/certs"\nkey_password_command = "pass show key"\npgp_key = "0xABCD"\n'
        "sign = true\nencrypt = false\n",
    )
    a = load(path).accounts["a"]
    assert (a.crypto, a.pgp_key, a.sign, a.encrypt) == ("openpgp", "0xABCD", True, False)
    assert (a.smime_cert, a.smime_key, a.smime_certs) == (
        str(tmp_path / "me.pem"),
        str(tmp_path / "me.key"),
        str(tmp_path / "certs"),
    )
    assert a.key_password_command == "pass show key"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[accounts.a]\ncrypto = "pgp"\n', "account 'a': crypto 'pgp': use \"smime\" or \"openpgp\""),
        ('[accounts.a]\nsign = "yes"\n', "account 'a': 'sign' must be true or false"),
        ("[accounts.a]\nencrypt = 1\n", "account 'a': 'encrypt' must be true or false"),
    ],
)
def test_bad_crypto_keys(tmp_path, text, message):
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "config file %s: %s" % (path, message)
