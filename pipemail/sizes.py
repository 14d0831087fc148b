"""The one parser for every size option (pyshar -L, pymail --max-size, ...)."""

from pipemail.errors import UsageError

_UNITS = {"": 1024, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text):
    """Bytes for ``text``: a bare number is KiB; K, M, G (any case) are powers of 1024.

    >>> parse_size("4000"), parse_size("64k"), parse_size("1M")
    (4096000, 65536, 1048576)
    """
    s = str(text).strip()
    unit = s[-1:].upper() if s[-1:].isalpha() else ""
    number = s[:-1] if unit else s
    if unit not in _UNITS or not number.isdigit():
        raise UsageError("bad size %r: use a number of KiB, or a number with K, M or G" % text)
    return int(number) * _UNITS[unit]
