"""Keys and certificates for the S/MIME and OpenPGP tests, made once per session by the real tools.

``pki``: a test CA and its users (made with ``openssl req``/``x509``/``ca``):

    alice, bob   emailProtection, SAN email:NAME@example.org
    carol        serverAuth only: no S/MIME purpose
    old          expired
    dave         revoked: ``pki.crl`` lists him (``pki.ca_with_crl``: the CA and the CRL in one file)
    eve          signed by another CA (``pki.other_ca``), untrusted

``gnupg``: a GNUPGHOME with Alice, Bob (no passphrase) and Carol (passphrase ``carol-secret``).
``gpgsm_home(pki, dir)``: a GNUPGHOME where gpgsm trusts the test CA and holds alice's and bob's keys.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

USERS = ("alice", "bob", "carol", "old", "dave", "eve")

_EXT = """\
[user]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:{name}@example.org

[nopurpose]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = email:{name}@example.org
"""

_CA_CNF = """\
[ca]
default_ca = my

[my]
database = {dir}/index.txt
crlnumber = {dir}/crlnumber
certificate = {dir}/ca.pem
private_key = {dir}/ca.key
default_md = sha256
default_crl_days = 30
"""


def _run(*argv, **kw):
    proc = subprocess.run(argv, capture_output=True, **kw)
    if proc.returncode != 0:  # the tool's own words in the failure, not only its exit status
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), proc.returncode, proc.stderr.decode()[-2000:]))
    return proc


def _generate_keys(paths):
    """An unencrypted RSA-2048 key (what ``openssl req -newkey rsa:2048 -nodes`` makes) in each of
    ``paths``, the ``openssl genpkey`` commands run side by side."""
    procs = [
        (path, subprocess.Popen(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))
        for path in paths
    ]  # fmt: skip
    failed = [(path, p.returncode, err) for path, p in procs for _out, err in [p.communicate()] if p.returncode]
    if failed:
        path, code, err = failed[0]
        raise RuntimeError("openssl genpkey -out %s exited %d: %s" % (path, code, err.decode()[-2000:]))


class PKI:
    PASSPHRASE = b"alice-secret"
    P12_PASSWORD = "pw"

    def __init__(self, directory):
        self.dir = directory
        d = directory
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        self.other_ca = os.path.join(d, "other-ca.pem")
        self.crl = os.path.join(d, "ca.crl")
        self.ca_with_crl = os.path.join(d, "ca+crl.pem")
        # The eight RSA keys first, all at once: generating one takes 0.1-0.5 s of one core
        _generate_keys([os.path.join(d, name + ".key") for name in ("ca", "other-ca", *USERS)])
        for name, subject in (("ca", "/CN=pipemail Test CA"), ("other-ca", "/CN=Other CA")):
            _run(
                "openssl", "req", "-x509", "-key", os.path.join(d, name + ".key"),
                "-out", os.path.join(d, name + ".pem"), "-days", "30", "-subj", subject,
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            )  # fmt: skip
        for name in USERS:
            ext = os.path.join(d, name + ".cnf")
            with open(ext, "w") as f:
                f.write(_EXT.format(name=name))
            _run(
                "openssl", "req", "-new", "-key", self.key(name), "-out", os.path.join(d, name + ".csr"),
                "-subj", "/CN=%s/emailAddress=%s@example.org" % (name, name),
            )  # fmt: skip
            ca = "other-ca" if name == "eve" else "ca"
            _run(
                "openssl", "x509", "-req", "-in", os.path.join(d, name + ".csr"),
                "-CA", os.path.join(d, ca + ".pem"), "-CAkey", os.path.join(d, ca + ".key"), "-CAcreateserial",
                "-days", "-1" if name == "old" else "30", "-out", self.cert(name),
                "-extfile", ext, "-extensions", "nopurpose" if name == "carol" else "user",
            )  # fmt: skip
            with open(self.both(name), "wb") as f:
                for part in (self.cert(name), self.key(name)):
                    with open(part, "rb") as src:
                        f.write(src.read())
        # dave revoked, in the CA's CRL
        with open(os.path.join(d, "index.txt"), "w"):
            pass
        with open(os.path.join(d, "crlnumber"), "w") as f:
            f.write("01\n")
        cnf = os.path.join(d, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(_CA_CNF.format(dir=d))
        _run("openssl", "ca", "-config", cnf, "-revoke", self.cert("dave"), "-batch")
        _run("openssl", "ca", "-config", cnf, "-gencrl", "-out", self.crl, "-batch")
        with open(self.ca_with_crl, "wb") as f:
            for part in (self.ca, self.crl):
                with open(part, "rb") as src:
                    f.write(src.read())
        _run(
            "openssl", "pkey", "-in", self.key("alice"), "-aes256", "-out", self.key_enc("alice"),
            "-passout", "pass:" + self.PASSPHRASE.decode(),
        )  # fmt: skip
        for name in ("alice", "bob"):
            self.write_p12(name)

    def write_p12(self, name):
        """(Re)write NAME's legacy PKCS#12 (what gpgsm 2.2 imports), with a fresh random salt and IV."""
        _run(
            "openssl", "pkcs12", "-export", "-in", self.cert(name), "-inkey", self.key(name),
            "-certfile", self.ca, "-passout", "pass:" + self.P12_PASSWORD,
            "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-out", self.p12(name),
        )  # fmt: skip

    def cert(self, name):
        return os.path.join(self.dir, name + ".pem")

    def key(self, name):
        return os.path.join(self.dir, name + ".key")

    def key_enc(self, name):
        return os.path.join(self.dir, name + ".enc.key")

    def p12(self, name):
        return os.path.join(self.dir, name + ".p12")

    def both(self, name):
        return os.path.join(self.dir, name + ".both.pem")

    @staticmethod
    def address(name):
        return "%s@example.org" % name


class GnuPG:
    PASSPHRASE = b"carol-secret"

    def __init__(self, home):
        self.home = home
        self.env = dict(os.environ, GNUPGHOME=home)
        self._fpr = {}

    def gpg(self, *args, check=False, **kw):
        if check:
            return _run("gpg", "--batch", "--no-tty", *args, env=self.env, **kw)
        return subprocess.run(["gpg", "--batch", "--no-tty", *args], env=self.env, capture_output=True, **kw)

    def fpr(self, name):
        if name not in self._fpr:
            out = self.gpg("--with-colons", "--list-keys", "<%s@example.org>" % name.lower(), check=True).stdout
            self._fpr[name] = next(ln.split(b":")[9].decode() for ln in out.splitlines() if ln.startswith(b"fpr:"))
        return self._fpr[name]

    def copy(self, directory):
        """A new GNUPGHOME holding what this one holds (for a test that changes trust or deletes keys)."""
        home = os.path.join(str(directory), "gnupg")
        shutil.copytree(self.home, home, ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
        os.chmod(home, 0o700)
        return GnuPG(home)

    def kill_agent(self):
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, capture_output=True)


def make_gnupg(directory):
    home = os.path.join(str(directory), "gnupg")
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "gpg-agent.conf"), "w") as f:
        f.write("allow-loopback-pinentry\ns2k-count 65536\n")
    g = GnuPG(home)
    for name, pw in (("Alice", b""), ("Bob", b""), ("Carol", GnuPG.PASSPHRASE)):
        g.gpg(
            "--pinentry-mode", "loopback", "--passphrase", pw.decode(),
            "--quick-gen-key", "%s <%s@example.org>" % (name, name.lower()), "future-default", "default", "never",
            check=True,
        )  # fmt: skip
    return g


def make_gpgsm_home(pki, directory):
    """A GNUPGHOME for gpgsm: the test CA trusted, alice's and bob's keys imported (as mutt's gpgme uses it)."""
    home = os.path.join(str(directory), "gpgsm")
    os.makedirs(home, mode=0o700, exist_ok=True)
    with open(os.path.join(home, "gpg-agent.conf"), "w") as f:
        f.write("allow-loopback-pinentry\n")
    with open(os.path.join(home, "gpgsm.conf"), "w") as f:
        f.write("disable-crl-checks\n")
    env = dict(os.environ, GNUPGHOME=home)
    _run("gpgconf", "--launch", "gpg-agent", env=env)  # up before gpgsm needs it, on a busy machine too
    base = ["gpgsm", "--batch", "--pinentry-mode", "loopback"]
    _run(*base, "--import", pki.ca, env=env)
    for name in ("alice", "bob"):
        # gpgsm 2.2.40 fails to decrypt about one PKCS#12 file in 40 ("decryption failed; trying charset ...",
        # "error at shrouded_key_bag.decrypted-text"), the same file every time: it depends on the random salt
        # and IV, not on the password. A file it cannot read is written again, with a new salt.
        for attempt in range(8):
            try:
                _run(*base, "--passphrase-fd", "0", "--import", pki.p12(name), env=env, input=PKI.P12_PASSWORD.encode())
                break
            except RuntimeError:
                if attempt == 7:
                    raise
                pki.write_p12(name)
    out = _run("gpgsm", "--with-colons", "--list-keys", "pipemail Test CA", env=env).stdout
    fpr = next(ln.split(b":")[9].decode() for ln in out.splitlines() if ln.startswith(b"fpr:"))
    with open(os.path.join(home, "trustlist.txt"), "w") as f:
        f.write("%s S\n" % fpr)
    return GnuPG(home)


@pytest.fixture(scope="session")
def pki():
    d = tempfile.mkdtemp(prefix="pipemail-pki-")
    try:
        yield PKI(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def gnupg():
    d = tempfile.mkdtemp(prefix="pipemail-gnupg-")
    g = make_gnupg(d)
    try:
        yield g
    finally:
        g.kill_agent()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def gpgsm_home(pki):
    d = tempfile.mkdtemp(prefix="pipemail-gpgsm-")
    g = make_gpgsm_home(pki, d)
    try:
        yield g
    finally:
        g.kill_agent()
        shutil.rmtree(d, ignore_errors=True)
