"""pipemail.secure: what pymail signs and encrypts, verified and decrypted by the real tools.

S/MIME by ``openssl cms``, ``openssl smime``, s-nail and gpgsm (as mutt uses it through
gpgme: a detached signature and the CRLF content); OpenPGP by ``gpg``.  Keys and
certificates: tests/cryptokeys.py (session fixtures).
"""

import base64
import email
import email.policy
import os
import re
import subprocess

import pytest

from pipemail import config, message, secure, transport
from pipemail.errors import ConfigError, NoPermError, UsageError

BODY = b"nightly report \nFrom the backup host\ntab\t\nend\n"
SENDER = "alice@example.org"


def _account(pki, **kw):
    fields = dict(name="t", crypto="smime", smime_cert=pki.cert("alice"), smime_key=pki.key("alice"))
    fields.update(kw)
    return config.Account(**fields)


def _compose(tmp_path, signing=True, attach=True):
    files = []
    if attach:
        data = tmp_path / "data.bin"
        data.write_bytes(bytes(range(256)) * 40)
        files.append(str(data))
    return message.compose(
        BODY,
        subject="report",
        sender=("", SENDER),
        to=[("", "bob@example.org")],
        attachments=files,
        signing=signing,
        date="Thu, 03 Dec 2026 12:00:00 +0000",
        message_id="<1@example.org>",
    )


def _wrap(msg, acct, sign, encrypt, rcpts=("bob@example.org",), certs=(), env=None):
    s = secure.settings(acct, sign=sign, encrypt=encrypt, recipient_certs=certs, env=env)
    out = secure.wrap(msg, s, SENDER, list(rcpts))
    raw = out.as_bytes()
    assert out.sizes()[0] == len(raw)  # the size told before sending is the size sent
    return raw


def _split(raw):
    """``(signed content as CRLF bytes, the signature part's decoded bytes)`` of a multipart/signed."""
    b = re.search(rb'boundary="([^"]+)"', raw).group(1)
    start = raw.index(b"--" + b + b"\n") + len(b) + 3
    end = raw.index(b"\n--" + b + b"\n", start)
    content = raw[start:end].replace(b"\n", b"\r\n")
    sig = email.message_from_bytes(raw, policy=email.policy.default).get_payload()[1]
    return content, sig.get_payload(decode=True)


def _tool(argv, inp=None, env=None):
    return subprocess.run(argv, input=inp, capture_output=True, env=env, timeout=60)


# -- the encoding a signature needs ---------------------------------------------------------


class Pieces(message.Data):
    """Data read in the given pieces: lines cut anywhere."""

    def __init__(self, pieces):
        super().__init__(b"".join(pieces))
        self.pieces = pieces

    def __iter__(self):
        return iter(self.pieces)


@pytest.mark.parametrize(
    "pieces, safe",
    [
        ([b"a\nFro", b"m here\n"], False),
        ([b"From x\n"], False),
        ([b"abc ", b"\nd\n"], False),
        ([b"abc\t\n"], False),
        ([b"abc \nd"], False),
        ([b"a From b\n", b" x\n"], True),
        ([b"Fromage\n>From x\n"], True),
    ],
)
def test_signing_safe_sees_lines_across_cuts(pieces, safe):
    st = message.scan(Pieces(pieces))
    assert st.seven_bit_safe is pieces[-1].endswith(b"\n")
    assert st.signing_safe is safe


def test_signed_text_goes_quoted_printable_unsigned_stays_7bit(tmp_path):
    signed = _compose(tmp_path, signing=True, attach=False).as_bytes()
    plain = _compose(tmp_path, signing=False, attach=False).as_bytes()
    assert b"Content-Transfer-Encoding: 7bit\n\n" + BODY in plain
    assert b"Content-Transfer-Encoding: quoted-printable\n\nnightly report=20\n=46rom the backup host\ntab=09\n" in (
        signed
    )


# -- S/MIME ------------------------------------------------------------------------------------


def test_smime_signed_verifies_with_openssl_cms_smime_and_gpgsm(pki, gpgsm_home, tmp_path):
    raw = _wrap(_compose(tmp_path), _account(pki), sign=True, encrypt=False)
    head = raw.split(b"\n\n", 1)[0]
    assert b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\n micalg=sha-256;' in head
    assert b"From: alice@example.org\nTo: bob@example.org\nSubject: report\n" in head  # outside the signature
    f = tmp_path / "signed.eml"
    f.write_bytes(raw)
    r = _tool(["openssl", "cms", "-verify", "-in", str(f), "-CAfile", pki.ca, "-out", os.devnull])
    assert (r.returncode, r.stderr) == (0, b"CMS Verification successful\n")
    r = _tool(["openssl", "smime", "-verify", "-in", str(f), "-CAfile", pki.ca, "-out", os.devnull])
    assert (r.returncode, r.stderr) == (0, b"Verification successful\n")
    content, sig = _split(raw)
    (tmp_path / "c").write_bytes(content)
    (tmp_path / "s").write_bytes(sig)
    r = _tool(
        ["gpgsm", "--batch", "--status-fd", "1", "--verify", str(tmp_path / "s"), str(tmp_path / "c")],
        env=gpgsm_home.env,
    )
    assert r.returncode == 0, r.stderr
    assert b"[GNUPG:] GOODSIG " in r.stdout and b"[GNUPG:] TRUST_FULLY" in r.stdout
    # the signer's certificate is in the signature: openssl needs nothing but the CA
    r = _tool(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "s")])
    assert b"CN=alice" in r.stdout and b"sha256" in r.stdout


def _mutate(raw, old, new):
    assert old in raw, old
    return raw.replace(old, new, 1)


@pytest.mark.parametrize(
    "old, new",
    [
        (b"=46rom the backup host", b"=46rom the backup hosT"),  # the body
        (b"Content-Type: text/plain; charset=us-ascii\n", b"Content-Type: text/plain; charset=utf-8\n"),  # a header
        (b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8h"),
    ],
    ids=["body", "header-inside", "attachment"],
)
def test_smime_tampering_detected_by_openssl(pki, tmp_path, old, new):
    raw = _wrap(_compose(tmp_path), _account(pki), sign=True, encrypt=False)
    f = tmp_path / "t.eml"
    f.write_bytes(_mutate(raw, old, new))
    r = _tool(["openssl", "cms", "-verify", "-in", str(f), "-CAfile", pki.ca, "-out", os.devnull])
    assert r.returncode == 4 and b"CMS Verification failure" in r.stderr


def test_smime_signature_byte_changed_detected(pki, tmp_path):
    raw = _wrap(_compose(tmp_path), _account(pki), sign=True, encrypt=False)
    content, sig = _split(raw)
    bad = bytearray(sig)
    bad[-10] ^= 1  # in the signature value, at the end of the SignerInfo
    (tmp_path / "c").write_bytes(content)
    (tmp_path / "s").write_bytes(bytes(bad))
    r = _tool(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "s"),
         "-content", str(tmp_path / "c"), "-CAfile", pki.ca, "-out", os.devnull]
    )  # fmt: skip
    assert r.returncode == 4 and b"CMS Verification failure" in r.stderr


def _s_nail(tmp_path, mbox, command, extra=()):
    env = dict(os.environ, HOME=str(tmp_path), MAILRC=os.devnull, LC_ALL="C")
    argv = ["s-nail", "-n", "-R", "-Sv15-compat", "-Sexpandaddr", *extra, "-f", str(mbox)]
    return _tool(argv, inp=command.encode(), env=env)


def test_smime_signed_and_encrypted_through_an_mbox_read_by_s_nail_openssl_gpgsm(pki, gpgsm_home, tmp_path):
    """From and trailing-space lines survive the mbox: s-nail decrypts and verifies what pymail kept."""
    msg = _compose(tmp_path)
    signed = _wrap(msg, _account(pki), sign=True, encrypt=False)
    both = _wrap(msg, _account(pki), sign=True, encrypt=True, certs=[pki.cert("bob")])
    mbox = tmp_path / "box"
    for raw in (signed, both):
        transport.deliver_mbox(str(mbox), [raw], SENDER, ["bob@example.org"])
    assert b"\n>From " not in mbox.read_bytes()  # nothing for the mbox to quote
    r = _s_nail(tmp_path, mbox, "verify 1\n", ["-Ssmime-ca-file=" + pki.ca])
    assert b"Message 1 was verified successfully" in r.stdout + r.stderr, r
    out = tmp_path / "dec.mbox"
    r = _s_nail(tmp_path, mbox, "decrypt 2 %s\n" % out, ["-Ssmime-sign-cert=" + pki.both("bob")])
    assert out.exists(), r
    r = _s_nail(tmp_path, out, "verify 1\n", ["-Ssmime-ca-file=" + pki.ca])
    assert b"Message 1 was verified successfully" in r.stdout + r.stderr, r
    # openssl: decrypts to the multipart/signed entity, which verifies
    f = tmp_path / "both.eml"
    f.write_bytes(both)
    assert b"smime-type=enveloped-data" in both.split(b"\n\n", 1)[0]
    r = _tool(["openssl", "smime", "-decrypt", "-in", str(f), "-recip", pki.cert("bob"), "-inkey", pki.key("bob")])
    assert r.returncode == 0 and r.stdout.startswith(b"Content-Type: multipart/signed;")
    (tmp_path / "inner").write_bytes(r.stdout)
    r = _tool(["openssl", "cms", "-verify", "-in", str(tmp_path / "inner"), "-CAfile", pki.ca, "-out", os.devnull])
    assert (r.returncode, r.stderr) == (0, b"CMS Verification successful\n")
    # gpgsm (mutt through gpgme) decrypts the base64 body
    (tmp_path / "body").write_bytes(both.split(b"\n\n", 1)[1])
    r = _tool(
        ["gpgsm", "--batch", "--status-fd", "2", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
         "--assume-base64", "--decrypt", str(tmp_path / "body")],
        inp=b"%s\n" % pki.P12_PASSWORD.encode(),
        env=gpgsm_home.env,
    )  # fmt: skip
    assert r.returncode == 0 and b"DECRYPTION_OKAY" in r.stderr
    assert r.stdout.replace(b"\r\n", b"\n").startswith(b"Content-Type: multipart/signed;")
    # and nobody else can: alice was not a recipient
    r = _tool(["openssl", "cms", "-decrypt", "-in", str(f), "-recip", pki.cert("alice"), "-inkey", pki.key("alice")])
    assert r.returncode == 4 and b"Error decrypting CMS" in r.stderr


def test_smime_encrypted_only_is_the_entity_itself(pki, tmp_path):
    msg = _compose(tmp_path, signing=False, attach=False)
    raw = _wrap(msg, _account(pki, smime_cert=None, smime_key=None), sign=False, encrypt=True, certs=[pki.cert("bob")])
    f = tmp_path / "e.eml"
    f.write_bytes(raw)
    r = _tool(["openssl", "cms", "-decrypt", "-in", str(f), "-recip", pki.cert("bob"), "-inkey", pki.key("bob")])
    assert r.returncode == 0
    assert r.stdout == b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + (
        BODY.replace(b"\n", b"\r\n")
    )
    r = _tool(["openssl", "cms", "-cmsout", "-print", "-in", str(f)])
    assert b"aes-256-cbc" in r.stdout


def test_recipient_certificates_from_the_directory_and_options(pki, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "bob@example.org.pem").write_bytes(open(pki.cert("bob"), "rb").read())
    acct = _account(pki, smime_certs=str(certs))
    s = secure.settings(acct, sign=False, encrypt=True, recipient_certs=[pki.cert("alice")])
    keys = secure.recipient_keys(s, ["bob@example.org", "Alice@Example.org"])
    assert keys == {"bob@example.org": str(certs / "bob@example.org.pem"), "Alice@Example.org": pki.cert("alice")}
    with pytest.raises(ConfigError) as e:
        secure.recipient_keys(s, ["carol@example.org"])
    assert str(e.value) == (
        "no S/MIME certificate for carol@example.org: give --recipient-cert FILE, or put it in %s: "
        "not sent (never in clear)" % (certs / "carol@example.org.pem")
    )
    (certs / "carol@example.org.pem").write_bytes(open(pki.cert("eve"), "rb").read())  # someone else's
    with pytest.raises(ConfigError) as e:
        secure.recipient_keys(s, ["carol@example.org"])
    assert str(e.value) == (
        "the certificate %s is not carol@example.org's (it names another address): not sent (never in clear)"
        % (certs / "carol@example.org.pem")
    )
    with pytest.raises(UsageError) as e:
        secure.settings(acct, sign=True, encrypt=False, recipient_certs=[pki.cert("bob")])
    assert str(e.value) == "--recipient-cert is for --encrypt: the message is not encrypted"
    s = secure.settings(acct, sign=False, encrypt=True, recipient_certs=[pki.cert("old")])
    with pytest.raises(ConfigError) as e:
        secure.recipient_keys(s, ["old@example.org"])
    assert re.fullmatch(
        re.escape("--recipient-cert %s (for old@example.org) has expired (" % pki.cert("old"))
        + r"\d{4}-\d\d-\d\d\): ask for a new one: not sent \(never in clear\)",
        str(e.value),
    ), str(e.value)


def test_settings_say_what_is_missing(pki):
    with pytest.raises(ConfigError) as e:
        secure.settings(config.Account(name="t"), sign=True)
    assert str(e.value) == (
        '--sign: say how: --smime or --openpgp, or crypto = "smime" or "openpgp" in the account (see pipemail.conf(5))'
    )
    with pytest.raises(ConfigError) as e:
        secure.settings(config.Account(name="t", crypto="smime"), sign=True)
    assert str(e.value) == (
        "S/MIME signing needs smime_cert (your certificate and its private key, PEM) in the account 't' "
        "(see pipemail.conf(5))"
    )
    with pytest.raises(UsageError) as e:
        secure.settings(config.Account(name="t"), kind="openpgp")
    assert str(e.value) == "--openpgp says how to sign or encrypt: give --sign or --encrypt with it"
    assert secure.settings(config.Account(name="t")) is None


def test_smime_key_passphrase_from_key_password_command(pki, tmp_path):
    msg = _compose(tmp_path, attach=False)
    good = _account(pki, smime_key=pki.key_enc("alice"), key_password_command="echo alice-secret")
    raw = _wrap(msg, good, sign=True, encrypt=False)
    f = tmp_path / "s.eml"
    f.write_bytes(raw)
    r = _tool(["openssl", "cms", "-verify", "-in", str(f), "-CAfile", pki.ca, "-out", os.devnull])
    assert r.returncode == 0
    bad = _account(pki, smime_key=pki.key_enc("alice"), key_password_command="echo wrong")
    with pytest.raises(NoPermError) as e:
        _wrap(msg, bad, sign=True, encrypt=False)
    assert str(e.value) == "cannot read the S/MIME key %s: wrong passphrase (from key_password_command)" % (
        pki.key_enc("alice")
    )
    with pytest.raises(ConfigError) as e:
        _wrap(msg, _account(pki, smime_key=pki.key_enc("alice")), sign=True, encrypt=False)
    assert "it is encrypted; set key_password_command" in str(e.value)


# -- OpenPGP -----------------------------------------------------------------------------------


def _pgp(**kw):
    return config.Account(name="p", crypto="openpgp", **kw)


def test_openpgp_signed_verifies_with_gpg_and_tampering_is_caught(gnupg, tmp_path):
    raw = _wrap(_compose(tmp_path), _pgp(), sign=True, encrypt=False, env=gnupg.env)
    head = raw.split(b"\n\n", 1)[0]
    assert b'Content-Type: multipart/signed; protocol="application/pgp-signature";\n micalg=pgp-sha256;' in head
    content, sig = _split(raw)
    (tmp_path / "sig").write_bytes(sig)
    argv = ["gpg", "--batch", "--status-fd", "1", "--verify", str(tmp_path / "sig"), "-"]
    r = _tool(argv, inp=content, env=gnupg.env)
    assert r.returncode == 0 and b"[GNUPG:] GOODSIG " in r.stdout and b"Alice <alice@example.org>" in r.stdout
    assert (" %s " % gnupg.fpr("Alice")).encode() in r.stdout.split(b"VALIDSIG", 1)[1]
    for old, new in ((b"=46rom the backup host", b"=46rom the backup hosT"), (b"charset=us-ascii", b"charset=utf-8")):
        r = _tool(argv, inp=content.replace(old, new, 1), env=gnupg.env)
        assert r.returncode == 1 and b"[GNUPG:] BADSIG " in r.stdout


def test_openpgp_signed_and_encrypted_only_bob_reads_it(gnupg, tmp_path):
    raw = _wrap(_compose(tmp_path), _pgp(), sign=True, encrypt=True, env=gnupg.env)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/encrypted"
    assert msg.get_param("protocol") == "application/pgp-encrypted"
    version, payload = msg.get_payload()
    assert (
        version.get_content_type() == "application/pgp-encrypted"
        and version.get_payload(decode=True) == b"Version: 1\n"
    )
    armored = payload.get_payload(decode=True)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\n")
    r = _tool(["gpg", "--batch", "--status-fd", "2", "--decrypt"], inp=armored, env=gnupg.env)
    assert r.returncode == 0 and b"DECRYPTION_OKAY" in r.stderr
    assert re.search(rb"ENC_TO [0-9A-F]+ ", r.stderr)
    inner = r.stdout
    assert inner.startswith(b"Content-Type: multipart/signed;")
    content, sig = _split(inner.replace(b"\r\n", b"\n"))
    (tmp_path / "sig").write_bytes(sig)
    r = _tool(
        ["gpg", "--batch", "--status-fd", "1", "--verify", str(tmp_path / "sig"), "-"], inp=content, env=gnupg.env
    )
    assert r.returncode == 0 and b"GOODSIG" in r.stdout
    # encrypted to bob alone: a keyring without bob's secret key cannot read it
    home = gnupg.copy(tmp_path)
    try:
        home.gpg("--delete-secret-keys", "--yes", gnupg.fpr("Bob"), check=True)
        r = _tool(["gpg", "--batch", "--status-fd", "2", "--decrypt"], inp=armored, env=home.env)
        assert r.returncode == 2 and b"DECRYPTION_FAILED" in r.stderr
    finally:
        home.kill_agent()


def test_openpgp_missing_key_and_passphrases(gnupg, tmp_path):
    msg = _compose(tmp_path, attach=False)
    s = secure.settings(_pgp(), encrypt=True, env=gnupg.env)
    with pytest.raises(ConfigError) as e:
        secure.recipient_keys(s, ["bob@example.org", "nobody@example.org"])
    assert str(e.value) == (
        "no OpenPGP key for nobody@example.org in your GnuPG keyring that can encrypt (gpg --import it; "
        "not expired or revoked): not sent (never in clear)"
    )
    home = gnupg.copy(tmp_path)
    try:
        wrong = _pgp(pgp_key="<carol@example.org>", key_password_command="echo nope")
        with pytest.raises(NoPermError) as e:
            _wrap(msg, wrong, sign=True, encrypt=False, env=home.env)
        assert str(e.value) == (
            "cannot use the OpenPGP key <carol@example.org>: wrong passphrase (from key_password_command)"
        )
        with pytest.raises(ConfigError) as e:
            _wrap(msg, _pgp(pgp_key="<carol@example.org>"), sign=True, encrypt=False, env=home.env)
        assert "needs a passphrase: set key_password_command" in str(e.value)
        right = _pgp(pgp_key="<carol@example.org>", key_password_command="echo carol-secret")
        raw = _wrap(msg, right, sign=True, encrypt=False, env=home.env)
        content, sig = _split(raw)
        (tmp_path / "sig").write_bytes(sig)
        r = _tool(
            ["gpg", "--batch", "--status-fd", "1", "--verify", str(tmp_path / "sig"), "-"], inp=content, env=home.env
        )
        assert b"GOODSIG" in r.stdout and b"Carol <carol@example.org>" in r.stdout
    finally:
        home.kill_agent()


def test_base64_signature_decodes_to_der(pki, tmp_path):
    raw = _wrap(_compose(tmp_path, attach=False), _account(pki), sign=True, encrypt=False)
    _content, sig = _split(raw)
    assert sig[:1] == b"\x30" and base64.b64encode(sig)[:8] in raw


def test_openpgp_unknown_signer_and_uncertified_recipient(gnupg, tmp_path):
    msg = _compose(tmp_path, attach=False)
    with pytest.raises(ConfigError) as e:
        _wrap(msg, _pgp(pgp_key="<nobody@example.org>"), sign=True, encrypt=False, env=gnupg.env)
    assert str(e.value) == (
        "no OpenPGP secret key for <nobody@example.org> in your GnuPG keyring: set pgp_key in the account "
        "(see pipemail.conf(5))"
    )
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    env = dict(gnupg.env, GNUPGHOME=str(other))
    subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
         "Dan <dan@example.org>", "future-default", "default", "never"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    public = subprocess.run(["gpg", "--export", "dan@example.org"], env=env, check=True, capture_output=True).stdout
    subprocess.run(["gpgconf", "--kill", "all"], env=env)
    home = gnupg.copy(tmp_path)
    try:
        home.gpg("--import", input=public, check=True)  # imported, never certified
        s = secure.settings(_pgp(), encrypt=True, env=home.env)
        with pytest.raises(ConfigError) as e:
            secure.wrap(msg, s, SENDER, ["dan@example.org"])
        assert str(e.value) == (
            "cannot encrypt to dan@example.org: the key is not certified: there is no assurance it belongs to "
            "that address (certify it: gpg --lsign-key): not sent (never in clear)"
        )
    finally:
        home.kill_agent()


def test_smime_encrypted_for_each_recipient_read_by_pipemail_cms(pki, tmp_path):
    import io

    from pipemail import cms

    msg = _compose(tmp_path, attach=False)
    acct = _account(pki, smime_cert=None, smime_key=None)
    raw = _wrap(msg, acct, sign=False, encrypt=True, rcpts=("bob@example.org", "dave@example.org"),
                certs=[pki.cert("bob"), pki.cert("dave")])  # fmt: skip
    der = base64.b64decode(raw.split(b"\n\n", 1)[1])
    _outer, entity = msg.entity()
    for name in ("bob", "dave"):
        out = io.BytesIO()
        assert cms.decrypt([der], out, cert=pki.cert(name), key=pki.key(name)) == "aes-256-cbc"
        assert out.getvalue() == entity.as_bytes().replace(b"\n", b"\r\n")
    with pytest.raises(cms.NotForUs):
        cms.decrypt([der], io.BytesIO(), cert=pki.cert("alice"), key=pki.key("alice"))


def test_a_certificate_is_for_its_san_addresses_not_its_subjects_email_address(tmp_path):
    # RFC 8550 (3): the subject's emailAddress counts only when there is no SAN rfc822Name; the
    # sender picks recipients' certificates by the rule the reader (pymime) checks signers by
    from pipemail import crypto

    cert = tmp_path / "two.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
        + ["-keyout", str(tmp_path / "two.key"), "-out", str(cert), "-subj", "/CN=Two/emailAddress=Mallory@example.org"]
        + ["-addext", "subjectAltName=email:alice@example.org"],
        check=True,
        capture_output=True,
    )
    assert crypto.cert_emails(crypto.load_cert(str(cert))) == ["alice@example.org"]
    acct = config.Account(name="t", crypto="smime")
    s = secure.settings(acct, sign=False, encrypt=True, recipient_certs=[str(cert)])
    assert secure.recipient_keys(s, ["alice@example.org"]) == {"alice@example.org": str(cert)}
    with pytest.raises(ConfigError) as e:
        secure.recipient_keys(s, ["mallory@example.org"])
    assert str(e.value).startswith("no S/MIME certificate for mallory@example.org: give --recipient-cert FILE")
