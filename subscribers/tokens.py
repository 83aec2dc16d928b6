"""Signed tokens for the links readers click.

A token names a subscriber and the edition the link came in, and carries an
HMAC-SHA256 over both, keyed by ``MAILER_SECRET_KEY`` and bound to its purpose,
so that a token cannot be forged, altered or reused for something else. Tokens
do not expire: unsubscribe links must keep working long after the send
(CAN-SPAM asks for at least 30 days).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

_PURPOSE = b"mailer/unsubscribe/v1"
# One canonical spelling per token: ASCII digits without leading zeros, nothing after.
_SHAPE = re.compile(r"([1-9][0-9]{0,17})\.([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{43})")


class TokenError(ValueError):
    """A token that is malformed, altered, or signed with another key."""


@dataclass(frozen=True)
class UnsubscribeToken:
    subscriber_id: int
    edition_id: int


def _signature(key: bytes, subscriber_id: int, edition_id: int) -> str:
    message = _PURPOSE + f":{subscriber_id}:{edition_id}".encode("ascii")
    # hmac.digest is the one-shot C path: this runs once per recipient.
    digest = hmac.digest(key, message, hashlib.sha256)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_unsubscribe(key: bytes, subscriber_id: int, edition_id: int) -> str:
    return f"{subscriber_id}.{edition_id}.{_signature(key, subscriber_id, edition_id)}"


def verify_unsubscribe(key: bytes, token: str) -> UnsubscribeToken:
    match = _SHAPE.fullmatch(token)
    if match is None:
        raise TokenError("the link is incomplete or malformed")
    subscriber_id, edition_id = int(match[1]), int(match[2])
    if not hmac.compare_digest(match[3], _signature(key, subscriber_id, edition_id)):
        raise TokenError("the link's signature does not match")
    return UnsubscribeToken(subscriber_id, edition_id)
