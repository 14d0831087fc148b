"""Inputs for the byte-identical compose tests (tests/test_compose_stream.py): deterministic,
with lines that start with '.' or 'From ' around every offset, long lines, CR, 8-bit bytes,
no final newline, binary data of sizes around 57-byte groups.  tests/data/compose/CASE.eml
holds what pipemail 0.x's in-memory composer (before streaming) made of each."""

import random

DATE = "Thu, 03 Dec 2026 11:00:00 +0000"
MSGID = "<fixed.1@pipemail.test>"
SENDER = ("", "me@example.org")
TO = [("", "you@example.org")]


def _lines(rng, n):
    out = []
    for i in range(n):
        kind = rng.randrange(8)
        if kind == 0:
            out.append(b".")
        elif kind == 1:
            out.append(b"From " + rng.randbytes(rng.randrange(0, 40)).hex().encode())
        elif kind == 2:
            out.append(b"." * rng.randrange(1, 4) + b"x" * rng.randrange(0, 90))
        elif kind == 3:
            out.append(b"y" * rng.randrange(990, 1010))
        else:
            out.append(b"z %d " % i + b"w" * rng.randrange(0, 120))
    return b"\n".join(out) + b"\n"


def cases():
    """{name: (body, {attachment name: bytes})}."""
    rng = random.Random(11)
    seven = _lines(random.Random(1), 400).replace(b"y" * 999, b"y" * 900)
    seven = b"\n".join(line[:998] for line in seven.split(b"\n")).replace(b"\n.\n", b"\n..\n")
    if seven.startswith(b".\n"):
        seven = b"." + seven
    qp = _lines(random.Random(2), 500)
    utf8 = ("caf\u00e9 \u00e0 la cr\u00e8me\r\n" * 300).encode() + b".\nFrom here\n" + b"\xc3\xa9" * 700 + b"\n"
    no_nl = _lines(random.Random(3), 300) + b"the end without a newline"
    latin = ("\u00e9t\u00e9 ensoleill\u00e9\n" * 200).encode("latin-1")
    return {
        "seven": (seven, {}),
        "qp": (qp, {}),
        "utf8": (utf8, {}),
        "no-newline": (no_nl, {}),
        "binary-stdin": (b"\0" + rng.randbytes(57 * 600 + 19), {}),
        "attachments": (
            b"see the files\n",
            {
                "a.bin": rng.randbytes(57 * 400),
                "b.bin": rng.randbytes(57 * 400 + 1),
                "c.bin": rng.randbytes(57 * 400 - 1),
                "empty.bin": b"",
                "latin.txt": latin,
                "notes.txt": qp,
            },
        ),
        "attachment-only": (b"", {"d.bin": rng.randbytes(300001)}),
    }
