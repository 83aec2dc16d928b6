"""RSS 2.0 and Atom feeds: fetched politely, read with feedparser, parsed like any briefing.

Polite means: a conditional GET (ETag, Last-Modified) so an unchanged feed
costs one 304, an explicit timeout, a size cap, and a User-Agent that says
who is asking.

Guarded means: a feed is untrusted bytes, and feedparser has sharp edges (it raises on
some character references and encoding declarations, and its encoding-declaration
regex backtracks for minutes on a crafted first line). So the bytes are decoded here,
cleaned of control characters, and handed over with a plain declaration of our own
(:func:`prepare`); whatever feedparser still raises is the feed's error; and
:func:`parse_feed` runs the whole parse in a worker process with a time budget, so no
feed can hold a pull for longer than that.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import json
import logging
import multiprocessing
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import feedparser
import httpx

from mailer.briefings.parser import (
    DEFAULT_BOILERPLATE,
    MAX_URL_LENGTH,
    BriefingError,
    ParsedBriefing,
    http_url,
    parse_html,
)
from mailer.briefings.sanitize import clean_text

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
MAX_GUID_LENGTH = 500
MAX_TAG_LENGTH = 50
MAX_VALIDATOR_LENGTH = 100
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
# Wall-clock limits: a server dripping a byte a second never trips the read timeout.
DEFAULT_FETCH_SECONDS = 60.0
DEFAULT_PARSE_SECONDS = 30.0


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
    max_seconds: float = DEFAULT_FETCH_SECONDS,
) -> Fetched:
    deadline = time.monotonic() + max_seconds
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
                if time.monotonic() > deadline:
                    raise FeedError(f"{url}: still downloading after {max_seconds:g} s; gave up")
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


# Byte-order marks, longest first (UTF-32 LE begins like UTF-16 LE), then how "<?" looks
# in encodings that are not ASCII-compatible when there is no mark (XML 1.0, appendix F).
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
_MARKERS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)
# The XML declaration as XML 1.0 spells it. Linear to match, unlike the pattern feedparser
# uses, and a declaration that does not match it is refused rather than guessed at.
_S = r"[ \t\r\n]"
_XML_DECLARATION = re.compile(
    rf"<\?xml{_S}+version{_S}*={_S}*([\"'])[0-9.]{{1,10}}\1"
    rf"(?:{_S}+encoding{_S}*={_S}*([\"'])(?P<encoding>[A-Za-z][A-Za-z0-9._-]{{0,39}})\2)?"
    rf"(?:{_S}+standalone{_S}*={_S}*([\"'])(?:yes|no)\4)?{_S}*\?>"
)
_DECLARATION_START = re.compile(r"<\?xml(?:[ \t\r\n?]|$)")
_CHARSET = re.compile(r";\s*charset\s*=\s*[\"']?([A-Za-z0-9._:-]{1,40})", re.IGNORECASE)
# Codecs that are not character sets a feed is written in, or are slow on large input.
_REFUSED_CODECS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape"})
_OUR_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_CHARACTER_REFERENCE = re.compile(r"&#(?:[xX]([0-9A-Fa-f]{1,16})|([0-9]{1,16}));")


def prepare(content: bytes, *, url: str, content_type: str | None = None) -> bytes:
    """The feed as UTF-8 without control characters, under a declaration of our own.

    The character set is the byte-order mark's, else the HTTP charset, else the XML
    declaration's, else UTF-8, else windows-1252. The declaration is put on a line of
    its own: feedparser's regex then only ever reads that short line.
    """
    text = clean_text(_decode(content, content_type))
    # Whitespace before the declaration is a common slip, and harmless once it is gone.
    text = text.removeprefix("\ufeff").lstrip(" \t\r\n")
    text = _CHARACTER_REFERENCE.sub(_checked_reference, text)
    if _DECLARATION_START.match(text):
        declaration = _XML_DECLARATION.match(text)
        if declaration is None:
            raise FeedError(
                f"{url}: not a readable RSS or Atom feed: malformed XML declaration {text[:60]!r}"
            )
        text = text[declaration.end() :]
    return (_OUR_DECLARATION + text).encode("utf-8")


def _checked_reference(match: re.Match[str]) -> str:
    # feedparser raises on a reference past U+10FFFF, and one to a control character
    # would only be cleaned off later: either becomes the replacement character here.
    hexadecimal, decimal = match.groups()
    code = int(hexadecimal, 16) if hexadecimal is not None else int(decimal)
    if code > 0x10FFFF or clean_text(chr(code)) == "":
        return "\ufffd"
    return match.group()


def _decode(content: bytes, content_type: str | None) -> str:
    for mark, encoding in _BOMS:
        if content.startswith(mark):
            return content[len(mark) :].decode(encoding, "replace")
    for marker, encoding in _MARKERS:
        if content.startswith(marker):
            return content.decode(encoding, "replace")
    names: list[str] = []
    charset = _CHARSET.search(content_type or "")
    if charset is not None:
        names.append(charset.group(1))
    declaration = _XML_DECLARATION.match(content[:200].decode("latin-1"))
    if declaration is not None and declaration.group("encoding"):
        names.append(declaration.group("encoding"))
    for name in [*names, "utf-8"]:
        try:
            codec = codecs.lookup(name)
            # Text that reached here is ASCII-compatible (no mark said otherwise), so a
            # name for UTF-16 or UTF-32 is wrong, and rot13 and the like are no charsets.
            if codec.name in _REFUSED_CODECS or "<?xml".encode(codec.name) != b"<?xml":
                continue
            return content.decode(codec.name)
        except (LookupError, UnicodeError, ValueError):
            continue
    # windows-1252 leaves five bytes undefined; what is left of such a feed is still read.
    return content.decode("windows-1252", "replace")


def read_feed(content: bytes, *, url: str, content_type: str | None = None) -> Any:
    """The feed as feedparser reads it; FeedError for anything that is not a feed."""
    headers = {"content-location": url}
    if content_type:
        # The media type as sent (feedparser notes a non-XML one); the charset is ours now.
        headers["content-type"] = content_type.partition(";")[0].strip() + "; charset=utf-8"
    prepared = prepare(content, url=url, content_type=content_type)
    try:
        feed = feedparser.parse(prepared, response_headers=headers)
    except Exception as exc:
        # Its own bugs on hostile input (a namespace URI it cannot split, say): the feed
        # is unreadable, the pull goes on.
        raise FeedError(f"{url}: not a readable RSS or Atom feed ({type(exc).__name__})") from exc
    if feed.bozo and not feed.entries:
        reason = str(feed.bozo_exception)[:200]
        raise FeedError(f"{url}: not a readable RSS or Atom feed: {clean_text(reason)}")
    if not feed.entries and not feed.get("feed"):
        raise FeedError(f"{url}: not a readable RSS or Atom feed")
    return feed


def items(
    feed: Any, *, url: str, boilerplate: Sequence[str] = DEFAULT_BOILERPLATE
) -> Iterator[FeedItem | BriefingError]:
    """Each entry parsed into a briefing, or the error that says why it could not be."""
    for position, entry in enumerate(feed.entries, start=1):
        where = f"{url} item {position}"
        try:
            guid = _text(entry.get("id")) or _text(entry.get("link"))
            if not guid:
                yield BriefingError(where, "item has neither a guid/id nor a link")
                continue
            yield _item(entry, guid=guid, where=f"{url} item {guid[:200]}", boilerplate=boilerplate)
        except BriefingError as exc:
            yield exc
        except Exception as exc:
            # One entry feedparser built in a shape we did not foresee costs that entry.
            log.warning("feed.item_unreadable", extra={"url": url, "item": position}, exc_info=True)
            yield BriefingError(where, f"unreadable item ({type(exc).__name__})")


def parse_feed(
    content: bytes,
    *,
    url: str,
    content_type: str | None = None,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    max_seconds: float | None = DEFAULT_PARSE_SECONDS,
) -> list[FeedItem | BriefingError]:
    """Read a fetched feed and parse its items, in a worker process stopped after
    ``max_seconds`` (``None``: in this process, without a limit).

    Raises FeedError when the feed as a whole cannot be read or took too long.
    """
    if max_seconds is None:
        return _parse_here(content, url, content_type, tuple(boilerplate))
    context = _worker_context()
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(
        target=_parse_in_worker,
        args=(send, content, url, content_type, tuple(boilerplate)),
        name="mailer-feed-parse",
        daemon=True,
    )
    worker.start()
    send.close()
    try:
        if not receive.poll(max_seconds):
            worker.kill()
            raise FeedError(f"{url}: parsing took longer than {max_seconds:g} s; stopped")
        try:
            kind, value = receive.recv()
        except EOFError:
            worker.join(5)
            raise FeedError(
                f"{url}: the feed parser stopped (exit code {worker.exitcode})"
            ) from None
    finally:
        receive.close()
        worker.join(5)
    if kind == "error":
        raise FeedError(value)
    items_: list[FeedItem | BriefingError] = value
    return items_


def _parse_here(
    content: bytes, url: str, content_type: str | None, boilerplate: tuple[str, ...]
) -> list[FeedItem | BriefingError]:
    feed = read_feed(content, url=url, content_type=content_type)
    return list(items(feed, url=url, boilerplate=boilerplate))


def _parse_in_worker(
    send: Connection,
    content: bytes,
    url: str,
    content_type: str | None,
    boilerplate: tuple[str, ...],
) -> None:
    try:
        send.send(("items", _parse_here(content, url, content_type, boilerplate)))
    except FeedError as exc:
        send.send(("error", str(exc)))
    except Exception as exc:
        send.send(("error", f"{url}: not a readable RSS or Atom feed ({type(exc).__name__})"))
    finally:
        send.close()


_context: Any = None


def _worker_context() -> Any:
    # A fork server: a clean process to fork workers from, even when the caller runs
    # threads (the scheduler does), with the parser imported once rather than per feed.
    global _context
    if _context is None:
        methods = multiprocessing.get_all_start_methods()
        _context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            _context.set_forkserver_preload([__name__])
    return _context


def _text(value: object) -> str:
    return clean_text(value).strip() if isinstance(value, str) else ""


def _item(entry: Any, *, guid: str, where: str, boilerplate: Sequence[str]) -> FeedItem:
    body = _body(entry)
    title = _text(entry.get("title")) or None
    link = http_url(_text(entry.get("link")))
    if link is not None and len(link) > MAX_URL_LENGTH:
        link = None  # longer than any mail client or our column takes: keep the item
    tags = tuple(
        _text(t.get("term"))[:MAX_TAG_LENGTH]
        for t in entry.get("tags") or []
        if isinstance(t, dict) and _text(t.get("term"))
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
        content_hash=hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest(),
    )
    author = _text(entry.get("author")) or None
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
