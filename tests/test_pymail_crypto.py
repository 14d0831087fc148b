"""pymail --sign / --encrypt over a real SMTP server (aiosmtpd) and into mailboxes: the bytes
received, decrypted and verified by openssl and gpg; Bcc copies; --max-size parts; refusals
before anything is sent; a 100 MB attachment in bounded memory (tests/peak.py)."""

import os
import re
import socket
import subprocess
import threading

import lint
import pytest
from peak import LIMIT_MB, peak

SECRET = b"root password changed on db1\nFrom now on use the new one \n"


@pytest.fixture
def run(run):
    return lint.checking(run)


def _config(tmp_path, pki, extra="", cert=None, key=None, sender="alice@example.org"):
    certs = tmp_path / "certs"
    certs.mkdir(exist_ok=True)
    for name in ("alice", "bob", "carol", "eve"):
        (certs / ("%s@example.org.pem" % name)).write_bytes(open(pki.cert(name), "rb").read())
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[accounts.me]\nfrom = "%s"\ncrypto = "smime"\nsmime_cert = "%s"\nsmime_key = "%s"\n'
        'smime_certs = "%s"\n%s' % (sender, cert or pki.cert("alice"), key or pki.key("alice"), certs, extra)
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
        "-b", "alice@example.org", "-b", "eve@example.org", "bob@example.org", input=SECRET, env=env,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    envelopes = [(m[0], m[1]) for m in srv.messages]
    assert envelopes == [
        ("alice@example.org", ["bob@example.org"]),
        ("alice@example.org", ["alice@example.org"]),
        ("alice@example.org", ["eve@example.org"]),
    ]
    for (_f, _rcpt, raw), name in zip(srv.messages, ("bob", "alice", "eve"), strict=True):
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert (
            not re.search(rb"(?im)^bcc:", raw)
            and head.count(b"alice@") == head.count(b"From: alice@")
            and b"eve@" not in head
        )  # nobody sees a Bcc
        assert b"Subject: db1\r\nMIME-Version: 1.0\r\n" in head and b"To: bob@example.org\r\n" in head
        assert b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;" in head
        assert SECRET[:20] not in raw
        for other in ("bob", "alice", "eve"):
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
        assert r.stdout.startswith(b"Content-Type: multipart/signed;")
        # -t: a body with a trailing blank and a From line is signed quoted-printable (review 2, finding 7)
        signed = b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        assert signed + b"body=20\r\n=46rom x\r\n" in r.stdout
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
        "pymail", "--account", "me", "--transport", down, "--encrypt", "-b", "alice@example.org",
        "bob@example.org", input=SECRET, env=env,
    )  # fmt: skip
    assert r.returncode == 75
    dead = (tmp_path / "home" / "dead.letter").read_bytes()
    assert dead.count(b"\nX-Pipemail-Undelivered-To: ") == 2 and SECRET[:20] not in dead
    assert b"X-Pipemail-Undelivered-To: bob@example.org\n" in dead
    assert b"X-Pipemail-Undelivered-To: alice@example.org\n" in dead
    srv = smtp_server()
    r = run("pymail", "--transport", srv.url, "--resend", tmp_path / "home" / "dead.letter", env=env)
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        0,
        "pymail: resend: all messages went out (%s)" % (tmp_path / "home" / "dead.letter"),
    )
    assert [m[1] for m in srv.messages] == [["bob@example.org"], ["alice@example.org"]]
    assert _decrypt(pki, "alice", srv.messages[1][2], tmp_path)[0] == 0
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
        given = b"From: alice@example.org\nTo: bob@example.org\nBcc: alice@example.org\nSubject: cron\n\n" + SECRET
        return run("pysendmail", *args, input=given, env=dict(env, TMPDIR=str(tmp_path)), lint=False)

    r = sendmail(srv.url, "-t", "-i")
    assert (r.returncode, r.stderr) == (0, "")
    assert [m[1] for m in srv.messages] == [["bob@example.org"], ["alice@example.org"]]
    for (_f, _r, raw), name in zip(srv.messages, ("bob", "alice"), strict=True):
        assert not re.search(rb"(?im)^bcc:", raw) and SECRET[:20] not in raw
        rc, plain = _decrypt(pki, name, raw, tmp_path)
        assert rc == 0 and _verifies(pki, plain, tmp_path)
        assert _decrypt(pki, "alice" if name == "bob" else "bob", raw, tmp_path)[0] == 4
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


RSECRET = b"root password changed on db1: hunter2\n"


def _rconfig(tmp_path, pki, extra="", cert=None, key=None, sender="alice@example.org"):
    """_config, with the spool in the test's own directory (TMPDIR)."""
    return dict(_config(tmp_path, pki, extra, cert, key, sender), TMPDIR=str(tmp_path))


def _openssl(*argv, cwd=None):
    subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=cwd)


def _user_cert(pki, tmp_path, name, *, keytype="rsa:2048", ca=None, ca_key=None):
    """A certificate for NAME@example.org (emailProtection) signed by ``ca`` (default: the test CA)."""
    ext = tmp_path / ("%s.cnf" % name)
    ext.write_text(
        "[user]\nbasicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = emailProtection\nsubjectAltName = email:%s@example.org\n"
        "[inter]\nbasicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n" % name
    )
    key, csr, cert = (str(tmp_path / (name + s)) for s in (".key", ".csr", ".pem"))
    _openssl("req", "-newkey", keytype, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca or pki.ca, "-CAkey", ca_key or pki.ca_key, "-CAcreateserial",
        "-CAserial", str(tmp_path / "serial"), "-days", "30", "-out", cert, "-extfile", str(ext),
        "-extensions", "inter" if name == "inter" else "user",
    )  # fmt: skip
    return cert, key


# -- review 2 of issue 13 (notes/review13b.md): 1: a key that cannot be used, found before --max-size parts go


def test_max_size_bcc_whose_certificate_cannot_encrypt_sends_nothing(run, smtp_server, pki, tmp_path):
    """An Ed25519 certificate (cannot encrypt) for a Bcc recipient: with --max-size every part went to bob
    first, then exit 70 ("openssl cms -encrypt failed"); expected 78 naming frank, nothing sent."""
    srv = smtp_server()
    env = _rconfig(tmp_path, pki)
    cert, _key = _user_cert(pki, tmp_path, "frank", keytype="ed25519")
    data = tmp_path / "dump.bin"
    data.write_bytes(os.urandom(80 * 1024))
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--encrypt", "--max-size", "64K", "-a", data,
        "--recipient-cert", cert, "-b", "frank@example.org", "-s", "dump", "bob@example.org",
        input=b"the dump\n", env=env,
    )  # fmt: skip
    assert r.returncode == 78, r.stderr
    assert "frank@example.org" in r.stderr
    assert srv.messages == []


def test_max_size_bcc_with_an_uncertified_openpgp_key_sends_nothing(run, smtp_server, gnupg, tmp_path):
    """An imported but uncertified key for a Bcc recipient: every part went to bob, then 78 and
    'not sent (never in clear)'; expected: refused before any part goes out."""
    srv = smtp_server()
    g = gnupg.copy(tmp_path)
    try:
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        oenv = dict(os.environ, GNUPGHOME=str(other))
        gen = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(gen + ["--quick-gen-key", "Dan <dan@example.org>", "future-default", "default", "never"],
                       env=oenv, check=True, capture_output=True)  # fmt: skip
        pub = subprocess.run(["gpg", "--armor", "--export", "dan@example.org"], env=oenv, capture_output=True).stdout
        g.gpg("--import", input=pub, check=True)
        subprocess.run(["gpgconf", "--kill", "all"], env=oenv, capture_output=True)
        (tmp_path / "empty.toml").write_text("")
        env = dict(g.env, HOME=str(tmp_path), PIPEMAIL_CONFIG=str(tmp_path / "empty.toml"))
        data = tmp_path / "dump.bin"
        data.write_bytes(os.urandom(80 * 1024))
        r = run(
            "pymail", "--transport", srv.url, "--openpgp", "--encrypt", "-r", "alice@example.org",
            "--max-size", "64K", "-a", data, "-b", "dan@example.org", "-s", "dump", "bob@example.org",
            input=b"the dump\n", env=env,
        )  # fmt: skip
        assert r.returncode == 78 and "dan@example.org" in r.stderr
        assert srv.messages == []
    finally:
        g.kill_agent()


# -- 2: gpg looks recipients up on the network -----------------------------------------------------------


def test_openpgp_encrypt_never_asks_a_keyserver_whatever_gpg_conf_says(run, gnupg, tmp_path):
    """With 'auto-key-locate keyserver,local' in gpg.conf, pymail's '--auto-key-locate local' is added
    to that list, not put in its place: gpg asks the keyserver for bob@example.org first."""
    asked = []
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(5)
    lsock.settimeout(20)
    port = lsock.getsockname()[1]

    def serve():
        try:
            while True:
                conn, _a = lsock.accept()
                asked.append(conn.recv(200))
                conn.close()
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    g = gnupg.copy(tmp_path)
    try:
        with open(os.path.join(g.home, "gpg.conf"), "w") as f:
            f.write("auto-key-locate keyserver,local\nkeyserver hkp://127.0.0.1:%d\n" % port)
        (tmp_path / "empty.toml").write_text("")
        env = dict(g.env, HOME=str(tmp_path), PIPEMAIL_CONFIG=str(tmp_path / "empty.toml"))
        r = run(
            "pymail", "--transport", "-", "--openpgp", "--encrypt", "-r", "alice@example.org", "-s", "x",
            "bob@example.org", input=RSECRET, env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert asked == []  # nothing asked of any server: the man page says so
    finally:
        lsock.close()
        g.kill_agent()


# -- 3: pysendmail keeps in clear what its account says to encrypt; --resend then sends it so ---------------


def _pysendmail(run, tmp_path, pki, srv_url, given):
    env = _rconfig(
        tmp_path,
        pki,
        'transport = "%s"\ndomain = "example.org"\naliases = "/dev/null"\nsign = true\nencrypt = true\n' % srv_url,
    )
    cfg = open(env["PIPEMAIL_CONFIG"]).read()
    open(env["PIPEMAIL_CONFIG"], "w").write('queue = "%s"\n' % (tmp_path / "queue") + cfg)
    return run("pysendmail", "-t", "-i", input=given, env=env), env


def test_pysendmail_keeps_marked_and_resend_never_sends_in_clear_a_message_it_could_not_encrypt(
    run, smtp_server, pki, tmp_path
):
    """Review 2, finding 3: pysendmail kept in clear what its account says to encrypt, and --resend sent
    it so.  Now the kept message is marked (X-Pipemail-Wrap) and --resend encrypts it or refuses."""
    srv = smtp_server()
    given = b"From: alice@example.org\nTo: bob@example.org, zed@example.org\nSubject: cron\n\n" + RSECRET
    r, env = _pysendmail(run, tmp_path, pki, srv.url, given)
    assert r.returncode == 78 and "zed@example.org" in r.stderr
    assert "marked to be signed and encrypted" in r.stderr, r.stderr
    assert srv.messages == []
    dead = tmp_path / "home" / "dead.letter"
    kept = dead.read_bytes()
    assert b"\nX-Pipemail-Undelivered-To: bob@example.org, zed@example.org\nX-Pipemail-Wrap: sign, encrypt\n" in kept
    # pymail --resend: zed still has no certificate: refused with words, kept as it was, nothing sent
    r = run("pymail", "--account", "me", "--transport", srv.url, "--resend", dead, env=env)
    assert r.returncode == 78, r.stderr
    assert "is to be signed and encrypted, and cannot be: no S/MIME certificate for zed@example.org" in r.stderr
    assert "never sent in clear" in r.stderr
    assert srv.messages == []
    assert b"X-Pipemail-Wrap: sign, encrypt\n" in dead.read_bytes() and RSECRET in dead.read_bytes()
    # once zed has one, --resend sends it signed and encrypted, each copy as pymail would
    cert, _key = _user_cert(pki, tmp_path, "zed")
    (tmp_path / "certs" / "zed@example.org.pem").write_bytes(open(cert, "rb").read())
    r = run("pymail", "--account", "me", "--transport", srv.url, "--resend", dead, env=env)
    assert (r.returncode, r.stderr) == (0, "pymail: resend: all messages went out (%s)\n" % dead)
    ((_f, rcpts, raw),) = srv.messages
    assert rcpts == ["bob@example.org", "zed@example.org"]
    assert RSECRET not in raw and b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;" in raw
    rc, plain = _decrypt(pki, "bob", raw, tmp_path)
    assert rc == 0 and plain.startswith(b"Content-Type: multipart/signed;") and RSECRET.rstrip() in plain


def test_pysendmail_refusal_does_not_name_an_option_it_lacks(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    given = b"From: alice@example.org\nTo: zed@example.org\nSubject: cron\n\n" + RSECRET
    r, _env = _pysendmail(run, tmp_path, pki, srv.url, given)
    assert r.returncode == 78
    assert "--recipient-cert" not in r.stderr  # pysendmail has no such option


# -- 4: a configuration error keeps in clear what the account says to encrypt -------------------------------


def test_config_error_of_an_encrypting_account_keeps_it_marked_and_resend_encrypts_it(run, smtp_server, pki, tmp_path):
    """Review 2, finding 4: a configuration error lost the account's encrypt = true: the message was
    kept in clear and --resend sent it so.  Now it is kept marked and --resend encrypts it."""
    srv = smtp_server()
    env = _rconfig(tmp_path, pki, 'transport = "%s"\nencrypt = true\nsign = true\ntls = "bogus"\n' % srv.url)
    r = run("pymail", "--account", "me", "-s", "report", "bob@example.org", input=RSECRET, env=env)
    assert r.returncode == 78
    assert "marked to be signed and encrypted: pymail --resend does so" in r.stderr, r.stderr
    dead = tmp_path / "home" / "dead.letter"
    assert b"\nX-Pipemail-Undelivered-To: bob@example.org\nX-Pipemail-Wrap: sign, encrypt\n" in dead.read_bytes()
    cfg = open(env["PIPEMAIL_CONFIG"]).read()
    open(env["PIPEMAIL_CONFIG"], "w").write(cfg.replace('tls = "bogus"\n', ""))
    r = run("pymail", "--account", "me", "--resend", dead, env=env)
    assert (r.returncode, r.stderr) == (0, "pymail: resend: all messages went out (%s)\n" % dead)
    ((_f, rcpts, raw),) = srv.messages
    assert rcpts == ["bob@example.org"] and RSECRET not in raw
    rc, plain = _decrypt(pki, "bob", raw, tmp_path)
    assert rc == 0 and plain.startswith(b"Content-Type: multipart/signed;") and RSECRET.rstrip() in plain


# -- 5: the signer's intermediate CA certificates are not sent ------------------------------------------------


def test_smime_signature_carries_the_intermediate_certificates(run, pki, tmp_path):
    inter, inter_key = _user_cert(pki, tmp_path, "inter")
    cert, key = _user_cert(pki, tmp_path, "ivy", ca=inter, ca_key=inter_key)
    chain = tmp_path / "ivy-chain.pem"
    chain.write_bytes(open(cert, "rb").read() + open(inter, "rb").read())  # as CAs deliver them
    env = _rconfig(tmp_path, pki, cert=str(chain), key=key, sender="ivy@example.org")
    out = tmp_path / "m.eml"
    r = run("pymail", "--account", "me", "--transport", "mbox:%s" % out, "--sign", "-s", "x", "bob@example.org",
            input=RSECRET, env=env)  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")
    raw = out.read_bytes().split(b"\n", 1)[1]
    (tmp_path / "signed.eml").write_bytes(raw)
    v = subprocess.run(
        ["openssl", "cms", "-verify", "-in", str(tmp_path / "signed.eml"), "-CAfile", pki.ca, "-out", os.devnull],
        capture_output=True,
    )
    assert v.stderr == b"CMS Verification successful\n", v.stderr  # the reader trusts the root CA only


# -- 6: signing with a certificate every reader refuses ------------------------------------------------------


@pytest.mark.parametrize(
    "who, sender, words",
    [
        ("old", "old@example.org", "expired"),
        ("carol", "carol@example.org", "emailProtection"),
        ("bob", "alice@example.org", "alice@example.org"),
    ],
)
def test_signing_certificate_readers_refuse_is_refused_before_sending(
    run, smtp_server, pki, tmp_path, who, sender, words
):
    srv = smtp_server()
    env = _rconfig(tmp_path, pki, cert=pki.cert(who), key=pki.key(who), sender=sender)
    r = run("pymail", "--account", "me", "--transport", srv.url, "--sign", "-s", "x", "ops@example.org",
            input=RSECRET, env=env)  # fmt: skip
    assert r.returncode == 78, (who, r.returncode)
    assert words in r.stderr
    assert srv.messages == []


# -- 7: -t bodies signed 7bit with "From " lines and trailing white space ------------------------------------


def test_t_message_body_with_from_lines_and_trailing_blanks_is_signed_quoted_printable(run, smtp_server, pki, tmp_path):
    srv = smtp_server()  # the lint passes it too: the signed part has its Content-* fields
    env = _rconfig(tmp_path, pki)
    given = b"From: alice@example.org\nTo: bob@example.org\nSubject: t\n\ndf says: \nFrom now on disk 2\n"
    r = run("pymail", "--account", "me", "--transport", srv.url, "-t", "--sign", input=given, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    ((_f, _r, raw),) = srv.messages
    signed = raw.split(b"This is an S/MIME signed message", 1)[1].split(b"application/pkcs7-signature", 1)[0]
    assert not re.search(rb"(?m)^From ", signed)  # an mbox writes >From: the signature breaks
    assert not re.search(rb"[ \t]\r\n", signed)  # a server may strip it: the signature breaks


# -- 9: -t messages wrapped without MIME-Version ---------------------------------------------------------------


def test_t_message_wrapped_has_mime_version(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _rconfig(tmp_path, pki)
    given = b"From: alice@example.org\nTo: bob@example.org\nSubject: t\n\nhello\n"
    r = run("pymail", "--account", "me", "--transport", srv.url, "-t", "--encrypt", input=given, env=env)
    assert (r.returncode, r.stderr) == (0, "")
    head = srv.messages[0][2].split(b"\r\n\r\n", 1)[0]
    assert b"Content-Type: application/pkcs7-mime;" in head
    assert b"\r\nMIME-Version: 1.0\r\n" in b"\r\n" + head + b"\r\n"  # RFC 2045: a MIME message says so


# -- 10: a recipient certificate that cannot encrypt is exit 70 (a bug), not 78 naming it ---------------------------


def test_recipient_certificate_that_cannot_encrypt_is_78_naming_it(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _rconfig(tmp_path, pki)
    cert, _key = _user_cert(pki, tmp_path, "frank", keytype="ed25519")
    r = run(
        "pymail", "--account", "me", "--transport", srv.url, "--encrypt", "--recipient-cert", cert, "-s", "x",
        "frank@example.org", input=RSECRET, env=env,
    )  # fmt: skip
    assert r.returncode == 78, r.stderr
    assert "frank@example.org" in r.stderr and "error:" not in r.stderr
    assert srv.messages == []


# -- 11: --max-size too small once wrapped: "give at least 31K" for 40K -----------------------------------------


def test_max_size_too_small_once_encrypted_says_a_size_that_works(run, pki, tmp_path):
    env = _rconfig(tmp_path, pki)
    data = tmp_path / "dump.bin"
    data.write_bytes(os.urandom(100 * 1024))
    r = run(
        "pymail", "--account", "me", "--transport", "-", "--encrypt", "--max-size", "40K", "-a", data,
        "-s", "dump", "bob@example.org", input=b"x\n", env=env,
    )  # fmt: skip
    assert r.returncode == 64
    m = re.search(r"give at least (\d+)K", r.stderr)
    assert m and int(m.group(1)) > 40, r.stderr  # 40K was given: a smaller size cannot be the answer
    assert "--max-size 40K" in r.stderr, r.stderr  # the size the user gave, not an internal one


# -- 14: an unreadable --recipient-cert is 78, an unreadable -a is 66 ---------------------------------------------


def test_missing_recipient_cert_file_is_noinput(run, pki, tmp_path):
    env = _rconfig(tmp_path, pki)
    r = run(
        "pymail", "--account", "me", "--transport", "-", "--encrypt", "--recipient-cert", tmp_path / "nope.pem",
        "-s", "x", "bob@example.org", input=RSECRET, env=env,
    )  # fmt: skip
    assert r.returncode == 66, r.stderr  # DESIGN.md: an input file that does not exist


# -- 12: an expired OpenPGP signing key is said to be missing ---------------------------------------------------


def test_expired_openpgp_signing_key_is_said_expired(run, gnupg, tmp_path):
    g = gnupg.copy(tmp_path)
    try:
        g.gpg(
            "--faked-system-time", "20200101T000000", "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-gen-key", "Xena <xena@example.org>", "future-default", "default", "1d", check=True,
        )  # fmt: skip
        (tmp_path / "empty.toml").write_text("")
        env = dict(g.env, HOME=str(tmp_path), PIPEMAIL_CONFIG=str(tmp_path / "empty.toml"))
        r = run("pymail", "--transport", "-", "--openpgp", "--sign", "-r", "xena@example.org", "-s", "x",
                "bob@example.org", input=RSECRET, env=env)  # fmt: skip
        assert r.returncode == 78
        assert "expired" in r.stderr and "no OpenPGP secret key" not in r.stderr, r.stderr
    finally:
        g.kill_agent()


# -- 8: a recipient certificate without the emailProtection purpose is used ---------------------------------------


def test_recipient_certificate_without_email_protection_is_refused(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _rconfig(tmp_path, pki)  # certs/carol@example.org.pem: serverAuth only
    r = run("pymail", "--account", "me", "--transport", srv.url, "--encrypt", "-s", "x", "carol@example.org",
            input=RSECRET, env=env)  # fmt: skip
    assert r.returncode == 78 and "carol@example.org" in r.stderr
    assert srv.messages == []


# -- 13: -t: the second Bcc (or Cc) field's recipients get nothing ---------------------------------------------------


def test_t_second_bcc_field_is_not_dropped(run, smtp_server, pki, tmp_path):
    srv = smtp_server()
    env = _rconfig(tmp_path, pki)
    given = (
        b"From: alice@example.org\nTo: bob@example.org\nBcc: eve@example.org\nBcc: alice@example.org\n"
        b"Subject: t\n\nhello\n"
    )
    r = run("pymail", "--account", "me", "--transport", srv.url, "-t", "--encrypt", input=given, env=env)
    if r.returncode == 0:  # taken: then every recipient gets it, each Bcc alone
        assert sorted(m[1] for m in srv.messages) == [["alice@example.org"], ["bob@example.org"], ["eve@example.org"]]
    else:  # or refused (RFC 5322: one Bcc field) before anything is sent
        assert r.returncode == 65 and srv.messages == []


# -- 15: --smime --openpgp together: the last one silently wins ------------------------------------------------------


def test_smime_and_openpgp_together_is_a_usage_error(run, pki, tmp_path):
    env = _rconfig(tmp_path, pki)
    r = run("pymail", "--account", "me", "--transport", "-", "--smime", "--openpgp", "--sign", "-s", "x",
            "bob@example.org", input=RSECRET, env=env)  # fmt: skip
    assert r.returncode == 64 and r.stdout == b""


# -- 16: an S/MIME private key readable by others is used -----------------------------------------------------------


def test_smime_key_readable_by_others_is_refused(run, pki, tmp_path):
    key = tmp_path / "open.key"
    key.write_bytes(open(pki.key("alice"), "rb").read())
    key.chmod(0o644)
    env = _rconfig(tmp_path, pki, key=str(key))
    r = run("pymail", "--account", "me", "--transport", "-", "--sign", "-s", "x", "bob@example.org",
            input=RSECRET, env=env)  # fmt: skip
    assert r.returncode == 78 and "open.key" in r.stderr and r.stdout == b""


def test_openpgp_pgp_key_not_naming_the_from_address_is_refused_before_sending(run, smtp_server, gnupg, tmp_path):
    """Review 2, finding 6 (OpenPGP): a pgp_key whose user ids do not name the From address."""
    srv = smtp_server()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[accounts.me]\nfrom = "alice@example.org"\ncrypto = "openpgp"\npgp_key = "%s"\n' % gnupg.fpr("bob"))
    env = dict(gnupg.env, HOME=str(tmp_path), PIPEMAIL_CONFIG=str(cfg))
    r = run("pymail", "--account", "me", "--transport", srv.url, "--sign", "-s", "x", "ops@example.org",
            input=RSECRET, env=env)  # fmt: skip
    assert (r.returncode, r.stderr) == (
        78,
        "pymail: pgp_key %s has no user id for the From address alice@example.org: readers refuse the "
        "signature; not sent\n" % gnupg.fpr("bob"),
    )
    assert srv.messages == []
