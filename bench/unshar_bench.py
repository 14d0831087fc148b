#!/usr/bin/env python3
"""Benchmark pyunshar reassembling a split archive from an mbox on standard input, generated on
the fly (so that a 4 GB mbox needs no 4 GB file), beside GNU unshar on the same parts as files.

    bench/unshar_bench.py --size 300          # MiB of data (default 300)
    bench/unshar_bench.py --size 4096         # the 4 GB case: an mbox of about 7 GB on a pipe

The data (a repeated random block) is split with ``pyshar -L 4000``; each part goes in one
message as a base64 attachment, as ``pymail --max-size`` sends them, written into a pipe to
``pyunshar -d OUT`` while it reads.  GNU unshar is given the part files (it cannot read base64
mail: it pipes text to sh).  Reported: wall time, peak RSS (ru_maxrss of the command itself,
through posix_spawn and wait4), and whether the restored file is byte-identical.  Not a test;
always exits 0.  Standard library only (and sharutils' unshar if installed).
"""

import argparse
import binascii
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOUNDARY = b"=_pipemail_0123456789abcdef01234567"


def tool(name):
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def mbox_chunks(parts):
    for path in parts:
        name = os.path.basename(path).encode()
        yield (
            b"From me@example.com Thu Dec  3 11:36:01 2026\nFrom: me@example.com\nSubject: " + name + b"\n"
            b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="' + BOUNDARY + b'"\n\n'
            b"--" + BOUNDARY + b"\nContent-Type: text/plain\n\nA part.\n\n"
            b"--" + BOUNDARY + b'\nContent-Type: application/octet-stream; name="' + name + b'"\n'
            b'Content-Disposition: attachment; filename="' + name + b'"\nContent-Transfer-Encoding: base64\n\n'
        )
        with open(path, "rb") as f:
            while block := f.read(57 * 20000):
                yield b"".join(binascii.b2a_base64(block[i : i + 57]) for i in range(0, len(block), 57))
        yield b"\n--" + BOUNDARY + b"--\n\n"


def spawn(argv, cwd, stdin_fd=None):
    actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    if stdin_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdin_fd, 0))
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    finally:
        os.chdir(old)


def run(argv, cwd, feed=None):
    start = time.monotonic()
    if feed is None:
        pid = spawn(argv, cwd)
    else:
        r, w = os.pipe()
        pid = spawn(argv, cwd, r)
        os.close(r)
        with os.fdopen(w, "wb") as out:
            try:
                for chunk in feed:
                    out.write(chunk)
            except BrokenPipeError:
                pass
    _, status, usage = os.wait4(pid, 0)
    return time.monotonic() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=300, help="MiB of data (default 300; 4096 for the 4 GB case)")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    args = ap.parse_args()
    top = Path(args.dir or tempfile.mkdtemp(prefix="unshar-bench-"))
    top.mkdir(parents=True, exist_ok=True)
    try:
        data = top / "backup.bin"
        block = os.urandom(1 << 20)
        with open(data, "wb") as f:
            for i in range(args.size):
                f.write(block[i % 4096 :] + block[: i % 4096])
        src = top / "parts"
        src.mkdir()
        subprocess.run(
            [tool("pyshar"), "-L", "4000", "-o", str(src / "companyMega"), "backup.bin"],
            cwd=top,
            check=True,
            capture_output=True,
        )
        parts = sorted(str(p) for p in src.iterdir())
        mbox_size = sum(len(c) for c in mbox_chunks(parts[:1])) * len(parts)
        print("%d MiB of data, %d parts, an mbox of about %d MiB on a pipe" % (args.size, len(parts), mbox_size >> 20))
        rows = []
        out = top / "out-py"
        t, mb, rc = run([tool("pyunshar"), "-d", str(out)], top, mbox_chunks(parts))
        rows.append(("pyunshar -d OUT < mbox (pipe)", t, mb, rc, filecmp.cmp(data, out / "backup.bin", False)))
        shutil.rmtree(out, ignore_errors=True)
        gnu = shutil.which("unshar")
        if gnu:
            out = top / "out-gnu"
            out.mkdir()
            t, mb, rc = run([gnu, "-d", str(out)] + parts, top)
            same = (out / "backup.bin").exists() and filecmp.cmp(data, out / "backup.bin", False)
            rows.append(("GNU unshar -d OUT PARTS (files)", t, mb, rc, same))
            shutil.rmtree(out, ignore_errors=True)
        print("%-34s %9s %12s %5s %10s" % ("command", "time (s)", "peak RSS MB", "exit", "identical"))
        for name, t, mb, rc, same in rows:
            print("%-34s %9.1f %12.1f %5d %10s" % (name, t, mb, rc, "yes" if same else "NO"))
    finally:
        if args.dir is None:
            shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
