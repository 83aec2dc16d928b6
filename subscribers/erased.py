"""What is left of an erased reader: a keyed hash of their address, kept as a suppression.

Erasure removes the address itself from every table. So that no import or sign-up mails
the person again unless they subscribe anew (and confirm), their suppression row keeps
``hash:<HMAC-SHA256 of the normalised address>`` in place of the address, keyed by
``MAILER_SECRET_KEY`` with a purpose of its own: without the key nobody can tell whose
it is, or test an address against it.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from subscribers.models import Suppression
from subscribers.tokens import Keys, key_ring

_PURPOSE = b"mailer/erased-address/v1:"
PREFIX = "hash:"
REASON = "erased at the reader's request"


def marker(key: bytes, email: str) -> str:
    """The suppression's ``email`` value for an erased, normalised address."""
    digest = hmac.new(key, _PURPOSE + email.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest


def markers(keys: Keys, email: str) -> list[str]:
    """The address's marker under every key still configured: one written before the
    keys rotated still names it (``marker`` writes with the signing key, the first)."""
    return [marker(key, email) for key in key_ring(keys)]


def was_erased(session: Session, keys: Keys, email: str) -> bool:
    """Whether this normalised address belonged to someone who had their data erased."""
    query = select(Suppression.id).where(Suppression.email.in_(markers(keys, email))).limit(1)
    return session.scalar(query) is not None


def forget_erasure(session: Session, keys: Keys, email: str) -> bool:
    """They subscribed anew and confirmed: the markers go. Returns whether there was one."""
    rows = session.scalars(select(Suppression).where(Suppression.email.in_(markers(keys, email))))
    found = False
    for row in rows:
        session.delete(row)
        found = True
    return found
