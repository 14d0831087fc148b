"""pipemail.cms: S/MIME EnvelopedData made by openssl cms, openssl smime and gpgsm, decrypted as a stream."""

import binascii
import hashlib
import io
import itertools
import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peak import LIMIT_MB, peak

from pipemail import cms
from pipemail.errors import ConfigError, DataError, NoInputError

PLAIN = random.Random(13).randbytes(20000)  # several of openssl's 4096-byte chunks with -stream
SMALL = b"Content-Type: text/plain\r\n\r\nhello\r\n"  # 35 bytes: three AES blocks once padded


def pieces(data, size):
    return (data[i : i + size] for i in range(0, len(data), size))


def encrypt(pki, tmp_path, plaintext, *options, to=("bob",), keyopts=()):
    """``openssl cms -encrypt -binary -outform DER`` of ``plaintext`` to the users ``to``: the DER."""
    src, dst = tmp_path / "plain", tmp_path / "enc.der"
    src.write_bytes(plaintext)
    recips = []
    for name in to:
        recips += ["-recip", name if os.sep in name else pki.cert(name), *keyopts]
    subprocess.run(
        ["openssl", "cms", "-encrypt", "-binary", *options, *recips, "-outform", "DER", "-in", src, "-out", dst],
        check=True,
        capture_output=True,
    )
    return dst.read_bytes()


def decrypt(der, pki, name="bob", size=4099, **kw):
    out = io.BytesIO()
    cipher = cms.decrypt(pieces(der, size), out, cert=pki.cert(name), key=pki.key(name), **kw)
    return cipher, out.getvalue()


def serial(pki, name):
    from cryptography import x509

    with open(pki.cert(name), "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).serial_number


def untouched():
    """Input that must not be read: configuration errors come first."""
    raise AssertionError("the input was read")
    yield b""


CA = "CN=pipemail Test CA"
# ContentInfo, envelopedData, [0], EnvelopedData, version 0 (indefinite lengths): what comes before the recipients
ENVELOPED_HEAD = b"\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03\xa0\x80\x30\x80\x02\x01\x00"
BAD_PADDING = "decryption failed: bad padding at the end of the content (damaged data or a wrong key)"


@pytest.mark.parametrize(
    "option, name",
    [("-aes128", "aes-128-cbc"), ("-aes192", "aes-192-cbc"), ("-aes256", "aes-256-cbc"), ("-des3", "des-ede3-cbc")],
)
@pytest.mark.parametrize("stream", [False, True], ids=["one-primitive", "stream-chunks"])
def test_openssl_cms_encrypt_each_cipher_with_and_without_stream(pki, tmp_path, option, name, stream):
    der = encrypt(pki, tmp_path, PLAIN, option, *(["-stream"] if stream else []))
    # -stream: constructed [0] of indefinite length holding OCTET STRINGs; without: one primitive [0]
    assert (der[1] == 0x80) is stream
    assert decrypt(der, pki) == (name, PLAIN)
    assert decrypt(der, pki, size=1)[1] == PLAIN  # the reader takes any cut of its input


def test_several_recipients_each_decrypts_and_all_are_listed(pki, tmp_path):
    der = encrypt(pki, tmp_path, PLAIN, "-aes256", "-stream", to=("alice", "bob", "eve"))
    for name in ("alice", "bob", "eve"):
        assert decrypt(der, pki, name) == ("aes-256-cbc", PLAIN)
    expected = [(CA, serial(pki, "alice")), (CA, serial(pki, "bob")), ("CN=Other CA", serial(pki, "eve"))]
    assert sorted(cms.recipients(der)) == sorted(expected)  # in the message's order: DER sorts a SET OF
    assert cms.recipients(der[:1200]) == cms.recipients(der)  # the head is enough
    # or chunks, read only up to the end of the recipients
    assert cms.recipients(itertools.chain(pieces(der[:1200], 7), untouched())) == cms.recipients(der)
    with pytest.raises(DataError, match=r"^truncated CMS data: it ends inside the recipients \(at byte 400\)$"):
        cms.recipients(der[:400])
    assert str(cms.Recipient(CA, 0xABC)) == "issuer %s serial 0xABC" % CA


def test_recipient_by_subject_key_identifier(pki, tmp_path):
    from cryptography import x509

    der = encrypt(pki, tmp_path, SMALL, "-aes256", "-keyid")
    with open(pki.cert("bob"), "rb") as f:
        ski = x509.load_pem_x509_certificate(f.read()).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cms.recipients(der) == [("subjectKeyIdentifier=" + ski.value.digest.hex().upper(), None)]
    assert decrypt(der, pki) == ("aes-256-cbc", SMALL)
    with pytest.raises(cms.NotForUs):
        decrypt(der, pki, "alice")


@pytest.mark.parametrize(
    "keyopts",
    [
        ["-keyopt", "rsa_padding_mode:oaep"],
        ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"],
        ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha384", "-keyopt", "rsa_mgf1_md:sha512"],
    ],
    ids=["sha1", "sha256", "sha384-mgf1-sha512"],
)
def test_rsaes_oaep_key_transport(pki, tmp_path, keyopts):
    der = encrypt(pki, tmp_path, PLAIN, "-aes256", "-stream", keyopts=keyopts)
    assert decrypt(der, pki) == ("aes-256-cbc", PLAIN)


@pytest.mark.parametrize("option, name", [("-aes-128-gcm", "aes-128-gcm"), ("-aes-256-gcm", "aes-256-gcm")])
def test_auth_enveloped_data_with_aes_gcm(pki, tmp_path, option, name):
    for stream in ([], ["-stream"]):
        der = encrypt(pki, tmp_path, PLAIN, option, *stream)
        assert decrypt(der, pki) == (name, PLAIN)
    # the tag (the last element) is checked: one byte of the content changed is refused at the end
    der = bytearray(encrypt(pki, tmp_path, PLAIN, option))
    der[-200] ^= 1
    with pytest.raises(DataError) as info:
        decrypt(bytes(der), pki)
    assert str(info.value) == "decryption failed: the authentication tag does not match (damaged data)"


def test_openssl_smime_encrypt(pki, tmp_path):
    (tmp_path / "plain").write_bytes(PLAIN)
    mail = subprocess.run(
        ["openssl", "smime", "-encrypt", "-binary", "-aes256", "-in", tmp_path / "plain", pki.cert("bob")],
        check=True,
        capture_output=True,
    ).stdout
    head, _, body = mail.partition(b"\n\n")
    assert b"application/pkcs7-mime" in head or b"application/x-pkcs7-mime" in head
    der = binascii.a2b_base64(body)
    assert decrypt(der, pki) == ("aes-256-cbc", PLAIN)


def test_gpgsm_encrypt(pki, gpgsm_home, tmp_path):
    (tmp_path / "plain").write_bytes(PLAIN)
    subprocess.run(
        ["gpgsm", "--batch", "-r", "bob@example.org", "--encrypt", "-o", tmp_path / "g.der", tmp_path / "plain"],
        env=gpgsm_home.env,
        check=True,
        capture_output=True,
    )
    assert decrypt((tmp_path / "g.der").read_bytes(), pki) == ("aes-128-cbc", PLAIN)  # gpgsm's default


def test_not_for_us_names_whom_it_is_for(pki, tmp_path):
    der = encrypt(pki, tmp_path, SMALL, "-aes256", to=("alice", "eve"))
    with pytest.raises(cms.NotForUs) as info:
        decrypt(der, pki, "bob")
    assert isinstance(info.value, DataError) and info.value.exit_code == 65
    listed = cms.recipients(der)
    assert sorted(listed) == sorted([(CA, serial(pki, "alice")), ("CN=Other CA", serial(pki, "eve"))])
    assert info.value.recipients == listed
    assert str(info.value) == "not encrypted to our certificate (issuer %s serial 0x%X): it is for %s; %s" % (
        CA,
        serial(pki, "bob"),
        *listed,
    )


def test_key_agreement_recipients_are_listed_and_skipped(pki, tmp_path):
    ec_key, ec_cert = tmp_path / "ec.key", tmp_path / "ec.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ec_key, "-out", ec_cert, "-days", "2", "-subj", "/CN=ec"],
        check=True, capture_output=True,
    )  # fmt: skip
    der = encrypt(pki, tmp_path, SMALL, "-aes256", to=(str(ec_cert), "bob"))
    assert set(cms.recipients(der)) == {("key agreement recipient", None), (CA, serial(pki, "bob"))}
    assert decrypt(der, pki) == ("aes-256-cbc", SMALL)
    with pytest.raises(cms.NotForUs) as info:
        decrypt(der, pki, "alice")
    assert str(info.value).endswith(": it is for %s; %s" % tuple(cms.recipients(der)))
    assert "key agreement recipient" in str(info.value)
    with pytest.raises(ConfigError) as info:
        cms.decrypt(untouched(), io.BytesIO(), cert=ec_cert, key=ec_key)
    assert str(info.value) == "the private key %s is not an RSA key: only RSA keys can decrypt S/MIME here" % ec_key


def test_encrypted_key_and_key_problems_are_config_errors_before_any_input(pki, tmp_path):
    der = encrypt(pki, tmp_path, SMALL, "-aes256", to=("alice",))
    out = io.BytesIO()
    cert, enc = pki.cert("alice"), pki.key_enc("alice")
    assert cms.decrypt([der], out, cert=cert, key=enc, passphrase=pki.PASSPHRASE) == "aes-256-cbc"
    assert out.getvalue() == SMALL
    cases = [
        (dict(cert=cert, key=enc), ConfigError, "the private key %s is encrypted and no passphrase was given "
         "(key_password_command)" % enc),
        (dict(cert=cert, key=enc, passphrase=b"wrong"), ConfigError,
         "cannot decrypt the private key %s: wrong passphrase" % enc),
        (dict(cert=cert, key=pki.key("bob")), ConfigError,
         "the private key %s does not belong to the certificate %s" % (pki.key("bob"), cert)),
        (dict(cert=pki.key("alice"), key=pki.key("alice")), ConfigError,
         "%s holds no certificate (PEM or DER)" % pki.key("alice")),
        (dict(cert=cert, key=cert), ConfigError, "%s holds no private key (PEM or DER)" % cert),
        (dict(cert=tmp_path / "none.pem", key=enc), NoInputError,
         "cannot read the certificate %s: No such file or directory" % (tmp_path / "none.pem")),
        (dict(cert=cert, key=tmp_path / "none.key"), NoInputError,
         "cannot read the private key %s: No such file or directory" % (tmp_path / "none.key")),
    ]  # fmt: skip
    for kw, error, message in cases:
        with pytest.raises(error) as info:
            cms.decrypt(untouched(), io.BytesIO(), **kw)
        assert type(info.value) is error and str(info.value) == message
    # a passphrase for a key that has none is no error; one PEM file may hold the certificate and the key
    assert cms.decrypt([der], io.BytesIO(), cert=cert, key=pki.key("alice"), passphrase=b"x") == "aes-256-cbc"
    assert cms.decrypt([der], io.BytesIO(), cert=pki.both("alice"), key=pki.both("alice")) == "aes-256-cbc"


@pytest.mark.parametrize("stream", [False, True], ids=["one-primitive", "stream-chunks"])
def test_every_truncation_is_a_data_error(pki, tmp_path, stream):
    der = encrypt(pki, tmp_path, SMALL, "-aes256", *(["-stream"] if stream else []))
    assert decrypt(der, pki) == ("aes-256-cbc", SMALL)
    for cut in range(len(der)):
        with pytest.raises(DataError) as info:
            decrypt(der[:cut], pki, size=97)
        assert str(info.value).startswith("truncated CMS data: it ends inside ") or not cut
    with pytest.raises(DataError) as info:
        decrypt(der[:-20], pki)
    # without -stream the content runs to the end; with it, 16 bytes of content and 5 end-of-contents follow
    assert str(info.value) == "truncated CMS data: it ends inside the encrypted content (at byte %d)" % (len(der) - 20)


def test_bad_padding_and_damaged_key_and_not_enveloped(pki, tmp_path):
    plain = PLAIN[:4096]  # whole blocks: the padding is one full block of 16s
    der = encrypt(pki, tmp_path, plain, "-aes256")
    damaged = bytearray(der)
    damaged[-17] ^= 1  # the last byte of the next-to-last block: the last plaintext byte becomes 17
    with pytest.raises(DataError) as info:
        decrypt(bytes(damaged), pki)
    assert str(info.value) == BAD_PADDING
    damaged = bytearray(der)
    at = der.index(b"\x04\x82\x01\x00") + 100  # inside the 256-byte encrypted key
    damaged[at] ^= 1
    with pytest.raises(DataError) as info:
        decrypt(bytes(damaged), pki)
    assert str(info.value) in (
        "cannot decrypt the content key with our private key: the message is damaged or not for this key",
        BAD_PADDING,  # PKCS #1 v1.5 implicit rejection: a random key of the right length, then the padding
    )
    streamed = encrypt(pki, tmp_path, plain, "-aes256", "-stream")
    assert streamed[-28:-26] == b"\x04\x10" and streamed[-10:] == bytes(10)  # the last 16-byte chunk, 5 EOCs
    with pytest.raises(DataError) as info:
        decrypt(streamed[:-28] + b"\x04\x0f" + streamed[-26:-11] + streamed[-10:], pki)  # one byte less
    assert str(info.value) == "malformed CMS data: the encrypted content is not a whole number of cipher blocks"
    with pytest.raises(DataError) as info:
        decrypt(der + b"\0\0", pki)
    assert str(info.value) == "malformed CMS data: bytes after its end (at byte %d)" % len(der)

    (tmp_path / "m").write_bytes(SMALL)
    signed = subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-signer", pki.cert("bob"), "-inkey", pki.key("bob"),
         "-outform", "DER", "-in", tmp_path / "m"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    for data, message in [
        (signed, "not encrypted CMS data: its content type is signedData"),
        (b"hello world", "not CMS data: it does not start with a content info"),
        (b"", "no CMS data: the encrypted part is empty"),
        (ENVELOPED_HEAD + b"\x31\x80" + b"\x30\x80" * 40, "malformed CMS data at byte 54: elements nested too deep"),
        # an object identifier of 5000 bytes (its number would have more digits than str() makes)
        (
            b"\x30\x80\x06\x82\x13\x88" + b"\x81" * 4999 + b"\x01",
            "malformed CMS data: the CMS content type is not a valid object identifier",
        ),
        (ENVELOPED_HEAD + b"\x31\x00", None),
    ]:
        with pytest.raises(DataError) as info:
            decrypt(data, pki)
        if message is not None:
            assert str(info.value) == message
    assert str(info.value) == "malformed CMS data: the encrypted data names no recipient"


def test_recipient_names_in_rfc4514_form(pki, tmp_path):
    from cryptography import x509

    key, cert = tmp_path / "odd.key", tmp_path / "odd.pem"
    subject = "/C=DE/O=Acme, Inc. \\+<1>;x/OU=#R&D/CN=Jos\u00e9 Test CA "
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-utf8", "-subj", subject],
        check=True, capture_output=True,
    )  # fmt: skip
    der = encrypt(pki, tmp_path, SMALL, "-aes128", to=(str(cert),))
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    issuer = cms.recipients(der)[0].issuer
    assert issuer == "CN=Jos\u00e9 Test CA\\ ,OU=\\#R&D,O=Acme\\, Inc. \\+\\<1\\>\\;x,C=DE"
    assert issuer == loaded.issuer.rfc4514_string()
    out = io.BytesIO()
    assert cms.decrypt([der], out, cert=cert, key=key) == "aes-128-cbc" and out.getvalue() == SMALL


@pytest.fixture(scope="module")
def samples(pki, tmp_path_factory):
    d = tmp_path_factory.mktemp("cms")
    return [
        encrypt(pki, d, SMALL, "-aes256"),
        encrypt(pki, d, SMALL * 200, "-aes128", "-stream"),
        encrypt(pki, d, SMALL, "-aes-256-gcm", "-stream", to=("alice", "bob")),
    ]


def expect_data_error_or_plaintext(data, pki):
    try:
        decrypt(data, pki, size=61)
    except DataError:
        pass


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_raise_data_error(pki, data):
    with pytest.raises(DataError):
        decrypt(data, pki, size=61)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.data())
def test_damaged_messages_only_ever_raise_data_error(pki, samples, choice):
    der = bytearray(choice.draw(st.sampled_from(samples)))
    for _ in range(choice.draw(st.integers(1, 3))):
        at = choice.draw(st.integers(0, len(der) - 1))
        how = choice.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if how == "flip":
            der[at] ^= 1 << choice.draw(st.integers(0, 7))
        elif how == "set":
            der[at] = choice.draw(st.sampled_from([0x00, 0x80, 0x81, 0x84, 0x88, 0xFF, 0x30, 0xA0, 0x04]))
        elif how == "cut":
            del der[at:]
        elif how == "insert":
            der[at:at] = choice.draw(st.binary(min_size=1, max_size=8))
        else:
            del der[at : at + choice.draw(st.integers(1, 8))]
        if not der:
            break
    expect_data_error_or_plaintext(bytes(der), pki)


DECRYPT = """\
import sys
from pipemail import cms
def chunks(f):
    while b := f.read(1 << 16):
        yield b
print(cms.decrypt(chunks(sys.stdin.buffer), sys.stdout.buffer, cert=sys.argv[1], key=sys.argv[2]), file=sys.stderr)
"""


def test_200_mb_decrypted_in_bounded_memory(pki, tmp_path):
    size = 200 * 1000 * 1000
    der, out = tmp_path / "big.der", tmp_path / "big.out"
    # pseudo-random data made by a stream cipher, never held: its digest is taken on the way
    made = subprocess.run(
        ["bash", "-c",
         "openssl enc -aes-128-ctr -K 000102030405060708090a0b0c0d0e0f -iv 0 -in /dev/zero "
         "2>/dev/null | head -c %d | tee >(sha256sum >&2) | openssl cms -encrypt -stream -binary -aes256 "
         "-recip \"$1\" -outform DER -out \"$2\"" % size, "bash", pki.cert("bob"), der],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr  # openssl cms's (openssl enc fails when head has enough)
    digest = made.stderr.split()[0]
    result = peak([sys.executable, "-c", DECRYPT], pki.cert("bob"), pki.key("bob"), stdin=der, stdout=out)
    assert result.returncode == 0 and result.stderr == "aes-256-cbc\n", result
    assert result.mb < LIMIT_MB, result
    assert out.stat().st_size == size
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    assert h.hexdigest() == digest


def test_importing_cms_loads_no_cryptography():
    # pymime imports it for every message it reads; cryptography is loaded only to decrypt
    code = "import sys, pipemail.cms; print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out == "[]\n"
