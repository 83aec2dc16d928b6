"""Fuzzing the ways briefings come in, as ordinary tests with a fixed small budget.

This is what found issue 17's crashes (830,000 inputs then); the suite keeps a few hundred
per parser, derandomized so a run is repeatable. The properties: nothing but the entry
point's own error escapes it, and nothing it returns or stores holds a control character.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.briefings import feeds
from mailer.briefings.folder import pull_folder
from mailer.briefings.parser import (
    BriefingError,
    ParsedBriefing,
    parse_fields,
    parse_html,
    parse_text,
)
from mailer.db.models import Briefing
from mailer.runtime import Runtime

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None)
# Against a database each example costs a commit: fewer of them, on both databases.
FUZZ_STORED = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

UNWANTED = frozenset(
    [chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))]
    + ["\ud800", "\udbff", "\udc00", "\udfff", "\ufffe", "\uffff"]
)

# Characters that mean something to one of the parsers, and the ones no text may keep.
_SPECIAL = list(":*_`[]<>&#;!\"'-=/\\{}|?.,\n\t\r ") + sorted(UNWANTED) + ["\u00a0", "\u2019"]
_CHARACTERS = st.one_of(
    st.sampled_from(_SPECIAL),
    st.characters(exclude_categories=()),  # every code point, lone surrogates included
    st.sampled_from(list("abcXYZ019")),
)
_TEXT = st.text(_CHARACTERS, max_size=60)

_WORDS = st.sampled_from(
    [
        "Why it matters",
        "What's going on now",
        "The minister said",
        "Already a subscriber? Log in.",
        "Log in to keep reading",
        "https://news.example.org/a",
        "2026-01-02T43:04:05",
        "//]",
        "&#x110000;",
        "&#0;",
        "&#1;",
        "&amp;",
        "\x00",
        "\x01",
        "\ud800",
    ]
)
_PIECE = st.one_of(_TEXT, _WORDS)


def _joined(pieces: st.SearchStrategy[str], max_size: int = 12) -> st.SearchStrategy[str]:
    return st.lists(pieces, max_size=max_size).map("".join)


# --- plain text and Markdown ------------------------------------------------------------

_LINE = st.one_of(
    _PIECE,
    st.tuples(st.sampled_from(["", "**", "__", "- ", "> ", "# ", "1. ", "    "]), _PIECE).map(
        lambda t: t[0] + t[1]
    ),
    st.tuples(_WORDS, st.sampled_from([":", ":**", "**:", ": "]), _PIECE).map("".join),
)
_BODY = st.lists(_LINE, max_size=10).map("\n".join)

_YAML_TOKEN = st.sampled_from(
    [
        "title: ",
        "url: ",
        "published: ",
        "tags: ",
        "other: ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "- ",
        "  ",
        "\n",
        "&a ",
        "*a",
        "<<: ",
        "!!binary ",
        "!!timestamp ",
        "!!int ",
        "!!float ",
        "!!set ",
        "!!omap ",
        "!!str ",
        "!!python/object ",
        "? ",
        '"',
        "'",
        "|",
        ">",
        "2026-11-23",
        "2026-01-02T43:04:05",
        "12:30:45",
        "0x1F",
        "1e400",
        ".inf",
        "~",
        "//]",
        "http://[",
        "https://news.example.org/x",
        "\x00",
        "\x85",
        "\ufeff",
    ]
)
_FRONT_MATTER = _joined(st.one_of(_YAML_TOKEN, _TEXT), max_size=20)
_MARKDOWN_FILE = st.one_of(
    _BODY,
    st.tuples(_FRONT_MATTER, _BODY).map(lambda t: f"---\n{t[0]}\n---\n{t[1]}"),
    st.tuples(st.integers(1, 60), st.sampled_from(["[", "{", "- ", "a:\n "])).map(
        lambda t: "---\ntitle: " + t[1] * t[0] + "\n---\nLead.\n"
    ),
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def assert_clean(*values: Any) -> None:
    found = sorted(
        {f"U+{ord(c):04X}" for v in values for s in _strings(v) for c in s if c in UNWANTED}
    )
    assert not found, found


def _parsed_or_error(parse: Any) -> ParsedBriefing | None:
    try:
        parsed: ParsedBriefing = parse()
    except BriefingError as exc:
        assert_clean(str(exc))
        # An error names what is wrong; it never carries the input back at length.
        assert len(str(exc)) < 1200
        return None
    assert_clean(parsed.to_dict())
    return parsed


@FUZZ
@given(_BODY)
def test_plain_text_raises_only_briefing_errors_and_returns_clean_text(text: str) -> None:
    _parsed_or_error(lambda: parse_text(text, source="fuzz.txt", markdown=False))


@FUZZ
@given(_MARKDOWN_FILE)
def test_markdown_raises_only_briefing_errors_and_returns_clean_text(text: str) -> None:
    _parsed_or_error(lambda: parse_text(text, source="fuzz.md", markdown=True))


# --- HTML -------------------------------------------------------------------------------

_TAG = st.sampled_from(
    [
        "p",
        "div",
        "span",
        "strong",
        "b",
        "em",
        "a",
        "ul",
        "ol",
        "li",
        "br",
        "hr",
        "h2",
        "table",
        "td",
        "tr",
        "blockquote",
        "script",
        "style",
        "section",
        "img",
        "q",
        "small",
        "pre",
    ]
)
_ATTRIBUTES = st.sampled_from(
    (
        "",
        ' class="paywall"',
        ' class="note"',
        ' href="https://x.example/"',
        ' href="javascript:x"',
        ' href="//host/"',
        " onclick=alert(1)",
        ' class="',
        " src=x",
    )
)
_HTML_PIECE = st.one_of(
    _PIECE,
    st.tuples(_TAG, _ATTRIBUTES).map(lambda t: f"<{t[0]}{t[1]}>"),
    _TAG.map(lambda t: f"</{t}>"),
    st.sampled_from(["<!--", "-->", "<![CDATA[", "]]>", "<", ">", "&", "&nbsp;", "<br><br>"]),
)
_HTML = st.one_of(
    _joined(_HTML_PIECE, max_size=25),
    st.tuples(st.integers(1, 300), _TAG).map(lambda t: f"<{t[1]}>" * t[0] + "Deep text."),
)


@FUZZ
@given(_HTML, st.one_of(st.none(), _PIECE), st.one_of(st.none(), _PIECE))
def test_html_raises_only_briefing_errors_and_returns_clean_text(
    body: str, title: str | None, url: str | None
) -> None:
    _parsed_or_error(lambda: parse_html(body, source="fuzz", title=title, url=url))


@FUZZ
@given(
    st.sampled_from(["text", "markdown", "html"]),
    st.one_of(_HTML, _BODY),
    st.lists(st.tuples(st.one_of(st.none(), _PIECE), st.one_of(_HTML, _BODY)), max_size=4),
    st.one_of(st.none(), _PIECE),
)
def test_posted_fields_raise_only_briefing_errors_and_return_clean_text(
    body_format: str, lead: str, sections: list[tuple[str | None, str]], title: str | None
) -> None:
    # What a CMS posts to /api/briefings as lead and sections, after the JSON is read.
    _parsed_or_error(
        lambda: parse_fields(
            source="api:fuzz:1",
            title=title,
            lead=lead,
            sections=sections,
            body_format=body_format,  # type: ignore[arg-type]
        )
    )


# --- feeds ------------------------------------------------------------------------------

_PROLOGUE = st.sampled_from(
    [
        b"",
        b'<?xml version="1.0" encoding="utf-8"?>',
        b'<?xml version="1.0" encoding="iso-8859-1"?>\n',
        b'<?xml version="1.0" encoding="utf-16"?>',
        b'<?xml version="1.0" encoding="\xf9"?>',
        b'<?xml version="1.0" encoding="\x00"?>',
        b'<?xml version="1.0" encoding="rot13"?>',
        b'<?xml version="1.0" encoding="punycode"?>',
        b"<?xml ",
        b"<?xml-stylesheet href='x'?>",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\xfe\xff\x00<",
    ]
)
_FEED_TEXT = _joined(st.one_of(_HTML_PIECE, _WORDS), max_size=8)
_ENCODED = st.tuples(_FEED_TEXT, st.sampled_from(["utf-8", "latin-1", "utf-16-le"])).map(
    lambda t: t[0].encode(t[1], "surrogatepass" if t[1].startswith("utf") else "replace")
)
_ELEMENT = st.one_of(
    st.tuples(
        st.sampled_from(["title", "link", "guid", "id", "description", "category", "author"]),
        _ENCODED,
    ).map(lambda t: b"<" + t[0].encode() + b">" + t[1] + b"</" + t[0].encode() + b">"),
    _ENCODED.map(lambda t: b"<description><![CDATA[" + t + b"]]></description>"),
    st.sampled_from(
        (
            b"<item<category</item>",
            b"<item>",
            b"</item>",
            b"<entry>",
            b"</entry>",
            b"&#x110000;",
            b"<link href='http://[/'/>",
            b"<category term='\x01'/>",
            b"<updated>2026-13-45</updated>",
        )
    ),
)
_ROOT = st.sampled_from(
    [
        (b'<rss version="2.0"><channel><title>T</title><item>', b"</item></channel></rss>"),
        (b'<feed xmlns="http://www.w3.org/2005/Atom"><entry>', b"</entry></feed>"),
        (b'<rss version="2.0" xmlns:dc="http://purl.org/dc/\xa0x/"><channel><item>', b""),
        (b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'><item>", b""),
        (b"", b""),
    ]
)
_FEED = st.one_of(
    st.tuples(_PROLOGUE, _ROOT, st.lists(_ELEMENT, max_size=8)).map(
        lambda t: t[0] + t[1][0] + b"".join(t[2]) + t[1][1]
    ),
    st.binary(max_size=200),
)
_CONTENT_TYPE = st.sampled_from(
    (
        None,
        "application/rss+xml",
        "text/xml",
        "text/html",
        "application/xml; charset=latin-1",
        "application/atom+xml; charset=utf-16",
        "text/xml; charset=\x00",
        "application/xml; charset=nope",
    )
)


@FUZZ
@given(_FEED, _CONTENT_TYPE)
def test_feeds_raise_only_feed_errors_and_items_are_clean(
    content: bytes, content_type: str | None
) -> None:
    try:
        parsed = feeds.parse_feed(
            content, url="https://wire.example/feed", content_type=content_type, max_seconds=None
        )
    except feeds.FeedError as exc:
        assert_clean(str(exc))
        assert len(str(exc)) < 1200
        return
    for item in parsed:
        if isinstance(item, BriefingError):
            assert_clean(str(item))
            # The catch-all for entries built in a shape nobody foresaw never had to act.
            assert "unreadable item" not in str(item)
        else:
            assert isinstance(item, feeds.FeedItem)
            assert_clean(item.guid, item.author, item.parsed.to_dict())


# --- what is stored: the pull's guarded entry point, on both databases ------------------

_counter = itertools.count()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "fuzzed"
    path.mkdir()
    return path


@FUZZ_STORED
@given(st.lists(st.tuples(st.booleans(), _MARKDOWN_FILE), min_size=1, max_size=3))
def test_a_folder_pull_never_raises_and_stores_only_clean_text(
    runtime: Runtime, folder: Path, files: list[tuple[bool, str]]
) -> None:
    for old in folder.iterdir():
        old.unlink()
    for markdown, text in files:
        name = f"{next(_counter):06d}.{'md' if markdown else 'txt'}"
        (folder / name).write_bytes(text.encode("utf-8", "surrogatepass"))

    report = pull_folder(runtime.sessions, folder)

    assert report.failed + sum(report.counts.values()) == len(files)
    # Every failure was the parser's own error, never the pull's catch-all.
    assert not [e.message for e in report.errors if "cannot ingest" in e.message]
    assert_clean([(e.item, e.message) for e in report.errors])
    with runtime.sessions() as session:
        for briefing in session.scalars(select(Briefing)):
            assert_clean(
                briefing.source_key,
                briefing.title,
                briefing.lead,
                briefing.lead_html,
                briefing.sections,
                briefing.tags,
                briefing.dropped,
                briefing.url,
            )
