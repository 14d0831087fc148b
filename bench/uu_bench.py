#!/usr/bin/env python3
"""Benchmark pyuuencode / pyuudecode against GNU sharutils, busybox and the stdlib ``uu`` module.

A standalone benchmark, not a test: it prints a table and always exits 0.
Standard library only.  See bench/README.md.

Units: 1 MB = 2**20 bytes, for the input size, the throughput (MB of raw data per
second, in both directions) and the peak RSS.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    DATA_DIR,
    DROPPED_ENV,
    MB,
    REPO_DIR,
    find_venvs,
    print_table,
    run_child,
    verdict,
)

REMOTE_NAME = "f"
DEFAULT_PY311 = "/root/.pyenv/versions/3.11.7/bin/python"
DIRECTIONS = ("encode-uu", "encode-b64", "decode-uu", "decode-b64")

# Targets from issue 2, "Speed and memory".
TARGET_VS_STDLIB = 2.3
TARGET_VS_BUSYBOX = 5.0
TARGET_RSS_MB = 40.0
TARGET_STARTUP = 1.25

STDLIB_ENCODE = 'import uu, sys; uu.encode(sys.stdin.buffer, sys.stdout.buffer, "f", 0o644)'
STDLIB_DECODE = "import uu, sys; uu.decode(sys.stdin.buffer, sys.stdout.buffer)"


# ---------------------------------------------------------------------------
# Implementations


@dataclass
class Impl:
    """One implementation: a name, a kind ("gnu", "busybox", "stdlib", "ours") and per-direction commands."""

    name: str
    kind: str
    # direction -> (argv, stdin path or None); missing direction = not supported ("n/a")
    commands: dict[str, tuple[list[str], Path | None]] = field(default_factory=dict)


def make_impls(args: argparse.Namespace, files: dict[str, Path], venvs: list[tuple[str, Path]]) -> list[Impl]:
    raw, uu_in, b64_in = files["raw"], files["uu"], files["b64"]
    impls = []

    gnu_enc, gnu_dec = shutil.which("uuencode", path="/usr/bin"), shutil.which("uudecode", path="/usr/bin")
    if gnu_enc and gnu_dec:
        impls.append(
            Impl(
                "GNU",
                "gnu",
                {
                    "encode-uu": ([gnu_enc, str(raw), REMOTE_NAME], None),
                    "encode-b64": ([gnu_enc, "-m", str(raw), REMOTE_NAME], None),
                    # -o /dev/stdout, stdout on /dev/null: GNU uudecode given "-o /dev/null"
                    # chmods the device to the header's mode (as root, for every program after)
                    "decode-uu": ([gnu_dec, "-o", "/dev/stdout", str(uu_in)], None),
                    "decode-b64": ([gnu_dec, "-o", "/dev/stdout", str(b64_in)], None),
                },
            )
        )
    else:
        print("note: GNU sharutils uuencode/uudecode not found in /usr/bin; skipped", file=sys.stderr)

    busybox = shutil.which("busybox")
    if busybox:
        impls.append(
            Impl(
                "busybox",
                "busybox",
                {
                    "encode-uu": ([busybox, "uuencode", str(raw), REMOTE_NAME], None),
                    "encode-b64": ([busybox, "uuencode", "-m", str(raw), REMOTE_NAME], None),
                    "decode-uu": ([busybox, "uudecode", "-o", "/dev/stdout", str(uu_in)], None),
                    "decode-b64": ([busybox, "uudecode", "-o", "/dev/stdout", str(b64_in)], None),
                },
            )
        )
    else:
        print("note: busybox not found; skipped", file=sys.stderr)

    py311 = find_py311(args.py311)
    if py311:
        quiet = [py311, "-W", "ignore::DeprecationWarning", "-c"]
        impls.append(
            Impl(
                "stdlib-3.11",
                "stdlib",
                {
                    "encode-uu": ([*quiet, STDLIB_ENCODE], raw),
                    "decode-uu": ([*quiet, STDLIB_DECODE], uu_in),
                    # the stdlib module has no base64 mode
                },
            )
        )
    else:
        print("note: no Python 3.11 with the uu module found (--py311); stdlib skipped", file=sys.stderr)

    for label, bindir in venvs:
        enc, dec = str(bindir / "pyuuencode"), str(bindir / "pyuudecode")
        impls.append(
            Impl(
                f"ours-{label}",
                "ours",
                {
                    "encode-uu": ([enc, str(raw), REMOTE_NAME], None),
                    "encode-b64": ([enc, "-m", str(raw), REMOTE_NAME], None),
                    "decode-uu": ([dec, "-o", "/dev/stdout", str(uu_in)], None),
                    "decode-b64": ([dec, "-o", "/dev/stdout", str(b64_in)], None),
                },
            )
        )
    return impls


def find_py311(option: str | None) -> str | None:
    candidates = [option] if option else [DEFAULT_PY311, shutil.which("python3.11")]
    for cand in candidates:
        if not cand or not os.access(cand, os.X_OK):
            continue
        probe = subprocess.run(
            [cand, "-W", "ignore", "-c", "import sys, uu; print(sys.version_info[:2] < (3, 13))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return cand
    return None


# ---------------------------------------------------------------------------
# Input data


def ensure_data(size_mb: int) -> dict[str, Path]:
    """The random file of size_mb MB and its GNU encodings, made once and reused (bench/data is git-ignored)."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    raw = DATA_DIR / f"rand-{size_mb}M.bin"
    files = {"raw": raw, "uu": raw.with_suffix(".uu"), "b64": raw.with_suffix(".b64")}
    size = size_mb * MB
    if not raw.exists() or raw.stat().st_size != size:
        print(f"creating {raw.relative_to(REPO_DIR)} ({size_mb} MB of random data) ...", file=sys.stderr)
        tmp = raw.with_name(raw.name + ".tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                chunk = min(left, 8 * MB)
                f.write(os.urandom(chunk))
                left -= chunk
        os.replace(tmp, raw)
    os.chmod(raw, 0o644)  # so that every encoder's header says "begin 644 f", like the stdlib run's mode
    gnu = shutil.which("uuencode", path="/usr/bin") or shutil.which("uuencode")
    for key, flags in (("uu", []), ("b64", ["-m"])):
        out = files[key]
        if out.exists() and out.stat().st_mtime >= raw.stat().st_mtime and out.stat().st_size > size:
            continue
        if not gnu:
            raise SystemExit("bench: GNU uuencode (sharutils) is needed to make the decode inputs") from None
        print(f"creating {out.relative_to(REPO_DIR)} with GNU uuencode {' '.join(flags)} ...", file=sys.stderr)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb") as f:
            subprocess.run([gnu, *flags, str(raw), REMOTE_NAME], stdout=f, check=True)
        os.replace(tmp, out)
    return files


# ---------------------------------------------------------------------------
# Checks, timing, RSS, start-up


def check_ours(impl: Impl, files: dict[str, Path]) -> list[str]:
    """Our outputs, once, outside the timed runs: encodings identical to GNU's, decodings equal to the input."""
    problems = []
    expected = {"encode-uu": files["uu"], "encode-b64": files["b64"]}
    for direction in DIRECTIONS:
        argv, stdin = impl.commands[direction]
        fd, tmpname = tempfile.mkstemp(prefix="check-", dir=DATA_DIR)
        os.close(fd)
        try:
            if direction.startswith("encode"):
                res = run_child(argv, stdin, stdout=tmpname)
                want = expected[direction]
            else:
                os.unlink(tmpname)  # let the decoder create it
                argv = [argv[0], "-o", tmpname, *argv[3:]]
                res = run_child(argv, stdin)
                want = files["raw"]
            if res.returncode != 0:
                problems.append(f"{impl.name} {direction}: exit {res.returncode}: {res.stderr.strip()[:200]}")
            elif not os.path.exists(tmpname) or not filecmp.cmp(tmpname, want, shallow=False):
                what = "GNU's encoding" if direction.startswith("encode") else "the input"
                problems.append(f"{impl.name} {direction}: output differs from {what}")
        finally:
            if os.path.exists(tmpname):
                os.unlink(tmpname)
    return problems


def time_all(impls: list[Impl], runs: int) -> tuple[dict, dict, list[str]]:
    """Round-robin: each run times every implementation once per direction; keep the best wall time."""
    best: dict[tuple[str, str], float] = {}
    peak_rss: dict[tuple[str, str], float] = {}
    failures = []
    for run in range(runs):
        for direction in DIRECTIONS:
            todo = [impl for impl in impls if direction in impl.commands]
            shift = run % len(todo) if todo else 0
            for impl in todo[shift:] + todo[:shift]:  # rotate the order so no one always goes first
                argv, stdin = impl.commands[direction]
                res = run_child(argv, stdin)
                key = (impl.name, direction)
                print(f"  run {run + 1}/{runs} {direction:<10} {impl.name:<12} {res.wall:7.3f} s", file=sys.stderr)
                if res.returncode != 0:
                    failures.append(f"{impl.name} {direction}: exit {res.returncode}: {res.stderr.strip()[:200]}")
                    continue
                best[key] = min(best.get(key, float("inf")), res.wall)
                peak_rss[key] = max(peak_rss.get(key, 0.0), res.maxrss_mb)
    return best, peak_rss, failures


def rss_big(impls: list[Impl], gb: float) -> dict[tuple[str, str], float]:
    """Peak RSS of our encoders and decoders on a big input (one run each, not timed)."""
    size_mb = int(gb * 1024)
    files = ensure_data(size_mb)
    out = {}
    for impl in impls:
        if impl.kind != "ours":
            continue
        for direction, argv in big_commands(impl, files).items():
            res = run_child(argv)
            out[(impl.name, direction)] = res.maxrss_mb if res.returncode == 0 else float("nan")
            print(f"  rss {size_mb} MB {direction:<10} {impl.name:<12} {res.maxrss_mb:7.1f} MB", file=sys.stderr)
    return out


def big_commands(impl: Impl, files: dict[str, Path]) -> dict[str, list[str]]:
    enc, dec = impl.commands["encode-uu"][0][0], impl.commands["decode-uu"][0][0]
    return {
        "encode-uu": [enc, str(files["raw"]), REMOTE_NAME],
        "encode-b64": [enc, "-m", str(files["raw"]), REMOTE_NAME],
        "decode-uu": [dec, "-o", "/dev/stdout", str(files["uu"])],
        "decode-b64": [dec, "-o", "/dev/stdout", str(files["b64"])],
    }


def startup(bindir: Path, n: int) -> tuple[float, float, float]:
    """Median wall time of `echo hi | pyuuencode x`, of `python -c 'import click'` and of a bare `python -c pass`."""
    python, enc = str(bindir / "python"), str(bindir / "pyuuencode")
    fd, hi = tempfile.mkstemp(prefix="hi-", dir=DATA_DIR)
    os.write(fd, b"hi\n")
    os.close(fd)
    try:
        ours, click, bare = [], [], []
        for argv in ([enc, "x"], [python, "-c", "import click"], [python, "-c", "pass"]):
            run_child(argv, hi)  # warm up (page cache, .pyc files)
        for _ in range(n):  # alternate
            ours.append(run_child([enc, "x"], hi).wall)
            click.append(run_child([python, "-c", "import click"], hi).wall)
            bare.append(run_child([python, "-c", "pass"], hi).wall)
    finally:
        os.unlink(hi)
    return statistics.median(ours), statistics.median(click), statistics.median(bare)


# ---------------------------------------------------------------------------
# Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100, metavar="MB", help="input size in MB (default 100)")
    parser.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs per implementation (default 3)")
    parser.add_argument(
        "--venv",
        action="append",
        metavar="DIR",
        help="venv with our console scripts (repeatable; default: .venv-3.11 and .venv-3.13 if present)",
    )
    parser.add_argument("--py311", metavar="PYTHON", help=f"Python with the stdlib uu module (default {DEFAULT_PY311})")
    parser.add_argument(
        "--rss-gb", type=float, default=0, metavar="GB", help="also measure our peak RSS on a GB-sized input"
    )
    parser.add_argument(
        "--startup-runs", type=int, default=20, metavar="N", help="start-up runs, median taken (default 20)"
    )
    args = parser.parse_args(argv)
    if args.size < 1 or args.runs < 1 or args.startup_runs < 1:
        parser.error("--size, --runs and --startup-runs must be at least 1")

    venvs = find_venvs(args.venv, ("pyuuencode", "pyuudecode"))
    files = ensure_data(args.size)
    impls = make_impls(args, files, venvs)
    ours = [impl for impl in impls if impl.kind == "ours"]
    by_kind = {impl.kind: impl for impl in impls if impl.kind != "ours"}

    print("warming up (byte code cache) ...", file=sys.stderr)
    for impl in impls:
        if impl.kind == "stdlib":
            run_child(impl.commands["encode-uu"][0])  # empty stdin: enough to compile and cache
    print("checking our outputs (outside the timed runs) ...", file=sys.stderr)
    problems = [p for impl in ours for p in check_ours(impl, files)]

    print(f"timing, {args.runs} round-robin runs ...", file=sys.stderr)
    best, peak_rss, failures = time_all(impls, args.runs)

    big = rss_big(impls, args.rss_gb) if args.rss_gb > 0 else {}
    floor = max(run_child(["true"]).maxrss_mb for _ in range(3))

    print(f"start-up, median of {args.startup_runs} ...", file=sys.stderr)
    starts = {impl.name: startup(bindir, args.startup_runs) for impl, (_, bindir) in zip(ours, venvs, strict=True)}

    def mbps(name: str, direction: str) -> float | None:
        t = best.get((name, direction))
        return args.size / t if t else None

    # --- throughput
    print()
    print(f"pipemail uu benchmark: {args.size} MB random input, best of {args.runs} round-robin runs, output /dev/null")
    print(f"input: {files['raw'].relative_to(REPO_DIR)} (+ .uu, .b64 made by GNU uuencode)")
    dropped = ", ".join(f"{k}={os.environ[k]}" for k in DROPPED_ENV) or "none"
    print(f"environment of the commands: PYTHON* variables dropped ({dropped}), byte code cached in bench/data/pycache")
    print()
    print("Throughput, MB/s of raw data (1 MB = 2^20 bytes)")
    rows = []
    for direction in DIRECTIONS:
        row = [direction]
        for impl in impls:
            v = mbps(impl.name, direction)
            row.append(f"{v:.0f}" if v else "n/a")
        rows.append(row)
    print_table(rows, ["direction", *[impl.name for impl in impls]])

    # --- ratios
    misses = 0
    for impl in ours:
        print()
        print(
            f"Ratios for {impl.name} (targets: >= {TARGET_VS_STDLIB}x stdlib, >= {TARGET_VS_BUSYBOX:g}x busybox, "
            "in all four directions)"
        )
        rows = []
        for direction in DIRECTIONS:
            mine = mbps(impl.name, direction)
            row = [direction]
            for kind, target in (("stdlib", TARGET_VS_STDLIB), ("busybox", TARGET_VS_BUSYBOX), ("gnu", None)):
                other = by_kind.get(kind)
                theirs = mbps(other.name, direction) if other else None
                if mine and theirs:
                    ratio = mine / theirs
                    if target is None:
                        row.append(f"{ratio:.2f}x")
                    else:
                        ok = ratio >= target
                        misses += not ok
                        row.append(f"{ratio:.2f}x {verdict(ok):<4}")
                else:
                    row.append("n/a" if target is None else "n/a     ")
            rows.append(row)
        print_table(rows, ["direction", "ours/stdlib", "ours/busybox", "ours/GNU"])

    # --- memory
    print()
    print(f"Peak RSS of our commands, MB (max over the timed runs; target < {TARGET_RSS_MB:g} MB for any size)")
    header = ["direction"] + [f"{impl.name} {args.size}M" for impl in ours]
    if big:
        header += [f"{impl.name} {int(args.rss_gb * 1024)}M" for impl in ours]
    rows = []
    for direction in DIRECTIONS:
        row = [direction]
        values = [peak_rss.get((impl.name, direction)) for impl in ours]
        if big:
            values += [big.get((impl.name, direction)) for impl in ours]
        for v in values:
            if v is None or v != v:
                row.append("n/a")
                misses += 1
            else:
                ok = v < TARGET_RSS_MB
                misses += not ok
                row.append(f"{v:.1f} {verdict(ok):<4}")
        rows.append(row)
    print_table(rows, header)
    others = []
    for impl in impls:
        if impl.kind != "ours":
            v = max(peak_rss.get((impl.name, d), 0.0) for d in DIRECTIONS)
            others.append(f"{impl.name} {v:.1f}" if v > floor + 0.05 else f"{impl.name} <= {floor:.1f}")
    print("for comparison, max over directions: " + ", ".join(others))
    print(f"(measurement floor {floor:.1f} MB: the RSS of the wrapper that starts each command; see run_child)")

    # --- start-up
    print()
    print(f"Start-up, median of {args.startup_runs} runs, ms (target: ours / import click <= {TARGET_STARTUP})")
    rows = []
    for name, (t_ours, t_click, t_bare) in starts.items():
        ratio = t_ours / t_click
        ok = ratio <= TARGET_STARTUP
        misses += not ok
        rows.append(
            [
                name,
                f"{t_ours * 1e3:.1f}",
                f"{t_click * 1e3:.1f}",
                f"{t_bare * 1e3:.1f}",
                f"{ratio:.2f} {verdict(ok):<4}",
            ]
        )
    print_table(rows, ["venv", "echo hi | pyuuencode x", "python -c 'import click'", "python -c pass", "ratio"])

    # --- correctness and failures
    print()
    if problems or failures:
        for p in problems + failures:
            print(f"ERROR {p}")
    else:
        print("outputs checked: our encodings are byte-identical to GNU's, our decodings equal the input")
    print(f"targets missed: {misses}" if misses else "all targets met")
    return 0


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except SystemExit as e:  # usage errors keep argparse's status; a missing prerequisite is reported, still 0
        if e.code not in (0, None) and not isinstance(e.code, str):
            raise
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    sys.exit(0)
