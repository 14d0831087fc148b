"""IMAP's modified UTF-7 (RFC 3501 5.1.3): mailbox names on the wire.

A name is sent as printable US-ASCII: every character from 0x20 to 0x7e stands
for itself except ``&``, sent as ``&-``; every run of other characters is sent as
``&`` + the base64 of its UTF-16BE form (``,`` for ``/``, no ``=`` padding) + ``-``.
So ``Entwürfe`` is ``Entw&APw-rfe`` and ``台北日本語`` is ``&U,BTF2XlZyyKng-`` (one run,
never two adjacent ones).

:func:`encode` turns a name as the user writes it into its wire form;
:func:`decode` turns a server's wire form back. ``decode`` is strict by default:
a name with a raw 8-bit byte, an unterminated or broken ``&``-run, a run holding
printable ASCII or a lone surrogate, or two adjacent runs is not modified UTF-7
(RFC 3501: such forms "MUST NOT" be sent) and raises :class:`Error`;
``strict=False`` accepts the non-canonical forms a sloppy server may send (two
adjacent runs, ASCII inside a run) as long as every run decodes.
"""

import base64
import binascii

from pipemail.errors import DataError

__all__ = ["Error", "decode", "encode"]


class Error(DataError, ValueError):
    """A mailbox name that is not modified UTF-7 (or, for :func:`encode`, not text)."""


def _is_direct(ch):
    return "\x20" <= ch <= "\x7e"


def encode(name):
    """The modified UTF-7 wire form (str, printable ASCII) of the mailbox name ``name`` (str)."""
    if not isinstance(name, str):
        raise TypeError("encode() takes str, not %s" % type(name).__name__)
    if name.isascii() and "&" not in name and name.isprintable():
        return name  # the common case: INBOX, Sent, Archive/2024
    out = []
    run = []

    def flush():
        if run:
            try:
                raw = "".join(run).encode("utf-16-be")
            except UnicodeEncodeError:  # a lone surrogate (surrogateescape'd bytes) is no character
                raise Error("mailbox name %r holds a lone surrogate: not text" % name) from None
            out.append("&" + base64.b64encode(raw).rstrip(b"=").replace(b"/", b",").decode("ascii") + "-")
            run.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode(name, strict=True):
    """The mailbox name (str) whose modified UTF-7 wire form is ``name`` (str or bytes).

    Raises :class:`Error` when ``name`` is not modified UTF-7; with ``strict=True``
    (the default) also when it is not the one canonical form :func:`encode` gives.
    """
    if isinstance(name, (bytes, bytearray)):
        try:
            name = bytes(name).decode("ascii")
        except UnicodeDecodeError:
            raise Error("mailbox name %r is not modified UTF-7: it holds 8-bit bytes" % bytes(name)) from None
    out = []
    i = 0
    n = len(name)
    while i < n:
        ch = name[i]
        if ch != "&":
            if not _is_direct(ch) and (strict or not ch.isascii()):
                raise Error("mailbox name %r is not modified UTF-7: %r must be encoded" % (name, ch))
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise Error("mailbox name %r is not modified UTF-7: an &-run without its closing '-'" % name)
        if end == i + 1:
            out.append("&")
        else:
            b64 = name[i + 1 : end]
            if "/" in b64 or "=" in b64:
                raise Error("mailbox name %r is not modified UTF-7: '/' or '=' in an &-run" % name)
            try:
                raw = base64.b64decode(b64.replace(",", "/") + "=" * (-len(b64) % 4), validate=True)
                text = raw.decode("utf-16-be")  # an odd length or a lone surrogate fails here
            except (binascii.Error, ValueError):
                raise Error("mailbox name %r is not modified UTF-7: a broken &-run %r" % (name, b64)) from None
            if len(b64) % 4 == 1:
                raise Error("mailbox name %r is not modified UTF-7: a broken &-run %r" % (name, b64))
            out.append(text)
        i = end + 1
    text = "".join(out)
    if strict and encode(text) != name:
        raise Error("mailbox name %r is not in canonical modified UTF-7 (%r is)" % (name, encode(text)))
    return text
