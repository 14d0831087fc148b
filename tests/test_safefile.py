"""pipemail.safefile's rules for untrusted names: the directory walk and the mode rule."""

import os

import pytest
import unprivileged

from pipemail.errors import NoPermError
from pipemail.safefile import archive_mode, open_dirs


def test_open_dirs_says_which_directories_it_created(tmp_path):
    (tmp_path / "a").mkdir()
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        created = set()
        os.close(open_dirs(base, ["a", "b", "c"], 0o022, created=created))
        assert created == {("a", "b"), ("a", "b", "c")}
        again = set()
        os.close(open_dirs(base, ["a", "b"], 0o022, created=again))
        assert again == set()
        with pytest.raises(FileNotFoundError):
            open_dirs(base, ["a", "missing"], 0o022, create=False)
        assert not (tmp_path / "a" / "missing").exists()
    finally:
        os.close(base)


@pytest.mark.parametrize("create", [True, False])
def test_open_dirs_never_follows_a_symlink(tmp_path, create):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(NoPermError, match="^refusing to write below 'link': not a real directory$"):
            open_dirs(base, ["link", "x"], 0o022, create=create)
    finally:
        os.close(base)
    assert os.listdir(tmp_path / "real") == []


@pytest.mark.skipif(not unprivileged.is_root(), reason="the root half of GNU tar's rule needs root")
def test_archive_mode_is_exact_for_root_without_setuid_setgid_sticky():
    assert archive_mode(0o7777, 0o077) == 0o777
    assert archive_mode(0o4755, 0o022) == 0o755
    assert archive_mode(0o640, 0o777) == 0o640


# -- Output as a context manager ---------------------------------------------------


def test_output_block_commits_when_it_ends_normally(tmp_path):
    from pipemail.safefile import Output

    target = tmp_path / "out.bin"
    target.write_bytes(b"old\n")
    with Output.to_path(str(target)) as out:
        out.write(b"new\n")
        assert target.read_bytes() == b"old\n"  # nothing replaced before the block ends
    assert target.read_bytes() == b"new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_output_block_keeps_an_explicit_commit_and_its_mode(tmp_path):
    from pipemail.safefile import Output

    target = tmp_path / "out.bin"
    with Output.to_path(str(target)) as out:
        out.write(b"data")
        out.commit(0o640)
    assert (target.read_bytes(), target.stat().st_mode & 0o777) == (b"data", 0o640)


def test_output_block_aborts_on_an_exception_and_leaves_the_target_alone(tmp_path):
    from pipemail.safefile import Output

    target = tmp_path / "out.bin"
    target.write_bytes(b"old\n")
    with pytest.raises(KeyboardInterrupt), Output.to_path(str(target)) as out:
        out.write(b"half of it")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temporary file left
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    with pytest.raises(KeyboardInterrupt), Output.in_directory(dir_fd, "new.bin", "new.bin") as out:
        out.write(b"x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
