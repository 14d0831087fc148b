"""pyuudecode as a user runs it: where files go, what is refused, what is kept."""

import os
import stat
import subprocess

import pytest
import unprivileged

from pipemail import uu

from conftest import DATA, tool


def sample(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def block(data, name, mode=0o644, base64=False):
    """A block whose header has ``mode`` as given, setuid, setgid and sticky bits included."""
    text = uu.encode_bytes(data, name, 0o644, base64=base64)
    head, rest = text.split(b"\n", 1)
    word = b"begin-base64" if base64 else b"begin"
    assert head.startswith(word + b" 644 ")
    return b"%s %o %s\n" % (word, mode, head[len(word) + 5 :]) + rest


def listing(path):
    return sorted(os.listdir(path))


def test_writes_the_header_name(run, tmp_path):
    r = run("pyuudecode", input=block(b"abc", "f.txt", 0o640), cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", "")
    assert (tmp_path / "f.txt").read_bytes() == b"abc"


def user_decode(args, input, umask):
    """pyuudecode as the unprivileged user, in a directory of its own: (exit code, stderr, {name: mode})."""
    with unprivileged.user_dir() as d:
        code, out, err = unprivileged.run("uudecode", *args, input=input, cwd=d, umask=umask)
        return code, err, {n: stat.S_IMODE(os.lstat(os.path.join(d, n)).st_mode) for n in os.listdir(d)}


@pytest.mark.skipif(not unprivileged.is_root(), reason="the root half of GNU tar's rule needs root")
@pytest.mark.parametrize("mode", [0o777, 0o640, 0o604, 0o4755, 0o6777])
def test_root_gets_the_header_mode_exactly_like_gnu_tar(run, tmp_path, mode):
    r = run("pyuudecode", input=block(b"abc", "f", mode), cwd=tmp_path, umask=0o077)
    assert (r.returncode, r.stderr) == (0, "")
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == mode & 0o777  # never setuid, setgid, sticky


@pytest.mark.parametrize("mode,umask,expected", [(0o777, 0o027, 0o750), (0o666, 0o077, 0o600), (0o755, 0, 0o755)])
def test_other_users_get_the_header_mode_masked_by_their_umask(mode, umask, expected):
    code, err, modes = user_decode([], block(b"abc", "f", mode), umask)
    assert (code, err, modes) == (0, "", {"f": expected})


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o1777, 0o7777])
def test_setuid_setgid_sticky_are_never_set(run, tmp_path, mode):
    assert block(b"", "suid", mode).startswith(b"begin %o suid\n" % mode)
    r = run("pyuudecode", input=block(b"#!/bin/sh\n", "suid", mode), cwd=tmp_path, umask=0)
    assert r.returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "suid").st_mode) == mode & 0o777
    r = run("pyuudecode", "-o", tmp_path / "named", input=block(b"#!/bin/sh\n", "x", mode), umask=0)
    assert stat.S_IMODE(os.stat(tmp_path / "named").st_mode) == mode & 0o777
    assert user_decode([], block(b"#!/bin/sh\n", "suid", mode), 0) == (0, "", {"suid": mode & 0o777})


def test_a_file_replaced_with_force_gets_the_header_mode_by_the_same_rule(run, tmp_path):
    (tmp_path / "f").write_bytes(b"old")
    os.chmod(tmp_path / "f", 0o600)
    r = run("pyuudecode", "-f", input=block(b"new", "f", 0o755), cwd=tmp_path, umask=0o077)
    assert r.returncode == 0 and (tmp_path / "f").read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == (0o755 if unprivileged.is_root() else 0o700)


def test_file_operands_and_golden_inputs(run, tmp_path):
    r = run("pyuudecode", DATA / "gnu-1027.uu", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "sample.bin").read_bytes() == sample(1027)
    r = run("pyuudecode", DATA / "busybox-70000.b64", cwd=tmp_path)
    assert r.returncode == 73
    assert r.stderr == (
        "pyuudecode: %s:1: sample.bin exists; not overwritten (use -f to replace it)\n" % (DATA / "busybox-70000.b64")
    )
    assert (tmp_path / "sample.bin").read_bytes() == sample(1027)
    r = run("pyuudecode", "--force", DATA / "busybox-70000.b64", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "sample.bin").read_bytes() == sample(70000)
    assert listing(tmp_path) == ["sample.bin"]


def test_every_block_goes_to_its_own_name(run, tmp_path):
    mail = b"Subject: files\n\n" + block(b"one", "a") + b"text\n" + block(b"two", "b", base64=True)
    r = run("pyuudecode", input=mail, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "a").read_bytes() == b"one" and (tmp_path / "b").read_bytes() == b"two"


def test_output_file_receives_all_blocks_in_order(run, tmp_path):
    out = tmp_path / "all"
    r = run("pyuudecode", "-o", out, input=block(b"one", "a") + block(b"two", "b", base64=True))
    assert r.returncode == 0 and out.read_bytes() == b"onetwo"
    assert listing(tmp_path) == ["all"]


def test_output_to_stdout(run, tmp_path):
    for name in ("-", "/dev/stdout"):
        r = run("pyuudecode", "-o", name, input=block(b"x" * 1000, "a"), cwd=tmp_path)
        assert (r.returncode, r.stdout) == (0, b"x" * 1000)
    assert listing(tmp_path) == []


def test_dev_null_is_written_directly_not_replaced_nor_chmodded(run):
    before = os.stat("/dev/null").st_mode
    r = run("pyuudecode", "-o", "/dev/null", input=block(b"abc", "a", 0o600))
    assert r.returncode == 0
    assert os.stat("/dev/null").st_mode == before  # GNU uudecode chmods it to the header's mode
    assert stat.S_ISCHR(before)


def test_fifo_target_is_written_directly(run, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    r = run("pyuudecode", "-o", fifo, input=block(b"through the fifo", "a"))
    reader.join(10)
    assert r.returncode == 0 and got == [b"through the fifo"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_only_the_last_component_by_default(run, tmp_path):
    r = run("pyuudecode", input=block(b"x", "deep/dir/name"), cwd=tmp_path)
    assert r.returncode == 0 and listing(tmp_path) == ["name"]


def test_keep_paths_creates_relative_directories(run, tmp_path):
    r = run("pyuudecode", "--keep-paths", input=block(b"x", "deep/dir/name"), cwd=tmp_path)
    assert r.returncode == 0
    assert (tmp_path / "deep" / "dir" / "name").read_bytes() == b"x"


@pytest.mark.parametrize("flags", [[], ["-s"], ["-f"], ["-s", "-f"]])
@pytest.mark.parametrize(
    "name,why",
    [
        ("/tmp/pwned", "absolute paths are never written"),
        ("../pwned", "'..' is never written"),
        ("a/../../pwned", "'..' is never written"),
    ],
)
def test_absolute_and_dotdot_are_always_refused(run, tmp_path, flags, name, why):
    work = tmp_path / "work"
    work.mkdir()
    r = run("pyuudecode", *flags, input=block(b"evil", name), cwd=work)
    assert r.returncode == 77
    assert r.stderr == "pyuudecode: stdin:1: refusing unsafe name %r: %s\n" % (name, why)
    assert listing(work) == [] and listing(tmp_path) == ["work"]
    assert not os.path.exists("/tmp/pwned")


def test_existing_file_is_kept_without_force(run, tmp_path):
    (tmp_path / "f").write_bytes(b"precious")
    r = run("pyuudecode", input=block(b"new", "f"), cwd=tmp_path)
    assert r.returncode == 73
    assert r.stderr == "pyuudecode: stdin:1: f exists; not overwritten (use -f to replace it)\n"
    assert (tmp_path / "f").read_bytes() == b"precious" and listing(tmp_path) == ["f"]
    r = run("pyuudecode", "-f", input=block(b"new", "f"), cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "f").read_bytes() == b"new"


def test_named_output_file_is_replaced(run, tmp_path):
    (tmp_path / "f").write_bytes(b"old")
    r = run("pyuudecode", "-o", tmp_path / "f", input=block(b"new", "ignored"))
    assert r.returncode == 0 and (tmp_path / "f").read_bytes() == b"new"
    assert listing(tmp_path) == ["f"]


def test_symlink_at_a_header_target_is_never_followed(run, tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(outside, work / "link")
    r = run("pyuudecode", input=block(b"evil", "link"), cwd=work)
    assert r.returncode == 73 and outside.read_bytes() == b"keep"
    r = run("pyuudecode", "-f", input=block(b"evil", "link"), cwd=work)
    assert r.returncode == 0
    assert outside.read_bytes() == b"keep"  # the link itself was replaced
    assert not os.path.islink(work / "link") and (work / "link").read_bytes() == b"evil"


def test_symlinked_directory_in_a_kept_path_is_refused(run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(outside, work / "d")
    r = run("pyuudecode", "-s", "-f", input=block(b"evil", "d/x"), cwd=work)
    assert r.returncode == 77
    assert r.stderr == "pyuudecode: stdin:1: refusing to write below 'd': not a real directory\n"
    assert listing(outside) == []


def test_user_named_symlink_is_followed(run, tmp_path):
    (tmp_path / "real").write_bytes(b"old")
    os.symlink("real", tmp_path / "via")
    r = run("pyuudecode", "-o", tmp_path / "via", input=block(b"new", "x"))
    assert r.returncode == 0
    assert os.path.islink(tmp_path / "via") and (tmp_path / "real").read_bytes() == b"new"


def test_corrupt_block_leaves_no_file_and_no_temporary(run, tmp_path):
    text = bytearray(block(os.urandom(45 * 3000), "big"))
    text[len(text) // 2] = ord("~")
    r = run("pyuudecode", input=bytes(text), cwd=tmp_path)
    assert r.returncode == 65
    assert r.stderr.startswith("pyuudecode: stdin:") and r.stderr.count("\n") == 1
    assert "invalid character '~' in uuencoded data" in r.stderr
    assert listing(tmp_path) == []


def test_truncated_block_leaves_the_named_output_untouched(run, tmp_path):
    out = tmp_path / "out"
    out.write_bytes(b"original")
    text = block(os.urandom(10000), "x")
    r = run("pyuudecode", "-o", out, input=text[: text.index(b"\n", len(text) // 2) + 1])
    assert r.returncode == 65
    assert "truncated: no 'end' line for the block that begins on line 1" in r.stderr
    assert out.read_bytes() == b"original" and listing(tmp_path) == ["out"]


def test_each_block_stands_alone_and_the_first_failure_sets_the_exit_code(run, tmp_path):
    (tmp_path / "exists").write_bytes(b"keep")
    mail = (
        block(b"good1", "one")
        + block(b"x", "exists")
        + block(b"y", "../evil")
        + b"begin 644 broken\nM!!!\n"
        + block(b"good2", "two")
    )
    r = run("pyuudecode", input=mail, cwd=tmp_path)
    assert r.returncode == 73
    lines = r.stderr.splitlines()
    assert lines == [
        "pyuudecode: stdin:5: exists exists; not overwritten (use -f to replace it)",
        "pyuudecode: stdin:9: refusing unsafe name '../evil': '..' is never written",
        "pyuudecode: stdin:15: truncated: a new 'begin' before the 'end' of the block that begins on line 13",
    ]
    assert listing(tmp_path) == ["exists", "one", "two"]
    assert (tmp_path / "one").read_bytes() == b"good1" and (tmp_path / "two").read_bytes() == b"good2"


def test_several_input_files_and_a_missing_one(run, tmp_path):
    (tmp_path / "a.uue").write_bytes(block(b"A", "a"))
    (tmp_path / "b.uue").write_bytes(block(b"B", "b"))
    r = run("pyuudecode", "a.uue", "missing.uue", "b.uue", cwd=tmp_path)
    assert r.returncode == 66
    assert r.stderr == "pyuudecode: cannot open missing.uue: No such file or directory\n"
    assert (tmp_path / "a").read_bytes() == b"A" and (tmp_path / "b").read_bytes() == b"B"


def test_no_begin_line(run, tmp_path):
    r = run("pyuudecode", input=b"just\ntext\n", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (65, "pyuudecode: stdin:2: no 'begin' line found\n")
    r = run("pyuudecode", input=b"", cwd=tmp_path)
    assert (r.returncode, r.stderr) == (65, "pyuudecode: stdin:0: no 'begin' line found\n")
    (tmp_path / "bin").write_bytes(os.urandom(100_000).replace(b"begin", b"xxxxx"))
    r = run("pyuudecode", "bin", cwd=tmp_path)
    assert r.returncode == 65 and r.stderr.startswith("pyuudecode: bin:")
    assert listing(tmp_path) == ["bin"]


def test_tolerates_crlf_and_stripped_spaces_from_mail(run, tmp_path):
    data = os.urandom(3000) + b"\0" * 200
    old = bytearray()
    import io

    buf = io.BytesIO()
    uu.encode(io.BytesIO(data), buf, "f")
    old = b"\r\n".join(line.rstrip(b" ") for line in buf.getvalue().split(b"\n"))
    r = run("pyuudecode", "-o", "-", input=b"Subject: x\r\n\r\n" + old)
    assert (r.returncode, r.stdout) == (0, data)


def test_ignore_chmod_flag_is_accepted(run, tmp_path):
    r = run("pyuudecode", "-c", input=block(b"x", "f"), cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "f").read_bytes() == b"x"


def test_output_directory_missing(run, tmp_path):
    r = run("pyuudecode", "-o", tmp_path / "no" / "f", input=block(b"x", "f"))
    assert r.returncode == 73 and r.stderr.startswith("pyuudecode: cannot write ")
    assert r.stderr.count("\n") == 1


def test_usage_error(run):
    r = run("pyuudecode", "--nope")
    assert r.returncode == 64 and r.stderr.count("\n") == 1


def test_pyshar_parts_in_a_mailbox_are_passed_over_and_named_when_alone(run, tmp_path):
    """pymail --max-size mails 7bit pyshar parts, whose pieces are base64 blocks named 'piece':
    pyuudecode leaves them to pyunshar and decodes the uuencoded mail beside them."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    parts = tmp_path / "parts.mbox"
    r = run(
        "pymail",
        "--transport",
        "mbox:%s" % parts,
        "--max-size",
        "128K",
        "-a",
        big,
        "me@example.org",
        env={"HOME": str(tmp_path)},
    )
    assert (r.returncode, r.stderr) == (0, "")
    picture = sample(5000)
    both = tmp_path / "both.mbox"
    both.write_bytes(
        parts.read_bytes() + b"From me Mon Jan  1 00:00:00 2024\nSubject: kitty\n\n" + block(picture, "kitty.png")
    )
    out = tmp_path / "out"
    out.mkdir()
    r = run("pyuudecode", both, cwd=out)
    assert (r.returncode, r.stderr, listing(out)) == (0, "", ["kitty.png"])
    assert (out / "kitty.png").read_bytes() == picture
    r = run("pyuudecode", parts, cwd=out)
    lines = parts.read_bytes().split(b"\n")
    line = next(n for n, text in enumerate(lines, 1) if text.startswith(b"# pyshar archive "))
    assert (r.returncode, r.stderr, listing(out)) == (
        65,
        "pyuudecode: %s:%d: a pyshar archive, no uuencoded file: pyunshar unpacks it\n" % (parts, line),
        ["kitty.png"],
    )


# -- what GNU and busybox uudecode accept ------------------------------------------------------


def with_checksums(data, name, crlf=False):
    """``data`` uuencoded with the per-line checksum character of old BSD encoders (sum of the bytes mod 64)."""
    import binascii

    eol = b"\r\n" if crlf else b"\n"
    lines = [b"begin 644 " + name + eol]
    for i in range(0, len(data), 45):
        chunk = data[i : i + 45]
        check = sum(chunk) & 63
        lines.append(binascii.b2a_uu(chunk, backtick=True)[:-1] + bytes((check + 32 if check else 96,)) + eol)
    return b"".join(lines) + b"`" + eol + b"end" + eol


def gnu_and_busybox(tmp_path, text, name):
    """What GNU uudecode and busybox uudecode write for ``text``: the file ``name`` each creates."""
    got = []
    for argv in ([tool("uudecode")], [tool("busybox"), "uudecode"]):
        d = tmp_path / ("ref-%d" % len(got))
        d.mkdir()
        (d / "in").write_bytes(text)
        proc = subprocess.run([*argv, "in"], cwd=d, capture_output=True)
        assert (proc.returncode, proc.stderr) == (0, b"")
        got.append((d / name).read_bytes())
    return got


@pytest.mark.parametrize("n", [1, 44, 45, 46, 45 * 300 + 7])
@pytest.mark.parametrize("crlf", [False, True])
def test_lines_with_a_checksum_character_decode_byte_identical_to_gnu_and_busybox(run, tmp_path, n, crlf):
    data = os.urandom(n)
    text = with_checksums(data, b"ck.bin", crlf)
    assert gnu_and_busybox(tmp_path, text, "ck.bin") == [data, data]
    r = run("pyuudecode", input=text, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "ck.bin").read_bytes() == data


def test_more_than_one_character_after_the_data_is_still_damage(run, tmp_path):
    text = with_checksums(os.urandom(90), b"f")
    lines = text.split(b"\n")
    lines[2] += b"!"  # a checksum and one more
    r = run("pyuudecode", input=b"\n".join(lines), cwd=tmp_path)
    assert r.returncode == 65
    assert r.stderr == "pyuudecode: stdin:3: the length character 'M' says 45 bytes but the line holds more\n"
    assert listing(tmp_path) == []


@pytest.mark.parametrize("encode_args", [["-m", "data", "/dev/stdout"], ["data", "-"], ["-m", "data", "-"]])
def test_headers_naming_stdout_or_dash_go_to_standard_output_as_with_gnu(run, tmp_path, encode_args):
    data = os.urandom(3000)
    (tmp_path / "data").write_bytes(data)
    text = subprocess.run([tool("uuencode"), *encode_args], cwd=tmp_path, capture_output=True, check=True).stdout
    assert text.startswith(b"begin") and text.split(b"\n", 1)[0].endswith(encode_args[-1].encode())
    work = tmp_path / "work"
    work.mkdir()
    for argv in ([tool("uudecode")], [tool("busybox"), "uudecode"]):
        proc = subprocess.run(argv, input=text, cwd=work, capture_output=True)
        assert (proc.returncode, proc.stdout, listing(work)) == (0, data, [])
    for flags in ([], ["-s"], ["-f"]):
        r = run("pyuudecode", *flags, input=text, cwd=work)
        assert (r.returncode, r.stdout, r.stderr) == (0, data, "")
        assert listing(work) == []


def test_blocks_to_stdout_and_to_files_in_one_input(run, tmp_path):
    text = block(b"one", "a") + block(b"two", "-") + block(b"three", "/dev/stdout", base64=True) + block(b"x", "b")
    r = run("pyuudecode", input=text, cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"twothree", "")
    assert listing(tmp_path) == ["a", "b"]


def test_a_damaged_block_for_stdout_writes_nothing_there(run, tmp_path):
    text = block(b"good", "-") + block(b"x" * 200, "-").replace(b"\nM", b"\nM!!!", 1)
    r = run("pyuudecode", input=text, cwd=tmp_path)
    assert r.returncode == 65 and r.stdout == b"good"
    assert r.stderr == "pyuudecode: stdin:6: the length character 'M' says 45 bytes but the line holds more\n"
    assert listing(tmp_path) == []


@pytest.mark.parametrize("name", ["name ", "name  ", "name\t", " name", "name \r"])
def test_white_space_around_a_header_name_is_stripped_as_gnu_does(run, tmp_path, name):
    text = b"begin 644 " + name.encode() + b"\n#86)C\n`\nend\n"
    assert gnu_and_busybox(tmp_path, text, "name") == [b"abc", b"abc"]
    work = tmp_path / "work"
    work.mkdir()
    r = run("pyuudecode", input=text, cwd=work)
    assert (r.returncode, r.stderr) == (0, "")
    assert listing(work) == ["name"] and (work / "name").read_bytes() == b"abc"
