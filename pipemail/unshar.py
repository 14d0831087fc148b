"""Reading shell archives without running them: find, group, parse, extract safely.

``pyunshar`` never runs a shell.  It finds archives in its inputs (plain
files, mail, mboxes, Maildirs), groups split archives by their identifier,
puts the parts in order, and hands each archive to the parser of its format
(pyshar's own, or GNU sharutils'), which tells an :class:`Extractor` what to
create.  The extractor writes below one directory only, under temporary names
renamed once size and digest match.
"""

import binascii
import hashlib
import io
import os
import re

from pipemail.errors import (
    CantCreateError,
    DataError,
    IOFailure,
    PipemailError,
    describe_oserror,
)
from pipemail.unshar_api import ArchiveError, PartInfo

#: Parts are copied to the spool this much at a time.
SPOOL_CHUNK = 1 << 20


class SpoolError(IOFailure):
    """The spool directory cannot be created or written (a full disk): the whole run stops."""


class Spool:
    """A private directory for the archive parts that wait for their siblings.

    Created when the first part needs it, on the target's file system: inside the target
    directory ``directory`` when it exists, else in its nearest existing parent (where it
    will be created), so that no copy crosses file systems; in ``$TMPDIR`` when there is no
    target (``directory`` None: listing).  Named ``.pyunshar-XXXXXXXX``, mode 0700, its
    files 0600, one per part.  :meth:`remove` takes it away with everything in it; the
    caller does so on every exit.
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = None
        self.count = 0

    def _anchor(self):
        if self.directory is None:
            import tempfile

            return tempfile.gettempdir()
        here = os.path.abspath(self.directory)
        while not os.path.isdir(here) and os.path.dirname(here) != here:
            here = os.path.dirname(here)
        return here

    def new(self, label):
        """A new file (open for writing, 0600) in the spool, and its path."""
        import tempfile

        if self.path is None:
            anchor = self._anchor()
            try:
                self.path = tempfile.mkdtemp(prefix=".pyunshar-", dir=anchor)
            except OSError as exc:
                raise SpoolError(
                    "cannot create a spool directory for archive parts in %s: %s" % (anchor, describe_oserror(exc))
                ) from None
        self.count += 1
        path = os.path.join(self.path, "part%d" % self.count)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError("cannot spool %s: %s" % (label, describe_oserror(exc))) from None
        return io.FileIO(fd, "wb"), path

    def remove(self):
        if self.path is not None:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


# -- finding archives in a text --------------------------------------------------------


class Part:
    """One archive part found in an input: where, what, and how to read its text again."""

    def __init__(self, info, label, lineno, text):
        self.info = info
        self.label = label
        self.lineno = lineno
        self.text = text  # a binary file holding the part, first line to "exit 0"


class _Slice(io.RawIOBase):
    """Bytes ``start`` to ``end`` of the file at ``path``, opened only when read."""

    def __init__(self, path, start, end):
        self.path, self.pos, self.end = path, start, end
        self.f = None

    def readable(self):
        return True

    def readinto(self, b):
        if self.f is None:
            self.f = open(self.path, "rb", buffering=0)
        n = min(len(b), self.end - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.pos)
        got = self.f.readinto(memoryview(b)[:n])
        self.pos += got
        return got

    def close(self):
        if self.f is not None:
            self.f.close()
        super().close()


def _exit_line(buf, i, eof):
    """Whether the line starting at ``i`` in ``buf`` is exactly ``exit 0``: True, False, or None (need more)."""
    after = i + 6
    if len(buf) < after + 2 and not eof:
        return None
    tail = buf[after : after + 2]
    return tail[:1] == b"\n" or tail == b"\r\n" or (eof and len(buf) == after)


def _copy_to_exit(rd, write):
    """Copy lines in bulk up to and including the line ``exit 0``; False at the end of input."""
    while True:
        rd.fill(1 << 20)
        buf, pos = rd.buf, rd.pos
        if buf.startswith(b"exit 0", pos):
            at = pos
        else:
            at = buf.find(b"\nexit 0", pos)
            at = at + 1 if at >= 0 else -1
        while at >= 0:
            found = _exit_line(buf, at, rd.eof)
            if found is None:
                break
            if found:
                end = buf.find(b"\n", at)
                end = len(buf) if end < 0 else end + 1
                chunk = buf[pos:end]
                write(chunk)
                rd.lineno += chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
                rd.pos = end
                return True
            nxt = buf.find(b"\nexit 0", at)
            at = nxt + 1 if nxt >= 0 else -1
        # No end line in view: pass on whole lines, keeping back what could start one.
        cut = buf.rfind(b"\n", pos, max(pos, len(buf) - 8)) + 1
        if cut > pos:
            chunk = buf[pos:cut]
            write(chunk)
            rd.lineno += chunk.count(b"\n")
            rd.pos = cut
            continue
        if rd.eof:
            rest = buf[pos:]
            write(rest)
            rd.lineno += rest.count(b"\n") + (1 if rest and not rest.endswith(b"\n") else 0)
            rd.pos = len(buf)
            return False
        rd.fill(len(buf) - pos + (1 << 20))


def _is_start(line):
    s = line.rstrip(b"\r\n")
    return (
        s in (b"#!/bin/sh", b"#! /bin/sh", b"#!/bin/sh -", b"#! /bin/sh -")
        or s.startswith(b"# This is a shell archive")
        or s.startswith(b"# This is part ")
    )


def _detect(head):
    """The format and PartInfo of an archive whose first bytes are ``head``, or None."""
    from pipemail import sharformat

    found = sharformat.find_part_line(head)
    if found:
        archive_id, number, total = found
        return PartInfo("pyshar", archive_id, number, total, number == total)
    from pipemail import unshar_gnu

    if unshar_gnu.detect(head):
        return unshar_gnu.part_info(head)
    return None


class _Spooled:
    """Where one part is being copied: a file of the :class:`Spool` (or an anonymous temporary
    file without one); ``write`` raises SpoolError when the disk is full."""

    def __init__(self, spool, label):
        self.spool = spool
        self.f = None  # created at the first flush: a script that is no archive part never gets a file
        self.path = None
        self.label = label
        self.size = 0
        self.pending = []
        self.held = 0

    def _open(self):
        if self.spool is not None:
            self.f, self.path = self.spool.new(self.label)
            return
        import tempfile

        try:
            self.f = tempfile.TemporaryFile(buffering=0)
        except OSError as exc:
            raise SpoolError("cannot spool %s: %s" % (self.label, describe_oserror(exc))) from None

    def write(self, data):
        self.pending.append(bytes(data))
        self.held += len(data)
        if self.held >= SPOOL_CHUNK:
            self.flush()

    def flush(self):
        data = b"".join(self.pending)
        self.pending, self.held = [], 0
        if self.f is None:
            self._open()
        try:
            view = memoryview(data)
            while view:
                n = self.f.write(view)
                view = view[n:]
        except OSError as exc:
            self.close()
            raise SpoolError("cannot spool %s: %s" % (self.label, describe_oserror(exc))) from None
        self.size += len(data)

    def text(self):
        """The part, to be read again (the file is closed; the reader opens it when read)."""
        self.flush()
        if self.path is None:
            self.f.seek(0)
            return self.f
        self.f.close()
        return _Slice(self.path, 0, self.size)  # unbuffered: no buffer held per waiting part

    def close(self):
        self.pending = []
        if self.f is not None:
            self.f.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def find_parts(label, stream, on_error, immediate=None, found_flag=None, spool=None):
    """Yield the archive :class:`Part` objects in one text ``stream``.

    Lines before an archive (mail headers, text) are skipped; an archive runs
    from its ``#!/bin/sh`` (or first comment) line to the line ``exit 0``.
    A part of a plain file is read again from the file later; any other is
    copied to a file of ``spool`` (a :class:`Spool`; without one, an anonymous
    temporary file), never held in memory.  A script that is not a known archive is
    reported through ``on_error``.  ``immediate(info)`` may return a function
    that takes the reader, positioned at the archive's first line, and reads
    the archive itself (a whole archive in one part: no need to wait for
    others), in one pass.
    """
    from pipemail.lines import LineReader

    path = getattr(stream, "name", None)
    seekable = isinstance(path, str) and isinstance(stream, io.BufferedReader | io.FileIO) and stream.seekable()
    rd = LineReader(stream, label)
    found = False
    while True:
        start_at = rd.consumed + rd.pos
        line = rd.readline()
        if not line:
            break
        if rd.overlong or not _is_start(line):
            continue
        start = rd.lineno
        spooled = None if seekable else _Spooled(spool, label)
        write = spooled.write if spooled is not None else (lambda data: None)
        write(line)
        head = [line]
        size = len(line)
        ended = False
        while size < 16384:
            line = rd.readline()
            if not line:
                break
            write(line)
            head.append(line)
            size += len(line)
            if line.rstrip(b"\r\n") == b"exit 0":
                ended = True
                break
        info = _detect(b"".join(head))
        reader = immediate(info) if info is not None and immediate is not None else None
        if reader is not None:
            # Give the head back and let the archive's own reader take it from its first line.
            back = b"".join(head)
            rd.buf[: rd.pos] = b""
            rd.consumed += rd.pos
            rd.buf[0:0] = back
            rd.consumed -= len(back)
            rd.pos = 0
            rd.lineno = start - 1
            if spooled is not None:
                spooled.close()
            found = True
            reader(rd)
            continue
        if info is None:
            if spooled is not None:
                spooled.close()
            if not ended and line:
                continue  # a script in the text, not an archive; the scan goes on after it
            on_error(
                ArchiveError(
                    "%s:%d: a shell script that is not a pyshar or GNU shar archive; not extracted" % (label, start)
                )
            )
            found = True
            continue
        if not ended and line:
            tail = [b""]

            def keep(data, write=write, tail=tail):
                write(data)
                tail[0] = bytes(data[-4096:]) if len(data) >= 4096 else (tail[0] + bytes(data))[-4096:]

            ended = _copy_to_exit(rd, keep)
            if ended and info.format == "gnu" and info.last is None:
                # GNU says whether a part is the last only at its end.
                from pipemail import unshar_gnu

                info = unshar_gnu.part_info(b"".join(head) + b"\n" + tail[0])
        if not ended:
            if spooled is not None:
                spooled.close()
            on_error(
                ArchiveError(
                    "%s:%d: truncated archive: no 'exit 0' line after the one beginning on line %d"
                    % (label, rd.lineno, start)
                )
            )
            found = True
            continue
        found = True
        # unbuffered (a _Slice of the file): no buffer held per waiting part
        text = spooled.text() if spooled is not None else _Slice(path, start_at, rd.consumed + rd.pos)
        yield Part(info, label, start, text)
    if found_flag is not None and found:
        found_flag.append(label)


def _skip_to_exit(rd):
    """After a refused archive, go on scanning after its ``exit 0`` line."""
    _copy_to_exit(rd, lambda data: None)


def group_parts(parts, on_error):
    """Archives as lists of parts in order, complete ones only; duplicates dropped."""
    groups = {}
    order = []
    for part in parts:
        key = (part.info.format, part.info.archive_id)
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key].setdefault(part.info.number, part)
    archives = []
    for key in order:
        found = groups[key]
        total = next((p.info.total for p in found.values() if p.info.total), None)
        last = [n for n, p in found.items() if p.info.last]
        known = total is not None or bool(last)
        if total is None:
            total = min(last) if last else max(found) + 1
        missing = [n for n in range(1, total + 1) if n not in found]
        if missing:
            first = found[min(found)]
            if not known:  # GNU parts do not say how many there are; none said it was the last
                missing.pop()
            names = ", ".join(str(n) for n in missing[:10]) + (", ..." if len(missing) > 10 else "")
            if known:
                what = "%s %s of %d %s missing" % (
                    "parts" if len(missing) > 1 else "part",
                    names,
                    total,
                    "are" if len(missing) > 1 else "is",
                )
            elif missing:
                what = "%s %s %s missing, and so is the last part (number %d or later)" % (
                    "parts" if len(missing) > 1 else "part",
                    names,
                    "are" if len(missing) > 1 else "is",
                    total,
                )
            else:
                what = "the last part (number %d or later) is missing" % total
            on_error(DataError("%s:%d: %s; nothing of this archive was extracted" % (first.label, first.lineno, what)))
            continue
        archives.append([found[n] for n in range(1, total + 1)])
    return archives


# -- the safe extractor ------------------------------------------------------------------


def _show(name):
    from pipemail.shar import show

    return show(name)


class Extractor:
    """A parser's sink that creates files and directories below one directory, safely.

    Modes follow GNU tar's rule (:func:`pipemail.safefile.archive_mode`).  A
    directory that existed before the extraction keeps its mode and time:
    where the archive says otherwise, ``on_warning`` gets a line saying so.
    """

    def __init__(self, directory=".", overwrite=False, on_error=None, on_file=None, advance=None, on_warning=None):
        self.advance = advance  # called with the bytes of each write (a progress bar), or None
        self.overwrite = overwrite
        self.on_error = on_error or (lambda exc: None)
        self.on_file = on_file or (lambda name, status: None)
        self.on_warning = on_warning or (lambda message: None)
        self.directory_name = directory
        self._base = None  # opened (and created) when the first member arrives
        self.dirs = {}  # components -> [mode, mtime, where], in the order first met
        self.created = set()  # components of the directories this extraction created
        self.digests = ("sha256", "md5")  # which to compute: set per archive format
        self.out = None
        self.name = None
        self.failed = None
        self.size = 0
        self.sha256 = None
        self.md5 = None
        self.where = ""

    @property
    def base(self):
        if self._base is None:
            try:
                os.makedirs(self.directory_name, exist_ok=True)
                self._base = os.open(self.directory_name, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise CantCreateError(
                    "cannot use directory %s: %s" % (self.directory_name, describe_oserror(exc))
                ) from None
        return self._base

    def close(self):
        """Give directories their modes and times (deepest first), then let go of DIR."""
        from pipemail.safefile import archive_mode, current_umask

        self.abort_file()
        if self._base is None:
            return
        umask = current_umask()
        for parts, (mode, mtime, where) in reversed(self.dirs.items()):
            if mode is None and mtime is None:
                continue
            try:
                fd = self._dir(list(parts), create=False)
            except (PipemailError, OSError):
                continue
            try:
                if parts not in self.created:
                    self._keep(parts, fd, None if mode is None else archive_mode(mode, umask), mtime, where)
                    continue
                if mode is not None:
                    os.fchmod(fd, archive_mode(mode, umask))
                if mtime is not None:
                    os.utime(fd, (mtime, mtime))
            except OSError:
                pass
            finally:
                os.close(fd)
        self.dirs = {}
        self.created = set()
        os.close(self._base)
        self._base = None

    def _keep(self, parts, fd, mode, mtime, where):
        """Leave a directory that existed before as it is; say so if the archive wanted it otherwise."""
        import stat
        import time

        st = os.fstat(fd)
        have = stat.S_IMODE(st.st_mode) & 0o777
        kept, wanted = [], []
        if mode is not None and mode != have:
            kept.append("mode %04o" % have)
            wanted.append("%04o" % mode)
        if mtime is not None and mtime != int(st.st_mtime):
            kept.append("time")
            wanted.append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(mtime)))
        if kept:
            self.on_warning(
                "%s: %s existed before the extraction: kept its %s, not the archive's %s"
                % (where, _show("/".join(parts).encode()), " and ".join(kept), " and ".join(wanted))
            )

    def _parts(self, name):
        from pipemail.safefile import safe_parts

        return safe_parts(name, keep_paths=True)

    def _dir(self, parts, create=True):
        from pipemail.safefile import current_umask, open_dirs

        return open_dirs(self.base, parts, current_umask(), create=create, created=self.created)

    def _fail(self, exc):
        self.on_error(exc)

    # -- the sink interface --
    def directory(self, name, mode=None, mtime=None):
        try:
            parts = self._parts(name)
            os.close(self._dir(parts))
        except PipemailError as exc:
            self._fail(type(exc)("%s: %s" % (self.where, exc)))
            return
        entry = self.dirs.setdefault(tuple(parts), [None, None, self.where])
        if mode is not None:
            entry[0], entry[2] = mode, self.where
        if mtime is not None:
            entry[1], entry[2] = mtime, self.where

    def open_file(self, name, append=False):
        from pipemail.safefile import Output

        if append:
            if self.name != name:
                raise ArchiveError("%s: continues %r, which is not the file in progress" % (self.where, _show(name)))
            return
        self.abort_file()
        self.name = name
        self.failed = None
        self.size = 0
        self.sha256 = hashlib.sha256() if "sha256" in self.digests else None
        self.md5 = hashlib.md5() if "md5" in self.digests else None
        try:
            parts = self._parts(name)
            dir_fd = self._dir(parts[:-1])
            self.out = Output.in_directory(
                dir_fd, parts[-1], _show("/".join(parts)), overwrite=self.overwrite, hint="use -c to replace it"
            )
        except PipemailError as exc:
            self.failed = type(exc)("%s: %s" % (self.where, exc))

    def write(self, data):
        if self.out is None:
            return
        self.size += len(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.out.write(data)
        if self.advance is not None:
            self.advance(len(data))

    def close_file(self, mode=None, mtime=None, size=None, md5=None, sha256=None, complete=True):
        if not complete:
            return
        name, out, failed = self.name, self.out, self.failed
        self.out = self.name = self.failed = None
        if failed is not None:
            self._fail(failed)
            self.on_file(name, "refused")
            return
        problem = None
        if size is not None and size != self.size:
            problem = "size is %d, the archive says %d" % (self.size, size)
        elif sha256 is not None and (self.sha256 is None or sha256 != self.sha256.hexdigest()):
            problem = "SHA-256 differs from the archive's"
        elif md5 is not None and (self.md5 is None or md5 != self.md5.hexdigest()):
            problem = "MD5 differs from the archive's"
        if problem:
            out.abort()
            self._fail(DataError("%s: %s: %s; not written" % (self.where, _show(name), problem)))
            self.on_file(name, "failed")
            return
        from pipemail.safefile import archive_mode, current_umask

        umask = current_umask()
        # as sh would create it when the archive says no mode; else GNU tar's rule
        mode = 0o666 & ~umask if mode is None else archive_mode(mode, umask)
        try:
            out.commit(mode, mtime=mtime)
        except PipemailError as exc:
            self._fail(type(exc)("%s: %s" % (self.where, exc)))
            self.on_file(name, "failed")
            return
        self.on_file(name, "ok")

    def abort_file(self):
        if self.out is not None:
            self.out.abort()
        self.out = self.name = self.failed = None


class Lister:
    """A sink that lists members (size, mode, name) instead of writing them.

    Directories get their mode at the end of an archive, so the list is
    printed when the archive is done.
    """

    def __init__(self, emit):
        self.emit = emit
        self.entries = []
        self.dirs = {}
        self.size = 0
        self.name = None
        self.where = ""

    def directory(self, name, mode=None, mtime=None):
        if name not in self.dirs:
            self.dirs[name] = [None, name, mode]
            self.entries.append(self.dirs[name])
        elif mode is not None:
            self.dirs[name][2] = mode

    def open_file(self, name, append=False):
        if not append:
            self.name, self.size = name, 0

    def write(self, data):
        self.size += len(data)

    def close_file(self, mode=None, mtime=None, size=None, md5=None, sha256=None, complete=True):
        if complete:
            self.entries.append([self.size, self.name, mode])

    def abort_file(self):
        self.name = None

    def close(self):
        for size, name, mode in self.entries:
            mode = "----" if mode is None else "%04o" % (mode & 0o7777)
            if size is None:
                self.emit("%10s %s %s/" % ("-", mode, _show(name)))
            else:
                self.emit("%10d %s %s" % (size, mode, _show(name)))
        self.entries = []
        self.dirs = {}


# -- pyshar's own format (pipemail.sharformat: the templates, written once) --------------------


def _mtime(stamp):
    if stamp == b"-":
        return None
    import calendar
    import time

    return calendar.timegm(time.strptime(stamp.decode(), "%Y%m%d%H%M.%S"))


_B64_TEXT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"


def _count_lines(chunk):
    return chunk.count(b"\n")


def _count_b64_lines(chunk):
    """Lines in a chunk of base64 lines: by arithmetic when all are 60 characters."""
    n = len(chunk) // 61
    if n * 61 == len(chunk) and chunk[60::61] == b"\n" * n:
        return n  # exact unless a line holds another newline, which _b64_body finds and corrects
    return chunk.count(b"\n")


class PysharParser:
    """Reads archives written by pyshar by their exact templates; anything else is refused."""

    def __init__(self, sink):
        self.sink = sink
        self.open = None  # name of the file in progress
        self.started = False

    def feed_part(self, label, first_lineno, stream):
        from pipemail.lines import LineReader

        rd = LineReader(stream, label)
        rd.lineno = first_lineno - 1
        self.feed_reader(rd)

    def feed_reader(self, rd):
        """Read one part from ``rd``, positioned at its first line, through its ``exit 0``."""
        from pipemail import sharformat as fmt

        label = rd.label
        self.rd = rd
        self._header(rd, fmt)
        resume = self.open  # a file split across parts must be resumed first
        while True:
            self.sink.where = "%s:%d" % (label, rd.lineno + 1)
            stmt = self._statement(rd)
            if stmt is None:
                raise self._error("truncated archive: no '%s' line" % fmt.END.decode().rstrip())
            if stmt.startswith(b"#"):
                continue
            if resume is not None and not stmt.startswith(fmt.MORE[:8]):
                raise self._error("the part does not resume %s" % _show(resume))
            if stmt == fmt.END:
                line = rd.readline()
                if line.rstrip(b"\r\n") != fmt.EXIT.rstrip(b"\n"):
                    raise self._error("expected '%s' after '%s'" % (fmt.EXIT.decode()[:-1], fmt.END.decode()[:-1]))
                return
            if stmt == fmt.TEXT_OPEN:
                self._need_file()
                self._text_body(rd)
                continue
            if stmt in (fmt.B64_START % b"new", fmt.B64_START % b"add"):
                self._need_file()
                self._b64_body(rd)
                continue
            parsed = fmt.statement(stmt)
            if parsed is None:
                raise self._error("unexpected shell command: %s" % _show(stmt[:80].rstrip(b"\n")))
            kind, fields = parsed
            if kind is fmt.DIR:
                self._no_file()
                self.sink.directory(fields[0])
            elif kind is fmt.FILE:
                self._no_file()
                self.open = fields[0]
                self.sink.open_file(self.open)
            elif kind is fmt.MORE:
                name = fields[0]
                if name != self.open or resume is None:
                    raise self._error("continues %s, which is not the file in progress" % _show(name))
                resume = None
            elif kind is fmt.DONE:
                self._need_file()
                size, sha256, mode, stamp = fields
                self.sink.close_file(mode=mode, mtime=_mtime(stamp), size=size, sha256=sha256)
                self.open = None
            elif kind is fmt.DIRMODE:
                self._no_file()
                name, mode, stamp = fields
                self.sink.directory(name, mode, _mtime(stamp))
            else:  # fmt.TAIL
                self._need_file()
                self.sink.write(fields[0])

    def finish(self):
        if self.open is not None:
            raise ArchiveError("%s: the archive ends inside %s" % (self.sink.where, _show(self.open)))

    def _error(self, message):
        return ArchiveError("%s:%d: %s" % (self.rd.label, self.rd.lineno, message))

    def _need_file(self):
        if self.open is None:
            raise self._error("data outside a file")

    def _no_file(self):
        if self.open is not None:
            raise self._error("%s is not finished" % _show(self.open))

    def _header(self, rd, fmt):
        # Comments up to the pm_id line, then the prelude, exactly as pyshar writes it.
        while True:
            line = rd.readline()
            if not line:
                raise self._error("truncated archive header")
            if line.startswith(fmt.ID_LINE[:6]):
                if not fmt.is_id_line(line):
                    raise self._error("unexpected shell command: %s" % _show(line[:80].rstrip(b"\n")))
                break
            if not (line.startswith(b"#") or line.startswith(b"---- Cut Here")):
                raise self._error("unexpected line in the archive header: %s" % _show(line[:80].rstrip(b"\n")))
        for text, force in ((t, f) for t in (fmt.PRELUDE, *fmt.OLD_PRELUDES) for f in ("", "1")):
            prelude = (text % {"force": force}).encode()
            rd.fill(len(prelude))
            if bytes(rd.buf[rd.pos : rd.pos + len(prelude)]) == prelude:
                rd.pos += len(prelude)
                rd.lineno += prelude.count(b"\n")
                return
        raise self._error("the archive's code differs from pyshar's; not extracted (line %d on)" % (rd.lineno + 1))

    def _statement(self, rd):
        """One statement: one line (names carry newlines as "$pm_nl")."""
        line = rd.readline()
        if not line:
            return None
        if rd.overlong:
            raise self._error("line too long")
        if not line.endswith(b"\n"):
            raise self._error("truncated archive: it ends inside a line")
        return line

    def _body(self, rd, end, count=None):
        """Yield ``(bytes, newlines)`` of a here-document body up to the lines ``end``; bulk, bounded memory.

        ``count(chunk)`` gives the number of newlines in a chunk (the default
        counts them); the reader's line number follows.
        """
        count = count or _count_lines
        delim = b"\n" + end
        while True:
            rd.fill(1 << 20)
            buf, pos = rd.buf, rd.pos
            if buf.startswith(end, pos):
                rd.pos = pos + len(end)
                rd.lineno += end.count(b"\n")
                return
            i = buf.find(delim, pos)
            if i >= 0:
                chunk = bytes(buf[pos : i + 1])
                rd.pos = i + len(delim)
                lines = count(chunk)
                rd.lineno += lines
                yield chunk, lines
                rd.lineno += end.count(b"\n")
                return
            # Keep the last bytes back: the end may straddle this window and the next.
            cut = buf.rfind(b"\n", pos, max(pos, len(buf) - len(delim))) + 1
            if cut <= pos:
                if rd.eof:
                    raise self._error("truncated archive: the here-document has no end")
                rd.fill(len(buf) - pos + (1 << 20))
                continue
            chunk = bytes(buf[pos:cut])
            rd.pos = cut
            lines = count(chunk)
            rd.lineno += lines
            yield chunk, lines

    def _text_body(self, rd):
        from pipemail.sharformat import PREFIXES, TEXT_CLOSE

        start = rd.lineno
        prefix = None
        for chunk, lines in self._body(rd, TEXT_CLOSE):
            if prefix is None:
                prefix = chunk[:1]
                if not prefix or prefix not in PREFIXES:
                    raise self._error("a text line without its prefix (here-document from line %d)" % start)
            # One prefix character per line and the first byte one: they are
            # the prefixes (pyshar picks a character the file does not hold;
            # a damaged line that lost its prefix while another line gained
            # one shows in the digest check instead).  Else strip line by line.
            data = chunk.translate(None, prefix)
            if len(chunk) - len(data) != lines or chunk[:1] != prefix:
                data = chunk[1:].replace(b"\n" + prefix, b"\n")
                if chunk[:1] != prefix or len(data) != len(chunk) - lines:
                    raise self._error("a text line without its prefix (here-document from line %d)" % start)
            self.sink.write(data)

    def _b64_body(self, rd):
        from pipemail.sharformat import B64_BEGIN, B64_CLOSE

        start = rd.lineno
        line = rd.readline()
        if line != B64_BEGIN:
            raise self._error("expected '%s'" % B64_BEGIN.decode().rstrip())
        pending = b""
        for chunk, lines in self._body(rd, B64_CLOSE, _count_b64_lines):
            if not pending and lines * 61 == len(chunk) and chunk[60::61] == b"\n" * lines:
                # whole 60-character lines, as pyshar writes all but the last:
                # decode as they are (a2b_base64 skips the newlines); a bad
                # character shows as a short result, and the slow path says which
                try:
                    data = binascii.a2b_base64(chunk)
                except binascii.Error:  # bad padding from a stray character: the slow path says which
                    data = b""
                if len(data) == 45 * lines:
                    self.sink.write(data)
                    continue
                rd.lineno += chunk.count(b"\n") - lines  # the count by arithmetic was short
            if chunk.translate(None, _B64_TEXT):
                off = re.search(rb"[^A-Za-z0-9+/=\n]", chunk).start()
                where = rd.lineno - lines + chunk.count(b"\n", 0, off) + 1
                raise ArchiveError(
                    "%s:%d: invalid character '%s' in base64 data" % (rd.label, where, _show(chunk[off : off + 1]))
                )
            data = pending + chunk.replace(b"\n", b"")
            whole = len(data) - len(data) % 4
            try:
                self.sink.write(binascii.a2b_base64(data[:whole], strict_mode=True))
            except binascii.Error:
                raise self._error("invalid base64 data (here-document from line %d)" % start) from None
            pending = data[whole:]
        if pending:
            raise self._error("truncated base64 data (here-document from line %d)" % start)


# -- the whole job -----------------------------------------------------------------------------


def _parser(fmt, sink):
    if fmt == "pyshar":
        return PysharParser(sink)
    from pipemail import unshar_gnu

    return unshar_gnu.GnuParser(sink)


def unshar(
    inputs,
    directory=".",
    *,
    overwrite=False,
    list_only=False,
    on_error=None,
    on_file=None,
    emit=None,
    advance=None,
    on_warning=None,
):
    """Find, group and extract (or list) every archive in ``inputs``; return the errors in order.

    ``advance``, when given, is called with the number of bytes of each write (a progress bar);
    ``on_warning`` with each line that says what was left as it was (see :class:`Extractor`).
    """
    from pipemail.mailbox_io import iter_texts

    errors = []

    def fail(exc):
        errors.append(exc)
        if on_error is not None:
            on_error(exc)

    sink = Lister(emit) if list_only else Extractor(directory, overwrite, fail, on_file, advance, on_warning)

    def immediate(info):
        if info.format != "pyshar" or info.total != 1:
            return None

        def read(rd):
            sink.digests = ("sha256",)
            parser = PysharParser(sink)
            try:
                parser.feed_reader(rd)
                parser.finish()
            except DataError as exc:
                sink.abort_file()
                fail(exc)
                _skip_to_exit(rd)

        return read

    parts = []
    spool = Spool(None if list_only else directory)
    try:
        for item in inputs:  # one at a time: an unreadable input does not stop the others
            found = []
            try:
                for label, stream in iter_texts([item]):
                    parts.extend(find_parts(label, stream, fail, immediate, found, spool))
            except SpoolError:
                raise  # a full disk: nothing more can be kept
            except PipemailError as exc:
                fail(exc)
                continue
            if not found:
                fail(
                    DataError(
                        "%s: no shell archive found" % (item[0] if isinstance(item, tuple) else os.fsdecode(item))
                    )
                )
        archives = group_parts(parts, fail)
        needed = {id(part) for archive in archives for part in archive}
        for part in parts:  # duplicates and parts of incomplete archives: not needed any more
            if id(part) not in needed:
                part.text.close()
        for archive in archives:
            fmt = archive[0].info.format
            parser = _parser(fmt, sink)
            sink.digests = ("sha256",) if fmt == "pyshar" else ("md5",)
            try:
                for part in archive:
                    sink.where = "%s:%d" % (part.label, part.lineno)
                    parser.feed_part(part.label, part.lineno, part.text)
                    part.text.close()
                parser.finish()
            except DataError as exc:
                sink.abort_file()
                fail(exc)
    finally:
        try:
            sink.close()
        finally:
            for part in parts:
                part.text.close()
            spool.remove()  # on every exit: success, error, Ctrl-C, SIGTERM (which unwinds)
    return errors


__all__ = ["Extractor", "Lister", "PysharParser", "Spool", "SpoolError", "find_parts", "group_parts", "unshar"]
