"""Where briefings come from: folders, feeds and the push API's tokens; pulling them.

Pulling stores each item in a transaction of its own (``mailer.briefings.pull``), so one
bad item never costs the others; the pull as a whole is then recorded in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound
from mailer.briefings import api_tokens, feeds
from mailer.briefings.folder import pull_folder
from mailer.briefings.pull import pull_sources
from mailer.briefings.report import PullReport
from mailer.briefings.sources import SourceError, add_source, enabled_sources
from mailer.db.models import ApiToken, Newsletter, Source, SourceKind
from mailer.db.session import transaction
from mailer.runtime import Runtime

__all__ = [
    "ApiTokenView",
    "PullItemError",
    "PullResult",
    "SourcePull",
    "SourceView",
    "add_feed",
    "add_folder",
    "create_api_token",
    "list_api_tokens",
    "list_sources",
    "pull",
    "remove",
    "revoke_api_token",
]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class SourceView:
    name: str
    kind: str
    location: str
    newsletter: str | None  # the slug of the one newsletter it feeds; None: all of them
    enabled: bool
    last_pulled_at: datetime | None
    last_outcome: str | None
    last_error: str | None
    mark_ready: bool  # False: its new briefings wait, as drafts, for an editor
    id: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "location": self.location,
            "newsletter": self.newsletter,
            "enabled": self.enabled,
            "mark_ready": self.mark_ready,
            "last_pulled_at": _iso(self.last_pulled_at),
            "last_outcome": self.last_outcome,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class ApiTokenView:
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class PullItemError:
    item: str
    message: str


@dataclass(frozen=True)
class SourcePull:
    """What one pull did to one source."""

    source: str
    counts: dict[str, int]  # new, updated, unchanged, corrected
    not_modified: bool
    errors: tuple[PullItemError, ...]
    summary: str  # "2 new, 1 failed", "not modified", "empty"

    @property
    def failed(self) -> int:
        return len(self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.counts,
            "failed": self.failed,
            "not_modified": self.not_modified,
            "errors": [{"item": e.item, "message": e.message} for e in self.errors],
        }

    @classmethod
    def of(cls, report: PullReport) -> SourcePull:
        return cls(
            source=report.source,
            counts={str(k): v for k, v in report.counts.items()},
            not_modified=report.not_modified,
            errors=tuple(PullItemError(e.item, e.message) for e in report.errors),
            summary=report.summary(),
        )


@dataclass(frozen=True)
class PullResult:
    sources: tuple[SourcePull, ...]

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        return {"sources": [s.as_dict() for s in self.sources], "failed": self.failed}


def list_sources(runtime: Runtime, actor: Actor) -> list[SourceView]:
    """Every source by name, with the outcome of its last pull."""
    actor.require(Role.EDITOR)
    with runtime.sessions() as session:
        rows = session.execute(
            select(Source, Newsletter.slug)
            .outerjoin(Newsletter, Newsletter.id == Source.newsletter_id)
            .order_by(Source.name)
        ).all()
        return [_view(source, slug) for source, slug in rows]


def _view(source: Source, newsletter: str | None) -> SourceView:
    return SourceView(
        name=source.name,
        kind=source.kind,
        location=source.location,
        newsletter=newsletter,
        enabled=source.enabled,
        last_pulled_at=source.last_pulled_at,
        last_outcome=source.last_outcome,
        last_error=source.last_error,
        mark_ready=source.mark_ready,
        id=source.id,
    )


def _add(
    runtime: Runtime,
    actor: Actor,
    kind: SourceKind,
    name: str,
    location: str,
    newsletter: str | None,
    draft: bool,
) -> SourceView:
    actor.require(Role.ADMIN)
    location_field = "url" if kind == SourceKind.FEED else "path"
    try:
        with transaction(runtime.sessions) as session:
            if session.scalar(select(Source.id).where(Source.name == name)) is not None:
                raise Conflict(f"a source named {name!r} exists")
            if newsletter is not None and (
                session.scalar(select(Newsletter.id).where(Newsletter.slug == newsletter)) is None
            ):
                raise Invalid(f"newsletter {newsletter!r}: no such newsletter", field="newsletter")
            try:
                source = add_source(
                    session,
                    name=name,
                    kind=kind,
                    location=location,
                    newsletter_slug=newsletter,
                    mark_ready=not draft,
                )
            except SourceError as exc:
                # What is left to refuse once existence and the newsletter are checked:
                # the name's spelling, or the location (the domain names which first).
                field = "name" if str(exc).startswith("name ") else location_field
                raise Invalid(str(exc), field=field) from exc
            view = _view(source, newsletter)
            audit.record(session, actor, "source.add", "source", source.id, after=view.as_dict())
    except IntegrityError as exc:
        raise Conflict(f"a source named {name!r} was added at the same time") from exc
    return view


def add_folder(
    runtime: Runtime,
    actor: Actor,
    name: str,
    path: str | Path,
    *,
    newsletter: str | None = None,
    draft: bool = False,
) -> SourceView:
    """A folder of .txt/.md briefing files (stored as its absolute path), for one
    newsletter (its slug) or all of them; ``draft``: new briefings wait for an editor."""
    return _add(runtime, actor, SourceKind.FOLDER, name, str(path), newsletter, draft)


def add_feed(
    runtime: Runtime,
    actor: Actor,
    name: str,
    url: str,
    *,
    newsletter: str | None = None,
    draft: bool = False,
) -> SourceView:
    """An RSS 2.0 or Atom feed (an http(s) URL), for one newsletter or all of them."""
    return _add(runtime, actor, SourceKind.FEED, name, url, newsletter, draft)


def remove(runtime: Runtime, actor: Actor, name: str) -> SourceView:
    """Remove a source and its pull errors (and tokens, for an API source); its briefings
    stay. Returns the source as it was."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        row = session.execute(
            select(Source, Newsletter.slug)
            .outerjoin(Newsletter, Newsletter.id == Source.newsletter_id)
            .where(Source.name == name)
            .with_for_update(of=Source)
        ).first()
        if row is None:
            raise NotFound(f"no source {name!r}")
        source, slug = row
        view = _view(source, slug)
        session.delete(source)
        audit.record(session, actor, "source.remove", "source", source.id, before=view.as_dict())
    return view


def pull(
    runtime: Runtime,
    actor: Actor,
    *,
    sources: Sequence[str] | None = None,
    folder: Path | None = None,
    on_item: Callable[[], None] | None = None,
) -> PullResult:
    """Pull new and changed briefings: every enabled folder and feed, or the ``sources``
    named; ``folder`` also pulls that directory once (an administrator's, since it reads
    any path the service can). ``on_item`` is called after each item (a progress bar)."""
    actor.require(Role.ADMIN if folder is not None else Role.EDITOR)
    names = list(dict.fromkeys(sources or ()))
    with runtime.sessions() as session:
        # Read once and detached when the session closes: each source is then pulled,
        # and its outcome recorded, in transactions of its own.
        chosen = enabled_sources(session, names or None)
    missing = set(names) - {s.name for s in chosen}
    if missing:
        raise NotFound(f"no source named {', '.join(sorted(missing))}")
    if not chosen and folder is None:
        raise NotFound(
            "no sources: add one with `mailer sources add-folder|add-feed`, or pass --folder"
        )
    if folder is not None and not folder.is_dir():
        raise Invalid(f"{folder}: not a directory", field="folder")
    patterns = runtime.settings.boilerplate_patterns
    reports: list[PullReport] = []
    with feeds.make_client(feeds.user_agent(runtime.settings.base_url)) as client:
        if folder is not None:
            try:
                reports.append(
                    pull_folder(runtime.sessions, folder, boilerplate=patterns, on_item=on_item)
                )
            except OSError as exc:  # removed or made unreadable since the check above
                raise Invalid(
                    f"{folder}: cannot read: {exc.strerror or exc}", field="folder"
                ) from exc
        reports += pull_sources(
            runtime.sessions, chosen, client, boilerplate=patterns, on_item=on_item
        )
    result = PullResult(tuple(SourcePull.of(r) for r in reports))
    with transaction(runtime.sessions) as session:
        audit.record(
            session,
            actor,
            "sources.pull",
            "source",
            after={s.source: s.summary for s in result.sources},
            note=f"folder {folder}" if folder is not None else None,
        )
    return result


def create_api_token(
    runtime: Runtime,
    actor: Actor,
    name: str,
    *,
    newsletter: str | None = None,
    draft: bool = False,
) -> str:
    """A token for a CMS called ``name`` (its briefings form the API source ``name``).
    The value is returned once; only its SHA-256 is kept."""
    actor.require(Role.ADMIN)
    try:
        with transaction(runtime.sessions) as session:
            if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
                raise Conflict(f"a token named {name!r} exists")
            if newsletter is not None and (
                session.scalar(select(Newsletter.id).where(Newsletter.slug == newsletter)) is None
            ):
                raise Invalid(f"newsletter {newsletter!r}: no such newsletter", field="newsletter")
            try:
                token = api_tokens.create_token(
                    session, name, newsletter_slug=newsletter, mark_ready=not draft
                )
            except SourceError as exc:
                # The name's spelling, or a folder or feed source of the same name.
                if str(exc).startswith("name "):
                    raise Invalid(str(exc), field="name") from exc
                raise Conflict(str(exc)) from exc
            audit.record(
                session,
                actor,
                "api_token.create",
                "api_token",
                name,
                after={"name": name, "newsletter": newsletter, "draft": draft},
            )
    except IntegrityError as exc:
        raise Conflict(f"a token named {name!r} was made at the same time") from exc
    return token


def list_api_tokens(runtime: Runtime, actor: Actor) -> list[ApiTokenView]:
    """Tokens by name (never their values)."""
    actor.require(Role.ADMIN)
    with runtime.sessions() as session:
        return [
            ApiTokenView(t.name, t.created_at, t.last_used_at, t.revoked_at)
            for t in session.scalars(select(ApiToken).order_by(ApiToken.name))
        ]


def revoke_api_token(runtime: Runtime, actor: Actor, name: str) -> None:
    """Stop a token from working, at once."""
    actor.require(Role.ADMIN)
    with transaction(runtime.sessions) as session:
        if not api_tokens.revoke(session, name):
            raise NotFound(f"no live token named {name!r}")
        audit.record(session, actor, "api_token.revoke", "api_token", name)
