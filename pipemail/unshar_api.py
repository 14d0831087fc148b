"""The interface between archive parsers and the extractor (pyunshar).

A parser reads the text of one archive (all its parts, in order) and tells
an :class:`Extractor`-like sink what to create.  It never runs anything and
never touches the file system itself: the sink decides what is safe.

Calls a parser makes, in order, for each member:

    sink.directory(name, mode=None, mtime=None)
    sink.open_file(name, append=False)      # append=True continues a file split across parts
    sink.write(data)                        # any number of times
    sink.close_file(mode=None, mtime=None, size=None, md5=None, sha256=None, complete=True)

``name`` is bytes exactly as the archive gives it (the sink refuses unsafe
names).  ``mode`` is the permission bits as an int, ``mtime`` seconds since
the epoch (UTC), ``size`` the expected total size, ``md5``/``sha256`` the
expected hex digests of the whole file.  ``complete=False`` means the file
continues in the next part (the sink keeps it open across parts).

Parsers raise :class:`ArchiveError` (a DataError, exit 65) for anything they do
not recognise, with a message that names the line: "LABEL:LINE: unexpected
shell command: ...".  Unknown commands are never skipped: an archive that does
something other than create files is not an archive we extract.
"""

from pipemail.errors import DataError


class ArchiveError(DataError):
    """An archive holds something pyunshar does not recognise or accept."""


class PartInfo:
    """Where an archive part belongs: its archive, its number, the total if known."""

    __slots__ = ("format", "archive_id", "number", "total", "last")

    def __init__(self, format, archive_id, number=1, total=None, last=None):
        self.format = format  # "pyshar" or "gnu"
        self.archive_id = archive_id
        self.number = number
        self.total = total
        self.last = last  # True/False when the part says whether it is the last, else None

    def __repr__(self):
        return "PartInfo(%r, %r, %d, total=%r, last=%r)" % (
            self.format,
            self.archive_id,
            self.number,
            self.total,
            self.last,
        )
