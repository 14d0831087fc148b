"""pyshar and pyunshar as users run them."""

import os
import re
import stat
import subprocess

from conftest import tool


def tree(root, files):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_archive_to_stdout_and_back(run, tmp_path):
    tree(tmp_path / "src", {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256))})
    r = run("pyshar", "src", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(b"#!/bin/sh\n")
    assert (
        r.stderr == "pyshar: saving src (directory)\npyshar: saving src/a.txt (text)\n"
        "pyshar: saving src/sub (directory)\npyshar: saving src/sub/b.bin (binary)\n"
    )
    u = run("pyunshar", "-d", tmp_path / "out", input=r.stdout)
    assert (u.returncode, u.stderr) == (0, "")
    assert u.stdout == b"x - src/a.txt\nx - src/sub/b.bin\n"
    assert (tmp_path / "out/src/sub/b.bin").read_bytes() == bytes(range(256))


def test_names_from_stdin_lines_and_nul(run, tmp_path):
    tree(tmp_path, {"one": b"1\n", "two words": b"2\n", "new\nline": b"3\n"})
    r = run("pyshar", "-q", input=b"one\ntwo words\n", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    listing = run("pyunshar", "-l", input=r.stdout).stdout
    assert listing == b"         2 0644 one\n         2 0644 two words\n"
    r = run("pyshar", "-q", "-0", input=b"new\nline\0one\0", cwd=tmp_path)
    listing = run("pyunshar", "-l", input=r.stdout).stdout
    assert listing == b"         2 0644 new\\nline\n         2 0644 one\n"


def test_missing_input_writes_nothing(run, tmp_path):
    tree(tmp_path, {"ok": b"x\n"})
    r = run("pyshar", "ok", "missing", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (66, b"")
    assert r.stderr == "pyshar: cannot read missing: No such file or directory\n"


def test_dotdot_refused_and_leading_slash_stripped(run, tmp_path):
    tree(tmp_path / "d", {"f": b"x\n"})
    r = run("pyshar", "d/../d/f", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (64, b"")
    assert (
        r.stderr == "pyshar: refusing 'd/../d/f': a '..' component would unpack outside the target "
        "(see 'pyshar --help')\n"
    )
    r = run("pyshar", "-q", tmp_path / "d" / "f")
    assert r.returncode == 0
    assert r.stderr == "pyshar: removing leading '/' from member name %s\n" % (tmp_path / "d" / "f")
    listing = run("pyunshar", "-l", input=r.stdout).stdout
    assert listing == b"         2 0644 %s\n" % os.fsencode(tmp_path / "d" / "f")[1:]


def test_fifo_skipped_symlinks_followed_loops_detected(run, tmp_path):
    tree(tmp_path / "src", {"real": b"real\n"})
    os.mkfifo(tmp_path / "src" / "fifo")
    os.symlink("real", tmp_path / "src" / "link")
    os.symlink(".", tmp_path / "src" / "loop")
    r = run("pyshar", "-q", "src", cwd=tmp_path)
    assert r.returncode == 0
    assert (
        r.stderr == "pyshar: skipping src/fifo: not a regular file or directory\n"
        "pyshar: skipping src/loop: a symlink loop\n"
    )
    listing = run("pyunshar", "-l", input=r.stdout).stdout.decode()
    assert listing.split("\n")[1:] == ["         5 0644 src/link", "         5 0644 src/real", ""]


def test_usage_errors(run, tmp_path):
    for args, message in [
        (["-L", "20", "x"], "-L needs -o PREFIX: parts are written to files"),
        (["-T", "-B", "x"], "-T and -B exclude each other"),
        (["-L", "1.5M", "-o", "p", "x"], "bad size '1.5M': use a number of KiB, or a number with K, M or G"),
    ]:
        r = run("pyshar", *args, cwd=tmp_path)
        assert r.returncode == 64
        assert r.stderr == "pyshar: %s (see 'pyshar --help')\n" % message
    r = run("pyshar", input=b"", cwd=tmp_path)
    assert r.returncode == 64
    assert os.listdir(tmp_path) == []


def test_size_limit_in_kib_and_part_names_padded_to_the_count(run, tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(4000 * 1024 // 2))
    r = run("pyshar", "-q", "-L", "4000", "-o", "companyMega", "big", cwd=tmp_path)
    assert r.returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["big", "companyMega.01"]
    (tmp_path / "many").write_bytes(os.urandom(500_000))
    r = run("pyshar", "-L", "8", "-o", "p", "many", cwd=tmp_path)
    parts = sorted(n for n in os.listdir(tmp_path) if n.startswith("p."))
    assert len(parts) > 99 and parts[0] == "p.001" and parts[-1] == "p.%03d" % len(parts)
    assert all(os.path.getsize(tmp_path / p) <= 8192 for p in parts)
    assert r.stderr.endswith("pyshar: wrote %d parts: %s\n" % (len(parts), " ".join(parts)))
    u = run("pyunshar", "-d", "out", *reversed(parts), cwd=tmp_path)
    assert u.returncode == 0 and (tmp_path / "out" / "many").read_bytes() == (tmp_path / "many").read_bytes()


def test_options_reach_the_archive(run, tmp_path):
    tree(tmp_path, {"t": b"text\n"})
    os.utime(tmp_path / "t", (1_000_000_000, 1_000_000_000))
    r = run("pyshar", "-q", "-c", "-B", "-m", "-x", "t", cwd=tmp_path)
    assert r.stdout.startswith(b"# ---- Cut Here and feed the following to sh ----\n#!/bin/sh\n")
    assert b"pm_unb64 new" in r.stdout and b" 0644 -\n" in r.stdout
    out = tmp_path / "out"
    tree(out, {"t": b"old\n"})
    (tmp_path / "a.shar").write_bytes(r.stdout)
    p = subprocess.run([tool("dash"), str(tmp_path / "a.shar")], cwd=out, capture_output=True)
    assert p.returncode == 0 and (out / "t").read_bytes() == b"text\n"  # -x: no check for existing files
    assert os.stat(out / "t").st_mtime != 1_000_000_000  # -m: no timestamp
    r = run("pyshar", "-q", "-T", "t", cwd=tmp_path)
    assert b"awk '{print substr($0, 2)}'" in r.stdout


def test_pyunshar_keeps_existing_files_unless_c(run, tmp_path):
    tree(tmp_path, {"f": b"new\n"})
    archive = run("pyshar", "-q", "f", cwd=tmp_path).stdout
    out = tree(tmp_path / "out", {"f": b"old\n"})
    r = run("pyunshar", "-d", out, input=archive)
    assert r.returncode == 73
    assert re.fullmatch(r"pyunshar: stdin:\d+: f exists; not overwritten \(use -c to replace it\)\n", r.stderr)
    assert (out / "f").read_bytes() == b"old\n"
    r = run("pyunshar", "-c", "-d", out, input=archive)
    assert r.returncode == 0 and (out / "f").read_bytes() == b"new\n"
    assert stat.S_IMODE(os.stat(out / "f").st_mode) == 0o644


def test_pyunshar_finds_nothing(run, tmp_path):
    r = run("pyunshar", "-d", tmp_path / "o", input=b"Subject: hi\n\ncat food and dogs\n")
    assert r.returncode == 65
    assert r.stderr == "pyunshar: stdin: no shell archive found\n"
    assert not (tmp_path / "o").exists()
    r = run("pyunshar", tmp_path / "missing")
    assert r.returncode == 66
    assert r.stderr == "pyunshar: cannot open %s: No such file or directory\n" % (tmp_path / "missing")
