"""Lines of binary data: reading them in bounded memory, and their line ends.

Shared by the parsers: the uu codec (:mod:`pipemail.uu`), pyunshar's archive
finder (:mod:`pipemail.unshar`) and GNU shar's parser
(:mod:`pipemail.unshar_gnu`); and, for the line-end converters :func:`to_crlf`
and :func:`to_lf`, by composing (:mod:`pipemail.message`), signing and
encrypting (:mod:`pipemail.secure`), verifying and decrypting
(:mod:`pipemail.unwrap`).
"""

MAX_LINE = 4096  # longer lines are returned cut short (and flagged): never part of an encoded block


class Buffer:
    """A growing window on a binary stream: ``buf[pos:]`` is what is not yet taken."""

    _FILL = 1 << 16

    def __init__(self, stream):
        self._read = stream.read
        self.buf = bytearray()
        self.pos = 0
        self.eof = False
        self.consumed = 0  # bytes dropped from the front of buf: buf[i] is at offset consumed + i

    def fill(self, want):
        """Try to have ``want`` bytes buffered from ``pos``; False if no more came."""
        if len(self.buf) - self.pos >= want:
            return True
        if self.eof:
            return False
        if self.pos:
            del self.buf[: self.pos]
            self.consumed += self.pos
            self.pos = 0
        start = len(self.buf)
        while len(self.buf) < want:
            data = self._read(max(self._FILL, want - len(self.buf)))
            if not data:
                self.eof = True
                break
            self.buf += data
        return len(self.buf) > start

    def skip_line(self):
        """Drop the rest of the current line, its newline included (the end of input ends it too)."""
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                self.pos = end + 1
                return
            self.pos = len(self.buf)
            if not self.fill(self._FILL):
                return


class LineReader(Buffer):
    """Lines of a binary stream, with bulk access for the decoders' fast paths.

    ``lineno`` is the number of the last line returned.  Memory stays bounded:
    a line longer than ``MAX_LINE`` is returned cut short, with ``overlong``
    set, and the rest of it is skipped.
    """

    def __init__(self, stream, label):
        super().__init__(stream)
        self.label = label
        self.lineno = 0
        self.overlong = False
        self._back = None

    def readline(self):
        """The next line, line end included; b"" at the end of input."""
        if self._back is not None:
            line, self._back = self._back, None
            self.lineno += 1
            return line
        self.overlong = False
        while True:
            end = self.buf.find(b"\n", self.pos, self.pos + MAX_LINE)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                break
            if len(self.buf) - self.pos >= MAX_LINE:
                line = bytes(self.buf[self.pos : self.pos + MAX_LINE])
                self.overlong = True
                self.skip_line()
                break
            if not self.fill(len(self.buf) - self.pos + self._FILL):
                line = bytes(self.buf[self.pos :])
                self.pos = len(self.buf)
                break
        if line:
            self.lineno += 1
        return line

    def unread(self, line):
        """Give back the line just read; the next readline returns it again."""
        self._back = line
        self.lineno -= 1


def line_over(chunk, run, limit):
    """Whether ``chunk`` (after ``run`` bytes of an open line) has a line over ``limit``.

    Jumps from newline to the last newline within ``limit`` bytes, so it
    takes one step per ``limit`` bytes, not one per line.
    """
    pos, n, rfind = 0, len(chunk), chunk.rfind
    first = chunk.find(b"\n")
    if first < 0:
        return run + n > limit
    if run + first > limit:
        return True
    pos = first + 1
    while n - pos > limit:
        j = rfind(b"\n", pos, pos + limit + 1)
        if j < 0:
            return True
        pos = j + 1
    return False


def strip_eol(line):
    """``line`` without its LF or CRLF."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def to_lf(chunks):
    """``chunks`` with CRLF line breaks made LF (across chunk cuts; a lone CR kept)."""
    held = b""
    for chunk in chunks:
        data = held + chunk if held else chunk
        held = b""
        if data.endswith(b"\r"):
            data, held = data[:-1], b"\r"
        if data:
            yield data.replace(b"\r\n", b"\n")
    if held:
        yield held


def to_crlf(chunks):
    """``chunks`` with every line break CRLF (LF or CRLF in, across chunk cuts; a lone CR kept).

    The canonical form of RFC 5751/3156 that a signature covers and that is encrypted: the
    sender (:mod:`pipemail.secure`) and the reader (:mod:`pipemail.unwrap`) make it alike.
    """
    for data in to_lf(chunks):
        yield data.replace(b"\n", b"\r\n")
