"""What the benchmarks share: paths, the clean environment of the measured commands,
running one command alone to time it and read its peak RSS, and the report tables.
Standard library only."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
PYCACHE_DIR = DATA_DIR / "pycache"

# The measured commands run in a clean Python environment: every PYTHON* variable of the caller is
# dropped (PYTHONUNBUFFERED=1 alone halves the stdlib module's speed, one write(2) per line, and
# PYTHONDONTWRITEBYTECODE=1 can make every start compile the sources), and byte code is cached
# under bench/data/pycache so start-up is measured as after an install.
DROPPED_ENV = sorted(k for k in os.environ if k.startswith("PYTHON"))
CHILD_ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(PYCACHE_DIR)


# The wrapper starts the measured command and reaps it with os.wait4, which gives the rusage of that
# one child.  Why a wrapper: a process's ru_maxrss is the maximum over its whole life, including the
# moment before exec when it was a copy of (or, with vfork, shared) its parent's memory; a child
# started directly from this script would report at least this script's own peak RSS (and
# RUSAGE_CHILDREN deltas are a running maximum, not a sum, so they cannot isolate one child).  A bare
# `python -I -S` wrapper keeps that floor at about 8 MB, below any Python command's own peak, so the
# figure for our commands is theirs; the floor is measured and shown.  The wrapper also does the timing,
# so its own start-up is not counted.
WRAPPER = """\
import os, sys, time
fd = int(sys.argv[1])
argv = sys.argv[2:]
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_CLOSE, fd)])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
os.write(fd, b"%r %d %d" % (wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


@dataclass
class Result:
    wall: float
    maxrss_mb: float
    returncode: int
    stderr: str


def run_child(
    argv: list[str], stdin: str | Path | None = None, stdout: str | Path = os.devnull, cwd: Path | None = None
) -> Result:
    """Run argv with stdin/stdout redirected to files: its wall time and the peak RSS of that child alone."""
    rfd, wfd = os.pipe()
    try:
        with (
            open(stdin if stdin is not None else os.devnull, "rb") as fin,
            open(stdout, "wb") as fout,
            tempfile.TemporaryFile() as ferr,
        ):
            wrapper = subprocess.run(
                [sys.executable, "-I", "-S", "-c", WRAPPER, str(wfd), *argv],
                stdin=fin,
                stdout=fout,
                stderr=ferr,
                pass_fds=(wfd,),
                env=CHILD_ENV,
                cwd=cwd,
            )
            os.close(wfd)
            wfd = -1
            report = b""
            while chunk := os.read(rfd, 4096):
                report += chunk
            ferr.seek(0)
            err = ferr.read().decode("utf-8", "replace")
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    try:
        wall, maxrss_kb, returncode = report.split()
    except ValueError:  # the wrapper itself failed (e.g. the command does not exist)
        return Result(0.0, float("nan"), wrapper.returncode or 127, err)
    return Result(float(wall), int(maxrss_kb) / 1024.0, int(returncode), err)  # ru_maxrss is in KiB on Linux


def sha(path: Path) -> str:
    """The SHA-256 (hex) of a file, read 1 MiB at a time: output checked against input, at any size."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MB), b""):
            h.update(block)
    return h.hexdigest()


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def ratio_cell(mine: float | None, base: float | None, target: float) -> tuple[str, bool]:
    """The table cell of ``mine / base`` against ``target`` (at most) and whether it is a miss; a
    missing figure is a miss ("n/a MISS")."""
    if not (mine and base):
        return "n/a MISS", True
    ok = mine / base <= target
    return f"{mine / base:.2f} {verdict(ok):<4}", not ok


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))


def find_venvs(options: list[str] | None, scripts: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(label, bin directory) of each venv holding python and ``scripts``; label = its Python X.Y.

    Without ``options``, .venv-3.11 and .venv-3.13 of the checkout, those that exist.
    """
    paths = options or [str(p) for p in (REPO_DIR / ".venv-3.11", REPO_DIR / ".venv-3.13") if p.exists()]
    found: list[tuple[str, Path]] = []
    for venv in paths:
        bindir = Path(venv).absolute() / "bin"
        if not all((bindir / name).exists() for name in ("python", *scripts)):
            print(f"note: {venv}: no {'/'.join(('python', *scripts))} in bin/; skipped", file=sys.stderr)
            continue
        version = subprocess.run(
            [str(bindir / "python"), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        label = version or Path(venv).name
        if any(lbl == label for lbl, _ in found):
            label = f"{label}({Path(venv).name})"
        found.append((label, bindir))
    return found


def run_main(main) -> None:
    """Run a benchmark's ``main`` and exit 0 whatever happens: a benchmark reports, it does not fail.
    Ctrl-C, a usage error (argparse printed it), a missing prerequisite and a crash are said on stderr."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except SystemExit as e:  # a usage error (argparse printed it) or a missing prerequisite: reported, still 0
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except Exception as e:  # noqa: BLE001 (a benchmark reports, it does not fail)
        import traceback

        traceback.print_exc()
        print(f"bench: internal error: {e}", file=sys.stderr)
    sys.exit(0)
