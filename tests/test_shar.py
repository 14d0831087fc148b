"""pyshar archives: unpacked by real shells and by pyunshar, byte for byte, modes and times."""

import io
import os
import random
import shutil
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipemail import shar, unshar

from conftest import tool

SHELLS = ["dash", "bash", "busybox sh"]
BASE_TOOLS = ["awk", "sed", "sha256sum", "wc", "mkdir", "rm", "chmod", "touch", "cat"]


def shell_cmd(name):
    if name == "busybox sh":
        return [tool("busybox"), "sh"]
    return [tool(name)]


def tool_path(tmp_path, decoder):
    """A PATH holding the basic tools and one base64 decoder (or none), never uudecode otherwise."""
    bindir = tmp_path / ("bin-%s" % decoder)
    if not bindir.exists():
        bindir.mkdir()
        for name in BASE_TOOLS + ([decoder] if decoder else []):
            # python3 may be a pyenv shim that needs bash: link the real interpreter
            target = os.path.realpath(sys.executable) if name == "python3" else tool(name)
            os.symlink(target, bindir / name)
    return str(bindir)


def make_tree(root, tree):
    """tree: {name: bytes | (bytes, mode) | dict}"""
    root.mkdir(exist_ok=True)
    for name, value in tree.items():
        path = os.path.join(os.fsencode(root), name)
        if isinstance(value, dict):
            os.mkdir(path)
            make_tree(type(root)(os.fsdecode(path)), value)
        else:
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, mode)
            os.utime(path, (1_600_000_000, 1_600_000_000 + len(data)))


def snapshot(root):
    """{relative name: (kind, mode, content, mtime)} of a tree (bytes names)."""
    out = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st_ = os.lstat(p)
            rel = os.path.relpath(p, broot)
            if stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st_.st_mode), f.read(), int(st_.st_mtime))
    return out


def archive(paths, **kw):
    out = io.BytesIO()
    members = shar.collect([os.fsencode(p) for p in paths], lambda m: None)
    shar.write_archive(members, stream=out, **kw)
    return out.getvalue()


def run_sh(shell, script_path, cwd, path, *args):
    env = {"PATH": path, "HOME": str(cwd)}
    return subprocess.run(
        shell_cmd(shell) + [str(script_path), *args], cwd=cwd, env=env, capture_output=True, timeout=120
    )


def py_unshar(paths, directory, **kw):
    errors = []
    parts = []
    for p in paths:
        parts.extend(unshar.find_parts(str(p), open(p, "rb"), errors.append))
    archives = unshar.group_parts(parts, errors.append)
    sink = unshar.Extractor(str(directory), kw.get("overwrite", False), errors.append)
    for a in archives:
        parser = unshar.PysharParser(sink)
        try:
            for part in a:
                parser.feed_part(part.label, part.lineno, part.text)
            parser.finish()
        except unshar.DataError as exc:
            sink.abort_file()
            errors.append(exc)
    sink.close()
    return errors


TRICKY = {
    b"plain.txt": b"hello\nworld\n",
    b"no-final-newline": b"last line",
    b"delims": b"SHAR_EOF\nPYSHAR_EOF\nexit 0\nFrom me\n.\nX\n",
    b"a'$(touch CANARY)'b": b"quoted\n",
    b"`touch CANARY`": b"backticks\n",
    b"new\nline": b"name with a newline\n",
    b"-leading-dash": b"dash\n",
    b"\xff\xfenot-utf8": b"bytes\n",
    b"binary.bin": (bytes(range(256)) * 40, 0o755),
    b"nul": b"a\0b\n",
    b"cr": b"dos\r\nline\r\n",
    b"long": b"x" * 5000 + b"\n",
    b"trailing-space": b"space \n",
    b"empty": b"",
    b"utf8": "caf\u00e9\n".encode(),
    b"sub dir": {b"inner": (b"inner\n", 0o600), b"empty dir": {}},
}


@pytest.mark.parametrize("shell", SHELLS)
def test_shells_restore_every_awkward_file_without_uudecode(tmp_path, shell):
    make_tree(tmp_path / "src", TRICKY)
    os.chdir(tmp_path)
    text = archive(["src"])
    (tmp_path / "a.shar").write_bytes(text)
    out = tmp_path / "out"
    out.mkdir()
    r = run_sh(shell, tmp_path / "a.shar", out, tool_path(tmp_path, "base64"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot(out / "src") == snapshot(tmp_path / "src")
    assert not list(tmp_path.rglob("CANARY"))
    assert sorted(os.listdir(out)) == ["src"]  # the lock directory is gone


@pytest.mark.parametrize("decoder", ["uudecode", "base64", "openssl", "python3"])
def test_each_base64_decoder(tmp_path, decoder):
    make_tree(tmp_path / "src", {b"bin": os.urandom(100_000), b"t": b"text\n"})
    os.chdir(tmp_path)
    (tmp_path / "a.shar").write_bytes(archive(["src"]))
    out = tmp_path / "out"
    out.mkdir()
    r = run_sh("dash", tmp_path / "a.shar", out, tool_path(tmp_path, decoder))
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot(out / "src") == snapshot(tmp_path / "src")


def test_no_decoder_says_so_and_fails(tmp_path):
    make_tree(tmp_path / "src", {b"bin": b"\0\1\2", b"t": b"text\n"})
    os.chdir(tmp_path)
    (tmp_path / "a.shar").write_bytes(archive(["src"]))
    out = tmp_path / "out"
    out.mkdir()
    r = run_sh("dash", tmp_path / "a.shar", out, tool_path(tmp_path, None))
    assert r.returncode == 1
    assert b"x - src/bin: no base64 decoder here (uudecode, base64, openssl or python3)" in r.stdout
    assert b"x - src/t: ok" in r.stdout
    assert (out / "src" / "t").read_bytes() == b"text\n"


def test_existing_files_are_kept_unless_c(tmp_path):
    make_tree(tmp_path / "src", {b"f": b"new\n"})
    os.chdir(tmp_path)
    (tmp_path / "a.shar").write_bytes(archive(["src"]))
    out = tmp_path / "out"
    make_tree(out, {b"src": {b"f": b"old\n"}})
    path = tool_path(tmp_path, "base64")
    r = run_sh("dash", tmp_path / "a.shar", out, path)
    assert r.returncode == 0
    assert b"x - src/f: exists, kept (sh ARCHIVE -c overwrites)" in r.stdout
    assert (out / "src" / "f").read_bytes() == b"old\n"
    r = run_sh("dash", tmp_path / "a.shar", out, path, "-c")
    assert r.returncode == 0 and (out / "src" / "f").read_bytes() == b"new\n"


def test_a_damaged_file_is_reported_and_the_exit_status_says_so(tmp_path):
    make_tree(tmp_path / "src", {b"f": b"one\ntwo\n", b"g": b"fine\n"})
    os.chdir(tmp_path)
    text = archive(["src"]).replace(b"Xtwo\n", b"Xtwo!\n")
    (tmp_path / "a.shar").write_bytes(text)
    out = tmp_path / "out"
    out.mkdir()
    r = run_sh("dash", tmp_path / "a.shar", out, tool_path(tmp_path, "base64"))
    assert r.returncode == 1
    assert b"x - src/f: failed: size is not 8" in r.stdout and b"x - src/g: ok" in r.stdout
    errors = py_unshar([tmp_path / "a.shar"], tmp_path / "py")
    assert [e.exit_code for e in errors] == [65]
    assert "src/f: size is 9, the archive says 8; not written" in str(errors[0])


names = st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
contents = st.one_of(
    st.binary(max_size=3000),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=2000).map(str.encode),
    st.lists(st.text(alphabet="abc \t", max_size=1200), max_size=8).map(lambda ls: "\n".join(ls).encode()),
)
files = st.tuples(contents, st.sampled_from([0o644, 0o600, 0o755, 0o640]))
trees = st.dictionaries(names, st.one_of(files, st.dictionaries(names, files, max_size=3)), min_size=1, max_size=6)


@settings(max_examples=20)
@given(tree=trees)
def test_random_trees_through_every_shell_and_pyunshar(tmp_path_factory, tree):
    base = tmp_path_factory.mktemp("tree")
    make_tree(base / "src", tree)
    os.chdir(base)
    (base / "a.shar").write_bytes(archive(["src"]))
    expected = snapshot(base / "src")
    path = tool_path(base, "base64")
    for shell in SHELLS:
        out = base / ("out-" + shell.replace(" ", "-"))
        out.mkdir()
        r = run_sh(shell, base / "a.shar", out, path)
        assert r.returncode == 0, (shell, r.stdout, r.stderr)
        assert snapshot(out / "src") == expected, shell
    pyout = base / "py"
    pyout.mkdir()
    assert py_unshar([base / "a.shar"], pyout) == []
    assert snapshot(pyout / "src") == expected
    shutil.rmtree(base)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**32), limit_kib=st.integers(12, 40))
def test_parts_stay_within_the_limit_and_unpack_in_any_order(tmp_path_factory, seed, limit_kib):
    base = tmp_path_factory.mktemp("parts")
    rnd = random.Random(seed)
    tree = {
        b"big.bin": rnd.randbytes(rnd.randint(40_000, 150_000)),
        b"text.txt": b"".join(b"line %d\n" % i for i in range(rnd.randint(0, 8000))),
        b"d": {b"small": b"s\n"},
    }
    make_tree(base / "src", tree)
    os.chdir(base)
    members = shar.collect([b"src"], lambda m: None)
    names = shar.write_archive(members, prefix=b"part", limit=limit_kib * 1024)
    assert len(names) >= 2
    width = max(2, len(str(len(names))))
    assert names == [b"part.%0*d" % (width, n) for n in range(1, len(names) + 1)]
    for n in names:
        assert os.path.getsize(n) <= limit_kib * 1024
    expected = snapshot(base / "src")
    out = base / "sh"
    out.mkdir()
    for n in names:
        r = run_sh("dash", base / os.fsdecode(n), out, tool_path(base, "base64"))
        assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot(out / "src") == expected
    shuffled = [base / os.fsdecode(n) for n in names] + [base / os.fsdecode(names[0])]
    rnd.shuffle(shuffled)
    py = base / "py"
    py.mkdir()
    assert py_unshar(shuffled, py) == []
    assert snapshot(py / "src") == expected
    missing = [base / os.fsdecode(n) for n in names if n != names[1]]
    (base / "none").mkdir()
    errors = py_unshar(missing, base / "none")
    assert [str(e) for e in errors] == [
        "%s:1: part 2 of %d is missing; nothing of this archive was extracted" % (missing[0], len(names))
    ]
    assert os.listdir(base / "none") == []
    shutil.rmtree(base)


def test_parts_out_of_order_refuse_under_sh(tmp_path):
    make_tree(tmp_path / "src", {b"big": os.urandom(60_000)})
    os.chdir(tmp_path)
    names = shar.write_archive(shar.collect([b"src"], lambda m: None), prefix=b"p", limit=16 * 1024)
    out = tmp_path / "out"
    out.mkdir()
    r = run_sh("dash", tmp_path / os.fsdecode(names[1]), out, tool_path(tmp_path, "base64"))
    assert r.returncode == 1
    assert b"please unpack part 1 of %d first" % len(names) in r.stdout


@given(name=st.binary(min_size=1, max_size=80).filter(lambda b: b"\0" not in b))
def test_quoting_round_trips_and_keeps_every_name_on_one_line(name):
    from pipemail import sharformat

    quoted = shar.quote(name)
    assert b"\n" not in quoted
    assert sharformat.statement(sharformat.FILE % (quoted, quoted)) == (sharformat.FILE, (name,))
    assert sharformat.unquote(quoted) == name
    p = subprocess.run(["dash", "-c", b"pm_nl='\n'; printf %s " + quoted], capture_output=True)
    assert p.stdout == name


@pytest.mark.parametrize(
    "content,prefix",
    [
        (b"plain text\n", b"X"),
        (b"Xerox and Quartz, Jazz and Zebra\n", b"^"),
        (b"every prefix: " + shar.PREFIXES + b"\nXX\nend\n", b"X"),
    ],
)
def test_text_prefix_is_a_character_the_file_lacks(tmp_path, content, prefix):
    make_tree(tmp_path / "src", {b"f": content})
    os.chdir(tmp_path)
    text = archive(["src"])
    assert b"<<'PYSHAR_EOF'\n" + prefix + content.split(b"\n")[0] + b"\n" in text
    (tmp_path / "a.shar").write_bytes(text)
    out = tmp_path / "out"
    out.mkdir()
    r = run_sh("dash", tmp_path / "a.shar", out, tool_path(tmp_path, "base64"))
    assert r.returncode == 0 and (out / "src" / "f").read_bytes() == content
    assert py_unshar([tmp_path / "a.shar"], tmp_path / "py") == []
    assert (tmp_path / "py" / "src" / "f").read_bytes() == content
