"""Writing output files so that nothing is lost or half-written, and only where it is safe.

A regular file is written under a temporary name beside its target and renamed
over it only when complete; on any error the target is untouched and the
temporary file is removed.  A target that exists and is not a regular file
(``/dev/null``, a FIFO, a terminal) is written directly, never replaced.

Names that come from untrusted input (a uuencode header, a shell archive) go
through :func:`safe_parts` and :func:`open_dirs`, and the modes they carry
through :func:`archive_mode`: the rules pyuudecode and pyunshar share.
"""

import errno
import os
import stat

from pipemail.errors import CantCreateError, IOFailure, NoPermError, describe_oserror

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A direct output (a stream, a FIFO) holds back up to this much of a block, so
# that a block which fails early leaves nothing behind there either.
HOLD_BACK = 4 << 20
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def archive_mode(mode, umask):
    """The permission bits to give what an archive (or a uuencode header) creates.

    GNU tar's rule: the archive's mode exactly when running as root (tar's
    ``--same-permissions``, its default for root), masked by the ``umask``
    otherwise.  Setuid, setgid and sticky bits are never applied.
    """
    mode &= 0o777
    if os.geteuid() != 0:
        mode &= ~umask
    return mode


def safe_parts(name, keep_paths=False):
    """The path components to write for an untrusted ``name`` (bytes), or NoPermError.

    Absolute paths and ``..`` are always refused; without ``keep_paths`` only
    the last component is kept.
    """
    shown = os.fsdecode(name)
    if b"\0" in name:
        raise NoPermError("refusing unsafe name %r: it contains a NUL byte" % shown)
    if name.startswith(b"/"):
        raise NoPermError("refusing unsafe name %r: absolute paths are never written" % shown)
    parts = [p for p in name.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise NoPermError("refusing unsafe name %r: '..' is never written" % shown)
    if not parts or name.endswith(b"/"):
        raise NoPermError("refusing unsafe name %r: it names no file" % shown)
    if not keep_paths:
        parts = parts[-1:]
    return [os.fsdecode(p) for p in parts]


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC


def open_dirs(base_fd, dirs, umask, *, create=True, created=None):
    """Open the directories ``dirs`` (a list of components) below ``base_fd``; return the last one's fd.

    A symlink or a file in the way is refused (77), never followed.  Missing
    directories are created with mode ``0o777 & ~umask`` (as mkdir(1) does)
    unless ``create`` is false (then FileNotFoundError); the components of
    each directory created are added to the set ``created``, as a tuple, so
    that the caller can tell what existed before.
    """
    fd = os.dup(base_fd)
    part = "."
    try:
        for i, part in enumerate(dirs):
            if create:
                try:
                    os.mkdir(part, 0o777 & ~umask, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    if created is not None:
                        created.add(tuple(dirs[: i + 1]))
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        if not create and exc.errno == errno.ENOENT:
            raise
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink or a file in the way
            raise NoPermError("refusing to write below %r: not a real directory" % part) from None
        raise CantCreateError("cannot create directory %r: %s" % (part, describe_oserror(exc))) from None
    return fd


def _temp_name(name):
    # Keep the temporary name within NAME_MAX even for a long target name.
    return ".%s.%s.part" % (name[:200], os.urandom(6).hex())


class Output:
    """One output: a binary file object ``file`` plus commit/abort.

    Build one with :meth:`to_path` (a path the user chose: symlinks are
    followed, an existing file is replaced), :meth:`in_directory` (a name taken
    from untrusted input: never follows a symlink, replaces only when asked) or
    :meth:`to_stream` (an already open stream such as stdout).

    As a context manager it is committed when the block ends normally (unless
    :meth:`commit`, with a mode, or :meth:`abort` was called in it) and aborted
    when an exception leaves it: nothing half-written is left in place.
    """

    def __init__(self, file, label, *, dir_fd=None, temp=None, final=None, overwrite=True, owned=True):
        self.file = file
        self._owned = owned
        self.label = label
        self._dir_fd = dir_fd
        self._temp = temp
        self._final = final
        self._overwrite = overwrite
        self._good = 0
        self._done = False
        self._hold = None  # direct outputs: the current block, until checkpoint
        self._hint = "use -f to replace it"

    # -- constructors ---------------------------------------------------------
    @classmethod
    def to_stream(cls, stream, label="stdout"):
        return cls(stream, label, owned=False)

    @classmethod
    def to_path(cls, path):
        """Write ``path``, which the user named; an existing file is replaced."""
        label = os.fsdecode(path)
        target = os.path.realpath(path)
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise CantCreateError("cannot write %s: %s" % (label, describe_oserror(exc))) from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise CantCreateError("cannot write %s: Is a directory" % label)
        if st is not None and not stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(target, os.O_WRONLY | _O_CLOEXEC)
            except OSError as exc:
                raise CantCreateError("cannot write %s: %s" % (label, describe_oserror(exc))) from None
            return cls(os.fdopen(fd, "wb"), label)
        directory, name = os.path.split(target)
        try:
            dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
        except OSError as exc:
            raise CantCreateError("cannot write %s: %s" % (label, describe_oserror(exc))) from None
        return cls._temp_in(dir_fd, name, label, overwrite=True)

    @classmethod
    def in_directory(cls, dir_fd, name, label, *, overwrite=False, hint="use -f to replace it"):
        """Write ``name`` inside the open directory ``dir_fd``, never following a symlink.

        ``dir_fd`` is taken over: it is closed when the output is committed or
        aborted.  Without ``overwrite`` an existing entry is refused (73); with
        it, a symlink or regular file is replaced (not followed), a FIFO or
        device is written directly.
        """
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            os.close(dir_fd)
            raise CantCreateError("cannot write %s: %s" % (label, describe_oserror(exc))) from None
        if st is not None:
            problem = None
            if not overwrite:
                problem = "%s exists; not overwritten (%s)" % (label, hint)
            elif stat.S_ISDIR(st.st_mode):
                problem = "cannot write %s: Is a directory" % label
            if problem:
                os.close(dir_fd)
                raise CantCreateError(problem)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                try:
                    fd = os.open(name, os.O_WRONLY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
                except OSError as exc:
                    raise CantCreateError("cannot write %s: %s" % (label, describe_oserror(exc))) from None
                finally:
                    os.close(dir_fd)
                return cls(os.fdopen(fd, "wb"), label)
        out = cls._temp_in(dir_fd, name, label, overwrite=overwrite)
        out._hint = hint
        return out

    @classmethod
    def _temp_in(cls, dir_fd, name, label, *, overwrite):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        for _ in range(10):
            temp = _temp_name(name)
            try:
                fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                os.close(dir_fd)
                raise CantCreateError("cannot create %s: %s" % (label, describe_oserror(exc))) from None
        else:  # pragma: no cover - ten random collisions
            os.close(dir_fd)
            raise CantCreateError("cannot create %s: no free temporary name" % label)
        return cls(os.fdopen(fd, "wb"), label, dir_fd=dir_fd, temp=temp, final=name, overwrite=overwrite)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- use ------------------------------------------------------------------
    def write(self, data):
        if self._hold is not None:
            self._hold += data
            if len(self._hold) <= HOLD_BACK:
                return
            data, self._hold = self._hold, None  # too big to hold: stream the rest
        try:
            self.file.write(data)
        except OSError as exc:
            raise IOFailure("cannot write %s: %s" % (self.label, describe_oserror(exc))) from None

    def checkpoint(self):
        """Remember the current end as good: :meth:`rollback` returns here.

        A direct output writes out what it held and holds back what follows,
        up to ``HOLD_BACK`` bytes; beyond that it can no longer roll back.
        """
        if self._temp is not None:
            self._good = self.file.tell()
        else:
            self._release()
            self._hold = bytearray()

    def _release(self):
        if self._hold:
            data, self._hold = self._hold, None
            self.write(data)
        self._hold = None

    def rollback(self):
        """Drop what was written since the last checkpoint."""
        if self._temp is not None:
            self.file.flush()
            self.file.seek(self._good)
            self.file.truncate()
        elif self._hold is not None:
            self._hold = bytearray()

    def retarget(self, path):
        """Make commit move the file to ``path``, in the same directory, instead."""
        self._final = os.path.basename(path)
        self.label = path

    @property
    def replaces(self):
        """True when the output goes to a temporary file that commit renames."""
        return self._temp is not None

    def commit(self, mode=None, *, ignore_chmod_errors=False, mtime=None):
        """Finish: flush, set ``mode`` and ``mtime`` (temporary files only), move into place."""
        if self._done:
            return
        self._done = True
        try:
            self._release()
            try:
                self.file.flush()
                if self._temp is not None and mode is not None:
                    try:
                        os.fchmod(self.file.fileno(), mode)
                    except OSError:
                        if not ignore_chmod_errors:
                            raise
                if self._temp is not None and mtime is not None:
                    os.utime(self.file.fileno(), (mtime, mtime))
            except OSError as exc:
                raise IOFailure("cannot write %s: %s" % (self.label, describe_oserror(exc))) from None
            if self._temp is None:
                if self._owned:
                    self.file.close()
                return
            self.file.close()
            self._place()
        except BaseException:
            self._cleanup()
            raise
        os.close(self._dir_fd)

    def _place(self):
        d = self._dir_fd
        if self._overwrite:
            try:
                os.rename(self._temp, self._final, src_dir_fd=d, dst_dir_fd=d)
            except OSError as exc:
                raise CantCreateError("cannot create %s: %s" % (self.label, describe_oserror(exc))) from None
            return
        # No clobbering, atomically: link() fails if the name exists.
        try:
            os.link(self._temp, self._final, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
        except FileExistsError:
            raise CantCreateError("%s exists; not overwritten (%s)" % (self.label, self._hint)) from None
        except OSError as exc:
            raise CantCreateError("cannot create %s: %s" % (self.label, describe_oserror(exc))) from None
        os.unlink(self._temp, dir_fd=d)

    def abort(self):
        """Give up: remove the temporary file; the target is untouched."""
        if self._done:
            return
        self._done = True
        self._cleanup()

    def _cleanup(self):
        if self._temp is None:
            try:
                if self._owned:
                    self.file.close()
                else:
                    self.file.flush()
            except (OSError, ValueError):
                pass
            return
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self._temp, dir_fd=self._dir_fd)
        except OSError:
            pass
        os.close(self._dir_fd)
