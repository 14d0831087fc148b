"""Reading GNU sharutils 4.15.2 shell archives without running them.

GNU ``shar`` writes a shell script: a fixed preamble (md5sum, gettext, echo
and touch detection, a lock directory), then one section per file built from a
handful of statement templates, then a fixed ending.  This module recognises
that text line by line, as exactly the templates GNU prints (quoting
included), and tells a sink (see :mod:`pipemail.unshar_api`) what to create.
Anything else, anywhere, is an :class:`ArchiveError` naming the line: a
command slipped in between two files is never skipped.

Supported: the default options and ``-L``/``-l`` parts (``-o``), ``-m``, ``-x``,
``-Q``, ``-B``, ``-T``, ``-V``, ``-D``, ``-P``, ``-F``, ``-d DELIM`` (a word of
letters, digits and ``_``), ``--no-character-count``, ``--no-i18n``, and the
header options ``-q``, ``-c``, ``-a``, ``-n``, ``-s``, ``-f``.
Refused: compressed archives (``-C``, ``-z``, ``-p``) and ``-X``.

Notes on GNU's output that the parser relies on or works around:

* Names are taken from the ``# ============= NAME ==============`` heading and
  every statement that repeats one (``'quoted'`` with ``'\\''`` for a quote,
  raw in echo messages and, in split archives, unquoted after ``>>``) must
  agree with it.  A name with a newline breaks GNU's heading (its second line
  would run as a command): such archives are refused.
* Timestamps (``set 20 26 11 27 03 09 53 'name'``) are the creating machine's
  local time with no zone; they are read as UTC.  The ``# Made on`` line shows
  the zone's abbreviation only, which cannot be turned into an offset for the
  file's own date (daylight saving), so it is not used.
* ``-V`` archives carry no mode (GNU's ``begin 600`` line is fixed text): mode
  is left to the sink.
* ``-T`` writes a file without a final newline as text plus one newline, so
  ``sh`` restores one byte too many and its own size and md5 checks fail.  When
  the archive states the size and the text is exactly one final newline
  longer, that newline is dropped: the file comes out as it was archived.
  (GNU ``-T`` also cuts lines longer than 8191 bytes; those come out as ``sh``
  restores them, with the extra newlines.)
* GNU pastes names raw into double-quoted echo messages, so a name such as
  ``a$(touch X)b`` runs a command when ``sh`` unpacks it.  Those lines still
  match their template for that name and, never being run, are accepted: the
  name is the file's real name, and the sink judges it.
* Split archives: only part 1 has a ``# Made on`` line, so parts are grouped by
  ``lock_dir=_sh<PID>`` alone; a single archive's id adds its ``# Made on``.
* Lines must end in LF exactly as GNU writes them; an archive turned to CRLF
  by a mailer is refused.
"""

import binascii
import calendar
import datetime
import io
import re

from pipemail.lines import Buffer
from pipemail.unshar_api import ArchiveError, PartInfo
from pipemail.uu import FROM_UU, UU_CHARS

__all__ = ["GnuParser", "detect", "part_info"]

_FILL = 1 << 16
_MAX_STATEMENT = 1 << 16  # longest statement (or heading) line accepted

# -- the fixed text -------------------------------------------------------------------

_MD5_BLOCK = (
    b"MD5SUM=${MD5SUM-md5sum}",
    b"f=`${MD5SUM} --version | egrep '^md5sum .*(core|text)utils'`",
    b'test -n "${f}" && md5check=true || md5check=false',
    b"${md5check} || \\",
    b"  echo 'Note: not verifying md5sums.  Consider installing GNU coreutils.'",
)
_KEEP_BLOCK = (
    b'if test "X$1" = "X-c"',
    b"then keep_file=''",
    b"else keep_file=true",
    b"fi",
)
_ECHO_BLOCK = (b"echo=echo",)
_GETTEXT_BLOCK = (
    b'save_IFS="${IFS}"',
    b'IFS="${IFS}:"',
    b"gettext_dir=",
    b"locale_dir=",
    b"set_echo=false",
    b"",
    b"for dir in $PATH",
    b"do",
    b"  if test -f $dir/gettext \\",
    b"     && ($dir/gettext --version >/dev/null 2>&1)",
    b"  then",
    b"    case `$dir/gettext --version 2>&1 | sed 1q` in",
    b"      *GNU*) gettext_dir=$dir",
    b"      set_echo=true",
    b"      break ;;",
    b"    esac",
    b"  fi",
    b"done",
    b"",
    b"if ${set_echo}",
    b"then",
    b"  set_echo=false",
    b"  for dir in $PATH",
    b"  do",
    b"    if test -f $dir/shar \\",
    b"       && ($dir/shar --print-text-domain-dir >/dev/null 2>&1)",
    b"    then",
    b"      locale_dir=`$dir/shar --print-text-domain-dir`",
    b"      set_echo=true",
    b"      break",
    b"    fi",
    b"  done",
    b"",
    b"  if ${set_echo}",
    b"  then",
    b"    TEXTDOMAINDIR=$locale_dir",
    b"    export TEXTDOMAINDIR",
    b"    TEXTDOMAIN=sharutils",
    b"    export TEXTDOMAIN",
    b'    echo="$gettext_dir/gettext -s"',
    b"  fi",
    b"fi",
    b'IFS="$save_IFS"',
)
_VANILLA_ECHO_BLOCK = (
    b"shar_tty=",
    b"shar_n=",
    b"shar_c='\\n'",
)
_ECHO_TEST_BLOCK = (
    b'if (echo "testing\\c"; echo 1,2,3) | grep c >/dev/null',
    b"then if (echo -n test; echo 1,2,3) | grep n >/dev/null",
    b"     then shar_n= shar_c='",
    b"'",
    b"     else shar_n=-n shar_c= ; fi",
    b"else shar_n= shar_c='\\c' ; fi",
)
_TOUCH_BLOCK = (
    b"f=shar-touch.$$",
    b"st1=200112312359.59",
    b"st2=123123592001.59",
    b"st2tr=123123592001.5 # old SysV 14-char limit",
    b"st3=1231235901",
    b"",
    b"if   touch -am -t ${st1} ${f} >/dev/null 2>&1 && \\",
    b"     test ! -f ${st1} && test -f ${f}; then",
    b"  shar_touch='touch -am -t $1$2$3$4$5$6.$7 \"$8\"'",
    b"",
    b"elif touch -am ${st2} ${f} >/dev/null 2>&1 && \\",
    b"     test ! -f ${st2} && test ! -f ${st2tr} && test -f ${f}; then",
    b"  shar_touch='touch -am $3$4$5$6$1$2.$7 \"$8\"'",
    b"",
    b"elif touch -am ${st3} ${f} >/dev/null 2>&1 && \\",
    b"     test ! -f ${st3} && test -f ${f}; then",
    b"  shar_touch='touch -am $3$4$5$6$2 \"$8\"'",
    b"",
    b"else",
    b"  shar_touch=:",
    b"  echo",
    b"  ${echo} 'WARNING: not restoring timestamps.  Consider getting and",
    b"installing GNU '\\''touch'\\'', distributed in GNU coreutils...'",
    b"  echo",
    b"fi",
    b"rm -f ${st1} ${st2} ${st2tr} ${st3} ${f}",
    b"#",
)
_LOCK_CHECK_BLOCK = (
    b"if test ! -d ${lock_dir} ; then :",
    b'else ${echo} "lock directory ${lock_dir} exists"',
    b"     exit 1",
    b"fi",
)
_LOCK_MKDIR_BLOCK = (
    b"if mkdir ${lock_dir}",
    b'then ${echo} "x - created lock directory ${lock_dir}."',
    b'else ${echo} "x - failed to create lock directory ${lock_dir}."',
    b"     exit 1",
    b"fi",
)
_LOCK_MKDIR_VANILLA_BLOCK = (
    b"if mkdir ${lock_dir} ; then :",
    b'else ${echo} "failed to create ${lock_dir} lock directory"',
    b"     exit 1",
    b"fi",
)


def _seq_block(number):
    return (
        b"test -r ${lock_dir}/seq || {",
        b"  ${echo} 'Please unpack part 1 first!' >&2",
        b"  exit 1",
        b"}",
        b"shar_sequence=`cat ${lock_dir}/seq`",
        b'test "$shar_sequence" = %d || {' % number,
        b'  ${echo} "Please unpack part ${shar_sequence} next!" >&2',
        b"  exit 1",
        b"}",
    )


# The preamble's blocks, in the order GNU writes them; each appears at most once.
_PREAMBLE = (
    ("md5", (_MD5_BLOCK,)),
    ("keep", (_KEEP_BLOCK,)),
    ("echo", (_ECHO_BLOCK,)),
    ("gettext", (_GETTEXT_BLOCK, _VANILLA_ECHO_BLOCK)),
    ("echotest", (_ECHO_TEST_BLOCK,)),
    ("touch", (_TOUCH_BLOCK,)),
    ("lockcheck", (_LOCK_CHECK_BLOCK,)),
    ("lockmkdir", (_LOCK_MKDIR_BLOCK, _LOCK_MKDIR_VANILLA_BLOCK)),
)

_LAST_BLOCK = (
    b"if rm -fr ${lock_dir}",
    b'then ${echo} "x - removed lock directory ${lock_dir}."',
    b'else ${echo} "x - failed to remove lock directory ${lock_dir}."',
    b"     exit 1",
    b"fi",
)

_CUT_LINE = b"---- Cut Here and feed the following to sh ----"
# shar -a: lines before '#!/bin/sh' that sh would run as commands; only inert text is accepted.
_NET_HEADER_RE = re.compile(rb"(?:Submitted-by|Archive-name): [A-Za-z0-9@%._+/=:, -]*\Z")
_X = 0x58  # the prefix character sed strips

_LOCK_RE = re.compile(rb"lock_dir=(_sh[0-9]+)\Z")
# "# This is part 1 of a multipart archive." (-L, first part), "# This is part 02 of
# NAME  archive (produced by ...)." (-l) and "# This is 'p.02' (part 2 of NAME)." (-L).
_PART1_RE = re.compile(rb"# This is part ([0-9]+) of (?:a multipart archive\.|(.*)  archive \(produced by .*)\Z", re.S)
_PARTN_RE = re.compile(rb"# This is '.*' \(part ([0-9]+) of (.*)\)\.\Z", re.S)
_CONTINUED_RE = re.compile(rb"# File '(.*)' is being continued\.\.\.\Z", re.S)
_GNU_RE = re.compile(rb"# This is (?:(.*), )?a shell archive \(produced by GNU sharutils [0-9.]+\)\.\Z", re.S)
_GNU_MARK = b"(produced by GNU sharutils "
_SED_RE = re.compile(rb"  sed 's/\^X//' << '([A-Za-z0-9_]+)' (.*) &&\Z", re.S)
_SET_RE = re.compile(
    rb"  \(set ([0-9]{2}) ([0-9]{2}) ([0-9]{2}) ([0-9]{2}) ([0-9]{2}) ([0-9]{2}) ([0-9]{2}) (.*)\Z", re.S
)
_CHMOD_RE = re.compile(rb"  chmod ([0-7]{4}) (.*)\Z", re.S)
_MD5_LINE_RE = re.compile(rb"([0-9a-f]{32})  (.*)\Z", re.S)
_WC_RE = re.compile(rb"test `LC_ALL=C wc -c < (.*)` -ne ([0-9]+) && \\\Z", re.S)
_MD5_HEREDOC_RE = re.compile(rb"       \) << \\([A-Za-z0-9_]+)\Z")
_STUB_RE = re.compile(rb'then \$\{echo\} "restore of (.*) failed"\Z', re.S)
_COMPRESSED_WORDS = (b' gzipped"', b' bzipped"', b' xz-compressed"')


def _quote(name):
    """``name`` as GNU quotes it for the shell: in single quotes, ``'`` as ``'\\''``."""
    return b"'" + name.replace(b"'", b"'\\''") + b"'"


def _unquote(word):
    """The name a single-quoted shell word stands for, or None if it is not one.

    Only GNU's canonical form is accepted: ``'...'`` pieces joined by ``\\'``.
    """
    if not word.startswith(b"'") or not word.endswith(b"'") or len(word) < 2:
        return None
    out = bytearray()
    i, n = 0, len(word)
    while i < n:
        if word[i] == 0x27:  # '
            j = word.find(b"'", i + 1)
            if j < 0:
                return None
            out += word[i + 1 : j]
            i = j + 1
        elif word.startswith(b"\\'", i):
            out += b"'"
            i += 2
        else:
            return None
    name = bytes(out)
    return name if _quote(name) == word else None


def _show(line, limit=80):
    text = line.rstrip(b"\n")
    if len(text) > limit:
        text = text[:limit] + b"..."
    return repr(text)[1:]


# -- reading lines ----------------------------------------------------------------------


class _Reader(Buffer):
    """Lines of one part, with line numbers and bulk access for here-documents."""

    _FILL = _FILL

    def __init__(self, stream, label, first_lineno):
        super().__init__(stream)
        self.label = label
        self.first = first_lineno
        self.count = 0  # lines consumed
        self._peeked = None

    @property
    def lineno(self):
        """The number of the line last taken."""
        return self.first + self.count - 1

    def error(self, message, lineno=None):
        return ArchiveError("%s:%d: %s" % (self.label, self.lineno if lineno is None else lineno, message))

    def _readline(self):
        while True:
            end = self.buf.find(b"\n", self.pos, self.pos + _MAX_STATEMENT)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                return line
            if len(self.buf) - self.pos >= _MAX_STATEMENT:
                raise self.error("line too long for a shar statement", self.first + self.count)
            if not self.fill(len(self.buf) - self.pos + _FILL):
                line = bytes(self.buf[self.pos :])
                self.pos = len(self.buf)
                return line

    def peek(self):
        """The next line (with its newline), not consumed; b"" at the end."""
        if self._peeked is None:
            self._peeked = self._readline()
        return self._peeked

    def peek_text(self):
        """The next line without its newline (None at the end)."""
        line = self.peek()
        if not line:
            return None
        return line[:-1] if line.endswith(b"\n") else line

    def take(self):
        """The next line without its newline; an error at the end of the part."""
        line = self.peek()
        self._peeked = None
        if not line:
            raise ArchiveError("%s:%d: the part ends in the middle of the archive" % (self.label, self.lineno))
        self.count += 1
        if not line.endswith(b"\n"):
            if line == b"exit 0":
                return line
            raise self.error("the part ends inside a line")
        return line[:-1]

    def maybe(self, expected):
        """Take the next line if it is ``expected``."""
        if self.peek_text() == expected:
            self.take()
            return True
        return False

    def expect(self, expected):
        line = self.take()
        if line != expected:
            raise self.unexpected(line)
        return line

    def expect_block(self, lines):
        for expected in lines:
            self.expect(expected)

    def unexpected(self, line, what="unexpected shell command"):
        return self.error("%s: %s" % (what, _show(line)))

    def heredoc(self, delim):
        """Yield the body of a here-document read by ``sed 's/^X//'``.

        Chunks are X-stripped and hold whole lines, except that a line longer
        than a buffer comes in pieces (the flag says whether the chunk ends a
        line).  The delimiter line is consumed.  ``chunk_first`` is set to the
        number of the first line of each chunk.
        """
        assert self._peeked is None
        term = delim + b"\n"
        nterm = b"\n" + term
        start_line = self.lineno
        at_start = True
        while True:
            if at_start:
                self.fill(len(term))
                if self.buf.startswith(term, self.pos):
                    self.pos += len(term)
                    self.count += 1
                    return
                if self.pos >= len(self.buf):
                    raise self.error(
                        "the part ends inside the here-document that begins on line %d" % start_line,
                        self.first + self.count,
                    )
                if self.buf[self.pos] == _X:
                    self.pos += 1
                at_start = False
            buf, pos = self.buf, self.pos
            idx = buf.find(nterm, pos)
            if idx >= 0:
                stop = idx + 1
            else:
                nl = buf.rfind(b"\n", pos)
                if nl >= 0:
                    stop = nl + 1
                elif len(buf) - pos >= _FILL:
                    stop = len(buf)
                elif self.fill(len(buf) - pos + _FILL):
                    continue
                else:
                    raise self.error(
                        "the part ends inside the here-document that begins on line %d" % start_line,
                        self.first + self.count,
                    )
            chunk = bytes(buf[pos:stop])
            self.pos = stop
            self.chunk_first = self.first + self.count
            lines = chunk.count(b"\n")
            self.count += lines
            ends_line = chunk.endswith(b"\n")
            if lines > 1 or (lines and not ends_line):
                chunk = chunk.replace(b"\nX", b"\n")
            yield chunk, ends_line
            at_start = ends_line


# -- writing members ---------------------------------------------------------------------


class _Member:
    """A file being written: its name, how its data comes, and where it stands."""

    def __init__(self, name, kind, sink):
        self.name = name
        self.kind = kind  # "text", "uu" (piped into uudecode) or "uue" (gathered in ${lock_dir}/uue)
        self.sink = sink
        self.size = 0  # bytes given to the sink
        self.held = False  # a final newline not yet written (see the module notes on -T)
        self.uu_state = "begin"  # begin, data, zero (after the backtick line), end

    # text ---------------------------------------------------------------------------------

    def write_text(self, chunk):
        if not chunk:
            return
        if self.held:
            self.sink.write(b"\n")
            self.size += 1
            self.held = False
        if chunk[-1] == 10:
            chunk = chunk[:-1]
            self.held = True
        if chunk:
            self.sink.write(chunk)
            self.size += len(chunk)

    def settle(self, size):
        """Write or drop the held final newline, now that the stated size is known."""
        if self.held:
            self.held = False
            if size is not None and size == self.size:
                return
            self.sink.write(b"\n")
            self.size += 1

    # uuencoded --------------------------------------------------------------------------

    def feed_uu(self, rd, chunk, ends_line, lock_dir):
        if not ends_line:
            raise rd.error("line too long for uuencoded data", rd.chunk_first)
        pos, n, lineno = 0, len(chunk), rd.chunk_first
        while pos < n:
            if self.uu_state == "data" and n - pos >= 124:
                done = self._uu_fast(chunk, pos)
                if done:
                    pos += 62 * done
                    lineno += done
                    continue
            end = chunk.index(b"\n", pos)
            self._uu_line(rd, chunk[pos:end], lineno, lock_dir)
            pos = end + 1
            lineno += 1

    def _uu_fast(self, chunk, pos):
        """Decode a run of standard 45-byte lines at ``pos``; the number decoded."""
        k = min((len(chunk) - pos) // 62, 1024)
        region = chunk[pos : pos + 62 * k]
        good = min(k - len(region[0::62].lstrip(b"M")), k - len(region[61::62].lstrip(b"\n")))
        if good < 2:
            return 0
        work = bytearray(region[: 62 * good])
        work[0::62] = b"\n" * good
        try:
            data = binascii.a2b_base64(work.translate(FROM_UU))
        except binascii.Error:
            return 0
        if len(data) != 45 * good:
            return 0
        self.sink.write(data)
        self.size += len(data)
        return good

    def _uu_line(self, rd, line, lineno, lock_dir):
        state = self.uu_state
        if state == "begin":
            word, _, rest = line.partition(b" ")
            mode, _, name = rest.partition(b" ")
            if word != b"begin" or len(mode) not in (3, 4) or mode.strip(b"01234567") or not name:
                raise rd.error("expected a uuencode 'begin' line: %s" % _show(line), lineno)
            if lock_dir is not None and name in (lock_dir + b"/gzi", lock_dir + b"/bzi", lock_dir + b"/xzi"):
                raise rd.error("compressed archives (shar -C) are not supported", lineno)
            if name != self.name:
                raise rd.error(
                    "the 'begin' line names %s, the archive's statements %s" % (_show(name), _show(self.name)),
                    lineno,
                )
            self.uu_state = "data"
        elif state == "data":
            if not line:
                raise rd.error("blank line inside uuencoded data", lineno)
            first = line[0]
            if not 32 <= first <= 96:
                raise rd.error("invalid length character in uuencoded data", lineno)
            count = (first - 32) & 63
            if count == 0:
                if len(line) != 1:
                    raise rd.error("unexpected data on the zero-length uuencoded line", lineno)
                self.uu_state = "zero"
                return
            data = line[1:]
            if count > 45 or len(data) != (count + 2) // 3 * 4 or data.translate(None, UU_CHARS):
                raise rd.error("malformed uuencoded line: %s" % _show(line), lineno)
            decoded = binascii.a2b_base64(data.translate(FROM_UU))[:count]
            self.sink.write(decoded)
            self.size += len(decoded)
        elif state == "zero":
            if line != b"end":
                raise rd.error("expected 'end' after the zero-length uuencoded line", lineno)
            self.uu_state = "end"
        else:
            raise rd.error("data after the uuencoded 'end' line: %s" % _show(line), lineno)


# -- parsing -----------------------------------------------------------------------------


class _Header:
    __slots__ = ("lock_dir", "number", "multipart", "continued", "made_on", "gnu", "name")

    def __init__(self):
        self.lock_dir = None
        self.number = 1
        self.multipart = False
        self.continued = None
        self.made_on = None
        self.gnu = False
        self.name = None  # the -n archive name


def _read_header(rd):
    """The comment block at the top of a part, up to its first statement."""
    head = _Header()
    # What may come before '#!/bin/sh': GNU's -a headers and -c cut line.
    while True:
        text = rd.peek_text()
        if text is None:
            raise rd.error("empty archive part", rd.first)
        if text == b"" or text == _CUT_LINE or _NET_HEADER_RE.match(text):
            rd.take()
            continue
        break
    if not text.startswith(b"#"):
        rd.take()
        raise rd.unexpected(text, "not a GNU shar archive")
    markers = True  # part markers are read only before the table of contents
    while True:
        text = rd.peek_text()
        if text is None:
            raise rd.error("the part ends in its header", rd.lineno)
        if text.startswith(b"#"):
            rd.take()
            if text == b"# This shar contains:":
                markers = False
            elif markers:
                if _GNU_MARK in text:
                    head.gnu = True
                m = _GNU_RE.match(text)
                if m and m.group(1) and head.name is None:
                    head.name = m.group(1)
                if text.startswith(b"# Made on ") and head.made_on is None:
                    head.made_on = text[2:]
                m = _PART1_RE.match(text) or _PARTN_RE.match(text)
                if m and not head.multipart:
                    head.multipart = True
                    head.number = int(m.group(1))
                    if m.group(2) not in (None, b"a multipart archive", b"a multipart") and head.name is None:
                        head.name = m.group(2)
                m = _CONTINUED_RE.match(text)
                if m and head.continued is None:
                    head.continued = m.group(1)
            continue
        if text == b"":
            rd.take()
            continue
        m = _LOCK_RE.match(text)
        if m and head.lock_dir is None:
            rd.take()
            head.lock_dir = m.group(1)
            continue
        break
    if head.lock_dir is None:
        raise rd.error("not a GNU shar archive: no 'lock_dir=' line in its header", rd.lineno)
    return head


def detect(head):
    """True if ``head``, the start of an archive part, is GNU shar output."""
    rd = _Reader(io.BytesIO(head), "head", 1)
    try:
        info = _read_header(rd)
    except ArchiveError:
        return False
    if info.gnu:
        return True
    # Parts after the first carry no "produced by" line.
    return info.multipart and b"# Do not concatenate these parts, unpack them in order with '/bin/sh'." in head


def part_info(head):
    """Which archive ``head`` (the first KB of a part) belongs to, and its place."""
    rd = _Reader(io.BytesIO(head), "head", 1)
    info = _read_header(rd)
    lock = info.lock_dir.decode("ascii")
    if not info.multipart:
        made = info.made_on.decode("utf-8", "replace") if info.made_on else ""
        return PartInfo("gnu", "gnu:%s:%s" % (lock, made), 1, total=None, last=True)
    last = None
    lines = head.split(b"\n")
    # A line "exit 0" is GNU's last statement (data lines starting so get an X).
    for i, line in enumerate(lines):
        if line == b"exit 0" and i >= 1:
            if lines[i - 1] == b"echo %d > ${lock_dir}/seq" % (info.number + 1):
                last = False
            elif tuple(lines[max(i - 5, 0) : i]) == _LAST_BLOCK:
                last = True
            break
    return PartInfo("gnu", "gnu:%s" % lock, info.number, total=None, last=last)


class GnuParser:
    """Feeds the parts of one GNU archive, in order, to a sink."""

    def __init__(self, sink):
        self.sink = sink
        self.lock_dir = None
        self.next_part = 1
        self.done = False
        self.member = None  # a file continued into the next part
        self.name = None  # the -n archive name, as the parts' headers give it

    # parts ----------------------------------------------------------------------------

    def feed_part(self, label, first_lineno, stream):
        rd = _Reader(stream, label, first_lineno)
        if self.done:
            raise rd.error("a part after the last part of the archive", first_lineno)
        head = _read_header(rd)
        where = rd.lineno + 1
        if self.lock_dir is None:
            self.lock_dir = head.lock_dir
        elif head.lock_dir != self.lock_dir:
            raise rd.error(
                "this part belongs to another archive (lock_dir=%s, not %s)"
                % (head.lock_dir.decode(), self.lock_dir.decode()),
                where,
            )
        if head.number != self.next_part:
            raise rd.error("this is part %d; part %d was expected" % (head.number, self.next_part), where)
        number = head.number
        if self.name is None:
            self.name = head.name
        self._preamble(rd, number)
        if self.member is not None:
            if head.continued is not None and head.continued != self.member.name:
                raise rd.error(
                    "the header continues %s, but %s is the open file"
                    % (_show(head.continued), _show(self.member.name)),
                    where,
                )
            self._continuation(rd)
        elif head.continued is not None:
            raise rd.error("the header continues %s, which no earlier part began" % _show(head.continued), where)
        while self.member is None and rd.peek_text() is not None and rd.peek_text().startswith(b"# ============= "):
            self._section(rd)
        self._ending(rd, number)

    def finish(self):
        """Check that the archive ended: no file left open, the last part seen."""
        if self.member is not None:
            raise ArchiveError(
                "the archive ends while %s continues in part %d" % (_show(self.member.name), self.next_part)
            )
        if not self.done:
            if self.next_part == 1:
                raise ArchiveError("no archive part was read")
            raise ArchiveError("part %d of the archive is missing" % self.next_part)

    # the preamble --------------------------------------------------------------------

    def _preamble(self, rd, number):
        seen = set()
        index = 0
        while True:
            text = rd.peek_text()
            if text is None:
                break
            found = None
            for i in range(index, len(_PREAMBLE)):
                key, variants = _PREAMBLE[i]
                for block in variants:
                    if text == block[0]:
                        found = i, key, block
                        break
                if found:
                    break
            if not found:
                break
            index, key, block = found
            rd.expect_block(block)
            seen.add(key)
            index += 1
        if number == 1:
            if "lockcheck" not in seen or "lockmkdir" not in seen:
                self._refuse(rd, rd.take())
        else:
            if "lockcheck" in seen or "lockmkdir" in seen:
                raise rd.error("part %d creates the lock directory, as only part 1 does" % number)
            rd.expect_block(_seq_block(number))

    def _refuse(self, rd, line):
        if line.startswith(b'if test -n "`ls /dev/tty'):
            raise rd.unexpected(line, "interactive archives (shar -X) are not supported")
        raise rd.unexpected(line)

    # sections ------------------------------------------------------------------------

    def _section(self, rd):
        heading = rd.take()
        if not heading.endswith(b" ==============") or len(heading) < 32:
            raise rd.unexpected(heading, "malformed file heading")
        name = heading[len(b"# ============= ") : -len(b" ==============")]
        q = _quote(name)
        # Parent directories.
        while True:
            text = rd.peek_text()
            if text is None or not text.startswith(b"if test ! -d '"):
                break
            self._directory(rd, name)
        guard = False
        if rd.peek_text() == b'if test -n "${keep_file}" && test -f ' + q:
            rd.take()
            rd.expect(b"then")
            rd.expect(b'${echo} "x - SKIPPING ' + name + b' (file already exists)"')
            rd.expect(b"")
            rd.expect(b"else")
            guard = True
        text = rd.peek_text()
        if text is not None and text.startswith(b'${echo} "x - extracting '):
            line = rd.take()
            if line not in (
                b'${echo} "x - extracting ' + name + b' (text)"',
                b'${echo} "x - extracting ' + name + b' (empty)"',
            ):
                if line.endswith(_COMPRESSED_WORDS):
                    raise rd.error("compressed archives (shar -C) are not supported")
                raise rd.unexpected(line)
        line = rd.take()
        self.sink.where = "%s:%d" % (rd.label, rd.lineno)  # what goes wrong with the file names this line
        if line == b" > " + q + b" &&":
            self.sink.open_file(name)
            member = _Member(name, "empty", self.sink)
            self._complete(rd, member, guard, continued=False)
            return
        m = _SED_RE.match(line)
        if not m:
            raise rd.unexpected(line)
        delim, target = m.group(1), m.group(2)
        if target == b"> " + q:
            kind = "text"
        elif target == b"| uudecode":
            kind = "uu"
        elif target == b"> ${lock_dir}/uue":
            kind = "uue"
        else:
            self._check_quoted(rd, target[2:] if target.startswith(b"> ") else target, name, line)
            raise rd.unexpected(line)
        self.sink.open_file(name)
        member = _Member(name, kind, self.sink)
        self._body(rd, member, delim)
        self._after_body(rd, member, guard, continued=False)

    def _check_quoted(self, rd, word, name, line):
        """Explain a statement whose quoted name is not the heading's."""
        other = _unquote(word)
        if other is not None and other != name:
            raise rd.error("the statement names %s, its heading %s" % (_show(other), _show(name)))

    def _directory(self, rd, name):
        line = rd.take()
        where = "%s:%d" % (rd.label, rd.lineno)
        word = line[len(b"if test ! -d ") :]
        if not word.endswith(b"; then"):
            raise rd.unexpected(line)
        word = word[: -len(b"; then")]
        directory = _unquote(word)
        if directory is None:
            raise rd.unexpected(line, "badly quoted directory name")
        if not name.startswith(directory + b"/"):
            raise rd.error("directory %s is not a parent of %s" % (_show(directory), _show(name)))
        if rd.maybe(b"  mkdir " + word + b" || exit 1"):
            rd.expect(b"fi")
        else:
            rd.expect_block(
                (
                    b"  mkdir " + word,
                    b"if test $? -eq 0",
                    b'then ${echo} "x - created directory ' + directory + b'."',
                    b'else ${echo} "x - failed to create directory ' + directory + b'."',
                    b"     exit 1",
                    b"fi",
                    b"fi",
                )
            )
        self.sink.where = where
        self.sink.directory(directory)

    def _continuation(self, rd):
        member = self.member
        name = member.name
        guard = False
        if rd.maybe(b"if test ! -f ${lock_dir}/continued"):
            rd.expect(b'then ${echo} "x - STILL SKIPPING ' + name + b'"')
            rd.expect(b"else")
            guard = True
        elif rd.maybe(b"if test -f ${lock_dir}/continued; then"):  # -Q
            guard = True
        rd.maybe(b'${echo} "continuing file ' + name + b'"')
        rd.expect(b"  rm -f ${lock_dir}/continued")
        line = rd.take()
        m = _SED_RE.match(line)
        target = b">> ${lock_dir}/uue" if member.kind == "uue" else b">> " + name
        if not m or m.group(2) != target:
            raise rd.unexpected(line)
        self.sink.open_file(name, append=True)
        self.member = None
        self._body(rd, member, m.group(1))
        self._after_body(rd, member, guard, continued=True)

    def _body(self, rd, member, delim):
        if member.kind == "text":
            for chunk, _ends in rd.heredoc(delim):
                member.write_text(chunk)
        else:
            for chunk, ends in rd.heredoc(delim):
                member.feed_uu(rd, chunk, ends, self.lock_dir)

    def _after_body(self, rd, member, guard, continued):
        if rd.maybe(b" :"):
            # The file goes on in the next part.
            if member.kind == "uu":
                raise rd.error("a piped uudecode cannot continue in another part")
            self._restore_failed(rd, member.name)
            if guard:
                rd.expect(b"fi")
            self.sink.close_file(complete=False)
            self.member = member
            return
        if continued and rd.maybe(b'${echo} "File ' + member.name + b' is complete" &&'):
            rd.expect(b"")
        if member.kind != "text" and member.uu_state != "end":
            raise rd.error("the uuencoded data of %s has no 'end' line" % _show(member.name))
        if member.kind == "uue":
            if rd.maybe(b'${echo} "uudecoding file ' + member.name + b'" &&'):
                rd.expect(b"")
            rd.expect(b"uudecode ${lock_dir}/uue && \\")
        self._complete(rd, member, guard, continued)

    def _complete(self, rd, member, guard, continued):
        name = member.name
        q = _quote(name)
        mode = mtime = size = md5 = None
        line = rd.take()
        m = _SET_RE.match(line)
        if m:
            if m.group(8) != q:
                self._check_quoted(rd, m.group(8), name, line)
                raise rd.unexpected(line)
            mtime = self._mtime(rd, m)
            rd.expect(b'   eval "${shar_touch}") && \\')
            line = rd.take()
        m = _CHMOD_RE.match(line)
        if m:
            if m.group(2) != q:
                self._check_quoted(rd, m.group(2), name, line)
                raise rd.unexpected(line)
            mode = int(m.group(1), 8)
        elif line != b":" or mtime is not None:
            raise rd.unexpected(line)
        self._restore_failed(rd, name)
        # Checks: md5 and size, md5 only, size only, or none.
        if rd.maybe(b"  if ${md5check}"):
            rd.expect(b"  then (")
            rd.expect(b"       ${MD5SUM} -c >/dev/null 2>&1 || ${echo} " + q + b": 'MD5 check failed'")
            line = rd.take()
            m = _MD5_HEREDOC_RE.match(line)
            if not m:
                raise rd.unexpected(line)
            delim = m.group(1)
            line = rd.take()
            m = _MD5_LINE_RE.match(line)
            if not m or m.group(2) != name:
                raise rd.unexpected(line, "malformed md5 line")
            md5 = m.group(1).decode("ascii")
            rd.expect(delim)
            if rd.maybe(b""):
                rd.expect(b"else")
                size = self._size(rd, q)
            rd.expect(b"  fi")
        elif rd.peek_text() is not None and rd.peek_text().startswith(b"test `LC_ALL=C wc -c < "):
            size = self._size(rd, q)
        if guard:
            rd.expect(b"fi")
        if member.kind == "text":
            member.settle(size)
        self.sink.close_file(mode=mode, mtime=mtime, size=size, md5=md5)

    def _restore_failed(self, rd, name):
        rd.expect_block(
            (
                b"if test $? -ne 0",
                b'then ${echo} "restore of ' + name + b' failed"',
                b"fi",
            )
        )

    def _size(self, rd, q):
        line = rd.take()
        m = _WC_RE.match(line)
        if not m or m.group(1) != q:
            raise rd.unexpected(line)
        size = m.group(2)
        rd.expect(b'  ${echo} "restoration warning:  size of ' + q + b" is not " + size + b'"')
        return int(size)

    def _mtime(self, rd, m):
        year = int(m.group(1) + m.group(2))
        month, day, hour, minute, second = (int(m.group(i)) for i in range(3, 8))
        try:
            datetime.datetime(year, month, day, hour, minute, min(second, 59))
        except ValueError:
            raise rd.error("invalid timestamp: %s" % _show(b" ".join(m.groups()[:7])))
        return calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0))

    # the end of a part -------------------------------------------------------------------

    def _ending(self, rd, number):
        member = self.member
        if member is None and rd.maybe(b" :"):
            # -l: a file that did not fit is announced, then starts in the next part.
            rd.expect(b"if test $? -ne 0")
            line = rd.take()
            m = _STUB_RE.match(line)
            if not m or _unquote(m.group(1)) is None:
                raise rd.unexpected(line)
            rd.expect(b"fi")
        last = rd.maybe(b"${echo} You have unpacked the last part")
        if last or rd.peek_text() == _LAST_BLOCK[0]:
            if member is not None:
                raise rd.error("the archive ends while %s continues" % _show(member.name), rd.lineno + 1)
            rd.expect_block(_LAST_BLOCK)
            self.done = True
        else:
            rd.maybe(b"${echo} End of %s part %d" % (self.name or b"archive", number))
            if member is not None:
                rd.maybe(b"${echo} File " + member.name + b" is continued in part %d" % (number + 1))
            rd.maybe(b'${echo} "End of part %d, continue with part %d"' % (number, number + 1))
            rd.maybe(b": > ${lock_dir}/continued")
            line = rd.take()
            if line != b"echo %d > ${lock_dir}/seq" % (number + 1):
                self._refuse(rd, line)
            self.next_part = number + 1
        line = rd.take()
        if line != b"exit 0":
            raise rd.unexpected(line)
        if not self.done:
            return
        self.next_part = number + 1
