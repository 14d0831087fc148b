"""pymime: verify and decrypt signed and encrypted mail (S/MIME, OpenPGP) in a pipeline."""

import click

from pipemail import __version__
from pipemail.cli import Group, run, stdin_stream, stdout_stream, warn

EPILOG = """\b
Examples:
  pymime verify --ca-file ~/certs/ca.pem < report.eml
  pymime verify --openpgp < report.eml            # the GnuPG keyring's trust
  pypop fetch | pymime decrypt | pymime verify --reject bad.mbox | pyunshar -d restore
  pymime decrypt --cert me.pem --key me.key < inbox.mbox > clear.mbox

Both read one message or an mbox on standard input and write every message on
standard output: verify unchanged, decrypt decrypted (or unchanged when it is not
encrypted, or not to us).  A line on standard error says what was found in each;
the exit status is 65 when any message was not good."""

_TRUST = [
    click.option(
        "--ca-file",
        metavar="FILE",
        help="S/MIME: trust only the CAs in FILE (PEM), and --ca-dir's; default: the system's.",
    ),
    click.option(
        "--ca-dir", metavar="DIR", help="S/MIME: trust only the CAs in DIR (hashed by openssl rehash; and --ca-file)."
    ),
    click.option(
        "--crl-file", metavar="FILE", help="S/MIME: a CRL (PEM); a signer it revokes is refused. Nothing is fetched."
    ),
    click.option("--account", metavar="NAME", help="The account whose keys are used (default: the default account)."),
    click.option(
        "--reject",
        metavar="MBOX",
        help="Append each message that is not good to MBOX instead of standard output, so that what "
        "follows in the pipeline reads only good mail.",
    ),
]


def _trust(f):
    for option in reversed(_TRUST):
        f = option(f)
    return f


@click.group(cls=Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="pymime", message="%(prog)s %(version)s")
def command():
    """Verify or decrypt the signed and encrypted mail on standard input (S/MIME, OpenPGP)."""


@command.command(epilog=EPILOG)
@_trust
@click.option("--smime", "kind", flag_value="smime", help="Only S/MIME signatures count.")
@click.option("--openpgp", "kind", flag_value="openpgp", help="Only OpenPGP signatures count.")
def verify(ca_file, ca_dir, crl_file, account, reject, kind):
    """Check the signature of each message; write the messages unchanged."""
    return _filter("verify", _settings(ca_file, ca_dir, crl_file, account, kind, None, None, need_keys=False), reject)


@command.command(epilog=EPILOG)
@click.option("--cert", metavar="FILE", help="S/MIME: our certificate (default: the account's smime_cert).")
@click.option("--key", metavar="FILE", help="S/MIME: our private key (default: the account's smime_key).")
@_trust
def decrypt(cert, key, ca_file, ca_dir, crl_file, account, reject):
    """Decrypt each encrypted message (and verify a signature inside); write the others unchanged."""
    return _filter("decrypt", _settings(ca_file, ca_dir, crl_file, account, None, cert, key, need_keys=True), reject)


def _settings(ca_file, ca_dir, crl_file, account_name, kind, cert, key, need_keys):
    from pipemail import config, crypto, unwrap

    account = None
    if account_name is not None or need_keys:
        account = config.load().account(account_name)
    passphrase = None
    if need_keys:
        cert = cert or account.smime_cert
        key = key or account.smime_key
        if (cert is None) != (key is None):
            raise config.ConfigError(
                "an S/MIME certificate needs its key (and a key its certificate): give both --cert and --key, "
                "or set smime_cert and smime_key in the account"
            )

        def passphrase():
            return crypto.key_passphrase(account)

    settings = unwrap.Settings(
        kind=kind,
        ca_file=ca_file,
        ca_dir=ca_dir,
        crl_file=crl_file,
        cert=cert,
        key=key,
        passphrase=passphrase,
    )
    settings.check_files()
    return settings


def _filter(mode, settings, reject=None):
    from pipemail import unwrap

    summary = unwrap.filter_mail(
        stdin_stream(), stdout_stream(), mode, settings, warn=lambda m: warn("pymime", m), reject=reject
    )
    return summary.exit_code


def main():
    run(command, "pymime", quiet_pipe=False)
