#!/usr/bin/env python3
"""Benchmark pymail --sign / --encrypt (S/MIME and OpenPGP) of a big attachment into an mbox,
against the tools it drives on the same data: `openssl cms -sign/-encrypt` and `gpg`.

pymail makes the MIME message (base64 of the attachment), streams its entity through the tool
once to sign (a detached signature back), spools the encrypted output once, and writes the mail
to an mbox; the tools alone read the raw file.  Reported: wall time and peak RSS of each command
(its own ru_maxrss, bench/benchlib.py), best of --runs.  Keys are made in a temporary directory
(a test CA and two RSA-2048 users; a GNUPGHOME with ed25519/cv25519 keys).  A benchmark, not a
test: it prints a table and exits 0.  Run: .venv-3.11/bin/python bench/crypto_bench.py [--size MB]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchlib import CHILD_ENV, MB, find_venvs, print_table, run_child, run_main

EXT = """[user]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:{name}@example.org
"""


def make_pki(d: Path) -> None:
    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
        "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for name in ("alice", "bob"):
        (d / f"{name}.cnf").write_text(EXT.format(name=name))
        run(
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
            "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}",
        )  # fmt: skip
        run(
            "openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(d / f"{name}.pem"),
            "-extfile", str(d / f"{name}.cnf"), "-extensions", "user",
        )  # fmt: skip


def make_gnupg(home: Path) -> None:
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    for name in ("Alice", "Bob"):
        subprocess.run(
            ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
             f"{name} <{name.lower()}@example.org>", "future-default", "default", "never"],
            check=True, capture_output=True, env=env,
        )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100, help="attachment size in MB (default 100)")
    ap.add_argument("--runs", type=int, default=1, help="best of N runs (default 1)")
    ap.add_argument("--venv", action="append", help="a venv with pymail (default: .venv-3.11, .venv-3.13)")
    args = ap.parse_args()
    for tool in ("openssl", "gpg"):
        if shutil.which(tool) is None:
            raise SystemExit(f"crypto_bench: {tool} is not installed (apt install openssl gnupg)")
    venvs = find_venvs(args.venv, ("pymail",))
    work = Path(tempfile.mkdtemp(prefix="crypto-bench-"))
    try:
        make_pki(work)
        make_gnupg(work / "gnupg")
        data = work / "data.bin"
        with open(data, "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MB))
        cfg = work / "config.toml"
        cfg.write_text(
            f'[accounts.b]\nfrom = "alice@example.org"\nsmime_cert = "{work}/alice.pem"\n'
            f'smime_key = "{work}/alice.key"\n'
        )
        CHILD_ENV.update(PIPEMAIL_CONFIG=str(cfg), GNUPGHOME=str(work / "gnupg"), HOME=str(work))
        out = work / "out"
        a, b = str(work / "alice"), str(work / "bob")
        tools = {
            "openssl cms -sign (detached, DER)": [
                "openssl", "cms", "-sign", "-binary", "-md", "sha256", "-signer", a + ".pem", "-inkey", a + ".key",
                "-outform", "DER", "-in", str(data), "-out", str(out),
            ],
            "openssl cms -encrypt -stream": [
                "openssl", "cms", "-encrypt", "-stream", "-binary", "-aes256", "-outform", "DER",
                "-in", str(data), "-out", str(out), b + ".pem",
            ],
            "gpg --detach-sign --armor": [
                "gpg", "--batch", "-u", "<alice@example.org>", "--digest-algo", "SHA256", "--armor",
                "--detach-sign", "-o", str(out), "--yes", str(data),
            ],
            "gpg --encrypt --armor": [
                "gpg", "--batch", "--armor", "--encrypt", "-r", "<bob@example.org>", "-o", str(out), "--yes", str(data),
            ],
        }  # fmt: skip
        mine = {
            "--smime --sign": ["--smime", "--sign"],
            "--smime --sign --encrypt": ["--smime", "--sign", "--encrypt", "--recipient-cert", b + ".pem"],
            "--openpgp --sign": ["--openpgp", "--sign"],
            "--openpgp --sign --encrypt": ["--openpgp", "--sign", "--encrypt"],
            "(plain, no crypto)": [],
        }
        rows = []

        def best(argv: list[str], label: str) -> None:
            got = []
            for _ in range(args.runs):
                if out.exists():
                    out.unlink()
                r = run_child(argv)
                if r.returncode != 0:
                    print(f"note: {label}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
                    return
                got.append(r)
            r = min(got, key=lambda x: x.wall)
            size = out.stat().st_size if out.exists() else 0
            rows.append([label, f"{r.wall:.2f}", f"{r.maxrss_mb:.1f}", f"{size / MB:.1f}"])

        for label, argv in tools.items():
            best(argv, label)
        for vlabel, bindir in venvs:
            for label, opts in mine.items():
                argv = [str(bindir / "pymail"), "--account", "b", "--transport", f"mbox:{out}", *opts]
                best([*argv, "-a", str(data), "-s", "bench", "bob@example.org"], f"pymail {label} ({vlabel})")
        print(f"{args.size} MB of random data, best of {args.runs}; pymail writes an mbox (base64 of the file)")
        print_table(rows, ["command", "seconds", "peak MB", "output MB"])
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=dict(os.environ, GNUPGHOME=str(work / "gnupg")))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
