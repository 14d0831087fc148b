"""pipemail.uu as a drop-in for the stdlib uu module (removed in Python 3.13)."""

import io
import os
import sys
import warnings

import pytest

from pipemail import uu

from conftest import DATA


def sample(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def stdlib_uu():
    """The 3.12 module itself, from tests/data, so that 3.13 is compared against it too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("uu312", DATA / "uu312.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backtick", [False, True])
def test_encode_matches_the_312_module_golden_output(backtick):
    out = io.BytesIO()
    uu.encode(io.BytesIO(sample(1027)), out, "sample.bin", 0o644, backtick=backtick)
    assert out.getvalue() == (DATA / ("stdlib-1027-backtick%s.uu" % backtick)).read_bytes()


@pytest.mark.parametrize("backtick", [False, True])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 45, 46, 1000, 45 * 2048 + 1])
def test_encode_matches_the_live_stdlib_module(n, backtick):
    data = os.urandom(n)
    a, b = io.BytesIO(), io.BytesIO()
    stdlib_uu().encode(io.BytesIO(data), a, "n a\nme", 0o104751, backtick=backtick)
    uu.encode(io.BytesIO(data), b, "n a\nme", 0o104751, backtick=backtick)
    assert a.getvalue() == b.getvalue()


def test_encode_paths_and_defaults(tmp_path, monkeypatch):
    src = tmp_path / "data.bin"
    src.write_bytes(b"abc")
    os.chmod(src, 0o640)
    uu.encode(str(src), str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"begin 640 data.bin\n#86)C\n \nend\n"
    out = io.BytesIO()
    uu.encode(io.BytesIO(b"abc"), out)
    assert out.getvalue() == b"begin 666 -\n#86)C\n \nend\n"


def test_decode_to_header_name_refuses_overwrite_and_traversal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = uu.encode_bytes(b"abc", "f", 0o755)
    uu.decode(io.BytesIO(text))
    assert (tmp_path / "f").read_bytes() == b"abc"
    assert os.stat(tmp_path / "f").st_mode & 0o777 == 0o755
    with pytest.raises(uu.Error, match="^Cannot overwrite existing file: f$"):
        uu.decode(io.BytesIO(text))
    for name in ("/etc/evil", "../evil"):
        with pytest.raises(uu.Error, match="^Refusing to write to %s due to directory traversal$" % name):
            uu.decode(io.BytesIO(uu.encode_bytes(b"x", name)))
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_decode_messages_of_the_312_module():
    with pytest.raises(uu.Error, match="^No valid begin line found in input file$"):
        uu.decode(io.BytesIO(b"nothing\n"), io.BytesIO())
    with pytest.raises(uu.Error, match="^Truncated input file$"):
        uu.decode(io.BytesIO(b"begin 644 f\n#86)C\n"), io.BytesIO())


def test_decode_to_path_stream_and_dash(tmp_path, capfdbinary):
    text = uu.encode_bytes(b"payload", "ignored")
    uu.decode(io.BytesIO(text), str(tmp_path / "o"), mode=0o600)
    assert (tmp_path / "o").read_bytes() == b"payload"
    assert os.stat(tmp_path / "o").st_mode & 0o777 == 0o600
    src = tmp_path / "in.uu"
    src.write_bytes(text)
    out = io.BytesIO()
    uu.decode(str(src), out)
    assert out.getvalue() == b"payload"


def test_error_is_an_exception_with_the_data_exit_code():
    assert issubclass(uu.Error, Exception) and uu.Error.exit_code == 65


def test_decode_what_the_stdlib_encoded_in_both_styles():
    for backtick in (False, True):
        a = io.BytesIO()
        data = os.urandom(5000)
        stdlib_uu().encode(io.BytesIO(data), a, "x", backtick=backtick)
        out = io.BytesIO()
        uu.decode(io.BytesIO(a.getvalue()), out)
        assert out.getvalue() == data


def test_the_reference_copy_is_the_real_module():
    if sys.version_info >= (3, 13):
        # the gap pipemail.uu fills
        with pytest.raises(ModuleNotFoundError):
            import uu  # noqa: F401
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import uu as real
    out1, out2 = io.BytesIO(), io.BytesIO()
    real.encode(io.BytesIO(b"x" * 100), out1, "n")
    stdlib_uu().encode(io.BytesIO(b"x" * 100), out2, "n")
    assert out1.getvalue() == out2.getvalue()


# -- decode() side by side with the 3.12 module ----------------------------------------------------


def side_by_side(tmp_path, monkeypatch, text, prepare=None, **kwargs):
    """What 3.12's uu.decode and pipemail.uu.decode each do with ``text`` (header names used):
    the exception, stdout bytes, stderr text and the files left, {path: (bytes, mode)}."""
    outcomes = []
    for n, module in enumerate((stdlib_uu(), uu)):
        work = tmp_path / ("work%d" % n)
        work.mkdir()
        if prepare is not None:
            prepare(work)
        monkeypatch.chdir(work)
        out, err = io.BytesIO(), io.StringIO()
        wrapper = io.TextIOWrapper(out)
        monkeypatch.setattr(sys, "stdout", wrapper)
        monkeypatch.setattr(sys, "stderr", err)
        try:
            module.decode(io.BytesIO(text), **kwargs)
            raised = None
        except Exception as exc:  # noqa: BLE001 - compared below
            raised = (type(exc).__name__, str(exc))
        finally:
            monkeypatch.undo()
            wrapper.flush()
            wrapper.detach()
        files = {}
        for root, _dirs, names in os.walk(work):
            for name in names:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, work)] = (f.read(), os.stat(path).st_mode & 0o777)
        outcomes.append((raised, out.getvalue(), err.getvalue(), files))
    return outcomes


def checksum_lines(data, name):
    import binascii

    lines = [b"begin 644 " + name + b"\n"]
    for i in range(0, len(data), 45):
        chunk = data[i : i + 45]
        lines.append(binascii.b2a_uu(chunk)[:-1] + bytes((33 + sum(chunk) % 63,)) + b"\n")
    return b"".join(lines) + b" \nend\n"


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 44, 45, 46, 200, 45 * 2048 + 1])
def test_trailing_garbage_warns_on_stderr_unless_quiet_and_decodes_as_312(tmp_path, monkeypatch, quiet, n):
    data = sample(n)
    text = checksum_lines(data, b"ck.bin")
    ours, theirs = side_by_side(tmp_path, monkeypatch, text, quiet=quiet)
    assert ours == theirs
    warnings = "" if quiet else "Warning: Trailing garbage\n" * ((n + 44) // 45)
    assert ours == (None, b"", warnings, {"ck.bin": (data, 0o644)})


def test_garbage_on_one_line_only_as_312(tmp_path, monkeypatch):
    lines = uu.encode_bytes(sample(100), "g.bin").split(b"\n")
    lines[2] += b"junk"
    text = b"\n".join(lines)
    ours, theirs = side_by_side(tmp_path, monkeypatch, text)
    assert ours == theirs
    assert ours[2] == "Warning: Trailing garbage\n" and ours[3] == {"g.bin": (sample(100), 0o644)}


def test_a_header_named_dash_goes_to_sys_stdout_as_312(tmp_path, monkeypatch):
    text = uu.encode_bytes(sample(500), "-")
    ours, theirs = side_by_side(tmp_path, monkeypatch, text)
    assert ours == theirs == (None, sample(500), "", {})


def test_a_header_named_dash_when_a_file_dash_exists_as_312(tmp_path, monkeypatch):
    text = uu.encode_bytes(sample(5), "-")
    ours, theirs = side_by_side(tmp_path, monkeypatch, text, prepare=lambda d: (d / "-").write_bytes(b"old"))
    assert ours == theirs == (("Error", "Cannot overwrite existing file: -"), b"", "", {"-": (b"old", 0o644)})


def test_a_header_in_a_missing_directory_raises_file_not_found_as_312(tmp_path, monkeypatch):
    text = uu.encode_bytes(sample(5), "sub/x.bin")
    ours, theirs = side_by_side(tmp_path, monkeypatch, text)
    assert ours == theirs
    assert ours == (("FileNotFoundError", "[Errno 2] No such file or directory: 'sub/x.bin'"), b"", "", {})


def test_a_header_in_an_existing_directory_is_written_there_as_312(tmp_path, monkeypatch):
    text = uu.encode_bytes(sample(5), "sub/x.bin", 0o640)
    ours, theirs = side_by_side(tmp_path, monkeypatch, text, prepare=lambda d: (d / "sub").mkdir())
    assert ours == theirs == (None, b"", "", {"sub/x.bin": (sample(5), 0o640)})


@pytest.mark.parametrize(
    "out_file, prepare, raised",
    [
        ("sub/x.bin", None, ("FileNotFoundError", "[Errno 2] No such file or directory: 'sub/x.bin'")),
        ("d", lambda d: (d / "d").mkdir(), ("IsADirectoryError", "[Errno 21] Is a directory: 'd'")),
        (
            "f/x.bin",
            lambda d: (d / "f").write_bytes(b""),
            ("NotADirectoryError", "[Errno 20] Not a directory: 'f/x.bin'"),
        ),
    ],
)
def test_an_out_file_that_cannot_be_opened_raises_the_oserror_of_312(tmp_path, monkeypatch, out_file, prepare, raised):
    """decode(f, "sub/x.bin") with sub/ missing: 3.12's open() raises FileNotFoundError (callers catch
    OSError); ours raised uu.Error("cannot write sub/x.bin: ...")."""
    text = uu.encode_bytes(sample(5), "x.bin")
    ours, theirs = side_by_side(tmp_path, monkeypatch, text, prepare=prepare, out_file=out_file)
    assert ours == theirs
    assert ours[0] == raised and "x.bin" not in ours[3]
