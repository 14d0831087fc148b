"""pyuuencode as a user runs it."""

import os
import subprocess

from pipemail import uu

from conftest import DATA, command_path


def sample(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def test_file_operand_uses_its_mode_without_setuid(run, tmp_path):
    f = tmp_path / "prog"
    f.write_bytes(sample(70000))
    os.chmod(f, 0o4755)
    r = run("pyuuencode", f, "run.sh")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (DATA / "gnu-mode755.uu").read_bytes()


def test_stdin_with_one_operand_uses_0666_masked_by_umask(run):
    r = run("pyuuencode", "sample.bin", input=sample(1027), umask=0o022)
    assert r.stdout == (DATA / "gnu-1027.uu").read_bytes()
    r = run("pyuuencode", "-", "x", input=b"hi\n", umask=0o077)
    assert r.stdout.startswith(b"begin 600 x\n")


def test_base64(run):
    r = run("pyuuencode", "--base64", "sample.bin", input=sample(1027))
    assert (r.returncode, r.stdout) == (0, (DATA / "gnu-1027.b64").read_bytes())
    assert run("pyuuencode", "-m", "sample.bin", input=sample(46)).stdout == (DATA / "gnu-46.b64").read_bytes()


def test_output_file_is_written_whole(run, tmp_path):
    out = tmp_path / "o.uue"
    out.write_bytes(b"old")
    r = run("pyuuencode", "-o", out, "sample.bin", input=sample(45))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", "")
    assert out.read_bytes() == (DATA / "gnu-45.uu").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["o.uue"]


def test_name_with_a_newline_is_refused_and_nothing_is_written(run, tmp_path):
    out = tmp_path / "o"
    r = run("pyuuencode", "-o", out, "a\nb", input=b"data")
    assert r.returncode == 65
    assert r.stderr == "pyuuencode: name 'a\\nb' contains a line break; it cannot stand in a header\n"
    assert not out.exists() and os.listdir(tmp_path) == []
    r = run("pyuuencode", "a\rb", input=b"data")
    assert (r.returncode, r.stdout) == (65, b"")


def test_missing_input_file(run, tmp_path):
    r = run("pyuuencode", tmp_path / "nope", "x")
    assert r.returncode == 66
    assert r.stderr == "pyuuencode: cannot open %s: No such file or directory\n" % (tmp_path / "nope")
    r = run("pyuuencode", tmp_path, "x")
    assert (r.returncode, r.stdout) == (66, b"")
    assert r.stderr == "pyuuencode: cannot open %s: Is a directory\n" % tmp_path


def test_usage_errors_exit_64_with_one_line(run):
    r = run("pyuuencode")
    assert r.returncode == 64
    assert r.stderr == ("pyuuencode: expected [INFILE] REMOTENAME, got 0 operands (see 'pyuuencode --help')\n")
    r = run("pyuuencode", "a", "b", "c")
    assert r.returncode == 64 and r.stderr.count("\n") == 1
    r = run("pyuuencode", "--bogus", "x")
    assert r.returncode == 64
    # click words the message itself; ours is the one line around it
    assert r.stderr.startswith("pyuuencode: No such option") and "--bogus" in r.stderr
    assert r.stderr.endswith(" (see 'pyuuencode --help')\n") and r.stderr.count("\n") == 1
    r = run("pyuuencode", "", input=b"")
    assert (r.returncode, r.stdout) == (64, b"")


def test_help_and_version(run):
    r = run("pyuuencode", "--help")
    assert r.returncode == 0 and b"Examples:" in r.stdout and b"REMOTENAME" in r.stdout
    r = run("pyuuencode", "--version")
    assert r.returncode == 0 and r.stdout.startswith(b"pyuuencode ")


def test_output_into_a_missing_directory(run, tmp_path):
    r = run("pyuuencode", "-o", tmp_path / "no" / "o", "x", input=b"d")
    assert r.returncode == 73
    assert r.stderr.startswith("pyuuencode: cannot write ")


def test_closed_pipe_ends_quietly(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    cmd = " ".join(command_path("pyuuencode")) + " %s x | head -1" % big
    p = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], capture_output=True, timeout=60)
    assert p.stdout == b"begin 644 x\n"
    assert p.stderr == b""
    assert p.returncode in (0, 141)  # killed by SIGPIPE, as cat would be


def test_round_trip_through_both_commands(run, tmp_path):
    data = os.urandom(200_000)
    for flag in ([], ["-m"]):
        enc = run("pyuuencode", *flag, "f", input=data)
        dec = run("pyuudecode", "-o", "-", input=enc.stdout)
        assert (dec.returncode, dec.stdout) == (0, data)
        assert uu.decode_bytes(enc.stdout) == data
