"""pysendmail's core (pipemail.sendmail): the lone dot, reading the header block, the
rewrites and their -v lines, recipients, and the command line's parsing (every caller's argv
of issue 12 accepted, the rest refused)."""

import io

import pytest

from pipemail import config, sendmail
from pipemail.cli.sendmail import Refused, parse_args
from pipemail.errors import ConfigError, DataError, PasswordCommandError
from pipemail.message import fqdn

HOST = fqdn().split(".")[0]


def read(data, ignore_dots):
    return b"".join(sendmail.until_dot(io.BytesIO(data))) if not ignore_dots else data


@pytest.mark.parametrize(
    "data, out",
    [
        (b"a\n.\nb\n", b"a\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n"),
        (b".\nall gone\n", b""),
        (b"a\n..\nb\n", b"a\n..\nb\n"),  # no unstuffing: that is SMTP's
        (b"a\n.x\n. \nb\n", b"a\n.x\n. \nb\n"),
        (b"a\nend.\n.", b"a\nend.\n"),  # a lone dot at the end, without a newline
    ],
)
def test_a_lone_dot_ends_the_message(data, out):
    assert read(data, False) == out


def test_a_dot_after_a_cut_line_is_not_at_a_line_start():
    data = b"x" * 10 + b".\nmore\n"
    assert b"".join(sendmail.until_dot(io.BytesIO(data), block=10)) == data


def test_the_header_block_ends_at_a_non_header_line():
    msg = sendmail.parse(b"Subject: x\nnot a header\nbody\n")
    assert msg.headers == [("Subject", "x")]
    assert msg.as_bytes() == b"Subject: x\n\nnot a header\nbody\n"


def test_an_mbox_from_line_is_dropped():
    msg = sendmail.parse(b"From root Thu Dec  3 10:00:00 2026\nSubject: x\n\nb\n")
    assert msg.as_bytes() == b"Subject: x\n\nb\n"


def test_folded_fields_and_crlf():
    msg = sendmail.parse(b"Subject: a\r\n b\r\nTo: x@y.org\r\n\r\nline\r\n")
    assert msg.as_bytes() == b"Subject: a\n b\nTo: x@y.org\n\nline\n"


def test_a_header_block_over_a_mib_is_a_data_error():
    with pytest.raises(DataError, match="header block is over"):
        sendmail.parse(b"X-Long: " + b"y" * (1 << 20) + b"\n\nb\n")


def account(**kw):
    values = {"name": "main", "from_": "Alerts <alerts@example.com>", "transport": "smtp://127.0.0.1:1"}
    values.update(kw)
    return config.Account(**values)


def rewritten(data, req, acct=None, user="root"):
    lines = []
    ctx = sendmail.Context(env={}, verbose=lines.append, user=user, uid=0)
    msg = sendmail.parse(data)
    sender = sendmail.rewrite(msg, req, acct or account(), ctx)
    return msg, sender, lines


def test_a_local_from_becomes_the_accounts_address_with_the_host_named():
    msg, sender, lines = rewritten(b"From: root (Cron Daemon)\nTo: root\n\nb\n", sendmail.Request(["root"]))
    assert sender == "alerts@example.com"
    assert msg.header("From") == '"Cron Daemon (%s)" <alerts@example.com>' % HOST
    assert msg.header("To") == "root@example.com"
    assert lines[:3] == [
        'From: root (Cron Daemon) -> "Cron Daemon (%s)" <alerts@example.com>' % HOST,
        "envelope sender root -> alerts@example.com",
        "To root -> root@example.com (the account's domain)",
    ]


@pytest.mark.parametrize("addr", ["root@localhost", "root@%s" % fqdn(), "root@%s" % HOST])
def test_an_address_at_this_host_is_local(addr):
    msg, sender, _ = rewritten(b"From: %s\n\nb\n" % addr.encode(), sendmail.Request(["x@example.org"]))
    assert (sender, msg.header("From")) == ("alerts@example.com", '"root (%s)" <alerts@example.com>' % HOST)


def test_a_from_of_the_accounts_domain_is_kept_and_is_the_envelope():
    msg, sender, lines = rewritten(b"From: Jane <jane@example.com>\n\nb\n", sendmail.Request(["x@example.org"]))
    assert (sender, msg.header("From")) == ("jane@example.com", "Jane <jane@example.com>")
    assert lines == ["Date: added", "Message-ID: added"]


def test_dash_f_of_the_accounts_domain_is_the_envelope():
    _msg, sender, _ = rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"], sender="ops@example.com"))
    assert sender == "ops@example.com"


def test_without_from_the_user_name_and_host_make_the_display_name():
    msg, _s, _ = rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"]), user="backup")
    assert msg.header("From") == '"backup (%s)" <alerts@example.com>' % HOST


def test_dash_capital_f_is_the_display_name_only_when_the_message_has_none():
    req = sendmail.Request(["x@example.org"], full_name="CronDaemon")
    assert rewritten(b"Subject: x\n\nb\n", req)[0].header("From") == '"CronDaemon (%s)" <alerts@example.com>' % HOST
    msg = rewritten(b"From: root (Cron Daemon)\n\nb\n", req)[0]
    assert msg.header("From") == '"Cron Daemon (%s)" <alerts@example.com>' % HOST


def test_an_account_without_from_qualifies_the_local_name():
    acct = account(from_=None, domain="example.net")
    msg, sender, _ = rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"]), acct)
    assert (sender, msg.header("From")) == ("root@example.net", '"root (%s)" <root@example.net>' % HOST)


def test_an_account_with_no_address_and_no_domain_is_a_config_error():
    with pytest.raises(ConfigError, match='has no domain, which SMTP needs: set domain = "example.com"'):
        rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"]), account(from_=None))


def test_recipients_from_t_and_operands_aliased(tmp_path):
    (tmp_path / "aliases").write_text("root: admin@example.org\n")
    acct = account(aliases=str(tmp_path / "aliases"))
    ctx = sendmail.Context(env={}, uid=0, user="root")
    msg = sendmail.parse(b"To: root, a@example.org\nCc: b@example.org\nBcc: root\n\nb\n")
    req = sendmail.Request(["c@example.org", "bob"], read_recipients=True)
    got = sendmail.recipients(msg, req, acct, ctx)
    assert got == ["admin@example.org", "a@example.org", "b@example.org", "c@example.org", "bob@example.com"]


def test_a_failing_password_command_is_its_own_config_error():
    with pytest.raises(PasswordCommandError) as exc:
        config.run_password_command("exit 3", env={})
    assert isinstance(exc.value, ConfigError) and exc.value.exit_code == 78


# -- argv ---------------------------------------------------------------------------------------

CALLERS = {
    "cron": "-FCronDaemon -i -B8BITMIME -oem root",
    "cronie": "-FCronDaemon -i -odi -oem -oi -t -f root",
    "bsd-mailx": "-i -t",
    "s-nail": "-i -- root",
    "mutt": "-oem -oi -- root",
    "git send-email": "-i a@example.org b@example.org",
    "git send-email -f": "-f me@example.org -i a@example.org",
    "logwatch": "-t",
    "unattended-upgrades": "-oi -t",
}


@pytest.mark.parametrize("argv", CALLERS.values(), ids=CALLERS.keys())
def test_every_callers_argv_is_a_message_to_send(argv):
    a = parse_args(argv.split())
    assert a.mode == "m"


def test_values_glued_or_apart():
    a = parse_args(["-FCron Daemon", "-fme@x.org", "-N", "never", "-B", "8BITMIME", "-v", "--", "-odd@x.org"])
    assert (a.full_name, a.sender, a.verbose, a.recipients) == ("Cron Daemon", "me@x.org", True, ["-odd@x.org"])
    a = parse_args(["-F", "Cron", "-r", "me@x.org", "-it", "root"])
    assert (a.full_name, a.sender, a.ignore_dots, a.read_recipients, a.recipients) == (
        "Cron",
        "me@x.org",
        True,
        True,
        ["root"],
    )


def test_modes_and_names():
    assert parse_args(["-bp"]).mode == "p"
    assert parse_args(["-bi"]).mode == "i"
    assert parse_args(["-bm", "x"]).mode == "m"
    assert (parse_args(["-q"]).mode, parse_args(["-q"]).due_only) == ("q", False)
    assert (parse_args(["--run-queue"]).mode, parse_args(["--run-queue"]).due_only) == ("q", True)
    assert parse_args([], "mailq").mode == "p"
    assert parse_args([], "newaliases").mode == "i"
    a = parse_args(["--account=work", "--proxy", "socks5://127.0.0.1:1080", "x"])
    assert (a.account, a.proxy) == ("work", "socks5://127.0.0.1:1080")


@pytest.mark.parametrize("argv", [["-bs"], ["-bd"], ["-bt"], ["-bv", "x"], ["-q1h"], ["-C", "x"], ["-x"], ["--foo"]])
def test_the_rest_is_refused(argv):
    with pytest.raises(Refused):
        parse_args(argv)


def test_dash_f_and_dash_capital_f_cannot_inject_a_header():
    with pytest.raises(DataError, match="-F holds a line break"):
        rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"], full_name="x\nBcc: y@example.org"))
    with pytest.raises(DataError, match="line break"):
        rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"], sender="a@example.com\nRCPT TO:<z@x>"))


@pytest.mark.parametrize("null", ["<>", ""])
def test_the_null_sender_is_the_accounts_address(null):
    _msg, sender, _ = rewritten(b"Subject: x\n\nb\n", sendmail.Request(["x@example.org"], sender=null))
    assert sender == "alerts@example.com"


# -- the stdlib's own errors on addresses it cannot read (review of issue 12, finding 1) -----------


@pytest.mark.parametrize("value", [":>x,;a@b.c", "\t:root,", " .<a: [:", ",.:a>\\.", "a=@[\t", ":>x,;root"])
def test_an_address_the_stdlib_cannot_read_is_a_data_error(value):
    from pipemail import message

    with pytest.raises(DataError, match="^not a mail address: "):
        message.addresses([value])
    for parse in (lambda: message.header_addresses([value]), lambda: message.header_address(value)):
        try:  # header fields are read leniently: pairs, or a DataError; never the parser's own error
            parse()
        except DataError:
            pass


def test_a_users_queue_is_under_xdg_state_home():
    from pipemail import queue

    assert queue.default_dir(None, {"HOME": "/h", "XDG_STATE_HOME": "/s"}, uid=1000) == "/s/pipemail/queue"
    assert queue.default_dir(None, {"HOME": "/h"}, uid=1000) == "/h/.local/state/pipemail/queue"


def test_one_rule_for_what_is_permanent():
    from pipemail import queue
    from pipemail.errors import NoPermError, NoUserError, TempFailError, UnavailableError

    def err(cls, code=None):
        e = cls("x")
        e.smtp_code = code
        return e

    assert [
        queue.permanent(e)
        for e in (
            err(NoPermError, 535),  # AUTH refused
            err(UnavailableError, 554),
            err(NoUserError),
            err(DataError),
            err(TempFailError, 421),
            err(TempFailError),  # no connection, a timeout, a proxy down
            err(UnavailableError),  # a certificate that does not verify, AUTH not offered
            err(PasswordCommandError),
            err(ConfigError),
        )
    ] == [True, True, True, True, False, False, False, False, False]
