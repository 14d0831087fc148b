"""Live interoperability with GNU sharutils and busybox, byte for byte, both ways."""

import os
import subprocess

import pytest

from conftest import command_path, tool

SIZES = [0, 1, 44, 45, 46, 4096, 300_001]


def decoders():
    return {"gnu": [tool("uudecode")], "busybox": [tool("busybox"), "uudecode"]}


def encoders():
    return {"gnu": [tool("uuencode")], "busybox": [tool("busybox"), "uuencode"]}


@pytest.mark.parametrize("maker", ["gnu", "busybox"])
@pytest.mark.parametrize("base64", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_they_decode_what_we_encode(tmp_path, maker, base64, n):
    data = os.urandom(n)
    src = tmp_path / "in"
    src.write_bytes(data)
    flags = ["-m"] if base64 else []
    ours = subprocess.run(command_path("pyuuencode") + flags + [str(src), "f"], capture_output=True, check=True).stdout
    out = tmp_path / "out"
    p = subprocess.run(decoders()[maker] + ["-o", str(out)], input=ours, capture_output=True)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == data


@pytest.mark.parametrize("maker", ["gnu", "busybox"])
@pytest.mark.parametrize("base64", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_we_decode_what_they_encode(tmp_path, maker, base64, n):
    data = os.urandom(n)
    src = tmp_path / "in"
    src.write_bytes(data)
    flags = ["-m"] if base64 else []
    theirs = subprocess.run(encoders()[maker] + flags + [str(src), "f"], capture_output=True, check=True).stdout
    p = subprocess.run(command_path("pyuudecode") + ["-o", "-"], input=theirs, capture_output=True)
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout == data


@pytest.mark.parametrize("base64", [False, True])
@pytest.mark.parametrize("mode", [0o644, 0o755, 0o600, 0o4755])
def test_same_bytes_as_gnu_for_the_same_file_name_and_mode(tmp_path, base64, mode):
    src = tmp_path / "in"
    src.write_bytes(os.urandom(10_000))
    os.chmod(src, mode)
    flags = ["-m"] if base64 else []
    for name in ["f", "with space", "ünïcödé", "a'b\"c$(x)"]:
        gnu = subprocess.run([tool("uuencode")] + flags + [str(src), name], capture_output=True, check=True)
        ours = subprocess.run(command_path("pyuuencode") + flags + [str(src), name], capture_output=True, check=True)
        assert ours.stdout == gnu.stdout


def test_stdin_mode_matches_gnu_under_a_umask(tmp_path):
    for umask in (0o022, 0o077, 0o002):

        def pre(umask=umask):
            os.umask(umask)

        gnu = subprocess.run([tool("uuencode"), "x"], input=b"hi\n", capture_output=True, preexec_fn=pre, check=True)
        ours = subprocess.run(
            command_path("pyuuencode") + ["x"], input=b"hi\n", capture_output=True, preexec_fn=pre, check=True
        )
        assert ours.stdout == gnu.stdout
