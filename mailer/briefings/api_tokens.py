"""Keys for the push API. Shown once when made; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.briefings.sources import SourceError, add_source
from mailer.db.base import utcnow
from mailer.db.models import ApiToken, Source, SourceKind

PREFIX = "mlr_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session, name: str, *, newsletter_slug: str | None = None, mark_ready: bool = True
) -> str:
    """Make a token for a CMS called ``name``; its briefings form the API source ``name``."""
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise SourceError(f"token {name!r}: a token with this name exists")
    source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        source = add_source(
            session,
            name=name,
            kind=SourceKind.API,
            location="push API",
            newsletter_slug=newsletter_slug,
            mark_ready=mark_ready,
        )
    elif source.kind != SourceKind.API:
        raise SourceError(f"token {name!r}: source {name!r} exists and is a {source.kind}")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=_digest(token), source_id=source.id))
    return token


def authenticate(session: Session, token: str) -> Source | None:
    """The API source a live token speaks for, or None."""
    found = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == _digest(token), ApiToken.revoked_at.is_(None))
    )
    if found is None or found.source_id is None:
        return None
    found.last_used_at = utcnow()
    return session.get(Source, found.source_id)


def revoke(session: Session, name: str) -> bool:
    found = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if found is None or found.revoked_at is not None:
        return False
    found.revoked_at = utcnow()
    return True
