"""What pyunshar does to modes and times: GNU tar's rule for what it creates, nothing to what was there."""

import calendar
import os
import stat
import subprocess

import pytest
import unprivileged

from conftest import tool

OLD = calendar.timegm((1970, 1, 2, 0, 0, 0))
THEN = calendar.timegm((2020, 5, 6, 7, 8, 9))


def archive_of(run, tmp_path, tree, *, dir_mode=0o777, file_mode=0o644, names=None):
    """A pyshar archive of ``tree`` ({name: bytes, or None for a directory}), every member dated OLD."""
    src = tmp_path / "src"
    src.mkdir()
    for name, data in tree.items():
        path = src / name
        if data is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for name in sorted(tree, reverse=True):  # children first: a directory's time is set last
        os.chmod(src / name, dir_mode if tree[name] is None else file_mode)
        os.utime(src / name, (OLD, OLD))
    r = run("pyshar", "-q", *(names or sorted(tree)), cwd=src)
    assert r.returncode == 0, r.stderr
    return r.stdout


def line_of(archive, prefix):
    return next(i for i, line in enumerate(archive.split(b"\n"), 1) if line.startswith(prefix))


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_an_existing_directory_keeps_its_mode_and_time_and_a_warning_says_so(run, tmp_path):
    archive = archive_of(run, tmp_path, {".ssh": None})
    assert b"pm_dirmode '.ssh' '.ssh' 0777 197001020000.00\n" in archive
    out = tmp_path / "home"
    (out / ".ssh").mkdir(parents=True)
    os.chmod(out / ".ssh", 0o700)
    os.utime(out / ".ssh", (THEN, THEN))
    r = run("pyunshar", "-d", out, input=archive)
    assert (r.returncode, r.stdout) == (0, b"")
    assert r.stderr == (
        "pyunshar: stdin:%d: .ssh existed before the extraction: kept its mode 0700 and time, "
        "not the archive's 0777 and 1970-01-02 00:00:00 UTC\n" % line_of(archive, b"pm_dirmode '")
    )
    assert mode_of(out / ".ssh") == 0o700
    assert os.stat(out / ".ssh").st_mtime == THEN


def test_an_existing_directory_with_new_files_in_it(run, tmp_path):
    archive = archive_of(run, tmp_path, {".ssh": None, ".ssh/authorized_keys": b"ssh-ed25519 AAAA me\n"})
    out = tmp_path / "home"
    (out / ".ssh").mkdir(parents=True)
    os.chmod(out / ".ssh", 0o700)
    os.utime(out / ".ssh", (THEN, THEN))
    r = run("pyunshar", "-d", out, input=archive)
    assert (r.returncode, r.stdout) == (0, b"x - .ssh/authorized_keys\n")
    assert r.stderr.endswith(
        ".ssh existed before the extraction: kept its mode 0700 and time, "
        "not the archive's 0777 and 1970-01-02 00:00:00 UTC\n"
    )
    assert r.stderr.count("\n") == 1
    assert mode_of(out / ".ssh") == 0o700
    assert os.stat(out / ".ssh").st_mtime > THEN  # the new file's creation; never the archive's 1970
    assert (out / ".ssh" / "authorized_keys").read_bytes() == b"ssh-ed25519 AAAA me\n"
    assert os.stat(out / ".ssh" / "authorized_keys").st_mtime == OLD  # what the archive created gets its time


def test_no_warning_when_the_existing_directory_already_agrees(run, tmp_path):
    archive = archive_of(run, tmp_path, {"d": None}, dir_mode=0o755)
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    os.chmod(out / "d", 0o755)
    os.utime(out / "d", (OLD, OLD))
    r = run("pyunshar", "-d", out, input=archive, umask=0o022)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", "")


def test_an_existing_directory_in_a_gnu_archive_is_left_alone(run, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x\n")
    os.chmod(src / "d", 0o777)
    archive = subprocess.run([tool("shar"), "-q", "d"], cwd=src, capture_output=True, check=True).stdout
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    os.chmod(out / "d", 0o700)
    r = run("pyunshar", "-d", out, input=archive)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"x - d/f\n", "")
    assert mode_of(out / "d") == 0o700


@pytest.mark.skipif(not unprivileged.is_root(), reason="the root half of GNU tar's rule needs root")
def test_root_gets_the_archive_modes_exactly_like_gnu_tar(run, tmp_path):
    archive = archive_of(run, tmp_path, {"d": None, "d/f": b"x\n"}, dir_mode=0o775, file_mode=0o664)
    out = tmp_path / "out"
    r = run("pyunshar", "-d", out, input=archive, umask=0o077)
    assert (r.returncode, r.stderr) == (0, "")
    assert (mode_of(out / "d"), mode_of(out / "d" / "f")) == (0o775, 0o664)
    assert (os.stat(out / "d").st_mtime, os.stat(out / "d" / "f").st_mtime) == (OLD, OLD)


def user_unshar(archive, *args, umask, prepare=None):
    """pyunshar as the unprivileged user: (exit code, stdout, stderr, {relative path: mode})."""
    with unprivileged.user_dir() as d:
        path = os.path.join(d, "archive.shar")
        with open(path, "wb") as f:
            f.write(archive)
        os.chmod(path, 0o644)
        out = os.path.join(d, "out")
        if prepare is not None:
            prepare(out)
            unprivileged.give(out)
        code, stdout, stderr = unprivileged.run("unshar", "-d", out, *args, path, cwd=d, umask=umask)
        modes = {}
        for root, dirs, files in os.walk(out):
            for name in dirs + files:
                full = os.path.join(root, name)
                modes[os.path.relpath(full, out)] = mode_of(full)
        return code, stdout, stderr, modes


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_other_users_get_the_archive_modes_masked_by_their_umask(run, tmp_path, umask):
    archive = archive_of(run, tmp_path, {"d": None, "d/f": b"x\n"}, dir_mode=0o777, file_mode=0o666)
    assert user_unshar(archive, umask=umask) == (
        0,
        b"x - d/f\n",
        "",
        {"d": 0o777 & ~umask, "d/f": 0o666 & ~umask},
    )


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6755, 0o1777])
def test_setuid_setgid_sticky_are_never_applied_for_root_or_others(run, tmp_path, mode):
    archive = archive_of(run, tmp_path, {"d": None, "d/f": b"#!/bin/sh\n"}, dir_mode=0o755, file_mode=0o755)
    archive = archive.replace(b" 0755 ", b" %04o " % mode)
    assert b"pm_dirmode 'd' 'd' %04o " % mode in archive
    out = tmp_path / "out"
    r = run("pyunshar", "-d", out, input=archive, umask=0)
    assert (r.returncode, r.stderr) == (0, "")
    assert (mode_of(out / "d"), mode_of(out / "d" / "f")) == (mode & 0o777, mode & 0o777)
    assert user_unshar(archive, umask=0) == (0, b"x - d/f\n", "", {"d": mode & 0o777, "d/f": mode & 0o777})


def test_a_file_replaced_with_c_gets_the_archive_mode_by_the_same_rule(run, tmp_path):
    archive = archive_of(run, tmp_path, {"f": b"new\n"}, file_mode=0o644)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").write_bytes(b"old\n")
    os.chmod(out / "f", 0o600)
    r = run("pyunshar", "-c", "-d", out, input=archive, umask=0o077)
    assert (r.returncode, r.stderr) == (0, "")
    assert (out / "f").read_bytes() == b"new\n"
    assert mode_of(out / "f") == (0o644 if unprivileged.is_root() else 0o600)
    assert os.stat(out / "f").st_mtime == OLD

    def old_file(path):
        os.mkdir(path)
        with open(os.path.join(path, "f"), "wb") as f:
            f.write(b"old\n")
        os.chmod(os.path.join(path, "f"), 0o640)

    assert user_unshar(archive, "-c", umask=0o077, prepare=old_file) == (0, b"x - f\n", "", {"f": 0o600})


# -- the same rule when the archive runs under sh ----------------------------------------------------


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox sh"])
def test_sh_running_a_pyshar_archive_keeps_an_existing_directory_too(run, tmp_path, shell):
    archive = archive_of(run, tmp_path, {".ssh": None, ".ssh/k": b"key\n", "new": None})
    (tmp_path / "a.shar").write_bytes(archive)
    out = tmp_path / "home"
    (out / ".ssh").mkdir(parents=True)
    os.chmod(out / ".ssh", 0o700)
    os.utime(out / ".ssh", (THEN, THEN))
    argv = [tool("busybox"), "sh"] if shell == "busybox sh" else [tool(shell)]
    proc = subprocess.run([*argv, tmp_path / "a.shar"], cwd=out, capture_output=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == b"x - .ssh/k: ok\nx - .ssh/: existed before; its mode and time were left as they were\n"
    assert mode_of(out / ".ssh") == 0o700 and os.stat(out / ".ssh").st_mtime != OLD
    assert (mode_of(out / "new"), os.stat(out / "new").st_mtime) == (0o777, OLD)
    assert sorted(os.listdir(out)) == [".ssh", "new"]  # the lock directory is gone


def test_archives_in_the_format_of_pipemail_0_1_0_still_extract(run, tmp_path):
    import hashlib

    from pipemail import sharformat

    old = sharformat.OLD_PRELUDES[0]
    assert hashlib.sha256(old.encode()).hexdigest() == (
        "d0d51ae34e381a63ce96521b37ddcb4c06b254f7e1573b5a750353a783170d85"  # pipemail 0.1.0's PRELUDE
    )
    archive = archive_of(run, tmp_path, {"d": None, "d/f": b"x\n"}, dir_mode=0o750)
    new_prelude = (sharformat.PRELUDE % {"force": ""}).encode()
    assert new_prelude in archive
    archive = archive.replace(new_prelude, (old % {"force": ""}).encode())
    out = tmp_path / "out"
    r = run("pyunshar", "-d", out, input=archive)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"x - d/f\n", "")
    assert (out / "d" / "f").read_bytes() == b"x\n" and mode_of(out / "d") == 0o750
