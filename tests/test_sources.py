"""Pulling folders and feeds over real HTTP: conditional GET, failures recorded, rest kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailer.briefings import feeds
from mailer.briefings.pull import pull_sources
from mailer.briefings.sources import SourceError, add_source, enabled_sources
from mailer.db.models import Briefing, BriefingStatus, PullError, Source, SourceKind
from mailer.db.session import transaction
from mailer.runtime import Runtime
from tests.feed_server import FeedServer, Route, rss, serving

SAMPLE_FEED = Path(__file__).parent / "data" / "feeds" / "briefings.rss"
ITEM = (
    "<p>Already a subscriber? Log in to keep reading.</p>"
    "<p>The harbour reopened on Monday after a week of storms.</p>"
    "<p><strong>What's going on now:</strong> Ferries resumed at dawn.</p>"
)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with serving() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with feeds.make_client("mailer-tests/1.0", timeout=1.0) as http:
        yield http


def add(runtime: Runtime, name: str, kind: SourceKind, location: str, **kw: object) -> None:
    with transaction(runtime.sessions) as session:
        add_source(session, name=name, kind=kind, location=location, **kw)  # type: ignore[arg-type]


def pull(runtime: Runtime, client: httpx.Client, *names: str) -> dict[str, object]:
    with runtime.sessions() as session:
        sources = enabled_sources(session, list(names) or None)
    return {r.source: r for r in pull_sources(runtime.sessions, sources, client)}


def briefings(runtime: Runtime) -> dict[str, Briefing]:
    with runtime.sessions() as session:
        return {b.source_key: b for b in session.scalars(select(Briefing))}


def test_sample_feed_is_ingested_with_its_metadata(
    runtime: Runtime, server: FeedServer, client: httpx.Client
) -> None:
    server.routes["/feed.rss"] = Route(body=SAMPLE_FEED.read_bytes(), etag='"v1"')
    add(runtime, "newsroom", SourceKind.FEED, server.url("/feed.rss"))

    report = pull(runtime, client)["newsroom"]

    assert report.summary() == "2 new"  # type: ignore[attr-defined]
    stored = briefings(runtime)
    strike = stored["feed:newsroom:briefing-2026-11-24-port-strike"]
    assert strike.title == "Port strike enters second week as talks stall"
    assert strike.lead.startswith("Dockworkers at the country's three busiest ports")
    assert strike.url == "https://news.example.org/briefings/port-strike-week-two"
    assert strike.tags == ["business", "labor"]
    assert strike.author == "Newsroom"
    assert strike.published_at == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert strike.status == BriefingStatus.READY
    assert [s["label"] for s in strike.sections] == [
        "Some stuff you should know before you read",
        "What\u2019s going on now",
        "What to watch",
    ]
    assert (
        strike.sections[1]["paragraphs"][-1] == "About 40 container ships are now waiting offshore."
    )
    assert any("Already a subscriber" in d for d in strike.dropped)
    assert server.routes["/feed.rss"].requests[0]["user-agent"] == "mailer-tests/1.0"


def test_unchanged_feed_costs_one_304_and_changes_are_picked_up(
    runtime: Runtime, server: FeedServer, client: httpx.Client
) -> None:
    items = [{"guid": "a", "title": "Harbour reopens", "content": ITEM}]
    route = Route(body=rss(items), etag='"v1"', last_modified="Tue, 24 Nov 2026 11:00:00 GMT")
    server.routes["/feed.rss"] = route
    add(runtime, "newsroom", SourceKind.FEED, server.url("/feed.rss"))

    assert pull(runtime, client)["newsroom"].summary() == "1 new"  # type: ignore[attr-defined]
    second = pull(runtime, client)["newsroom"]
    assert second.not_modified  # type: ignore[attr-defined]
    assert route.requests[1]["if-none-match"] == '"v1"'
    assert route.requests[1]["if-modified-since"] == "Tue, 24 Nov 2026 11:00:00 GMT"

    edited = ITEM.replace("dawn", "noon")
    route.body = rss(
        [
            {"guid": "a", "title": "Harbour reopens", "content": edited},
            {"guid": "b", "title": "Second story", "content": ITEM},
        ]
    )
    route.etag = '"v2"'
    third = pull(runtime, client)["newsroom"]
    assert third.summary() == "1 new, 1 updated"  # type: ignore[attr-defined]
    stored = briefings(runtime)["feed:newsroom:a"]
    assert stored.sections[0]["paragraphs"] == ["Ferries resumed at noon."]


def test_a_failing_feed_is_recorded_and_the_others_still_pulled(
    runtime: Runtime, server: FeedServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.routes["/down.rss"] = Route(status=500, body=b"oops")
    server.routes["/slow.rss"] = Route(body=rss([]), delay=3.0)
    server.routes["/garbage.rss"] = Route(body=b"<html><body>not a feed", content_type="text/html")
    server.routes["/good.rss"] = Route(body=rss([{"guid": "g", "title": "Good", "content": ITEM}]))
    folder = tmp_path / "briefings"
    folder.mkdir()
    (folder / "one.txt").write_text("A ferry sailed.\nWhy it matters: Islands need it.\n")
    add(runtime, "down", SourceKind.FEED, server.url("/down.rss"))
    add(runtime, "slow", SourceKind.FEED, server.url("/slow.rss"))
    add(runtime, "garbage", SourceKind.FEED, server.url("/garbage.rss"))
    add(runtime, "good", SourceKind.FEED, server.url("/good.rss"))
    add(runtime, "desk", SourceKind.FOLDER, str(folder), mark_ready=False)

    reports = pull(runtime, client)

    assert "HTTP 500" in reports["down"].errors[0].message  # type: ignore[attr-defined]
    assert "timed out" in reports["slow"].errors[0].message  # type: ignore[attr-defined]
    assert "not a readable RSS or Atom feed" in reports["garbage"].errors[0].message  # type: ignore[attr-defined]
    assert reports["good"].summary() == "1 new"  # type: ignore[attr-defined]
    assert reports["desk"].summary() == "1 new"  # type: ignore[attr-defined]
    with runtime.sessions() as session:
        logged = {e.source_id: e.message for e in session.scalars(select(PullError))}
        by_name = {s.name: s for s in session.scalars(select(Source))}
        assert "HTTP 500" in logged[by_name["down"].id]
        assert by_name["down"].last_error is not None and by_name["good"].last_error is None
        assert by_name["good"].last_outcome == "1 new"
        desk = session.scalars(
            select(Briefing).where(Briefing.source_id == by_name["desk"].id)
        ).one()
        assert desk.status == BriefingStatus.DRAFT  # this source leaves briefings for an editor


def test_bad_items_are_reported_and_good_ones_kept(
    runtime: Runtime, server: FeedServer, client: httpx.Client
) -> None:
    hostile = (
        "<p>The council met on Tuesday.</p><script>alert(1)</script>"
        '<p><b>Why it matters:</b> <a href="javascript:alert(2)">Roads</a> '
        '<img src="https://tracker.example/p.gif" width="1"> close <a href="https://x.example/">soon</a>.</p>'
    )
    server.routes["/feed.rss"] = Route(
        body=rss(
            [
                {
                    "guid": "empty",
                    "title": "Nothing here",
                    "content": "<p>Already a subscriber? Log in.</p>",
                },
                {"guid": "huge", "title": "Too long", "content": "<p>" + "word " * 60_000 + "</p>"},
                {"guid": "hostile", "title": "Council", "content": hostile},
            ]
        )
    )
    add(runtime, "newsroom", SourceKind.FEED, server.url("/feed.rss"))

    report = pull(runtime, client)["newsroom"]

    assert report.counts["new"] == 1  # type: ignore[attr-defined]
    messages = " | ".join(e.message for e in report.errors)  # type: ignore[attr-defined]
    assert "item empty" in messages and "item huge" in messages
    stored = briefings(runtime)["feed:newsroom:hostile"]
    html = " ".join(" ".join(s["html"]) for s in stored.sections)
    assert "script" not in html and "javascript:" not in html and "tracker" not in html
    assert 'href="https://x.example/"' in html
    assert "alert(1)" not in stored.lead + " ".join(stored.sections[0]["paragraphs"])


def test_source_definitions_are_checked(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="must be an http"):
        add(runtime, "bad", SourceKind.FEED, "ftp://example.org/feed")
    with pytest.raises(SourceError, match="not a directory"):
        add(runtime, "bad", SourceKind.FOLDER, str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="name"):
        add(runtime, "Bad Name", SourceKind.FOLDER, str(tmp_path))
    add(runtime, "desk", SourceKind.FOLDER, str(tmp_path))
    with pytest.raises(SourceError, match="exists"):
        add(runtime, "desk", SourceKind.FOLDER, str(tmp_path))
    with pytest.raises(SourceError, match="no such newsletter"):
        add(runtime, "other", SourceKind.FOLDER, str(tmp_path), newsletter_slug="nope")
