"""Render an edition once: Jinja2 into MJML into HTML, and the plain-text twin."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from jinja2 import TemplateError
from markupsafe import Markup, escape
from mjml import mjml2html

from mailer.briefings.sanitize import sanitize_html
from mailer.rendering.personalize import new_nonce, placeholder, placeholders_in
from mailer.rendering.templates import email_environment, templates_dir

# Gmail clips HTML bodies past ~102 KB, hiding the footer and its unsubscribe link.
GMAIL_CLIP_BYTES = 102_000
HTML_BUDGET_BYTES = 90_000


class RenderError(RuntimeError):
    """The template could not be rendered into a sendable email."""


@dataclass(frozen=True)
class RenderedEdition:
    html: str
    text: str
    nonce: str


@dataclass(frozen=True)
class NewsletterView:
    name: str
    from_name: str
    postal_address: str
    audience_note: str
    language: str = "en"  # BCP 47: the HTML's lang


@dataclass(frozen=True)
class SectionView:
    label: str | None
    paragraphs: tuple[str, ...]  # plain text, for the text part
    html: tuple[Markup, ...]  # sanitized inline HTML, one per paragraph, for the HTML part


class StoredBriefing(Protocol):
    """What rendering needs of a stored briefing (the Briefing row satisfies it).

    A row may also carry an editor's correction, ``edited_title`` and ``edited_lead``
    (the Briefing row does); read with ``getattr`` so that plain records of a parsed
    file render too.
    """

    title: str
    lead: str
    lead_html: str
    sections: list[dict[str, Any]]
    url: str | None
    tags: list[str]


def effective_title(briefing: StoredBriefing, headline: str | None = None) -> str:
    """What the reader sees as the headline: the edition's own short headline for this
    briefing, else the editor's corrected title, else the source's."""
    edited: str | None = getattr(briefing, "edited_title", None)
    return headline or edited or briefing.title


def effective_lead(briefing: StoredBriefing) -> str:
    """The editor's corrected lead (plain text), else the source's."""
    edited: str | None = getattr(briefing, "edited_lead", None)
    return edited or briefing.lead


def _html(fragment: str | None, text: str) -> Markup:
    # Stored HTML was sanitized on the way in; it is sanitized again here so that
    # a row written by anything else still cannot put markup into an email.
    if fragment:
        return Markup(sanitize_html(fragment))  # noqa: S704 - allow-listed just now
    return escape(text)


@dataclass(frozen=True)
class BriefingView:
    title: str
    lead: str
    lead_html: Markup
    sections: tuple[SectionView, ...]
    url: str | None
    tags: tuple[str, ...]

    @classmethod
    def from_stored(cls, briefing: StoredBriefing, headline: str | None = None) -> BriefingView:
        """The briefing as this edition shows it: ``headline`` (the edition's short one),
        else the editor's correction, else the source's words."""
        sections = []
        for stored in briefing.sections:
            paragraphs = tuple(stored.get("paragraphs") or ())
            fragments = list(stored.get("html") or [])
            if len(fragments) != len(paragraphs):
                fragments = [""] * len(paragraphs)
            sections.append(
                SectionView(
                    label=stored.get("label"),
                    paragraphs=paragraphs,
                    html=tuple(_html(f, t) for f, t in zip(fragments, paragraphs, strict=True)),
                )
            )
        url = briefing.url
        edited_lead: str | None = getattr(briefing, "edited_lead", None)
        # A corrected lead is plain text typed by an editor: escaped, never markup.
        lead_html = escape(edited_lead) if edited_lead else _html(briefing.lead_html, briefing.lead)
        return cls(
            title=effective_title(briefing, headline),
            lead=effective_lead(briefing),
            lead_html=lead_html,
            sections=tuple(sections),
            url=url if url and urlsplit(url).scheme in ("http", "https") else None,
            tags=tuple(briefing.tags or ()),
        )


@dataclass(frozen=True)
class EditionView:
    subject: str
    preheader: str
    date: date

    @property
    def date_label(self) -> str:
        return f"{self.date:%A, %B} {self.date.day}, {self.date.year}"


def render_edition(
    template: str,
    newsletter: NewsletterView,
    edition: EditionView,
    briefings: Sequence[BriefingView],
    *,
    directory: Path | None = None,
) -> RenderedEdition:
    nonce = new_nonce()
    env = email_environment(templates_dir(directory))
    context = {
        "newsletter": newsletter,
        "edition": edition,
        "briefings": list(briefings),
        "token": lambda name: placeholder(nonce, name),
    }
    try:
        mjml_source = env.get_template(f"{template}.mjml").render(context)
        text = env.get_template(f"{template}.txt").render(context)
    except TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise RenderError(f"template {template!r}{where}: {exc}") from exc
    try:
        html = mjml2html(mjml_source, disable_comments=True, fonts={})
    except ValueError as exc:
        raise RenderError(f"template {template!r} is not valid MJML: {exc}") from exc

    if ' lang="und"' in html:
        # A template that names no language of its own gets the newsletter's.
        html = html.replace(' lang="und"', f' lang="{escape(newsletter.language)}"')
    size = len(html.encode("utf-8"))
    if size > HTML_BUDGET_BYTES:
        raise RenderError(
            f"rendered HTML is {size:,} bytes; keep it under {HTML_BUDGET_BYTES:,} "
            f"(Gmail clips at about {GMAIL_CLIP_BYTES:,}, hiding the unsubscribe link): "
            "send fewer briefings in this edition"
        )
    for part, content in (("HTML", html), ("text", text)):
        if "unsubscribe_url" not in placeholders_in(content, nonce):
            raise RenderError(f"template {template!r}: the {part} part has no unsubscribe link")
    return RenderedEdition(html=html, text=text, nonce=nonce)
