"""Briefing sources: where they are, and the bookkeeping of pulling them."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.db.models import Newsletter, Source, SourceKind

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class SourceError(ValueError):
    """A source definition that cannot work."""


def add_source(
    session: Session,
    *,
    name: str,
    kind: SourceKind,
    location: str,
    newsletter_slug: str | None = None,
    mark_ready: bool = True,
) -> Source:
    if not _NAME.match(name):
        raise SourceError(
            f"name {name!r}: use lower-case letters, digits, '.', '_' or '-' (at most 100)"
        )
    if session.scalar(select(Source.id).where(Source.name == name)) is not None:
        raise SourceError(f"name {name!r}: a source with this name exists")
    if kind == SourceKind.FEED:
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SourceError(f"feed URL {location!r}: must be an http(s) URL")
    elif kind == SourceKind.FOLDER:
        try:
            path = Path(location).expanduser().resolve()
            is_dir = path.is_dir()
        except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
            raise SourceError(f"folder {location[:200]!r}: cannot be read: {exc}") from exc
        if not is_dir:
            raise SourceError(f"folder {location!r}: not a directory")
        location = str(path)
    newsletter_id = None
    if newsletter_slug is not None:
        newsletter_id = session.scalar(
            select(Newsletter.id).where(Newsletter.slug == newsletter_slug)
        )
        if newsletter_id is None:
            raise SourceError(f"newsletter {newsletter_slug!r}: no such newsletter")
    source = Source(
        name=name,
        kind=kind,
        location=location,
        newsletter_id=newsletter_id,
        mark_ready=mark_ready,
    )
    session.add(source)
    session.flush()
    return source


def enabled_sources(session: Session, names: list[str] | None = None) -> list[Source]:
    query = select(Source).where(Source.enabled.is_(True), Source.kind != SourceKind.API)
    if names:
        query = select(Source).where(Source.name.in_(names))
    return list(session.scalars(query.order_by(Source.id)))
