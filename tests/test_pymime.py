"""pymime verify / decrypt against mail made by the real clients: openssl smime and cms, s-nail,
gpgsm (as mutt uses it through gpgme) and gpg (RFC 3156 messages assembled here)."""

import base64
import os
import re
import subprocess
import threading

import pytest

from conftest import tool

SUBJECT = b"Subject: nightly report\n"


def sh(*argv, input=None, env=None):
    proc = subprocess.run(argv, input=input, env=env, capture_output=True)
    assert proc.returncode == 0, "%s exited %d: %s" % (argv[0], proc.returncode, proc.stderr.decode()[-2000:])
    return proc.stdout


def inner_entity(text=b"hello world\nFrom the cron job\nline with trailing space \n"):
    return b'Content-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: 7bit\n\n' + text


def fingerprint(pki, name):
    out = sh("openssl", "x509", "-in", pki.cert(name), "-noout", "-fingerprint", "-sha256").decode()
    return out.strip().split("=", 1)[1]


def good_smime(pki, name, label="S/MIME", prefix=""):
    subject = "emailAddress=%s@example.org,CN=%s" % (name, name)
    return "pymime: %sgood %s signature from %s@example.org (subject %s, SHA-256 fingerprint %s)\n" % (
        prefix,
        label,
        name,
        subject,
        fingerprint(pki, name),
    )


def smime_signed(pki, name, entity=None, sender=None, nodetach=False):
    """A message signed by ``name`` with ``openssl smime -sign`` (detached multipart/signed)."""
    entity = inner_entity() if entity is None else entity
    argv = ["openssl", "smime", "-sign", "-signer", pki.cert(name), "-inkey", pki.key(name), "-md", "sha256"]
    argv += ["-from", sender or "%s@example.org" % name, "-to", "bob@example.org", "-subject", "nightly report"]
    if nodetach:
        argv.append("-nodetach")
    return sh(*argv, input=entity)


def smime_encrypted(pki, entity, *recipients, cipher="-aes256"):
    certs = [pki.cert(r) for r in recipients]
    argv = ["openssl", "smime", "-encrypt", cipher, "-from", "alice@example.org", "-to", "bob@example.org"]
    return sh(*argv, "-subject", "nightly report", *certs, input=entity)


def pkcs7_mime(der, smime_type="enveloped-data"):
    """An application/pkcs7-mime message around ``der`` (as mail clients write it)."""
    params = b" smime-type=%s;" % smime_type.encode() if smime_type else b""
    ctype = b"Content-Type: application/pkcs7-mime;" + params + b' name="smime.p7m"\n'
    head = b"From: alice@example.org\nTo: bob@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n" + ctype
    disposition = b'Content-Disposition: attachment; filename="smime.p7m"\n\n'
    return head + b"Content-Transfer-Encoding: base64\n" + disposition + base64.encodebytes(der)


def multipart_signed(entity, protocol, micalg, sig_part, sender=b"alice@example.org"):
    return (
        b"From: " + sender + b"\nTo: bob@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/signed; micalg=" + micalg + b';\n protocol="' + protocol + b'"; boundary="=b1"\n\n'
        b"This is a signed message\n--=b1\n" + entity + b"\n--=b1\n" + sig_part + b"\n--=b1--\n"
    )


def crlf(data):
    return data.replace(b"\n", b"\r\n")


def pgp_signed(gnupg, signer, entity=None, sender=None, env=None):
    entity = inner_entity() if entity is None else entity
    env = env or gnupg.env
    argv = ["gpg", "--batch", "--no-tty", "-u", signer, "--digest-algo", "SHA256", "--armor", "--detach-sign"]
    sig = sh(*argv, input=crlf(entity), env=env)
    part = b'Content-Type: application/pgp-signature; name="signature.asc"\n\n' + sig
    return multipart_signed(entity, b"application/pgp-signature", b"pgp-sha256", part, (sender or signer).encode())


def pgp_encrypted(armored, sender=b"alice@example.org"):
    return (
        b"From: " + sender + b"\nTo: bob@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n boundary="=e1"\n\n'
        b"This is an OpenPGP/MIME encrypted message\n--=e1\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n"
        b'--=e1\nContent-Type: application/octet-stream; name="encrypted.asc"\n\n' + armored + b"\n--=e1--\n"
    )


def decrypted_form(entity):
    """What pymime decrypt writes for our messages made by openssl smime -encrypt / pkcs7_mime / pgp_encrypted."""
    return b"From: alice@example.org\nTo: bob@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n" + entity


@pytest.fixture
def noconfig(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    return {"PIPEMAIL_CONFIG": str(path)}


# -- S/MIME verify -----------------------------------------------------------------------------


def test_good_smime_signature_from_openssl_smime(run, pki):
    msg = smime_signed(pki, "alice")
    assert b"\r\n" in msg  # openssl writes the signed part in CRLF, the rest in LF
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    assert (r.returncode, r.stderr, r.stdout) == (0, good_smime(pki, "alice"), msg)


def test_good_smime_signature_openssl_cms_stream_lf(run, pki):
    """openssl cms -sign -stream (pkcs7-signature, not x-), read back with LF line ends as an mbox stores it."""
    argv = ["openssl", "cms", "-sign", "-stream", "-signer", pki.cert("alice"), "-inkey", pki.key("alice")]
    msg = sh(*argv, "-md", "sha256", "-from", "alice@example.org", "-subject", "x", input=inner_entity())
    assert b'protocol="application/pkcs7-signature"' in msg
    lf = msg.replace(b"\r\n", b"\n")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=lf)
    assert (r.returncode, r.stderr, r.stdout) == (0, good_smime(pki, "alice"), lf)


def test_good_opaque_signed_data(run, pki):
    msg = smime_signed(pki, "alice", nodetach=True)
    assert b"smime-type=signed-data" in msg
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    assert (r.returncode, r.stderr, r.stdout) == (0, good_smime(pki, "alice", "S/MIME (opaque)"), msg)


def test_big_opaque_signed_data_is_refused(run):
    """openssl holds an opaque signed message whole: pymime refuses one over 16 MB, with words."""
    body = (b"A" * 76 + b"\n") * (17 * 1024 * 1024 * 4 // 3 // 76 + 1)
    msg = pkcs7_mime(b"", "signed-data") + body
    r = run("pymime", "verify", input=msg)
    line = (
        "pymime: not verified: an opaque S/MIME signed message over 16 MB (openssl holds it whole to verify it; "
        "a detached signature, multipart/signed, has no limit)\n"
    )
    assert (r.returncode, r.stderr, len(r.stdout)) == (65, line, len(msg))
    assert r.stdout == msg


@pytest.mark.parametrize(
    "signer, crl, words",
    [
        ("carol", False, "the signer's certificate is not for email protection (no emailProtection purpose)"),
        ("old", False, "the signer's certificate has expired"),
        ("dave", True, "the signer's certificate is revoked (by the CRL given)"),
        (
            "eve",
            False,
            "untrusted signer: no CA given trusts its certificate (unable to get local issuer certificate)",
        ),
    ],
)
def test_smime_signer_refused(run, pki, signer, crl, words):
    msg = smime_signed(pki, signer)
    args = ["--crl-file", pki.crl] if crl else []
    r = run("pymime", "verify", "--ca-file", pki.ca, *args, input=msg)
    line = "pymime: BAD S/MIME signature: %s (signer emailAddress=%s@example.org,CN=%s)\n" % (words, signer, signer)
    assert (r.returncode, r.stderr, r.stdout) == (65, line, msg)


def test_ca_dir_with_and_without_crl(run, pki, tmp_path):
    """--ca-dir (hashed by openssl rehash), alone and with --crl-file."""
    import shutil

    cas = tmp_path / "cas"
    cas.mkdir()
    shutil.copy(pki.ca, cas / "ca.pem")
    sh("openssl", "rehash", str(cas))
    msg = smime_signed(pki, "dave")
    r = run("pymime", "verify", "--ca-dir", cas, input=msg)
    assert (r.returncode, r.stderr, r.stdout) == (0, good_smime(pki, "dave"), msg)
    r = run("pymime", "verify", "--ca-dir", cas, "--crl-file", pki.crl, input=msg)
    line = "pymime: BAD S/MIME signature: the signer's certificate is revoked (by the CRL given) (signer "
    assert (r.returncode, r.stderr) == (65, line + "emailAddress=dave@example.org,CN=dave)\n")


def test_crl_file_without_the_signers_ca(run, pki):
    msg = smime_signed(pki, "eve")
    r = run("pymime", "verify", "--ca-file", pki.other_ca, "--crl-file", pki.crl, input=msg)
    line = "pymime: BAD S/MIME signature: no CRL from the signer's CA in the CRL file given (signer "
    assert (r.returncode, r.stderr, r.stdout) == (65, line + "emailAddress=eve@example.org,CN=eve)\n", msg)


def test_revoked_signer_good_without_crl(run, pki):
    """Nothing is fetched: without --crl-file a revocation is not known (the man page says so)."""
    msg = smime_signed(pki, "dave")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    assert (r.returncode, r.stderr) == (0, good_smime(pki, "dave"))


def test_smime_signer_not_the_from_address(run, pki):
    msg = smime_signed(pki, "alice", sender="root@example.org")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    line = (
        "pymime: signer's address is not the From address: S/MIME signed as alice@example.org, From: root@example.org\n"
    )
    assert (r.returncode, r.stderr, r.stdout) == (65, line, msg)


def test_from_address_with_control_bytes_is_shown_escaped(run, pki):
    """An address from the message reaches stderr escaped: one line, no terminal control bytes."""
    msg = smime_signed(pki, "alice").replace(b"From: alice@example.org", b"From: <ro\x1bot@example.org>")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    line = (
        "pymime: signer's address is not the From address: S/MIME signed as alice@example.org, "
        "From: ro\\x1bot@example.org\n"
    )
    assert (r.returncode, r.stderr, r.stdout) == (65, line, msg)


def test_unsigned_and_encrypted_messages_are_not_signed(run, pki):
    plain = b"From: alice@example.org\nSubject: x\n\nhello\n"
    r = run("pymime", "verify", "--ca-file", pki.ca, input=plain)
    assert (r.returncode, r.stderr, r.stdout) == (65, "pymime: not signed\n", plain)
    enc = smime_encrypted(pki, inner_entity(), "bob")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=enc)
    assert (r.returncode, r.stderr, r.stdout) == (
        65,
        "pymime: not signed: the message is encrypted (pymime decrypt reads it)\n",
        enc,
    )


TAMPERED = "pymime: BAD S/MIME signature: the signed content was changed after signing (digest mismatch) (signer "


def _attachment_entity():
    data = base64.encodebytes(bytes(range(256)) * 4)
    return (
        b'Content-Type: multipart/mixed; boundary="=m1"\n\n--=m1\nContent-Type: text/plain\n\nsee attached\n'
        b'--=m1\nContent-Type: application/octet-stream; name="a.bin"\nContent-Transfer-Encoding: base64\n\n'
        + data
        + b"--=m1--\n"
    )


@pytest.mark.parametrize(
    "where, old, new",
    [
        ("body", b"hello world", b"hello World"),
        (
            "attachment",
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",
            b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8h",
        ),
        ("header", b'charset="us-ascii"', b'charset="iso-8859-1"'),
    ],
)
def test_smime_tampered_content(run, pki, where, old, new):
    entity = _attachment_entity() if where == "attachment" else inner_entity()
    msg = smime_signed(pki, "alice", entity)
    assert msg.count(old) == 1
    bad = msg.replace(old, new)
    r = run("pymime", "verify", "--ca-file", pki.ca, input=bad)
    line = TAMPERED + "emailAddress=alice@example.org,CN=alice)\n"
    assert (r.returncode, r.stderr, r.stdout) == (65, line, bad)


def _sig_span(msg):
    start = msg.index(b'filename="smime.p7s"') + len(b'filename="smime.p7s"\n\n')
    return start, msg.index(b"\n\n", start)


def test_smime_tampered_signature(run, pki):
    msg = smime_signed(pki, "alice")
    start, end = _sig_span(msg)
    der = bytearray(base64.b64decode(msg[start:end]))
    der[-10] ^= 1  # inside the RSA signature value
    bad = msg[:start] + base64.encodebytes(bytes(der)) + msg[end + 1 :]
    r = run("pymime", "verify", "--ca-file", pki.ca, input=bad)
    line = "pymime: BAD S/MIME signature: the signature itself does not verify (damaged or forged) (signer "
    assert (r.returncode, r.stderr, r.stdout) == (65, line + "emailAddress=alice@example.org,CN=alice)\n", bad)
    der[-10] ^= 1
    der[5] ^= 0x40  # the structure itself
    bad = msg[:start] + base64.encodebytes(bytes(der)) + msg[end + 1 :]
    r = run("pymime", "verify", "--ca-file", pki.ca, input=bad)
    line = "pymime: BAD S/MIME signature: the signature is damaged (not a readable CMS structure)\n"
    assert (r.returncode, r.stderr) == (65, line)


def test_snail_signed_message(run, pki, tmp_path):
    """s-nail's multipart/signed: micalg=SHA256, a folded Content-Type, a signed part with an empty header."""
    box = tmp_path / "sent.mbox"
    argv = [tool("s-nail"), "-n", "-Sv15-compat", "-Ssmime-sign", "-Ssmime-sign-cert=" + pki.both("alice")]
    argv += ["-Ssmime-sign-digest=sha256", "-Sfrom=alice@example.org", "-Smta=test://%s" % box, "-s", "report"]
    subprocess.run([*argv, "bob@example.org"], input=b"report body\n", check=True, capture_output=True)
    mbox = box.read_bytes()
    assert b"micalg=SHA256" in mbox
    r = run("pymime", "verify", "--ca-file", pki.ca, input=mbox)
    assert (r.returncode, r.stderr, r.stdout) == (0, good_smime(pki, "alice", prefix="message 1: "), mbox)


def test_gpgsm_detached_signature(run, pki, gpgsm_home, tmp_path):
    """As mutt signs through gpgme: gpgsm --detach-sign over the CRLF entity, assembled into multipart/signed."""
    entity = inner_entity()
    data = tmp_path / "entity.crlf"
    data.write_bytes(crlf(entity))
    argv = [tool("gpgsm"), "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    sig = sh(*argv, "-u", "alice@example.org", "--detach-sign", data, input=b"pw\n", env=gpgsm_home.env)
    part = b'Content-Type: application/pkcs7-signature; name="smime.p7s"\nContent-Transfer-Encoding: base64\n\n'
    msg = multipart_signed(entity, b"application/pkcs7-signature", b"sha-256", part + base64.encodebytes(sig))
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    assert (r.returncode, r.stderr, r.stdout) == (0, good_smime(pki, "alice"), msg)


def test_missing_ca_file_is_66(run, pki, tmp_path):
    r = run("pymime", "verify", "--ca-file", tmp_path / "nope.pem", input=b"x")
    assert (r.returncode, r.stdout) == (66, b"")
    assert r.stderr == "pymime: cannot read CA file %s: No such file or directory\n" % (tmp_path / "nope.pem")


# -- OpenPGP verify ----------------------------------------------------------------------------


def good_pgp(gnupg, name, prefix=""):
    fpr = gnupg.fpr(name)
    return "pymime: %sgood OpenPGP signature from %s <%s@example.org> (key %s, fingerprint %s)\n" % (
        prefix,
        name,
        name.lower(),
        fpr[-16:],
        fpr,
    )


def test_good_openpgp_signature(run, gnupg):
    msg = pgp_signed(gnupg, "alice@example.org")
    r = run("pymime", "verify", input=msg, env={"GNUPGHOME": gnupg.home})
    assert (r.returncode, r.stderr, r.stdout) == (0, good_pgp(gnupg, "Alice"), msg)
    r = run("pymime", "verify", "--smime", input=msg, env={"GNUPGHOME": gnupg.home})
    line = "pymime: not verified: signed with OpenPGP, and only S/MIME was asked for\n"
    assert (r.returncode, r.stderr, r.stdout) == (65, line, msg)


def test_openpgp_tampered_and_wrong_sender(run, gnupg):
    msg = pgp_signed(gnupg, "alice@example.org")
    bad = msg.replace(b"hello world", b"hello World")
    r = run("pymime", "verify", "--openpgp", input=bad, env={"GNUPGHOME": gnupg.home})
    fpr = gnupg.fpr("Alice")
    line = "pymime: BAD OpenPGP signature: the signed content was changed after signing (from Alice "
    assert (r.returncode, r.stdout) == (65, bad)
    assert r.stderr == line + "<alice@example.org> (key %s))\n" % fpr[-16:]
    wrong = pgp_signed(gnupg, "alice@example.org", sender="bob@example.org")
    r = run("pymime", "verify", input=wrong, env={"GNUPGHOME": gnupg.home})
    line = "pymime: signer's address is not the From address: OpenPGP key of alice@example.org, From: bob@example.org\n"
    assert (r.returncode, r.stderr, r.stdout) == (65, line, wrong)


def test_openpgp_unknown_and_untrusted_signer(run, gnupg, tmp_path):
    msg = pgp_signed(gnupg, "alice@example.org")
    home = tmp_path / "empty"
    home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(home)}
    try:
        r = run("pymime", "verify", input=msg, env=env)
        fpr = gnupg.fpr("Alice")
        line = "pymime: BAD OpenPGP signature: unknown signer: no public key %s in the GnuPG keyring\n" % fpr[-16:]
        assert (r.returncode, r.stderr, r.stdout) == (65, line, msg)
        public = gnupg.gpg("--export", "alice@example.org", check=True).stdout
        sh("gpg", "--batch", "--import", input=public, env=dict(os.environ, **env))
        r = run("pymime", "verify", input=msg, env=env)
        line = (
            "pymime: BAD OpenPGP signature: untrusted signer: the key is not certified as its user's in the "
            "GnuPG keyring (trust undefined) (Alice <alice@example.org> (key %s, fingerprint %s))\n" % (fpr[-16:], fpr)
        )
        assert (r.returncode, r.stderr, r.stdout) == (65, line, msg)
    finally:  # the agent gpg started for that home goes with it
        subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, **env), capture_output=True)


@pytest.fixture(scope="module")
def oddkeys(tmp_path_factory, gnupg):
    """A GNUPGHOME with an expired key (Old), a revoked one (Rev) and one whose secret key only it has
    (Zed), and messages they signed or were encrypted to; its agent stopped at the end."""
    home = tmp_path_factory.mktemp("oddgpg") / "g"
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    gpg = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        sh(*gpg, "--faked-system-time", "20200101T000000", "--quick-gen-key", "Old <old@example.org>", "ed25519",
           "sign", "1d", env=env)  # fmt: skip
        sh(*gpg, "--quick-gen-key", "Rev <rev@example.org>", "ed25519", "sign", "never", env=env)
        sh(*gpg, "--quick-gen-key", "Zed <zed@example.org>", "future-default", "default", "never", env=env)
        entity = inner_entity()
        signed = {}
        for name, extra in (("old", ["--faked-system-time", "20200101T010000"]), ("rev", [])):
            sig = sh(
                *gpg, *extra, "-u", "%s@example.org" % name, "--armor", "--detach-sign", input=crlf(entity), env=env
            )
            part = b'Content-Type: application/pgp-signature; name="signature.asc"\n\n' + sig
            signed[name] = multipart_signed(
                entity, b"application/pgp-signature", b"pgp-sha256", part, b"%s@example.org" % name.encode()
            )
        listing = sh("gpg", "--with-colons", "--list-keys", "<rev@example.org>", env=env).decode()
        fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
        rev = (home / "openpgp-revocs.d" / (fpr + ".rev")).read_text().replace(":-----BEGIN", "-----BEGIN")
        sh("gpg", "--batch", "--import", input=rev.encode(), env=env)
        armored = sh(*gpg, "--armor", "--encrypt", "-r", "zed@example.org", input=crlf(entity), env=env)
        sh("gpg", "--batch", "--import", input=gnupg.gpg("--export", "bob@example.org").stdout, env=env)
        argv = ["--trust-model", "always", "--armor", "-u", "zed@example.org", "--sign", "--encrypt"]
        by_zed = sh(*gpg, *argv, "-r", "bob@example.org", input=crlf(entity), env=env)
        yield {
            "env": {"GNUPGHOME": str(home)},
            "signed": signed,
            "to_zed": pgp_encrypted(armored),
            "by_zed": pgp_encrypted(by_zed),
        }
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)


def test_openpgp_expired_and_revoked_keys(run, oddkeys):
    """gpg exits 0 for both: the verdict comes from its status lines."""
    r = run("pymime", "verify", input=oddkeys["signed"]["old"], env=oddkeys["env"])
    assert r.returncode == 65
    assert re.fullmatch(
        r"pymime: BAD OpenPGP signature: the signer's key has expired \(Old <old@example.org> "
        r"\(key [0-9A-F]{16}, fingerprint [0-9A-F]{40}\)\)\n",
        r.stderr,
    ), r.stderr
    r = run("pymime", "verify", input=oddkeys["signed"]["rev"], env=oddkeys["env"])
    assert r.returncode == 65
    assert re.fullmatch(
        r"pymime: BAD OpenPGP signature: the signer's key is revoked \(Rev <rev@example.org> "
        r"\(key [0-9A-F]{16}, fingerprint [0-9A-F]{40}\)\)\n",
        r.stderr,
    ), r.stderr
    assert r.stdout == oddkeys["signed"]["rev"]


# -- decrypt -----------------------------------------------------------------------------------


def test_decrypt_openssl_smime(run, pki, noconfig):
    entity = inner_entity()
    msg = smime_encrypted(pki, entity, "bob")
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=msg, env=noconfig)
    want = b"To: bob@example.org\nFrom: alice@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n" + entity
    assert (r.returncode, r.stderr, r.stdout) == (0, "pymime: decrypted (S/MIME, aes-256-cbc)\n", want)


@pytest.mark.parametrize("maker", ["cms-stream-aes128", "gpgsm", "s-nail"])
def test_decrypt_other_clients(run, pki, gpgsm_home, tmp_path, noconfig, maker):
    entity = inner_entity()
    if maker == "cms-stream-aes128":
        argv = ["openssl", "cms", "-encrypt", "-stream", "-binary", "-aes128", "-outform", "DER", pki.cert("bob")]
        msg, want, cipher = pkcs7_mime(sh(*argv, input=crlf(entity))), decrypted_form(entity), "aes-128-cbc"
    elif maker == "gpgsm":
        der = sh(tool("gpgsm"), "--batch", "-r", "bob@example.org", "--encrypt", input=crlf(entity), env=gpgsm_home.env)
        msg, want, cipher = pkcs7_mime(der, None), decrypted_form(entity), "aes-128-cbc"
    else:
        box = tmp_path / "sent.mbox"
        argv = [tool("s-nail"), "-n", "-Sv15-compat", "-Ssmime-encrypt-bob@example.org=" + pki.cert("bob")]
        argv += ["-Sfrom=alice@example.org", "-Smta=test://%s" % box, "-s", "report", "bob@example.org"]
        subprocess.run(argv, input=b"report body\n", check=True, capture_output=True)
        msg, cipher = box.read_bytes(), "aes-128-cbc"  # s-nail's default
        assert b'Content-Type: application/pkcs7-mime; name="smime.p7m"' in msg  # no smime-type
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=msg, env=noconfig)
    if maker == "s-nail":
        assert (r.returncode, r.stderr) == (0, "pymime: message 1: decrypted (S/MIME, %s)\n" % cipher)
        assert b"application/pkcs7-mime" not in r.stdout and b"\n\nreport body\n\n" in r.stdout
        assert r.stdout.startswith(msg[: msg.index(b"\n") + 1])  # the From_ line kept
    else:
        assert (r.returncode, r.stderr, r.stdout) == (0, "pymime: decrypted (S/MIME, %s)\n" % cipher, want)


def test_decrypt_not_for_us_and_no_key(run, pki, noconfig):
    msg = smime_encrypted(pki, inner_entity(), "bob")
    r = run("pymime", "decrypt", "--cert", pki.cert("alice"), "--key", pki.key("alice"), input=msg, env=noconfig)
    assert (r.returncode, r.stdout) == (65, msg)
    assert r.stderr.startswith(
        "pymime: not decrypted: S/MIME encrypted, not to our certificate (it is for: issuer CN=pipemail Test CA "
        "serial 0x"
    )
    r = run("pymime", "decrypt", input=msg, env=noconfig)
    line = (
        "pymime: not decrypted: S/MIME encrypted, and no key is configured: give --cert FILE --key FILE, or set "
        "smime_cert and smime_key in the account\n"
    )
    assert (r.returncode, r.stderr, r.stdout) == (78, line, msg)


def test_decrypt_with_account_key_and_passphrase(run, pki, tmp_path):
    entity = inner_entity()
    msg = smime_encrypted(pki, entity, "alice")
    conf = tmp_path / "config.toml"
    for command, code in (("echo alice-secret", 0), ("echo wrong", 78)):
        conf.write_text(
            '[accounts.me]\nsmime_cert = "%s"\nsmime_key = "%s"\nkey_password_command = "%s"\n'
            % (pki.cert("alice"), pki.key_enc("alice"), command)
        )
        r = run("pymime", "decrypt", input=msg, env={"PIPEMAIL_CONFIG": str(conf)})
        if code == 0:
            want = b"To: bob@example.org\nFrom: alice@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n" + entity
            assert (r.returncode, r.stderr, r.stdout) == (0, "pymime: decrypted (S/MIME, aes-256-cbc)\n", want)
        else:
            line = "pymime: cannot decrypt the private key %s: wrong passphrase\n" % pki.key_enc("alice")
            assert (r.returncode, r.stderr, r.stdout) == (78, line, msg)


def test_decrypt_signed_then_encrypted_smime(run, pki, noconfig):
    entity = inner_entity()
    signed = sh(
        "openssl", "smime", "-sign", "-signer", pki.cert("alice"), "-inkey", pki.key("alice"), "-md", "sha256",
        input=entity,
    )  # fmt: skip
    msg = smime_encrypted(pki, signed, "bob")
    args = ["--cert", pki.cert("bob"), "--key", pki.key("bob"), "--ca-file", pki.ca]
    r = run("pymime", "decrypt", *args, input=msg, env=noconfig)
    assert r.returncode == 0
    assert r.stderr == "pymime: decrypted (S/MIME, aes-256-cbc)\n" + good_smime(pki, "alice")
    assert r.stdout.count(b"MIME-Version: 1.0\n") == 1
    r2 = run("pymime", "verify", "--ca-file", pki.ca, input=r.stdout)  # the output still verifies
    assert (r2.returncode, r2.stderr) == (0, good_smime(pki, "alice"))
    bad = r.stdout.replace(b"hello world", b"hello World")
    r3 = run("pymime", "verify", "--ca-file", pki.ca, input=bad)
    assert (r3.returncode, r3.stderr) == (65, TAMPERED + "emailAddress=alice@example.org,CN=alice)\n")


def test_decrypt_openpgp_signed_and_encrypted(run, gnupg, noconfig):
    entity = inner_entity()
    argv = ["--armor", "--sign", "-u", "alice@example.org", "--encrypt", "-r", "bob@example.org"]
    msg = pgp_encrypted(gnupg.gpg(*argv, input=crlf(entity), check=True).stdout)
    r = run("pymime", "decrypt", input=msg, env=dict(noconfig, GNUPGHOME=gnupg.home))
    assert (r.returncode, r.stdout) == (0, decrypted_form(entity))
    assert r.stderr == "pymime: decrypted (OpenPGP)\n" + good_pgp(gnupg, "Alice")


def test_decrypt_openpgp_with_passphrase(run, gnupg, tmp_path):
    entity = inner_entity()
    msg = pgp_encrypted(gnupg.gpg("--armor", "--encrypt", "-r", "carol@example.org", input=crlf(entity)).stdout)
    conf = tmp_path / "config.toml"
    conf.write_text('[accounts.me]\nkey_password_command = "echo carol-secret"\n')
    r = run("pymime", "decrypt", input=msg, env={"PIPEMAIL_CONFIG": str(conf), "GNUPGHOME": gnupg.home})
    assert (r.returncode, r.stderr, r.stdout) == (0, "pymime: decrypted (OpenPGP)\n", decrypted_form(entity))


def test_decrypt_openpgp_signed_by_unknown_key(run, gnupg, oddkeys, noconfig):
    """gpg exits 2 (no public key for the signature) yet decrypted: written decrypted, the signature refused."""
    r = run("pymime", "decrypt", input=oddkeys["by_zed"], env=dict(noconfig, GNUPGHOME=gnupg.home))
    assert (r.returncode, r.stdout) == (65, decrypted_form(inner_entity()))
    assert re.fullmatch(
        r"pymime: decrypted \(OpenPGP\)\n"
        r"pymime: BAD OpenPGP signature: unknown signer: no public key [0-9A-F]{16} in the GnuPG keyring\n",
        r.stderr,
    ), r.stderr


def test_decrypt_openpgp_not_for_us(run, gnupg, oddkeys, noconfig):
    msg = oddkeys["to_zed"]
    r = run("pymime", "decrypt", input=msg, env=dict(noconfig, GNUPGHOME=gnupg.home))
    assert (r.returncode, r.stdout) == (65, msg)
    assert re.fullmatch(
        r"pymime: not decrypted: OpenPGP encrypted, not to a secret key in the GnuPG keyring "
        r"\(to key [0-9A-F]{16}\)\n",
        r.stderr,
    ), r.stderr


# -- mbox streams ------------------------------------------------------------------------------


def test_mbox_of_three_passes_through(run, pki, noconfig):
    entity = inner_entity()
    signed = smime_signed(pki, "alice")
    encrypted = smime_encrypted(pki, entity, "bob")
    plain = b"From: alice@example.org\nSubject: plain\n\nFrom the start of a line\n>From quoted\n"
    mbox = b""
    for m in (signed, encrypted, plain):
        mbox += (
            b"From alice@example.org Thu Dec  3 12:00:00 2026\n"
            + m.replace(b"\nFrom ", b"\n>From ").replace(b"\n>From quoted", b"\n>>From quoted")
            + b"\n"
        )
    r = run("pymime", "verify", "--ca-file", pki.ca, input=mbox)
    assert r.returncode == 65
    assert r.stdout == mbox
    assert r.stderr == (
        good_smime(pki, "alice", prefix="message 1: ")
        + "pymime: message 2: not signed: the message is encrypted (pymime decrypt reads it)\n"
        + "pymime: message 3: not signed\n"
    )
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=mbox, env=noconfig)
    clear = b"To: bob@example.org\nFrom: alice@example.org\n" + SUBJECT + b"MIME-Version: 1.0\n" + entity
    parts = mbox.split(b"From alice@example.org Thu Dec  3 12:00:00 2026\n")
    expected = (
        b"From alice@example.org Thu Dec  3 12:00:00 2026\n"
        + parts[1]
        + b"From alice@example.org Thu Dec  3 12:00:00 2026\n"
        + clear.replace(b"\nFrom ", b"\n>From ")
        + b"\n"
        + b"From alice@example.org Thu Dec  3 12:00:00 2026\n"
        + parts[3]
    )
    assert (r.returncode, r.stderr, r.stdout) == (0, "pymime: message 2: decrypted (S/MIME, aes-256-cbc)\n", expected)


def test_reject_keeps_what_is_not_good_out_of_the_pipeline(run, pki, noconfig, tmp_path):
    """--reject: a pipeline after pymime reads only good mail; the others are appended to an mbox, none lost."""
    signed = smime_signed(pki, "alice")
    forged = smime_signed(pki, "alice").replace(b"From: alice@example.org", b"From: ceo@example.org")
    plain = b"From: ceo@example.org\nSubject: plain\n\nFrom the start of a line\n"
    line = b"From alice@example.org Thu Dec  3 12:00:00 2026\n"
    mails = [line + m.replace(b"\nFrom ", b"\n>From ") + b"\n" for m in (signed, forged, plain)]
    rejected = tmp_path / "rejected.mbox"
    rejected.write_bytes(b"From old Thu Dec  3 11:00:00 2026\nSubject: kept before\n\nold\n")
    r = run("pymime", "verify", "--ca-file", pki.ca, "--reject", rejected, input=b"".join(mails))
    assert r.returncode == 65
    assert r.stdout == mails[0]
    lines = r.stderr.splitlines()
    assert lines[0] == good_smime(pki, "alice", prefix="message 1: ").rstrip("\n")
    assert lines[1].startswith("pymime: message 2: ") and "ceo@example.org" in lines[1]
    assert lines[2:] == [
        "pymime: message 2: put in %s" % rejected,
        "pymime: message 3: not signed",
        "pymime: message 3: put in %s" % rejected,
    ]
    old = b"From old Thu Dec  3 11:00:00 2026\nSubject: kept before\n\nold\n"
    assert rejected.read_bytes() == old + b"\n" + mails[1] + mails[2]
    # one message, not an mbox: rejected with a From_ line of its own; nothing on stdout
    one = tmp_path / "one.mbox"
    r = run("pymime", "verify", "--ca-file", pki.ca, "--reject", one, input=plain)
    assert (r.returncode, r.stdout) == (65, b"")
    assert one.read_bytes().startswith(b"From MAILER-DAEMON ")
    assert one.read_bytes().split(b"\n", 1)[1] == plain.replace(b"\nFrom ", b"\n>From ") + b"\n"
    # a good one goes through and the reject mbox is not even made
    none = tmp_path / "none.mbox"
    r = run("pymime", "verify", "--ca-file", pki.ca, "--reject", none, input=signed)
    assert (r.returncode, r.stdout, none.exists()) == (0, signed, False)


# -- memory: 100 MB each way under 64 MB -------------------------------------------------------

BIG_MB = 100


def _big_entity_chunks():
    """A 100 MB inner entity (a base64 attachment, LF lines), made block by block, never held whole."""
    yield b'Content-Type: application/octet-stream; name="backup.tar"\nContent-Transfer-Encoding: base64\n\n'
    block = base64.encodebytes(os.urandom(57 * 13797))  # about 1 MiB of 76-column lines
    for i in range(BIG_MB):
        yield block[:-5] + b"%04d\n" % i  # no two blocks alike


def test_verify_100mb_in_bounded_memory(pki, tmp_path):
    from peak import LIMIT_MB, peak

    path = tmp_path / "big.eml"
    sign = subprocess.Popen(
        ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-signer", pki.cert("alice"), "-inkey",
         pki.key("alice"), "-outform", "DER"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    entity = tmp_path / "entity"
    with open(entity, "wb") as f:
        for chunk in _big_entity_chunks():
            f.write(chunk)
            sign.stdin.write(crlf(chunk))
    sign.stdin.close()
    der = sign.stdout.read()
    assert sign.wait() == 0
    with open(path, "wb") as out, open(entity, "rb") as f:
        part = b'Content-Type: application/pkcs7-signature; name="smime.p7s"\nContent-Transfer-Encoding: base64\n\n'
        msg = multipart_signed(b"\0", b"application/pkcs7-signature", b"sha-256", part + base64.encodebytes(der))
        before, after = msg.split(b"\0")
        out.write(before)
        while chunk := f.read(1 << 20):
            out.write(chunk)
        out.write(after)
    entity.unlink()
    assert path.stat().st_size > BIG_MB * 1_000_000
    result = peak("pymime", "verify", "--ca-file", pki.ca, stdin=path)
    assert (result.returncode, result.stderr) == (0, good_smime(pki, "alice")), result
    assert result.mb < LIMIT_MB, result


def test_decrypt_100mb_in_bounded_memory(pki, tmp_path, noconfig):
    import hashlib

    from peak import LIMIT_MB, peak

    path = tmp_path / "big.eml"
    argv = ["openssl", "cms", "-encrypt", "-stream", "-binary", "-aes256", "-outform", "DER", pki.cert("bob")]
    head = pkcs7_mime(b"")
    want = hashlib.sha256(decrypted_form(b""))
    with open(path, "wb") as out:
        out.write(head)
        enc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed():
            for chunk in _big_entity_chunks():
                want.update(chunk)
                enc.stdin.write(crlf(chunk))
            enc.stdin.close()

        feeder = threading.Thread(target=feed)
        feeder.start()
        left = b""
        while data := enc.stdout.read(1 << 20):
            data = left + data
            cut = len(data) - len(data) % 57
            out.write(base64.encodebytes(data[:cut]))
            left = data[cut:]
        out.write(base64.encodebytes(left))
        feeder.join()
        assert enc.wait() == 0
    clear = tmp_path / "clear.eml"
    args = ["decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob")]
    result = peak("pymime", *args, stdin=path, stdout=clear, env=noconfig)
    assert (result.returncode, result.stderr) == (0, "pymime: decrypted (S/MIME, aes-256-cbc)\n"), result
    assert result.mb < LIMIT_MB, result
    got = hashlib.sha256()
    with open(clear, "rb") as f:
        while chunk := f.read(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == want.hexdigest()


# -- bad input and missing tools ---------------------------------------------------------------


def test_empty_input_is_65(run):
    r = run("pymime", "verify", input=b"")
    assert (r.returncode, r.stderr, r.stdout) == (65, "pymime: no message on standard input\n", b"")


def test_missing_openssl_keeps_the_message(run, pki, tmp_path):
    msg = smime_signed(pki, "alice")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg, env={"PATH": str(tmp_path)})
    line = "pymime: openssl is not installed (Debian: apt install openssl)\n"
    assert (r.returncode, r.stderr, r.stdout) == (69, line, msg)


def test_truncated_encrypted_message_is_written_unchanged(run, pki, noconfig):
    msg = smime_encrypted(pki, inner_entity(b"x" * 5000 + b"\n"), "bob")
    cut = msg[: len(msg) - 2000] + b"\n"
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=cut, env=noconfig)
    assert (r.returncode, r.stdout) == (65, cut)
    assert r.stderr.startswith("pymime: not decrypted: S/MIME: ") and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize(
    "mode, protocol, part, line",
    [
        (
            "verify",
            b"application/pkcs7-signature",
            b"Content-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nAAAAA\n",
            "BAD S/MIME signature: the signature part is damaged (bad base64: it is cut short)",
        ),
        (
            "verify",
            b"application/pgp-signature",
            b"Content-Type: application/pgp-signature\n\nnot a signature\n",
            "BAD OpenPGP signature: not a readable signature (gpg: no valid OpenPGP data found.)",
        ),
        (
            "decrypt",
            b"application/pgp-encrypted",
            b"Content-Type: application/octet-stream\n\nnot encrypted\n",
            "not decrypted: OpenPGP: gpg could not decrypt it (gpg: no valid OpenPGP data found.)",
        ),
    ],
    ids=["smime-bad-base64", "pgp-garbage-signature", "pgp-garbage-encrypted"],
)
def test_damaged_signature_or_encrypted_part(run, gnupg, noconfig, mode, protocol, part, line):
    kind = b"encrypted" if mode == "decrypt" else b"signed"
    first = b"Content-Type: application/pgp-encrypted\n\nVersion: 1\n" if mode == "decrypt" else inner_entity()
    msg = (
        b"From: alice@example.org\nMIME-Version: 1.0\nContent-Type: multipart/" + kind + b'; protocol="' + protocol
        + b'"; boundary="=b1"\n\n--=b1\n' + first + b"\n--=b1\n" + part + b"\n--=b1--\n"
    )  # fmt: skip
    r = run("pymime", mode, input=msg, env=dict(noconfig, GNUPGHOME=gnupg.home))
    assert (r.returncode, r.stderr, r.stdout) == (65, "pymime: %s\n" % line, msg)


# -- what a forger or a careless sender tries (each once accepted) -------------------------


def _signed_by_alice(pki, head_from=b"From: alice@example.org\n"):
    """alice's openssl smime -sign message with its From header(s) replaced by ``head_from``."""
    msg = smime_signed(pki, "alice")
    assert msg.startswith(b"To: bob@example.org\nFrom: alice@example.org\n")
    return b"To: bob@example.org\n" + head_from + msg[len(b"To: bob@example.org\nFrom: alice@example.org\n") :]


# A From header the signer does not own is accepted when another From address is the signer's.


def test_second_from_field_is_not_good(run, pki):
    msg = _signed_by_alice(pki, b"From: ceo@example.org\nFrom: alice@example.org\n")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    assert r.returncode == 65, r.stderr
    assert "good" not in r.stderr and r.stdout == msg


def test_from_with_two_addresses_is_not_good(run, pki):
    msg = _signed_by_alice(pki, b"From: ceo@example.org, alice@example.org\n")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg)
    assert r.returncode == 65, r.stderr
    assert "good" not in r.stderr


def test_openpgp_second_from_field_is_not_good(run, gnupg):
    msg = pgp_signed(gnupg, "alice@example.org")
    msg = msg.replace(b"From: alice@example.org\n", b"From: ceo@example.org\nFrom: alice@example.org\n", 1)
    r = run("pymime", "verify", input=msg, env={"GNUPGHOME": gnupg.home})
    assert r.returncode == 65, r.stderr
    assert "good" not in r.stderr


# Signature wrapping: a part after the signature part, which no signature covers.


def test_unsigned_third_part_in_multipart_signed_is_not_good(run, pki):
    msg = smime_signed(pki, "alice")
    boundary = msg.split(b'boundary="', 1)[1].split(b'"', 1)[0]
    close = b"\n--" + boundary + b"--"
    extra = b"\n--" + boundary + b"\nContent-Type: text/plain\n\nPay 1000 EUR to mallory, account 666.\n"
    assert msg.count(close) == 1
    wrapped = msg.replace(close, extra + close, 1)
    r = run("pymime", "verify", "--ca-file", pki.ca, input=wrapped)
    assert r.returncode == 65, r.stderr
    assert "good" not in r.stderr and r.stdout == wrapped


# Two Content-Type fields: pymime reads the first, a reader may take the last.


def test_second_content_type_field_is_not_good(run, pki):
    msg = _signed_by_alice(pki)
    head, body = msg.split(b"\n\n", 1)
    wrapped = head + b"\nContent-Type: text/plain\n\nPay 1000 EUR to mallory.\n\n" + body
    # the preamble now carries text that a reader taking the last Content-Type shows as the body
    r = run("pymime", "verify", "--ca-file", pki.ca, input=wrapped)
    assert r.returncode == 65, r.stderr
    assert "good" not in r.stderr


# A boundary given in RFC 2231 form with a non-ASCII character: traceback, exit 70, mbox cut.


def _rfc2231_signed():
    return (
        b"From: alice@example.org\nMIME-Version: 1.0\nContent-Type: multipart/signed;"
        b" protocol=\"application/pkcs7-signature\"; boundary*=utf-8''%C3%A9\n\n"
        b"--\xc3\xa9\nContent-Type: text/plain\n\nhi\n--\xc3\xa9\n"
        b"Content-Type: application/pkcs7-signature\n\nAAAA\n--\xc3\xa9--\n"
    )


def test_rfc2231_boundary_is_one_line_not_a_traceback(run):
    msg = _rfc2231_signed()
    r = run("pymime", "verify", input=msg)
    assert (r.returncode, r.stdout) == (65, msg), r.stderr
    assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr, r.stderr


def test_rfc2231_boundary_drops_nothing_from_an_mbox(run):
    plain = b"From: bob@example.org\nSubject: after\n\nstill here\n"
    mbox = b"From a@b Thu Dec  3 12:00:00 2026\n" + _rfc2231_signed() + b"\n"
    mbox += b"From a@b Thu Dec  3 12:00:01 2026\n" + plain + b"\n"
    r = run("pymime", "verify", input=mbox)
    assert (r.returncode, r.stdout) == (65, mbox), r.stderr


def test_rfc2231_boundary_in_decrypt_is_one_line(run, noconfig):
    msg = (
        b"From: alice@example.org\nMIME-Version: 1.0\nContent-Type: multipart/encrypted;"
        b" protocol=\"application/pgp-encrypted\"; boundary*=utf-8''%C3%A9\n\n--\xc3\xa9--\n"
    )
    r = run("pymime", "decrypt", input=msg, env=noconfig)
    assert (r.returncode, r.stdout) == (65, msg), r.stderr
    assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr, r.stderr


# decrypt merges the encrypted entity's whole header into the outer one: two From, two Subject.


def test_decrypt_refuses_a_third_part_or_a_second_content_type(run, gnupg, noconfig):
    """multipart/encrypted holds two parts (RFC 3156): a third, not encrypted, would be dropped or
    taken for the message's; two Content-Type fields leave it to the reader which one counts."""
    armored = gnupg.gpg("--armor", "--encrypt", "-r", "bob@example.org", input=crlf(inner_entity()), check=True)
    msg = pgp_encrypted(armored.stdout)
    extra = msg.replace(b"\n--=e1--\n", b"\n--=e1\nContent-Type: text/plain\n\nPay mallory.\n--=e1--\n")
    r = run("pymime", "decrypt", input=extra, env=dict(noconfig, GNUPGHOME=gnupg.home))
    line = "pymime: not decrypted: malformed multipart/encrypted (it holds 3 parts)\n"
    assert (r.returncode, r.stderr, r.stdout) == (65, line, extra)
    twice = msg.replace(b'boundary="=e1"\n\n', b'boundary="=e1"\nContent-Type: text/plain\n\n', 1)
    assert twice != msg
    r = run("pymime", "decrypt", input=twice, env=dict(noconfig, GNUPGHOME=gnupg.home))
    line = "pymime: not decrypted: two Content-Type fields (a reader may take either)\n"
    assert (r.returncode, r.stderr, r.stdout) == (65, line, twice)


def test_decrypt_writes_one_from_and_one_subject(run, pki, noconfig):
    entity = b"From: ceo@example.org\nSubject: wire the money\nContent-Type: text/plain\n\nbody\n"
    msg = smime_encrypted(pki, entity, "bob")  # From: alice@example.org, Subject: nightly report outside
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=msg, env=noconfig)
    head = r.stdout.split(b"\n\n", 1)[0].lower()
    assert (head.count(b"\nfrom:") + head.startswith(b"from:"), head.count(b"\nsubject:")) == (1, 1), r.stdout


def test_decrypted_signature_is_not_good_for_another_outer_from(run, pki, noconfig):
    """Outer From: ceo (anyone can write it); inside: bob's good signature and a From: bob added."""
    signed = sh(
        "openssl", "smime", "-sign", "-signer", pki.cert("bob"), "-inkey", pki.key("bob"), "-md", "sha256",
        input=inner_entity(b"Wire the money.\n"),
    )  # fmt: skip
    msg = smime_encrypted(pki, b"From: bob@example.org\n" + signed, "alice")
    msg = msg.replace(b"From: alice@example.org\n", b"From: ceo@example.org\n", 1)
    args = ["--cert", pki.cert("alice"), "--key", pki.key("alice"), "--ca-file", pki.ca]
    r = run("pymime", "decrypt", *args, input=msg, env=noconfig)
    assert r.stdout.startswith(b"To: bob@example.org\nFrom: ceo@example.org\n")
    assert r.returncode == 65, r.stderr


# A decrypted entity of only header lines, without a final line break: a byte written twice.


def test_decrypted_header_only_entity_keeps_its_bytes(run, pki, noconfig):
    msg = smime_encrypted(pki, b"Content-Type: text/plain", "bob")
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=msg, env=noconfig)
    assert r.returncode == 0, r.stderr
    assert b"text/plainn" not in r.stdout
    assert r.stdout.endswith(b"\nContent-Type: text/plain\n\n") or r.stdout.endswith(b"\nContent-Type: text/plain"), (
        r.stdout
    )


# OpenPGP: a user id of the signer's key that nobody certified counts as the signer's address.


def test_openpgp_user_id_nobody_certified_is_not_the_signers_address(run, gnupg, tmp_path):
    """Mallory's key is valid (alice certified "Mallory <mallory@example.org>"); Mallory added the user id
    "CEO <ceo@example.org>" himself, which gpg shows as [unknown].  A mail From: ceo signed by him is good."""
    home = gnupg.copy(tmp_path / "ring")
    own = tmp_path / "mallory"
    own.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(own))
    gpg = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        sh(*gpg, "--quick-gen-key", "Mallory <mallory@example.org>", "ed25519", "sign", "never", env=env)
        fpr = sh("gpg", "--with-colons", "-k", "mallory@example.org", env=env).decode()
        fpr = next(ln.split(":")[9] for ln in fpr.splitlines() if ln.startswith("fpr:"))
        sh(*gpg, "--quick-add-uid", fpr, "CEO <ceo@example.org>", env=env)
        entity = b"Content-Type: text/plain\n\nWire the money. -- the CEO\n"
        sig = sh(*gpg, "-u", fpr, "--digest-algo", "SHA256", "--armor", "--detach-sign", input=crlf(entity), env=env)
        home.gpg("--import", input=sh("gpg", "--export", fpr, env=env), check=True)
        uid = "Mallory <mallory@example.org>"
        home.gpg("--yes", "-u", "alice@example.org", "--quick-sign-key", fpr, uid, check=True)
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
    part = b'Content-Type: application/pgp-signature; name="signature.asc"\n\n' + sig
    msg = multipart_signed(entity, b"application/pgp-signature", b"pgp-sha256", part, b"CEO <ceo@example.org>")
    try:
        r = run("pymime", "verify", input=msg, env={"GNUPGHOME": home.home})
    finally:
        home.gpg("--batch", "--check-trustdb")
        subprocess.run(["gpgconf", "--kill", "all"], env=home.env, capture_output=True)
    assert r.returncode == 65, r.stderr
    assert "good" not in r.stderr


# --ca-file / --ca-dir do not replace openssl's default store: every system CA is trusted besides.


def test_ca_file_is_the_only_trust(run, pki, tmp_path):
    """The system store is stood for by $SSL_CERT_DIR (openssl's default directory, /etc/ssl/certs)
    holding another CA; --ca-file names the company CA only, so eve (of the other CA) is untrusted."""
    system = tmp_path / "system-certs"
    system.mkdir()
    (system / "other-ca.pem").write_bytes(open(pki.other_ca, "rb").read())
    sh("openssl", "rehash", str(system))
    msg = smime_signed(pki, "eve")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg, env={"SSL_CERT_DIR": str(system)})
    assert r.returncode == 65, r.stderr
    assert "untrusted signer" in r.stderr


def test_ca_dir_is_the_only_trust(run, pki, tmp_path):
    company = tmp_path / "company"
    company.mkdir()
    (company / "ca.pem").write_bytes(open(pki.ca, "rb").read())
    sh("openssl", "rehash", str(company))
    msg = smime_signed(pki, "eve")
    r = run("pymime", "verify", "--ca-dir", company, input=msg, env={"SSL_CERT_FILE": pki.other_ca})
    assert r.returncode == 65, r.stderr
    assert "untrusted signer" in r.stderr


# A CA file that holds no certificate: every message is called "BAD signature: damaged".


def test_crl_file_alone_keeps_the_system_ca_file(run, pki):
    """--crl-file without --ca-file: the system store ($SSL_CERT_FILE here) still trusts, the CRL revokes."""
    env = {"SSL_CERT_FILE": pki.ca}
    r = run("pymime", "verify", "--crl-file", pki.crl, input=smime_signed(pki, "alice"), env=env)
    assert (r.returncode, r.stderr) == (0, good_smime(pki, "alice")), r.stderr
    r = run("pymime", "verify", "--crl-file", pki.crl, input=smime_signed(pki, "dave"), env=env)
    assert r.returncode == 65 and "revoked" in r.stderr, r.stderr


def test_crl_file_without_a_crl_is_said_once(run, pki):
    r = run("pymime", "verify", "--ca-file", pki.ca, "--crl-file", pki.ca, input=smime_signed(pki, "alice"))
    assert (r.returncode, r.stdout) == (78, b""), r.stderr
    assert r.stderr == "pymime: CRL file %s holds no CRL (PEM)\n" % pki.ca


def test_unusable_ca_file_is_said_once_not_blamed_on_the_signature(run, pki, tmp_path):
    junk = tmp_path / "ca.pem"
    junk.write_bytes(b"not a certificate\n")
    msg = smime_signed(pki, "alice")
    r = run("pymime", "verify", "--ca-file", junk, input=msg)
    assert r.returncode in (66, 78), r.stderr
    assert "BAD" not in r.stderr and "ca.pem" in r.stderr


# openssl or gpg killed (OOM killer, a timeout): the verdict says the signature is bad.


def test_killed_tool_is_not_a_bad_signature(run, pki, tmp_path):
    fake = tmp_path / "openssl"
    fake.write_text("#!/bin/sh\nkill -9 $$\n")
    fake.chmod(0o755)
    msg = smime_signed(pki, "alice")
    r = run("pymime", "verify", "--ca-file", pki.ca, input=msg, env={"PATH": "%s:%s" % (tmp_path, os.environ["PATH"])})
    assert (r.returncode, r.stderr, r.stdout) == (75, "pymime: not verified: openssl was killed by signal 9\n", msg)


def test_killed_gpg_is_not_a_bad_signature(run, gnupg, tmp_path):
    fake = tmp_path / "gpg"
    fake.write_text("#!/bin/sh\nkill -9 $$\n")
    fake.chmod(0o755)
    msg = pgp_signed(gnupg, "alice@example.org")
    env = {"PATH": "%s:%s" % (tmp_path, os.environ["PATH"]), "GNUPGHOME": gnupg.home}
    r = run("pymime", "verify", input=msg, env=env)
    assert (r.returncode, r.stderr, r.stdout) == (75, "pymime: not verified: gpg was killed by signal 9\n", msg)


# Two OpenPGP signatures, alice's good and bob's bad: the BAD line names alice.


def test_bad_openpgp_signature_line_names_the_bad_signer(run, gnupg):
    entity = inner_entity()
    good = gnupg.gpg("-u", "alice@example.org", "--detach-sign", input=crlf(entity), check=True).stdout
    bad = gnupg.gpg("-u", "bob@example.org", "--detach-sign", input=b"something else\r\n", check=True).stdout
    armored = gnupg.gpg("--enarmor", input=good + bad, check=True).stdout.replace(b"ARMORED FILE", b"SIGNATURE")
    part = b'Content-Type: application/pgp-signature; name="signature.asc"\n\n' + armored
    msg = multipart_signed(entity, b"application/pgp-signature", b"pgp-sha256", part)
    r = run("pymime", "verify", input=msg, env={"GNUPGHOME": gnupg.home})
    assert r.returncode == 65
    assert r.stderr.startswith("pymime: BAD OpenPGP signature") and r.stderr.count("\n") == 1, r.stderr
    assert gnupg.fpr("Bob")[-16:] in r.stderr and "Alice" not in r.stderr, r.stderr


# A CRLF message decrypted: its header block mixes CRLF (outer fields) and LF (inner fields).


def test_verify_fetches_no_key_from_the_network(run, gnupg, tmp_path):
    """A gpg.conf with auto-key-retrieve: a filter still asks no key server (one on loopback here)."""
    import http.server

    asked = []

    class KeyServer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    (home / "gpg.conf").write_text("auto-key-retrieve\nkeyserver hkp://127.0.0.1:%d\n" % server.server_port)
    msg = pgp_signed(gnupg, "alice@example.org")
    try:
        r = run("pymime", "verify", input=msg, env={"GNUPGHOME": str(home)})
    finally:
        server.shutdown()
        subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=str(home)), capture_output=True)
    assert asked == []
    line = "pymime: BAD OpenPGP signature: unknown signer: no public key %s in the GnuPG keyring\n"
    assert (r.returncode, r.stderr) == (65, line % gnupg.fpr("Alice")[-16:])


def _two_signatures(gnupg, first, second, sender):
    armored = gnupg.gpg("--enarmor", input=first + second, check=True).stdout.replace(b"ARMORED FILE", b"SIGNATURE")
    part = b'Content-Type: application/pgp-signature; name="signature.asc"\n\n' + armored
    return multipart_signed(inner_entity(), b"application/pgp-signature", b"pgp-sha256", part, sender)


def test_openpgp_every_signature_must_be_good(run, gnupg, oddkeys):
    """Two signatures: both must be good; the From address is then that of either signer."""
    entity = crlf(inner_entity())
    alice = gnupg.gpg("-u", "alice@example.org", "--detach-sign", input=entity, check=True).stdout
    bob = gnupg.gpg("-u", "bob@example.org", "--detach-sign", input=entity, check=True).stdout
    msg = _two_signatures(gnupg, alice, bob, b"bob@example.org")
    r = run("pymime", "verify", input=msg, env={"GNUPGHOME": gnupg.home})
    assert (r.returncode, r.stderr, r.stdout) == (0, good_pgp(gnupg, "Bob"), msg)
    argv = ["gpg", "--batch", "--no-tty", "-u", "zed@example.org", "--detach-sign"]
    zed = sh(*argv, input=entity, env=dict(os.environ, **oddkeys["env"]))
    msg = _two_signatures(gnupg, alice, zed, b"alice@example.org")
    r = run("pymime", "verify", input=msg, env={"GNUPGHOME": gnupg.home})
    assert r.returncode == 65 and r.stdout == msg
    assert re.fullmatch(
        r"pymime: BAD OpenPGP signature: unknown signer: no public key [0-9A-F]{16} in the GnuPG keyring\n", r.stderr
    ), r.stderr


def test_crlf_message_decrypted_has_one_kind_of_line_end(run, pki, noconfig):
    msg = crlf(smime_encrypted(pki, inner_entity(), "bob"))
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=msg, env=noconfig)
    assert r.returncode == 0, r.stderr
    lf_only = r.stdout.count(b"\n") - r.stdout.count(b"\r\n")
    assert r.stdout.count(b"\r\n") == 0 or lf_only == 0, r.stdout


# Encryption nested deeper than MAX_DEPTH: a still-encrypted message written with exit 0, without a word.


def test_encryption_nested_too_deep_is_not_good(run, pki, noconfig):
    entity = inner_entity()
    for _ in range(6):
        entity = sh("openssl", "smime", "-encrypt", "-aes128", pki.cert("bob"), input=entity)
    msg = b"From: alice@example.org\n" + entity
    r = run("pymime", "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob"), input=msg, env=noconfig)
    assert b"application/x-pkcs7-mime" in r.stdout  # still encrypted after the layers pymime opens
    assert r.returncode == 65, r.stderr
    assert "not decrypted" in r.stderr


# gpg's options come from the user's gpg.conf: with use-embedded-filename, decrypt writes a file the
#     sender names and the message goes out with an empty body, "decrypted", exit 0.


def test_decrypt_never_writes_the_file_the_sender_names(run, gnupg, tmp_path, noconfig):
    home = gnupg.copy(tmp_path / "ring")
    with open(os.path.join(home.home, "gpg.conf"), "a") as conf:
        conf.write("use-embedded-filename\n")
    work = tmp_path / "cwd"  # gpg writes the file's base name in the current directory
    work.mkdir()
    target = work / ".forward"
    entity = inner_entity(b"the report\n")
    argv = ["--armor", "--set-filename", str(target), "--encrypt", "-r", "bob@example.org"]
    armored = home.gpg(*argv, input=crlf(entity), check=True).stdout
    msg = (
        b"From: alice@example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="e1"\n\n'
        b"--e1\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n"
        b"--e1\nContent-Type: application/octet-stream\n\n" + armored + b"\n--e1--\n"
    )
    try:
        r = run("pymime", "decrypt", input=msg, cwd=work, env=dict(noconfig, GNUPGHOME=home.home))
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=home.env, capture_output=True)
    assert os.listdir(work) == []
    assert b"\nthe report\n" in r.stdout, r.stdout
