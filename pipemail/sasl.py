"""SASL initial responses, one definition for pymail's SMTP AUTH and pypop's IMAP AUTHENTICATE.

PLAIN (RFC 4616), OAUTHBEARER (RFC 7628) and Google's XOAUTH2 (which Microsoft and others take too).
Each gives the client's first message as bytes, before base64 (the protocol modules encode it and
redact it from their transcripts).  A server that refuses an OAuth token first sends its error as a
challenge (a JSON document) and waits for the client to end the exchange: ``ERROR_ANSWER`` is that
client answer, after which the server gives its final refusal.
"""


def plain(user, password):
    return ("\0%s\0%s" % (user, password)).encode("utf-8")


def xoauth2(user, token):
    return ("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode("utf-8")


def oauthbearer(user, token, host, port):
    """RFC 7628 section 3.1: a GS2 header naming the user (``=`` and ``,`` escaped), then host, port, token."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return ("n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01" % (authzid, host, port, token)).encode("utf-8")


#: What the client sends to an OAuth mechanism's error challenge: XOAUTH2 an empty line, OAUTHBEARER
#: the single %x01 of RFC 7628 section 3.2.3.
ERROR_ANSWER = {"XOAUTH2": b"", "OAUTHBEARER": b"\x01"}
