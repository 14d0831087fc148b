"""pymail against a real SMTP server on loopback: the bytes it got, the exit codes, the dead letter."""

import email
import email.policy
import os

import lint
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_server import RawServer, free_port


@pytest.fixture
def run(run):
    """conftest's run, with what pymail writes to -, mbox: and maildir: linted (lint=False opts out)."""
    return lint.checking(run)


def parse(raw):
    """The message as a local mail store keeps it: line ends \n, as the server got them otherwise."""
    return email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)


def send(run, server, *args, input=b"hello\n", env=None, **kw):
    full = {"HOME": kw.pop("home", os.environ.get("HOME", "/tmp"))}
    full.update(env or {})
    return run(
        "pymail", "--transport", server if isinstance(server, str) else server.url, *args, input=input, env=full, **kw
    )


def unshar_mails(run, raws, where):
    """Save the mails as received (CRLF) into an mbox under ``where``, run pyunshar on it: the output directory."""
    import mailbox

    where.mkdir(exist_ok=True)
    box = mailbox.mbox(where / "in.mbox")
    for raw in raws:
        box.add(raw.replace(b"\r\n", b"\n"))
    box.flush()
    u = run("pyunshar", "-d", where / "out", where / "in.mbox")
    assert (u.returncode, u.stderr) == (0, "")
    return where / "out"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_plain_send_is_received_with_its_headers(run, smtp_server, home):
    srv = smtp_server()
    r = send(
        run, srv, "-s", "report", "-r", "cron@example.org", "admin@example.org", input=b"uname output\n", home=str(home)
    )
    assert (r.returncode, r.stderr) == (0, "")
    ((mail_from, rcpts, raw),) = srv.messages
    assert (mail_from, rcpts) == ("cron@example.org", ["admin@example.org"])
    msg = parse(raw)
    assert msg["Subject"] == "report" and msg["To"] == "admin@example.org" and msg["From"] == "cron@example.org"
    assert msg["Date"] and msg["Message-ID"] and msg["User-Agent"].startswith("pipemail/")
    assert msg.get_content() == "uname output\n"


def test_attachments_cc_and_bcc(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    att = tmp_path / "r\u00e9sum\u00e9.pdf"
    att.write_bytes(b"%PDF-1.4\n" + os.urandom(3000))
    r = send(
        run,
        srv,
        "-s",
        "caf\u00e9",
        "-a",
        att,
        "-c",
        "c@example.org",
        "-b",
        "secret@example.org",
        "to@example.org",
        home=str(home),
    )
    assert r.returncode == 0, r.stderr
    ((_f, rcpts, raw),) = srv.messages
    assert rcpts == ["to@example.org", "c@example.org", "secret@example.org"]
    assert b"secret@example.org" not in raw  # Bcc only in the envelope
    assert b"Subject: =?utf-8?" in raw
    msg = parse(raw)
    assert msg["Subject"] == "caf\u00e9" and msg["Cc"] == "c@example.org"
    (body,) = [p for p in msg.iter_parts() if p.get_content_type() == "text/plain"]
    assert body.get_content() == "hello\n"
    (part,) = msg.iter_attachments()
    assert part.get_filename() == "r\u00e9sum\u00e9.pdf" and part.get_content_type() == "application/pdf"
    assert part.get_payload(decode=True) == att.read_bytes()


def test_starttls_and_auth_with_a_redacted_transcript(run, smtp_server, home):
    srv = smtp_server(tls=True, auth=("alice", "s3cret-pw"))
    r = send(
        run,
        srv,
        "-v",
        "--user",
        "alice",
        "--tls-trust-file",
        srv.ca_file,
        "to@example.org",
        env={"PIPEMAIL_PASSWORD": "s3cret-pw"},
        home=str(home),
    )
    assert r.returncode == 0, r.stderr
    assert srv.logins == [("PLAIN", "alice", True)]
    assert len(srv.messages) == 1
    import base64

    for secret in ("s3cret-pw", base64.b64encode(b"\0alice\0s3cret-pw").decode()):
        assert secret not in r.stderr
    lines = r.stderr.splitlines()
    assert "C: STARTTLS" in lines and "C: AUTH <redacted>" in lines
    assert any(line.startswith("=== TLS started") and "CN=" not in line or "certificate:" in line for line in lines)
    assert any(line.startswith("S: 235") for line in lines)
    assert lines.index("C: STARTTLS") < lines.index("C: AUTH <redacted>")
    assert lines[-4:] == ["C: .", "S: 250 2.0.0 Message accepted", "C: QUIT", "S: 221 Bye"]  # a session ends politely
    assert any(line.startswith("C: MAIL FROM:<") for line in lines)  # as RFC 5321 writes it, on every Python


def test_untrusted_certificate_keeps_the_message(run, smtp_server, home):
    srv = smtp_server(tls=True)
    r = send(run, srv, "to@example.org", home=str(home))
    assert r.returncode == 69
    assert "the certificate of 127.0.0.1 is not trusted" in r.stderr
    assert srv.messages == []
    dead = (home / "dead.letter").read_bytes()
    assert b"X-Pipemail-Undelivered-To: to@example.org\n" in dead and b"\n\nhello\n" in dead


def test_wrong_password_exits_77(run, smtp_server, home):
    srv = smtp_server(tls=True, auth=("alice", "right"))
    r = send(
        run,
        srv,
        "--user",
        "alice",
        "--tls-trust-file",
        srv.ca_file,
        "to@example.org",
        env={"PIPEMAIL_PASSWORD": "Wr0ngPa55"},
        home=str(home),
    )
    assert r.returncode == 77
    assert r.stderr.startswith("pymail: AUTH PLAIN refused by 127.0.0.1: 535")
    assert "Wr0ngPa55" not in r.stderr
    assert (home / "dead.letter").exists()


def test_refused_recipient_others_still_get_it(run, smtp_server, home):
    srv = smtp_server()
    srv.rcpt_replies["bad@example.org"] = "550 5.1.1 user unknown"
    r = send(run, srv, "good@example.org", "bad@example.org", home=str(home))
    assert r.returncode == 67
    assert "pymail: RCPT TO:<bad@example.org> refused by 127.0.0.1: 550 5.1.1 user unknown\n" in r.stderr
    ((_f, rcpts, _raw),) = srv.messages
    assert rcpts == ["good@example.org"]
    dead = (home / "dead.letter").read_bytes()
    assert b"X-Pipemail-Undelivered-To: bad@example.org\n" in dead


def test_temporary_refusal_is_75_and_wins_over_550(run, smtp_server, home):
    srv = smtp_server()
    srv.rcpt_replies["later@example.org"] = "451 4.3.0 try again later"
    srv.rcpt_replies["bad@example.org"] = "550 5.1.1 user unknown"
    r = send(run, srv, "later@example.org", "bad@example.org", home=str(home))
    assert r.returncode == 75
    assert "451 4.3.0 try again later" in r.stderr and "550 5.1.1 user unknown" in r.stderr
    assert srv.messages == []


def test_rejected_after_data(run, smtp_server, home):
    srv = smtp_server()
    srv.data_reply = "554 5.6.0 message rejected"
    r = send(run, srv, "to@example.org", home=str(home))
    assert r.returncode == 69
    assert r.stderr.startswith("pymail: the message (DATA) refused by 127.0.0.1: 554 5.6.0 message rejected\n")
    assert b"X-Pipemail-Undelivered-To: to@example.org" in (home / "dead.letter").read_bytes()


def test_server_down_then_resend(run, smtp_server, home):
    port = free_port()
    for n in range(2):
        r = send(run, "smtp://127.0.0.1:%d" % port, "-s", "msg %d" % n, "to%d@example.org" % n, home=str(home))
        assert r.returncode == 75
        assert "cannot connect to 127.0.0.1 port %d: Connection refused" % port in r.stderr
    dead = home / "dead.letter"
    assert dead.read_bytes().count(b"X-Pipemail-Undelivered-To:") == 2  # appended, never replaced
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--resend", str(dead), env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert sorted(rc for _f, rc, _r in srv.messages) == [["to0@example.org"], ["to1@example.org"]]
    assert [parse(raw)["Subject"] for _f, _rc, raw in srv.messages] == ["msg 0", "msg 1"]
    assert b"X-Pipemail-Undelivered-To" not in srv.messages[0][2]
    assert dead.read_bytes() == b""


def test_size_limit_stops_before_data(run, smtp_server, home):
    srv = smtp_server(size=2000)
    r = send(run, srv, "to@example.org", input=b"x" * 5000 + b"\n", home=str(home))
    assert r.returncode == 69
    assert "accepts at most 2000 (SIZE): split it (pymail --max-size, pyshar -L) or send it another way" in r.stderr
    assert srv.messages == []


def test_421_greeting_and_hang_up_during_data(run, home):
    raw = RawServer([(None, "421 4.3.2 too busy")])
    r = send(run, "smtp://127.0.0.1:%d" % raw.port, "to@example.org", home=str(home))
    raw.close()
    assert r.returncode == 75 and "421 4.3.2 too busy" in r.stderr
    raw = RawServer(
        [
            (None, "220 hi"),
            ("EHLO", "250 ok"),
            ("MAIL", "250 ok"),
            ("RCPT", "250 ok"),
            ("DATA", "354 go"),
            ("DATA-BODY", None),
        ]
    )
    r = send(run, "smtp://127.0.0.1:%d" % raw.port, "to@example.org", home=str(home))
    raw.close()
    assert r.returncode == 75 and "closed the connection" in r.stderr
    assert (home / "dead.letter").read_bytes().count(b"X-Pipemail-Undelivered-To: to@example.org") == 2


def test_check_sends_nothing(run, smtp_server, home):
    srv = smtp_server()
    srv.rcpt_replies["bad@example.org"] = "550 5.1.1 user unknown"
    r = send(run, srv, "--check", "-v", "ok@example.org", "bad@example.org", home=str(home))
    assert r.returncode == 67
    assert srv.messages == [] and "C: RSET" in r.stderr and "check: ok@example.org would be accepted" in r.stderr
    assert not (home / "dead.letter").exists()


def test_header_injection_and_missing_attachment_send_nothing(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    r = send(run, srv, "-s", "hi\nBcc: victim@example.org", "to@example.org", home=str(home))
    assert r.returncode == 65 and "line break" in r.stderr
    r = send(run, srv, "-H", "X-A: b\rc", "to@example.org", home=str(home))
    assert r.returncode == 65
    r = send(run, srv, "-a", tmp_path / "missing.bin", "to@example.org", home=str(home))
    assert r.returncode == 66
    assert r.stderr == "pymail: cannot attach %s: No such file or directory\n" % (tmp_path / "missing.bin")
    assert srv.messages == []


def test_skip_empty_and_binary_stdin(run, smtp_server, home):
    srv = smtp_server()
    assert send(run, srv, "-E", "to@example.org", input=b"", home=str(home)).returncode == 0
    assert srv.messages == []
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    data += os.urandom(500)
    r = send(run, srv, "to@example.org", input=data, home=str(home))
    assert r.returncode == 0, r.stderr
    msg = parse(srv.messages[0][2])
    assert msg.get_content_type() == "image/png" and msg.get_filename() == "stdin.png"
    assert msg.get_payload(decode=True) == data


def test_local_transports(run, tmp_path, home):
    box = tmp_path / "box.mbox"
    for n in range(2):
        r = run(
            "pymail",
            "--transport",
            "mbox:%s" % box,
            "-s",
            "n%d" % n,
            "a@example.org",
            input=b"From here\nline\n",
            env={"HOME": str(home)},
        )
        assert r.returncode == 0
    import mailbox

    msgs = list(mailbox.mbox(box))
    assert [m["Subject"] for m in msgs] == ["n0", "n1"]
    maildir = tmp_path / "Maildir"
    r = run("pymail", "--transport", "maildir:%s" % maildir, "a@example.org", input=b"x\n", env={"HOME": str(home)})
    assert r.returncode == 0 and len(os.listdir(maildir / "new")) == 1 and os.listdir(maildir / "tmp") == []
    r = run("pymail", "--transport", "-", "-s", "x", "a@example.org", input=b"body\n", env={"HOME": str(home)})
    assert r.returncode == 0 and r.stdout.endswith(b"\n\nbody\n") and b"Subject: x\n" in r.stdout


# -- through a real MTA ---------------------------------------------------------------

import mta  # noqa: E402

exim = mta.exim


def test_through_exim_over_smtp(run, exim, home):
    exim.clear()
    body = "Grüße, ✉\n.\nFrom the dot above\n" + "long " * 300 + "\n"
    r = run(
        "pymail",
        "--transport",
        "smtp://%s:%d" % (exim.host, exim.port),
        "-s",
        "über exim",
        "-r",
        "sender@pipemail.test",
        "pmtest@pipemail.test",
        input=body.encode(),
        env={"HOME": str(home)},
    )
    assert (r.returncode, r.stderr) == (0, "")
    [delivered] = exim.wait_for(1)
    msg = parse(delivered.replace(b"\n>From ", b"\nFrom "))
    assert msg["Subject"] == "über exim" and msg.get_content() == body


def test_through_exim_as_sendmail(run, exim, home, tmp_path):
    exim.clear()
    wrapper = tmp_path / "sendmail"
    wrapper.write_text('#!/bin/sh\nexec %s -C %s "$@"\n' % (exim.binary, exim.config))
    wrapper.chmod(0o755)
    r = run(
        "pymail",
        "--transport",
        "sendmail:%s" % wrapper,
        "-s",
        "via sendmail",
        "-r",
        "sender@pipemail.test",
        "pmtest@pipemail.test",
        input=b"local hand-off\n",
        env={"HOME": str(home)},
    )
    assert (r.returncode, r.stderr) == (0, "")
    [delivered] = exim.wait_for(1)
    assert parse(delivered).get_content() == "local hand-off\n"
    r = run(
        "pymail",
        "--transport",
        "sendmail:%s" % wrapper,
        "-r",
        "sender@pipemail.test",
        "--",
        "-oi@pipemail.test",
        input=b"x\n",
        env={"HOME": str(home)},
    )
    assert r.returncode == 65


# -- the rest of the interface ------------------------------------------------------------


def test_read_recipients_from_the_message(run, smtp_server, home):
    srv = smtp_server()
    raw = b"To: a@example.org\nCc: b@example.org\nBcc: hidden@example.org\nSubject: whole\n\nbody here\n"
    r = send(run, srv, "-t", "extra@example.org", input=raw, home=str(home))
    assert r.returncode == 0, r.stderr
    ((_f, rcpts, got),) = srv.messages
    assert rcpts == ["a@example.org", "b@example.org", "hidden@example.org", "extra@example.org"]
    msg = parse(got)
    assert msg["Bcc"] is None and msg["Subject"] == "whole" and msg["Date"] and msg["Message-ID"]
    assert msg.get_content() == "body here\n"


def test_smtputf8_only_when_an_address_needs_it(run, smtp_server, home):
    srv = smtp_server()
    r = send(run, srv, "-r", "me@example.org", "jos\u00e9@example.org", home=str(home))
    assert r.returncode == 0, r.stderr
    assert srv.messages[0][1] == ["jos\u00e9@example.org"]
    old = smtp_server(smtputf8=False)
    r = send(run, old, "jos\u00e9@example.org", home=str(home))
    assert r.returncode == 69
    assert "an address needs SMTPUTF8, which 127.0.0.1 does not offer" in r.stderr


def test_account_from_the_config_with_password_command(run, smtp_server, home, tmp_path):
    srv = smtp_server(auth=("bob", "from-command"))
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'default = "work"\n[accounts.work]\nfrom = "Bob <bob@example.org>"\n'
        'transport = "smtp://bob@127.0.0.1:%d"\npassword_command = "echo from-command"\n' % srv.port
    )
    r = run("pymail", "-s", "cfg", "to@example.org", input=b"x\n", env={"HOME": str(home), "PIPEMAIL_CONFIG": str(cfg)})
    assert (r.returncode, r.stderr) == (0, "")
    assert srv.logins == [("PLAIN", "bob", True)]
    assert parse(srv.messages[0][2])["From"] == "Bob <bob@example.org>"


def test_no_transport_configured(run, home, tmp_path):
    r = run(
        "pymail",
        "to@example.org",
        input=b"x\n",
        env={"HOME": str(home), "PIPEMAIL_SENDMAIL": str(tmp_path / "no-sendmail")},
    )
    assert r.returncode == 78
    assert r.stderr.startswith("pymail: no transport: give --transport smtp://HOST")


@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])  # run, smtp_server: stateless
@given(
    subject=st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=60
    ).filter(lambda s: s.strip() == s and " " * 2 not in s),
    body=st.text(max_size=3000)
    | st.lists(st.sampled_from([".", "..", "From x", "a" * 1500, "x\r", "é"]), max_size=8).map("\n".join),
    name=st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="/\\"), min_size=1, max_size=30
    ).filter(lambda s: s not in (".", "..")),
)
def test_random_messages_arrive_intact(run, smtp_server, tmp_path_factory, subject, body, name):
    srv = smtp_server()
    d = tmp_path_factory.mktemp("att")
    att = d / name
    att.write_bytes(os.urandom(100))
    r = run(
        "pymail",
        "--transport",
        srv.url,
        "-s",
        subject,
        "-a",
        str(att),
        "to@example.org",
        input=body.encode("utf-8", "surrogatepass"),
        env={"HOME": str(d)},
    )
    assert r.returncode == 0, r.stderr
    msg = parse(srv.messages[0][2])
    assert msg["Subject"] == subject
    text = [p for p in msg.iter_parts() if p.get_content_type() == "text/plain" and not p.get_filename()]
    if body:
        assert text[0].get_payload(decode=True) == body.encode("utf-8", "surrogatepass")
    (part,) = [p for p in msg.iter_attachments() if p.get_filename() is not None]
    assert part.get_filename() == name and part.get_payload(decode=True) == att.read_bytes()


def test_latin1_body_keeps_its_charset(run, smtp_server, home):
    srv = smtp_server()
    body = "Grüße aus Köln, déjà vu.\n".encode("latin-1")
    r = send(run, srv, "to@example.org", input=body, home=str(home))
    assert r.returncode == 0, r.stderr
    msg = parse(srv.messages[0][2])
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() in ("iso-8859-1", "latin-1", "windows-1252")
    assert msg.get_payload(decode=True) == body


def test_terminal_stdin_ends_at_a_lone_dot(smtp_server, home):
    import subprocess

    from conftest import command_path

    srv = smtp_server()
    master, slave = os.openpty()
    proc = subprocess.Popen(
        command_path("pymail") + ["--transport", srv.url, "-s", "tty", "to@example.org"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HOME": str(home)},
    )
    os.close(slave)
    os.write(master, b"typed line\n.\n")
    out, err = proc.communicate(timeout=30)
    os.close(master)
    assert proc.returncode == 0, err
    assert parse(srv.messages[0][2]).get_content() == "typed line\n"


def test_xoauth2_token_from_password_command(run, smtp_server, home, tmp_path):
    srv = smtp_server(xoauth2=("carol@example.org", "Bearer ya29.token"))
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[accounts.oauth]\ntransport = "smtp://127.0.0.1:%d"\nuser = "carol@example.org"\n'
        'auth = "xoauth2"\npassword_command = "printf ya29.token"\n' % srv.port
    )
    r = run(
        "pymail",
        "--account",
        "oauth",
        "-v",
        "to@example.org",
        input=b"x\n",
        env={"HOME": str(home), "PIPEMAIL_CONFIG": str(cfg)},
    )
    assert r.returncode == 0, r.stderr
    assert srv.logins == [("XOAUTH2", "carol@example.org", True)]
    assert "ya29.token" not in r.stderr and "C: AUTH <redacted>" in r.stderr


def test_resend_keeps_only_what_failed_again(run, smtp_server, home):
    port = free_port()
    dead = home / "dead.letter"
    for rcpts in (["a@example.org", "b@example.org"], ["c@example.org"]):
        r = send(run, "smtp://127.0.0.1:%d" % port, *rcpts, home=str(home))
        assert r.returncode == 75
    srv = smtp_server()
    srv.rcpt_replies["b@example.org"] = "550 5.1.1 no such user"
    r = run("pymail", "--transport", srv.url, "--resend", str(dead), env={"HOME": str(home)})
    assert r.returncode == 67
    assert sorted(rc for _f, rc, _raw in srv.messages) == [["a@example.org"], ["c@example.org"]]
    kept = dead.read_bytes()
    assert kept.count(b"X-Pipemail-Undelivered-To:") == 1 and b"X-Pipemail-Undelivered-To: b@example.org\n" in kept
    assert os.stat(dead).st_mode & 0o777 == 0o600
    srv.rcpt_replies.clear()
    r = run("pymail", "--transport", srv.url, "--resend", str(dead), env={"HOME": str(home)})
    assert r.returncode == 0 and dead.read_bytes() == b""
    assert srv.messages[-1][1] == ["b@example.org"]


def test_header_options_replace_never_duplicate(run, smtp_server, home):
    srv = smtp_server()
    r = send(
        run,
        srv,
        "-s",
        "s",
        "-H",
        "Message-ID: <job-1@example.org>",
        "-H",
        "X-Job: nightly",
        "to@example.org",
        home=str(home),
    )
    assert r.returncode == 0, r.stderr
    raw = srv.messages[0][2]
    assert raw.count(b"Message-ID:") == 1 and parse(raw)["Message-ID"] == "<job-1@example.org>"
    assert parse(raw)["X-Job"] == "nightly" and parse(raw)["Subject"] == "s"
    r = send(run, srv, "-H", "Content-Type: text/html", "to@example.org", home=str(home))
    assert r.returncode == 64 and "pymail writes the MIME headers itself" in r.stderr


def test_non_ascii_address_with_a_name_and_8bit_headers_with_t(run, smtp_server, home):
    srv = smtp_server()
    r = send(run, srv, "-r", "Zo\u00eb <zo\u00eb@example.org>", "Jos\u00e9 <jos\u00e9@example.org>", home=str(home))
    assert r.returncode == 0, r.stderr
    msg = parse(srv.messages[0][2])
    assert msg["To"] == "Jos\u00e9 <jos\u00e9@example.org>" and srv.messages[0][0] == "zo\u00eb@example.org"
    raw = "To: a@example.org\nSubject: Gr\u00fc\u00dfe\n\nbody\n".encode()
    given = smtp_server(lint=False)  # -t sends the header as the user wrote it, raw UTF-8 (RFC 6532)
    r = send(run, given, "-t", input=raw, home=str(home))
    assert r.returncode == 0, r.stderr
    assert b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n" in given.messages[0][2]


def test_sendmail_that_exits_early_keeps_the_message(run, home, tmp_path):
    script = tmp_path / "sendmail"
    script.write_text("#!/bin/sh\necho 'mail queue full' >&2\nexit 75\n")
    script.chmod(0o755)
    r = run(
        "pymail",
        "--transport",
        "sendmail:%s" % script,
        "to@example.org",
        input=os.urandom(300_000).hex().encode(),
        env={"HOME": str(home)},
    )
    assert r.returncode == 75
    assert "refused the message: mail queue full" in r.stderr
    assert b"X-Pipemail-Undelivered-To: to@example.org" in (home / "dead.letter").read_bytes()


def test_check_with_resend_sends_and_removes_nothing(run, smtp_server, home):
    port = free_port()
    send(run, "smtp://127.0.0.1:%d" % port, "to@example.org", home=str(home))
    dead = home / "dead.letter"
    before = dead.read_bytes()
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--check", "--resend", str(dead), env={"HOME": str(home)})
    assert r.returncode == 0 and srv.messages == [] and dead.read_bytes() == before


def waiting_for_the_greeting(pid, timeout=20):
    """Return once the process ``pid``, connected to a server that never speaks, sleeps in its
    read of the greeting (state S, in a socket wait): what a fixed sleep waited for before."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rpartition(")")[2].split()[0]
        with open("/proc/%d/wchan" % pid) as f:
            wchan = f.read()
        if state == "S" and wchan not in ("", "0"):
            return
        time.sleep(0.005)
    raise AssertionError("pid %d never waited for the greeting" % pid)


def test_sigterm_during_delivery_keeps_the_message(home):
    import signal
    import socket
    import subprocess

    from conftest import command_path

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, then never answers: pymail waits for the greeting
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        command_path("pymail") + ["--transport", "smtp://127.0.0.1:%d" % port, "to@example.org"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HOME": str(home)},
    )
    proc.stdin.write(b"important\n")
    proc.stdin.close()
    conn, _ = listener.accept()
    waiting_for_the_greeting(proc.pid)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=20) == 143
    conn.close()
    listener.close()
    assert "the message is kept in" in err
    assert b"X-Pipemail-Undelivered-To: to@example.org" in (home / "dead.letter").read_bytes()


def test_resend_takes_no_message_options(run, home):
    r = run("pymail", "--resend", str(home / "dead.letter"), "-s", "x", "a@example.org", env={"HOME": str(home)})
    assert r.returncode == 64
    assert "--resend sends the dead letter's messages as they are: RECIPIENT, -s cannot go with it" in r.stderr


def test_valid_utf8_that_magic_calls_binary_is_attached(run, smtp_server, home):
    srv = smtp_server()
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    r = send(run, srv, "to@example.org", input=pdf, home=str(home))
    assert r.returncode == 0, r.stderr
    msg = parse(srv.messages[0][2])
    assert msg.get_content_type() == "application/pdf" and msg.get_filename() == "stdin.pdf"
    assert msg.get_payload(decode=True) == pdf
    r = send(run, srv, "to@example.org", input=b"\x1b[1mbold\x1b[0m and {json}\n", home=str(home))
    assert parse(srv.messages[1][2]).get_content_type() == "text/plain"


def test_smtps_implicit_tls(run, smtp_server, home):
    srv = smtp_server(implicit_tls=True)
    r = send(
        run, "smtps://127.0.0.1:%d" % srv.port, "-v", "--tls-trust-file", srv.ca_file, "to@example.org", home=str(home)
    )
    assert r.returncode == 0, r.stderr
    assert "(TLS)" in r.stderr.splitlines()[0] and "C: STARTTLS" not in r.stderr
    assert parse(srv.messages[0][2]).get_content() == "hello\n"
    r = send(run, "smtps://127.0.0.1:%d" % srv.port, "to@example.org", home=str(home))  # CA not given
    assert r.returncode == 69 and "is not trusted" in r.stderr


def test_max_size_splits_what_does_not_fit_into_shar_parts(run, smtp_server, home, tmp_path):

    srv = smtp_server()
    big = tmp_path / "backup.tgz"
    big.write_bytes(os.urandom(3_000_000))
    small = tmp_path / "notes.txt"
    small.write_bytes(b"small enough\n")
    r = send(
        run,
        srv,
        "--max-size",
        "1M",
        "-s",
        "backup",
        "-a",
        small,
        "-a",
        big,
        "me@example.org",
        input=b"see attached\n",
        home=str(home),
    )
    assert r.returncode == 0, r.stderr
    n = len(srv.messages)
    assert n >= 3
    subjects = [parse(raw)["Subject"] for _f, _rc, raw in srv.messages]
    assert subjects == ["backup [part %02d/%d]" % (i, n) for i in range(1, n + 1)]
    assert all(len(raw) <= 1024 * 1024 for _f, _rc, raw in srv.messages)  # every mail, as sent, within SIZE
    first = parse(srv.messages[0][2])
    assert [p.get_filename() for p in first.iter_attachments()] == ["notes.txt", "backup.tgz.%02d" % 1]
    out = unshar_mails(run, [raw for _f, _rc, raw in reversed(srv.messages)], tmp_path / "in")  # in any order
    assert (out / "backup.tgz").read_bytes() == big.read_bytes()


def test_max_size_with_the_server_down_keeps_every_part_and_resend_completes_it(run, smtp_server, home, tmp_path):

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    port = free_port()
    r = send(run, "smtp://127.0.0.1:%d" % port, "--max-size", "256K", "-a", big, "me@example.org", home=str(home))
    assert r.returncode == 75
    dead = home / "dead.letter"
    n = dead.read_bytes().count(b"X-Pipemail-Undelivered-To: me@example.org")
    assert n >= 3
    assert r.stderr == (  # the reason once, then what was not sent and what to do
        "pymail: cannot connect to 127.0.0.1 port %d: Connection refused\n"
        "pymail: sent 0 of %d parts; not sent: %s (kept in %s: pymail --resend %s sends them again)\n"
        % (port, n, "1-%d" % n, dead, dead)
    )
    srv = smtp_server()  # the server is back: --resend sends every part, and they make the file again
    r = run("pymail", "--resend", dead, "--transport", srv.url, env={"HOME": str(home)})
    assert r.returncode == 0 and len(srv.messages) == n
    out = unshar_mails(run, [raw for _f, _rc, raw in srv.messages], tmp_path / "in")
    assert (out / "big.bin").read_bytes() == big.read_bytes()


def test_max_size_parts_share_one_smtp_session_and_one_password_lookup(run, smtp_server, home, tmp_path):
    srv = smtp_server(auth=("bob", "from-command"))
    calls = tmp_path / "calls"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[accounts.work]\ntransport = "smtp://bob@127.0.0.1:%d"\n'
        'password_command = "echo x >> %s; echo from-command"\n' % (srv.port, calls)
    )
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    r = run(
        "pymail",
        "-v",
        "--max-size",
        "256K",
        "-a",
        big,
        "me@example.org",
        input=b"",
        env={"HOME": str(home), "PIPEMAIL_CONFIG": str(cfg)},
    )
    assert (r.returncode, r.stderr.count("=== connecting to")) == (0, 1), r.stderr
    n = len(srv.messages)
    assert n >= 3 and srv.logins == [("PLAIN", "bob", True)] and calls.read_text() == "x\n"
    assert r.stderr.count("C: MAIL FROM:") == n and r.stderr.count("C: QUIT") == 1


def test_max_size_a_part_refused_does_not_stop_the_others(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    refused = []

    async def handle_DATA(server, session, envelope):  # the server refuses the second part only
        raw = envelope.original_content
        if b"[part 02/" in raw and not refused:
            refused.append(raw)
            return "554 5.7.1 rejected by policy"
        srv.messages.append((envelope.mail_from, list(envelope.rcpt_tos), raw))
        return "250 OK"

    srv.handle_DATA = handle_DATA
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    r = send(run, srv, "--max-size", "256K", "-s", "b", "-a", big, "me@example.org", home=str(home))
    n = len(srv.messages) + 1
    assert r.returncode == 69 and refused and n >= 3
    assert "pymail: the message (DATA) refused by 127.0.0.1: 554 5.7.1 rejected by policy\n" in r.stderr
    assert "pymail: sent %d of %d parts; not sent: 2 (kept in " % (n - 1, n) in r.stderr
    dead = (home / "dead.letter").read_bytes()
    assert dead.count(b"X-Pipemail-Undelivered-To:") == 1 and b"b [part 02/" in dead


def test_max_size_a_data_command_refused_leaves_the_session_ready_for_the_next_part(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    srv.data_command_replies = {2: "554 5.3.4 no DATA now"}  # before its 354: pymail must RSET
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    r = send(run, srv, "--max-size", "256K", "-s", "b", "-a", big, "me@example.org", home=str(home))
    n = len(srv.messages) + 1
    assert (r.returncode, n >= 3) == (69, True), r.stderr
    assert r.stderr.startswith("pymail: the message (DATA) refused by 127.0.0.1: 554 5.3.4 no DATA now\n")
    assert "pymail: sent %d of %d parts; not sent: 2 (kept in " % (n - 1, n) in r.stderr
    assert r.stderr.count("\n") == 2
    subjects = [parse(raw)["Subject"] for _f, _r, raw in srv.messages]
    assert subjects == ["b [part %02d/%d]" % (i, n) for i in (1, *range(3, n + 1))]
    assert (home / "dead.letter").read_bytes().count(b"X-Pipemail-Undelivered-To: me@example.org\n") == 1


def test_max_size_a_refused_recipient_is_said_once_and_named_in_the_summary(run, smtp_server, home, tmp_path):
    import mailbox

    srv = smtp_server()
    srv.rcpt_replies = {"bad@example.org": "550 5.1.1 no such user"}
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    r = send(run, srv, "--max-size", "256K", "-a", big, "me@example.org", "bad@example.org", home=str(home))
    n = len(srv.messages)
    dead = home / "dead.letter"
    assert (r.returncode, n >= 3) == (67, True), r.stderr
    assert all(rcpts == ["me@example.org"] for _f, rcpts, _raw in srv.messages)
    assert r.stderr == (
        "pymail: RCPT TO:<bad@example.org> refused by 127.0.0.1: 550 5.1.1 no such user\n"
        "pymail: sent %d of %d parts; not delivered to bad@example.org: 1-%d "
        "(kept in %s: pymail --resend %s sends them again)\n" % (n, n, n, dead, dead)
    )
    kept = list(mailbox.mbox(dead))
    assert len(kept) == n and {m["X-Pipemail-Undelivered-To"] for m in kept} == {"bad@example.org"}


def test_max_size_interrupted_keeps_every_part_not_sent_and_resend_completes_it(run, smtp_server, home, tmp_path):
    """Ctrl-C while part 3 is on its way: parts 3 to N are kept (3 may arrive twice: pyunshar
    takes it once), the summary says so, and pymail --resend sends them."""
    import asyncio
    import mailbox
    import signal
    import subprocess
    import threading

    from conftest import command_path

    srv = smtp_server()
    on_its_way, release = threading.Event(), threading.Event()

    async def handle_DATA(server, session, envelope):
        raw = envelope.original_content
        if b"[part 03/" in raw and not release.is_set():
            on_its_way.set()
            while not release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 interrupted"
        srv.messages.append((envelope.mail_from, list(envelope.rcpt_tos), raw))
        return "250 OK"

    srv.handle_DATA = handle_DATA
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1_200_000))
    env = dict(os.environ, HOME=str(home))
    cmd = command_path("pymail") + ["--transport", srv.url, "--max-size", "256K", "-a", str(big), "me@example.org"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert on_its_way.wait(60)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        release.set()
        proc.kill()
    dead = home / "dead.letter"
    kept = [m["Subject"] for m in mailbox.mbox(dead)]
    n = int(kept[0].split("/")[1].rstrip("]")) if kept else 0
    assert (proc.returncode, len(srv.messages), n >= 5) == (130, 2, True), err
    assert kept == ["[part %02d/%d]" % (i, n) for i in range(3, n + 1)]
    summary = "sent 2 of %d parts; not sent: 3-%d (kept in %s: pymail --resend %s sends them again)" % (
        n,
        n,
        dead,
        dead,
    )
    assert err == "pymail: interrupted: %s\n\n" % summary  # click ends an interrupted line with a newline
    r = subprocess.run(
        command_path("pymail") + ["--transport", srv.url, "--resend", str(dead)], env=env, capture_output=True
    )
    assert (r.returncode, len(srv.messages)) == (0, n), r.stderr
    out = unshar_mails(run, [raw for _f, _r, raw in srv.messages], tmp_path / "in")
    assert (out / "big.bin").read_bytes() == big.read_bytes()


def test_max_size_terminated_while_connecting_keeps_every_part(home, tmp_path):
    import socket
    import subprocess

    from conftest import command_path

    with socket.socket() as silent:  # takes the connection and never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(600_000))
        cmd = command_path("pymail") + [
            "--transport",
            "smtp://127.0.0.1:%d" % port,
            "--max-size",
            "256K",
            "-a",
            str(big),
            "me@x.org",
        ]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, HOME=str(home))
        )
        try:
            conn, _ = silent.accept()
            waiting_for_the_greeting(proc.pid)
            proc.terminate()
            err = proc.communicate(timeout=60)[1].decode()
        finally:
            proc.kill()
        conn.close()
    dead = home / "dead.letter"
    n = dead.read_bytes().count(b"X-Pipemail-Undelivered-To: me@x.org\n")
    assert (proc.returncode, n >= 3) == (143, True), err
    summary = "sent 0 of %d parts; not sent: 1-%d (kept in %s: pymail --resend %s sends them again)" % (
        n,
        n,
        dead,
        dead,
    )
    assert err == "pymail: interrupted: %s\n" % summary


def test_max_size_a_dead_letter_that_cannot_be_written_does_not_stop_the_others(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    srv.data_command_replies = {2: "554 5.3.4 no DATA now"}
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    nowhere = tmp_path / "no" / "dead.letter"
    r = send(run, srv, "--max-size", "256K", "--dead-letter", nowhere, "-a", big, "me@example.org", home=str(home))
    n = len(srv.messages) + 1
    assert (r.returncode, n >= 3) == (74, True), r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "pymail: the message (DATA) refused by 127.0.0.1: 554 5.3.4 no DATA now"
    assert lines[1].startswith("pymail: cannot keep what was not sent in %s: " % nowhere)
    assert lines[2:] == ["pymail: sent %d of %d parts; not sent: 2; part 2 is lost" % (n - 1, n)]


def test_max_size_through_a_sendmail_that_fails_keeps_every_part(run, home, tmp_path):
    """A sendmail that exits before reading: no SIGPIPE death, each part kept, the reason said once."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    r = send(run, "sendmail:/bin/false", "--max-size", "256K", "-a", big, "me@example.org", home=str(home))
    dead = home / "dead.letter"
    n = dead.read_bytes().count(b"X-Pipemail-Undelivered-To: me@example.org\n")
    assert (r.returncode, n >= 3) == (69, True), r.stderr
    assert r.stderr == (
        "pymail: /bin/false refused the message: exit status 1\n"
        "pymail: sent 0 of %d parts; not sent: 1-%d (kept in %s: pymail --resend %s sends them again)\n"
        % (n, n, dead, dead)
    )


def test_max_size_a_big_message_without_attachments_is_refused_and_kept(run, smtp_server, home):
    srv = smtp_server()
    body = b"a line of log\n" * 20_000
    r = send(run, srv, "--max-size", "64K", "-s", "log", "me@example.org", input=body, home=str(home))
    dead = home / "dead.letter"
    assert (r.returncode, srv.messages) == (64, [])
    size = int(r.stderr.split(" bytes")[0].rsplit(" ", 1)[1])
    assert size > 64 * 1024
    assert r.stderr == (
        "pymail: the message is %d bytes, over --max-size 64K, and only attachments are split: "
        "give the data with -a FILE\n"
        "pymail: the message is kept in %s for me@example.org (pymail --resend %s sends it again)\n"
        % (size, dead, dead)
    )
    assert body in dead.read_bytes()


def test_max_size_parts_go_7bit_unless_crlf_would_burst_them(run, smtp_server, home, tmp_path):
    """Archive parts are 7-bit text: sent as they are; a file of short lines, which CRLF
    would grow by half, makes pymail size the parts for base64 instead. Every mail fits."""

    srv = smtp_server()
    binary = tmp_path / "data.bin"
    binary.write_bytes(os.urandom(700_000))
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"\n" * 700_000)
    for path, cte in ((binary, "7bit"), (lines, "base64")):
        before = len(srv.messages)
        r = send(run, srv, "--max-size", "256K", "-a", path, "me@example.org", home=str(home))
        assert (r.returncode, r.stderr) == (0, "")
        raws = [raw for _f, _rc, raw in srv.messages[before:]]
        assert len(raws) >= 3 and all(len(raw) <= 256 * 1024 for raw in raws)
        encodings = {p["Content-Transfer-Encoding"] for raw in raws for p in parse(raw).iter_attachments()}
        assert encodings == {cte}, path
        out = unshar_mails(run, raws, tmp_path / cte)
        assert (out / path.name).read_bytes() == path.read_bytes()


def test_max_size_too_small_for_any_part_is_refused_and_kept(run, smtp_server, home, tmp_path):
    srv = smtp_server()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    r = send(run, srv, "--max-size", "20K", "-a", big, "me@example.org", home=str(home))
    dead = home / "dead.letter"
    assert (r.returncode, srv.messages) == (64, [])
    first, second = r.stderr.splitlines()
    assert first.startswith("pymail: --max-size 20K leaves too little room for archive parts: give at least ")
    at_least = first.rsplit(" ", 1)[1]
    assert at_least.endswith("K") and int(at_least[:-1]) > 20
    assert second == "pymail: the message is kept in %s for me@example.org (pymail --resend %s sends it again)" % (
        dead,
        dead,
    )
    assert dead.read_bytes().count(b"X-Pipemail-Undelivered-To: me@example.org\n") == 1


def test_max_size_parts_saved_with_crlf_line_ends_are_reassembled(run, home, tmp_path):
    """As a Windows mail client saves them: an mbox, .eml files, the attachments alone, all CRLF."""
    import mailbox

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(600_000))
    box = tmp_path / "box.mbox"
    r = send(run, "mbox:%s" % box, "--max-size", "256K", "-a", big, "me@example.org", home=str(home))
    assert (r.returncode, r.stderr) == (0, "")
    mails = [m.as_bytes() for m in mailbox.mbox(box)]
    assert len(mails) >= 3
    crlf = tmp_path / "crlf"
    crlf.mkdir()
    (crlf / "box.mbox").write_bytes(box.read_bytes().replace(b"\n", b"\r\n"))
    for i, raw in enumerate(mails):
        (crlf / ("m%d.eml" % i)).write_bytes(raw.replace(b"\n", b"\r\n"))
        attached = parse(raw).get_payload()[-1]
        (crlf / attached.get_filename()).write_bytes(attached.get_payload(decode=True).replace(b"\n", b"\r\n"))
    for name, inputs in (
        ("mbox", ["box.mbox"]),
        ("eml", sorted(p.name for p in crlf.glob("*.eml"))),
        ("parts", sorted((p.name for p in crlf.glob("big.bin.*")), reverse=True)),
    ):
        u = run("pyunshar", "-d", "out-" + name, *inputs, cwd=crlf)
        assert (u.returncode, u.stderr) == (0, ""), name
        assert (crlf / ("out-" + name) / "big.bin").read_bytes() == big.read_bytes(), name


@pytest.mark.parametrize("operand", [":>x,;root", "\t:root,"])
def test_an_address_the_stdlib_parser_chokes_on_is_65_not_a_crash(run, smtp_server, home, operand):
    srv = smtp_server()
    r = send(run, srv, "-s", "x", "--", operand, home=str(home))
    assert (r.returncode, r.stderr) == (65, "pymail: not a mail address: %s\n" % operand.replace("\t", "\\t"))
    assert srv.messages == []


def _oauth_config(tmp_path, srv, auth, token):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[accounts.oauth]\ntransport = "smtp://127.0.0.1:%d"\nuser = "carol@example.org"\n'
        'auth = "%s"\npassword_command = "printf %s"\n' % (srv.port, auth, token)
    )
    return {"HOME": str(tmp_path), "PIPEMAIL_CONFIG": str(cfg), "PIPEMAIL_PASSWORD": ""}


def test_oauthbearer_token_from_password_command(run, smtp_server, tmp_path):
    srv = smtp_server(oauthbearer=("carol@example.org", "Bearer ya29.token"))
    r = run(
        "pymail",
        "--account",
        "oauth",
        "-v",
        "to@example.org",
        input=b"x\n",
        env=_oauth_config(tmp_path, srv, "oauthbearer", "ya29.token"),
    )
    assert r.returncode == 0, r.stderr
    assert srv.logins == [("OAUTHBEARER", "carol@example.org", True)] and len(srv.messages) == 1
    assert "ya29.token" not in r.stderr and "C: AUTH <redacted>" in r.stderr


@pytest.mark.parametrize("auth, answer", [("xoauth2", b""), ("oauthbearer", b"\x01")])
def test_a_refused_token_ends_the_error_challenge_and_is_77(run, smtp_server, tmp_path, auth, answer):
    """Gmail sends a refused token's reason as a 334 challenge: pymail answers it as the mechanism
    says (XOAUTH2 an empty line, OAUTHBEARER %x01) and reports the final 535, nothing sent."""
    srv = smtp_server(**{auth: ("carol@example.org", "Bearer good")})
    r = run(
        "pymail", "--account", "oauth", "to@example.org", input=b"x\n", env=_oauth_config(tmp_path, srv, auth, "stale")
    )
    assert r.returncode == 77, r.stderr
    assert r.stderr.startswith(
        "pymail: AUTH %s refused by 127.0.0.1: 535 5.7.8 Authentication credentials invalid\n" % auth.upper()
    )
    assert srv.error_answers == [answer] and srv.messages == []
    assert "stale" not in r.stderr


def test_an_auth_the_server_does_not_offer_is_69_and_never_sent(run, smtp_server, tmp_path):
    srv = smtp_server(xoauth2=("carol@example.org", "Bearer ya29.token"))
    r = run(
        "pymail",
        "--account",
        "oauth",
        "to@example.org",
        input=b"x\n",
        env=_oauth_config(tmp_path, srv, "oauthbearer", "ya29.token"),
    )
    assert r.returncode == 69, r.stderr
    assert r.stderr.startswith(
        "pymail: 127.0.0.1 does not offer AUTH OAUTHBEARER (its mechanisms: LOGIN, PLAIN, XOAUTH2)\n"
    )
    assert srv.logins == [] and srv.messages == []
