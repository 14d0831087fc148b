"""Archive parts as mail, the way ``pymail --max-size`` sends them: one message per part,
the part as a base64 attachment (76-character lines), written in chunks (never whole)."""

import binascii
import os

BOUNDARY = b"=_pipemail_0123456789abcdef01234567"
_BLOCK = 57 * 20000  # whole base64 lines at a time


def message_chunks(path, subject=None):
    """The bytes of one message carrying the file ``path`` as a base64 attachment, in chunks."""
    name = os.path.basename(path).encode()
    yield (
        b"Date: Thu, 03 Dec 2026 11:36:01 +0000\n"
        b"Message-ID: <1.2.3@example.com>\n"
        b"From: me@example.com\n"
        b"To: me@example.com\n"
        b"Subject: " + (subject or name) + b"\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed;\n boundary="' + BOUNDARY + b'"\n'
        b"\n"
        b"This is a MIME message with attachments.\n"
        b"\n"
        b"--" + BOUNDARY + b"\n"
        b"Content-Type: text/plain; charset=us-ascii\n\n"
        b"Part of a backup.\n"
        b"\n"
        b"--" + BOUNDARY + b"\n"
        b'Content-Type: application/octet-stream; name="' + name + b'"\n'
        b'Content-Disposition: attachment; filename="' + name + b'"\n'
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
    )
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            yield b"".join(binascii.b2a_base64(block[i : i + 57]) for i in range(0, len(block), 57))
    yield b"\n--" + BOUNDARY + b"--\n"


def write_maildir(top, paths):
    """A Maildir holding one message per file of ``paths``, in that order."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(top, sub), exist_ok=True)
    for i, path in enumerate(paths):
        with open(os.path.join(top, "new", "%010d.M%dP1.test" % (1700000000 + i, i)), "wb") as out:
            for chunk in message_chunks(path):
                out.write(chunk)


def write_mbox_of_maildir(target, top):
    """The mbox ``write_mbox`` makes of the files ``write_maildir`` was given, copied from the
    Maildir ``top`` it made (its messages in their order), not encoded again."""
    import shutil

    new = os.path.join(top, "new")
    with open(target, "wb") as out:
        for name in sorted(os.listdir(new)):
            out.write(b"From me@example.com Thu Dec  3 11:36:01 2026\n")
            with open(os.path.join(new, name), "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            out.write(b"\n")


def write_mbox(target, paths):
    """An mbox holding one message per file of ``paths``, in that order."""
    with open(target, "wb") as out:
        for path in paths:
            out.write(b"From me@example.com Thu Dec  3 11:36:01 2026\n")
            for chunk in message_chunks(path):
                out.write(chunk)
            out.write(b"\n")
