#!/usr/bin/env python3
"""Benchmark S/MIME decryption: pipemail.cms against `openssl cms -decrypt` and `gpgsm --decrypt`.

pymime decrypts application/pkcs7-mime with pipemail.cms because `openssl cms -decrypt` holds about
three times the message in memory.  This measures the three on the same EnvelopedData (AES-256-CBC,
RSA-2048 key transport), written by `openssl cms -encrypt -stream` (a constructed [0] of 4 KiB
OCTET STRINGs, indefinite lengths) and without `-stream` (one primitive [0]): best wall time, MB/s
and peak RSS.  A benchmark, not a test: standard library only (plus pipemail's own dependencies in the
measured venvs), it prints a table and exits 0 (a missed target prints MISS).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import DATA_DIR, MB, find_venvs, print_table, run_child, run_main, sha, verdict

RSS_TARGET_MB = 64  # DESIGN.md: peak memory under 64 MB at any size

# What pymime does with the base64-decoded part: pipemail.cms.decrypt from 64 KiB chunks to a binary file.
DECRYPT = """\
import sys
from pipemail import cms
def chunks(f):
    while b := f.read(1 << 16):
        yield b
cms.decrypt(chunks(sys.stdin.buffer), sys.stdout.buffer, cert=sys.argv[1], key=sys.argv[2])
"""


def sh(*argv: str | Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, **kw)


def make_inputs(work: Path, size_mb: int) -> tuple[str, dict[str, Path]]:
    """A key and certificate, and the plaintext encrypted both ways: (plaintext digest, {name: DER})."""
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", work / "bob.key",
       "-out", work / "bob.pem", "-days", "30", "-subj", "/CN=bob/emailAddress=bob@example.org")  # fmt: skip
    # pseudo-random plaintext from a stream cipher, digested on the way, never held
    made = subprocess.run(
        ["bash", "-c",
         'openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -in /dev/zero 2>/dev/null '
         '| head -c "$1" | tee "$2" | sha256sum', "bash", str(size_mb * MB), str(work / "plain")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    digest = made.stdout.split()[0]
    inputs = {}
    for name, stream in (("stream", ["-stream"]), ("one-part", [])):
        der = work / ("%s.der" % name)
        sh("openssl", "cms", "-encrypt", *stream, "-binary", "-aes256", "-recip", work / "bob.pem",
           "-outform", "DER", "-in", work / "plain", "-out", der)  # fmt: skip
        inputs[name] = der
    (work / "plain").unlink()
    return digest, inputs


def make_gpgsm_home(work: Path) -> dict | None:
    """A GNUPGHOME holding bob's key for gpgsm (a legacy PKCS#12 import); None when gpgsm is missing."""
    if not shutil.which("gpgsm"):
        return None
    home = work / "gpgsm"
    home.mkdir(mode=0o700)
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    (home / "gpgsm.conf").write_text("disable-crl-checks\n")
    env = dict(os.environ, GNUPGHOME=str(home))
    legacy = ["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"]  # what gpgsm 2.2 reads
    sh("openssl", "pkcs12", "-export", "-in", work / "bob.pem", "-inkey", work / "bob.key", "-passout", "pass:pw",
       *legacy, "-out", work / "bob.p12")  # fmt: skip
    sh("gpgsm", "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--import", work / "bob.p12",
       env=env, input=b"pw")  # fmt: skip
    out = sh("gpgsm", "--with-colons", "--list-keys", "bob@example.org", env=env).stdout
    fpr = next(ln.split(b":")[9].decode() for ln in out.splitlines() if ln.startswith(b"fpr:"))
    (home / "trustlist.txt").write_text("%s S relax\n" % fpr)  # the self-signed certificate is its own root
    (work / "pw").write_text("pw\n")
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=200, metavar="MB", help="plaintext size (default 200)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each; the best is kept (default 3)")
    ap.add_argument("--venv", action="append", help="venv to measure (repeatable; default .venv-3.11, .venv-3.13)")
    args = ap.parse_args()
    if not shutil.which("openssl"):
        sys.exit("cms_bench: openssl is not installed (apt install openssl)")
    venvs = find_venvs(args.venv, ())
    if not venvs:
        sys.exit("cms_bench: no venv with pipemail installed (pip install -e .)")
    DATA_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cms-", dir=DATA_DIR) as tmp:
        work = Path(tmp)
        print("making %d MB of plaintext and its encryptions..." % args.size, file=sys.stderr)
        digest, inputs = make_inputs(work, args.size)
        gpgsm_env = make_gpgsm_home(work)
        cert, key = str(work / "bob.pem"), str(work / "bob.key")
        commands: dict[str, list[str]] = {}
        for label, bindir in venvs:
            commands["pipemail.cms (%s)" % label] = [str(bindir / "python"), "-c", DECRYPT, cert, key]
        commands["openssl cms -decrypt"] = ["openssl", "cms", "-decrypt", "-binary", "-inform", "DER",
                                            "-recip", cert, "-inkey", key]  # fmt: skip
        # correctness, once, outside the timed runs
        for label, argv in commands.items():
            if label.startswith("pipemail"):
                for name, der in inputs.items():
                    run = run_child(argv, stdin=der, stdout=work / "out")
                    ok = run.returncode == 0 and sha(work / "out") == digest
                    print("check: %s on %s: %s" % (label, name, "identical" if ok else "WRONG " + run.stderr[-300:]))
        (work / "out").unlink(missing_ok=True)
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for n in range(args.runs):
            for name, der in inputs.items():
                runs = dict(commands)
                if gpgsm_env is not None:
                    # the key's passphrase (the PKCS#12 one gpgsm kept) on stdin, the data from the file
                    runs["gpgsm --decrypt"] = ["env", "GNUPGHOME=" + gpgsm_env["GNUPGHOME"], "gpgsm", "--batch",
                                               "--pinentry-mode", "loopback", "--passphrase-fd", "0",
                                               "--decrypt", str(der)]  # fmt: skip
                for label, argv in runs.items():
                    stdin = work / "pw" if label.startswith("gpgsm") else der
                    argv = argv + (["-in", str(der)] if label.startswith("openssl") else [])
                    r = run_child(argv, stdin=stdin)
                    if r.returncode:
                        print("%s on %s failed: %s" % (label, name, r.stderr[-300:]), file=sys.stderr)
                        continue
                    wall, rss = best.get((label, name), (float("inf"), 0.0))
                    best[(label, name)] = (min(wall, r.wall), max(rss, r.maxrss_mb))
            print("  run %d/%d done" % (n + 1, args.runs), file=sys.stderr)
        if gpgsm_env is not None:
            subprocess.run(["gpgconf", "--kill", "all"], env=gpgsm_env, capture_output=True)
    print("\n%d MB plaintext, AES-256-CBC, RSA-2048; output to /dev/null; best of %d runs\n" % (args.size, args.runs))
    rows = []
    for (label, name), (wall, rss) in best.items():
        target = ""
        if label.startswith("pipemail"):
            openssl = best.get(("openssl cms -decrypt", name))
            ratio = "%.2f" % (wall / openssl[0]) if openssl else "n/a"
            target = "RSS %s, time/openssl %s" % (verdict(rss < RSS_TARGET_MB), ratio)
        rows.append([label, name, "%.2f" % wall, "%.0f" % (args.size / wall), "%.1f" % rss, target])
    print_table(rows, ["decrypter", "input", "wall s", "MB/s", "peak RSS MB", "target (RSS < 64 MB)"])


if __name__ == "__main__":
    run_main(main)
