"""The codec core: round trips, GNU golden files, tolerance and strictness."""

import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipemail import uu
from pipemail.errors import DataError, NoPermError
from pipemail.safefile import Output, safe_parts

from conftest import DATA

SIZES = [0, 1, 2, 3, 44, 45, 46, 1027, 70000]


def sample(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def decode_all(data, label="t"):
    """Every block of ``data`` decoded into one stream; returns (bytes, errors)."""
    out = io.BytesIO()
    errors = uu.decode_inputs([(label, io.BytesIO(data))], Output.to_stream(out))
    return out.getvalue(), errors


def decode_error(data):
    got, errors = decode_all(data)
    assert len(errors) == 1, errors
    return str(errors[0])


# -- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("base64", [False, True])
def test_every_length_up_to_200_round_trips(base64):
    for n in range(201):
        data = os.urandom(n)
        text = uu.encode_bytes(data, "f", base64=base64)
        assert uu.decode_bytes(text) == data, n


@given(data=st.binary(max_size=5000), base64=st.booleans(), crlf=st.booleans())
def test_round_trip_random(data, base64, crlf):
    text = uu.encode_bytes(data, "name", base64=base64)
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    assert uu.decode_bytes(text) == data


@pytest.mark.parametrize("base64", [False, True])
@pytest.mark.parametrize("n", [45 * 1024 * 3 + 7, 3 * 1024 * 1024 + 1])
def test_large_round_trip_through_the_bulk_paths(n, base64):
    data = os.urandom(n)
    text = uu.encode_bytes(data, "big", base64=base64)
    assert uu.decode_bytes(text) == data
    assert uu.decode_bytes(text.replace(b"\n", b"\r\n")) == data


@given(name=st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b))
def test_any_name_without_line_breaks_survives_the_header(name):
    text = uu.encode_bytes(b"x", name)
    header = uu.parse_header(text.split(b"\n", 1)[0] + b"\n")
    assert header is not None and header.name == name and header.mode == 0o644


def test_streaming_encoder_reads_short_reads_correctly():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def readable(self):
            return True

        def read(self, n=-1):
            k = min(7, n)
            chunk, self.data = self.data[:k], self.data[k:]
            return chunk

    data = os.urandom(100_000)
    out = io.BytesIO()
    uu.encode_stream(Trickle(data), out, "t")
    assert out.getvalue() == uu.encode_bytes(data, "t")


# -- GNU and busybox golden files ---------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("ext,base64", [("uu", False), ("b64", True)])
def test_encoding_is_byte_identical_to_gnu(n, ext, base64):
    golden = (DATA / ("gnu-%d.%s" % (n, ext))).read_bytes()
    assert uu.encode_bytes(sample(n), "sample.bin", 0o644, base64=base64) == golden


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("maker", ["gnu", "busybox"])
@pytest.mark.parametrize("ext", ["uu", "b64"])
def test_decoding_golden_files(n, maker, ext):
    text = (DATA / ("%s-%d.%s" % (maker, n, ext))).read_bytes()
    assert uu.decode_bytes(text) == sample(n)


def test_golden_mode_is_kept_in_the_header():
    text = (DATA / "gnu-mode755.uu").read_bytes()
    assert text.startswith(b"begin 755 run.sh\n")
    assert uu.encode_bytes(sample(70000), "run.sh", 0o104755) == text


# -- what mail does to text ----------------------------------------------------------


def test_text_and_headers_around_blocks_are_skipped():
    block = uu.encode_bytes(b"payload", "p")
    mail = b"From: a@b\nSubject: x\n\nHello, here it is:\n\n" + block + b"\n-- \nsig\n"
    assert decode_all(mail) == (b"payload", [])


def test_several_blocks_of_both_formats_are_all_decoded_in_order():
    mail = (
        b"text\n"
        + uu.encode_bytes(b"one", "a")
        + b"between\n"
        + uu.encode_bytes(b"two", "b", base64=True)
        + uu.encode_bytes(b"three", "c")
    )
    assert decode_all(mail) == (b"onetwothree", [])


def test_trailing_spaces_stripped_by_a_mailer():
    # The stdlib module wrote spaces for zero; a mailer strips them at line ends.
    data = b"\0" * 90 + b"abc\0\0\0"
    old_style = io.BytesIO()
    uu.encode(io.BytesIO(data), old_style, "z")
    stripped = b"\n".join(line.rstrip(b" ") for line in old_style.getvalue().split(b"\n"))
    assert stripped != old_style.getvalue()
    assert b"\n\nend\n" in stripped  # the space terminator arrives as an empty line
    assert decode_all(stripped) == (data, [])


def test_garbage_padding_characters_bpo_22406():
    text = b"begin 644 <data>\n\x21\x2c\x5f\x5f\x5f\n\x20\nend\n"
    assert decode_all(text) == (b"\x33", [])


def test_crlf_base64_and_uu_mixed_line_ends():
    text = uu.encode_bytes(os.urandom(5000), "m", base64=True)
    lines = text.split(b"\n")
    mixed = b"\n".join(line + (b"\r" if i % 3 == 0 and line else b"") for i, line in enumerate(lines))
    assert decode_all(mixed)[0] == uu.decode_bytes(text)


def test_begin_line_without_zero_length_line_before_end():
    assert decode_all(b"begin 644 a\n#86)C\nend\n") == (b"abc", [])


# -- strict where it matters -----------------------------------------------------------


def test_no_begin_line():
    assert decode_error(b"hello\nworld\n") == "t:2: no 'begin' line found"
    assert decode_error(b"") == "t:0: no 'begin' line found"


def test_missing_end():
    text = uu.encode_bytes(b"abc" * 100, "a")
    assert decode_error(text[: text.rindex(b"`\nend")]) == (
        "t:8: truncated: no 'end' line for the block that begins on line 1"
    )
    b64 = uu.encode_bytes(b"abc", "a", base64=True)
    assert decode_error(b64.replace(b"====\n", b"")) == (
        "t:2: truncated: no '====' line for the block that begins on line 1"
    )


def test_character_outside_the_alphabet_is_reported_with_its_line():
    text = bytearray(uu.encode_bytes(os.urandom(45 * 200), "a"))
    line5 = text.index(b"\n", text.index(b"\n") * 1) + 1 + 62 * 3
    text[line5 + 10] = ord("a")  # lower case is not uu
    assert decode_error(bytes(text)) == "t:5: invalid character 'a' in uuencoded data"


def test_character_outside_the_base64_alphabet():
    text = uu.encode_bytes(os.urandom(45 * 10), "a", base64=True).replace(b"\n", b"!\n", 3)
    assert decode_error(text).startswith("t:2: invalid character '!' in base64 data")


def test_length_character_disagreeing_with_the_line():
    text = uu.encode_bytes(os.urandom(45 * 4), "a")
    lines = text.split(b"\n")
    lines[3] = b"F" + lines[3][1:]  # says 38 bytes; the line holds 45
    assert decode_error(b"\n".join(lines)) == ("t:4: the length character 'F' says 38 bytes but the line holds more")


def test_blank_line_between_data_lines():
    text = uu.encode_bytes(os.urandom(45 * 4), "a")
    lines = text.split(b"\n")
    lines.insert(2, b"")
    assert decode_error(b"\n".join(lines)) == "t:3: blank line inside the encoded data"
    b64 = uu.encode_bytes(os.urandom(45 * 4), "a", base64=True).split(b"\n")
    b64.insert(3, b"")
    assert decode_error(b"\n".join(b64)) == "t:4: blank line inside the encoded data"


def test_invalid_length_character():
    assert decode_error(b"begin 644 a\n~abc\n`\nend\n") == "t:2: invalid length character '~'"


def test_a_bad_block_does_not_stop_the_next(tmp_path):
    good = uu.encode_bytes(b"second", "b")
    bad = b"begin 644 a\nM!!!\n"  # truncated, then a new begin
    target = tmp_path / "out"
    errors = uu.decode_inputs([("t", io.BytesIO(good + bad + good))], target)
    assert target.read_bytes() == b"secondsecond"
    assert os.listdir(tmp_path) == ["out"]
    assert [str(e) for e in errors] == [
        "t:7: truncated: a new 'begin' before the 'end' of the block that begins on line 5"
    ]


def test_corruption_deep_in_a_large_block_is_not_decoded_silently():
    data = os.urandom(45 * 5000)
    text = bytearray(uu.encode_bytes(data, "a"))
    pos = len(text) // 2
    pos = text.index(b"\n", pos) + 30
    text[pos] = ord("~")
    message = decode_error(bytes(text))
    assert "invalid character '~' in uuencoded data" in message


def test_decoder_memory_is_bounded_on_a_line_without_end():
    junk = b"x" * (5 * 1024 * 1024)
    assert decode_error(junk) == "t:1: no 'begin' line found"
    text = b"begin 644 a\n" + junk
    assert decode_error(text) == "t:2: line too long for uuencoded data"


def test_decode_bytes_raises_on_nothing_to_decode():
    with pytest.raises(DataError):
        uu.decode_bytes(b"nothing here\n")


def test_a_name_with_a_newline_is_refused():
    with pytest.raises(DataError, match="line break"):
        uu.encode_bytes(b"x", "a\nb")


# -- header names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,keep,expected",
    [
        (b"a.txt", False, ["a.txt"]),
        (b"dir/sub/a.txt", False, ["a.txt"]),
        (b"dir/sub/a.txt", True, ["dir", "sub", "a.txt"]),
        (b"./a", True, ["a"]),
        (b"~/x", False, ["x"]),
    ],
)
def test_safe_parts(name, keep, expected):
    assert safe_parts(name, keep) == expected


@pytest.mark.parametrize("name", [b"/etc/passwd", b"../x", b"a/../../x", b"..", b"dir/", b"a\0b"])
@pytest.mark.parametrize("keep", [False, True])
def test_unsafe_names_are_refused_in_both_modes(name, keep):
    with pytest.raises(NoPermError):
        safe_parts(name, keep)


def test_a_failed_block_leaves_nothing_on_a_stream():
    good = uu.encode_bytes(b"first", "a")
    bad = uu.encode_bytes(os.urandom(45 * 100), "b")
    bad = bad[: bad.index(b"\n", len(bad) // 2) + 1]
    got, errors = decode_all(good + bad + good + bad)
    assert got == b"firstfirst"
    assert [type(e) for e in errors] == [DataError, uu.TruncatedError]


def test_a_block_bigger_than_the_hold_back_streams(monkeypatch):
    from pipemail import safefile

    monkeypatch.setattr(safefile, "HOLD_BACK", 1000)
    data = os.urandom(45 * 100)
    text = uu.encode_bytes(data, "b")
    got, errors = decode_all(text[: text.index(b"\n", len(text) // 2) + 1])
    assert len(errors) == 1
    assert 1000 < len(got) < len(data) and data.startswith(got)


def test_short_line_in_a_backtick_block_is_damage_not_stripped_spaces():
    text = uu.encode_bytes(os.urandom(45 * 300), "a").split(b"\n")
    assert any(b"`" in line for line in text[1:150])
    text[200] = text[200][:-10]  # lost ten characters
    assert decode_error(b"\n".join(text)) == "t:201: the length character 'M' says 45 bytes but the line holds fewer"
    short = b"begin 644 a\n[" + b"`" * 60 + b"\n`\nend\n"  # '[' says 59 bytes: 80 characters
    assert decode_error(short) == "t:2: the length character '[' says 59 bytes but the line holds fewer"


def test_the_pyshar_line_pyuudecode_passes_over_is_the_one_pyshar_writes():
    from pipemail import sharformat

    assert uu.MAGIC is sharformat.MAGIC  # one definition, imported by both (pipemail.shar writes it)


def test_the_splitter_cache_stays_bounded():
    """Every odd-sized last step asks for a new splitter: the cache must not keep them all
    (it grew by 10 MB over a 400 MB --max-size attachment)."""
    from pipemail import uu as uumod

    for n in range(1, 600):
        assert uumod.splitter(n, 60).size == 60 * n
    assert len(uumod._structs) <= uumod.SPLITTERS_KEPT
