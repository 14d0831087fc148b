"""Header fields as RFC 5322 and RFC 2047/2231 want them: encoded, folded, within the limits.

Every function returns a field's value ready to follow ``Name: ``, folded with
``\\n`` and a space or tab where a line would pass 76 characters (RFC 2047's
limit for a line holding encoded words, within RFC 5322's 78), and never a line
over 998 (RFC 5322's hard limit; ``500 Line too long`` from a server otherwise).
A fold only ever goes before white space that is there, so unfolding (removing
the line breaks) gives back the value exactly.

- :func:`unstructured` for a Subject or an ``-H`` value: words that are not plain
  ASCII go as RFC 2047 encoded words of at most 75 characters, split between
  characters, never inside one.
- :func:`address_list` for From, To, Cc: folded between addresses, display names
  encoded when they are not ASCII, international addresses (SMTPUTF8) raw.
- :func:`mime` for Content-Type and Content-Disposition: parameters as RFC 2231
  continuations (``filename*0*=utf-8''...``) when they would not fit a line.
- :func:`fold_given` for a header of ``pymail -t``'s message, kept as it is except
  for lines over 998, which are folded at their white space.
"""

import re

from pipemail.errors import DataError, shown

LINE = 76  # RFC 2047: a line holding an encoded word; within RFC 5322's 78
LIMIT = 998  # RFC 5322: the longest line, without its CRLF
WORD = 75  # RFC 2047: the longest encoded word

_EW_START = "=?utf-8?%s?"
_EW_OVERHEAD = len(_EW_START % "q") + 2
_LEAST = _EW_OVERHEAD + 9  # an encoded word shorter than this goes on the next line instead
_Q_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_PLAIN = re.compile(r"[!-~]+")  # printable ASCII, no white space
_WORDS = re.compile(r"([ \t]*)([^ \t]+)")
_TOKEN = re.compile(r"[!#$%&\'*+.0-9A-Z^_`a-z{|}~-]+")  # RFC 2045: no tspecials
_ATTR_SAFE = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]")  # RFC 2231 attribute-char, minus what quote() escapes

ADDRESS_FIELDS = frozenset(
    (
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "mail-followup-to",
        "mail-reply-to",
        "disposition-notification-to",
        "return-receipt-to",
        "errors-to",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
    )
)


def _utf8(text):
    return text.encode("utf-8", "surrogateescape")


class _Encoded:
    """Text to go as RFC 2047 encoded words, taken a piece at a time to fit the room on a line."""

    def __init__(self, text):
        self.chars = list(text)
        self.costs = [_q_cost(c) for c in self.chars]
        q = sum(self.costs)
        b = -(-len(_utf8(text)) // 3) * 4
        self.kind = "q" if q <= b else "b"

    def take(self, start, room):
        """The encoded word for chars[start:n] that fits ``room`` (at least one character), and n."""
        budget = room - _EW_OVERHEAD
        n, used, size = start, 0, 0
        while n < len(self.chars):
            if self.kind == "q":
                cost = used + self.costs[n]
            else:
                size_next = size + len(_utf8(self.chars[n]))
                cost = -(-size_next // 3) * 4
            if cost > budget and n > start:
                break
            if self.kind == "b":
                size = size_next
            used = cost
            n += 1
        return self.word("".join(self.chars[start:n])), n

    def word(self, text):
        import binascii

        data = _utf8(text)
        if self.kind == "q":
            body = "".join("_" if c == 0x20 else chr(c) if c in _Q_SAFE else "=%02X" % c for c in data)
        else:
            body = binascii.b2a_base64(data, newline=False).decode("ascii")
        return _EW_START % self.kind + body + "?="


def _q_cost(char):
    return sum(1 if c in _Q_SAFE or c == 0x20 else 3 for c in _utf8(char))


def _fold(name, items):
    """Lay out ``items``, ``(white space before it, text or _Encoded)``, in lines; the value."""
    lines = []
    line = name + ":"
    bare = True  # nothing of the value on this line yet: no fold before the first item
    for sep, atom in items:
        if isinstance(atom, str):
            if not bare and sep and len(line) + len(sep) + len(atom) > LINE:
                lines.append(line)
                line = ""
            line += sep + atom
            bare = False
            continue
        i, space = 0, sep
        while i < len(atom.chars):
            room = min(WORD, LINE - len(line) - len(space))
            whole, end = atom.take(i, WORD)
            if end == len(atom.chars) and len(whole) <= room:
                room = len(whole)  # the rest in one word, on this line
            elif end == len(atom.chars) and not bare and space:
                room = 0  # the rest in one word, on the next line, rather than split
            if not bare and space and room < _LEAST:
                lines.append(line)
                line = ""
                room = min(WORD, LINE - len(space))
            word, i = atom.take(i, room)
            line += space + word
            bare = False
            space = " "  # white space between encoded words is not part of the text
    lines.append(line)
    for text in lines:
        if len(_utf8(text)) > LIMIT:
            raise DataError("the header %s holds a word too long for any line (mail allows %d a line)" % (name, LIMIT))
    return "\n".join(lines)[len(name) + 2 :]


def _needs_encoding(word):
    return not _PLAIN.fullmatch(word) or "=?" in word


def _runs(pairs, flags):
    """Fold items from ``(space, word)`` pairs: the flagged words, with the white space between
    them, become one run of encoded words; the others stay as they are."""
    items, run = [], None
    for (sep, word), flagged in zip(pairs, flags, strict=True):
        if flagged and run is not None:
            run[1] += sep + word
            continue
        if run is not None:
            items.append((run[0], _Encoded(run[1])))
            run = None
        if flagged:
            run = [sep, word]
        else:
            items.append((sep, word))
    if run is not None:
        items.append((run[0], _Encoded(run[1])))
    return items


def unstructured(name, value):
    """``value`` (text) for the field ``name``: encoded where it is not plain ASCII, folded."""
    pairs = [(m.group(1), m.group(2)) for m in _WORDS.finditer(value)]
    if not pairs:  # empty, or only white space: which survives only inside an encoded word
        return _fold(name, [(" ", _Encoded(value))]) if value else ""
    flags = [_needs_encoding(w) or len(name) + len(s) + len(w) + 3 > LIMIT for s, w in pairs]
    if pairs[0][0]:  # white space at either end survives only inside an encoded word
        pairs[0] = ("", pairs[0][0] + pairs[0][1])
        flags[0] = True
    tail = value[len(value.rstrip(" \t")) :]
    if tail:
        pairs[-1] = (pairs[-1][0], pairs[-1][1] + tail)
        flags[-1] = True
    items = _runs(pairs, flags)
    items[0] = (" ", items[0][1])
    return _fold(name, items)


def _phrase_items(name):
    """A display name as fold items: atoms, a quoted string, or encoded words where not ASCII."""
    if name.isascii() and all(_ATEXT.fullmatch(w) for w in name.split(" ") if w) and "  " not in name:
        return [(" ", w) for w in name.split(" ") if w]
    if name.isascii() and _PLAIN.fullmatch(name.replace(" ", "x")):
        quoted = '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')
        return [(" " if i == 0 else m.group(1), m.group(2)) for i, m in enumerate(_WORDS.finditer(quoted))]
    if re.search(r"\t|  ", name):  # white space beyond one space survives only inside an encoded word
        return [(" ", _Encoded(name))]
    pairs = [(m.group(1), m.group(2)) for m in _WORDS.finditer(name)]
    items = _runs(pairs, [not _ATEXT.fullmatch(w) for _s, w in pairs])
    return [(" ", items[0][1])] + items[1:]


def address_list(name, pairs):
    """``(display name, address)`` pairs for the field ``name``: comma separated, folded between them."""
    items = []
    for n, (display, addr) in enumerate(pairs):
        comma = "," if n + 1 < len(pairs) else ""
        if not display:
            items.append((" ", addr + comma))
            continue
        mine = _phrase_items(display) + [(" ", "<%s>%s" % (addr, comma))]
        whole = _one_line(mine)
        if whole is not None and len(whole) < LINE:  # an address that fits a line is not split
            items.append((" ", whole))
        else:
            items += mine
    return _fold(name, items)


def _one_line(items):
    """``items`` as one line (each run of encoded text one word), or None when a run needs more."""
    out = []
    for sep, atom in items:
        if isinstance(atom, _Encoded):
            word, end = atom.take(0, WORD)
            if end < len(atom.chars):
                return None
            atom = word
        out.append(sep + atom)
    return "".join(out)[1:]


def address_value(name, value):
    """An ``-H`` value of an address field (Reply-To): display names encoded, addresses kept."""
    if value.isascii():
        return unstructured(name, value)
    from pipemail.message import addresses

    try:  # every word an address or a display name: getaddresses alone drops what it cannot read
        pairs = addresses([value])
    except DataError:
        pairs = None
    if not pairs:
        raise DataError("-H %s: not a list of mail addresses: %s" % (name, shown(value)))
    return address_list(name, pairs)


def field_value(name, value):
    """An ``-H`` value: as an address field or as text, by the field's name."""
    if name.lower() in ADDRESS_FIELDS:
        return address_value(name, value)
    return unstructured(name, value)


def mime(name, value, params):
    """A MIME field, ``value`` and its ``(key, value)`` parameters; a long or non-ASCII
    parameter as RFC 2231 sections, each on a line of its own."""
    pieces = [value]
    for key, text in params:
        pieces += _param_pieces(key, text)
    return _fold(name, [(" ", p + ";" if i + 1 < len(pieces) else p) for i, p in enumerate(pieces)])


def _param_pieces(key, text):
    """``key="text"``, ``key*=utf-8''...``, or its sections ``key*0*=...``, ``key*1*=...``."""
    room = LINE - 2  # a leading space, and the ';' after it
    if _TOKEN.fullmatch(text) and key not in ("name", "filename") and len(key) + len(text) < room:
        return ["%s=%s" % (key, text)]  # charset=utf-8
    if _quotable(text):
        whole = '%s="%s"' % (key, text)
        if len(whole) <= room:
            return [whole]
        chunks, rest = [], text
        while rest:
            head = '%s*%d="' % (key, len(chunks))
            size = room - len(head) - 1
            chunks.append(head + rest[:size] + '"')
            rest = rest[size:]
        return chunks
    from urllib.parse import quote

    quoted = [quote(_utf8(c), safe="") if not _ATTR_SAFE.fullmatch(c) else c for c in text]
    whole = "%s*=utf-8''%s" % (key, "".join(quoted))
    if len(whole) <= room:
        return [whole]
    chunks, i = [], 0
    while i < len(quoted):
        head = "%s*%d*=%s" % (key, len(chunks), "utf-8''" if not chunks else "")
        piece, size = "", len(head)
        while i < len(quoted) and (not piece or size + len(quoted[i]) <= room):
            piece += quoted[i]
            size += len(quoted[i])
            i += 1
        chunks.append(head + piece)
    return chunks


def _quotable(text):
    """Whether a parameter goes as a quoted string that every parser gives back as it is: plain
    ASCII and spaces, no quote or backslash, and nothing that looks like an encoded word
    (parsers decode it, though RFC 2047 forbids it there, and Python calls it a defect);
    anything else goes as RFC 2231 percent-encoding."""
    return (
        text.isascii()
        and _PLAIN.fullmatch(text.replace(" ", "x")) is not None
        and not any(c in text for c in '"\\')
        and "=?" not in text
    )


def fold_given(name, value):
    """A header of ``-t``'s message as given, its lines over 998 bytes folded at their white
    space (before a space or tab, so unfolding gives it back); DataError when one has none."""
    lines = ("%s: %s" % (name, value)).split("\n")
    if all(len(_utf8(line)) <= LIMIT for line in lines):
        return value
    out = []
    for k, line in enumerate(lines):
        if len(_utf8(line)) <= LIMIT:
            out.append(line)
            continue
        current = ""
        for m in _WORDS.finditer(line):
            sep, word = m.group(1), m.group(2)
            breakable = current.strip(" \t") and not (k == 0 and current == name + ":")
            if breakable and len(_utf8(current + sep + word)) > LINE:
                out.append(current)
                current = ""
            current += sep + word
        out.append(current + line[len(line.rstrip(" \t")) :])
        if any(len(_utf8(piece)) > LIMIT for piece in out):
            raise DataError(
                "-t: the header %s has a line of %d bytes with no white space to fold it at "
                "(mail allows %d a line)" % (name, len(_utf8(line)), LIMIT)
            )
    return "\n".join(out)[len(name) + 2 :]
