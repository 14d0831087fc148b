"""pipemail.crypto: the tools run with data streamed through them, passphrases through a pipe."""

import io
import os
import subprocess

import pytest

from pipemail import config, crypto, lines
from pipemail.errors import DataError, PasswordCommandError, UnavailableError


def test_crlf_across_chunks():
    assert b"".join(lines.to_crlf([b"a\nb", b"", b"\n", b"\nc"])) == b"a\r\nb\r\n\r\nc"


def test_line_end_converters_across_chunk_cuts():
    # LF or CRLF in, CRLF out; a CR cut from its LF by a chunk boundary; a lone CR kept
    assert b"".join(lines.to_crlf([b"a\r", b"\nb\n", b"c\r\n\r", b"", b"\nd\re\r"])) == b"a\r\nb\r\nc\r\n\r\nd\re\r"
    assert b"".join(lines.to_lf([b"a\r", b"\nb\n", b"c\r\n\r", b"", b"\nd\re\r"])) == b"a\nb\nc\n\nd\re\r"
    assert list(lines.to_lf([b"", b"x"])) == [b"x"]


def test_stdin_streamed_and_stdout_to_a_file():
    out = io.BytesIO()
    chunks = (b"x" * 65536 for _ in range(64))  # 4 MiB, more than any pipe holds
    r = crypto.run_tool(["sha256sum"], chunks, out=out)
    import hashlib

    assert r.rc == 0
    assert out.getvalue().split()[0].decode() == hashlib.sha256(b"x" * 65536 * 64).hexdigest()


def test_passphrase_goes_through_a_pipe_never_the_command_line(tmp_path):
    seen = tmp_path / "argv"
    script = f'printf "%s" "$*" > {seen}; cat /dev/fd/"$1"'
    r = crypto.run_tool(["sh", "-c", script, "sh", "{pass_fd}"], passphrase=b"s3cret")
    assert r.rc == 0 and r.stdout == b"s3cret\n"
    assert "s3cret" not in seen.read_text() and seen.read_text().isdigit()


def test_status_fd_lines_and_exit_status_kept():
    r = crypto.run_tool(
        ["sh", "-c", 'exec 9>/dev/fd/"$1"; echo "[GNUPG:] GOODSIG 1234 A" >&9; echo "[GNUPG:] TRUST_FULLY 0" >&9; '
         'echo oops >&2; exit 2', "sh", "{status_fd}"],
        status=True,
    )  # fmt: skip
    assert (r.rc, r.status, r.stderr) == (2, ["GOODSIG 1234 A", "TRUST_FULLY 0"], "oops\n")


def test_a_missing_tool_says_what_to_install():
    with pytest.raises(UnavailableError) as info:
        crypto.run_tool(["gpgsm"], env={"PATH": "/nonexistent"})
    assert str(info.value) == "gpgsm is not installed (Debian: apt install gpgsm)"
    assert info.value.exit_code == 69


def test_captured_output_is_bounded(monkeypatch):
    monkeypatch.setattr(crypto, "CAPTURE_MAX", 1000)
    with pytest.raises(DataError, match="wrote more than 1000 bytes"):
        crypto.run_tool(["head", "-c", "5000", "/dev/zero"])


def test_an_error_while_feeding_is_raised_and_the_tool_is_gone():
    def chunks():
        yield b"a\n"
        raise DataError("attachment changed")

    with pytest.raises(DataError, match="attachment changed"):
        crypto.run_tool(["cat"], chunks())


def test_key_passphrase_from_its_own_command():
    a = config.Account(name="w", key_password_command="echo topsecret; echo second", password_command="echo smtp")
    assert crypto.key_passphrase(a) == b"topsecret"
    assert crypto.key_passphrase(config.Account(name="w", password_command="echo smtp")) is None
    with pytest.raises(PasswordCommandError) as info:
        crypto.key_passphrase(config.Account(name="w", key_password_command="exit 3"))
    assert str(info.value) == "account 'w': key_password_command failed with exit status 3"


def test_test_pki_is_what_the_tests_say(pki):
    """The fixtures themselves: alice good for S/MIME, carol without the purpose, old expired, dave revoked."""

    def verify(name, *extra):
        return subprocess.run(
            ["openssl", "verify", "-purpose", "smimesign", *extra, pki.cert(name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    assert verify("alice", "-CAfile", pki.ca).returncode == 0
    assert "unsuitable certificate purpose" in verify("carol", "-CAfile", pki.ca).stdout
    assert "certificate has expired" in verify("old", "-CAfile", pki.ca).stdout
    assert "certificate revoked" in verify("dave", "-CAfile", pki.ca, "-CRLfile", pki.crl, "-crl_check").stdout
    assert verify("eve", "-CAfile", pki.ca).returncode != 0
    assert os.path.getsize(pki.p12("bob")) > 0


def test_test_keyrings(gnupg, gpgsm_home):
    assert len(gnupg.fpr("alice")) == 40 and gnupg.fpr("alice") != gnupg.fpr("bob")
    r = gpgsm_home.gpg("--version")  # gpg itself works on that home too
    assert r.returncode == 0
    out = subprocess.run(
        ["gpgsm", "--with-colons", "--list-secret-keys"], env=gpgsm_home.env, capture_output=True
    ).stdout
    assert out.count(b"\nsec:") + out.startswith(b"sec:") == 2 or out.count(b"crs:") == 2


def test_pgp_keys_parsed_once_for_sending_and_reading(gnupg):
    # secure (is there a key to encrypt to?) and unwrap (the signer's addresses) read this one listing
    (alice,) = crypto.pgp_keys("<alice@example.org>", gnupg.env)
    assert alice.fpr == gnupg.fpr("alice") and alice.uids == [("u", "alice@example.org")]
    assert alice.usable("E") and alice.usable("S") and alice.emails() == ["alice@example.org"]
    assert alice.certified() == [("alice@example.org", "Alice <alice@example.org>")]
    assert crypto.pgp_keys("<nobody@example.org>", gnupg.env) == []
    asked = []
    once = crypto.Once(lambda: asked.append(1) or b"pw")
    assert (once(), once(), asked) == (b"pw", b"pw", [1])
