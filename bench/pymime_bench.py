"""pymime verify/decrypt of a big signed or encrypted message, next to openssl cms and gpg on the same data.

    .venv-3.11/bin/python bench/pymime_bench.py                # 100 MB attachment
    .venv-3.11/bin/python bench/pymime_bench.py --size 20      # quick look

Keys and certificates are made by tests/cryptokeys.py (a test CA, RSA-2048 users; GnuPG ed25519/cv25519
keys) in a temporary directory, removed at the end.  Time is wall clock of one run; RSS is the peak of
the command and its children (openssl, gpg), read with wait4 (see benchlib).  A benchmark, not a test:
it always exits 0.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import MB, REPO_DIR, print_table, run_child, run_main

sys.path.insert(0, str(REPO_DIR / "tests"))


def make_data(d: Path, size_mb: int, pki, gnupg_env) -> dict:
    """The messages: an attachment of ``size_mb`` MB (base64, LF), signed and encrypted both ways."""
    entity = d / "entity.lf"
    block = base64.encodebytes(os.urandom(57 * 13797))
    with open(entity, "wb") as f:
        f.write(b'Content-Type: application/octet-stream; name="backup.tar"\nContent-Transfer-Encoding: base64\n\n')
        for i in range(size_mb):
            f.write(block[:-5] + b"%04d\n" % i)
    crlf = d / "entity.crlf"
    with open(entity, "rb") as src, open(crlf, "wb") as out:
        while chunk := src.read(MB):
            out.write(chunk.replace(b"\n", b"\r\n"))
    head = b"From: alice@example.org\nTo: bob@example.org\nSubject: backup\nMIME-Version: 1.0\n"

    def signed(name, protocol, micalg, sig_part):
        path = d / name
        with open(path, "wb") as out, open(entity, "rb") as src:
            out.write(head + b"Content-Type: multipart/signed; micalg=%s; protocol=\"%s\"; boundary=\"=b1\"\n\n--=b1\n"
                      % (micalg, protocol))  # fmt: skip
            shutil.copyfileobj(src, out, MB)
            out.write(b"\n--=b1\n" + sig_part + b"\n--=b1--\n")
        return path

    out = {"crlf": crlf}
    sig = d / "smime.der"
    subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-signer", pki.cert("alice"), "-inkey",
         pki.key("alice"), "-outform", "DER", "-in", crlf, "-out", sig],
        check=True,
    )  # fmt: skip
    out["smime_sig"] = sig
    part = b"Content-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n\n"
    out["smime_signed"] = signed("smime-signed.eml", b"application/pkcs7-signature", b"sha-256",
                                 part + base64.encodebytes(sig.read_bytes()))  # fmt: skip
    der = d / "smime-enc.der"
    subprocess.run(
        ["openssl", "cms", "-encrypt", "-stream", "-binary", "-aes256", "-outform", "DER", "-in", crlf, "-out", der,
         pki.cert("bob")],
        check=True,
    )  # fmt: skip
    enc = d / "smime-enc.eml"
    with open(enc, "wb") as f, open(der, "rb") as src:
        f.write(head + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n"
                b"Content-Transfer-Encoding: base64\n\n")  # fmt: skip
        while chunk := src.read(57 * 20000):
            f.write(base64.encodebytes(chunk))
    out["smime_enc"], out["smime_der"] = enc, der
    gpg = ["gpg", "--batch", "--no-tty"]
    asc = d / "pgp.asc"
    subprocess.run([*gpg, "-u", "alice@example.org", "--digest-algo", "SHA256", "--armor", "--detach-sign", "-o", asc,
                    crlf], check=True, env=gnupg_env)  # fmt: skip
    out["pgp_sig"] = asc
    part = b"Content-Type: application/pgp-signature; name=signature.asc\n\n" + asc.read_bytes()
    out["pgp_signed"] = signed("pgp-signed.eml", b"application/pgp-signature", b"pgp-sha256", part)
    armored = d / "pgp-enc.asc"
    subprocess.run([*gpg, "-z", "0", "--armor", "--encrypt", "-r", "bob@example.org", "-o", armored, crlf],
                   check=True, env=gnupg_env)  # fmt: skip
    penc = d / "pgp-enc.eml"
    with open(penc, "wb") as f, open(armored, "rb") as src:
        f.write(head + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="=e1"\n\n'
                b"--=e1\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--=e1\n"
                b"Content-Type: application/octet-stream\n\n")  # fmt: skip
        shutil.copyfileobj(src, f, MB)
        f.write(b"\n--=e1--\n")
    out["pgp_enc"], out["pgp_armored"] = penc, armored
    entity.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="attachment size in MB (default 100)")
    parser.add_argument("--venv", default=str(REPO_DIR / ".venv-3.11"), help="the venv holding pymime")
    args = parser.parse_args()
    pymime = str(Path(args.venv).absolute() / "bin" / "pymime")
    if not os.path.exists(pymime):
        raise SystemExit("no %s: pip install -e . in that venv first" % pymime)
    from cryptokeys import PKI, make_gnupg

    d = Path(tempfile.mkdtemp(prefix="pymime-bench-"))
    gnupg = None
    try:
        (d / "pki").mkdir()
        pki = PKI(str(d / "pki"))
        gnupg = make_gnupg(d)
        benchlib.CHILD_ENV["GNUPGHOME"] = gnupg.home
        print("making a %d MB attachment, signed and encrypted both ways, in %s ..." % (args.size, d), file=sys.stderr)
        data = make_data(d, args.size, pki, gnupg.env)
        ca = ["-CAfile", pki.ca, "-purpose", "smimesign"]
        cases = [
            ("S/MIME verify", "pymime verify", [pymime, "verify", "--ca-file", pki.ca], data["smime_signed"]),
            ("", "openssl cms -verify (whole message)",
             ["openssl", "cms", "-verify", "-in", str(data["smime_signed"]), *ca], None),
            ("", "openssl cms -verify -content (detached, split by hand)",
             ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(data["smime_sig"]), "-content",
              "/dev/stdin", *ca], data["crlf"]),
            ("S/MIME decrypt", "pymime decrypt",
             [pymime, "decrypt", "--cert", pki.cert("bob"), "--key", pki.key("bob")], data["smime_enc"]),
            ("", "openssl cms -decrypt (message)",
             ["openssl", "cms", "-decrypt", "-in", str(data["smime_enc"]), "-recip", pki.cert("bob"), "-inkey",
              pki.key("bob")], None),
            ("OpenPGP verify", "pymime verify", [pymime, "verify"], data["pgp_signed"]),
            ("", "gpg --verify SIG - (split by hand)",
             ["gpg", "--batch", "--verify", str(data["pgp_sig"]), "-"], data["crlf"]),
            ("OpenPGP decrypt", "pymime decrypt", [pymime, "decrypt"], data["pgp_enc"]),
            ("", "gpg --decrypt (armored part)", ["gpg", "--batch", "--decrypt"], data["pgp_armored"]),
        ]  # fmt: skip
        rows = []
        for job, what, argv, stdin in cases:
            r = run_child([str(a) for a in argv], stdin=stdin)
            ok = "rc %d" % r.returncode
            rows.append([job, what, "%.2f" % r.wall, "%.1f" % r.maxrss_mb, ok])
        sizes = ", ".join(
            "%s %.0f MB" % (k, data[k].stat().st_size / MB) for k in ("smime_signed", "smime_enc", "pgp_enc")
        )
        print("\n%d MB attachment (%s)" % (args.size, sizes))
        print_table(rows, ["job", "command", "time s", "peak RSS MB", "exit"])
    finally:
        if gnupg is not None:
            gnupg.kill_agent()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
