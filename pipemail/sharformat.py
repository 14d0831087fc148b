"""The pyshar format, written once: what :mod:`pipemail.shar` writes and :mod:`pipemail.unshar` reads.

An archive is a POSIX sh script made of a fixed prelude of functions and one
line per step (see :mod:`pipemail.shar` for the whole layout).  Every marker,
here-document, statement template and the prelude itself are defined here, and
the patterns the parser matches statements with are made from the same
templates, so writer and parser cannot drift apart.  Standard library only and
cheap to import (the patterns are compiled on first use): pyuudecode imports it
to pass over pyshar archives.
"""

DELIM = b"PYSHAR_EOF"
MAGIC = b"# pyshar archive "
PREFIXES = b"XQJZ^|@`{}"  # line prefixes for text, in order of preference: harmless at a line start in mail
COUNT_WIDTH = 8  # room for the part count, written when the last part is known
#: The header's comment line, then the count padded to COUNT_WIDTH: ``PART_LINE % (id, number)``.
PART_LINE = MAGIC + b"%s part %d of "
#: The header's shell line, then the count padded to COUNT_WIDTH: ``ID_LINE % (id, number)``.
ID_LINE = b"pm_id=%s pm_part=%d pm_parts="

# -- the prelude: the functions every part defines --------------------------------------

_OLD_DIR = r"""pm_dir() {
  pm_show=$2
  mkdir -p "./$1" 2>/dev/null || { pm_say "x - $2: cannot create directory"; : > "$pm_lock/failed"; }
}
"""
_NEW_DIR = r"""pm_dir() {
  pm_show=$2
  if test -d "./$1"; then mkdir -p "$pm_lock/had/$1" && : > "$pm_lock/had/$1/.pm_had"; fi
  mkdir -p "./$1" 2>/dev/null || { pm_say "x - $2: cannot create directory"; : > "$pm_lock/failed"; }
}
"""
_OLD_DIRMODE = r"""pm_dirmode() {
  chmod "$3" "./$1" 2>/dev/null
  test "$4" = - || TZ=UTC0 touch -t "$4" "./$1" 2>/dev/null
}
"""
_NEW_DIRMODE = r"""pm_dirmode() {
  if test -f "$pm_lock/had/$1/.pm_had"; then
    pm_say "x - $2/: existed before; its mode and time were left as they were"
    return
  fi
  chmod "$3" "./$1" 2>/dev/null
  test "$4" = - || TZ=UTC0 touch -t "$4" "./$1" 2>/dev/null
}
"""
# A directory that existed before the archive is unpacked keeps its mode and
# time: pm_dir marks it in the lock directory, which lasts until the last part
# (a file .pm_had in a copy of its path there), and pm_dirmode leaves it alone.
PRELUDE = r"""LC_ALL=C; export LC_ALL
pm_nl='
'
pm_lock=_pyshar.$pm_id pm_force=%(force)s pm_skip= pm_n=
test "x$1" = x-c && pm_force=1
pm_say() { printf '%%s\n' "$*"; }
pm_fail() { pm_say "x - $pm_show: $1"; : > "$pm_lock/bad"; }
pm_ok() { test -n "$pm_n" && test -z "$pm_skip"; }
pm_start() {
  if test "$pm_part" = 1; then
    if mkdir "$pm_lock" 2>/dev/null; then :; else
      pm_say "pyshar: $pm_lock exists: another unpack is running or was interrupted; remove it and retry"
      exit 1
    fi
  elif test "x$(cat "$pm_lock/seq" 2>/dev/null)" != "x$((pm_part - 1))"; then
    pm_say "pyshar: please unpack part $((pm_part - 1)) of $pm_parts first"
    exit 1
  fi
  pm_sha=
  if command -v sha256sum >/dev/null 2>&1; then pm_sha=sha256sum
  elif command -v shasum >/dev/null 2>&1; then pm_sha='shasum -a 256'; fi
  pm_dec=
  for pm_c in uudecode base64 openssl python3; do
    if command -v $pm_c >/dev/null 2>&1; then pm_dec=$pm_c; break; fi
  done
}
pm_dir() {
  pm_show=$2
  if test -d "./$1"; then mkdir -p "$pm_lock/had/$1" && : > "$pm_lock/had/$1/.pm_had"; fi
  mkdir -p "./$1" 2>/dev/null || { pm_say "x - $2: cannot create directory"; : > "$pm_lock/failed"; }
}
pm_file() {
  pm_n=$1 pm_show=$2 pm_skip=
  rm -f "$pm_lock/bad" "$pm_lock/skip"
  if test -z "$pm_force" && { test -f "./$pm_n" || test -h "./$pm_n"; }; then
    pm_skip=1; : > "$pm_lock/skip"
    pm_say "x - $pm_show: exists, kept (sh ARCHIVE -c overwrites)"
    return
  fi
  case $pm_n in */*) mkdir -p "./${pm_n%%/*}" 2>/dev/null ;; esac
  rm -f "./$pm_n" 2>/dev/null
  : > "./$pm_n" || pm_fail 'cannot create'
}
pm_more() { pm_n=$1 pm_show=$2 pm_skip=; test -f "$pm_lock/skip" && pm_skip=1; }
pm_unb64() {
  if test "$1" = new; then pm_o=./$pm_n; else pm_o=$pm_lock/piece; fi
  case $pm_dec in
  uudecode) uudecode -o "$pm_o" ;;
  base64) sed '1d;$d' | base64 -d > "$pm_o" ;;
  openssl) sed '1d;$d' | openssl base64 -d > "$pm_o" ;;
  python3) python3 -c 'import sys, binascii
o = open(sys.argv[1], "wb")
for l in sys.stdin.buffer:
    if not l.startswith((b"begin", b"====")): o.write(binascii.a2b_base64(l))' "$pm_o" ;;
  *) cat > /dev/null; pm_fail 'no base64 decoder here (uudecode, base64, openssl or python3)'; return ;;
  esac || { pm_fail "$pm_dec failed"; return; }
  test "$1" = new || cat "$pm_o" >> "./$pm_n" || pm_fail 'cannot write'
}
pm_done() {
  test -n "$pm_n" && test -z "$pm_skip" || return
  pm_r=ok
  if test -f "$pm_lock/bad"; then pm_r=failed
  elif test "$(($(wc -c < "./$pm_n")))" != "$1"; then pm_r="failed: size is not $1"
  elif test -n "$pm_sha"; then
    pm_h=$($pm_sha < "./$pm_n")
    test "${pm_h%%%% *}" = "$2" || pm_r='failed: SHA-256 differs'
  fi
  chmod "$3" "./$pm_n" 2>/dev/null
  test "$4" = - || TZ=UTC0 touch -t "$4" "./$pm_n" 2>/dev/null
  pm_say "x - $pm_show: $pm_r"
  test "$pm_r" = ok || : > "$pm_lock/failed"
}
pm_dirmode() {
  if test -f "$pm_lock/had/$1/.pm_had"; then
    pm_say "x - $2/: existed before; its mode and time were left as they were"
    return
  fi
  chmod "$3" "./$1" 2>/dev/null
  test "$4" = - || TZ=UTC0 touch -t "$4" "./$1" 2>/dev/null
}
pm_end() {
  if test "$pm_part" -lt "$pm_parts"; then
    echo "$pm_part" > "$pm_lock/seq"
    pm_say "part $pm_part of $pm_parts done; unpack part $((pm_part + 1)) next"
  elif test -f "$pm_lock/failed"; then
    rm -rf "$pm_lock"
    pm_say 'pyshar: some files did not unpack correctly (see above)'
    exit 1
  else
    rm -rf "$pm_lock"
  fi
}
pm_start
"""

# The preludes of earlier versions, which pyunshar still reads: pipemail 0.1.0's
# pm_dir and pm_dirmode changed the mode and time of a directory that existed
# before the archive was unpacked.
OLD_PRELUDES = (PRELUDE.replace(_NEW_DIR, _OLD_DIR).replace(_NEW_DIRMODE, _OLD_DIRMODE),)


# awk strips the X faster than sed (mawk: 0.21 s for 200 MB, sed 0.49 s)
TEXT_OPEN = b"if pm_ok; then awk '{print substr($0, 2)}' >> \"./$pm_n\" <<'" + DELIM + b"'\n"
TEXT_CLOSE = DELIM + b"\nfi\n"
#: A base64 here-document: ``B64_START % b"new"`` (a file's first piece) or ``% b"add"``, then B64_BEGIN.
B64_START = b"if pm_ok; then pm_unb64 %s <<'" + DELIM + b"'\n"
B64_BEGIN = b"begin-base64 600 piece\n"
B64_OPEN = B64_START + B64_BEGIN
B64_CLOSE = b"====\n" + DELIM + b"\nfi\n"
END = b"pm_end\n"
EXIT = b"exit 0\n"
TRAILER = END + EXIT

# The statements, one line each; NAME and SHOWN are quote()d, MODE octal, STAMP touch -t's or "-".
DIR = b"pm_dir %s %s\n"  # NAME SHOWN
FILE = b"pm_file %s %s\n"  # NAME SHOWN
MORE = b"pm_more %s %s\n"  # NAME SHOWN: the same file, continued in a new part
DONE = b"pm_done %d %s %04o %s\n"  # SIZE SHA256 MODE STAMP
DIRMODE = b"pm_dirmode %s %s %04o %s\n"  # NAME SHOWN MODE STAMP
TAIL = b'if pm_ok; then printf %%s %s >> "./$pm_n"; fi\n'  # a last line without newline, quoted


def quote(name):
    """``name`` (bytes) single-quoted for sh: nothing inside is expanded.

    A newline is written as ``"$pm_nl"`` (set once in the prelude), so that
    every step of an archive is one line and no line of a name can pass for
    one of the archive's own (``exit 0``, say).
    """
    return b"'" + name.replace(b"'", b"'\\''").replace(b"\n", b"'\"$pm_nl\"'") + b"'"


# -- reading it back ------------------------------------------------------------------------

_QUOTED = rb"""(?:'[^']*'|\\'|"\$pm_nl")+"""  # what quote() makes
_STAMP = rb"\d{12}\.\d\d|-"
_patterns = None


def _pattern(template, *groups):
    """A regular expression for ``template``: its literal text escaped, each ``%`` field the next group."""
    import re

    out, fields = [], iter(groups)
    for i, piece in enumerate(re.split(rb"(%%|%[0-9]*[sdo])", template)):
        if i % 2 == 0:
            out.append(re.escape(piece))
        else:
            out.append(re.escape(b"%") if piece == b"%%" else b"(?:" + next(fields) + b")")
    return b"".join(out)


def _compiled():
    global _patterns
    if _patterns is None:
        import re

        q, name = _QUOTED, b"(" + _QUOTED + b")"
        _patterns = {
            "part": re.compile(b"^" + _pattern(PART_LINE, rb"([0-9a-f]{16})", rb"(\d+)") + rb"(\d+) *$", re.M),
            "id": re.compile(_pattern(ID_LINE, rb"[0-9a-f]{16}", rb"\d+") + rb"\d+ *\n"),
            b"pm_dir": re.compile(_pattern(DIR, name, q)),
            b"pm_file": re.compile(_pattern(FILE, name, q)),
            b"pm_more": re.compile(_pattern(MORE, name, q)),
            b"pm_done": re.compile(_pattern(DONE, rb"(\d+)", rb"([0-9a-f]{64})", rb"([0-7]{4})", b"(" + _STAMP + b")")),
            b"pm_dirmode": re.compile(_pattern(DIRMODE, name, q, rb"([0-7]{4})", b"(" + _STAMP + b")")),
            b"if": re.compile(_pattern(TAIL, name)),
        }
        _patterns["q"] = re.compile(rb"""'([^']*)'|(\\')|("\$pm_nl")""")
    return _patterns


def unquote(q):
    """The bytes a name quoted by :func:`quote` stands for."""
    token = _compiled()["q"]
    out = []
    pos = 0
    while pos < len(q):
        m = token.match(q, pos)
        out.append(m.group(1) if m.group(1) is not None else b"'" if m.group(2) else b"\n")
        pos = m.end()
    return b"".join(out)


def find_part_line(head):
    """``(id, number, total)`` (str, int, int) from the first PART_LINE in ``head``, or None."""
    m = _compiled()["part"].search(head)
    return None if m is None else (m.group(1).decode(), int(m.group(2)), int(m.group(3)))


def is_id_line(line):
    """Whether ``line`` is the header's ID_LINE, exactly as pyshar writes it."""
    return _compiled()["id"].fullmatch(line) is not None


def statement(line):
    """``(template, fields)`` for one statement line (DIR, FILE, MORE, DONE, DIRMODE or TAIL), or None.

    Names come back unquoted, numbers as int, a STAMP as bytes (``-`` for none):
    DIR/FILE/MORE ``(name,)``, DONE ``(size, sha256, mode, stamp)``, DIRMODE
    ``(name, mode, stamp)``, TAIL ``(data,)``.
    """
    pattern = _compiled().get(line.split(b" ", 1)[0])
    m = pattern.fullmatch(line) if pattern is not None else None
    if m is None:
        return None
    word = line.split(b" ", 1)[0]
    if word == b"pm_done":
        return DONE, (int(m.group(1)), m.group(2).decode(), int(m.group(3), 8), m.group(4))
    if word == b"pm_dirmode":
        return DIRMODE, (unquote(m.group(1)), int(m.group(2), 8), m.group(3))
    template = {b"pm_dir": DIR, b"pm_file": FILE, b"pm_more": MORE, b"if": TAIL}[word]
    return template, (unquote(m.group(1)),)
