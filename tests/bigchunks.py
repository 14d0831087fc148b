"""A big generated message as pymail's transports take it: re-iterable byte chunks cut anywhere.

Used in-process by tests/test_wire.py and, for the memory tests, by a child process
(``python -c 'import bigchunks; bigchunks.main()' KIND MB TARGET``) whose own peak
RSS tests/peak.py measures: the chunks are made one at a time, each a new object,
so that a transport that keeps them (a list, a join) shows in its peak.
"""

import hashlib
import sys

CHUNK = 1 << 16
HEAD = (
    b"From: Big Sender <a@example.org>\nTo: b@example.org\nSubject: big\n"
    b"Date: Thu, 01 Jan 1970 00:00:00 +0000\nMessage-ID: <big@example.org>\n"
    b"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
)
_LINES = [
    b"0000000000 the chunk's number\n",
    b"plain text of a long line (few lines: quicker for aiosmtpd) " + b"x" * 880 + b"\n",
    b". a line that starts with a dot\n",
    b"From the start of a line: mbox quotes it\n",
    b">From quoted once already\n",
    b"..two dots\n",
    b".\n",
    b"\n",
    b"From \n",
]


def _block():
    out = bytearray()
    i = 0
    while len(out) + len(_LINES[i % len(_LINES)]) <= CHUNK:
        out += _LINES[i % len(_LINES)]
        i += 1
    out += b"z" * (CHUNK - len(out))  # cut mid-line: the next chunk goes on with it
    return bytes(out)


BLOCK = _block()


class Generated:
    """About ``mb`` MiB of message as re-iterable chunks of ``CHUNK`` bytes, each made anew
    when iterated (chunk ``i`` starts with ``i`` in ten digits)."""

    def __init__(self, mb):
        self.count = int(mb * (1 << 20)) // CHUNK

    def __iter__(self):
        yield HEAD
        for i in range(self.count):
            yield b"%010d" % i + BLOCK[10:]

    def sha256(self, crlf=False):
        h = hashlib.sha256()
        for chunk in self:
            h.update(chunk.replace(b"\n", b"\r\n") if crlf else chunk)
        return h.hexdigest()

    def size(self):
        return sum(len(c) for c in self)


class Recut:
    """The bytes of ``chunks`` (re-iterable) cut again into pieces of ``sizes`` bytes in turn."""

    def __init__(self, chunks, sizes):
        self.chunks = chunks
        self.sizes = sizes

    def __iter__(self):
        import itertools

        sizes = itertools.cycle(self.sizes)
        want = next(sizes)
        buf = bytearray()
        for chunk in self.chunks:
            buf += chunk
            while len(buf) >= want:
                yield bytes(buf[:want])
                del buf[:want]
                want = next(sizes)
        if buf:
            yield bytes(buf)


def main():
    """KIND MB TARGET: deliver a generated message of MB MiB (smtp URL, sendmail PATH,
    stdout (the mbox form when TARGET is "mbox"), dead PATH)."""
    from pipemail import config, message, transport

    kind, mb, target = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    segments = Generated(mb)
    sender, rcpts = "a@example.org", ["b@example.org"]
    if kind == "dead":
        transport.save_dead_letter(target, segments, sender, rcpts)
        return
    if kind == "stdout":
        url = config.split_url("-", kind="transport")
    else:
        url = config.split_url(target if kind == "smtp" else "sendmail:" + target, kind="transport")
    report = transport.deliver(
        url,
        segments,
        message.crlf_size(segments),
        sender,
        rcpts,
        stdout=sys.stdout.buffer,
        stdout_mbox=target == "mbox",
        timeout=120,
    )
    assert report.accepted == rcpts and not report.refused, report.refused
