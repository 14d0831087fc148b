"""pymail --sign / --encrypt over a real SMTP server (aiosmtpd) and into mailboxes: the bytes
received, decrypted and verified by openssl and gpg; Bcc copies; --max-size parts; refusals
before anything is sent; a 100 MB attachment in bounded memory (tests/peak.py)."""

import os
import re
import subprocess

import lint
import pytest
from peak import LIMIT_MB, peak

SECRET = b"root password changed on db1\nFrom now on use the new one \n"


@pytest.fixture
def run(run):
    return lint.checking(run)


def _config(tmp_path, pki, extra=""):
    certs = tmp_path / "certs"
    certs.mkdir(exist_ok=True)
    for name in ("bob", "carol", "eve"):
        (certs / ("%s@example.org.pem" % name)).write_bytes(open(pki.cert(name), "rb").read())
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[accounts.me]\nfrom = "alice@example.org"\ncrypto = "smime"\nsmime_cert = "%s"\nsmime_key = "%s"\n'
        'smime_certs = "%s"\n%s' % (pki.cert("alice"), pki.key("alice"), certs, extra)
    )
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PIPEMAIL_CONFIG": str(cfg), "HOME": str(home)}


def _tool(argv, inp=None, env=None):
    return subprocess.run(argv, input=inp, capture_output=True, env=env, timeout=120)


def _decrypt(pki, name, raw, tmp_path):
    """openssl cms -decrypt of ``raw`` (CRLF, as received) with NAME's key: (rc, plaintext)."""
    f = tmp_path / "in.eml"
    f.write_bytes(raw)
    r = _tool(["openssl", "cms", "-decrypt", "-in", str(f), "-recip", pki.cert(name), "-inkey", pki.key(name)])
    return r.returncode, r.stdout


def _verifies(pki, entity, tmp_path):
    f = tmp_path / "signed.eml"
    f.write_bytes(entity)
    r = _tool(["openssl", "cms", "-verify", "-in", str(f), "-CAfile", pki.ca, "-out", os.devnull])
    return r.returncode == 0 and r.stderr == b"CMS Verification successful\n"


def test_smime_bcc_each_get_their_own_copy_decryptable_by_them_alone(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _config(tmp_path, pki)
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--sign", "--encrypt", "-s", "db1",
        "-b", "carol@example.org", "-b", "eve@example.org", "bob@example.org", input=SECRET, env=env,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    envelopes = [(m[0], m[1]) for m in srv.messages]
    assert envelopes == [
        ("alice@example.org", ["bob@example.org"]),
        ("alice@example.org", ["carol@example.org"]),
        ("alice@example.org", ["eve@example.org"]),
    ]
    for (_f, _rcpt, raw), name in zip(srv.messages, ("bob", "carol", "eve"), strict=True):
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert not re.search(rb"(?im)^bcc:", raw) and b"carol@" not in head and b"eve@" not in head  # nobody sees a Bcc
        assert b"Subject: db1\r\nMIME-Version: 1.0\r\n" in head and b"To: bob@example.org\r\n" in head
        assert b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;" in head
        assert SECRET[:20] not in raw
        for other in ("bob", "carol", "eve"):
            rc, plain = _decrypt(pki, other, raw, tmp_path)
            if other == name:
                assert rc == 0 and plain.startswith(b"Content-Type: multipart/signed;")
                assert b"root password changed on db1\r\n=46rom now on use the new one=20\r\n" in plain
                assert _verifies(pki, plain, tmp_path)
            else:
                assert rc == 4, (name, other)


def test_missing_recipient_certificate_refuses_before_anything_is_sent(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _config(tmp_path, pki)
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--encrypt", "-s", "x",
        "bob@example.org", "dave@example.org", input=SECRET, env=env,
    )  # fmt: skip
    assert r.returncode == 78
    assert r.stderr == (
        "pymail: no S/MIME certificate for dave@example.org: give --recipient-cert FILE, or put it in "
        "%s/certs/dave@example.org.pem: not sent (never in clear)\n" % tmp_path
    )
    assert srv.messages == [] and not (tmp_path / "home" / "dead.letter").exists()
    # given on the command line, it goes
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--encrypt", "--recipient-cert", pki.cert("dave"),
        "-s", "x", "bob@example.org", "dave@example.org", input=SECRET, env=env,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    ((_f, rcpts, raw),) = srv.messages
    assert rcpts == ["bob@example.org", "dave@example.org"]
    assert _decrypt(pki, "dave", raw, tmp_path)[0] == 0 and _decrypt(pki, "bob", raw, tmp_path)[0] == 0


def test_wrong_passphrase_is_77_and_nothing_is_sent(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _config(tmp_path, pki)
    cfg = open(env["PIPEMAIL_CONFIG"]).read().replace(pki.key("alice"), pki.key_enc("alice"))
    open(env["PIPEMAIL_CONFIG"], "w").write(cfg + 'key_password_command = "echo not-it"\n')
    # 3 MB: openssl fails on the key before it reads any of it, and exits with the pipe full
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--sign", "bob@example.org", input=SECRET * 50000, env=env
    )
    assert r.returncode == 77  # not killed by SIGPIPE (pymail restores its default for '| head')
    assert r.stderr == (
        "pymail: cannot read the S/MIME key %s: wrong passphrase (from key_password_command)\n" % pki.key_enc("alice")
    )
    assert srv.messages == [] and not (tmp_path / "home" / "dead.letter").exists()
    open(env["PIPEMAIL_CONFIG"], "w").write(cfg + 'key_password_command = "echo alice-secret"\nsign = true\n')
    r = run("pymail", "--account", "me", "--transport", srv.url, "bob@example.org", input=SECRET, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    ((_f, _r, raw),) = srv.messages
    assert _verifies(pki, raw, tmp_path)
    r = run("pymail", "--account", "me", "--transport", srv.url, "--no-sign", "bob@example.org", input=SECRET, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    assert b"multipart/signed" not in srv.messages[1][2]


def test_max_size_parts_each_signed_and_encrypted_within_the_size(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _config(tmp_path, pki)
    data = tmp_path / "dump.bin"
    data.write_bytes(os.urandom(150 * 1024))
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--sign", "--encrypt", "--max-size", "64K",
        "-a", data, "-s", "dump", "bob@example.org", input=b"the dump\n", env=env,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    assert len(srv.messages) >= 3
    inner = []
    for _f, rcpts, raw in srv.messages:
        assert rcpts == ["bob@example.org"] and len(raw) <= 64 * 1024
        rc, plain = _decrypt(pki, "bob", raw, tmp_path)
        assert rc == 0 and _verifies(pki, plain, tmp_path)
        outer = [ln for ln in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if not ln.lower().startswith(b"content-")]
        inner.append(b"\r\n".join(outer) + b"\r\n" + plain)  # as pymime decrypt writes it
    # the decrypted parts, as a reader gets them, unpack to the file
    box = tmp_path / "parts.mbox"
    with open(box, "wb") as f:
        for plain in inner:
            f.write(b"From alice@example.org Thu Dec  3 12:00:00 2026\n" + plain.replace(b"\r\n", b"\n") + b"\n")
    u = run("pyunshar", "-d", tmp_path / "out", box)
    assert (u.returncode, u.stderr) == (0, "")
    assert (tmp_path / "out" / "dump.bin").read_bytes() == data.read_bytes()


def _enc_subkey(gnupg, name):
    out = gnupg.gpg("--with-colons", "--list-keys", "<%s@example.org>" % name, check=True).stdout.decode()
    return next(ln.split(":")[4] for ln in out.splitlines() if ln.startswith("sub:"))


def test_openpgp_bcc_copies_and_t_mode(run, smtp_server, gnupg, tmp_path):
    srv = smtp_server()
    (tmp_path / "empty.toml").write_text("")
    env = dict(gnupg.env, HOME=str(tmp_path), PIPEMAIL_CONFIG=str(tmp_path / "empty.toml"))
    given = b"From: alice@example.org\nTo: bob@example.org\nBcc: alice@example.org\nSubject: t\n\nbody \nFrom x\n"
    r = run("pymail", "-t", "--transport", srv.url, "--openpgp", "--sign", "--encrypt", input=given, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    assert [m[1] for m in srv.messages] == [["bob@example.org"], ["alice@example.org"]]
    for (_f, _r, raw), name in zip(srv.messages, ("bob", "alice"), strict=True):
        assert not re.search(rb"(?im)^bcc:", raw) and b"To: bob@example.org\r\n" in raw
        assert b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";' in raw
        armored = raw[raw.index(b"-----BEGIN PGP MESSAGE-----") : raw.index(b"-----END PGP MESSAGE-----") + 25]
        r = _tool(["gpg", "--batch", "--status-fd", "2", "--decrypt"], inp=armored, env=gnupg.env)
        assert r.returncode == 0 and b"DECRYPTION_OKAY" in r.stderr
        enc_to = re.findall(rb"ENC_TO ([0-9A-F]+) ", r.stderr)
        assert [k.decode() for k in enc_to] == [_enc_subkey(gnupg, name)]  # to that recipient alone
        assert r.stdout.startswith(b"Content-Type: multipart/signed;") and b"\r\n\r\nbody \r\nFrom x\r\n" in r.stdout
    # a recipient without a key: 78 before anything is sent
    r = run("pymail", "--transport", srv.url, "--openpgp", "--encrypt", "nobody@example.org", input=b"x\n", env=env)
    assert r.returncode == 78 and "no OpenPGP key for nobody@example.org" in r.stderr
    assert len(srv.messages) == 2


def test_100mb_attachment_signed_and_encrypted_in_bounded_memory(pki, tmp_path):
    env = _config(tmp_path, pki)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "m.eml"
    p = peak(
        "pymail", "--account", "me", "--transport", "-", "--sign", "--encrypt", "-a", big,
        "-s", "backup", "bob@example.org", stdout=out, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p
    assert p.mb < LIMIT_MB, p
    big.unlink()
    assert out.stat().st_size > 100 * 1024 * 1024 * 4 // 3 * 4 // 3  # base64 of base64
    r = _tool(
        ["openssl", "cms", "-decrypt", "-in", str(out), "-recip", pki.cert("bob"), "-inkey", pki.key("bob"),
         "-out", str(tmp_path / "plain")]
    )  # fmt: skip
    assert r.returncode == 0
    with open(tmp_path / "plain", "rb") as f:  # the signed entity (verified whole in the smaller tests)
        head = f.read(200)
        f.seek(-200, os.SEEK_END)
        tail = f.read()
    boundary = re.search(rb'boundary="([^"]+)"', head).group(1)
    assert head.startswith(b"Content-Type: multipart/signed;") and tail.endswith(b"\r\n--" + boundary + b"--\r\n")


def test_what_fails_to_go_out_is_kept_encrypted_and_resent_as_it_is(run, smtp_server, pki, tmp_path):
    env = _config(tmp_path, pki)
    from smtp_server import free_port

    down = "smtp://127.0.0.1:%d" % free_port()
    r = run(
        "pymail", "--account", "me", "--transport", down, "--encrypt", "-b", "carol@example.org",
        "bob@example.org", input=SECRET, env=env,
    )  # fmt: skip
    assert r.returncode == 75
    dead = (tmp_path / "home" / "dead.letter").read_bytes()
    assert dead.count(b"\nX-Pipemail-Undelivered-To: ") == 2 and SECRET[:20] not in dead
    assert b"X-Pipemail-Undelivered-To: bob@example.org\n" in dead
    assert b"X-Pipemail-Undelivered-To: carol@example.org\n" in dead
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--resend", tmp_path / "home" / "dead.letter", env=env)
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        0,
        "pymail: resend: all messages went out (%s)" % (tmp_path / "home" / "dead.letter"),
    )
    assert [m[1] for m in srv.messages] == [["bob@example.org"], ["carol@example.org"]]
    assert _decrypt(pki, "carol", srv.messages[1][2], tmp_path)[0] == 0
    assert _decrypt(pki, "bob", srv.messages[1][2], tmp_path)[0] == 4


def test_pysendmail_account_signs_and_encrypts_what_it_accepts_and_queues(run, smtp_server, pki, tmp_path):
    from smtp_server import free_port

    srv = smtp_server()
    queue_dir = tmp_path / "queue"

    def sendmail(url, *args):
        env = _config(
            tmp_path,
            pki,
            'transport = "%s"\ndomain = "example.org"\naliases = "/dev/null"\nsign = true\nencrypt = true\n' % url,
        )
        cfg = open(env["PIPEMAIL_CONFIG"]).read()
        open(env["PIPEMAIL_CONFIG"], "w").write('queue = "%s"\n' % queue_dir + cfg)
        given = b"From: alice@example.org\nTo: bob@example.org\nBcc: carol@example.org\nSubject: cron\n\n" + SECRET
        return run("pysendmail", *args, input=given, env=dict(env, TMPDIR=str(tmp_path)), lint=False)

    r = sendmail(srv.url, "-t", "-i")
    assert (r.returncode, r.stderr) == (0, "")
    assert [m[1] for m in srv.messages] == [["bob@example.org"], ["carol@example.org"]]
    for (_f, _r, raw), name in zip(srv.messages, ("bob", "carol"), strict=True):
        assert not re.search(rb"(?im)^bcc:", raw) and SECRET[:20] not in raw
        rc, plain = _decrypt(pki, name, raw, tmp_path)
        assert rc == 0 and _verifies(pki, plain, tmp_path)
        assert _decrypt(pki, "carol" if name == "bob" else "bob", raw, tmp_path)[0] == 4
    # the server down: what is queued is already encrypted
    r = sendmail("smtp://127.0.0.1:%d" % free_port(), "-t", "-i")
    assert r.returncode == 0 and r.stderr.count("pysendmail: queued as ") == 2
    stored = b"".join(p.read_bytes() for p in queue_dir.rglob("*") if p.is_file())
    assert b"application/pkcs7-mime" in stored and SECRET[:20] not in stored


def test_max_size_refusal_of_a_message_to_be_signed_keeps_nothing_in_clear(run, pki, tmp_path):
    env = _config(tmp_path, pki)
    r = run(
        "pymail", "--account", "me", "--transport", "-", "--sign", "--max-size", "20K", "bob@example.org",
        input=SECRET * 400, env=env,
    )  # fmt: skip
    assert r.returncode == 64 and r.stdout == b""
    assert re.fullmatch(
        r"pymail: the message is \d+ bytes, over --max-size 20K, and only attachments are split: give the data "
        r"with -a FILE \(signed or encrypted: 12288 bytes before it is wrapped\) \(see 'pymail --help'\)\n",
        r.stderr,
    ), r.stderr
    assert not (tmp_path / "home" / "dead.letter").exists()
