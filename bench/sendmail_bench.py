#!/usr/bin/env python3
"""Benchmark pysendmail: start-up, and sending small messages to aiosmtpd as cron and mail(1) do,
against msmtp used as sendmail and pymail; queueing with the server down, and the queue run.

A standalone benchmark, not a test: it prints tables and always exits 0.
Standard library only, except aiosmtpd, imported from the venv this script runs in to start the
loopback SMTP server (in this process, in a thread), as bench/mail_bench.py does, whose server,
timing loop and checks it shares.  See bench/README.md.

Times in ms; 1 MB = 2**20 bytes for the peak RSS.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import shutil
import socket
import statistics
import sys
from pathlib import Path

import benchlib
from benchlib import CHILD_ENV, DATA_DIR, DROPPED_ENV, REPO_DIR, find_venvs, print_table, ratio_cell, run_child
from mail_bench import RCPT, Cmd, fmt, free_port, median_ms, start_server, time_round_robin

SM_DIR = DATA_DIR / "sendmail"
HOME_DIR = SM_DIR / "home"  # an empty HOME: no ~/.config/pipemail, ~/.msmtprc of the caller
DEAD_LETTER = SM_DIR / "dead.letter"
CONFIG = SM_DIR / "config.toml"  # account "up" (the server, or a closed port while queueing), one queue
QUEUE_DIR = SM_DIR / "queue"
ALIASES = SM_DIR / "aliases"  # root: a@example.org, for pysendmail and msmtp alike
CRON_FILE = SM_DIR / "cron.eml"  # the message Debian's cron hands to sendmail
PLAIN_FILE = SM_DIR / "plain.eml"  # a message with From, To and Subject, for -t

ACCOUNT_FROM = "b@example.org"
CRON_ARGV = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]  # what cron 3.0pl1 passes (MAILTO=root)

# Targets: pysendmail's start-up and sending speed "as pymail's" (issue 12), that is pymail's
# own targets of issue 4, "Speed and memory".
TARGET_STARTUP = 1.8  # pysendmail -bi / python -c 'import click'
TARGET_SEND = 2.5  # pysendmail sending cron's message / python -c 'import click'

# The measured commands get an empty HOME, a dead letter and the benchmark's configuration
# under bench/data/sendmail (importing mail_bench already dropped the caller's PIPEMAIL_*,
# XDG_CONFIG_HOME and MAILRC); /etc/pipemail is never read.
CHILD_ENV["HOME"] = str(HOME_DIR)
CHILD_ENV["DEAD"] = str(DEAD_LETTER)
CHILD_ENV["PIPEMAIL_CONFIG"] = str(CONFIG)
CHILD_ENV["PIPEMAIL_SYSTEM_CONFIG"] = str(SM_DIR / "no-system-config.toml")
assert benchlib.CHILD_ENV is CHILD_ENV


def cron_message() -> bytes:
    """cron's message as observed on Debian 12 (a stub sendmail logged it), for an `echo hi` job."""
    return (
        b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@vm> echo hi\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n"
        b"X-Cron-Env: <MAILTO=root>\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n"
        b"X-Cron-Env: <PATH=/usr/bin:/bin>\nX-Cron-Env: <LOGNAME=root>\n\nhi\n"
    )


def write_config(port: int) -> None:
    """The configuration: account "up" sends to ``port`` (the server, or a closed port while messages
    are queued: a queued message goes out through the account it was queued for)."""
    CONFIG.write_text(
        'default = "up"\nqueue = "%s"\n'
        '[accounts.up]\nfrom = "Bench <%s>"\ntransport = "smtp://127.0.0.1:%d"\ntls = "none"\n'
        'domain = "example.org"\naliases = "%s"\n' % (QUEUE_DIR, ACCOUNT_FROM, port, ALIASES)
    )
    CONFIG.chmod(0o600)


LIVE_PORT = 0  # the server's port, set by write_setup


def write_setup(port: int) -> None:
    global LIVE_PORT
    LIVE_PORT = port
    HOME_DIR.mkdir(parents=True, exist_ok=True)
    ALIASES.write_text("root: %s\n" % RCPT)
    write_config(port)
    CRON_FILE.write_bytes(cron_message())
    PLAIN_FILE.write_bytes(b"From: Bench <%s>\nTo: %s\nSubject: x\n\nhi\n" % (ACCOUNT_FROM.encode(), RCPT.encode()))
    if DEAD_LETTER.exists():
        DEAD_LETTER.unlink()
    if QUEUE_DIR.exists():
        shutil.rmtree(QUEUE_DIR)


def msmtp_argv(msmtp: str, port: int, *args: str) -> list[str]:
    """msmtp as /usr/sbin/sendmail (msmtp-mta), its settings on the command line (no msmtprc)."""
    return [msmtp, "--host=127.0.0.1", f"--port={port}", "--auth=off", "--tls=off", f"--from={ACCOUNT_FROM}",
            f"--aliases={ALIASES}", *args]  # fmt: skip


def check_rewrite(bindir: Path, recorder) -> str | None:  # noqa: ANN001 (mail_bench.Recorder)
    """One untimed send of cron's message: None when it arrived rewritten as pysendmail should."""
    before = recorder.count()
    recorder.keep = True
    try:
        res = run_child([str(bindir / "pysendmail"), *CRON_ARGV], CRON_FILE)
    finally:
        recorder.keep = False
    got = recorder.since(before)
    try:
        return _rewrite_problems(res, got)
    finally:
        recorder.drop_contents()


def _rewrite_problems(res, got) -> str | None:  # noqa: ANN001 (benchlib.Result, mail_bench.Received)
    if res.returncode != 0 or len(got) != 1 or got[0].content is None:
        return f"exit {res.returncode}, {len(got)} messages: {res.stderr.strip()[:300]}"
    msg = email.message_from_bytes(got[0].content, policy=email.policy.default)
    want_from = b'From: "Cron Daemon (%s)" <%s>' % (socket.gethostname().split(".")[0].encode(), ACCOUNT_FROM.encode())
    problems = []
    if got[0].mail_from != ACCOUNT_FROM or got[0].rcpt_tos != [RCPT]:
        problems.append(f"envelope {got[0].mail_from} -> {got[0].rcpt_tos}")
    raw_from = [ln for ln in got[0].content.split(b"\r\n") if ln.startswith(b"From:")]
    if raw_from != [want_from]:
        problems.append(f"From lines {raw_from}, not {want_from!r}")
    if msg["Date"] is None or msg["Message-ID"] is None:
        problems.append("no Date or no Message-ID")
    return "; ".join(problems) or None


def queue_round(bindir: Path, n: int, recorder) -> dict:  # noqa: ANN001 (mail_bench.Recorder)
    """n cron messages queued while the account's server is down (a closed port), then one
    `pysendmail -q` once it is back: the time of each queueing, of the queue run, and whether
    exactly n arrived once."""
    out: dict = {"queue_walls": [], "queue_rss": [], "problems": []}
    write_config(free_port())  # the server is down
    for _ in range(n):
        res = run_child([str(bindir / "pysendmail"), *CRON_ARGV], CRON_FILE)
        if res.returncode != 0 or "queued as" not in res.stderr:
            out["problems"].append(f"queueing: exit {res.returncode}: {res.stderr.strip()[:200]}")
            continue
        out["queue_walls"].append(res.wall)
        out["queue_rss"].append(res.maxrss_mb)
    write_config(LIVE_PORT)  # the server is back
    before = recorder.count()
    res = run_child([str(bindir / "pysendmail"), "-q"])
    got = recorder.since(before)
    out["run_wall"], out["run_rss"] = res.wall, res.maxrss_mb
    if res.returncode != 0:
        out["problems"].append(f"-q: exit {res.returncode}: {res.stderr.strip()[:200]}")
    if len(got) != len(out["queue_walls"]) or any(m.rcpt_tos != [RCPT] for m in got):
        out["problems"].append(f"-q: {len(got)} messages arrived for {len(out['queue_walls'])} queued")
    left = list((QUEUE_DIR / "q").glob("*.msg")) if (QUEUE_DIR / "q").exists() else []
    if left:
        out["problems"].append(f"-q: {len(left)} messages left in the queue")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, metavar="N", help="start-up and send runs (default 20)")
    parser.add_argument(
        "--queue", type=int, default=20, metavar="N", help="messages queued, then sent by -q (default 20)"
    )
    parser.add_argument(
        "--venv",
        action="append",
        metavar="DIR",
        help="venv with pysendmail (repeatable; default .venv-3.11, .venv-3.13)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.queue < 0:
        parser.error("--runs must be at least 1, --queue at least 0")
    venvs = find_venvs(args.venv, ("pysendmail", "pymail"))
    if not venvs:
        raise SystemExit("bench: no venv with pysendmail and pymail found (--venv DIR)")
    msmtp = shutil.which("msmtp")
    if not msmtp:
        print("note: msmtp not found; skipped (apt-get install msmtp)", file=sys.stderr)
    server = start_server()
    if server is None:
        raise SystemExit("bench: no aiosmtpd server: run it with a venv's python (.venv-3.11/bin/python)")
    try:
        write_setup(server[2])
        return report(args, venvs, msmtp, server)
    finally:
        server[0].stop()


def report(args: argparse.Namespace, venvs: list[tuple[str, Path]], msmtp: str | None, server: tuple) -> int:
    _, recorder, port, version = server
    misses = 0
    problems: list[str] = []

    # --- start-up
    print(f"start-up, {args.runs} alternating runs ...", file=sys.stderr)
    starts: dict[str, dict[str, Cmd]] = {}
    for label, b in venvs:
        starts[label] = {
            "bi": Cmd(f"pysendmail -bi ({label})", [str(b / "pysendmail"), "-bi"]),
            "help": Cmd(f"pysendmail --help ({label})", [str(b / "pysendmail"), "--help"]),
            "pymail": Cmd(f"pymail --help ({label})", [str(b / "pymail"), "--help"]),
            "click": Cmd(f"python -c 'import click' ({label})", [str(b / "python"), "-c", "import click"]),
            "pass": Cmd(f"python -c pass ({label})", [str(b / "python"), "-c", "pass"]),
        }
    start_cmds = [c for d in starts.values() for c in d.values()]
    if msmtp:
        start_cmds.append(Cmd("msmtp --version", [msmtp, "--version"]))
    time_round_robin(start_cmds, args.runs, None, "start-up")

    # --- sends
    print(f"loopback sends, {args.runs} alternating runs ...", file=sys.stderr)
    for label, b in venvs:
        problem = check_rewrite(b, recorder)
        if problem:
            problems.append(f"pysendmail ({label}), cron's message: {problem}")
    sends: list[Cmd] = []
    for label, b in venvs:
        sm = str(b / "pysendmail")
        sends.append(Cmd(f"pysendmail {' '.join(CRON_ARGV)} ({label})", [sm, *CRON_ARGV], CRON_FILE, sends=True))
        sends.append(Cmd(f"pysendmail -i -t ({label})", [sm, "-i", "-t"], PLAIN_FILE, sends=True))
        sends.append(Cmd(f"pymail -t ({label})", [str(b / "pymail"), "-t"], PLAIN_FILE, sends=True))
    if msmtp:
        sends.append(Cmd(f"msmtp {' '.join(CRON_ARGV)}", msmtp_argv(msmtp, port, *CRON_ARGV), CRON_FILE, sends=True))
        sends.append(Cmd("msmtp -i -t", msmtp_argv(msmtp, port, "-i", "-t"), PLAIN_FILE, sends=True))
    send_clicks = [
        Cmd(f"python -c 'import click' ({label})", [str(b / "python"), "-c", "import click"]) for label, b in venvs
    ]
    time_round_robin(sends + send_clicks, args.runs, recorder, "send")

    # --- the queue
    queues = {}
    if args.queue:
        print(f"queue: {args.queue} messages queued (server down), then pysendmail -q ...", file=sys.stderr)
        for label, b in venvs:
            queues[label] = queue_round(b, args.queue, recorder)
            problems.extend(f"queue ({label}): {p}" for p in queues[label]["problems"])
    floor = max(run_child(["true"]).maxrss_mb for _ in range(3))

    # --- header
    print()
    print('pipemail sendmail benchmark (issue 12: start-up and sending speed "as pymail\'s", against msmtp)')
    dropped = ", ".join(f"{k}={os.environ[k]}" for k in DROPPED_ENV) or "none"
    print(f"environment of the commands: PYTHON* variables dropped ({dropped}), byte code in bench/data/pycache,")
    print(f"  HOME={HOME_DIR.relative_to(REPO_DIR)} (empty), PIPEMAIL_CONFIG={CONFIG.relative_to(REPO_DIR)}")
    print(f"server: aiosmtpd {version} Controller in this process on 127.0.0.1:{port}, no TLS, no AUTH")

    def rss(cmd: Cmd) -> str:
        peak = max(cmd.rss, default=None)
        return fmt(peak) if peak is None or peak > floor + 0.05 else f"<= {floor:.1f}"

    # --- start-up table
    print()
    print(
        f"Start-up, median of {args.runs} alternating runs, ms "
        f"(target: pysendmail -bi / import click <= {TARGET_STARTUP})"
    )
    rows = []
    for label, _ in venvs:
        d = starts[label]
        ratio, missed = ratio_cell(median_ms(d["bi"]), median_ms(d["click"]), TARGET_STARTUP)
        misses += missed
        cells = [fmt(median_ms(d[k])) for k in ("bi", "help", "pymail", "click", "pass")]
        rows.append([label, *cells, ratio, rss(d["bi"])])
    header = ["venv", "pysendmail -bi", "pysendmail --help", "pymail --help", "import click", "python -c pass"]
    print_table(rows, [*header, "ratio", "peak RSS MB"])
    if msmtp:
        m = start_cmds[-1]
        print(f"msmtp --version: {fmt(median_ms(m))} ms, peak RSS {rss(m)} MB")

    # --- send table
    print()
    print(f"Loopback send of one small message to aiosmtpd, {args.runs} alternating runs, wall time in ms")
    rows = []
    for cmd in sends + send_clicks:
        walls = [w * 1e3 for w in cmd.walls]
        delivered = f"{cmd.delivered}/{args.runs}" if cmd.sends else ""
        rows.append([cmd.label, fmt(statistics.median(walls) if walls else None), fmt(min(walls, default=None)),
                     fmt(max(walls, default=None)), rss(cmd), delivered])  # fmt: skip
    print_table(
        rows,
        ["command (stdin: cron's message, or a plain one for -t)", "median", "min", "max", "peak RSS MB", "delivered"],
    )
    print("commands:")
    for cmd in sends:
        print(f"  {' '.join(cmd.argv).replace(str(REPO_DIR) + '/', '')} < {cmd.stdin.relative_to(REPO_DIR)}")
    print(f"(peak RSS floor {floor:.1f} MB: the wrapper that starts each command; see benchlib.run_child)")

    print()
    print(f"Ratios of the send (target: pysendmail, cron's argv / python -c 'import click' <= {TARGET_SEND})")
    rows = []
    by_label = {c.label: c for c in sends}
    for (label, _), click in zip(venvs, send_clicks, strict=True):
        cron = median_ms(by_label[f"pysendmail {' '.join(CRON_ARGV)} ({label})"])
        dash_t = median_ms(by_label[f"pysendmail -i -t ({label})"])
        pymail = median_ms(by_label[f"pymail -t ({label})"])
        t_click = median_ms(click)
        ratio, missed = ratio_cell(cron, t_click, TARGET_SEND)
        misses += missed
        m_cron = median_ms(by_label.get(f"msmtp {' '.join(CRON_ARGV)}", Cmd("", [])))
        m_t = median_ms(by_label.get("msmtp -i -t", Cmd("", [])))
        rows.append([label, ratio, fmt(dash_t / pymail if dash_t and pymail else None, ".2f"),
                     fmt(cron / m_cron if cron and m_cron else None, ".2f"),
                     fmt(dash_t / m_t if dash_t and m_t else None, ".2f")])  # fmt: skip
    print_table(
        rows,
        ["venv", "cron argv/import click", "-t: pysendmail/pymail", "cron: pysendmail/msmtp", "-t: pysendmail/msmtp"],
    )
    for cmd in sends:
        if cmd.delivered != args.runs:
            misses += 1
            problems.append(f"{cmd.label}: {cmd.delivered} of {args.runs} timed sends arrived at the server")

    # --- queue table
    if queues:
        print()
        print(f"The queue: {args.queue} of cron's messages with the server down (each queued, exit 0), then one")
        print("`pysendmail -q` sending them all over one SMTP session; ms")
        rows = []
        for label, q in queues.items():
            walls = [w * 1e3 for w in q["queue_walls"]]
            run_ms = q["run_wall"] * 1e3
            per = run_ms / len(walls) if walls else None
            queue_one = fmt(statistics.median(walls) if walls else None)
            rows.append(
                [label, queue_one, fmt(max(q["queue_rss"], default=None)), fmt(run_ms), fmt(per), fmt(q["run_rss"])]
            )
        print_table(
            rows, ["venv", "queue one (median)", "its peak RSS MB", "-q, all", "-q per message", "-q peak RSS MB"]
        )
        print("(msmtp has no queue: with the server down it exits 75 and the message is lost to cron)")

    # --- problems
    print()
    for cmd in start_cmds + sends + send_clicks:
        for f in dict.fromkeys(cmd.failures):
            n = cmd.failures.count(f)
            problems.append(f"{cmd.label}: {f}" + (f" (x{n})" if n > 1 else ""))
    if DEAD_LETTER.exists():
        problems.append(f"a command wrote a dead letter: {DEAD_LETTER.relative_to(REPO_DIR)}")
    for p in problems:
        print(f"ERROR {p}")
    if not problems:
        print("checks: cron's message arrived rewritten (From, envelope, alias, Date, Message-ID); every timed send")
        print("arrived once; every queued message was sent once by -q and the queue is empty")
    print(f"targets missed: {misses}" if misses else "all measured targets met")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
