#!/usr/bin/env python3
"""Benchmark pyshar / pyunshar against GNU shar and `sh` running the archives.

A standalone benchmark, not a test: it prints a table and always exits 0.
Standard library only.  See bench/README.md.

Units: 1 MB = 2**20 bytes, for the tree sizes, the throughput (MB of tree data per second) and
the peak RSS.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    CHILD_ENV,
    DATA_DIR,
    DROPPED_ENV,
    MB,
    REPO_DIR,
    Result,
    print_table,
    run_child,
    verdict,
)
from benchlib import find_venvs as benchlib_find_venvs

SHAR_DIR = DATA_DIR / "shar"
TREES_DIR = SHAR_DIR / "trees"  # the input trees, made once and reused
ARCH_DIR = SHAR_DIR / "archives"  # the archives, made on every run (the code under test changes)
WORK_DIR = SHAR_DIR / "work"  # one fresh empty directory per extraction, removed right after
SCRATCH = SHAR_DIR / "create-out.tmp"  # output of the timed create runs, removed after each
SH = "/bin/sh"
TREES = ("binary", "text")
TEXT_VERSION = "text-v1"  # bump when the text generator changes: the cached text tree is then remade
TEXT_SEED = 20241127

# Targets from issue 3, "Speed and memory".
TARGET_CREATE = {"binary": 1.0, "text": 1.5}  # GNU shar time / pyshar time
TARGET_UNPACK = 3.0  # sh on GNU's archive / pyunshar
TARGET_SH = 1.0  # sh on GNU's archive / sh on ours ("no slower")
TARGET_RSS_MB = 50.0


# ---------------------------------------------------------------------------
# Running one child and measuring it alone


def fresh_dir() -> Path:
    """A new empty directory under bench/data/shar/work: the only place an archive is ever run."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="x-", dir=WORK_DIR))
    assert path.is_relative_to(DATA_DIR) and not any(path.iterdir()), path
    return path


def remove(path: Path) -> None:
    """Remove a file or a tree (an extraction may leave a read-only directory: make it writable first)."""
    if path.is_dir() and not path.is_symlink():

        def onerror(func, name, _exc):
            os.chmod(os.path.dirname(name), 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, 0o700)
            func(name)

        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=onerror)
        else:
            shutil.rmtree(path, onerror=onerror)
    elif path.exists() or path.is_symlink():
        path.unlink()


def settle() -> None:
    """Before a timed run: flush what earlier runs left dirty, so its write-back does not land in this run."""
    os.sync()


# ---------------------------------------------------------------------------
# Input trees


def tree_ok(tree: Path, names: list[str], sizes: list[int] | None) -> bool:
    if not tree.is_dir() or sorted(p.name for p in tree.iterdir()) != names:
        return False
    return sizes is None or [(tree / n).stat().st_size for n in names] == sizes


def write_random(path: Path, size: int) -> None:
    """size bytes of random data, written in 8 MB chunks (never held in memory)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            chunk = min(left, 8 * MB)
            f.write(os.urandom(chunk))
            left -= chunk
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def ensure_binary_tree(size_mb: int, nfiles: int) -> Path:
    """TREES_DIR/binary: nfiles random files adding up to size_mb MB."""
    tree = TREES_DIR / "binary"
    names = [f"random-{i:02d}.bin" for i in range(nfiles)]
    sizes = split_size(size_mb * MB, nfiles)
    if not tree_ok(tree, names, sizes):
        print(f"creating {rel(tree)} ({size_mb} MB of random data in {nfiles} files) ...", file=sys.stderr)
        remove(tree)
        tree.mkdir(parents=True)
        for name, size in zip(names, sizes, strict=True):
            write_random(tree / name, size)
    os.chmod(tree, 0o755)
    return tree


def split_size(total: int, n: int) -> list[int]:
    return [total // n + (i < total % n) for i in range(n)]


def ensure_text_tree(size_mb: int, nfiles: int) -> Path:
    """TREES_DIR/text: nfiles files of printable ASCII lines of 20-100 characters, about size_mb MB in all.

    Deterministic: the same seed gives the same files.  A stamp file next to the tree records what
    was made (generator version, seed, sizes), so the tree is made once and reused.
    """
    tree = TREES_DIR / "text"
    stamp = TREES_DIR / "text.stamp"
    names = [f"text-{i:02d}.txt" for i in range(nfiles)]
    want = f"{TEXT_VERSION} seed={TEXT_SEED} size={size_mb}M files={nfiles}"
    if stamp.exists() and tree_ok(tree, names, None):
        recorded = stamp.read_text().split("\n")
        sizes = [int(s) for s in recorded[1].split()] if len(recorded) > 1 and recorded[1] else []
        if recorded[0] == want and tree_ok(tree, names, sizes):
            os.chmod(tree, 0o755)
            return tree
    print(f"creating {rel(tree)} ({size_mb} MB of text in {nfiles} files) ...", file=sys.stderr)
    remove(tree)
    stamp.unlink(missing_ok=True)
    tree.mkdir(parents=True)
    rng = random.Random(TEXT_SEED)
    pool = line_pool(rng, 200_000)
    for name, size in zip(names, split_size(size_mb * MB, nfiles), strict=True):
        tmp = tree / (name + ".tmp")
        written = 0
        with open(tmp, "wb") as f:
            while written < size:  # whole lines: each file ends with a newline, just past its share
                batch = "\n".join(rng.choices(pool, k=20_000)).encode("ascii") + b"\n"
                if written + len(batch) > size:
                    cut = batch.find(b"\n", size - written - 1)
                    batch = batch[: cut + 1]
                f.write(batch)
                written += len(batch)
        os.chmod(tmp, 0o644)
        os.replace(tmp, tree / name)
    os.chmod(tree, 0o755)
    sizes = [(tree / n).stat().st_size for n in names]
    stamp.write_text(want + "\n" + " ".join(map(str, sizes)) + "\n")
    return tree


LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_WEIGHTS = [127, 91, 82, 75, 70, 67, 63, 61, 60, 43, 40, 28, 28, 24, 24, 22, 20, 20, 19, 15, 10, 8, 2, 2, 1, 1]


def line_pool(rng: random.Random, n: int) -> list[str]:
    """n lines of 20-100 printable ASCII characters: prose, code and log lines from a made-up vocabulary."""
    lengths = [1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12]
    words = ["".join(rng.choices(LETTERS, LETTER_WEIGHTS, k=rng.choice(lengths))) for _ in range(5000)]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR"]
    ops = ["=", "==", "+", "-", "*", "/", "->", "<=", ">=", "and", "or", "not", "in", "return", "if", "for"]
    lines = []
    for _ in range(n):
        target = rng.randint(21, 100)
        kind = rng.random()
        if kind < 0.6:  # prose
            parts = [rng.choice(words).capitalize()]
            while sum(map(len, parts)) + len(parts) < target:
                w = rng.choice(words)
                r = rng.random()
                if r < 0.08:
                    w += ","
                elif r < 0.12:
                    w += "."
                elif r < 0.14:
                    w = f'"{w}"'
                elif r < 0.16:
                    w = str(rng.randint(0, 9999))
                parts.append(w)
            line = " ".join(parts)
        elif kind < 0.85:  # code
            indent = " " * (4 * rng.randint(0, 3))
            line = f"{indent}{rng.choice(words)}_{rng.choice(words)} = {rng.choice(words)}({rng.choice(words)}"
            while len(line) < target:
                r = rng.random()
                if r < 0.3:
                    line += f", {rng.choice(words)}"
                elif r < 0.5:
                    line += f" {rng.choice(ops)} {rng.randint(0, 255)}"
                elif r < 0.7:
                    line += f"[{rng.choice(words)}]"
                else:
                    line += f".{rng.choice(words)}()"
            line += ")"
        else:  # log
            line = (
                f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {rng.choice(levels)} {rng.choice(words)}:"
            )
            while len(line) < target:
                line += f" {rng.choice(words)}" if rng.random() < 0.8 else f" id={rng.randint(1000, 99999)}"
        lines.append(line[:target].rstrip())  # 20 to 100 characters
    return lines


def ensure_big_tree(gb: float) -> Path:
    """TREES_DIR/big: one random file of gb GB, for the peak RSS."""
    tree = TREES_DIR / "big"
    size = int(gb * 1024) * MB
    name = "random-big.bin"
    if not tree_ok(tree, [name], [size]):
        print(f"creating {rel(tree)} ({size // MB} MB of random data) ...", file=sys.stderr)
        remove(tree)
        tree.mkdir(parents=True)
        write_random(tree / name, size)
    os.chmod(tree, 0o755)
    return tree


def tree_mb(tree: Path) -> float:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) / MB


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_DIR))


# ---------------------------------------------------------------------------
# Implementations and the commands they run


@dataclass
class Venv:
    label: str  # "3.11"
    bindir: Path

    @property
    def pyshar(self) -> str:
        return str(self.bindir / "pyshar")

    @property
    def pyunshar(self) -> str:
        return str(self.bindir / "pyunshar")


def find_venvs(options: list[str] | None) -> list[Venv]:
    """Each venv holding our console scripts; labelled with its Python X.Y."""
    return [Venv(label, bindir) for label, bindir in benchlib_find_venvs(options, ("pyshar", "pyunshar"))]


@dataclass
class Unpacker:
    """One way of extracting one archive: a name for the table, the archive's maker and the command."""

    name: str
    archive_of: str  # "GNU" or "ours"
    kind: str  # "sh" or "pyunshar"
    venv: Venv | None = None

    def argv(self, archive: Path, dest: Path) -> list[str]:
        if self.kind == "sh":
            return [SH, str(archive)]
        assert self.venv is not None
        return [self.venv.pyunshar, "-d", str(dest), str(archive)]


def creators(gnu_shar: str | None, venvs: list[Venv]) -> list[tuple[str, str]]:
    """(name, program) of each archiver, run as `PROGRAM -q TREE > out` in TREES_DIR."""
    out = [("GNU shar", gnu_shar)] if gnu_shar else []
    return out + [(f"pyshar-{v.label}", v.pyshar) for v in venvs]


def unpackers(gnu_shar: str | None, venvs: list[Venv]) -> list[Unpacker]:
    out = []
    if gnu_shar:
        out.append(Unpacker("sh GNU's", "GNU", "sh"))
    if venvs:
        out.append(Unpacker("sh ours", "ours", "sh"))
    for v in venvs:
        out.append(Unpacker(f"pyunshar-{v.label} ours", "ours", "pyunshar", v))
        if gnu_shar:
            out.append(Unpacker(f"pyunshar-{v.label} GNU's", "GNU", "pyunshar", v))
    return out


# ---------------------------------------------------------------------------
# Checks


def compare_trees(want: Path, dest: Path) -> list[str]:
    """dest must hold exactly want's tree (same name), byte for byte (like cmp), with the same file modes."""
    problems = []
    top = sorted(p.name for p in dest.iterdir())
    if top != [want.name]:
        problems.append(f"top level of the extraction is {top}, not [{want.name!r}]")
    got = dest / want.name
    if not got.is_dir():
        return problems + [f"{want.name}/ was not created"]

    def listing(root: Path) -> dict[str, os.stat_result]:
        return {str(p.relative_to(root)): p.lstat() for p in root.rglob("*")}

    mine, theirs = listing(want), listing(got)
    missing, extra = sorted(mine.keys() - theirs.keys()), sorted(theirs.keys() - mine.keys())
    if missing:
        problems.append(f"missing: {', '.join(missing[:5])}")
    if extra:
        problems.append(f"unexpected: {', '.join(extra[:5])}")
    for name in sorted(mine.keys() & theirs.keys()):
        a, b = mine[name], theirs[name]
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            problems.append(f"{name}: different file type")
        elif stat.S_ISREG(a.st_mode):
            if a.st_size != b.st_size or not filecmp.cmp(want / name, got / name, shallow=False):
                problems.append(f"{name}: content differs ({b.st_size} bytes, want {a.st_size})")
            elif stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode):
                problems.append(f"{name}: mode {stat.S_IMODE(b.st_mode):o}, want {stat.S_IMODE(a.st_mode):o}")
    return problems


def extract(unpacker: Unpacker, archive: Path, tree: Path, check: bool) -> tuple[Result, list[str]]:
    """Run one extraction in a fresh empty directory, optionally compare the result with tree, then remove it."""
    dest = fresh_dir()
    try:
        if not check:
            settle()
        res = run_child(unpacker.argv(archive, dest), cwd=dest)
        problems = []
        if res.returncode != 0:
            problems.append(f"exit {res.returncode}: {res.stderr.strip()[-300:]}")
        elif check:
            problems = compare_trees(tree, dest)
        return res, [f"{unpacker.name} on {tree.name}: {p}" for p in problems]
    finally:
        remove(dest)


# ---------------------------------------------------------------------------
# Report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, metavar="MB", help="size of each tree in MB (default 200)")
    parser.add_argument("--files", type=int, default=4, metavar="N", help="files in each tree (default 4)")
    parser.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs per command (default 3)")
    parser.add_argument(
        "--venv",
        action="append",
        metavar="DIR",
        help="venv with our console scripts (repeatable; default: .venv-3.11 and .venv-3.13 if present)",
    )
    parser.add_argument(
        "--rss-gb",
        type=float,
        default=1,
        metavar="GB",
        help="peak RSS with one file of GB GB (default 1; 0 skips)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the archives and the big file afterwards")
    args = parser.parse_args(argv)
    if args.size < 1 or args.files < 1 or args.runs < 1 or args.rss_gb < 0:
        parser.error("--size, --files and --runs must be at least 1, --rss-gb at least 0")

    venvs = find_venvs(args.venv)
    gnu_shar = shutil.which("shar", path="/usr/bin")
    if not gnu_shar:
        print("note: GNU shar (sharutils) not found in /usr/bin; skipped", file=sys.stderr)
    if not venvs and not gnu_shar:
        raise SystemExit("bench: nothing to measure (no venv with pyshar, no GNU shar)")

    remove(WORK_DIR)  # left over by an interrupted run
    ARCH_DIR.mkdir(parents=True, exist_ok=True)
    try:
        run(args, venvs, gnu_shar)
    finally:
        remove(WORK_DIR)
        SCRATCH.unlink(missing_ok=True)
        if not args.keep:
            remove(ARCH_DIR)
            remove(TREES_DIR / "big")
    return 0


def run(args: argparse.Namespace, venvs: list[Venv], gnu_shar: str | None) -> None:
    trees = {"binary": ensure_binary_tree(args.size, args.files), "text": ensure_text_tree(args.size, args.files)}
    sizes = {t: tree_mb(trees[t]) for t in TREES}
    makers = creators(gnu_shar, venvs)
    unpacks = unpackers(gnu_shar, venvs)
    problems: list[str] = []

    # --- the archives that are unpacked (ours: by the first venv's pyshar), and the checks, outside the timing
    print("making the archives and checking every extraction (outside the timed runs) ...", file=sys.stderr)
    archives: dict[tuple[str, str], Path] = {}
    arch_sizes: dict[tuple[str, str], float] = {}
    for t in TREES:
        for who, prog in (("GNU", gnu_shar), ("ours", venvs[0].pyshar if venvs else None)):
            if not prog:
                continue
            path = ARCH_DIR / f"{who}-{t}.shar"
            res = run_child([prog, "-q", t], cwd=TREES_DIR, stdout=path)
            if res.returncode != 0:
                problems.append(f"{prog} -q {t}: exit {res.returncode}: {res.stderr.strip()[-300:]}")
                continue
            archives[(who, t)] = path
            arch_sizes[(who, t)] = path.stat().st_size / MB
        for u in unpacks:
            archive = archives.get((u.archive_of, t))
            if archive:
                problems += extract(u, archive, trees[t], check=True)[1]

    # --- timing, round-robin
    print(f"timing, {args.runs} round-robin runs ...", file=sys.stderr)
    best: dict[tuple[str, str], float] = {}
    peak: dict[tuple[str, str], float] = {}
    failures: list[str] = []

    def record(name: str, t: str, res: Result, run_no: int, what: str) -> None:
        print(f"  run {run_no + 1}/{args.runs} {what:<7} {t:<6} {name:<22} {res.wall:7.3f} s", file=sys.stderr)
        key = (name, t)
        if res.returncode != 0:
            failures.append(f"{name} on {t}: exit {res.returncode}: {res.stderr.strip()[-300:]}")
            return
        best[key] = min(best.get(key, float("inf")), res.wall)
        peak[key] = max(peak.get(key, 0.0), res.maxrss_mb)

    for run_no in range(args.runs):
        for t in TREES:
            shift = run_no % len(makers) if makers else 0
            for name, prog in makers[shift:] + makers[:shift]:  # rotate the order so no one always goes first
                settle()
                res = run_child([prog, "-q", t], cwd=TREES_DIR, stdout=SCRATCH)
                record(name, t, res, run_no, "create")
                SCRATCH.unlink(missing_ok=True)
        for t in TREES:
            todo = [u for u in unpacks if (u.archive_of, t) in archives]
            shift = run_no % len(todo) if todo else 0
            for u in todo[shift:] + todo[:shift]:
                res, _ = extract(u, archives[(u.archive_of, t)], trees[t], check=False)
                record(u.name, t, res, run_no, "unpack")

    # --- peak RSS with one big file
    big_rss: dict[str, float] = {}
    if args.rss_gb > 0 and venvs:
        big_rss = measure_big(args.rss_gb, venvs, gnu_shar, problems)
    floor = max(run_child(["true"], cwd=SHAR_DIR).maxrss_mb for _ in range(3))

    report(args, venvs, makers, unpacks, trees, sizes, arch_sizes, best, peak, big_rss, floor, problems + failures)


def measure_big(gb: float, venvs: list[Venv], gnu_shar: str | None, problems: list[str]) -> dict[str, float]:
    """Peak RSS of pyshar and pyunshar (on its own and on GNU's archive) with one file of gb GB."""
    tree = ensure_big_tree(gb)
    size_mb = int(gb * 1024)
    out: dict[str, float] = {}
    ours_archive, gnu_archive = ARCH_DIR / "ours-big.shar", ARCH_DIR / "GNU-big.shar"
    if gnu_shar:
        res = run_child([gnu_shar, "-q", tree.name], cwd=TREES_DIR, stdout=gnu_archive)
        if res.returncode != 0:
            problems.append(f"GNU shar on {size_mb} MB file: exit {res.returncode}")
            gnu_archive.unlink(missing_ok=True)
    for v in venvs:
        name = f"pyshar-{v.label}"
        res = run_child([v.pyshar, "-q", tree.name], cwd=TREES_DIR, stdout=ours_archive)
        print(f"  rss {size_mb} MB {name:<22} {res.maxrss_mb:7.1f} MB  {res.wall:7.3f} s", file=sys.stderr)
        out[name] = res.maxrss_mb if res.returncode == 0 else float("nan")
        if res.returncode != 0:
            problems.append(f"{name} on {size_mb} MB file: exit {res.returncode}: {res.stderr.strip()[-300:]}")
    for v in venvs:
        for who, archive in (("ours", ours_archive), ("GNU's", gnu_archive)):
            if not archive.exists():
                continue
            name = f"pyunshar-{v.label} {who}"
            res, errs = extract(Unpacker(name, who, "pyunshar", v), archive, tree, check=True)
            print(f"  rss {size_mb} MB {name:<22} {res.maxrss_mb:7.1f} MB  {res.wall:7.3f} s", file=sys.stderr)
            out[name] = res.maxrss_mb if res.returncode == 0 else float("nan")
            problems += errs
    return out


def report(
    args: argparse.Namespace,
    venvs: list[Venv],
    makers: list[tuple[str, str]],
    unpacks: list[Unpacker],
    trees: dict[str, Path],
    sizes: dict[str, float],
    arch_sizes: dict[tuple[str, str], float],
    best: dict[tuple[str, str], float],
    peak: dict[tuple[str, str], float],
    big_rss: dict[str, float],
    floor: float,
    problems: list[str],
) -> None:
    misses = 0

    def cell(name: str, t: str) -> str:
        s = best.get((name, t))
        return f"{s:.3f} ({sizes[t] / s:.0f})" if s else "n/a"

    def ratio_cell(num: float | None, den: float | None, target: float) -> str:
        nonlocal misses
        if not num or not den:
            misses += 1
            return "n/a"
        ratio = num / den
        misses += ratio < target
        return f"{ratio:.2f}x {verdict(ratio >= target):<4}"

    print()
    print(
        f"pipemail shar benchmark: best of {args.runs} round-robin runs; "
        f"trees of {args.files} files under {rel(TREES_DIR)}/"
    )
    for t in TREES:
        made = ", ".join(f"{who} {arch_sizes[(who, t)]:.1f} MB" for who in ("GNU", "ours") if (who, t) in arch_sizes)
        print(f"  {t:<6} {sizes[t]:.1f} MB; archives: {made}")
    dropped = ", ".join(f"{k}={os.environ[k]}" for k in DROPPED_ENV) or "none"
    print(f"environment of the commands: PYTHON* variables dropped ({dropped}), byte code cached in bench/data/pycache")
    decoder = shutil.which("uudecode", path=CHILD_ENV.get("PATH")) or "none (base64 -d or others)"
    print(f"sh = {SH} -> {os.path.realpath(SH)}; uudecode on PATH: {decoder}")
    if venvs:
        print(f"'ours' archives are made by pyshar-{venvs[0].label}")

    # --- create
    print()
    print("Create: PROGRAM -q TREE > FILE (a file under bench/data), seconds (MB/s of tree data)")
    print_table(
        [[t] + [cell(name, t) for name, _ in makers] for t in TREES],
        ["tree", *[name for name, _ in makers]],
    )
    has_gnu = any(name == "GNU shar" for name, _ in makers)
    if has_gnu and venvs:
        print()
        print(
            "Create, speed vs GNU = GNU shar time / pyshar time "
            f"(targets: >= {TARGET_CREATE['binary']:g}x binary, >= {TARGET_CREATE['text']:g}x text)"
        )
        rows = []
        for t in TREES:
            g = best.get(("GNU shar", t))
            rows.append([t] + [ratio_cell(g, best.get((f"pyshar-{v.label}", t)), TARGET_CREATE[t]) for v in venvs])
        print_table(rows, ["tree", *[f"pyshar-{v.label}" for v in venvs]])

    # --- unpack
    print()
    print("Unpack, in a fresh empty directory, output /dev/null: seconds (MB/s of tree data)")
    print("  (sh ARCHIVE run in that directory; pyunshar -d DIR ARCHIVE)")
    print_table([[t] + [cell(u.name, t) for u in unpacks] for t in TREES], ["tree", *[u.name for u in unpacks]])
    sh_gnu = "sh GNU's"
    if any(u.name == sh_gnu for u in unpacks) and venvs:
        print()
        print(
            f"Unpack, speed vs sh on GNU's archive = that time / this time (targets: pyunshar >= {TARGET_UNPACK:g}x, "
            f"on either archive; sh on ours >= {TARGET_SH:g}x, i.e. no slower)"
        )
        others = [u for u in unpacks if u.name != sh_gnu]
        rows = []
        for t in TREES:
            g = best.get((sh_gnu, t))
            rows.append(
                [t]
                + [ratio_cell(g, best.get((u.name, t)), TARGET_SH if u.kind == "sh" else TARGET_UNPACK) for u in others]
            )
        print_table(rows, ["tree", *[u.name for u in others]])

    # --- memory
    print()
    big_col = f"{int(args.rss_gb * 1024)} MB file" if big_rss else None
    print(
        f"Peak RSS of our commands, MB (max over the timed runs on {args.size / args.files:g} MB files"
        + (f", and one run with a {big_col}" if big_col else "")
        + f"; target < {TARGET_RSS_MB:g} MB)"
    )
    names = [f"pyshar-{v.label}" for v in venvs] + [u.name for u in unpacks if u.kind == "pyunshar"]
    rows = []
    for name in names:
        row = [name]
        values = [peak.get((name, t)) for t in TREES] + ([big_rss.get(name)] if big_col else [])
        for v in values:
            if v is None or v != v:
                misses += 1
                row.append("n/a")
            else:
                misses += v >= TARGET_RSS_MB
                row.append(f"{v:.1f} {verdict(v < TARGET_RSS_MB):<4}")
        rows.append(row)
    print_table(rows, ["command", *TREES, *([big_col] if big_col else [])])
    others = []
    for name in [n for n, _ in makers if n == "GNU shar"] + [u.name for u in unpacks if u.kind == "sh"]:
        v = max(peak.get((name, t), 0.0) for t in TREES)
        others.append(f"{name} {v:.1f}" if v > floor + 0.05 else f"{name} <= {floor:.1f}")
    if others:
        print("for comparison, max over the trees: " + ", ".join(others) + " (sh: with the children it reaped)")
    print(f"(measurement floor {floor:.1f} MB: the RSS of the wrapper that starts each command; see run_child)")

    # --- correctness and failures
    print()
    if problems:
        for p in problems:
            print(f"ERROR {p}")
    else:
        checked = ", ".join(u.name for u in unpacks)
        print(f"extractions checked, identical to the trees byte for byte and in file modes: {checked}")
        if big_rss:
            print(f"  and pyunshar's extractions of the {big_col}")
    print(f"targets missed: {misses}" if misses else "all targets met")


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
