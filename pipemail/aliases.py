"""aliases(5) for pysendmail: local names (root, cron) mapped to real addresses.

The file is read as sendmail and msmtp read /etc/aliases: ``name: addr, addr`` lines,
continued on lines that start with white space, ``#`` comments, local names matched
without regard to case, and a ``default:`` entry that takes every name the file does
not list (as msmtp's ``aliases``).  Names are expanded recursively: an alias may name
another; a loop stops at the name met a second time (kept as it is, with a warning).
``|command``, ``/file`` and ``:include:`` entries are never run, written or read: a
warning names each, and they are dropped.
"""

from pipemail.errors import ConfigError, describe_oserror, shown

DEFAULT_PATH = "/etc/aliases"
MAX_DEPTH = 32  # aliases of aliases; deeper is a loop in all but name


class Aliases:
    """The parsed file: ``path`` and ``table`` (lowercased name -> list of targets as written)."""

    def __init__(self, path=None, table=None):
        self.path = path
        self.table = dict(table or {})

    def __bool__(self):
        return bool(self.table)

    def expand(self, addr, warn=None):
        """The addresses ``addr`` goes to: itself unless it is a bare local name the file maps
        (or a ``default:`` takes), each target expanded again; order kept, duplicates dropped."""
        warn = warn or (lambda m: None)
        out = []
        self._expand(addr, [], out, warn)
        seen = set()
        return [a for a in out if not (a.lower() in seen or seen.add(a.lower()))]

    def _expand(self, addr, path, out, warn):
        if "@" in addr:
            out.append(addr)
            return
        key = addr.lower()
        if key in path or len(path) >= MAX_DEPTH:
            warn("aliases %s: %s loops back to %s: delivered to %s as it is" % (self.path, path[0], addr, addr))
            out.append(addr)
            return
        targets = self.table.get(key)
        if targets is None:
            targets = self.table.get("default") if key != "default" else None
            if targets is None:
                out.append(addr)
                return
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
            self._expand(target, path + [key], out, warn)


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
    not ``name: targets``."""
    entries = []  # [line number, text]
    for n, raw in enumerate(data.decode("utf-8", "surrogateescape").splitlines(), 1):
        line = raw.split("#", 1)[0] if raw.lstrip().startswith("#") else raw
        if not line.strip():
            continue
        if line[:1] in (" ", "\t"):
            if not entries:
                raise ConfigError("aliases file %s: line %d: a continuation line before any alias" % (shown(path), n))
            entries[-1][1] += " " + line.strip()
            continue
        entries.append([n, line.strip()])
    table = {}
    for n, text in entries:
        name, colon, rest = text.partition(":")
        name = name.strip()
        if not colon or not name or any(c.isspace() for c in name):
            raise ConfigError("aliases file %s: line %d: not 'name: address, ...': %s" % (shown(path), n, shown(text)))
        targets = _targets(rest)
        table.setdefault(name.lower(), []).extend(targets)
    return Aliases(path, table)


def _targets(text):
    """The comma-separated targets of an entry; a quoted one ("|cmd arg") keeps its commas."""
    out, cur, quoted = [], "", False
    for c in text:
        if c == '"':
            quoted = not quoted
            continue
        if c == "," and not quoted:
            out.append(cur.strip())
            cur = ""
            continue
        cur += c
    out.append(cur.strip())
    return [t for t in out if t]
