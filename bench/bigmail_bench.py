#!/usr/bin/env python3
"""Benchmark the big-file workflow of issue 6 against the article's way with real tools.

The article's way: GNU `shar -L 1000 -o part FILE`, then one `s-nail -s PART` (mailx) per
part over SMTP, then GNU `unshar` on the mails saved one a file (it pipes each into sh).
pipemail's way: `pymail --max-size 1M -a FILE`, then `pyunshar -d DIR` on the mbox.
Both send to the same aiosmtpd on loopback (in this process); every mail as sent must be at most
1 MiB; the file that comes back must be identical. A benchmark, not a test: it prints a table
and exits 0. Run it with a venv's python (aiosmtpd): .venv-3.11/bin/python bench/bigmail_bench.py
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import CHILD_ENV, MB, find_venvs, print_table, sha

LIMIT = 1024 * 1024
RCPT = "me@example.org"


class Box:
    """aiosmtpd handler: keep every message, in order of arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        with self.lock:
            self.messages.append(envelope.original_content)
        return "250 OK"

    def take(self) -> list[bytes]:
        with self.lock:
            got, self.messages = self.messages, []
        return got


def write_mbox(path: Path, messages: list[bytes]) -> None:
    with open(path, "wb") as f:
        for raw in messages:
            body = raw.replace(b"\r\n", b"\n")
            body = b"\n".join(b">" + ln if ln.lstrip(b">").startswith(b"From ") else ln for ln in body.split(b"\n"))
            f.write(b"From bench@example.org Thu Jan  1 00:00:00 2026\n" + body.rstrip(b"\n") + b"\n\n")


def timed(argv: list[str] | str, cwd: Path, env: dict, stdin: str | None = None) -> float:
    t = time.perf_counter()
    with open(stdin or os.devnull, "rb") as src:
        proc = subprocess.run(
            argv, cwd=cwd, env=env, stdin=src, capture_output=True, shell=isinstance(argv, str), timeout=600
        )
    if proc.returncode:
        raise RuntimeError("%s exited %d: %s" % (argv, proc.returncode, proc.stderr.decode(errors="replace")[-300:]))
    return time.perf_counter() - t


def anchor(box: Box, port: int, big: Path, work: Path, env: dict) -> dict:
    work.mkdir()
    os.link(big, work / big.name)
    t_split = timed(["shar", "-q", "-L", "1000", "-o", "part", big.name], work, env)
    send = 0.0
    for part in sorted(glob.glob(str(work / "part.*"))):
        argv = [
            "s-nail",
            "-S",
            "v15-compat",
            "-S",
            "smtp-auth=none",
            "-S",
            "sendwait",
            "-S",
            "mta=smtp://127.0.0.1:%d" % port,
        ]
        send += timed([*argv, "-s", os.path.basename(part), RCPT], work, env, stdin=part)
    mails = box.take()
    # GNU unshar pipes everything after "#!/bin/sh" into sh, which stops at the first part's
    # "exit 0": each mail is saved to a file of its own, and unshar is given them all, in order.
    saved = []
    for n, raw in enumerate(mails, 1):
        saved.append(str(work / ("mail.%03d" % n)))
        Path(saved[-1]).write_bytes(raw.replace(b"\r\n", b"\n"))
    out = work / "out"
    out.mkdir()
    t_unpack = timed(["unshar", "-d", str(out), *saved], work, env)
    ok = sha(out / big.name) == sha(big) if (out / big.name).exists() else False
    return row("GNU shar -L + s-nail + unshar", t_split + send, t_unpack, mails, ok)


def ours(label: str, bindir: Path, box: Box, port: int, big: Path, work: Path, env: dict) -> dict:
    work.mkdir()
    argv = [str(bindir / "pymail"), "--transport", "smtp://127.0.0.1:%d" % port, "--max-size", "1M"]
    t_send = timed([*argv, "-s", "backup", "-a", str(big), RCPT], work, env)
    mails = box.take()
    write_mbox(work / "in.mbox", mails)
    t_unpack = timed([str(bindir / "pyunshar"), "-d", str(work / "out"), str(work / "in.mbox")], work, env)
    out = work / "out" / big.name
    return row(
        "pymail --max-size + pyunshar (%s)" % label, t_send, t_unpack, mails, out.exists() and sha(out) == sha(big)
    )


def row(name: str, send: float, unpack: float, mails: list[bytes], ok: bool) -> dict:
    return {
        "name": name,
        "send": send,
        "unpack": unpack,
        "mails": len(mails),
        "bytes": sum(len(m) for m in mails),
        "biggest": max((len(m) for m in mails), default=0),
        "ok": ok,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=20, metavar="MB", help="size of the random file (default 20)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each; the best is kept (default 3)")
    ap.add_argument("--venv", action="append", help="venv to measure (repeatable; default .venv-3.11, .venv-3.13)")
    args = ap.parse_args(argv)
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        print("bigmail_bench: aiosmtpd is missing: run it with a venv's python", file=sys.stderr)
        return 0
    missing = [t for t in ("shar", "unshar", "s-nail") if shutil.which(t) is None]
    venvs = find_venvs(args.venv, ("pymail", "pyunshar"))
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    box = Box()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Controller(box, hostname="127.0.0.1", port=port, data_size_limit=64 * MB)
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="bigmail-bench-"))
    try:
        big = tmp / "backup.tgz"
        with open(big, "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MB))
        env = dict(CHILD_ENV, HOME=str(tmp), DEAD=str(tmp / "dead.letter"))
        best: dict[str, dict] = {}
        for n in range(args.runs):
            results = []
            if not missing:
                results.append(anchor(box, port, big, tmp / ("gnu-%d" % n), env))
            for label, bindir in venvs:
                results.append(ours(label, bindir, box, port, big, tmp / ("ours-%s-%d" % (label, n)), env))
            for r in results:
                b = best.get(r["name"])
                if b is None or r["send"] + r["unpack"] < b["send"] + b["unpack"]:
                    best[r["name"]] = r
            print("  run %d/%d done" % (n + 1, args.runs), file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if missing:
        print("note: %s not installed: the anchor is skipped (apt install sharutils s-nail)" % ", ".join(missing))
    print("\n%d MB random file, every mail at most 1 MiB as sent; best of %d runs\n" % (args.size, args.runs))
    rows = [
        [
            r["name"],
            "%.2f" % r["send"],
            "%.2f" % r["unpack"],
            "%.2f" % (r["send"] + r["unpack"]),
            str(r["mails"]),
            "%.1f" % (r["bytes"] / MB),
            str(r["biggest"]),
            "yes" if r["biggest"] <= LIMIT else "NO",
            "yes" if r["ok"] else "NO",
        ]
        for r in best.values()
    ]
    print_table(
        rows, ["workflow", "split+send s", "unpack s", "total s", "mails", "MB sent", "biggest", "<=1MiB", "identical"]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
