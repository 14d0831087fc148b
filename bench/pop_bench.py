#!/usr/bin/env python3
"""Benchmark pypop: fetch 1,000 messages of 10 KB from the test Dovecot into an mbox, next to mpop.

A standalone benchmark, not a test: it prints tables and always exits 0.
Standard library only, except that it starts the test Dovecot with tests/pop3server.py (which imports
pytest and trustme), so run it with a venv's Python, as root.  See bench/README.md.

Units: times in s, peak RSS in MB (2**20 bytes), 1 KB = 1024 bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import benchlib
from benchlib import (
    CHILD_ENV,
    DATA_DIR,
    DROPPED_ENV,
    REPO_DIR,
    Result,
    find_venvs,
    print_table,
    run_child,
    verdict,
)

POP_DIR = DATA_DIR / "pop"
HOME_DIR = POP_DIR / "home"  # an empty HOME: no ~/.config/pipemail, ~/.netrc or ~/.mpoprc of the caller
STATE_DIR = POP_DIR / "state"  # pypop's XDG_STATE_HOME, removed before every run
UIDLS_FILE = POP_DIR / "mpop.uidls"  # mpop's --uidls-file, removed before every run
OUT_FILE = POP_DIR / "out.mbox"  # the target mbox of every command, removed before every run
TESTS_DIR = REPO_DIR / "tests"

APT_COMMAND = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mpop"

# Target from issue 5, "Speed": pypop at least 1.2x mpop's speed (mpop's time / pypop's time >= 1.2).
TARGET_RATIO = 1.2

# The reference: a bare poplib loop that promises nothing (no locking, no quoting, no fsync).
POPLIB_LOOP = """\
import os, poplib, ssl, sys
port, ca, out = sys.argv[1:4]
p = poplib.POP3("127.0.0.1", int(port))
p.stls(ssl.create_default_context(cafile=ca))
p.user("pmtest")
p.pass_(os.environ["PIPEMAIL_PASSWORD"])
n = len(p.uidl()[1])
with open(out, "ab") as f:
    for i in range(1, n + 1):
        f.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\\n" + b"\\n".join(p.retr(i)[1]) + b"\\n\\n")
p.quit()
"""

# The commands get an empty HOME and none of the caller's mail settings; pypop's state goes under
# bench/data/pop.  (benchlib's run_child passes benchlib.CHILD_ENV to every child.)
for _key in [k for k in CHILD_ENV if k.startswith("PIPEMAIL_") or k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")]:
    del CHILD_ENV[_key]
CHILD_ENV["HOME"] = str(HOME_DIR)
CHILD_ENV["XDG_STATE_HOME"] = str(STATE_DIR)
assert benchlib.CHILD_ENV is CHILD_ENV


# ---------------------------------------------------------------------------
# The messages


def make_message(i: int, size: int) -> bytes:
    """Message i (0-based): headers with a serial number in Subject, printable text lines, `size` bytes, LF ends.

    No body line starts with "From ", so the mbox separators are the only "From " lines of the output."""
    head = (
        f"From: Bench Sender <sender@example.org>\n"
        f"To: pmtest@example.org\n"
        f"Subject: pop bench {i:05d}\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
        f"Message-ID: <bench-{i:05d}@example.org>\n"
        f"\n"
    ).encode()
    words = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
    lines = []
    length = len(head)
    k = i
    while length < size:
        line = " ".join(words[(k + j * 7) % len(words)] for j in range(11)) + f" {k:06d}\n"
        k += 1
        lines.append(line.encode())
        length += len(lines[-1])
    body = b"".join(lines)
    data = head + body
    return data[: size - 1] + b"\n" if len(data) >= size else data


SUBJECT_RE = re.compile(rb"^Subject: pop bench (\d{5})$", re.M)
SEPARATOR_RE = re.compile(rb"^From [^\n]*\n", re.M)


def check_mbox(path: Path, messages: list[bytes]) -> str | None:
    """None when the mbox at path holds each message exactly once with its body intact, else what is wrong."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "no mbox written"
    if not data.startswith(b"From "):
        return "the mbox does not start with a From line"
    parts = SEPARATOR_RE.split(data)[1:]
    if len(parts) != len(messages):
        return f"{len(parts)} messages in the mbox, not {len(messages)}"
    seen = set()
    for part in parts:
        if not part.endswith(b"\n\n"):
            return "a message not followed by a blank line"
        part = part[:-1]
        m = SUBJECT_RE.search(part.split(b"\n\n", 1)[0])
        if not m:
            return "a message without its Subject"
        i = int(m.group(1))
        if i in seen or i >= len(messages):
            return f"message {i} twice or unknown"
        seen.add(i)
        want_body = messages[i].split(b"\n\n", 1)[1]
        if part.split(b"\n\n", 1)[1] != want_body:
            return f"the body of message {i} differs"
    return None


# ---------------------------------------------------------------------------
# The server


def fs_type(path: Path) -> str:
    """The type of the filesystem holding path (from /proc/mounts), or '?'."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and str(path).startswith(fields[1].rstrip("/") + "/") and len(fields[1]) > len(best):
                    best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def default_server_parent() -> Path:
    """/dev/shm when it is a writable tmpfs, else /tmp (where the tests put the server)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and fs_type(shm / "x") == "tmpfs":
        return shm
    return Path("/tmp")


def start_dovecot(parent: Path):
    """The tests' Dovecot (tests/pop3server.py), started as its pytest fixture does, or None with a note.

    The one difference: its directory (config, Maildir, certificates) is made under `parent`, not /tmp.
    pop3server calls tempfile.mkdtemp(prefix=..., dir="/tmp"); its module-level name `tempfile` is
    replaced, for the construction only, by a shim that passes dir=parent."""
    sys.path.insert(0, str(TESTS_DIR))
    try:
        import pop3server
    except ImportError as e:
        print(f"note: cannot import tests/pop3server.py ({e}): run this with a venv's python", file=sys.stderr)
        return None
    if os.geteuid() != 0:
        print("note: the test Dovecot needs root (it serves mail as pmtest): nothing measured", file=sys.stderr)
        return None

    import tempfile

    class InParent:
        @staticmethod
        def mkdtemp(prefix: str | None = None, dir: str | None = None) -> str:  # noqa: A002 (tempfile's name)
            return tempfile.mkdtemp(prefix=prefix, dir=parent)

    try:  # pop3server reports a missing prerequisite with pytest.fail, an exception outside pytest
        pop3server.tempfile = InParent
        try:
            server = pop3server.Dovecot(pop3server.binary("dovecot"), pop3server.binary("doveadm"))
        finally:
            pop3server.tempfile = tempfile
        return server.start()
    except BaseException as e:  # noqa: BLE001 (pytest's Failed is a BaseException)
        if isinstance(e, KeyboardInterrupt):
            raise
        print(f"note: the test Dovecot did not start: {e}", file=sys.stderr)
        return None


def dovecot_version() -> str:
    try:
        out = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, env=CHILD_ENV).stdout
    except OSError:
        out = ""
    return out.split()[0] if out.split() else "?"


def refill(server, messages: list[bytes]) -> None:
    """The user's Maildir holds exactly `messages`, freshly delivered into new/."""
    server.clear(server.user)
    for i, raw in enumerate(messages):
        server.put(server.user, raw, name=f"bench.{i:05d}.pipemail")


def prime(server) -> None:
    """One POP3 session (STAT, UIDL) so that Dovecot has indexed the new messages before the timed run."""
    import poplib

    p = poplib.POP3(server.host, server.port, timeout=30)
    try:
        p.stls(server.ssl_context())
        p.user(server.user)
        p.pass_(server.password)
        p.stat()
        p.uidl()
    finally:
        p.quit()


# ---------------------------------------------------------------------------
# Clients and commands


@dataclass
class Cmd:
    label: str
    argv: list[str]
    walls: dict[str, list[float]] = field(default_factory=lambda: {"fresh": [], "primed": []})
    rss: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def ensure_mpop(install: bool) -> str | None:
    """The path of mpop; installs the Debian package when missing, if allowed and root."""
    path = shutil.which("mpop")
    if not path and install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing mpop with apt-get (as root) ...", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mpop"]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            print("note: apt-get install failed; trying once more after apt-get update ...", file=sys.stderr)
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
        path = shutil.which("mpop")
    if not path:
        how = "" if install and os.geteuid() == 0 else f" (install it as root: {APT_COMMAND})"
        print(f"note: mpop not found; skipped{how}", file=sys.stderr)
    return path


def mpop_version(mpop: str) -> str:
    out = subprocess.run([mpop, "--version"], capture_output=True, text=True, env=CHILD_ENV).stdout
    m = re.search(r"mpop version (\S+)", out)
    return m.group(1) if m else "?"


def make_cmds(venvs: list[tuple[str, Path]], mpop: str | None, server) -> list[Cmd]:
    port, ca = server.port, str(server.ca_file)
    cmds = []
    for label, bindir in venvs:
        argv = [str(bindir / "pypop"), "--server", f"pop3://127.0.0.1:{port}", "--user", server.user]
        cmds.append(Cmd(f"pypop-{label}", [*argv, "--tls-trust-file", ca, "fetch", "--mbox", str(OUT_FILE)]))
    if mpop:
        # --host: command-line settings only, no configuration file.  -q: no progress output.
        # --auth=plain: SASL PLAIN, what pypop picks from Dovecot's CAPA (one round trip).
        argv = [mpop, "-q", "--host=127.0.0.1", f"--port={port}", f"--user={server.user}"]
        argv += [f"--passwordeval=echo {server.password}", "--tls=on", "--tls-starttls=on", f"--tls-trust-file={ca}"]
        argv += ["--auth=plain", f"--delivery=mbox,{OUT_FILE}", f"--uidls-file={UIDLS_FILE}"]
        argv += ["--only-new=off", "--keep=on", "--received-header=off"]
        cmds.append(Cmd("mpop", argv))
    for label, bindir in venvs:
        argv = [str(bindir / "python"), "-c", POPLIB_LOOP, str(port), ca, str(OUT_FILE)]
        cmds.append(Cmd(f"poplib-loop-{label}", argv))
    return cmds


def reset_client_state() -> None:
    """No target mbox, no pypop state (UIDLs, lock, pending record), no mpop UIDL file."""
    for path in (OUT_FILE, UIDLS_FILE, Path(str(OUT_FILE) + ".lock")):
        if path.exists():
            path.unlink()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    STATE_DIR.mkdir(parents=True)


def run_one(cmd: Cmd, server, messages: list[bytes], primed: bool) -> Result | None:
    """Refill the Maildir, reset the client's state, (prime,) sync, then run cmd and check the mbox."""
    refill(server, messages)
    if primed:
        prime(server)
    reset_client_state()
    os.sync()  # write-back of the refill and of earlier runs does not land in the timed run
    res = run_child(cmd.argv)
    if res.returncode != 0:
        cmd.failures.append(f"exit {res.returncode}: {res.stderr.strip()[:300]}")
        return None
    problem = check_mbox(OUT_FILE, messages)
    if problem:
        cmd.failures.append(problem)
        return None
    if server.count() != len(messages):
        cmd.failures.append(f"{server.count()} messages left on the server, not {len(messages)} (--keep)")
    return res


def time_round_robin(cmds: list[Cmd], runs: int, modes: list[str], server, messages: list[bytes]) -> None:
    """One untimed warm-up each, then `runs` rounds, each command once per round and mode, order rotated."""
    for cmd in cmds:
        run_one(cmd, server, messages, primed=False)
    order = [(cmd, mode) for mode in modes for cmd in cmds]
    for run in range(runs):
        shift = run % len(order)
        for cmd, mode in order[shift:] + order[:shift]:
            res = run_one(cmd, server, messages, primed=mode == "primed")
            if res is not None:
                cmd.walls[mode].append(res.wall)
                cmd.rss.append(res.maxrss_mb)
        line = ", ".join(f"{c.label} {c.walls[m][-1]:.3f}" for c, m in order if m == modes[0] and c.walls[m])
        print(f"  run {run + 1}/{runs} ({modes[0]}): {line}", file=sys.stderr)


def startup_times(venvs: list[tuple[str, Path]], mpop: str | None, runs: int) -> list[tuple[str, float]]:
    """Median wall time of `pypop --version`, `python -c pass` and `mpop --version`: the fixed cost of a start."""
    argvs = [(f"pypop-{label} --version", [str(b / "pypop"), "--version"]) for label, b in venvs]
    argvs += [(f"python-{label} -c pass", [str(b / "python"), "-c", "pass"]) for label, b in venvs]
    if mpop:
        argvs.append(("mpop --version", [mpop, "--version"]))
    walls: dict[str, list[float]] = {label: [] for label, _ in argvs}
    for _ in range(max(runs, 5) + 1):  # the first round is a warm-up
        for label, argv in argvs:
            walls[label].append(run_child(argv).wall)
    return [(label, statistics.median(w[1:])) for label, w in walls.items()]


# ---------------------------------------------------------------------------
# Report


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, metavar="N", help="timed runs of each command (default 5)")
    parser.add_argument("--messages", type=int, default=1000, metavar="N", help="messages to fetch (default 1000)")
    parser.add_argument("--size", type=int, default=10240, metavar="BYTES", help="size of each (default 10240)")
    parser.add_argument(
        "--primed",
        action="store_true",
        help="also time runs after a STAT/UIDL session has made Dovecot index the new messages",
    )
    parser.add_argument(
        "--venv",
        action="append",
        metavar="DIR",
        help="venv with pypop (repeatable; default: .venv-3.11 and .venv-3.13 if present)",
    )
    parser.add_argument(
        "--server-dir",
        metavar="DIR",
        help="where the server's directory (and Maildir) is made (default: /dev/shm if a tmpfs, else /tmp)",
    )
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install a missing mpop")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.messages < 1 or args.size < 200:
        parser.error("--runs and --messages must be at least 1, --size at least 200")

    venvs = find_venvs(args.venv, ("pypop",))
    if not venvs:
        raise SystemExit("bench: no venv with pypop found (--venv DIR)")
    mpop = ensure_mpop(not args.no_install)
    shutil.rmtree(HOME_DIR, ignore_errors=True)
    HOME_DIR.mkdir(parents=True)
    messages = [make_message(i, args.size) for i in range(args.messages)]

    server = start_dovecot(Path(args.server_dir) if args.server_dir else default_server_parent())
    if server is None:
        raise SystemExit("bench: no server, nothing measured")
    CHILD_ENV["PIPEMAIL_PASSWORD"] = server.password  # pypop's and the poplib loop's password
    try:
        return report(args, venvs, mpop, server, messages)
    finally:
        server.close()
        reset_client_state()
        shutil.rmtree(STATE_DIR, ignore_errors=True)


def report(args: argparse.Namespace, venvs: list[tuple[str, Path]], mpop: str | None, server, messages) -> int:
    modes = ["fresh", "primed"] if args.primed else ["fresh"]
    cmds = make_cmds(venvs, mpop, server)
    print(
        f"{len(cmds)} commands x {args.runs} runs x {len(modes)} mode(s), each fetching {args.messages} messages ...",
        file=sys.stderr,
    )
    time_round_robin(cmds, args.runs, modes, server, messages)
    floor = max(run_child(["true"]).maxrss_mb for _ in range(3))
    startup = startup_times(venvs, mpop, args.runs)
    misses = 0
    problems: list[str] = []
    total_mb = args.messages * args.size / benchlib.MB

    print()
    print('pipemail POP3 fetch benchmark (issue 5, "Speed")')
    dropped = ", ".join(f"{k}={os.environ[k]}" for k in DROPPED_ENV) or "none"
    print(f"environment of the commands: PYTHON* variables dropped ({dropped}), byte code in bench/data/pycache,")
    print(
        f"  HOME={HOME_DIR.relative_to(REPO_DIR)} (empty), XDG_STATE_HOME={STATE_DIR.relative_to(REPO_DIR)} "
        "(emptied before each run), no other PIPEMAIL_*/XDG_CONFIG_HOME"
    )
    print(
        f"server: Dovecot {dovecot_version()} (tests/pop3server.py) on 127.0.0.1:{server.port}, "
        f"STLS with the test CA, user {server.user};"
    )
    print(f"  its directory and the Maildir: {server.dir} ({fs_type(server.dir)}); the mbox: {fs_type(OUT_FILE)}")
    print(
        f"fetched: {args.messages} messages of {args.size} bytes (LF line ends in the Maildir; {total_mb:.1f} MB), "
        "all new: Maildir refilled, mbox and UIDL state removed before every run"
    )
    if mpop:
        print(f"mpop: {mpop_version(mpop)}")

    for mode in modes:
        print()
        what = {
            "fresh": "the Maildir just refilled (Dovecot indexes the new messages during the fetch)",
            "primed": "the Maildir refilled, then one STAT/UIDL session (Dovecot has indexed them)",
        }[mode]
        print(f"Fetch into an mbox, {args.runs} alternating runs, {what}")
        rows = []
        for cmd in cmds:
            walls = cmd.walls[mode]
            best = min(walls, default=None)
            med = statistics.median(walls) if walls else None
            rss = max(cmd.rss, default=None)
            rss_s = fmt(rss, ".1f") if rss is None or rss > floor + 0.05 else f"<= {floor:.1f}"
            rows.append(
                [
                    cmd.label,
                    fmt(best),
                    fmt(med),
                    fmt(args.messages / best if best else None, ".0f"),
                    fmt(args.messages / med if med else None, ".0f"),
                    rss_s,
                    f"{len(walls)}/{args.runs}",
                ]
            )
        print_table(rows, ["command", "best s", "median s", "best msg/s", "median msg/s", "peak RSS MB", "ok runs"])

        by_label = {c.label: c for c in cmds}
        if mpop:
            rows = []
            theirs = by_label["mpop"].walls[mode]
            loops = {label: by_label[f"poplib-loop-{label}"].walls[mode] for label, _ in venvs}
            for label, _ in venvs:
                mine = by_label[f"pypop-{label}"].walls[mode]
                row = [f"pypop-{label}"]
                for pick in (min, statistics.median):
                    if mine and theirs:
                        ratio = pick(theirs) / pick(mine)
                        ok = ratio >= TARGET_RATIO
                        if mode == "fresh":
                            misses += not ok
                        row.append(f"{ratio:.2f} {verdict(ok):<4}")
                    else:
                        if mode == "fresh":
                            misses += 1
                        row.append("n/a MISS")
                loop = loops[label]
                row.append(fmt(statistics.median(loop) / statistics.median(mine), ".2f") if loop and mine else "n/a")
                rows.append(row)
            print(
                f"Ratio mpop time / pypop time (target >= {TARGET_RATIO}{'' if mode == 'fresh' else ', information'})"
            )
            print_table(rows, ["", "best", "median", "poplib loop / pypop (median)"])

    print()
    print("commands (the target mbox: bench/data/pop/out.mbox; PIPEMAIL_PASSWORD in the environment):")
    for cmd in cmds:
        shown = " ".join(a if " " not in a and "\n" not in a else repr(a) for a in cmd.argv)
        if cmd.label.startswith("poplib-loop"):
            shown = f"{cmd.argv[0]} -c POPLIB_LOOP {' '.join(cmd.argv[3:])}"
        print(f"  {cmd.label}: {shown.replace(str(REPO_DIR) + '/', '')}")
    print(f"(peak RSS: max over the timed runs; floor {floor:.1f} MB, the wrapper that starts each command)")
    shown = ", ".join(f"{label} {wall * 1e3:.1f} ms" for label, wall in startup)
    print(f"start-up, for scale (median of {max(args.runs, 5)} runs): {shown}")

    print()
    for cmd in cmds:
        seen: set[str] = set()
        for f in cmd.failures:
            if f not in seen:
                seen.add(f)
                n = cmd.failures.count(f)
                problems.append(f"{cmd.label}: {f}" + (f" (x{n})" if n > 1 else ""))
    for p in problems:
        print(f"ERROR {p}")
    if not problems:
        print(f"checks: after every run the mbox held the {args.messages} messages once each, bodies intact")
    if not mpop:
        misses += 1
        print(f"NOT MEASURED: mpop is missing ({APT_COMMAND})")
    print(f"targets missed: {misses}" if misses else "all measured targets met")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
