"""Hostile archives: pyunshar runs nothing, writes nothing outside DIR, and says so."""

import os
import stat

import pytest


def make_archive(run, tmp_path, files):
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        path = os.path.join(os.fsencode(src), name)
        with open(path, "wb") as f:
            f.write(data)
    r = run("pyshar", "-q", *sorted(os.fsdecode(n) for n in files), cwd=src)
    assert r.returncode == 0
    return r.stdout


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "something in the archive ran"


def unshar(run, tmp_path, archive, *args):
    out = tmp_path / "out"
    r = run("pyunshar", "-d", out, *args, input=archive, env={"CANARY": str(tmp_path / "CANARY")})
    return r, out


def outside(tmp_path):
    return sorted(n for n in os.listdir(tmp_path) if n not in ("src", "out", "CANARY"))


def test_command_between_files_stops_the_archive(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"a": b"first\n", b"b": b"second\n"})
    evil = archive.replace(b"# 'b' (text)\n", b"touch \"$CANARY\"\n# 'b' (text)\n")
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 65
    line = evil[: evil.index(b'touch "$CANARY"')].count(b"\n") + 1
    assert r.stderr == 'pyunshar: stdin:%d: unexpected shell command: touch "$CANARY"\n' % line
    assert os.listdir(out) == ["a"]  # what came before was complete and checked


def test_command_substitution_in_an_unquoted_here_document(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"a": b"data\n"})
    evil = archive.replace(b"<<'PYSHAR_EOF'\nXdata", b'<<PYSHAR_EOF\nX$(touch "$CANARY")')
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 65 and "unexpected shell command: if pm_ok; then awk" in r.stderr
    assert not (out / "a").exists()


@pytest.mark.parametrize("name", [b"$(touch CANARY)", b"`touch CANARY`", b"a'$(touch CANARY)'b", b"x\n touch CANARY"])
def test_names_that_would_run_commands_are_just_names(run, tmp_path, canary, name):
    archive = make_archive(run, tmp_path, {name: b"harmless\n"})
    r, out = unshar(run, tmp_path, archive)
    assert (r.returncode, r.stderr) == (0, "")
    assert os.listdir(os.fsencode(out)) == [name]
    assert not (out / "CANARY").exists()


@pytest.mark.parametrize(
    "name,why",
    [
        (b"/tmp/evil-pyunshar", "absolute paths are never written"),
        (b"../evil", "'..' is never written"),
        (b"a/../../evil", "'..' is never written"),
    ],
)
def test_absolute_and_dotdot_names_are_refused(run, tmp_path, canary, name, why):
    archive = make_archive(run, tmp_path, {b"placeholder": b"x\n"})
    q = b"'" + name + b"'"
    evil = archive.replace(b"pm_file 'placeholder' 'placeholder'", b"pm_file %s %s" % (q, q))
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 77
    assert "refusing unsafe name %r: %s" % (os.fsdecode(name), why) in r.stderr
    assert r.stderr.count("\n") == 1
    assert not out.exists() and outside(tmp_path) == []  # DIR is made only for something to write
    assert not os.path.exists("/tmp/evil-pyunshar")


def test_symlink_creation_is_not_an_archive_step(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"f": b"x\n"})
    evil = archive.replace(b"# 'f' (text)\n", b"ln -s /etc link\n# 'f' (text)\n")
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 65 and "unexpected shell command: ln -s /etc link" in r.stderr
    assert not os.path.lexists(out / "link")


def test_write_through_a_symlink_in_the_directory_is_refused(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"f": b"x\n"})
    evil = archive.replace(b"pm_file 'f' 'f'", b"pm_file 'link/f' 'link/f'")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(target, tmp_path / "out" / "link")
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 77
    assert "refusing to write below 'link': not a real directory" in r.stderr
    assert os.listdir(target) == []


def test_setuid_mode_is_never_set(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"f": b"#!/bin/sh\n"})
    evil = archive.replace(b" 0644 ", b" 6755 ")
    assert evil != archive
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 0
    assert stat.S_IMODE(os.stat(out / "f").st_mode) == 0o755


def test_a_changed_prelude_is_refused(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"f": b"x\n"})
    evil = archive.replace(b"pm_start() {\n", b'pm_start() {\n  touch "$CANARY"\n')
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 65
    assert "the archive's code differs from pyshar's; not extracted" in r.stderr
    assert not out.exists() or os.listdir(out) == []


def test_archive_in_a_mail_with_text_and_signature(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"f": b"payload\n"})
    mail = (
        b"From: a@example.com\nSubject: files\n\nHere they are.\ncat food and dogs\n\n" + archive + b"-- \nrm -rf ~\n"
    )
    r, out = unshar(run, tmp_path, mail)
    assert (r.returncode, r.stderr) == (0, "")
    assert (out / "f").read_bytes() == b"payload\n"


def test_tampered_data_is_not_written(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"f": b"payload\n"})
    r, out = unshar(run, tmp_path, archive.replace(b"Xpayload", b"Xpayl0ad"))
    assert r.returncode == 65 and "SHA-256 differs from the archive's; not written" in r.stderr
    assert os.listdir(out) == []


def gnu_archive(tmp_path, files):
    import subprocess

    from conftest import tool

    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    return subprocess.run([tool("shar"), "-q", *files], cwd=src, capture_output=True, check=True).stdout


def test_gnu_archive_with_a_command_between_files(run, tmp_path, canary):
    archive = gnu_archive(tmp_path, {"a": b"first\n", "b": b"second\n"})
    evil = archive.replace(
        b"# ============= b ==============\n", b'touch "$CANARY"\n# ============= b ==============\n'
    )
    assert evil != archive
    r, out = unshar(run, tmp_path, evil)
    assert r.returncode == 65
    line = evil[: evil.index(b'touch "$CANARY"')].count(b"\n") + 1
    assert r.stderr.startswith("pyunshar: stdin:%d: " % line) and r.stderr.count("\n") == 1
    assert not (out / "b").exists()


def test_gnu_archive_with_substitution_in_a_name(run, tmp_path, canary):
    # GNU pastes names into double-quoted echo lines: under sh this name runs touch
    name = '$(touch "$CANARY")'
    archive = gnu_archive(tmp_path, {name: b"data\n"})
    assert b'"x - extracting %s (text)"' % name.encode() in archive
    r, out = unshar(run, tmp_path, archive)
    assert (r.returncode, r.stderr) == (0, "")
    assert os.listdir(out) == [name]  # a file with that literal name, inside DIR


def test_gnu_archive_with_dotdot_and_absolute_names(run, tmp_path, canary):
    archive = gnu_archive(tmp_path, {"zz": b"data\n"})
    for name, code in ((b"../zz", 77), (b"/tmp/zz-pyunshar", 77)):
        evil = archive.replace(b"zz", name)
        r, out = unshar(run, tmp_path, evil)
        assert r.returncode == code, r.stderr
        assert "refusing unsafe name" in r.stderr
        assert outside(tmp_path) == [] and not os.path.exists("/tmp/zz-pyunshar")


def test_compressed_gnu_archive_is_refused(run, tmp_path, canary):
    import subprocess

    from conftest import tool

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n" * 100)
    archive = subprocess.run([tool("shar"), "-q", "-C", "gzip", "f"], cwd=src, capture_output=True).stdout
    r, out = unshar(run, tmp_path, archive)
    assert r.returncode == 65 and "compressed archives (shar -C) are not supported" in r.stderr
    assert not out.exists()


def test_damaged_base64_is_named_and_not_written(run, tmp_path, canary):
    archive = make_archive(run, tmp_path, {b"blob": os.urandom(50_000), b"after": b"after\n"})
    start = archive.index(b"begin-base64 600 piece\n")
    bad = start + len(b"begin-base64 600 piece\n") + 61 * 300 + 5  # a character in the 301st line
    evil = archive[:bad] + b"!" + archive[bad + 1 :]
    r, out = unshar(run, tmp_path, evil)
    line = archive[:start].count(b"\n") + 1  # the begin-base64 line
    assert r.returncode == 65
    assert r.stderr == "pyunshar: stdin:%d: invalid character '!' in base64 data\n" % (line + 301)
    assert not (out / "blob").exists() and (out / "after").read_bytes() == b"after\n"  # archived first


@pytest.mark.parametrize("nth", [0, 1, 299, -2])
@pytest.mark.parametrize("char", [b"!", b" ", b"-", b"\xe9"])
def test_a_stray_character_in_base64_is_named_wherever_it_is(run, tmp_path, nth, char):
    (tmp_path / "blob").write_bytes(os.urandom(200_000))
    assert run("pyshar", "-q", "-L", "60", "-o", "p", "blob", cwd=tmp_path).returncode == 0
    part = tmp_path / "p.02"
    archive = part.read_bytes()
    start = archive.index(b"begin-base64 600 piece\n") + len(b"begin-base64 600 piece\n")
    lines = archive[start : archive.index(b"\n====\n", start)].count(b"\n") + 1
    line = nth % lines
    bad = start + 61 * line + 7
    part.write_bytes(archive[:bad] + char + archive[bad + 1 :])
    r = run("pyunshar", "-d", "out", *sorted(p.name for p in tmp_path.glob("p.*")), cwd=tmp_path)
    where = archive[:start].count(b"\n") + 1 + line
    shown = char.decode() if char != b"\xe9" else "\\xe9"
    assert (r.returncode, r.stderr) == (
        65,
        "pyunshar: p.02:%d: invalid character '%s' in base64 data\n" % (where, shown),
    )
    assert not (tmp_path / "out" / "blob").exists()
