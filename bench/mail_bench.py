#!/usr/bin/env python3
"""Benchmark pymail: start-up, a loopback send to aiosmtpd against msmtp and s-nail, peak RSS with attachments.

A standalone benchmark, not a test: it prints tables and always exits 0.
Standard library only, except aiosmtpd, imported from the venv this script runs in to start the
loopback SMTP server (in this process, in a thread).  See bench/README.md.

Units: 1 MB = 2**20 bytes, for the attachment sizes and the peak RSS; times in ms (s for attachments).
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import hashlib
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
from benchlib import (
    CHILD_ENV,
    DATA_DIR,
    DROPPED_ENV,
    MB,
    REPO_DIR,
    Result,
    find_venvs,
    print_table,
    ratio_cell,
    run_child,
    verdict,
)

MAIL_DIR = DATA_DIR / "mail"
HOME_DIR = MAIL_DIR / "home"  # an empty HOME: no ~/.config/pipemail, ~/.msmtprc or ~/.mailrc of the caller
DEAD_LETTER = MAIL_DIR / "dead.letter"  # $DEAD of every client: a failed send lands here, not in ~/dead.letter
HI_FILE = MAIL_DIR / "hi.txt"  # `echo hi`
MSMTP_FILE = MAIL_DIR / "hi-headers.txt"  # the same message with headers, for msmtp (which sends stdin as is)
OUT_FILE = MAIL_DIR / "out.eml"  # `--transport -` output of the attachment runs, removed at the end

RCPT = "a@example.org"
SUBJECT = "x"
MSMTP_FROM = "b@example.org"
SERVER_SIZE_LIMIT = 256 * MB  # announced in EHLO SIZE; aiosmtpd's default (32 MiB) is below a 50 MB attachment
APT_PACKAGES = ("msmtp", "s-nail")
APT_COMMAND = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends " + " ".join(APT_PACKAGES)

# Targets from issue 4, "Speed and memory".
TARGET_STARTUP = 1.8  # echo hi | pymail --transport - ... / python -c 'import click'
TARGET_SEND = 2.5  # echo hi | pymail --transport smtp://127.0.0.1:PORT ... / python -c 'import click'
RSS_FACTOR, RSS_BASE_MB = 3.0, 50.0  # peak RSS < 3 x attachment size + 50 MB

# The measured commands also get an empty HOME and a dead letter under bench/data/mail, and none of
# the caller's mail settings.  (benchlib's run_child passes benchlib.CHILD_ENV to every child.)
for _key in [k for k in CHILD_ENV if k.startswith("PIPEMAIL_") or k in ("XDG_CONFIG_HOME", "MAILRC", "NAILRC")]:
    del CHILD_ENV[_key]
CHILD_ENV["HOME"] = str(HOME_DIR)
CHILD_ENV["DEAD"] = str(DEAD_LETTER)
assert benchlib.CHILD_ENV is CHILD_ENV


# ---------------------------------------------------------------------------
# The loopback server


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    size: int
    content: bytes | None  # kept only while `keep` is set (the attachment checks)


class Recorder:
    """aiosmtpd handler: accept every message and note what arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.keep = False

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 (aiosmtpd's signature)
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), len(content), content if self.keep else None)
            )
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def since(self, n: int) -> list[Received]:
        with self.lock:
            return self.messages[n:]

    def drop_contents(self) -> None:
        with self.lock:
            for m in self.messages:
                m.content = None


def free_port() -> int:
    """A free loopback port (aiosmtpd 1.4.6 cannot bind port 0 itself: it then fails its own start-up check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[object, Recorder, int, str] | None:
    """An aiosmtpd Controller on 127.0.0.1 at a free port, or None (with a note) when aiosmtpd is missing."""
    try:
        import aiosmtpd
        from aiosmtpd.controller import Controller
    except ImportError:
        print(
            f"note: aiosmtpd cannot be imported by {sys.executable}; the loopback sends are skipped "
            "(run this script with a venv's python: .venv-3.11/bin/python bench/mail_bench.py)",
            file=sys.stderr,
        )
        return None
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    recorder = Recorder()
    last_error: Exception | None = None
    for _ in range(5):  # another process may take the port between free_port() and the bind
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, data_size_limit=SERVER_SIZE_LIMIT)
        try:
            controller.start()
        except Exception as e:  # noqa: BLE001 (aiosmtpd raises various errors for a taken port)
            last_error = e
            continue
        return controller, recorder, port, getattr(aiosmtpd, "__version__", "?")
    print(f"note: could not start the aiosmtpd server: {last_error}; the loopback sends are skipped", file=sys.stderr)
    return None


# ---------------------------------------------------------------------------
# Clients and commands


@dataclass
class Cmd:
    """One measured command: a label, its argv and stdin, and whether it should deliver one message."""

    label: str
    argv: list[str]
    stdin: Path | None = None
    sends: bool = False
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    delivered: int = 0
    failures: list[str] = field(default_factory=list)


def ensure_clients(install: bool) -> dict[str, str]:
    """Paths of msmtp and s-nail; installs the Debian packages when missing, if allowed and root."""
    found = {name: shutil.which(name) for name in APT_PACKAGES}
    missing = [name for name, path in found.items() if not path]
    if missing and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get (as root) ...", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            print("note: apt-get install failed; trying once more after apt-get update ...", file=sys.stderr)
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
        found = {name: shutil.which(name) for name in APT_PACKAGES}
        missing = [name for name, path in found.items() if not path]
    for name in missing:
        how = "" if install and os.geteuid() == 0 else f" (install it as root: {APT_COMMAND})"
        print(f"note: {name} not found; skipped{how}", file=sys.stderr)
    return {name: path for name, path in found.items() if path}


def pymail_argv(bindir: Path, transport: str, *extra: str) -> list[str]:
    return [str(bindir / "pymail"), "--transport", transport, *extra, "-s", SUBJECT, RCPT]


def client_cmds(clients: dict[str, str], venvs: list[tuple[str, Path]], port: int) -> list[Cmd]:
    url = f"smtp://127.0.0.1:{port}"
    cmds = [Cmd(f"pymail-{label}", pymail_argv(bindir, url), HI_FILE, sends=True) for label, bindir in venvs]
    if "msmtp" in clients:
        # msmtp sends stdin as it is: the same message, with headers
        argv = [clients["msmtp"], "--host=127.0.0.1", f"--port={port}", "--auth=off", "--tls=off"]
        cmds.append(Cmd("msmtp", [*argv, f"--from={MSMTP_FROM}", RCPT], MSMTP_FILE, sends=True))
    if "s-nail" in clients:
        # v15-compat is what allows an smtp:// URL in mta; under it smtp-auth defaults to "plain"
        # (s-nail then wants a password and sends nothing, exit 4), hence smtp-auth=none.
        # smtp-use-starttls stays unset (the default; /etc/s-nail.rc does not set it): plaintext.
        # sendwait (set by default in 14.9) makes s-nail wait for its SMTP child: the time includes the send.
        argv = [clients["s-nail"], "-S", "v15-compat", "-S", "smtp-auth=none", "-S", "sendwait"]
        cmds.append(Cmd("s-nail", [*argv, "-S", f"mta={url}", "-s", SUBJECT, RCPT], HI_FILE, sends=True))
    return cmds


def click_cmds(venvs: list[tuple[str, Path]]) -> list[Cmd]:
    return [Cmd(f"import-click-{label}", [str(b / "python"), "-c", "import click"], HI_FILE) for label, b in venvs]


# ---------------------------------------------------------------------------
# Running


def run_one(cmd: Cmd, recorder: Recorder | None, stdout: Path | str = os.devnull) -> Result:
    """Run cmd once; for a sending command, check that exactly one message arrived, for RCPT, holding 'hi'."""
    before = recorder.count() if recorder and cmd.sends else 0
    res = run_child(cmd.argv, cmd.stdin, stdout=stdout)
    if res.returncode != 0:
        cmd.failures.append(f"exit {res.returncode}: {res.stderr.strip()[:300]}")
        return res
    if recorder and cmd.sends:
        got = recorder.since(before)
        if not got:  # an asynchronous sender would deliver after its exit: wait a little to tell
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
                got = recorder.since(before)
            if got:
                cmd.failures.append("the message arrived after the client exited (asynchronous send)")
        if len(got) != 1:
            cmd.failures.append(f"the server received {len(got)} messages for one run, not 1")
        elif got[0].rcpt_tos != [RCPT]:
            cmd.failures.append(f"the server received a message for {got[0].rcpt_tos}, not [{RCPT}]")
        else:
            cmd.delivered += 1
    return res


def time_round_robin(cmds: list[Cmd], runs: int, recorder: Recorder | None, what: str) -> None:
    """One untimed warm-up each, then `runs` rounds, each command once per round, order rotated."""
    for cmd in cmds:
        run_one(cmd, recorder)
        cmd.delivered = 0
    for run in range(runs):
        shift = run % len(cmds)
        for cmd in cmds[shift:] + cmds[:shift]:
            res = run_one(cmd, recorder)
            if res.returncode == 0:
                cmd.walls.append(res.wall)
                cmd.rss.append(res.maxrss_mb)
        print(f"  {what} run {run + 1}/{runs} done", file=sys.stderr)


def median_ms(cmd: Cmd) -> float | None:
    return statistics.median(cmd.walls) * 1e3 if cmd.walls else None


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


# ---------------------------------------------------------------------------
# Attachments


def ensure_attachment(size_mb: int) -> Path:
    """bench/data/mail/attach-NM.bin, size_mb MB of random data, made once and reused."""
    path = MAIL_DIR / f"attach-{size_mb}M.bin"
    if not path.exists() or path.stat().st_size != size_mb * MB:
        print(f"creating {path.relative_to(REPO_DIR)} ({size_mb} MB of random data) ...", file=sys.stderr)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            left = size_mb * MB
            while left:
                chunk = min(left, 8 * MB)
                f.write(os.urandom(chunk))
                left -= chunk
        os.replace(tmp, path)
    return path


def check_attachment(raw: bytes, attachment: Path) -> str | None:
    """None when the message parses and carries the body 'hi' and the attachment's bytes; else what is wrong."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    if msg["Subject"] != SUBJECT:
        return f"Subject is {msg['Subject']!r}"
    want = hashlib.sha256(attachment.read_bytes()).hexdigest()
    parts = [p for p in msg.walk() if not p.is_multipart()]
    bodies = [p for p in parts if p.get_content_disposition() != "attachment" and p.get_content_type() == "text/plain"]
    files = [p for p in parts if p.get_filename() == attachment.name]
    if not bodies or bodies[0].get_content().strip() != "hi":
        return "no text/plain body 'hi'"
    if len(files) != 1:
        return f"{len(files)} parts named {attachment.name}, not 1"
    payload = files[0].get_payload(decode=True) or b""
    if hashlib.sha256(payload).hexdigest() != want:
        return f"the attachment's bytes differ ({len(payload)} bytes decoded, {attachment.stat().st_size} sent)"
    return None


@dataclass
class RssRow:
    venv: str
    size_mb: int
    transport: str
    rss: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def rss_attachments(venvs: list[tuple[str, Path]], sizes: list[int], runs: int, server: tuple | None) -> list[RssRow]:
    """Peak RSS (and time) of pymail sending one attachment, to a file (`--transport -`) and to the server."""
    rows = []
    recorder = server[1] if server else None
    for size in sizes:
        attachment = ensure_attachment(size)
        for label, bindir in venvs:
            targets = [("- > file", "-")]
            if server:
                targets.append(("smtp loopback", f"smtp://127.0.0.1:{server[2]}"))
            for name, transport in targets:
                row = RssRow(label, size, name)
                cmd = Cmd(f"pymail-{label}", pymail_argv(bindir, transport, "-a", str(attachment)), HI_FILE)
                cmd.sends = transport != "-"
                for run in range(runs):
                    check = run == 0  # the content is checked once, outside the later runs
                    if recorder:
                        recorder.keep = check and cmd.sends
                    before = recorder.count() if recorder else 0
                    res = run_one(cmd, recorder, stdout=OUT_FILE if transport == "-" else os.devnull)
                    if recorder:
                        recorder.keep = False
                    if res.returncode != 0:
                        continue
                    row.rss.append(res.maxrss_mb)
                    row.walls.append(res.wall)
                    if check:
                        if transport == "-":
                            raw = OUT_FILE.read_bytes()
                        else:
                            got = recorder.since(before) if recorder else []
                            raw = got[0].content if len(got) == 1 and got[0].content is not None else b""
                        problem = check_attachment(raw, attachment) if raw else "no message to check"
                        if problem:
                            row.problems.append(problem)
                        if recorder:
                            recorder.drop_contents()
                    print(
                        f"  attachment {size} MB, {label}, {name}: run {run + 1}/{runs} "
                        f"{res.wall:.2f} s, {res.maxrss_mb:.1f} MB",
                        file=sys.stderr,
                    )
                row.problems.extend(cmd.failures)
                rows.append(row)
                if OUT_FILE.exists():
                    OUT_FILE.unlink()
    return rows


# ---------------------------------------------------------------------------
# Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=20, metavar="N", help="start-up and send runs, median taken (default 20)"
    )
    parser.add_argument(
        "--rss-runs", type=int, default=3, metavar="N", help="runs per attachment size, max RSS kept (default 3)"
    )
    parser.add_argument(
        "--sizes", default="1,10,50", metavar="MB,...", help="attachment sizes in MB (default 1,10,50; '' skips)"
    )
    parser.add_argument(
        "--venv",
        action="append",
        metavar="DIR",
        help="venv with pymail (repeatable; default: .venv-3.11 and .venv-3.13 if present)",
    )
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install a missing msmtp/s-nail")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes: comma-separated whole numbers of MB")
    if args.runs < 1 or args.rss_runs < 1 or any(s < 1 for s in sizes):
        parser.error("--runs, --rss-runs and the sizes must be at least 1")

    venvs = find_venvs(args.venv, ("pymail",))
    if not venvs:
        raise SystemExit("bench: no venv with pymail found (--venv DIR)")
    HOME_DIR.mkdir(parents=True, exist_ok=True)
    HI_FILE.write_bytes(b"hi\n")
    MSMTP_FILE.write_bytes(f"From: {MSMTP_FROM}\nTo: {RCPT}\nSubject: {SUBJECT}\n\nhi\n".encode())
    if DEAD_LETTER.exists():
        DEAD_LETTER.unlink()
    clients = ensure_clients(not args.no_install)

    server = start_server()
    try:
        return report(args, sizes, venvs, clients, server)
    finally:
        if server:
            server[0].stop()


def report(
    args: argparse.Namespace,
    sizes: list[int],
    venvs: list[tuple[str, Path]],
    clients: dict[str, str],
    server: tuple | None,
) -> int:
    recorder = server[1] if server else None
    misses = 0
    problems: list[str] = []

    # --- start-up, outside any server
    print(f"start-up, {args.runs} alternating runs ...", file=sys.stderr)
    pm_local = {label: Cmd(f"pymail-{label}", pymail_argv(b, "-"), HI_FILE) for label, b in venvs}
    clicks = {label: c for (label, _), c in zip(venvs, click_cmds(venvs), strict=True)}
    bare = {label: Cmd(f"pass-{label}", [str(b / "python"), "-c", "pass"], HI_FILE) for label, b in venvs}
    for label, _ in venvs:  # what `--transport -` printed, once, outside the timed runs
        res = run_one(pm_local[label], None, stdout=OUT_FILE)
        text = OUT_FILE.read_bytes() if OUT_FILE.exists() else b""
        if res.returncode == 0 and not (b"\nSubject: x\n" in text and text.rstrip().endswith(b"\nhi")):
            problems.append(f"pymail-{label} --transport -: unexpected output {text[:200]!r}")
    start_cmds = [c for label, _ in venvs for c in (pm_local[label], clicks[label], bare[label])]
    time_round_robin(start_cmds, args.runs, None, "start-up")

    # --- loopback sends
    send_cmds: list[Cmd] = []
    send_clicks: dict[str, Cmd] = {}
    if server:
        print(f"loopback sends, {args.runs} alternating runs ...", file=sys.stderr)
        send_cmds = client_cmds(clients, venvs, server[2])
        send_clicks = {label: c for (label, _), c in zip(venvs, click_cmds(venvs), strict=True)}
        time_round_robin(send_cmds + list(send_clicks.values()), args.runs, recorder, "send")

    # --- attachments
    rss_rows = []
    if sizes:
        what = f"peak RSS with attachments of {', '.join(map(str, sizes))} MB, {args.rss_runs} runs each ..."
        print(what, file=sys.stderr)
        rss_rows = rss_attachments(venvs, sizes, args.rss_runs, server)
    floor = max(run_child(["true"]).maxrss_mb for _ in range(3))

    # --- header
    print()
    print('pipemail mail benchmark (issue 4, "Speed and memory")')
    dropped = ", ".join(f"{k}={os.environ[k]}" for k in DROPPED_ENV) or "none"
    print(f"environment of the commands: PYTHON* variables dropped ({dropped}), byte code in bench/data/pycache,")
    home, dead = HOME_DIR.relative_to(REPO_DIR), DEAD_LETTER.relative_to(REPO_DIR)
    print(f"  HOME={home} (empty), DEAD={dead}, no PIPEMAIL_*/XDG_CONFIG_HOME/MAILRC; stdin: a file holding 'hi'")
    if server:
        print(
            f"server: aiosmtpd {server[3]} Controller in this process on 127.0.0.1:{server[2]}, "
            f"EHLO SIZE {SERVER_SIZE_LIMIT // MB} MB, no TLS, no AUTH"
        )
    else:
        print("server: none (aiosmtpd missing or failed to start): loopback sends skipped")

    # --- start-up table
    print()
    print(
        f"Start-up, median of {args.runs} alternating runs, ms "
        f"(target: pymail --transport - / python -c 'import click' <= {TARGET_STARTUP})"
    )
    rows = []
    for label, _ in venvs:
        t_pm, t_click, t_bare = median_ms(pm_local[label]), median_ms(clicks[label]), median_ms(bare[label])
        ratio_s, missed = ratio_cell(t_pm, t_click, TARGET_STARTUP)
        misses += missed
        rss = max(pm_local[label].rss, default=None)
        rows.append([label, fmt(t_pm), fmt(t_click), fmt(t_bare), ratio_s, fmt(rss)])
    print_table(
        rows,
        [
            "venv",
            "echo hi | pymail --transport - -s x a@example.org",
            "python -c 'import click'",
            "python -c pass",
            "ratio",
            "pymail peak RSS MB",
        ],
    )

    # --- send tables
    if server:
        print()
        print(f"Loopback send of 'hi' to aiosmtpd, {args.runs} alternating runs, wall time in ms")
        rows = []
        for cmd in send_cmds + list(send_clicks.values()):
            walls = [w * 1e3 for w in cmd.walls]
            label = cmd.label
            if label.startswith("import-click-"):
                label = f"python -c 'import click' ({label.removeprefix('import-click-')})"
            rss = max(cmd.rss, default=None)
            rss_s = fmt(rss) if rss is None or rss > floor + 0.05 else f"<= {floor:.1f}"
            delivered = f"{cmd.delivered}/{args.runs}" if cmd.sends else ""
            rows.append(
                [
                    label,
                    fmt(statistics.median(walls) if walls else None),
                    fmt(min(walls, default=None)),
                    fmt(max(walls, default=None)),
                    rss_s,
                    delivered,
                ]
            )
        print_table(rows, ["client", "median", "min", "max", "peak RSS MB", "delivered"])
        print("commands (stdin: a file holding 'hi'; for msmtp, the same message with From/To/Subject headers):")
        for cmd in send_cmds:
            print(f"  {cmd.label}: {' '.join(cmd.argv).replace(str(REPO_DIR) + '/', '')}")
        print(f"(peak RSS floor {floor:.1f} MB: the wrapper that starts each command; see benchlib.run_child)")

        print()
        print(f"Ratios of the loopback send (target: pymail send / python -c 'import click' <= {TARGET_SEND})")
        rows = []
        by_label = {c.label: c for c in send_cmds}
        for label, _ in venvs:
            mine = median_ms(by_label[f"pymail-{label}"])
            t_click = median_ms(send_clicks[label])
            ratio_s, missed = ratio_cell(mine, t_click, TARGET_SEND)
            misses += missed
            others = []
            for other in ("msmtp", "s-nail"):
                theirs = median_ms(by_label[other]) if other in by_label else None
                others.append(f"{mine / theirs:.2f}" if mine and theirs else "n/a")
            local = median_ms(pm_local[label])
            rows.append([label, ratio_s, *others, fmt(mine - local if mine and local else None)])
        print_table(
            rows,
            ["venv", "pymail/import click", "pymail/msmtp", "pymail/s-nail", "send - (--transport -) ms"],
        )
        for cmd in send_cmds:
            if cmd.delivered != args.runs:
                misses += 1
                problems.append(f"{cmd.label}: {cmd.delivered} of {args.runs} timed sends arrived at the server")
        total = recorder.count() if recorder else 0
        print(f"server received {total} messages in all (including warm-ups and attachment runs)")

    # --- attachments table
    if rss_rows:
        print()
        print(
            f"Peak RSS of pymail sending one attachment (random data), MB, max of {args.rss_runs} runs "
            f"(target: < {RSS_FACTOR:g} x size + {RSS_BASE_MB:g} MB)"
        )
        rows = []
        for row in rss_rows:
            limit = RSS_FACTOR * row.size_mb + RSS_BASE_MB
            peak = max(row.rss, default=None)
            if peak is None:
                misses += 1
                peak_s = "n/a MISS"
            else:
                ok = peak < limit
                misses += not ok
                peak_s = f"{peak:.1f} {verdict(ok):<4}"
            base = max(pm_local[row.venv].rss, default=None)
            per_mb = (peak - base) / row.size_mb if peak is not None and base is not None else None
            wall = statistics.median(row.walls) if row.walls else None
            checked = "bad" if row.problems else ("ok" if row.rss else "n/a")
            size, limit_s = f"{row.size_mb}", f"{limit:g}"
            rows.append([row.venv, size, row.transport, peak_s, limit_s, fmt(per_mb, ".2f"), fmt(wall, ".2f"), checked])
            problems.extend(f"attachment {row.size_mb} MB, {row.venv}, {row.transport}: {p}" for p in row.problems)
        print_table(
            rows,
            ["venv", "size MB", "transport", "peak RSS MB", "limit MB", "(peak - no att.)/size", "median s", "content"],
        )
        print("(the file: --transport - with stdout on bench/data/mail/out.eml; content: the message parses back")
        print(" to Subject x, body 'hi' and the attachment's bytes, checked on the first run of each)")

    # --- problems
    print()
    for cmd in start_cmds + send_cmds + list(send_clicks.values()):
        seen: set[str] = set()
        for f in cmd.failures:
            if f not in seen:
                seen.add(f)
                n = cmd.failures.count(f)
                problems.append(f"{cmd.label}: {f}" + (f" (x{n})" if n > 1 else ""))
    if DEAD_LETTER.exists():
        problems.append(f"a client wrote a dead letter: {DEAD_LETTER.relative_to(REPO_DIR)}")
    for p in problems:
        print(f"ERROR {p}")
    if not problems:
        checked = ["pymail --transport - printed the message"]
        if server:
            checked.append("every timed send arrived once at the server")
        if rss_rows:
            checked.append("the attachments arrived intact")
        print("checks: " + ", ".join(checked))
    if not server:
        print("NOT MEASURED: the loopback send (target <= %g x import click): no aiosmtpd server" % TARGET_SEND)
    print(f"targets missed: {misses}" if misses else "all measured targets met")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
