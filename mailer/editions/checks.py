"""Pre-send checks of a rendered edition: what would hurt it in the inbox, or break the law.

Each check says ``ok``, ``warn`` (an editor should look) or ``refuse`` (it must not
go out as it is: approving and sending refuse while any check does). They read
only the rendition handed in; nothing here touches the database. Link checking is
the one check that talks to the network, and only when asked.

* size: Gmail clips HTML past ~102 KB and hides the footer with the unsubscribe
  link; above the 90 KB budget the edition is refused.
* unsubscribe link and postal address in both parts (CAN-SPAM, RFC 8058): refused
  when missing.
* subject: refused when empty, a warning past 90 characters (clients cut it).
* preheader: a warning when empty (clients show the body's first words instead).
* headlines longer than 14 words: a warning, naming them.
* links: ``javascript:``, ``data:``, ``vbscript:`` and ``file:`` refused; other links
  that are not absolute http(s) a warning; in-page anchors, ``mailto:`` and our own
  per-recipient placeholders are fine.
* images without alt text: a warning (image blocking shows readers nothing).
* links answering (optional): a HEAD to each, with a short timeout; a broken one
  is a warning (a site may be down for a minute).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urlsplit

import httpx

from mailer.rendering.personalize import placeholders_in
from mailer.rendering.render import GMAIL_CLIP_BYTES, HTML_BUDGET_BYTES

Level = Literal["ok", "warn", "refuse"]

SUBJECT_WARN_CHARS = 90
HEADLINE_WARN_WORDS = 14
# Past this share of the budget an editor hears of it before an extra briefing tips it.
SIZE_WARN_BYTES = HTML_BUDGET_BYTES * 8 // 10
DANGEROUS_SCHEMES = frozenset({"javascript", "vbscript", "data", "file"})
LINK_TIMEOUT_SECONDS = 5.0
MAX_LINKS_CHECKED = 100
_LINK_WORKERS = 8
# Browsers drop ASCII whitespace and control characters inside a scheme
# ("java\tscript:" runs), so schemes are read without them.
_IGNORED_IN_SCHEME = re.compile(r"[\x00-\x20\x7f]")
_SHOWN = 5  # names listed in one message; the rest are counted


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str


@dataclass(frozen=True)
class Rendition:
    """What is checked: the rendered parts as stored, with their placeholders."""

    html: str
    text: str
    nonce: str
    subject: str
    preheader: str
    postal_address: str
    headlines: tuple[str, ...]


class _Page(HTMLParser):
    """Links, images and visible text of an HTML part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[tuple[str, str | None]] = []  # (src, alt)
        self.words: list[str] = []
        self._hidden = 0  # inside <style>, <script> or <title>: not text a reader sees

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("a", "area") and "href" in values:
            self.links.append(values["href"] or "")
        elif tag == "img":
            self.images.append((values.get("src") or "", values.get("alt")))
        elif tag in ("style", "script", "title"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.words.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.words).split())


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_SHOWN])
    more = len(items) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def evaluate(
    rendition: Rendition,
    *,
    check_links: bool = False,
    timeout: float = LINK_TIMEOUT_SECONDS,
    user_agent: str = "mailer link check",
) -> list[Check]:
    """Every check, in a fixed order; ``check_links`` adds the network one."""
    page = _Page()
    page.feed(rendition.html)
    page.close()
    found = [
        size(rendition.html),
        unsubscribe(rendition),
        postal_address(rendition, page.text),
        subject(rendition.subject),
        preheader(rendition.preheader),
        headlines(rendition.headlines),
        links(page.links, rendition.nonce),
        images(page.images),
    ]
    if check_links:
        found.append(
            links_answer(
                checkable_links(page.links, rendition.nonce),
                timeout=timeout,
                user_agent=user_agent,
            )
        )
    return found


def size(html: str) -> Check:
    used = len(html.encode("utf-8"))
    said = f"{used / 1000:.1f} KB of HTML (Gmail clips at about {GMAIL_CLIP_BYTES // 1000} KB"
    if used > HTML_BUDGET_BYTES:
        return Check(
            "size",
            "refuse",
            f"{said}, hiding the unsubscribe link): keep it under "
            f"{HTML_BUDGET_BYTES // 1000} KB by taking briefings out",
        )
    if used > SIZE_WARN_BYTES:
        return Check("size", "warn", f"{said}): close to the {HTML_BUDGET_BYTES // 1000} KB limit")
    return Check("size", "ok", f"{said})")


def unsubscribe(rendition: Rendition) -> Check:
    missing = [
        part
        for part, content in (("HTML", rendition.html), ("text", rendition.text))
        if "unsubscribe_url" not in placeholders_in(content, rendition.nonce)
    ]
    if missing:
        return Check(
            "unsubscribe", "refuse", f"no unsubscribe link in the {' and '.join(missing)} part"
        )
    return Check("unsubscribe", "ok", "an unsubscribe link in both parts")


def postal_address(rendition: Rendition, visible_html: str) -> Check:
    address = " ".join(rendition.postal_address.split())
    if not address:
        return Check("postal_address", "refuse", "the newsletter has no postal address")
    missing = [
        part
        for part, content in (
            ("HTML", visible_html),
            ("text", " ".join(rendition.text.split())),
        )
        if address.casefold() not in content.casefold()
    ]
    if missing:
        return Check(
            "postal_address",
            "refuse",
            f"the postal address ({address}) is not in the {' and '.join(missing)} part",
        )
    return Check("postal_address", "ok", "the postal address is in the footer")


def subject(value: str) -> Check:
    value = value.strip()
    if not value:
        return Check("subject", "refuse", "the subject is empty")
    if len(value) > SUBJECT_WARN_CHARS:
        return Check(
            "subject",
            "warn",
            f"the subject is {len(value)} characters; inboxes cut it at about {SUBJECT_WARN_CHARS}",
        )
    return Check("subject", "ok", f"the subject is {len(value)} characters")


def preheader(value: str) -> Check:
    if not value.strip():
        return Check(
            "preheader", "warn", "no preheader: inboxes show the email's first words instead"
        )
    return Check("preheader", "ok", "a preheader is set")


def headlines(values: Sequence[str]) -> Check:
    long = [h for h in values if len(h.split()) > HEADLINE_WARN_WORDS]
    if long:
        named = [f"“{_short(h)}” ({len(h.split())} words)" for h in long]
        return Check(
            "headlines",
            "warn",
            f"headlines longer than {HEADLINE_WARN_WORDS} words (give them a short "
            f"headline): {_listed(named)}",
        )
    return Check("headlines", "ok", f"every headline is at most {HEADLINE_WARN_WORDS} words")


def _kind(href: str, nonce: str) -> str:
    """What a link is: ours (an anchor, mailto:, a placeholder), web, dangerous or other."""
    if f"%%{nonce}:" in href:
        return "ours"
    compact = _IGNORED_IN_SCHEME.sub("", href)
    if compact.startswith("#"):
        return "ours"
    parts = urlsplit(compact)
    scheme = parts.scheme.lower()
    if scheme == "mailto":
        return "ours"
    if scheme in DANGEROUS_SCHEMES:
        return "dangerous"
    if scheme in ("http", "https") and parts.netloc:
        return "web"
    return "other"


def links(hrefs: Sequence[str], nonce: str) -> Check:
    dangerous = [h for h in hrefs if _kind(h, nonce) == "dangerous"]
    other = [h for h in hrefs if _kind(h, nonce) == "other"]
    if dangerous:
        return Check(
            "links",
            "refuse",
            f"links that run code or open local files: {_listed([_short(h) for h in dangerous])}",
        )
    if other:
        return Check(
            "links",
            "warn",
            f"links that are not absolute http(s) addresses: {_listed([_short(h) for h in other])}",
        )
    return Check("links", "ok", f"{sum(_kind(h, nonce) == 'web' for h in hrefs)} web links")


def images(found: Sequence[tuple[str, str | None]]) -> Check:
    bare = [src for src, alt in found if not (alt or "").strip()]
    if bare:
        return Check(
            "images",
            "warn",
            f"images without alt text: {_listed([_short(s or '(no src)') for s in bare])}",
        )
    return Check("images", "ok", f"{len(found)} images, all with alt text")


def checkable_links(hrefs: Sequence[str], nonce: str) -> list[str]:
    """The distinct web links of a part, in order of appearance, at most a hundred."""
    web = [h.strip() for h in hrefs if _kind(h, nonce) == "web"]
    return list(dict.fromkeys(web))[:MAX_LINKS_CHECKED]


def _probe(client: httpx.Client, url: str, timeout: float) -> str | None:
    """None if the link answers, else what is wrong with it."""
    try:
        response = client.head(url)
        if response.status_code in (405, 501):
            # Some servers answer HEAD with "not allowed": ask for the page, read nothing.
            with client.stream("GET", url) as streamed:
                response = streamed
        if response.status_code >= 400:
            return f"HTTP {response.status_code}"
    except httpx.TimeoutException:
        return f"no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def links_answer(
    urls: Sequence[str],
    *,
    timeout: float = LINK_TIMEOUT_SECONDS,
    user_agent: str = "mailer link check",
) -> Check:
    if not urls:
        return Check("link_check", "ok", "no web links to check")
    with (
        httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": user_agent},
        ) as client,
        ThreadPoolExecutor(min(_LINK_WORKERS, len(urls))) as pool,
    ):
        outcomes = list(pool.map(lambda u: _probe(client, u, timeout), urls))
    broken = [f"{_short(u)} ({why})" for u, why in zip(urls, outcomes, strict=True) if why]
    if broken:
        return Check("link_check", "warn", f"links that do not answer: {_listed(broken)}")
    return Check("link_check", "ok", f"all {len(urls)} links answer")
