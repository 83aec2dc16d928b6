"""Subject and preheader from a newsletter's small templates.

Editors write them in Jinja (sandboxed: a template cannot reach Python
internals), e.g. ``{{ top.title }}`` or ``Plus {{ count - 1 }} more``. They
produce plain text for a header, so nothing is HTML-escaped here; the email
template escapes them where they appear in HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

MAX_HEADER_LENGTH = 300


class TitleTemplateError(ValueError):
    """A subject or preheader template that cannot be rendered."""


@dataclass(frozen=True)
class TitleItem:
    title: str
    lead: str
    tags: tuple[str, ...]


def truncate_words(text: str, limit: int) -> str:
    """Cut at a word boundary, ending with an ellipsis, so that subjects stay readable."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-—")
    return cut + "…"


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    env.filters["truncate_words"] = truncate_words
    return env


_ENV = _environment()


def check(template: str, field: str) -> None:
    """Raise TitleTemplateError if ``template`` does not render for a sample edition."""
    sample = [TitleItem("Headline", "Lead sentence.", ()), TitleItem("Second", "Another.", ())]
    render(template, sample, newsletter="Sample", day=date(2026, 1, 1), field=field)


def render(
    template: str, items: Sequence[TitleItem], *, newsletter: str, day: date, field: str
) -> str:
    if not items:
        raise TitleTemplateError(f"{field}: nothing to title")
    try:
        text = _ENV.from_string(template).render(
            top=items[0],
            others=list(items[1:]),
            briefings=list(items),
            count=len(items),
            newsletter=newsletter,
            date=day,
        )
    except TemplateError as exc:
        raise TitleTemplateError(f"{field} template: {exc}") from exc
    # A header is one line: a template must not be able to inject another header.
    return truncate_words(" ".join(text.split()), MAX_HEADER_LENGTH)
