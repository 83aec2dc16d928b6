"""Signed tokens for the links readers click.

A token names a subscriber and the edition the link came in, and carries an
HMAC-SHA256 over both, keyed by ``MAILER_SECRET_KEY`` and bound to its purpose,
so that a token cannot be forged, altered or reused for something else. Tokens
do not expire: unsubscribe links must keep working long after the send
(CAN-SPAM asks for at least 30 days).

Keys rotate: tokens are signed with one key and checked against every key still
configured (``Keys``, the signing key first), so that a new key does not break the
links already in inboxes; a token signed with a key that was dropped is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

_PURPOSE = b"mailer/unsubscribe/v1"
_URL_SAFE = bytes.maketrans(b"+/", b"-_")
# One canonical spelling per token: ASCII digits without leading zeros, nothing after.
_SHAPE = re.compile(r"([1-9][0-9]{0,17})\.([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{43})")


# One key, or the keys still configured with the signing key first: what verifies.
Keys = bytes | Sequence[bytes]


class TokenError(ValueError):
    """A token that is malformed, altered, or signed with another key."""


def key_ring(keys: Keys) -> Sequence[bytes]:
    return (keys,) if isinstance(keys, bytes) else keys


@dataclass(frozen=True)
class UnsubscribeToken:
    subscriber_id: int
    edition_id: int


class UnsubscribeSigner:
    """Signs tokens with one key; a send signs one per recipient.

    HMAC-SHA256 (RFC 2104) with its two keyed hash states computed once: each
    token then costs two copies and two short updates of ``hashlib`` objects,
    a third less than ``hmac.HMAC.copy`` per token. ``verify_unsubscribe``'s test
    checks it against ``hmac`` itself.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + _PURPOSE)
        self._outer = hashlib.sha256(bytes(k ^ 0x5C for k in key))

    def signature(self, subscriber_id: int, edition_id: int) -> str:
        inner = self._inner.copy()
        inner.update(b":%d:%d" % (subscriber_id, edition_id))
        outer = self._outer.copy()
        outer.update(inner.digest())
        # URL-safe base64 without padding: binascii and one translate, half the cost
        # of base64.urlsafe_b64encode (a send signs a token per recipient).
        encoded = binascii.b2a_base64(outer.digest(), newline=False)
        return encoded[:43].translate(_URL_SAFE).decode("ascii")

    def token(self, subscriber_id: int, edition_id: int) -> str:
        return f"{subscriber_id}.{edition_id}.{self.signature(subscriber_id, edition_id)}"


@lru_cache(maxsize=8)
def _signer(key: bytes) -> UnsubscribeSigner:
    # Its keyed states are made once per key, not on every link checked.
    return UnsubscribeSigner(key)


def sign_unsubscribe(key: bytes, subscriber_id: int, edition_id: int) -> str:
    return _signer(key).token(subscriber_id, edition_id)


def verify_unsubscribe(keys: Keys, token: str) -> UnsubscribeToken:
    match = _SHAPE.fullmatch(token)
    if match is None:
        raise TokenError("the link is incomplete or malformed")
    subscriber_id, edition_id = int(match[1]), int(match[2])
    for key in key_ring(keys):
        expected = _signer(key).signature(subscriber_id, edition_id)
        if hmac.compare_digest(match[3], expected):
            return UnsubscribeToken(subscriber_id, edition_id)
    raise TokenError("the link's signature does not match")


# -- the other links readers click ------------------------------------------------------
#
# Each has a purpose of its own, so that no token is good for anything but what it was
# made for: a confirmation link cannot open a preference page, nor the other way round.

_CONFIRM_PURPOSE = b"mailer/confirm/v1"
_EMAIL_CHANGE_PURPOSE = b"mailer/change-email/v1"
_PREFERENCES_PURPOSE = b"mailer/preferences/v1"
_EDITION_WEB_PURPOSE = b"mailer/edition-web/v1"
_ID = r"[1-9][0-9]{0,17}"
_SIG = r"[A-Za-z0-9_-]{43}"
_CONFIRM_SHAPE = re.compile(rf"({_ID})\.({_ID})\.({_SIG})")
_EMAIL_CHANGE_SHAPE = re.compile(rf"({_ID})\.({_ID})\.([A-Za-z0-9_-]{{1,440}})\.({_SIG})")
_ONE_ID_SHAPE = re.compile(rf"({_ID})\.({_SIG})")


def _sign(key: bytes, purpose: bytes, message: bytes) -> str:
    digest = hmac.new(key, purpose + b":" + message, hashlib.sha256).digest()
    return binascii.b2a_base64(digest, newline=False)[:43].translate(_URL_SAFE).decode("ascii")


def _check(keys: Keys, purpose: bytes, message: bytes, signature: str) -> None:
    if not any(
        hmac.compare_digest(signature, _sign(key, purpose, message)) for key in key_ring(keys)
    ):
        raise TokenError("the link's signature does not match")


@dataclass(frozen=True)
class ConfirmToken:
    subscriber_id: int
    expires_at: int  # Unix seconds


def sign_confirmation(key: bytes, subscriber_id: int, expires_at: int) -> str:
    """A confirmation link's token: whoever opens it confirms this subscriber's pending
    subscriptions, until ``expires_at`` (the expiry is signed, so it cannot be moved)."""
    message = b"%d:%d" % (subscriber_id, expires_at)
    return f"{subscriber_id}.{expires_at}.{_sign(key, _CONFIRM_PURPOSE, message)}"


def verify_confirmation(keys: Keys, token: str, now: int) -> ConfirmToken:
    match = _CONFIRM_SHAPE.fullmatch(token)
    if match is None:
        raise TokenError("the link is incomplete or malformed")
    subscriber_id, expires_at = int(match[1]), int(match[2])
    _check(keys, _CONFIRM_PURPOSE, b"%d:%d" % (subscriber_id, expires_at), match[3])
    if now >= expires_at:
        raise TokenError("the link has expired; sign up again for a fresh one")
    return ConfirmToken(subscriber_id, expires_at)


@dataclass(frozen=True)
class EmailChangeToken:
    subscriber_id: int
    expires_at: int
    new_email: str


def sign_email_change(key: bytes, subscriber_id: int, expires_at: int, new_email: str) -> str:
    """The link sent to a new address: it carries that address (the reader typed it and
    it goes only to that mailbox), so nothing waits in the database for the click."""
    encoded = base64.urlsafe_b64encode(new_email.encode("utf-8")).rstrip(b"=").decode("ascii")
    message = b"%d:%d:%s" % (subscriber_id, expires_at, new_email.encode("utf-8"))
    signature = _sign(key, _EMAIL_CHANGE_PURPOSE, message)
    return f"{subscriber_id}.{expires_at}.{encoded}.{signature}"


def verify_email_change(keys: Keys, token: str, now: int) -> EmailChangeToken:
    match = _EMAIL_CHANGE_SHAPE.fullmatch(token)
    if match is None:
        raise TokenError("the link is incomplete or malformed")
    subscriber_id, expires_at = int(match[1]), int(match[2])
    try:
        raw = base64.urlsafe_b64decode(match[3] + "=" * (-len(match[3]) % 4))
        new_email = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise TokenError("the link is incomplete or malformed") from exc
    message = b"%d:%d:%s" % (subscriber_id, expires_at, raw)
    _check(keys, _EMAIL_CHANGE_PURPOSE, message, match[4])
    if now >= expires_at:
        raise TokenError("the link has expired; ask for the change again")
    return EmailChangeToken(subscriber_id, expires_at, new_email)


def sign_preferences(key: bytes, subscriber_id: int) -> str:
    """A preference page's token for mail that belongs to no edition (confirmations).
    An edition's email reaches the page with its unsubscribe token instead (see
    ``mailer.links``), which costs a send nothing more to sign."""
    return f"{subscriber_id}.{_sign(key, _PREFERENCES_PURPOSE, b'%d' % subscriber_id)}"


def verify_preferences(keys: Keys, token: str) -> int:
    """The subscriber a preference token speaks for: its own kind, or an email's
    unsubscribe token (the preference page can do everything that one can, and more
    only for the mailbox it was sent to)."""
    match = _ONE_ID_SHAPE.fullmatch(token)
    if match is None:
        return verify_unsubscribe(keys, token).subscriber_id
    subscriber_id = int(match[1])
    _check(keys, _PREFERENCES_PURPOSE, b"%d" % subscriber_id, match[2])
    return subscriber_id


def sign_edition_web(key: bytes, edition_id: int) -> str:
    """An edition's web copy: the same for every recipient, and not guessable from the
    edition's number (a newsletter without a public archive keeps its editions to its
    readers)."""
    return f"{edition_id}.{_sign(key, _EDITION_WEB_PURPOSE, b'%d' % edition_id)}"


def verify_edition_web(keys: Keys, token: str) -> int:
    match = _ONE_ID_SHAPE.fullmatch(token)
    if match is None:
        raise TokenError("the link is incomplete or malformed")
    edition_id = int(match[1])
    _check(keys, _EDITION_WEB_PURPOSE, b"%d" % edition_id, match[2])
    return edition_id
