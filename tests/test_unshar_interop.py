"""pyunshar on GNU shar's archives, GNU unshar on pyshar's, and archives in mail."""

import os
import random
import subprocess
from email.message import EmailMessage

from conftest import tool


def tree(root):
    rnd = random.Random(7)
    files = {
        "notes.txt": b"".join(b"line %d of the notes\n" % i for i in range(3000)),
        "bin/blob.bin": rnd.randbytes(150_000),
        "with space.txt": b"spaces\n",
        "no-newline": b"last",
        "empty": b"",
    }
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def gnu_shar(cwd, *args):
    p = subprocess.run([tool("shar"), *args], cwd=cwd, capture_output=True, check=True)
    return p.stdout


def check(out, files):
    for name, data in files.items():
        assert (out / name).read_bytes() == data, name


def test_single_gnu_archive(run, tmp_path):
    src = tmp_path / "src"
    files = tree(src)
    archive = gnu_shar(src, "-q", *files)
    r = run("pyunshar", "-d", tmp_path / "out", input=archive)
    assert (r.returncode, r.stderr) == (0, "")
    check(tmp_path / "out", files)


def test_gnu_split_archive_of_large_parts_in_any_order(run, tmp_path):
    src = tmp_path / "src"
    files = tree(src)
    gnu_shar(src, "-q", "-L", "60", "-o", str(tmp_path / "part"), *files)
    parts = sorted(p for p in os.listdir(tmp_path) if p.startswith("part."))
    assert len(parts) >= 3 and all(os.path.getsize(tmp_path / p) > 16384 for p in parts[:-1])
    shuffled = parts + parts[:1]
    random.Random(3).shuffle(shuffled)
    r = run("pyunshar", "-d", "out", *shuffled, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    check(tmp_path / "out", files)
    r = run("pyunshar", "-d", "out2", *parts[1:], cwd=tmp_path)
    assert r.returncode == 65
    assert r.stderr == "pyunshar: %s:1: part 1 of %d is missing; nothing of this archive was extracted\n" % (
        parts[1],
        len(parts),
    )
    r = run("pyunshar", "-d", "out2", *parts[:-1], cwd=tmp_path)
    assert r.returncode == 65
    assert r.stderr == (
        "pyunshar: %s:1: the last part (number %d or later) is missing; nothing of this archive "
        "was extracted\n" % (parts[0], len(parts))
    )
    assert not (tmp_path / "out2").exists()


def test_gnu_unshar_extracts_a_pyshar_archive(run, tmp_path):
    src = tmp_path / "src"
    files = tree(src)
    archive = run("pyshar", "-q", *files, cwd=src).stdout
    (tmp_path / "a.shar").write_bytes(b"Subject: files\n\nsome text first\n\n" + archive)
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.run([tool("unshar"), "-d", str(out), str(tmp_path / "a.shar")], capture_output=True)
    assert p.returncode == 0, p.stderr
    check(out, files)


def test_archive_attached_to_a_mail_with_a_text_body(run, tmp_path):
    src = tmp_path / "src"
    files = tree(src)
    archive = run("pyshar", "-q", *files, cwd=src).stdout
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "backup"
    msg.set_content("Here is the backup.\n")
    msg.add_attachment(archive, maintype="application", subtype="x-shar", filename="backup.shar")
    r = run("pyunshar", "-d", tmp_path / "out", input=msg.as_bytes())
    assert (r.returncode, r.stderr) == (0, "")
    check(tmp_path / "out", files)


def test_pyshar_parts_in_an_mbox(run, tmp_path):
    import mailbox

    src = tmp_path / "src"
    files = tree(src)
    r = run("pyshar", "-q", "-L", "20", "-o", str(tmp_path / "p"), *files, cwd=src)
    parts = sorted(n for n in os.listdir(tmp_path) if n.startswith("p."))
    box = mailbox.mbox(tmp_path / "box.mbox")
    for name in reversed(parts):
        msg = EmailMessage()
        msg["Subject"] = name
        msg.set_content((tmp_path / name).read_text())
        box.add(msg)
    box.flush()
    r = run("pyunshar", "-d", tmp_path / "out", tmp_path / "box.mbox")
    assert (r.returncode, r.stderr) == (0, "")
    check(tmp_path / "out", files)
