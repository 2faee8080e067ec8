# -*- test-case-name: tests.test_auth_basic -*-
"""
Reading HTTP Basic credentials (RFC 7617) from C{Authorization} headers.

Strict where leniency could let a request mean two things:
  - more than one C{Authorization} header is refused (zot does too: which
    one a proxy or a checker would read is anybody's guess);
  - the scheme is C{Basic}, any case, followed by one space-separated token
    of standard base64 (padding required, nothing after it);
  - the decoded text is UTF-8 (RFC 7617's charset) and splits at the first
    colon into a user name, which must not be empty nor contain control
    characters, and a password, which may be anything.

C{Basic Og==} (an empty user and password, what some clients send when they
have nothing) counts as no credentials, as in zot.
"""

import base64
import binascii
import re

#: What a client sends for "user '' and password ''".
_EMPTY = "og=="

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MalformedCredentials(Exception):
    """
    The C{Authorization} header is not usable Basic credentials; the
    message says why, without quoting any secret.
    """


def authorizationHeaders(request) -> "list[bytes]":
    """
    Every C{Authorization} header of C{request}, as sent.
    """
    return list(request.requestHeaders.getRawHeaders(b"authorization") or [])


def isEmptyAuthorization(header: bytes) -> bool:
    """
    Whether C{header} carries no credentials at all (blank, or C{Basic Og==}).
    """
    text = header.strip().decode("latin-1").lower()
    return text == "" or text == "basic " + _EMPTY


def parseBasic(header: bytes) -> "tuple[str, str]":
    """
    Decode one C{Authorization: Basic ...} header value.

    @return: C{(username, password)}.
    @raise MalformedCredentials: for anything else.
    """
    parts = header.strip().split(b" ")
    if len(parts) != 2 or parts[0].lower() != b"basic":
        raise MalformedCredentials("not Basic credentials")
    token = parts[1]
    if not token or not re.fullmatch(rb"[A-Za-z0-9+/]+={0,2}", token) or len(token) % 4:
        raise MalformedCredentials("the Basic token is not base64")
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedCredentials("the Basic token is not base64") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedCredentials("the Basic credentials are not UTF-8") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise MalformedCredentials("the Basic credentials have no colon")
    if not username:
        raise MalformedCredentials("the user name is empty")
    if _CONTROL.search(username):
        raise MalformedCredentials("the user name contains control characters")
    return username, password
