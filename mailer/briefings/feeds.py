"""RSS 2.0 and Atom feeds: fetched politely, read with feedparser, parsed like any briefing.

Polite means: a conditional GET (ETag, Last-Modified) so an unchanged feed
costs one 304, an explicit timeout, a size cap, and a User-Agent that says
who is asking.
"""

from __future__ import annotations

import calendar
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser
import httpx

from mailer.briefings.parser import DEFAULT_BOILERPLATE, BriefingError, ParsedBriefing, parse_html

DEFAULT_TIMEOUT = 10.0
MAX_URL_LENGTH = 2000
MAX_GUID_LENGTH = 500
MAX_TAG_LENGTH = 50
MAX_VALIDATOR_LENGTH = 100
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


def user_agent(base_url: str) -> str:
    return f"mailer/0.1 (briefing feed reader; +{base_url})"


class FeedError(RuntimeError):
    """The feed as a whole could not be read; nothing from it was stored."""


@dataclass(frozen=True)
class Fetched:
    content: bytes | None  # None: not modified since the validators we sent
    etag: str | None
    last_modified: str | None
    content_type: str | None


@dataclass(frozen=True)
class FeedItem:
    guid: str
    author: str | None
    parsed: ParsedBriefing


def make_client(agent: str, timeout: float = DEFAULT_TIMEOUT) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": agent, "Accept": _ACCEPT},
    )


_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)


def fetch(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Fetched:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 304:
                return Fetched(None, etag, last_modified, None)
            if response.status_code != 200:
                raise FeedError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FeedError(
                    f"{url}: feed is {int(declared):,} bytes; the limit is {max_bytes:,}"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FeedError(f"{url}: feed is larger than the limit of {max_bytes:,} bytes")
            return Fetched(
                bytes(body),
                _validator(response.headers.get("ETag")),
                _validator(response.headers.get("Last-Modified")),
                response.headers.get("Content-Type"),
            )
    except httpx.TimeoutException as exc:
        raise FeedError(f"{url}: timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise FeedError(f"{url}: {type(exc).__name__}: {exc}") from exc


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified we can store; an absurd one is simply not used."""
    return value if value is not None and len(value) <= MAX_VALIDATOR_LENGTH else None


def read_feed(content: bytes, *, url: str, content_type: str | None = None) -> Any:
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    feed = feedparser.parse(content, response_headers=headers)
    if feed.bozo and not feed.entries:
        raise FeedError(f"{url}: not a readable RSS or Atom feed: {feed.bozo_exception}")
    if not feed.entries and not feed.get("feed"):
        raise FeedError(f"{url}: not a readable RSS or Atom feed")
    return feed


def items(
    feed: Any, *, url: str, boilerplate: Sequence[str] = DEFAULT_BOILERPLATE
) -> Iterator[FeedItem | BriefingError]:
    """Each entry parsed into a briefing, or the error that says why it could not be."""
    for position, entry in enumerate(feed.entries, start=1):
        guid = entry.get("id") or entry.get("link")
        where = f"{url} item {position}"
        if not guid:
            yield BriefingError(where, "item has neither a guid/id nor a link")
            continue
        try:
            yield _item(entry, guid=guid, where=f"{url} item {guid}", boilerplate=boilerplate)
        except BriefingError as exc:
            yield exc


def _item(entry: Any, *, guid: str, where: str, boilerplate: Sequence[str]) -> FeedItem:
    body = _body(entry)
    title = (entry.get("title") or "").strip() or None
    link = (
        entry.get("link")
        if str(entry.get("link", "")).startswith(("http://", "https://"))
        else None
    )
    if link is not None and len(link) > MAX_URL_LENGTH:
        link = None  # longer than any mail client or our column takes: keep the item
    tags = tuple(
        t.get("term", "").strip()[:MAX_TAG_LENGTH] for t in entry.get("tags", []) if t.get("term")
    )
    published = _published(entry)
    fingerprint = json.dumps(
        [title, link, body, tags, published.isoformat() if published else None],
        ensure_ascii=False,
    )
    parsed = parse_html(
        body,
        source=where,
        title=title,
        url=link,
        tags=tags,
        published_at=published,
        boilerplate=boilerplate,
        content_hash=hashlib.sha256(fingerprint.encode("utf-8")).hexdigest(),
    )
    author = (entry.get("author") or "").strip() or None
    if len(guid) > MAX_GUID_LENGTH:
        # Identity must fit its column; a digest of a long guid is just as stable.
        guid = "sha256:" + hashlib.sha256(guid.encode("utf-8")).hexdigest()
    return FeedItem(guid=guid, author=author[:200] if author else None, parsed=parsed)


def _body(entry: Any) -> str:
    contents = entry.get("content") or []
    for content in contents:
        if "html" in (content.get("type") or ""):
            return str(content.get("value") or "")
    if contents:
        return str(contents[0].get("value") or "")
    return str(entry.get("summary") or entry.get("description") or "")


def _published(entry: Any) -> datetime | None:
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if stamp is None:
        return None
    # feedparser normalises dates to UTC struct_time.
    return datetime.fromtimestamp(calendar.timegm(stamp), UTC)
