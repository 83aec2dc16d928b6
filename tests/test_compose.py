"""Composing editions: which briefings, in what order, titled how; editors' changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.briefings.parser import parse_text
from mailer.briefings.sources import add_source
from mailer.briefings.store import store_briefing
from mailer.db.models import (
    Briefing,
    BriefingStatus,
    Edition,
    EditionStatus,
    Newsletter,
    SourceKind,
)
from mailer.db.session import transaction
from mailer.dispatch import dispatcher
from mailer.editions import editing
from mailer.editions.compose import Composed, compose_edition
from mailer.editions.titles import TitleTemplateError, check
from mailer.rendering.personalize import personalize
from mailer.runtime import Runtime
from tests import factories

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def briefing(
    runtime: Runtime,
    key: str,
    title: str,
    *,
    hours_ago: float,
    tags: tuple[str, ...] = (),
    status: BriefingStatus = BriefingStatus.READY,
) -> int:
    parsed = parse_text(
        f"{title} happened today.\nWhy it matters: It matters for {key}.\n",
        source=key,
        markdown=False,
    )
    parsed = replace(parsed, title=title, tags=tags, published_at=NOW - timedelta(hours=hours_ago))
    with transaction(runtime.sessions) as session:
        stored, _ = store_briefing(session, key, parsed, initial_status=status)
        return stored.id


def compose(runtime: Runtime, newsletter_id: int, day: date, now: datetime = NOW) -> Composed:
    with transaction(runtime.sessions) as session:
        newsletter = session.get(Newsletter, newsletter_id)
        assert newsletter is not None
        composed = compose_edition(session, newsletter, edition_date=day, now=now)
        composed.edition.items  # noqa: B018 - load while the session is open
        return composed


def titles_of(runtime: Runtime, edition_id: int) -> list[str]:
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return [i.briefing.title for i in sorted(edition.items, key=lambda i: i.position)]


def test_takes_ready_recent_uncarried_briefings_newest_first(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "a", "Older story", hours_ago=10)
    briefing(runtime, "b", "Newest story", hours_ago=1)
    briefing(runtime, "c", "Stale story", hours_ago=72)  # beyond the 48-hour window
    briefing(runtime, "d", "Draft story", hours_ago=2, status=BriefingStatus.DRAFT)
    briefing(runtime, "e", "Archived story", hours_ago=2, status=BriefingStatus.ARCHIVED)

    first = compose(runtime, newsletter_id, date(2026, 11, 25))

    assert first.created and titles_of(runtime, first.edition.id) == ["Newest story", "Older story"]
    assert first.edition.subject == "Newest story"
    assert first.edition.preheader == "Plus 1 more: Older story"
    again = compose(runtime, newsletter_id, date(2026, 11, 25))
    assert not again.created and again.edition.id == first.edition.id


def test_next_edition_takes_only_what_came_since(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "a", "Monday story", hours_ago=30)
    monday = compose(runtime, newsletter_id, date(2026, 11, 24), now=NOW - timedelta(hours=24))
    assert titles_of(runtime, monday.edition.id) == ["Monday story"]

    briefing(runtime, "late", "Published before Monday's edition", hours_ago=26)
    briefing(runtime, "b", "Tuesday story", hours_ago=2)
    tuesday = compose(runtime, newsletter_id, date(2026, 11, 25))
    assert titles_of(runtime, tuesday.edition.id) == ["Tuesday story"]


def test_a_newsletters_own_source_feeds_only_that_newsletter(
    runtime: Runtime, tmp_path: Path
) -> None:
    daily = factories.newsletter(runtime, slug="daily")
    science = factories.newsletter(runtime, slug="science", lists=("lab",))
    with transaction(runtime.sessions) as session:
        source = add_source(
            session,
            name="lab-desk",
            kind=SourceKind.FOLDER,
            location=str(tmp_path),
            newsletter_slug="science",
        )
        source_id = source.id
    briefing(runtime, "everyone", "Story for all", hours_ago=1)
    own = briefing(runtime, "lab", "Lab story", hours_ago=2)
    with transaction(runtime.sessions) as session:
        stored = session.get(Briefing, own)
        assert stored is not None
        stored.source_id = source_id

    daily_edition = compose(runtime, daily, date(2026, 11, 25)).edition
    science_edition = compose(runtime, science, date(2026, 11, 25)).edition

    assert titles_of(runtime, daily_edition.id) == ["Story for all"]
    assert titles_of(runtime, science_edition.id) == ["Story for all", "Lab story"]


def test_tag_filter_and_limit(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    with transaction(runtime.sessions) as session:
        newsletter = session.get(Newsletter, newsletter_id)
        assert newsletter is not None
        newsletter.tag_filter, newsletter.max_briefings = ["Science"], 2
    briefing(runtime, "a", "Moon landing delayed", hours_ago=1, tags=("science", "space"))
    briefing(runtime, "b", "Rates held", hours_ago=2, tags=("business",))
    briefing(runtime, "c", "New comet", hours_ago=3, tags=("science",))
    briefing(runtime, "d", "Old telescope", hours_ago=4, tags=("science",))

    edition = compose(runtime, newsletter_id, date(2026, 11, 25)).edition

    assert titles_of(runtime, edition.id) == ["Moon landing delayed", "New comet"]


def test_nothing_new_is_recorded_as_skipped_and_composed_later(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    skipped = compose(runtime, newsletter_id, date(2026, 11, 25))
    assert skipped.skipped
    with runtime.sessions() as session:
        stored = session.get(Edition, skipped.edition.id)
        assert stored is not None and stored.status == EditionStatus.SKIPPED
        assert stored.status_reason == "no new briefings since the previous edition"
    with transaction(runtime.sessions) as session, pytest.raises(dispatcher.DispatchError):
        edition = session.get(Edition, skipped.edition.id)
        assert edition is not None
        dispatcher.start(session, edition)

    briefing(runtime, "a", "Late news", hours_ago=0.5)
    later = compose(runtime, newsletter_id, date(2026, 11, 25))
    assert later.edition.id == skipped.edition.id and not later.skipped
    assert titles_of(runtime, later.edition.id) == ["Late news"]


def test_editor_excludes_reorders_and_overrides(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    ids = [
        briefing(runtime, k, t, hours_ago=h)
        for k, t, h in (("a", "First", 1), ("b", "Second", 2), ("c", "Third", 3))
    ]
    edition_id = compose(runtime, newsletter_id, date(2026, 11, 25)).edition.id

    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        editing.exclude(session, edition, ids[1])
        editing.reorder(session, edition, [ids[2]])
        editing.retitle(edition, subject="Your Wednesday briefing", preheader="")
    assert titles_of(runtime, edition_id) == ["Third", "First"]
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition.text is not None and edition.token_nonce
        assert edition.subject == "Your Wednesday briefing"
        assert edition.preheader == "Plus 1 more: First"  # back to the template
        text = personalize(edition.text, edition.token_nonce, {"unsubscribe_url": "u"}, html=False)
        assert "1. Third\n2. First\n" in text and "Second" not in text

    # The excluded briefing is free for the next edition; once sending starts, no more edits.
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        dispatcher.start(session, edition)
    with transaction(runtime.sessions) as session, pytest.raises(editing.EditionLocked):
        edition = session.get(Edition, edition_id)
        assert edition is not None
        editing.exclude(session, edition, ids[0])
    with transaction(runtime.sessions) as session:
        statuses = dict(session.execute(select(Edition.id, Edition.status)).tuples().all())
    assert statuses[edition_id] == EditionStatus.SENDING


def test_title_templates_are_sandboxed_and_checked() -> None:
    check("{{ top.title }} and {{ count }} more", "subject")
    with pytest.raises(TitleTemplateError, match="subject template"):
        check("{{ top.missing_field }}", "subject")
    with pytest.raises(TitleTemplateError):
        check("{{ top.__class__.__mro__[1].__subclasses__() }}", "subject")


def test_a_briefing_from_a_shared_source_goes_to_every_newsletter(runtime: Runtime) -> None:
    first = factories.newsletter(runtime, slug="daily")
    second = factories.newsletter(runtime, slug="evening", lists=("evening",))
    briefing(runtime, "shared", "News for everyone", hours_ago=1)

    sent_by_first = compose(runtime, first, date(2026, 11, 25)).edition
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, sent_by_first.id)
        assert edition is not None
        dispatcher.start(session, edition)  # its briefings are now sent (and immutable)
    later = compose(runtime, second, date(2026, 11, 25))

    assert not later.skipped
    assert titles_of(runtime, later.edition.id) == ["News for everyone"]
