"""aliases(5) for pysendmail: local names (root, cron) mapped to real addresses.

The file is read as sendmail and Postfix read /etc/aliases: ``name: targets`` lines,
continued on lines that start with white space; a line whose first non-blank character is
``#`` is a comment; local names are matched without regard to case, and a ``default:`` entry
takes every name the file does not list (as msmtp's ``aliases``).  The targets are
addresses, separated by commas or white space (``a@x.org b@x.org`` is two);
``"quoted local part"@domain`` keeps its quotes, spaces and commas, ``Name <addr>`` and
``addr (comment)`` are the address alone.  A UTF-8 byte order mark at the start and CRLF
line ends are taken as the editors that write them meant.

Names are expanded recursively: an alias may name another; a loop stops at the name met a
second time (kept as it is, with a warning).  ``|command``, ``/file`` and ``:include:``
targets are never run, written or read: a warning names each, and they are dropped (an
unquoted ``|command`` or ``:include:`` runs to the next comma).  A word that is not an
address (``a@``, ``@x.org``, or ``# words`` after an address: a comment is a line of its
own) is dropped with a warning naming it and its line; the entry's other targets are used.
"""

import re

from pipemail.errors import ConfigError, describe_oserror, shown

DEFAULT_PATH = "/etc/aliases"
MAX_DEPTH = 32  # aliases of aliases; deeper is a loop in all but name

_UTF8 = "\u0080-\ud7ff\ue000-\U0010ffff"  # non-ASCII (RFC 6532), not the surrogates of bad bytes
_ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~" + _UTF8  # RFC 5322 atext
_LABEL = "[A-Za-z0-9%s](?:[A-Za-z0-9\\-%s]*[A-Za-z0-9%s])?" % (_UTF8, _UTF8, _UTF8)
_LOCAL = r'(?:[%s]+(?:\.[%s]+)*|"(?:[^"\\\r\n]|\\.)*")' % (_ATEXT, _ATEXT)  # dot-atom or quoted string
_ADDRESS = re.compile(r"%s(?:@(?:%s(?:\.%s)*|\[[^\[\]\\\s]*\]))?" % (_LOCAL, _LABEL, _LABEL))


class Aliases:
    """The parsed file: ``path``, ``table`` (lowercased name -> list of targets, addresses as
    written, ``|command``/``/file``/``:include:`` unquoted) and ``notes`` (lowercased name ->
    the warnings about words of that entry that were dropped, said when the entry is used)."""

    def __init__(self, path=None, table=None, notes=None):
        self.path = path
        self.table = dict(table or {})
        self.notes = dict(notes or {})

    def __bool__(self):
        return bool(self.table)

    def expand(self, addr, warn=None):
        """The addresses ``addr`` goes to: itself unless it is a bare local name the file maps
        (or a ``default:`` takes), each target expanded again; order kept, duplicates dropped."""
        warn = warn or (lambda m: None)
        out = []
        self._expand(addr, [], out, warn, set())
        seen = set()
        return [a for a in out if not (a.lower() in seen or seen.add(a.lower()))]

    def _expand(self, addr, path, out, warn, told):
        if "@" in addr:
            out.append(addr)
            return
        key = addr.lower()
        if key in path or len(path) >= MAX_DEPTH:
            warn("aliases %s: %s loops back to %s: delivered to %s as it is" % (self.path, path[0], addr, addr))
            out.append(addr)
            return
        entry = key
        targets = self.table.get(key)
        if targets is None:
            entry = "default"
            targets = self.table.get("default") if key != "default" else None
            if targets is None:
                out.append(addr)
                return
        if entry not in told:
            told.add(entry)
            for note in self.notes.get(entry, ()):
                warn(note)
        for target in targets:
            if target.lower() == key:  # root: root, admin@example.com - the name itself, not again
                out.append(addr)
                continue
            if target.startswith("|") or target.startswith("/") or target.lower().startswith(":include:"):
                warn(
                    "aliases %s: %s: %s is not run, written or read by pysendmail: skipped"
                    % (self.path, addr, shown(target))
                )
                continue
            self._expand(target, path + [key], out, warn, told)


def load(path=None):
    """The aliases of ``path`` (None: /etc/aliases).  A missing /etc/aliases is no aliases;
    a file named in the configuration that is missing or unreadable is a ConfigError."""
    named = path is not None
    path = path if named else DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        if not named:
            return Aliases(path)
        raise ConfigError(
            "aliases file %s: %s (the account's aliases key names it)" % (shown(path), describe_oserror(exc))
        ) from None
    except OSError as exc:
        raise ConfigError("aliases file %s: %s" % (shown(path), describe_oserror(exc))) from None
    return parse(data, path)


def parse(data, path="aliases"):
    """An :class:`Aliases` from the bytes of an aliases(5) file; ConfigError for a line that is
    not ``name: targets``.  Words that are not addresses go to ``notes``, not to the table."""
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):  # a byte order mark, as some Windows editors write
        text = text[1:]
    table, notes = {}, {}
    key = None
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1] in (" ", "\t"):
            if key is None:
                raise ConfigError("aliases file %s: line %d: a continuation line before any alias" % (shown(path), n))
            rest = line
        else:
            name, colon, rest = line.partition(":")
            name = name.strip()
            if not colon or not name or any(c.isspace() for c in name):
                raise ConfigError(
                    "aliases file %s: line %d: not 'name: address, ...': %s" % (shown(path), n, shown(line.strip()))
                )
            key = name.lower()
            table.setdefault(key, [])
        targets, junk = _targets(rest)
        table[key].extend(targets)
        for word, why in junk:
            notes.setdefault(key, []).append(
                "aliases %s: line %d: %s: %s is not an address%s: skipped" % (shown(path), n, key, shown(word), why)
            )
    return Aliases(path, table, notes)


def _targets(text):
    """(targets, junk) of one line's part of an entry: targets as :class:`Aliases` keeps them,
    junk a list of (word, why) for the words that are not addresses."""
    words = _words(text)
    targets, junk = [], []
    for word, kind in words:
        if kind == "comment":
            junk.append((word, " (a comment is a line of its own, starting with #)"))
        elif kind == "special" or _ADDRESS.fullmatch(word):
            targets.append(word)
        else:
            junk.append((word, ""))
    return targets, junk


def _words(text):
    """The words of ``text`` as (word, kind): kind "address" (to be checked), "special" (a
    |command, /file or :include: target, unquoted) or "comment" (a # word and the rest).
    Commas and white space separate words; a quoted string is part of its word; an RFC 5322
    comment (in parentheses) is dropped; ``phrase <addr>`` is the addr."""
    out = []  # [word, kind]
    group = 0  # index in out where the words since the last comma start
    cur = ""
    i = 0

    def flush():
        nonlocal cur
        if cur:
            out.append([cur, "address"])
        cur = ""

    while i < len(text):
        c = text[i]
        if c == '"':
            j = _quoted_end(text, i)
            cur += text[i:j]
            i = j
        elif c == "(" and not cur:
            i = _comment_end(text, i)
        elif c == "<" and not cur:
            j = text.find(">", i)
            j = len(text) if j < 0 else j + 1
            # the words before it in this comma's group that are not addresses are its phrase
            out[group:] = [w for w in out[group:] if "@" in w[0].rpartition('"')[2]]
            out.append([text[i + 1 : j - 1] if text[j - 1 : j] == ">" else text[i:j], "address"])
            i = j
        elif c == "," or c.isspace():
            flush()
            if c == ",":
                group = len(out)
            i += 1
        elif c == "#" and not cur:
            out.append([text[i:].strip(), "comment"])
            break
        elif not cur and (c == "|" or text[i : i + 9].lower() == ":include:"):
            j = _unquoted_comma(text, i)
            out.append([text[i:j].strip(), "special"])
            i = j
        else:
            cur += c
            i += 1
    flush()
    for w in out:
        if w[1] == "address" and len(w[0]) >= 2 and w[0][0] == w[0][-1] == '"':
            inner = re.sub(r"\\(.)", r"\1", w[0][1:-1])
            if inner.startswith(("|", "/")) or inner.lower().startswith(":include:"):
                w[:] = [inner, "special"]
        elif w[1] == "address" and w[0].startswith("/"):
            w[1] = "special"
    return [tuple(w) for w in out]


def _quoted_end(text, i):
    """The index after the quoted string starting at ``text[i]`` (its end when unclosed)."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == '"':
            return j + 1
        j += 1
    return len(text)


def _comment_end(text, i):
    """The index after the (nested) parenthesized comment starting at ``text[i]``."""
    depth = 0
    j = i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(text)


def _unquoted_comma(text, i):
    """The index of the next comma outside quotes from ``i`` (the end of ``text`` if none)."""
    j = i
    while j < len(text):
        if text[j] == '"':
            j = _quoted_end(text, j)
            continue
        if text[j] == ",":
            return j
        j += 1
    return len(text)
