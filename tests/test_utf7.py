"""IMAP modified UTF-7 (pipemail.utf7): RFC 3501 5.1.3's vectors, the forms Dovecot's LIST
gives (measured against Dovecot 2.3.19), the forms the RFC forbids, and a round trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipemail import utf7
from pipemail.errors import EX_DATAERR

from conftest import tool

VECTORS = [  # (name, wire form)
    ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
    ("\u263a!", "&Jjo-!"),  # RFC 3501: the correct form of "&Jjo!"
    ("\u53f0\u5317\u65e5\u672c\u8a9e", "&U,BTF2XlZyyKng-"),  # RFC 3501: one run, not "&U,BTFw-&ZeVnLIqe-"
    ("&", "&-"),
    ("A&B", "A&-B"),
    ("&&", "&-&-"),
    ("INBOX", "INBOX"),
    ("", ""),
    ("Entw\u00fcrfe", "Entw&APw-rfe"),  # Dovecot LIST
    ("Gel\u00f6schte Elemente", "Gel&APY-schte Elemente"),  # Dovecot LIST (quoted there: a space)
    ("\u00e9t\u00e9", "&AOk-t&AOk-"),
    ("\U0001f4e7 mail", "&2D3c5w- mail"),  # outside the BMP: a UTF-16 surrogate pair (Dovecot LIST)
    ("\u00ff\u00ff\u00ff", "&AP8A,wD,-"),  # ',' stands for base64 '/'
    ("~", "~"),
    ("a\\b", "a\\b"),
    ("+", "+"),
    ("a-b", "a-b"),
    ("tab\there", "tab&AAk-here"),  # a control character is not sent as itself
    ("\x7f", "&AH8-"),
]


@pytest.mark.parametrize("name, wire", VECTORS)
def test_vectors(name, wire):
    assert utf7.encode(name) == wire
    assert utf7.decode(wire) == name
    assert utf7.decode(wire.encode("ascii")) == name  # a server's bytes


@pytest.mark.parametrize(
    "wire, why",
    [
        ("&Jjo!", "without its closing '-'"),
        ("&U,BTFw-&ZeVnLIqe-", "canonical"),  # two adjacent runs
        ("&AGE-", "canonical"),  # printable ASCII 'a' inside a run
        ("&ZeVnLIqe", "without its closing '-'"),
        ("&2D0-", "broken &-run"),  # a lone surrogate
        ("&AP8-x&AP8", "without its closing '-'"),
        ("&AP8/-", "'/' or '='"),
        ("&AP8=-", "'/' or '='"),
        ("&A-", "broken &-run"),  # 6 bits: not even one byte
        ("&AOk*-", "broken &-run"),  # not base64
        ("caf\u00e9", "must be encoded"),  # raw 8-bit
        ("a\tb", "must be encoded"),
    ],
)
def test_rejects(wire, why):
    with pytest.raises(utf7.Error) as info:
        utf7.decode(wire)
    assert why in str(info.value)
    assert info.value.exit_code == EX_DATAERR
    assert isinstance(info.value, ValueError)


def test_rejects_8bit_bytes():
    with pytest.raises(utf7.Error, match="8-bit bytes"):
        utf7.decode("Entw\u00fcrfe".encode())


def test_lenient_accepts_sloppy_servers():
    assert utf7.decode("&U,BTFw-&ZeVnLIqe-", strict=False) == "\u53f0\u5317\u65e5\u672c\u8a9e"
    assert utf7.decode("&AGE-b", strict=False) == "ab"
    with pytest.raises(utf7.Error):  # a run that does not decode stays an error
        utf7.decode("&2D0-", strict=False)
    with pytest.raises(utf7.Error):
        utf7.decode("caf\u00e9", strict=False)


def test_encode_refuses_what_is_not_text():
    with pytest.raises(utf7.Error, match="lone surrogate"):
        utf7.encode("caf\udce9")  # surrogateescape'd byte 0xe9
    with pytest.raises(TypeError):
        utf7.encode(b"INBOX")


@given(st.text())
def test_round_trip(name):
    wire = utf7.encode(name)
    assert wire.isascii() and all("\x20" <= c <= "\x7e" for c in wire)
    assert utf7.decode(wire) == name


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_ascii_stands_for_itself(name):
    assert utf7.encode(name) == name.replace("&", "&-")


def getmail_utf7():
    """getmail6's codec (Debian's getmail6, installed by tests/run), an anchor to agree with."""
    import sys

    tool("getmail")
    dist = "/usr/lib/python3/dist-packages"
    if dist not in sys.path:
        sys.path.append(dist)
    from getmailcore import imap_utf7

    return imap_utf7


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"))))
def test_agrees_with_getmail6(name):
    # (not on control characters: getmail6 6.18.11 encodes "\r" as "&-", which decodes to "&")
    theirs = getmail_utf7()
    wire = utf7.encode(name)
    assert theirs.encoder(name)[0] == wire.encode("ascii")
    assert theirs.decoder(wire.encode("ascii"))[0] == name
