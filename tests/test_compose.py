"""pymail composes mail that servers take and clients read as written: folded headers, the
charset of every text part, -H kept to what it may set, bare local names, the host's name.

Every message aiosmtpd receives here, and every one pymail writes to -, mbox: or maildir:,
goes through the message lint (tests/lint.py)."""

import email
import email.policy
import os
import shutil
import subprocess

import lint
import mta
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_server import free_port

from pipemail import message

from conftest import command_path

exim = mta.exim

GRUSSE = "Grüße " * 170  # the subject: a 1005-character line, unfolded


@pytest.fixture
def run(run):
    return lint.checking(run)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def parse(raw):
    return email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)


def send(run, where, *args, home, input=b"hello\n", env=None, **kw):
    url = where if isinstance(where, str) else where.url
    return run("pymail", "--transport", url, *args, input=input, env={"HOME": str(home), **(env or {})}, **kw)


def header_lines(raw):
    return raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].split(b"\n")


# -- 1. headers folded, encoded words within 75 -----------------------------------------------


def test_a_long_subject_is_folded_and_delivered(run, smtp_server, home):
    srv = smtp_server()
    r = send(run, srv, "-s", GRUSSE, "to@example.org", home=home)
    assert (r.returncode, r.stderr) == (0, "")
    ((_f, _rc, raw),) = srv.messages
    assert parse(raw)["Subject"] == GRUSSE
    assert max(len(line) for line in header_lines(raw)) <= 78


def test_a_long_subject_kept_in_the_dead_letter_goes_out_with_resend(run, smtp_server, home):
    port = free_port()
    r = send(run, "smtp://127.0.0.1:%d" % port, "-s", GRUSSE, "to@example.org", home=home)
    assert r.returncode == 75
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--resend", home / "dead.letter", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert parse(srv.messages[0][2])["Subject"] == GRUSSE


def test_long_to_and_cc_lists_fold_between_addresses(run, smtp_server, home):
    srv = smtp_server()
    to = ["Jos\u00e9 N\u00fa\u00f1ez %d <jose%d@example.org>" % (i, i) for i in range(25)]
    cc = ["Ops Team %d <ops%d@example.org>" % (i, i) for i in range(25)]
    args = [a for c in cc for a in ("-c", c)]
    r = send(run, srv, *args, "--", *to, home=home)
    assert (r.returncode, r.stderr) == (0, "")
    ((_f, rcpts, raw),) = srv.messages
    assert len(rcpts) == 50
    msg = parse(raw)
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Jos\u00e9 N\u00fa\u00f1ez %d" % i, "jose%d@example.org" % i) for i in range(25)
    ]
    assert [str(a) for a in msg["Cc"].addresses] == cc
    lines = header_lines(raw)
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Cc: "))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(b" "))
    cc_lines = lines[start:end]
    assert len(cc_lines) > 10 and all(len(line) <= 78 for line in cc_lines)
    assert all(line.rstrip().endswith(b">,") for line in cc_lines[:-1])  # folded between addresses


@pytest.mark.parametrize(
    "name, section",
    [
        (
            "Gr\u00fc\u00dfe aus K\u00f6ln und dem ganzen Rheinland, der Bericht f\u00fcr 2026.txt",
            b"filename*0*=utf-8''",
        ),
        ("quarterly-report-" + "x" * 120 + ".csv", b'filename*0="quarterly-report-'),
    ],
)
def test_long_attachment_names_go_as_rfc2231_sections(run, smtp_server, home, tmp_path, name, section):
    srv = smtp_server()
    att = tmp_path / name
    att.write_bytes(b"a,b\n1,2\n")
    r = send(run, srv, "-a", att, "to@example.org", home=home)
    assert (r.returncode, r.stderr) == (0, "")
    raw = srv.messages[0][2]
    assert section in raw and b"filename*1" in raw
    (part,) = parse(raw).iter_attachments()
    assert part.get_filename() == name and part.get_param("name") == name
    assert part.get_payload(decode=True) == att.read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "=?utf-8?q?x?=.txt",  # an encoded word in a quoted string: parsers decode it (a defect)
        "report =?iso-8859-1?q?x?= 2026.txt",
        " leading space.txt",
        "trailing space.txt ",
        'a"b\\c.txt',
        "new\nline.txt",
    ],
)
def test_hostile_attachment_names_read_back_exactly(run, home, tmp_path, name):
    att = tmp_path / name
    att.write_bytes(b"text\n")
    r = send(run, "-", "-a", att, "to@example.org", home=home)  # the lint checks the message
    assert (r.returncode, r.stderr) == (0, "")
    (part,) = parse(r.stdout).iter_attachments()
    assert part["Content-Disposition"].params["filename"] == name  # get_filename() strips the edges
    assert part["Content-Type"].params["name"] == name


def test_a_long_header_option_is_folded(run, smtp_server, home):
    srv = smtp_server()
    note = " ".join("word%d" % i for i in range(400))  # 3,000 characters
    r = send(
        run, srv, "-H", "X-Note: " + note, "-H", "Reply-To: Zo\u00eb Ops <ops@example.org>", "a@example.org", home=home
    )
    assert (r.returncode, r.stderr) == (0, "")
    msg = parse(srv.messages[0][2])
    assert msg["X-Note"] == note
    assert [(a.display_name, a.addr_spec) for a in msg["Reply-To"].addresses] == [("Zo\u00eb Ops", "ops@example.org")]


def test_t_folds_a_header_line_over_998_at_its_white_space(run, smtp_server, home):
    srv = smtp_server()
    subject = " ".join("w%d" % i for i in range(400))  # 1,889 characters, one line
    raw = ("To: a@example.org\nSubject: %s\n\nbody\n" % subject).encode()
    r = send(run, srv, "-t", input=raw, home=home)
    assert (r.returncode, r.stderr) == (0, "")
    got = srv.messages[0][2]
    assert max(len(line) for line in got.split(b"\r\n")) <= 998
    assert parse(got)["Subject"] == subject


def test_t_refuses_a_header_line_over_998_without_white_space(run, smtp_server, home):
    srv = smtp_server()
    raw = b"To: a@example.org\nX-Token: " + b"x" * 1200 + b"\n\nbody\n"
    r = send(run, srv, "-t", input=raw, home=home)
    assert (r.returncode, srv.messages) == (65, [])
    assert r.stderr == (
        "pymail: -t: the header X-Token has a line of 1209 bytes with no white space to fold it at "
        "(mail allows 998 a line)\n"
    )
    assert not (home / "dead.letter").exists()


def test_t_header_block_is_bounded_like_sendmails(run, smtp_server, home):
    """-t reads the header block whole, so it is bounded (1 MiB, as pysendmail's reader: they are one
    reader, message.header_block): standard input of folded lines without a blank line is refused, not held."""
    from pipemail.message import HEAD_LIMIT

    srv = smtp_server()
    raw = b"To: a@example.org\nX-Long: x\n" + b" y\n" * (HEAD_LIMIT // 3 + 10) + b"\nbody\n"
    r = send(run, srv, "-t", input=raw, home=home)
    assert (r.returncode, srv.messages) == (65, [])
    assert r.stderr == "pymail: the message's header block is over %d bytes: not a message\n" % HEAD_LIMIT
    r = send(run, srv, "-t", input=b"To: a@example.org\nSubject: only headers\n", home=home)
    assert (r.returncode, r.stderr) == (0, "")
    assert (
        srv.messages[0][2].endswith(b"Subject: only headers\r\n\r\n") or b"Subject: only headers" in srv.messages[0][2]
    )


text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=400)


@settings(max_examples=300)
@given(value=text)
def test_unstructured_values_read_back_exactly_within_the_limits(value):
    from pipemail import headers

    folded = headers.unstructured("Subject", value)
    raw = ("Date: x\nMessage-ID: <a@b>\nSubject: %s\n\n" % folded).encode()
    msg = email.message_from_bytes(raw, policy=email.policy.default.clone(raise_on_defect=True))
    assert msg["Subject"] == value and not msg["Subject"].defects
    for line in ("Subject: " + folded).split("\n"):
        assert len(line) <= 76 or " " not in line.strip()
        assert all(len(w) <= 75 for w in lint.ENCODED_WORD.findall(line.encode()))


# -- 2. the charset of every text part -------------------------------------------------------


def test_text_attachments_are_labelled_with_the_charset_of_their_bytes(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    files = {
        "latin.txt": ("Gr\u00fc\u00dfe aus K\u00f6ln, d\u00e9j\u00e0 vu.\n".encode("latin-1"), "iso-8859-1"),
        "utf8.txt": ("Gr\u00fc\u00dfe aus K\u00f6ln, d\u00e9j\u00e0 vu.\n".encode(), "utf-8"),
        "ascii.txt": (b"plain text\n", "us-ascii"),
    }
    for name, (data, _cs) in files.items():
        (tmp_path / name).write_bytes(data)
    args = [a for name in files for a in ("-a", tmp_path / name)]
    r = send(run, srv, *args, "to@example.org", home=home, env={"LC_ALL": "C", "LANG": "C"})  # as under cron
    assert (r.returncode, r.stderr) == (0, "")
    msg = parse(srv.messages[0][2])
    assert msg.get_body().get_content_charset() == "us-ascii"  # the body: 7-bit text
    got = {p.get_filename(): (p.get_payload(decode=True), p.get_content_charset()) for p in msg.iter_attachments()}
    assert got == files


def test_attach_charset_names_the_charset_of_8bit_text(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    (tmp_path / "cp.txt").write_bytes("\u201cquoted\u201d \u20ac 5\n".encode("cp1252"))
    (tmp_path / "utf8.txt").write_bytes("\u201cquoted\u201d\n".encode())
    r = send(
        run,
        srv,
        "--attach-charset",
        "CP1252",
        "-a",
        tmp_path / "cp.txt",
        "-a",
        tmp_path / "utf8.txt",
        "a@x.org",
        home=home,
    )
    assert (r.returncode, r.stderr) == (0, "")
    msg = parse(srv.messages[0][2])
    assert [p.get_content_charset() for p in msg.iter_attachments()] == ["windows-1252", "utf-8"]
    assert [p.get_payload(decode=True) for p in msg.iter_attachments()] == [
        (tmp_path / n).read_bytes() for n in ("cp.txt", "utf8.txt")
    ]
    r = send(run, srv, "--attach-charset", "latin1", "-a", tmp_path / "cp.txt", "a@x.org", home=home)
    assert r.returncode == 0 and parse(srv.messages[1][2]).get_payload()[1].get_content_charset() == "iso-8859-1"
    r = send(run, srv, "--attach-charset", "klingon-8", "-a", tmp_path / "cp.txt", "a@x.org", home=home)
    assert (r.returncode, r.stderr) == (
        64,
        "pymail: --attach-charset klingon-8: not a charset Python knows (see 'pymail --help')\n",
    )
    assert len(srv.messages) == 2


def test_text_charset_from_the_bytes():
    assert message.text_charset(b"") == "us-ascii"
    assert message.text_charset("\u00e9\n".encode()) == "utf-8"
    assert message.text_charset("\u00e9t\u00e9 ensoleill\u00e9\n".encode("latin-1")) == "iso-8859-1"
    assert message.text_charset("\u00e9t\u00e9\n".encode("latin-1"), "iso-8859-15") == "iso-8859-15"
    assert message.text_charset("h\u00e9llo w\u00f6rld\n".encode("utf-16")) == "utf-16le"


def test_attach_charset_does_not_relabel_text_whose_byte_order_mark_names_its_charset():
    utf16 = "h\u00e9llo w\u00f6rld\n".encode("utf-16")  # BOM first: the bytes say what they are
    assert message.text_charset(utf16, "iso-8859-1") == "utf-16le"
    assert message.text_charset("\u00e9t\u00e9\n".encode("latin-1"), "iso-8859-1") == "iso-8859-1"


# -- 3. -H sets none of the fields that options set ------------------------------------------


REFUSED = [
    ("Bcc: x@example.org", "-H Bcc: use -b ADDR (--bcc), which keeps the address out of the headers"),
    ("To: x@example.org", "-H To: give the recipients as RECIPIENT operands"),
    ("cc: x@example.org", "-H cc: use -c ADDR (--cc)"),
    ("Subject: new", "-H Subject: use -s SUBJECT (--subject)"),
    ("From: x@example.org", "-H From: the sender is -r ADDR (--from)"),
    ("Sender: x@example.org", "-H Sender: pymail does not set Sender: the sender is -r ADDR (--from)"),
]


@pytest.mark.parametrize("header, said", REFUSED)
def test_header_option_refuses_the_fields_options_set(run, smtp_server, home, header, said):
    srv = smtp_server()
    r = send(run, srv, "-s", "old", "-H", header, "to@example.org", home=home)
    assert (r.returncode, r.stderr) == (64, "pymail: %s (see 'pymail --help')\n" % said)
    raw = b"To: to@example.org\nSubject: whole\n\nbody\n"
    r = send(run, srv, "-t", "-H", header, input=raw, home=home)
    assert (r.returncode, r.stderr) == (64, "pymail: %s (see 'pymail --help')\n" % said)
    assert srv.messages == [] and not (home / "dead.letter").exists()


def test_header_option_still_adds_reply_to_and_others(run, smtp_server, home):
    srv = smtp_server()
    r = send(run, srv, "-H", "Reply-To: ops@example.org", "-H", "X-Job: nightly", "to@example.org", home=home)
    assert (r.returncode, r.stderr) == (0, "")
    msg = parse(srv.messages[0][2])
    assert (msg["Reply-To"], msg["X-Job"]) == ("ops@example.org", "nightly")


# -- 4. bare local names ------------------------------------------------------------------------


def exim_sendmail(exim, tmp_path):
    wrapper = tmp_path / "sendmail"
    wrapper.write_text('#!/bin/sh\nexec %s -C %s "$@"\n' % (exim.binary, exim.config))
    wrapper.chmod(0o755)
    return "sendmail:%s" % wrapper


def test_a_bare_local_name_is_delivered_through_exims_sendmail(run, exim, home, tmp_path):
    exim.clear()
    r = send(run, exim_sendmail(exim, tmp_path), "-s", "x", "-r", "cron@pipemail.test", "pmtest", home=home)
    assert (r.returncode, r.stderr) == (0, "")
    [delivered] = exim.wait_for(1)
    assert b"\nEnvelope-to: pmtest@pipemail.test\n" in b"\n" + delivered
    msg = parse(delivered)
    assert msg["Subject"] == "x" and msg.get_content() == "hello\n"


def config(tmp_path, **keys):
    path = tmp_path / "config.toml"
    path.write_text("[accounts.work]\n" + "".join('%s = "%s"\n' % kv for kv in keys.items()))
    return {"PIPEMAIL_CONFIG": str(path)}


def test_bare_names_over_smtp_take_the_accounts_domain(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    env = config(tmp_path, domain="example.org")
    r = send(run, srv, "-r", "cron", "-c", "Ops <ops>", "-b", "audit", "pmtest", home=home, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, rcpts, raw),) = srv.messages
    assert (mail_from, rcpts) == ("cron@example.org", ["pmtest@example.org", "ops@example.org", "audit@example.org"])
    msg = parse(raw)
    assert (msg["From"], msg["To"], msg["Cc"]) == ("cron@example.org", "pmtest@example.org", "Ops <ops@example.org>")
    assert b"audit" not in raw


def test_bare_names_from_t_take_the_domain_in_the_envelope_only(run, smtp_server, home, tmp_path):
    srv = smtp_server(lint=False)  # the message's own "To: pmtest" is the user's, kept as given
    env = config(tmp_path, domain="example.org")
    raw = b"From: cron\nTo: pmtest\nBcc: audit\nSubject: t\n\nbody\n"
    r = send(run, srv, "-t", input=raw, home=home, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, rcpts, got),) = srv.messages
    assert (mail_from, rcpts) == ("cron@example.org", ["pmtest@example.org", "audit@example.org"])
    assert b"\r\nTo: pmtest\r\n" in got and b"audit" not in got


def test_bare_names_over_smtp_without_a_domain_say_how_to_set_one_and_resend_sends_them(
    run, smtp_server, home, tmp_path
):
    srv = smtp_server()
    r = send(run, srv, "-s", "x", "-c", "ops", "pmtest", home=home)
    dead = home / "dead.letter"
    assert (r.returncode, srv.messages) == (78, [])
    assert r.stderr == (
        'pymail: pmtest has no domain, which SMTP needs: set domain = "example.com" in the account '
        "(see pipemail.conf(5)), or write pmtest@DOMAIN\n"
        "pymail: the message is kept in %s for pmtest, ops (pymail --resend %s sends it again)\n" % (dead, dead)
    )
    srv.lint = False  # the message kept says "To: pmtest", as it was composed for want of a domain
    r = run("pymail", "--transport", srv.url, "--resend", dead, env={"HOME": str(home)})
    assert (r.returncode, srv.messages) == (78, [])
    assert r.stderr.startswith("pymail: pmtest has no domain, which SMTP needs: ")
    r = run(
        "pymail",
        "--transport",
        srv.url,
        "--resend",
        dead,
        env={"HOME": str(home), **config(tmp_path, domain="example.org")},
    )
    assert r.returncode == 0, r.stderr
    ((mail_from, rcpts, raw),) = srv.messages
    assert rcpts == ["pmtest@example.org", "ops@example.org"] and parse(raw)["Subject"] == "x"
    assert dead.read_bytes() == b""


@pytest.mark.parametrize("typo", ["root admin", "x@example.org z", "Ops <ops> extra"])
def test_a_recipient_with_words_left_over_is_refused_not_cut_short(run, smtp_server, home, typo):
    srv = smtp_server()
    r = send(run, srv, typo, home=home)
    assert (r.returncode, r.stderr, srv.messages) == (65, "pymail: not a mail address: %s\n" % typo, [])


def test_bare_names_go_as_given_to_local_transports(run, home, tmp_path):
    r = send(run, "-", "-s", "x", "-c", "ops", "pmtest", home=home, lint=False)  # "To: pmtest": not RFC 5322
    assert r.returncode == 0, r.stderr
    assert b"\nTo: pmtest\nCc: ops\n" in r.stdout
    box = tmp_path / "box"
    r = send(run, "mbox:%s" % box, "-r", "cron", "pmtest", home=home, lint=False)
    assert r.returncode == 0 and box.read_bytes().startswith(b"From cron ")


def test_a_domain_that_is_no_domain_is_a_config_error(run, home, tmp_path):
    env = config(tmp_path, domain="@example.org")
    r = send(run, "-", "a@example.org", home=home, env=env)
    assert r.returncode == 78
    assert r.stderr == (
        "pymail: config file %s: account 'work': domain '@example.org': give a domain name, "
        'as domain = "example.com"\n' % env["PIPEMAIL_CONFIG"]
    )


# -- 5. the host's name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fqdn, hostname, want",
    [
        ("localhost", "pmhost", "pmhost"),
        ("localhost.localdomain", "pmhost", "pmhost"),
        ("pmhost", "pmhost", "pmhost"),
        ("pmhost.example.net", "pmhost", "pmhost.example.net"),
    ],
)
def test_the_host_name_is_getfqdn_when_real_else_gethostname(monkeypatch, fqdn, hostname, want):
    import socket

    monkeypatch.setattr(socket, "getfqdn", lambda name="": fqdn)
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    monkeypatch.setenv("LOGNAME", "cron")
    assert message.fqdn() == want
    assert message.default_from() == "cron@" + want
    msg = message.compose(b"x\n", sender=("", message.default_from()), to=[("", "a@example.org")])
    assert msg.header("Message-ID").endswith("@%s>" % want)


@pytest.mark.parametrize(
    "hosts, want",
    [("127.0.0.1 localhost pmhost\n", "pmhost"), ("127.0.0.1 pmhost.example.net pmhost\n", "pmhost.example.net")],
)
def test_from_and_message_id_name_the_host_end_to_end(tmp_path, hosts, want):
    """In a namespace of its own (root, as the tests run): host name pmhost, an /etc/hosts of ours."""
    (tmp_path / "hosts").write_text(hosts)
    pymail = " ".join(command_path("pymail"))
    script = "mount --bind %s /etc/hosts && hostname pmhost && exec %s --transport - -s x a@example.org" % (
        tmp_path / "hosts",
        pymail,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEMAIL_")}
    proc = subprocess.run(
        [shutil.which("unshare") or "unshare", "--uts", "--mount", "sh", "-c", script],
        input=b"hi\n",
        capture_output=True,
        env={**env, "HOME": str(tmp_path), "USER": "cron", "LOGNAME": "cron"},
        timeout=60,
    )
    assert (proc.returncode, proc.stderr) == (0, b"")
    lint.lint(proc.stdout)
    msg = parse(proc.stdout)
    assert msg["From"] == "cron@" + want and msg["Message-ID"].endswith("@%s>" % want)


# -- found by the review after the merge ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Reply-To: not an address \u00ff",  # getaddresses: [('', 'not')], the rest dropped
        "Reply-To: J\u00f6rg <j@example.org> extra",
        "Reply-To: J\u00f6rg j@example.org",
    ],
)
def test_a_non_ascii_address_header_that_is_not_addresses_is_refused_not_cut(run, home, value):
    r = send(run, "-", "-H", value, "to@example.org", home=home)
    assert r.returncode == 65 and r.stdout == b""
    (line,) = r.stderr.splitlines()  # the value as shown() shows it: escaped in the C locale
    assert line.startswith("pymail: -H Reply-To: not a list of mail addresses: ")


@pytest.mark.parametrize("addr", ["@example.org", "a@", "@"])
def test_an_address_with_an_empty_local_part_or_domain_is_refused(run, home, addr):
    r = send(run, "-", addr, home=home)
    assert (r.returncode, r.stdout, r.stderr) == (65, b"", "pymail: not a mail address: %s\n" % addr)
    r = send(run, "-", "-c", addr, "to@example.org", home=home)
    assert (r.returncode, r.stdout) == (65, b"")


def test_from_with_two_addresses_is_refused_not_cut_to_the_first(run, home):
    r = send(run, "-", "-r", "a@example.org, b@example.org", "to@example.org", home=home)
    assert (r.returncode, r.stdout) == (65, b"")
    assert r.stderr == "pymail: -r takes one address: a@example.org, b@example.org\n"


@pytest.mark.parametrize(
    "value, said", [("a@example.org, b@example.org", "from takes one address"), ("not valid <", "not a mail address")]
)
def test_an_accounts_from_that_is_not_one_address_is_a_config_error_and_the_message_kept(
    run, home, tmp_path, value, said
):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[accounts.a]\ntransport = "-"\nfrom = "%s"\n' % value)
    env = {"HOME": str(home), "PIPEMAIL_CONFIG": str(cfg)}
    r = run("pymail", "to@example.org", env=env, input=b"precious\n")
    assert (r.returncode, r.stdout) == (78, b"")
    assert r.stderr.splitlines()[0] == "pymail: config file %s: account 'a': %s: %s" % (cfg, said, value)
    dead = (home / "dead.letter").read_bytes()
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in dead and b"\nprecious\n" in dead


@pytest.mark.parametrize(
    "given, want", [("../../etc/passwd", "passwd"), ("reports/x.bin", "x.bin"), ("..", None), ("dir/", None)]
)
def test_stdin_name_is_a_file_name_never_a_path(run, home, given, want):
    r = send(run, "-", "--stdin-name", given, "to@example.org", home=home, input=b"\x00\x01binary")
    assert (r.returncode, r.stderr) == (0, "")
    part = parse(r.stdout)  # binary stdin alone: the message is the attachment
    name = part["Content-Disposition"].params["filename"]
    assert name == want if want else name.startswith("stdin.")
    assert part.get_payload(decode=True) == b"\x00\x01binary"


def test_the_dead_letter_folds_a_long_list_of_undelivered_recipients_and_resend_reads_it(run, smtp_server, home):
    rcpts = ["user%d@example.org" % i for i in range(300)]
    refused = "smtp://127.0.0.1:%d" % free_port()  # nothing listens: every recipient is kept
    r = run("pymail", "--transport", refused, "-s", "many", *rcpts, input=b"hi\n", env={"HOME": str(home)})
    assert r.returncode == 75
    dead = (home / "dead.letter").read_bytes()
    (kept,) = lint.mbox_messages(dead)
    lint.lint(kept)  # its header lines within 78 where they can be: 300 addresses made one of 6,217
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--resend", home / "dead.letter", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    ((_sender, got, raw),) = srv.messages
    assert sorted(got) == sorted(rcpts) and b"X-Pipemail-Undelivered-To" not in raw
