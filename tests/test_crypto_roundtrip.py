"""pymail --sign / --encrypt, then pymime verify / decrypt on what it wrote: the sending and the
reading side of issue 13 through the real commands, S/MIME and OpenPGP, and a Bcc copy read by
its recipient."""

import email
import email.policy
import os
import re
import subprocess

import lint
import pytest

BODY = b"root password changed on db1\nFrom now on use the new one \n.\nend\n"
ATTACHMENT = bytes(range(256)) * 8 + b"\r\nno final newline\r"


@pytest.fixture
def run(run):
    return lint.checking(run)


@pytest.fixture
def setup(tmp_path, pki, gnupg):
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("bob", "carol", "eve"):
        (certs / ("%s@example.org.pem" % name)).write_bytes(open(pki.cert(name), "rb").read())
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[accounts.me]\nfrom = "alice@example.org"\ncrypto = "smime"\nsmime_cert = "%s"\nsmime_key = "%s"\n'
        'smime_certs = "%s"\n' % (pki.cert("alice"), pki.key("alice"), certs)
    )
    (tmp_path / "home").mkdir()
    att = tmp_path / "report.bin"
    att.write_bytes(ATTACHMENT)
    env = {"PIPEMAIL_CONFIG": str(cfg), "HOME": str(tmp_path / "home"), "GNUPGHOME": gnupg.home}
    return env, att


def good_line(kind, pki, gnupg, prefix=""):
    if kind == "smime":
        out = subprocess.run(
            ["openssl", "x509", "-in", pki.cert("alice"), "-noout", "-fingerprint", "-sha256"],
            capture_output=True,
            check=True,
        )
        fpr = out.stdout.decode().strip().split("=", 1)[1]
        who = "alice@example.org (subject emailAddress=alice@example.org,CN=alice, SHA-256 fingerprint %s)" % fpr
        return "pymime: %sgood S/MIME signature from %s\n" % (prefix, who)
    fpr = gnupg.fpr("alice")
    return "pymime: %sgood OpenPGP signature from Alice <alice@example.org> (key %s, fingerprint %s)\n" % (
        prefix,
        fpr[-16:],
        fpr,
    )


def body_and_attachment(raw):
    """The text part's and the attachment's decoded bytes of a (decrypted) message."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = att = None
    for part in msg.walk():
        if part.get_filename() == "report.bin":
            att = part.get_payload(decode=True)
        elif part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True)
    return text, att


@pytest.mark.parametrize("kind", ["smime", "openpgp"])
def test_pymail_signs_and_encrypts_pymime_verifies_and_decrypts(run, setup, pki, gnupg, tmp_path, kind):
    env, att = setup
    send = ["pymail", "--account", "me", "--%s" % kind, "-s", "report", "-a", att]
    args = ["--cert", pki.cert("bob"), "--key", pki.key("bob"), "--ca-file", pki.ca]
    good = good_line(kind, pki, gnupg)

    signed = run(*send, "--transport", "-", "--sign", "bob@example.org", input=BODY, env=env)
    assert (signed.returncode, signed.stderr) == (0, "")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=signed.stdout, env=env)
    assert (r.returncode, r.stderr, r.stdout) == (0, good, signed.stdout)
    assert body_and_attachment(signed.stdout) == (BODY, ATTACHMENT)

    box = tmp_path / "out.mbox"
    sent = run(*send, "--transport", "mbox:%s" % box, "--sign", "--encrypt", "bob@example.org", input=BODY, env=env)
    assert (sent.returncode, sent.stderr) == (0, "")
    mbox = box.read_bytes()
    assert BODY[:20] not in mbox and b"report.bin" not in mbox  # the attachment's name is inside
    r = run("pymime", "decrypt", *args, input=mbox, env=env)
    label = "S/MIME, aes-256-cbc" if kind == "smime" else "OpenPGP"
    in_mbox = good_line(kind, pki, gnupg, "message 1: ")  # an mbox: its messages are numbered
    assert (r.returncode, r.stderr) == (0, "pymime: message 1: decrypted (%s)\n" % label + in_mbox)
    assert r.stdout.startswith(b"From alice@example.org ")
    assert body_and_attachment(r.stdout.split(b"\n", 1)[1].replace(b"\n>From ", b"\nFrom ")) == (BODY, ATTACHMENT)
    v = run("pymime", "verify", "--ca-file", pki.ca, input=r.stdout, env=env)  # what decrypt wrote still verifies
    assert (v.returncode, v.stderr) == (0, in_mbox)


def test_a_bcc_copy_is_decrypted_by_its_recipient_with_pymime(run, setup, pki, tmp_path):
    env, att = setup
    box = tmp_path / "out.mbox"
    sent = run(
        "pymail", "--account", "me", "--transport", "mbox:%s" % box, "--encrypt", "-s", "report", "-a", att,
        "-b", "eve@example.org", "bob@example.org", input=BODY, env=env,
    )  # fmt: skip
    assert (sent.returncode, sent.stderr) == (0, "")
    mbox = box.read_bytes()
    assert mbox.count(b"\nFrom alice@example.org ") + mbox.startswith(b"From alice@example.org ") == 2
    found = {}
    for name in ("eve", "bob"):
        r = run("pymime", "decrypt", "--cert", pki.cert(name), "--key", pki.key(name), input=mbox, env=env)
        assert r.returncode == 65  # the other recipient's copy is not for this key
        done = re.findall(r"^pymime: message (\d): decrypted \(S/MIME, aes-256-cbc\)$", r.stderr, re.M)
        refused = re.findall(
            r"^pymime: message (\d): not decrypted: S/MIME encrypted, not to our certificate", r.stderr, re.M
        )
        assert len(done) == 1 and len(refused) == 1 and done != refused, r.stderr
        found[name] = done[0]
        messages = re.split(rb"^From alice@example\.org .*\n", r.stdout, flags=re.M)[1:]
        clear = messages[int(done[0]) - 1].replace(b"\n>From ", b"\nFrom ")
        assert body_and_attachment(clear) == (BODY, ATTACHMENT)
        assert not re.search(rb"^Bcc:", clear, re.M | re.I)
        head = clear.split(b"\n\n", 1)[0]
        assert b"To: bob@example.org" in head and b"eve" not in head
    assert sorted(found.values()) == ["1", "2"]
    assert os.path.getsize(box) == len(mbox)  # pymime read it, never wrote it
