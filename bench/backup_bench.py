#!/usr/bin/env python3
"""Benchmark the backup mailed in parts (issue 11): time and peak RSS of each command, both directions.

Sending a random file of --size: `pymail --max-size 4M -a FILE` into a Maildir and over SMTP (an
aiosmtpd in this process, its data_size_limit raised), against the article's way, GNU `shar -L 4M`
then one `s-nail` per part to the same server. Reassembly: `pyunshar -d OUT` from the Maildir and
from an mbox of the same mails, against GNU `unshar -d OUT` on shar's part files. Every command is
started alone by benchlib's wait4 wrapper: its wall time and its own peak RSS (children included).
The file that comes back must be identical. A benchmark, not a test: it prints a table and exits 0.
Run it with a venv's python (aiosmtpd): .venv-3.11/bin/python bench/backup_bench.py --size 300M
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

from benchlib import CHILD_ENV, MB, Result, find_venvs, print_table, run_child, sha

RCPT = "me@example.org"
PART = "4M"  # pymail --max-size and GNU shar -L (GNU reads 4M as 4 MiB, as we do)
_UNITS = {"": MB, "K": 1024, "M": MB, "G": 1024 * MB}


def parse_size(text: str) -> int:
    """Bytes of ``300M``, ``1G``, ``512K``; a bare number is MB (as the other benchmarks' --size)."""
    s = text.strip().upper()
    unit = s[-1:] if s[-1:].isalpha() else ""
    if unit not in _UNITS or not s[: len(s) - len(unit)].isdigit():
        raise argparse.ArgumentTypeError("bad size %r: a number of MB, or with K, M or G" % text)
    return int(s[: len(s) - len(unit)]) * _UNITS[unit]


class Spool:
    """aiosmtpd handler: each message to a file of its own (nothing held here), in order of arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dir: Path | None = None
        self.count = 0
        self.biggest = 0

    def start(self, directory: Path) -> None:
        directory.mkdir()
        with self.lock:
            self.dir, self.count, self.biggest = directory, 0, 0

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        data = envelope.original_content.replace(b"\r\n", b"\n")
        with self.lock:
            self.count += 1
            self.biggest = max(self.biggest, len(envelope.original_content))
            (self.dir / ("mail.%04d" % self.count)).write_bytes(data)
        return "250 OK"


def mbox_from(files: list[Path], mbox: Path) -> None:
    """An mboxrd of the mails (made by the bench, not measured)."""
    import re

    quote = re.compile(rb"^(>*From )", re.M)
    with open(mbox, "wb") as out:
        for path in files:
            body = quote.sub(rb">\1", path.read_bytes())
            out.write(b"From bench@example.org Thu Jan  1 00:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n")


def maildir_files(top: Path) -> list[Path]:
    return sorted((top / "new").iterdir())


class Row:
    def __init__(self, name: str) -> None:
        self.name, self.wall, self.rss, self.mails, self.biggest, self.ok, self.err = name, 0.0, 0.0, 0, 0, None, ""

    def add(self, r: Result) -> Result:
        self.wall += r.wall
        self.rss = max(self.rss, r.maxrss_mb)
        if r.returncode and not self.err:
            self.err = "exit %d: %s" % (r.returncode, r.stderr.strip().splitlines()[-1:] or "")
        return r


def same(out: Path, big: Path, big_sha: str) -> bool:
    return out.exists() and out.stat().st_size == big.stat().st_size and sha(out) == big_sha


def ours(label: str, bindir: Path, spool: Spool, port: int, big: Path, big_sha: str, work: Path) -> list[Row]:
    work.mkdir()
    pymail = [str(bindir / "pymail"), "--max-size", PART, "-s", "backup", "-a", str(big)]
    rows = []
    row = Row("pymail --max-size %s maildir: (%s)" % (PART, label))
    row.add(run_child([*pymail, "--transport", "maildir:%s" % (work / "D"), RCPT], cwd=work))
    mails = maildir_files(work / "D") if (work / "D" / "new").is_dir() else []
    row.mails, row.biggest = len(mails), max((p.stat().st_size for p in mails), default=0)
    rows.append(row)

    row = Row("pymail --max-size %s smtp:// (%s)" % (PART, label))
    spool.start(work / "smtp")
    row.add(run_child([*pymail, "--transport", "smtp://127.0.0.1:%d" % port, RCPT], cwd=work))
    row.mails, row.biggest = spool.count, spool.biggest
    rows.append(row)

    row = Row("pyunshar -d OUT D (%s)" % label)
    row.add(run_child([str(bindir / "pyunshar"), "-d", str(work / "out-d"), str(work / "D")], cwd=work))
    row.ok = same(work / "out-d" / big.name, big, big_sha)
    rows.append(row)
    shutil.rmtree(work / "out-d", ignore_errors=True)

    mbox_from(mails, work / "parts.mbox")
    shutil.rmtree(work / "D", ignore_errors=True)
    row = Row("pyunshar -d OUT < parts.mbox (%s)" % label)
    row.add(run_child([str(bindir / "pyunshar"), "-d", str(work / "out-m")], stdin=work / "parts.mbox", cwd=work))
    row.ok = same(work / "out-m" / big.name, big, big_sha)
    rows.append(row)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def anchor(spool: Spool, port: int, big: Path, big_sha: str, work: Path) -> list[Row]:
    work.mkdir()
    os.link(big, work / big.name)
    rows = []
    row = Row("GNU shar -L %s" % PART)
    row.add(run_child(["shar", "-q", "-L", PART, "-o", "part", big.name], cwd=work))
    parts = sorted((Path(p) for p in glob.glob(str(work / "part.*"))), key=lambda p: int(p.suffix[1:]))
    row.mails, row.biggest = len(parts), max((p.stat().st_size for p in parts), default=0)
    rows.append(row)

    row = Row("s-nail, one per part, smtp://")
    spool.start(work / "smtp")
    snail = ["s-nail", "-S", "v15-compat", "-S", "smtp-auth=none", "-S", "sendwait"]
    snail += ["-S", "mta=smtp://127.0.0.1:%d" % port]
    for part in parts:
        row.add(run_child([*snail, "-s", part.name, RCPT], stdin=part, cwd=work))
    row.mails, row.biggest = spool.count, spool.biggest
    rows.append(row)
    shutil.rmtree(work / "smtp", ignore_errors=True)

    row = Row("GNU unshar -d OUT part.*")
    (work / "out").mkdir()
    row.add(run_child(["unshar", "-d", str(work / "out"), *map(str, parts)], cwd=work))
    row.ok = same(work / "out" / big.name, big, big_sha)
    rows.append(row)
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=parse_size, default="20M", help="random file: 300M, 1G (default 20M)")
    ap.add_argument("--runs", type=int, default=1, help="runs of each; the fastest is kept (default 1)")
    ap.add_argument("--venv", action="append", help="venv to measure (repeatable; default .venv-3.11, .venv-3.13)")
    ap.add_argument("--tmp", help="where the file, the mails and the outputs go (default $TMPDIR)")
    args = ap.parse_args(argv)
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        print("backup_bench: aiosmtpd is missing: run it with a venv's python", file=sys.stderr)
        return 0
    missing = [t for t in ("shar", "unshar", "s-nail") if shutil.which(t) is None]
    venvs = find_venvs(args.venv, ("pymail", "pyunshar"))
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    spool = Spool()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Controller(spool, hostname="127.0.0.1", port=port, data_size_limit=64 * MB)
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="backup-bench-", dir=args.tmp))
    best: dict[str, Row] = {}
    try:
        big = tmp / "backup.bin"
        with open(big, "wb") as f:
            for _ in range(args.size // MB):
                f.write(os.urandom(MB))
            f.write(os.urandom(args.size % MB))
        big_sha = sha(big)
        (tmp / "config.toml").write_text("")
        CHILD_ENV.update(HOME=str(tmp), DEAD=str(tmp / "dead.letter"), PIPEMAIL_CONFIG=str(tmp / "config.toml"))
        for n in range(args.runs):
            rows = [] if missing else anchor(spool, port, big, big_sha, tmp / ("gnu-%d" % n))
            for label, bindir in venvs:
                rows += ours(label, bindir, spool, port, big, big_sha, tmp / ("ours-%s-%d" % (label, n)))
            for r in rows:
                if r.name not in best or r.wall < best[r.name].wall:
                    best[r.name] = r
            print("  run %d/%d done" % (n + 1, args.runs), file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if missing:
        print("note: %s not installed: the anchor is skipped (apt install sharutils s-nail)" % ", ".join(missing))
    print("\n%.0f MB random file, parts of %s; fastest of %d run(s)\n" % (args.size / MB, PART, args.runs))
    table = [
        [
            r.name,
            "%.2f" % r.wall,
            "%.0f" % r.rss,
            str(r.mails) if r.mails else "",
            "%.2f" % (r.biggest / MB) if r.biggest else "",
            "" if r.ok is None else ("yes" if r.ok else "NO"),
            r.err,
        ]
        for r in best.values()
    ]
    print_table(table, ["command", "wall s", "peak RSS MB", "mails", "biggest MiB", "identical", "error"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
