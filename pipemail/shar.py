"""Writing shell archives that unpack anywhere and never run their input.

An archive is a POSIX sh script (dash, bash, busybox sh) made of a fixed
prelude of functions and one line per step, so that ``pyunshar`` can read it
back by exact templates without running anything:

    pm_dir 'NAME' 'SHOWN'                        a directory
    pm_file 'NAME' 'SHOWN'                       a new file (existing ones are kept unless -c)
    pm_more 'NAME' 'SHOWN'                       the same file, continued in a new part
    if pm_ok; then awk '{print substr($0, 2)}' >> "./$pm_n" <<'PYSHAR_EOF'
    X...every line prefixed with one character (X, or another of PREFIXES)
    PYSHAR_EOF
    fi
    if pm_ok; then printf %s 'TAIL' >> "./$pm_n"; fi      a last line without newline
    if pm_ok; then pm_unb64 new|add <<'PYSHAR_EOF'
    begin-base64 600 piece ... ====                       binary data (a slice of the file)
    PYSHAR_EOF
    fi
    pm_done SIZE SHA256 MODE STAMP               checks, chmod, touch (STAMP - for none)
    pm_dirmode 'NAME' 'SHOWN' MODE STAMP         a directory's mode and time, at the very end
                                                 (not for one that existed before)
    pm_end                                       end of the part
    exit 0

NAME is the member's name single-quoted (any bytes but NUL); SHOWN is the
same name with every byte outside printable ASCII escaped, which is all that
ever reaches a message or a comment.
"""

import hashlib
import os
import stat
import time

from pipemail import __version__
from pipemail.errors import NoInputError, UsageError, describe_oserror, shown
from pipemail.lines import line_over
from pipemail.progress import reader
from pipemail.sharformat import (  # the format, written once (pyunshar reads it from there)
    B64_CLOSE,
    B64_OPEN,
    COUNT_WIDTH,
    DIR,
    DIRMODE,
    DONE,
    FILE,
    ID_LINE,
    MORE,
    PART_LINE,
    PREFIXES,
    PRELUDE,
    TAIL,
    TEXT_CLOSE,
    TEXT_OPEN,
    TRAILER,
    quote,
)

MAX_TEXT_LINE = 900  # longer lines are sent base64: SMTP allows 998
FORCED_TEXT_LINE = 64 << 10  # with -T
_READ = 1 << 20
_B64_LINE = 45

_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n"  # what a text file may hold
_NOT_NUL = bytes(range(1, 256))


show = shown  # names in comments and messages: printable ASCII only


def stamp(mtime):
    """``touch -t`` form of ``mtime`` in UTC: CCYYMMDDhhmm.SS."""
    return time.strftime("%Y%m%d%H%M.%S", time.gmtime(int(mtime)))


# -- what to archive ----------------------------------------------------------------


class Member:
    __slots__ = ("name", "path", "is_dir", "size", "mode", "mtime")

    def __init__(self, name, path, st):
        self.name = name  # bytes, relative, as stored in the archive
        self.path = path  # bytes, where to read it
        self.is_dir = stat.S_ISDIR(st.st_mode)
        self.size = 0 if self.is_dir else st.st_size
        self.mode = stat.S_IMODE(st.st_mode) & 0o777
        self.mtime = int(st.st_mtime)


def archive_name(operand, warn):
    """The member name for a path given by the user: relative, normalised, no '..'."""
    parts = [p for p in operand.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise UsageError("refusing %r: a '..' component would unpack outside the target" % show(operand))
    if operand.startswith(b"/"):
        warn("removing leading '/' from member name %s" % show(operand))
    return b"/".join(parts)


def collect(operands, warn):
    """The members for ``operands`` (bytes paths), directories walked in sorted order.

    Symlinks are followed (loops detected); FIFOs, sockets and devices are
    skipped with a warning; a missing operand is an error (66) before anything
    is written.
    """
    members = []
    seen = set()
    for operand in operands:
        name = archive_name(operand, warn)
        try:
            st = os.stat(operand)
        except OSError as exc:
            raise NoInputError("cannot read %s: %s" % (show(operand), describe_oserror(exc))) from None
        _add(members, seen, name, operand, st, set(), warn)
    return members


def _add(members, seen, name, path, st, ancestors, warn):
    if stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            warn("skipping %s: a symlink loop" % show(path))
            return
        if name and name not in seen:
            seen.add(name)
            members.append(Member(name, path, st))
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise NoInputError("cannot read directory %s: %s" % (show(path), describe_oserror(exc))) from None
        for entry in entries:
            child = path.rstrip(b"/") + b"/" + entry if path != b"/" else b"/" + entry
            try:
                cst = os.stat(child)
            except OSError as exc:
                warn("skipping %s: %s" % (show(child), describe_oserror(exc)))
                continue
            _add(members, seen, name + b"/" + entry if name else entry, child, cst, ancestors | {key}, warn)
    elif stat.S_ISREG(st.st_mode):
        if not name:
            raise UsageError("%s names no file" % show(path))
        if name in seen:
            return
        seen.add(name)
        members.append(Member(name, path, st))
    else:
        warn("skipping %s: not a regular file or directory" % show(path))


_NOT_PREFIX = bytes(c for c in range(256) if c not in PREFIXES)


def classify(path, force_text=False, force_binary=False, max_line=MAX_TEXT_LINE):
    """``("text", prefix)`` or ``("binary", None)`` for the file at ``path``.

    Text is printable ASCII and tabs in lines of at most ``max_line`` bytes,
    which survives any mail path; ``force_text`` (-T) takes anything without
    a NUL byte (lines up to ``max_line``).  A file with a NUL byte is always
    binary.  The prefix is the first of :data:`PREFIXES` that the file's
    first MiB does not contain, so that a reader can drop the prefixes in
    one pass (where a later chunk holds it, the reader strips line by line).
    """
    if force_binary:
        return "binary", None
    allowed = _NOT_NUL if force_text else _TEXT_BYTES
    run = 0  # length of the line that the previous chunk left open
    prefix = None
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_READ)
            if not chunk:
                return "text", prefix or PREFIXES[:1]
            if chunk.translate(None, allowed):
                return "binary", None
            if line_over(chunk, run, max_line):
                return "binary", None
            if prefix is None:
                present = set(chunk.translate(None, _NOT_PREFIX))
                prefix = next((bytes((c,)) for c in PREFIXES if c not in present), PREFIXES[:1])
            nl = chunk.rfind(b"\n")
            run = run + len(chunk) if nl < 0 else len(chunk) - nl - 1


# -- the script -----------------------------------------------------------------------


class _Parts:
    """Where the archive goes: one stream, or parts PREFIX.NN under a size limit."""

    def __init__(self, stream=None, prefix=None, limit=None, archive_id=None, prelude_args=None, listing=b""):
        self.stream = stream
        self.prefix = prefix
        self.limit = limit
        self.id = archive_id
        self.args = prelude_args
        self.listing = listing
        self.number = 0
        self.used = 0
        self.outputs = []  # (Output, [patch offsets])
        self.out = None

    def room(self):
        if self.limit is None:
            return 1 << 62
        return self.limit - self.used - len(TRAILER)

    def write(self, data):
        self.used += len(data)
        self.out.write(data)

    def begin(self):
        self.number += 1
        self.used = 0
        if self.prefix is not None:
            from pipemail.safefile import Output

            self.out = Output.to_path(os.fsdecode(b"%s.%d" % (self.prefix, self.number)))
            self.out.label = os.fsdecode(b"%s.%02d" % (self.prefix, self.number))
            self.outputs.append((self.out, []))
        else:
            self.out = _StreamOut(self.stream)
        count = b"1".ljust(COUNT_WIDTH) if self.prefix is None else b" " * COUNT_WIDTH
        head = [b"#!/bin/sh\n"]
        if self.args.get("cut"):
            head.insert(0, b"# ---- Cut Here and feed the following to sh ----\n")
        head.append(b"# This is a shell archive made by pyshar (pipemail %s).\n" % __version__.encode())
        head.append(b"# Unpack it with 'sh FILE' ('sh FILE -c' overwrites existing files),\n")
        head.append(b"# or read it without running anything: 'pyunshar FILE'.\n")
        start = sum(map(len, head))
        line = PART_LINE % (self.id, self.number)
        self._patch(start + len(line))
        head.append(line + count + b"\n")
        if self.number == 1:
            head.append(self.listing)
        line = ID_LINE % (self.id, self.number)
        start = sum(map(len, head))
        self._patch(start + len(line))
        head.append(line + count + b"\n")
        head.append((PRELUDE % self.args).encode())
        self.write(b"".join(head))
        if self.limit is not None and self.room() < 1024:
            raise UsageError(
                "part size %d is too small: a part needs at least %d bytes (%d for the archive's own code)"
                % (self.limit, self.used + len(TRAILER) + 1024, self.used)
            )

    def _patch(self, offset):
        if self.outputs:
            self.outputs[-1][1].append(offset)

    def end(self):
        self.write(TRAILER)

    def finish(self):
        """Write the part count into every part and move them to PREFIX.NN; returns the names."""
        if self.prefix is None:
            return []
        width = max(2, len(str(self.number)))
        count = str(self.number).encode().ljust(COUNT_WIDTH)
        names = []
        for n, (out, offsets) in enumerate(self.outputs, 1):
            f = out.file
            f.flush()
            for off in offsets:
                f.seek(off)
                f.write(count)
            f.seek(0, os.SEEK_END)
            name = b"%s.%0*d" % (self.prefix, width, n)
            out.retarget(os.fsdecode(name))
            names.append(name)
        for out, _ in self.outputs:
            out.commit(0o666 & ~_umask())
        return names

    def stale(self):
        """Part files of an earlier, longer archive with the same prefix, left in place."""
        width = max(2, len(str(self.number)))
        found = []
        n = self.number + 1
        while True:
            name = b"%s.%0*d" % (self.prefix, width, n)
            if not os.path.exists(name):
                return found
            found.append(name)
            n += 1

    def abort(self):
        for out, _ in self.outputs:
            out.abort()


class _StreamOut:
    def __init__(self, stream):
        self.write = stream.write


def _umask():
    from pipemail.safefile import current_umask

    return current_umask()


class Writer:
    """Writes members into parts, never letting a part exceed its limit."""

    def __init__(self, parts, *, timestamps=True, force_text=False, force_binary=False, warn=None, advance=None):
        self.parts = parts
        self.advance = advance
        self.timestamps = timestamps
        self.force_text = force_text
        self.force_binary = force_binary
        self.warn = warn or (lambda msg: None)
        self.current = None  # the statement that resumes the file being written

    def stmt(self, data):
        """Write one statement, starting a new part first when it does not fit."""
        if len(data) > self.parts.room():
            self.next_part()
            if len(data) > self.parts.room():
                raise UsageError("part size %d is too small for one step of the archive" % self.parts.limit)
        self.parts.write(data)

    def next_part(self):
        self.parts.end()
        self.parts.begin()
        if self.current is not None:
            self.parts.write(self.current)

    def directory(self, m):
        self.stmt(DIR % (quote(m.name), quote(show(m.name).encode())))

    def file(self, m, on_text=None):
        shown = quote(show(m.name).encode())
        max_line = MAX_TEXT_LINE
        if self.force_text:  # -T: long lines too, as long as one fits a part and memory stays bounded
            max_line = FORCED_TEXT_LINE if self.parts.limit is None else min(FORCED_TEXT_LINE, self.parts.limit // 2)
        try:
            kind, prefix = classify(m.path, self.force_text, self.force_binary, max_line)
            f = reader(open(m.path, "rb"), self.advance)
        except OSError as exc:
            raise NoInputError("cannot read %s: %s" % (show(m.path), describe_oserror(exc))) from None
        if on_text is not None:
            on_text(m, kind)
        self.stmt(b"# %s (%s)\n" % (shown, kind.encode()) + FILE % (quote(m.name), shown))
        self.current = MORE % (quote(m.name), shown)
        digest = hashlib.sha256()
        with f:
            size = self._text(f, digest, prefix) if kind == "text" else self._binary(f, digest)
        if size != m.size:
            self.warn("%s changed size while being archived (%d bytes, not %d)" % (show(m.name), size, m.size))
        when = stamp(m.mtime).encode() if self.timestamps else b"-"
        self.stmt(DONE % (size, digest.hexdigest().encode(), m.mode, when))
        self.current = None

    def _text(self, f, digest, prefix=b"X"):
        size = 0
        rest = b""
        block = _Block(self, TEXT_OPEN, TEXT_CLOSE)
        while True:
            chunk = f.read(_READ)
            size += len(chunk)
            digest.update(chunk)
            if not chunk:
                break
            data = rest + chunk if rest else chunk
            # Every line after a newline gains its prefix here; the chunk's
            # first line gets its own below.  Lines are cut out as views.
            rep = data.replace(b"\n", b"\n" + prefix)
            end = rep.rfind(b"\n") + 1
            rest = data[data.rfind(b"\n") + 1 :]
            view = memoryview(rep)
            start = 0
            while start < end:
                room = block.room() - (1 if start == 0 else 0)
                if end - start <= room:
                    cut = end
                else:
                    cut = rep.rfind(b"\n", start, start + max(room, 0)) + 1
                    if cut <= start:
                        block.next_part()
                        continue
                if start == 0:
                    block.write(prefix)
                block.write(view[start:cut])
                start = cut
        block.close()
        if rest:
            self.stmt(TAIL % quote(rest))
        return size

    def _binary(self, f, digest):
        from pipemail.uu import read_full

        size = 0
        block = _Block(self, B64_OPEN % b"new", B64_CLOSE, B64_OPEN % b"add")
        whole = _B64_LINE * 2048  # 92 KB a step: larger steps page-fault on every chunk
        while True:
            chunk = read_full(f.read, whole)
            digest.update(chunk)
            size += len(chunk)
            data = chunk
            while data:
                lines = block.room() // 61
                if lines <= 0:
                    block.next_part()
                    continue
                take = min(len(data), lines * _B64_LINE)
                block.write(_b64(data[:take]))
                data = data[take:]
            if len(chunk) < whole:
                break
        block.close()
        return size


class _Block:
    """A here-document kept open across reads, closed and reopened at part boundaries."""

    def __init__(self, writer, opening, closing, reopening=None):
        self.w = writer
        self.parts = writer.parts
        self.opening = opening
        self.closing = closing
        self.reopening = reopening or opening
        self.open = False
        self.fresh_used = -1  # the part's fill just after the last next_part(): none yet

    def room(self):
        """Bytes of data that fit in the current part, the block opened if need be."""
        room = self.parts.room() - len(self.closing)
        if not self.open:
            room -= len(self.opening)
        return room

    def write(self, data):
        if not self.open:
            self.parts.write(self.opening)
            self.opening = self.reopening
            self.open = True
        self.parts.write(data)

    def close(self):
        if self.open:
            self.parts.write(self.closing)
            self.open = False

    def next_part(self):
        self.close()
        if self.parts.limit is not None and self.parts.used <= self.fresh_used:
            raise UsageError("part size %d is too small for one line of data" % self.parts.limit)
        self.w.next_part()
        self.fresh_used = self.parts.used


def _b64(piece):
    import binascii

    from pipemail.uu import b64_lines

    whole = len(piece) - len(piece) % _B64_LINE
    out = b64_lines(piece[:whole]) if whole else b""
    if whole < len(piece):
        out += binascii.b2a_base64(piece[whole:])
    return out


def listing(members, limit=None):
    """The header comment listing size, mode and name of every member."""
    lines = [b"#\n# Contents (size, mode, name; names escaped as \\n, \\t, \\\\, \\xNN):\n"]
    total = len(lines[0])
    for i, m in enumerate(members):
        size = b"-" if m.is_dir else b"%d" % m.size
        line = b"# %10s %04o %s%s\n" % (size, m.mode, show(m.name).encode(), b"/" if m.is_dir else b"")
        if limit is not None and total + len(line) > limit:
            lines.append(b"# ... and %d more\n" % (len(members) - i))
            break
        lines.append(line)
        total += len(line)
    lines.append(b"#\n")
    return b"".join(lines)


def write_archive(
    members,
    *,
    stream=None,
    prefix=None,
    limit=None,
    check_existing=True,
    timestamps=True,
    force_text=False,
    force_binary=False,
    cut_mark=False,
    warn=None,
    on_member=None,
    advance=None,
):
    """Write ``members`` as one archive to ``stream``, or as parts PREFIX.NN of at most ``limit`` bytes.

    ``advance``, when given, is called with the number of bytes of each read
    of a member (a progress bar).  Returns the part names written (empty for a stream).
    """
    archive_id = os.urandom(8).hex().encode()
    args = {"force": "1" if not check_existing else "", "cut": cut_mark}
    parts = _Parts(
        stream, prefix, limit, archive_id, _Args(args), listing(members, None if limit is None else limit // 4)
    )
    try:
        parts.begin()
        w = Writer(
            parts, timestamps=timestamps, force_text=force_text, force_binary=force_binary, warn=warn, advance=advance
        )
        for m in members:
            if m.is_dir:
                w.directory(m)
                if on_member is not None:
                    on_member(m, "directory")
            else:
                w.file(m, on_member)
        for m in reversed([m for m in members if m.is_dir]):
            when = stamp(m.mtime).encode() if timestamps else b"-"
            w.stmt(DIRMODE % (quote(m.name), quote(show(m.name).encode()), m.mode, when))
        parts.end()
        names = parts.finish()
        if names and warn is not None:
            for name in parts.stale():
                warn("%s is left from an earlier archive with this prefix; remove it before unpacking" % show(name))
        return names
    except BaseException:
        parts.abort()
        raise


class _Args(dict):
    """Prelude substitutions: %(force)s and friends; unknown keys are flags for the header."""

    def __getitem__(self, key):
        return dict.get(self, key, "")
