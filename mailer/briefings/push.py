"""Briefings pushed by a CMS: validated, parsed like any other, stored idempotently."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    UrlConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy.orm import Session

from mailer.briefings.parser import (
    DEFAULT_BOILERPLATE,
    ParsedBriefing,
    parse_fields,
    parse_html,
    parse_text,
)
from mailer.briefings.sanitize import clean_text
from mailer.briefings.store import StoreOutcome, store_briefing
from mailer.db.models import Briefing, BriefingStatus, Source

MAX_BODY_CHARS = 200_000


class SectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, max_length=80)
    body: str = Field(min_length=1, max_length=MAX_BODY_CHARS)


class BriefingIn(BaseModel):
    """Either ``lead`` and ``sections``, or a raw ``body`` in ``format``."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\s]+$")
    title: str | None = Field(default=None, max_length=500)
    lead: str | None = Field(default=None, max_length=5000)
    sections: list[SectionIn] | None = Field(default=None, max_length=50)
    body: str | None = Field(default=None, max_length=MAX_BODY_CHARS)
    format: Literal["text", "markdown", "html"] = "text"
    url: Annotated[HttpUrl, UrlConstraints(max_length=2000)] | None = None
    tags: list[str] = Field(default_factory=list, max_length=20)
    published: datetime | None = None
    author: str | None = Field(default=None, max_length=200)

    @field_validator("external_id", "author")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        # Identity and byline are stored as given; the text fields are cleaned by the
        # parser. A value that was nothing but control characters is no value.
        if value is None:
            return None
        cleaned = clean_text(value)
        if not cleaned:
            raise ValueError("must not be only control characters")
        return cleaned

    @field_validator("lead", "title", "body")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> BriefingIn:
        if self.body is not None and (self.lead is not None or self.sections is not None):
            raise ValueError("send either body, or lead and sections, not both")
        if self.body is None and self.lead is None:
            raise ValueError("send a body, or a lead (with optional sections)")
        if any(not t.strip() or len(t) > 50 for t in self.tags):
            raise ValueError("tags must be non-empty and at most 50 characters")
        return self

    def fingerprint(self) -> str:
        """Identical posts hash alike, whatever order JSON keys came in."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_pushed(
    item: BriefingIn, *, source_name: str, boilerplate: Sequence[str] = DEFAULT_BOILERPLATE
) -> ParsedBriefing:
    """Raises BriefingError naming the field when the content does not parse."""
    where = f"api:{source_name}:{item.external_id}"
    url = str(item.url) if item.url else None
    published = item.published
    if published is not None and published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    tags = tuple(t.strip() for t in item.tags)
    if item.body is None:
        assert item.lead is not None
        return parse_fields(
            source=where,
            title=item.title,
            lead=item.lead,
            sections=[(s.label, s.body) for s in item.sections or []],
            body_format=item.format,
            url=url,
            tags=tags,
            published_at=published,
            content_hash=item.fingerprint(),
        )
    if item.format == "html":
        return parse_html(
            item.body,
            source=where,
            title=item.title,
            url=url,
            tags=tags,
            published_at=published,
            boilerplate=boilerplate,
            content_hash=item.fingerprint(),
        )
    parsed = parse_text(
        item.body, source=where, markdown=item.format == "markdown", boilerplate=boilerplate
    )
    return replace(
        parsed,
        title=item.title or parsed.title,
        url=url or parsed.url,
        tags=tags or parsed.tags,
        published_at=published or parsed.published_at,
        content_hash=item.fingerprint(),
    )


def store_pushed(
    session: Session,
    source: Source,
    item: BriefingIn,
    *,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
) -> tuple[Briefing, StoreOutcome]:
    parsed = parse_pushed(item, source_name=source.name, boilerplate=boilerplate)
    return store_briefing(
        session,
        f"api:{source.name}:{item.external_id}",
        parsed,
        source_id=source.id,
        author=item.author,
        initial_status=BriefingStatus.READY if source.mark_ready else BriefingStatus.DRAFT,
    )
