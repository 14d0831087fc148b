"""pypop's AUTHENTICATE XOAUTH2 and OAUTHBEARER against a real Dovecot imapd whose oauth2 passdb
checks each token at an RFC 7662 introspection endpoint (tests/imapserver.py: the endpoint is
the test's stand-in for the identity provider; the IMAP side is Dovecot's own).  The token comes
from the account's password_command, as for pymail."""

import base64

import imapserver
import pytest

from pipemail import transport

imap_oauth_dovecot = imapserver.imap_oauth_dovecot
imap_dovecot = imapserver.imap_dovecot

MESSAGE = (
    b"From: sender@example.org\nTo: pmtest@example.org\nSubject: oauth\nMessage-ID: <oauth@pipemail.test>\n\nbody\n"
)


@pytest.fixture
def oauth(run, imap_oauth_dovecot, tmp_path):
    """oauth(auth, token, *args): pypop --account o ARGS with ``auth = AUTH`` and a
    password_command printing TOKEN, over imap:// (STARTTLS) to 127.0.0.1."""
    server = imap_oauth_dovecot
    server.clear()
    server.put(None, MESSAGE)

    def _oauth(auth, token, *args):
        conf = tmp_path / "config.toml"
        conf.write_text(
            '[accounts.o]\npop = "imap://%s:%d"\nuser = "%s"\nauth = "%s"\n'
            "password_command = \"printf '%%s\\\\n' '%s'\"\ntls_trust_file = \"%s\"\n"
            % (server.host, server.port, server.user, auth, token, server.ca_file),
            encoding="utf-8",
        )
        conf.chmod(0o600)
        env = {
            "HOME": str(tmp_path),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "PIPEMAIL_CONFIG": str(conf),
            "PIPEMAIL_PASSWORD": "",  # empty counts as unset: the token comes from password_command
        }
        return run("pypop", "--account", "o", *args, env=env)

    _oauth.server = server
    return _oauth


def secrets(server, token):
    """Every form in which ``token`` could leak into a transcript: itself, the base64 of either
    mechanism's initial response, and the base64 of the token at each of the three alignments."""
    forms = {
        token,
        base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (server.user, token)).encode()).decode(),
        base64.b64encode(
            (
                "n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01"
                % (server.user, server.host, server.port, token)
            ).encode()
        ).decode(),
    }
    for shift in range(3):
        forms.add(base64.b64encode(b"\0" * shift + token.encode()).decode()[4:-4])
    return forms


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_stat_and_fetch_with_a_token_and_the_transcript_hides_it(oauth, tmp_path, auth):
    server = oauth.server
    server.tokens.seen.clear()
    r = oauth(auth, server.token, "stat")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == b"1 messages, %d bytes\n" % (len(MESSAGE) + MESSAGE.count(b"\n"))  # the CRLF size
    box = tmp_path / "inbox"
    r = oauth(auth, server.token, "-v", "fetch", "--mbox", str(box))
    assert r.returncode == 0, r.stderr
    assert [body for _from, body in transport.read_mbox(box)] == [MESSAGE]
    # Dovecot asked the identity provider about this very token, once per login.
    assert server.tokens.seen == [server.token, server.token]
    lines = r.stderr.splitlines()
    start = [n for n, line in enumerate(lines) if line.endswith(" AUTHENTICATE %s" % auth.upper())]
    assert len(start) == 1 and lines[start[0]].startswith("C: "), lines
    tag = lines[start[0]].split()[1]
    # The server's empty "+", the initial response redacted, then Dovecot's capabilities and OK.
    assert lines[start[0] + 1 : start[0] + 3] == ["S: + ", "C: <redacted>"]
    assert lines[start[0] + 4] == "S: %s OK Logged in" % tag
    for form in secrets(server, server.token):
        assert form not in r.stderr and form.encode() not in r.stdout


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_a_wrong_token_is_refused_with_one_line_and_exit_77(oauth, tmp_path, auth):
    server = oauth.server
    server.tokens.seen.clear()
    wrong = "ya29.not-the-token-Wrong_9876543210"
    box = tmp_path / "inbox"
    r = oauth(auth, wrong, "fetch", "--mbox", str(box))
    assert (r.returncode, r.stdout) == (77, b"")
    assert r.stderr == (
        "pypop: AUTHENTICATE %s refused by %s: [AUTHENTICATIONFAILED] Authentication failed.\n"
        % (auth.upper(), server.host)
    )
    assert server.tokens.seen == [wrong]  # refused by the provider's answer, not by Dovecot's parsing
    assert not box.exists()
    r = oauth(auth, wrong, "-v", "stat")
    assert r.returncode == 77 and r.stderr.endswith(
        "pypop: AUTHENTICATE %s refused by %s: [AUTHENTICATIONFAILED] Authentication failed.\n"
        % (auth.upper(), server.host)
    )
    for form in secrets(server, wrong):
        assert form not in r.stderr


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_a_mechanism_the_server_does_not_offer_is_exit_69_and_never_sent(run, imap_dovecot, tmp_path, auth):
    """The ordinary test Dovecot offers AUTH=PLAIN AUTH=LOGIN only: not a refused token (77) but
    a server without the mechanism (69, as for LOGINDISABLED or a missing STARTTLS)."""
    conf = tmp_path / "config.toml"
    conf.write_text(
        '[accounts.o]\npop = "imap://%s:%d"\nuser = "%s"\nauth = "%s"\npassword_command = "printf tok"\n'
        'tls_trust_file = "%s"\n'
        % (imap_dovecot.host, imap_dovecot.port, imap_dovecot.user, auth, imap_dovecot.ca_file)
    )
    env = {"HOME": str(tmp_path), "PIPEMAIL_CONFIG": str(conf), "PIPEMAIL_PASSWORD": ""}
    r = run("pypop", "--account", "o", "-v", "stat", env=env)
    assert (r.returncode, r.stdout) == (69, b"")
    assert r.stderr.endswith(
        "pypop: %s does not offer AUTHENTICATE %s (its mechanisms: LOGIN, PLAIN)\n" % (imap_dovecot.host, auth.upper())
    )
    assert "AUTHENTICATE" not in r.stderr.replace("does not offer AUTHENTICATE", "")
