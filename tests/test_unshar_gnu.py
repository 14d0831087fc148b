"""pipemail.unshar_gnu: GNU sharutils 4.15.2 archives, parsed without a shell.

Every archive here is made by the real GNU ``shar`` from files the test writes.
Only the sh-comparison test runs one, with ``sh`` inside a fresh temp dir.
"""

import calendar
import hashlib
import io
import os
import shutil
import subprocess

import pytest

from pipemail.unshar_api import ArchiveError
from pipemail.unshar_gnu import GnuParser, _quote, _unquote, detect, part_info

MTIME = calendar.timegm((2001, 2, 3, 4, 5, 6))

TEXT = b"hello\nXray starts with X\n.dot\n\tTab\n  spaces\n~tilde\nexit 0\nSHAR_EOF\n\nlast\n"
TREE = {
    "a.txt": TEXT,
    "from.txt": b"From me\nto you\n",  # "From " makes GNU uuencode it
    "nonl.txt": b"no final newline",
    "empty": b"",
    "bin.dat": bytes(range(256)) * 5 + b"\0\r\n",
    "fourteen.bin": bytes(range(14)),  # short last uu line starts with '.'
    "long.txt": (b"y" * 300 + b"\n") * 2,
    "sub/in.txt": b"inner\n",
    "sub/deeper/x y.bin": bytes(range(255, -1, -1)),
    "with space.txt": b"space\n",
    "it's here.txt": b"quote\n",
    "a$(touch CANARY)b": b"dollar\n",
    "-dash": b"dash\n",
}
TEXT_ONLY = {n: d for n, d in TREE.items() if n.endswith(".txt") or n in ("empty", "-dash", "a$(touch CANARY)b")}


def shar_path():
    path = shutil.which("shar")
    if path is None:
        pytest.fail("GNU sharutils is not installed (apt-get install sharutils): shar is missing")
    return path


class FakeSink:
    """Records the calls a parser makes and keeps the files in a dict."""

    def __init__(self):
        self.calls = []
        self.files = {}
        self.meta = {}
        self.dirs = []
        self.current = None
        self.waiting = None  # a file closed with complete=False

    def directory(self, name, mode=None, mtime=None):
        assert self.current is None
        self.calls.append(("directory", name))
        self.dirs.append(name)

    def open_file(self, name, append=False):
        assert self.current is None, "open_file while %r is open" % self.current
        assert isinstance(name, bytes)
        self.calls.append(("open_file", name, append))
        if append:
            assert self.waiting == name
            self.waiting = None
        else:
            assert self.waiting is None
            assert name not in self.files
            self.files[name] = bytearray()
        self.current = name

    def write(self, data):
        assert self.current is not None
        self.files[self.current] += data

    def close_file(self, mode=None, mtime=None, size=None, md5=None, sha256=None, complete=True):
        name = self.current
        assert name is not None
        self.calls.append(("close_file", name, complete))
        self.current = None
        if complete:
            self.meta[name] = {"mode": mode, "mtime": mtime, "size": size, "md5": md5}
        else:
            self.waiting = name

    def content(self, name):
        return bytes(self.files[name.encode() if isinstance(name, str) else name])


def write_tree(root, tree, mode=0o644):
    for name, data in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        os.utime(path, (MTIME, MTIME))


def run_shar(tmp_path, tree, *options, split=None):
    """Archive ``tree`` with GNU shar; the list of part paths."""
    src = tmp_path / "src"
    if not src.exists():
        src.mkdir(parents=True)
        write_tree(src, tree)
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cmd = [shar_path(), *options]
    if split:
        cmd += [*split, "-o", str(out / "part")]
    cmd += ["./" + n if n.startswith("-") else n for n in sorted(tree)]  # GNU drops the "./"
    env = dict(os.environ, TZ="UTC", LC_ALL="C")
    proc = subprocess.run(cmd, cwd=src, capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if split:
        return sorted(out.glob("part.*"))
    path = out / "archive.shar"
    path.write_bytes(proc.stdout)
    return [path]


def parse(paths, first_lineno=1):
    sink = FakeSink()
    parser = GnuParser(sink)
    for path in paths:
        with open(path, "rb") as stream:
            parser.feed_part(path.name, first_lineno, stream)
    parser.finish()
    return sink


def parse_bytes(data, label="t"):
    sink = FakeSink()
    parser = GnuParser(sink)
    parser.feed_part(label, 1, io.BytesIO(data))
    parser.finish()
    return sink


def check_tree(sink, tree):
    assert sorted(sink.files) == sorted(n.encode() for n in tree)
    for name, data in tree.items():
        assert sink.content(name) == data, name
    assert sink.current is None and sink.waiting is None


def line_of(data, needle):
    """The 1-based number of the first line of ``data`` holding ``needle``."""
    return data[: data.index(needle)].count(b"\n") + 1


# -- single archives ---------------------------------------------------------------------


def test_default_options(tmp_path):
    paths = run_shar(tmp_path, TREE)
    sink = parse(paths)
    check_tree(sink, TREE)
    for name, data in TREE.items():
        meta = sink.meta[name.encode()]
        assert meta == {"mode": 0o644, "mtime": MTIME, "size": len(data), "md5": hashlib.md5(data).hexdigest()}
    # Parent directories come before the file (GNU creates each once).
    assert sink.dirs == [b"sub", b"sub/deeper"]
    assert sink.calls.index(("directory", b"sub/deeper")) < sink.calls.index(
        ("open_file", b"sub/deeper/x y.bin", False)
    )


def test_modes_are_taken_from_chmod(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_tree(src, {"run.sh": b"#!/bin/sh\n", "secret": b"s\n"})
    (src / "run.sh").chmod(0o755)
    (src / "secret").chmod(0o400)
    sink = parse(run_shar(tmp_path, {"run.sh": b"", "secret": b""}))
    assert sink.meta[b"run.sh"]["mode"] == 0o755
    assert sink.meta[b"secret"]["mode"] == 0o400


OPTION_CASES = {
    # options: (tree, mode, mtime?, md5?, size?)
    "-m": (TREE, 0o644, False, True, True),
    "-x": (TREE, 0o644, True, True, True),
    "-Q": (TREE, 0o644, True, True, True),
    "-B": (TREE, 0o644, True, True, True),
    "-T": (TEXT_ONLY, 0o644, True, True, True),
    "-V": (TREE, None, False, False, False),
    "-D": (TREE, 0o644, True, False, True),
    "-P": (TREE, 0o644, True, True, True),
    "-F": (TREE, 0o644, True, True, True),
    "-q -c": (TREE, 0o644, True, True, True),
    "-a -n myname -s me@example.com": (TREE, 0o644, True, True, True),
    "--no-character-count": (TREE, 0o644, True, True, False),
    "--no-i18n -d FOO": (TREE, 0o644, True, True, True),
    "-Q -x -m -D": (TREE, 0o644, False, False, True),
    "-V -B": (TREE, None, False, False, False),
    "-V -Q -x": (TREE, None, False, False, False),
}


@pytest.mark.parametrize("options", list(OPTION_CASES))
def test_options(tmp_path, options):
    tree, mode, has_mtime, has_md5, has_size = OPTION_CASES[options]
    sink = parse(run_shar(tmp_path, tree, *options.split()))
    check_tree(sink, tree)
    for name, data in tree.items():
        meta = sink.meta[name.encode()]
        assert meta["mode"] == mode
        assert meta["mtime"] == (MTIME if has_mtime else None)
        assert meta["md5"] == (hashlib.md5(data).hexdigest() if has_md5 else None)
        assert meta["size"] == (len(data) if has_size else None)


def test_text_mode_file_without_final_newline_comes_out_as_archived(tmp_path):
    # GNU -T adds a newline that sh keeps (its own checks then fail); the stated
    # size shows it was not in the file.
    sink = parse(run_shar(tmp_path, {"nonl.txt": b"abc\ndef"}, "-T"))
    assert sink.content("nonl.txt") == b"abc\ndef"
    # With no size to go by (-V), the archive's text is taken as sh reads it.
    sink = parse(run_shar(tmp_path, {"nonl.txt": b"abc\ndef"}, "-T", "-V"))
    assert sink.content("nonl.txt") == b"abc\ndef\n"


def test_large_files_cross_buffer_boundaries(tmp_path):
    # Text with X-prefixed lines everywhere, and binary data long enough for
    # the bulk uu decoder.
    text = b"".join(b"X%d\n.%d\n~%d\nplain %d\n" % (i, i, i, i) for i in range(20000))
    binary = bytes((i * 31 + i // 977) % 256 for i in range(300001))
    tree = {"text.txt": text, "data.bin": binary}
    check_tree(parse(run_shar(tmp_path, tree)), tree)


def test_text_line_longer_than_the_read_buffer(tmp_path):
    # GNU -T cuts lines at 8191 bytes itself (sh then restores extra newlines);
    # a longer here-document line is read in pieces, its X stripped once.
    (path,) = run_shar(tmp_path, {"huge.txt": b"Xz\nXa\n"}, "-T", "-D", "--no-character-count")
    data = path.read_bytes()
    assert b"\nXXz\nXXa\n" in data
    data = data.replace(b"\nXXz\n", b"\nX" + b"Xz" * 100000 + b"\n")
    assert parse_bytes(data).content("huge.txt") == b"Xz" * 100000 + b"\nXa\n"


def test_basename_option(tmp_path):
    tree = {"d/one.txt": b"1\n", "d/two.bin": b"\x00\x01"}
    sink = parse(run_shar(tmp_path, tree, "-f"))
    assert sink.content("one.txt") == b"1\n" and sink.content("two.bin") == b"\x00\x01"
    assert sink.dirs == []


def test_same_result_as_sh(tmp_path):
    """sh (in a fresh temp dir) and the parser restore the same bytes."""
    tree = {n: d for n, d in TREE.items() if "$" not in n}
    (path,) = run_shar(tmp_path, tree)
    where = tmp_path / "sh-unpack"
    where.mkdir()
    subprocess.run(["sh", str(path)], cwd=where, capture_output=True, timeout=60, check=True)
    sink = parse([path])
    for name in tree:
        assert (where / name).read_bytes() == sink.content(name), name


def test_line_numbers_start_at_first_lineno(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"})
    data = path.read_bytes().replace(b"# ============= a.txt", b"oops\n# ============= a.txt")
    with pytest.raises(ArchiveError) as err:
        sink = FakeSink()
        GnuParser(sink).feed_part("mail", 100, io.BytesIO(data))
    assert str(err.value).startswith("mail:%d: " % (99 + line_of(data, b"oops\n")))


# -- multi-part ----------------------------------------------------------------------------

BIG_TEXT = b"".join(b"line %05d %s\n" % (i, b"x" * (i % 70)) for i in range(700))
BIG_BIN = bytes((i * 7919 + i // 251) % 256 for i in range(30000))


@pytest.mark.parametrize("options", ["", "-Q -x -m", "-V", "-D -n myname"])
def test_split_archive_text_and_binary(tmp_path, options):
    # GNU continues a text file with ">> NAME" unquoted: a name with a space and a quote.
    tree = {"big text's.txt": BIG_TEXT, "small.txt": b"small\n", "big.bin": BIG_BIN, "sub/z.txt": b"z\n"}
    paths = run_shar(tmp_path, tree, *options.split(), split=["-L", "8"])
    assert len(paths) >= 5
    sink = parse(paths)
    check_tree(sink, tree)
    # Both big files were written in pieces, reopened with append=True.
    assert ("open_file", b"big text's.txt", True) in sink.calls
    assert ("open_file", b"big.bin", True) in sink.calls
    assert ("close_file", b"big.bin", False) in sink.calls
    if "-V" not in options:
        assert sink.meta[b"big.bin"]["mode"] == 0o644
        assert sink.meta[b"big text's.txt"]["size"] == len(BIG_TEXT)
    # part_info: one archive, numbered parts, the last one known from its end.
    infos = [part_info(p.read_bytes()) for p in paths]
    assert {i.archive_id for i in infos} == {infos[0].archive_id}
    assert [i.number for i in infos] == list(range(1, len(paths) + 1))
    assert [i.last for i in infos] == [False] * (len(paths) - 1) + [True]
    assert all(i.format == "gnu" and i.total is None for i in infos)
    for p in paths:
        head = p.read_bytes()[:4096]
        assert detect(head)
        assert part_info(head).number == infos[paths.index(p)].number


def test_split_whole_files(tmp_path):
    tree = {"a.txt": b"a\n", "big.txt": BIG_TEXT, "big.bin": BIG_BIN, "z.txt": b"z\n"}
    paths = run_shar(tmp_path, tree, split=["-l", "8"])
    assert len(paths) >= 3
    check_tree(parse(paths), tree)


def test_two_archives_have_different_ids(tmp_path):
    one = run_shar(tmp_path / "1", {"a": b"a\n"})
    two = run_shar(tmp_path / "2", {"a": b"a\n"})
    first, second = part_info(one[0].read_bytes()), part_info(two[0].read_bytes())
    assert first.archive_id != second.archive_id
    assert (first.number, first.last) == (1, True)


@pytest.mark.parametrize("tree", [{"big.txt": BIG_TEXT}, {"big.bin": BIG_BIN}])
def test_parts_out_of_order_or_missing(tmp_path, tree):
    paths = run_shar(tmp_path, tree, split=["-L", "8"])
    assert len(paths) >= 3
    parser = GnuParser(FakeSink())
    with pytest.raises(ArchiveError, match="this is part 2; part 1 was expected"), open(paths[1], "rb") as f:
        parser.feed_part(paths[1].name, 1, f)
    parser = GnuParser(FakeSink())
    for p in paths[:-1]:
        with open(p, "rb") as f:
            parser.feed_part(p.name, 1, f)
    with pytest.raises(ArchiveError, match=r"continues in part %d" % len(paths)):
        parser.finish()


def test_part_of_another_archive_is_refused(tmp_path):
    first = run_shar(tmp_path / "1", {"big.txt": BIG_TEXT}, split=["-L", "8"])
    second = run_shar(tmp_path / "2", {"big.txt": BIG_TEXT}, split=["-L", "8"])
    parser = GnuParser(FakeSink())
    with open(first[0], "rb") as f:
        parser.feed_part("one", 1, f)
    with pytest.raises(ArchiveError, match="another archive"), open(second[1], "rb") as f:
        parser.feed_part("two", 1, f)


# -- refused archives ---------------------------------------------------------------------


def refuse(data, match):
    with pytest.raises(ArchiveError) as err:
        parse_bytes(data)
    assert match in str(err.value), str(err.value)
    return str(err.value)


def test_command_between_files_is_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n", "b.txt": b"b\n"})
    data = path.read_bytes()
    canary = tmp_path / "CANARY"
    data = data.replace(b"# ============= b.txt", b"touch %s\n# ============= b.txt" % bytes(canary))
    message = refuse(data, "unexpected shell command")
    assert message.startswith("t:%d: " % line_of(data, bytes(canary)))
    assert not canary.exists()


@pytest.mark.parametrize("options", [[], ["-x"], ["-Q", "-x", "-D", "-m"], ["-V"]])
def test_command_after_the_last_file_is_refused(tmp_path, options):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"}, *options)
    data = path.read_bytes().replace(b"if rm -fr ${lock_dir}\n", b"rm -rf ~\nif rm -fr ${lock_dir}\n")
    assert refuse(data, "unexpected shell command").startswith("t:%d: " % line_of(data, b"rm -rf ~"))


def test_command_substitution_in_heredoc_line_is_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"})
    original = path.read_bytes()
    for bad in (
        b"  sed 's/^X//' << 'SHAR_EOF' > 'a.txt' $(touch X) &&",
        b"  sed 's/^X//' << 'SHAR_EOF$(touch X)' > 'a.txt' &&",
        b"  sed 's/^X//' << SHAR_EOF > 'a.txt' &&",  # unquoted: $() in the data would run
        b"  sed 's/^X//' << 'SHAR_EOF' > 'a.txt'; touch X &&",
    ):
        data = original.replace(b"  sed 's/^X//' << 'SHAR_EOF' > 'a.txt' &&", bad)
        assert data != original
        message = refuse(data, "unexpected shell command")
        assert message.startswith("t:%d: " % line_of(data, bad))


def test_tampered_boilerplate_is_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"})
    original = path.read_bytes()
    for old, new in (
        (b"      set_echo=true\n      break ;;", b"      set_echo=true; touch X\n      break ;;"),
        (b"st3=1231235901\n", b"st3=1231235901\ntouch X\n"),
        (b'   eval "${shar_touch}") && \\\n', b'   eval "${shar_touch}"; touch X) && \\\n'),
        (b"chmod 0644 'a.txt'", b"chmod 0644 'a.txt' /etc/passwd"),
    ):
        data = original.replace(old, new, 1)
        assert data != original
        message = refuse(data, "")
        assert message.startswith("t:%d: " % line_of(data, b"touch X" if b"touch" in new else b"passwd"))


def test_net_headers_must_be_inert(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"}, "-a", "-n", "x", "-s", "me@example.com")
    data = path.read_bytes()
    assert data.startswith(b"Submitted-by: me@example.com\nArchive-name: x/part01\n")
    assert parse_bytes(data).content("a.txt") == b"a\n"
    bad = data.replace(b"me@example.com", b"me; touch X", 1)
    assert refuse(bad, "not a GNU shar archive").startswith("t:1: ")


def test_invalid_timestamp_is_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"})
    data = path.read_bytes().replace(b"(set 20 01 02 03 04 05 06 ", b"(set 20 01 02 30 04 05 06 ")
    refuse(data, "invalid timestamp")


def test_data_after_exit_is_ignored(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"})
    sink = parse_bytes(path.read_bytes() + b"-- \nsignature; rm -rf ~\n")
    assert sink.content("a.txt") == b"a\n"


@pytest.mark.parametrize("options", [["-C", "gzip"], ["-z"], ["-C", "bzip2"], ["-C", "xz", "-Q"]])
def test_compressed_archives_are_refused(tmp_path, options):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"}, *options)
    message = refuse(path.read_bytes(), "compressed archives (shar -C) are not supported")
    assert message.startswith("t:")


def test_interactive_archives_are_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"}, "-X")
    refuse(path.read_bytes(), "shar -X")


def test_name_with_newline_is_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a\nb": b"x\n"})
    data = path.read_bytes()
    message = refuse(data, "")
    # The name's second line first shows in the table of contents.
    assert message.startswith("t:%d: " % (line_of(data, b"\nb\n") + 1))


def test_begin_line_must_name_the_same_file(tmp_path):
    (path,) = run_shar(tmp_path, {"b.bin": b"\0\1"})
    data = path.read_bytes().replace(b"begin 600 b.bin", b"begin 600 /etc/passwd")
    refuse(data, "the 'begin' line names")


def test_quoted_name_must_match_the_heading(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": b"a\n"})
    data = path.read_bytes().replace(b"> 'a.txt' &&", b"> 'other'\\''s' &&")
    refuse(data, 'the statement names "other\'s"')


def test_truncated_archive_is_refused(tmp_path):
    (path,) = run_shar(tmp_path, {"a.txt": TEXT, "b.bin": BIG_BIN})
    data = path.read_bytes()
    refuse(data[: data.index(b"hello") + 20], "the part ends inside the here-document")
    refuse(data[: len(data) // 2], "ends")


def test_not_gnu():
    assert not detect(b"#!/bin/sh\necho hi\n")
    assert not detect(b"Hello,\nhere is the file.\n")
    with pytest.raises(ArchiveError):
        parse_bytes(b"#!/bin/sh\n# hello\necho hi\nexit 0\n")


def test_quoting_round_trip():
    for name in (b"plain", b"it's", b"''", b"a'\\''b", b'$(x) `y` "z"'):
        assert _unquote(_quote(name)) == name
    assert _unquote(b"'it'\\''s here'") == b"it's here"
    for word in (b"plain", b"'open", b"'a''b'", b"'a'b", b"'a'\\'"):
        assert _unquote(word) is None


def test_what_goes_wrong_with_a_member_names_the_line_of_its_statement(run, tmp_path):
    """Each refusal names the line of the statement that makes the member, as for pyshar's archives
    (every one said stdin:1:, the first line of the archive, twice the same words for d and d/f)."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a").write_bytes(b"a\n")
    (src / "d" / "f").write_bytes(b"f\n")
    data = subprocess.run([shar_path(), "-q", "a", "d"], cwd=src, capture_output=True, check=True).stdout
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "a").write_bytes(b"mine\n")
    (dst / "d").write_bytes(b"a file where the archive wants a directory\n")
    r = run("pyunshar", input=data, cwd=dst)
    assert r.returncode == 73
    assert r.stderr == (
        "pyunshar: stdin:%d: a exists; not overwritten (use -c to replace it)\n"
        "pyunshar: stdin:%d: refusing to write below 'd': not a real directory\n"
        "pyunshar: stdin:%d: refusing to write below 'd': not a real directory\n"
        % (
            line_of(data, b"  sed 's/^X//' << 'SHAR_EOF' > 'a' &&"),
            line_of(data, b"if test ! -d 'd'; then"),
            line_of(data, b"  sed 's/^X//' << 'SHAR_EOF' > 'd/f' &&"),
        )
    )
    assert (dst / "a").read_bytes() == b"mine\n" and (dst / "d").read_bytes().startswith(b"a file")
