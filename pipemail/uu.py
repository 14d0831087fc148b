"""uuencode and base64 (``uuencode -m``) encoding and decoding, streaming.

The core works on binary streams in bounded chunks, built on :mod:`binascii`:
classic uuencoding is base64 of many lines at once, translated to the uu
alphabet and framed with one join per chunk.

* :func:`encode_stream` / :func:`encode_bytes` write GNU ``uuencode`` output.
* :func:`decode_inputs` decodes every block in its inputs into files or a
  stream, safely (see ``pyuudecode(1)``); :func:`decode_bytes` is the bytes
  helper.
* :func:`encode`, :func:`decode` and :class:`Error` are a drop-in for the
  stdlib ``uu`` module removed in Python 3.13: ``from pipemail import uu``.
"""

import binascii
import os
import struct

from pipemail.errors import (
    CantCreateError,
    DataError,
    NoInputError,
    NoPermError,
    PipemailError,
    describe_oserror,
    shown,
)
from pipemail.lines import LineReader, strip_eol
from pipemail.sharformat import MAGIC

__all__ = [
    "Error",
    "Header",
    "decode",
    "decode_bytes",
    "decode_inputs",
    "encode",
    "encode_bytes",
    "encode_stream",
    "iter_blocks",
]

# -- alphabets ------------------------------------------------------------------

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# uu value v is the character v + 32; GNU writes zero as a backtick.
_UU_BACKTICK = b"`" + bytes(range(33, 96))
_UU_SPACE = bytes(range(32, 96))
# base64 -> uu; "=" (a short last group) becomes the zero character.
_TO_UU = bytes.maketrans(_B64 + b"=", _UU_BACKTICK + b"`")
_TO_UU_SPACE = bytes.maketrans(_B64 + b"=", _UU_SPACE + b" ")
# uu -> base64 (public: GNU shar's parser in unshar_gnu uses them too): space
# and backtick are both zero.  Every other byte becomes a newline, which
# binascii.a2b_base64 skips: the fast paths detect bad characters by the
# decoded length coming out short.  UU_CHARS is the uu alphabet.
FROM_UU = bytearray(b"\n" * 256)
for _v in range(64):
    FROM_UU[32 + _v] = _B64[_v]
FROM_UU[96] = _B64[0]
FROM_UU = bytes(FROM_UU)
UU_CHARS = bytes(range(32, 97))

_LINE = 45  # bytes per encoded line
_CHUNK_LINES = 2048  # lines decoded per bulk step (about 128 KB)
# Lines encoded per step: about 23 KB in, 32 KB out.  Every buffer stays
# below malloc's trim threshold, which larger steps cross on each chunk,
# paying page faults for all their temporaries.
_ENCODE_LINES = 512
_structs = {}
#: How many splitters are kept: each takes memory in proportion to its lines, and the last
#: step of every chunk (of every --max-size part) asks for a new count of lines: an unbounded
#: cache grew by 10 MB a 400 MB attachment.
SPLITTERS_KEPT = 16


def splitter(n, width):
    """A cached struct that cuts ``n * width`` bytes into ``n`` lines of ``width`` (``.unpack(text)``)."""
    key = (n, width)
    st = _structs.get(key)
    if st is None:
        if len(_structs) >= SPLITTERS_KEPT:
            _structs.clear()  # the common full-size ones come back at once
        st = _structs[key] = struct.Struct("%ds" % width * n)
    return st


# -- encoding -------------------------------------------------------------------


def check_name(name):
    """Refuse a name that cannot stand in a header line."""
    if isinstance(name, str):
        name = os.fsencode(name)
    if b"\n" in name or b"\r" in name:
        raise DataError("name %r contains a line break; it cannot stand in a header" % os.fsdecode(name))
    return name


def header_line(name, mode=0o644, *, base64=False):
    """The ``begin`` line for ``name`` (str or bytes) and ``mode``."""
    name = check_name(name)
    word = b"begin-base64" if base64 else b"begin"
    return b"%s %o %s\n" % (word, mode & 0o777, name)


def read_full(read, n):
    """``n`` bytes from the function ``read`` (fewer only at the end): short reads are retried."""
    data = read(n)
    if data is None:
        data = b""
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _encode_lines(data, table):
    """Whole 45-byte lines of ``data`` (len a multiple of 45) as uu lines."""
    n = len(data) // _LINE
    text = binascii.b2a_base64(data, newline=False).translate(table)
    return b"M" + b"\nM".join(splitter(n, 60).unpack(text)) + b"\n"


def _encode_last(data, table):
    """A final short line (1..44 bytes)."""
    text = binascii.b2a_base64(data, newline=False).translate(table)
    return bytes((32 + len(data),)) + text + b"\n"


def b64_lines(data):
    """Whole 45-byte lines of ``data`` (len a multiple of 45) as base64 lines of 60 characters."""
    n = len(data) // _LINE
    text = binascii.b2a_base64(data, newline=False)
    return b"\n".join(splitter(n, 60).unpack(text)) + b"\n"


def encode_body(src, dst, *, base64=False, table=_TO_UU, chunk_lines=_ENCODE_LINES):
    """Write the encoded lines of everything in ``src`` (no header, no trailer).

    Returns the number of input bytes.
    """
    read, write = src.read, dst.write
    size = _LINE * chunk_lines
    total = 0
    while True:
        data = read_full(read, size)
        total += len(data)
        whole = len(data) - len(data) % _LINE
        if whole:
            write(b64_lines(data[:whole]) if base64 else _encode_lines(data[:whole], table))
        if whole < len(data):
            rest = data[whole:]
            if base64:
                write(binascii.b2a_base64(rest, newline=True))
            else:
                write(_encode_last(rest, table))
        if len(data) < size:
            return total


def encode_stream(src, dst, name, mode=0o644, *, base64=False):
    """Encode binary stream ``src`` into ``dst`` exactly as GNU ``uuencode`` does.

    ``name`` goes into the header (a line break in it is refused, 65), ``mode``
    is masked to its permission bits.  Returns the number of bytes encoded.
    """
    head = header_line(name, mode, base64=base64)
    dst.write(head)
    total = encode_body(src, dst, base64=base64)
    dst.write(b"====\n" if base64 else b"`\nend\n")
    return total


def encode_bytes(data, name, mode=0o644, *, base64=False):
    """``data`` encoded as one block, header and trailer included."""
    import io

    out = io.BytesIO()
    encode_stream(io.BytesIO(data), out, name, mode, base64=base64)
    return out.getvalue()


# -- reading lines ------------------------------------------------------------------


class _Reader(LineReader):
    """Lines of one input, remembering where a pyshar archive was passed over."""

    def __init__(self, stream, label):
        super().__init__(stream, label)
        self.pyshar_line = 0  # the first line of a pyshar archive met while looking for blocks


# -- headers --------------------------------------------------------------------


class Header:
    """A ``begin`` line: format ("uu" or "base64"), mode, name (bytes), line number."""

    __slots__ = ("format", "mode", "name", "line")

    def __init__(self, format, mode, name, line):
        self.format = format
        self.mode = mode
        self.name = name
        self.line = line

    def __repr__(self):
        return "Header(%r, 0o%o, %r, line %d)" % (self.format, self.mode, self.name, self.line)


def parse_header(line):
    """A :class:`Header` (line 0) if ``line`` is a begin line, else None."""
    if not line.startswith(b"begin"):
        return None
    line = strip_eol(line)
    word, sep, rest = line.partition(b" ")
    if word == b"begin":
        fmt = "uu"
    elif word == b"begin-base64":
        fmt = "base64"
    else:
        return None
    mode, sep, name = rest.partition(b" ")
    if not sep or not name or not 1 <= len(mode) <= 6 or mode.strip(b"01234567"):
        return None
    return Header(fmt, int(mode, 8), name, 0)


# The header names that mean standard output (GNU's and busybox's uudecode).
STDOUT_NAMES = (b"-", b"/dev/stdout")


def _find_header(rd):
    """The next block's header, or None; the pieces of pyshar archives are passed over (pyunshar's)."""
    in_pyshar = False
    while True:
        line = rd.readline()
        if not line:
            return None
        if rd.overlong:
            continue
        if line.startswith(MAGIC):  # a pyshar archive: passed over
            in_pyshar = True
            rd.pyshar_line = rd.pyshar_line or rd.lineno
        elif in_pyshar:
            in_pyshar = line.rstrip(b"\r\n") != b"exit 0"
        elif line.startswith(b"begin"):
            header = parse_header(line)
            if header is not None:
                header.line = rd.lineno
                return header


# -- decoding block bodies --------------------------------------------------------


class TruncatedError(DataError):
    """The input ended inside a block."""


def _error(rd, message, line=None, cls=DataError):
    return cls("%s:%d: %s" % (rd.label, rd.lineno if line is None else line, message))


def _show(ch):
    return repr(bytes((ch,)))[1:]


def _decode_uu_body(rd, header, write, on_garbage=None):
    """Decode uuencoded lines up to ``end``.

    A line may carry one character after its data: the per-line checksum of
    old BSD encoders, which GNU, busybox and Python's ``uu`` skip unchecked;
    so does this.  More than that is an error, unless ``on_garbage`` is given
    (the stdlib API): then, as Python 3.12's ``uu`` did, anything after the
    characters the length needs is reported through it and ignored.
    """
    shape = None  # (length with the line end, length without) of a standard "M" line, once seen
    pause = 0  # lines to go before the fast path is tried again
    zero_seen = False
    backticks = False  # the encoder writes zero as "`" (GNU, busybox): no spaces to lose
    while True:
        if shape and not pause:
            done, saw = _uu_fast(rd, shape, write)
            backticks = backticks or saw
            if done < 0:
                pause = 64
            elif done:
                continue
        elif pause:
            pause -= 1
        raw = rd.readline()
        if not raw:
            raise _error(
                rd,
                "truncated: no 'end' line for the block that begins on line %d" % header.line,
                cls=TruncatedError,
            )
        if rd.overlong:
            raise _error(rd, "line too long for uuencoded data")
        line = strip_eol(raw).rstrip(b" ")
        if line == b"end":
            return
        if zero_seen or not line:
            # The zero-length line (a backtick, or a space stripped to
            # nothing by a mailer) must be followed by "end".
            if not line:
                nxt = rd.readline()
                if strip_eol(nxt).rstrip(b" ") == b"end":
                    return
                if nxt:
                    rd.unread(nxt)
                raise _error(rd, "blank line inside the encoded data")
            raise _error(rd, "expected 'end' after the zero-length line")
        if line.startswith(b"begin") and parse_header(line) is not None:
            rd.unread(raw)
            raise _error(
                rd,
                "truncated: a new 'begin' before the 'end' of the block that begins on line %d" % header.line,
                rd.lineno + 1,
            )
        first = line[0]
        if not 32 <= first <= 96:
            raise _error(rd, "invalid length character %s" % _show(first))
        n = (first - 32) & 63
        if n == 0:
            zero_seen = True
            continue
        need = (n + 2) // 3 * 4
        data = line[1:]
        if on_garbage is not None:
            if data[(4 * n + 2) // 3 :].strip(b" `"):  # binascii.a2b_uu's rule
                on_garbage("Trailing garbage")
            data = data[:need]
        elif len(data) > need:
            extra = data[need:]
            if extra.strip(b" `") and (len(extra) > 1 or extra.translate(None, UU_CHARS)):
                raise _error(rd, "the length character %s says %d bytes but the line holds more" % (_show(first), n))
            data = data[:need]
        bad = data.translate(None, UU_CHARS)
        if bad:
            raise _error(rd, "invalid character %s in uuencoded data" % _show(bad[0]))
        if b"`" in data:
            backticks = True
        if len(data) < need:
            # Trailing spaces (zero values) stripped by a mailer.  An encoder
            # that writes zero as a backtick writes no spaces to strip, so in
            # its blocks a short line is damage.
            if backticks:
                raise _error(rd, "the length character %s says %d bytes but the line holds fewer" % (_show(first), n))
            data += b" " * (need - len(data))
        write(binascii.a2b_base64(data.translate(FROM_UU))[:n])
        if (
            n == _LINE
            and len(raw) - len(line) in (1, 2)
            and len(line) in ((61,) if on_garbage else (61, 62))
            and raw.endswith(b"\n")
        ):
            shape = len(raw), len(line)


def _uu_fast(rd, shape, write):
    """Decode a run of standard 45-byte lines in bulk.

    ``shape`` is the length of such a line with its line end (LF or CRLF) and
    without: 61, or 62 with a checksum character.  Returns the number of lines
    decoded (or -1 when the run held something the slow path must look at,
    line by line) and whether a backtick was seen.
    """
    width, body = shape
    rd.fill(width * _CHUNK_LINES)
    buf, pos = rd.buf, rd.pos
    k = min((len(buf) - pos) // width, _CHUNK_LINES)
    if k < 2:
        return 0, False
    end = pos + k * width
    good = min(
        k - len(buf[pos:end:width].lstrip(b"M")),
        k - len(buf[pos + width - 1 : end : width].lstrip(b"\n")),
    )
    if width - body == 2:
        good = min(good, k - len(buf[pos + body : end : width].lstrip(b"\r")))
    if good < 2:
        return 0, False
    end = pos + good * width
    if body == 62 and buf[pos + 61 : end : width].translate(None, UU_CHARS):
        return -1, False  # a checksum column outside the alphabet: the slow path says where
    # Translate just these lines, blank the length (and checksum) column, decode.
    text = buf[pos:end].translate(FROM_UU)
    text[0::width] = b"\n" * good
    if body == 62:
        text[61::width] = b"\n" * good
    try:
        data = binascii.a2b_base64(text)
    except binascii.Error:
        data = b""
    if len(data) != _LINE * good:
        return -1, False
    write(data)
    rd.pos = end
    rd.lineno += good
    return good, buf.find(b"`", pos, end) >= 0


def _decode_b64_body(rd, header, write):
    width, crlf = 0, False
    pause = 0
    pending = b""
    padded = False
    while True:
        if width and not pause and not pending and not padded:
            done = _b64_fast(rd, width, crlf, write)
            if done < 0:
                pause = 64
            elif done:
                continue
        elif pause:
            pause -= 1
        raw = rd.readline()
        if not raw:
            raise _error(
                rd,
                "truncated: no '====' line for the block that begins on line %d" % header.line,
                cls=TruncatedError,
            )
        if rd.overlong:
            raise _error(rd, "line too long for base64 data")
        line = strip_eol(raw).rstrip(b" \t")
        if line == b"====":
            if pending:
                raise _error(rd, "truncated base64 data before '===='")
            return
        if not line:
            raise _error(rd, "blank line inside the encoded data")
        if line.startswith(b"begin") and parse_header(line) is not None:
            rd.unread(raw)
            raise _error(
                rd,
                "truncated: a new 'begin' before the '====' of the block that begins on line %d" % header.line,
                rd.lineno + 1,
            )
        if padded:
            raise _error(rd, "base64 data after the final padding")
        bad = line.translate(None, _B64 + b"=")
        if bad:
            raise _error(rd, "invalid character %s in base64 data" % _show(bad[0]))
        body = line.rstrip(b"=")
        if b"=" in body or len(line) - len(body) > 2:
            raise _error(rd, "misplaced '=' in base64 data")
        pending += line
        if len(body) != len(line):
            padded = True
            if len(pending) % 4:
                raise _error(rd, "bad base64 padding")
        whole = len(pending) - len(pending) % 4
        if whole:
            try:
                write(binascii.a2b_base64(pending[:whole], strict_mode=True))
            except binascii.Error:
                raise _error(rd, "bad base64 padding") from None
            pending = pending[whole:]
        eol = len(raw) - len(line)
        if not padded and len(line) % 4 == 0 and raw.endswith(b"\n") and eol <= 2:
            width, crlf = len(raw), eol == 2


def _b64_fast(rd, width, crlf, write):
    rd.fill(width * _CHUNK_LINES)
    buf, pos = rd.buf, rd.pos
    k = min((len(buf) - pos) // width, _CHUNK_LINES)
    if k < 2:
        return 0
    end = pos + k * width
    good = k - len(buf[pos + width - 1 : end : width].lstrip(b"\n"))
    if crlf:
        good = min(good, k - len(buf[pos + width - 2 : end : width].lstrip(b"\r")))
    if good < 2:
        return 0
    end = pos + good * width
    chars = width - 2 if crlf else width - 1
    # a2b_base64 skips what is not base64 (line ends, and bad characters,
    # which then show as a short result and send the lines to the slow path).
    try:
        data = binascii.a2b_base64(memoryview(buf)[pos:end])
    except binascii.Error:
        data = b""
    if len(data) != chars // 4 * 3 * good:
        return -1
    write(data)
    rd.pos = end
    rd.lineno += good
    return good


def decode_body(rd, header, write, on_garbage=None):
    """Decode the block that ``header`` began, up to its end line, into ``write``.

    ``on_garbage``: see :func:`_decode_uu_body` (the stdlib API's leniency).
    """
    if header.format == "base64":
        _decode_b64_body(rd, header, write)
    else:
        _decode_uu_body(rd, header, write, on_garbage)


def iter_blocks(stream, label="input"):
    """Yield ``(header, reader)`` for each block in ``stream``.

    The caller decodes each with ``decode_body(reader, header, write)`` before
    asking for the next; a block it does not decode is skipped as text.
    """
    rd = _Reader(stream, label)
    while True:
        header = _find_header(rd)
        if header is None:
            return
        yield header, rd


def decode_bytes(data):
    """The decoded contents of the first block in ``data``."""
    import io

    out = []
    for header, rd in iter_blocks(io.BytesIO(data), "data"):
        decode_body(rd, header, out.append)
        return b"".join(out)
    raise DataError("data:%d: no 'begin' line found" % data.count(b"\n"))


# -- decoding files -----------------------------------------------------------------


def _discard(data):
    pass


def _skip_body(rd, header):
    """Pass over a refused block (its damage, if any, is not reported)."""
    try:
        decode_body(rd, header, _discard)
    except DataError:
        pass


def decode_inputs(
    inputs,
    output=None,
    *,
    force=False,
    keep_paths=False,
    directory=".",
    ignore_chmod_errors=False,
    stdout=None,
    on_error=None,
    advance=None,
):
    """Decode every block of every input; return the errors, in order.

    ``inputs``: paths, or ``(label, binary stream)`` pairs.
    ``output``: None to write each block to (the safe form of) its header's
    name below ``directory``; a path the user named, which receives all blocks
    one after another and is replaced once, at the end; or a
    :class:`pipemail.safefile.Output` such as stdout.
    ``stdout``: the :class:`~pipemail.safefile.Output` that receives the blocks
    whose header names ``-`` or ``/dev/stdout`` (as GNU and busybox uudecode
    do), when ``output`` is None; without it such blocks are refused.
    Header names lose leading and trailing white space, as GNU's do.
    Modes follow :func:`pipemail.safefile.archive_mode`.
    Each block stands alone: a bad one is reported through ``on_error`` (and
    returned) and does not undo the blocks before it.
    ``advance``, when given, is called with the number of bytes of each read
    (a progress bar).
    """
    from pipemail.progress import reader
    from pipemail.safefile import Output, archive_mode, current_umask

    errors = []

    def fail(exc):
        errors.append(exc)
        if on_error is not None:
            on_error(exc)

    umask = current_umask()
    shared = None
    shared_mode = None
    base_fd = None
    try:
        if isinstance(output, Output):
            shared = output
        elif output is not None:
            shared = Output.to_path(output)
        else:
            try:
                base_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise CantCreateError("cannot use directory %s: %s" % (directory, describe_oserror(exc))) from None
    except PipemailError as exc:
        fail(exc)
        return errors
    try:
        for item in inputs:
            if isinstance(item, tuple):
                label, stream = item
                opened = None
            else:
                label = os.fsdecode(item)
                try:
                    stream = opened = open(item, "rb")
                except OSError as exc:
                    fail(NoInputError("cannot open %s: %s" % (label, describe_oserror(exc))))
                    continue
            rd = _Reader(reader(stream, advance), label)
            try:
                found = False
                while True:
                    header = _find_header(rd)
                    if header is None:
                        break
                    found = True
                    try:
                        to_stdout = shared is None and header.name.strip() in STDOUT_NAMES
                        if to_stdout and stdout is None:
                            _skip_body(rd, header)
                            raise NoPermError(
                                "%s:%d: refusing %r: it means standard output, which is not available"
                                % (label, header.line, os.fsdecode(header.name.strip()))
                            )
                        stream = shared if shared is not None else stdout if to_stdout else None
                        if stream is not None:
                            stream.checkpoint()
                            try:
                                decode_body(rd, header, stream.write)
                            except DataError:
                                stream.rollback()
                                raise
                            if shared is not None and shared_mode is None:
                                shared_mode = archive_mode(header.mode, umask)
                        else:
                            _decode_to_name(rd, header, base_fd, force, keep_paths, umask, ignore_chmod_errors)
                    except (DataError, NoPermError, CantCreateError) as exc:
                        fail(exc)
                if not found and rd.pyshar_line:
                    fail(
                        DataError(
                            "%s:%d: a pyshar archive, no uuencoded file: pyunshar unpacks it" % (label, rd.pyshar_line)
                        )
                    )
                elif not found:
                    fail(DataError("%s:%d: no 'begin' line found" % (label, rd.lineno)))
            except OSError as exc:
                fail(NoInputError("cannot read %s: %s" % (label, describe_oserror(exc))))
            finally:
                if opened is not None:
                    opened.close()
        if shared is not None:
            if shared_mode is None and shared.replaces:
                shared.abort()
            else:
                shared.commit(shared_mode, ignore_chmod_errors=ignore_chmod_errors)
        if stdout is not None:
            stdout.commit()
    except BaseException:
        if shared is not None:
            shared.abort()
        if stdout is not None:
            stdout.abort()
        raise
    finally:
        if base_fd is not None:
            os.close(base_fd)
    return errors


def _decode_to_name(rd, header, base_fd, force, keep_paths, umask, ignore_chmod_errors):
    """Decode one block into the file its header names, or refuse it (and skip it)."""
    from pipemail.safefile import Output, archive_mode, open_dirs, safe_parts

    where = "%s:%d: " % (rd.label, header.line)
    try:
        parts = safe_parts(header.name.strip(), keep_paths)
        label = shown("/".join(parts))
        dir_fd = open_dirs(base_fd, parts[:-1], umask)
        out = Output.in_directory(dir_fd, parts[-1], label, overwrite=force)
    except (NoPermError, CantCreateError) as exc:
        _skip_body(rd, header)
        raise type(exc)(where + str(exc)) from None
    try:
        with out:
            decode_body(rd, header, out.write)
            out.commit(archive_mode(header.mode, umask), ignore_chmod_errors=ignore_chmod_errors)
    except CantCreateError as exc:
        raise CantCreateError(where + str(exc)) from None
    return label


# -- the stdlib uu module's API (removed in Python 3.13, PEP 594) ---------------------


class Error(DataError):
    """What the stdlib ``uu`` module raised; also a pipemail DataError (65)."""


def _open_compat(f, mode, std):
    if f == "-":
        return std, None
    if isinstance(f, str | os.PathLike):
        fp = open(f, mode)
        return fp, fp
    return f, None


def encode(in_file, out_file, name=None, mode=None, *, backtick=False):
    """Uuencode file: the stdlib ``uu.encode``, same output and arguments.

    ``in_file`` and ``out_file`` are paths, binary file objects or ``-``.
    """
    import sys

    opened = []
    try:
        if in_file == "-":
            in_file = sys.stdin.buffer
        elif isinstance(in_file, str | os.PathLike):
            if name is None:
                name = os.path.basename(os.fsdecode(in_file))
            if mode is None:
                mode = os.stat(in_file).st_mode
            in_file = open(in_file, "rb")
            opened.append(in_file)
        out_file, fp = _open_compat(out_file, "wb", sys.stdout.buffer if out_file == "-" else None)
        if fp is not None:
            opened.append(fp)
        if name is None:
            name = "-"
        if mode is None:
            mode = 0o666
        name = name.replace("\n", "\\n").replace("\r", "\\r")
        out_file.write(("begin %o %s\n" % ((mode & 0o777), name)).encode("ascii"))
        encode_body(in_file, out_file, table=_TO_UU if backtick else _TO_UU_SPACE)
        out_file.write(b"`\nend\n" if backtick else b" \nend\n")
    finally:
        for f in opened:
            f.close()


def _fail_as_open_would(path):
    """Raise the OSError that 3.12's ``open(path, "wb")`` raises for a missing directory, a file
    on the way or a directory at ``path`` (callers catch OSError), before anything is written."""
    import errno
    import stat

    name = os.fspath(path)
    parent = os.path.dirname(name) or os.curdir
    try:
        st = os.stat(parent)
        code = None if stat.S_ISDIR(st.st_mode) else errno.ENOTDIR
    except FileNotFoundError:
        code = errno.ENOENT
    except NotADirectoryError:
        code = errno.ENOTDIR
    except OSError:
        return  # said by Output as it is
    if code is None and os.path.isdir(name):
        code = errno.EISDIR
    if code is not None:
        raise OSError(code, os.strerror(code), name)


def decode(in_file, out_file=None, mode=None, quiet=False):
    """Decode the first uuencoded (or base64) block: the stdlib ``uu.decode``.

    As Python 3.12's: a header naming ``-`` (or ``out_file="-"``) writes to
    ``sys.stdout``; trailing garbage on a line is reported on ``sys.stderr``
    ("Warning: Trailing garbage") unless ``quiet``, and ignored; without
    ``out_file`` the header's name is used, in a directory that must exist
    (FileNotFoundError; an ``out_file`` path that cannot be opened raises the OSError
    of 3.12's open()), never over an existing file, never an absolute name
    or ``..`` (:class:`Error`).  Safer than 3.12: a symlink is never followed,
    the mode's setuid, setgid and sticky bits are dropped, and a file appears
    only once its block decoded completely.
    """
    import errno
    import sys

    from pipemail.safefile import Output, open_dirs, safe_parts

    def garbage(message):
        if not quiet:
            sys.stderr.write("Warning: %s\n" % message)

    in_file, opened = _open_compat(in_file, "rb", sys.stdin.buffer if in_file == "-" else None)
    try:
        rd = _Reader(in_file, getattr(in_file, "name", "input"))
        header = _find_header(rd)
        if header is None:
            raise Error("No valid begin line found in input file")
        if mode is None:
            mode = header.mode
        if out_file is None:
            name = header.name.rstrip(b" \t\r\n\f")
            shown_name = os.fsdecode(name)
            if os.path.lexists(name):
                raise Error("Cannot overwrite existing file: %s" % shown_name)
            if name == b"-":
                out_file = "-"
            else:
                try:
                    parts = safe_parts(name, keep_paths=True)
                except NoPermError:
                    raise Error("Refusing to write to %s due to directory traversal" % shown_name) from None
                base = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    try:
                        dir_fd = open_dirs(base, parts[:-1], 0o022, create=False)
                    except FileNotFoundError:
                        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown_name) from None
                    try:
                        out = Output.in_directory(dir_fd, parts[-1], shown_name)
                    except CantCreateError:
                        raise Error("Cannot overwrite existing file: %s" % shown_name) from None
                finally:
                    os.close(base)
        if out_file == "-":
            out = Output.to_stream(sys.stdout.buffer)
        elif out_file is None:
            pass  # the header's name, opened above
        elif isinstance(out_file, str | os.PathLike):
            _fail_as_open_would(out_file)
            out = Output.to_path(out_file)
        else:
            out = Output.to_stream(out_file)
        with out:
            decode_body(rd, header, out.write, garbage)
            out.commit(mode & 0o777)
    except TruncatedError:
        raise Error("Truncated input file") from None
    except Error:
        raise
    except PipemailError as exc:
        raise Error(str(exc)) from None
    finally:
        if opened is not None:
            opened.close()
