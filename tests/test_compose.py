"""Composing editions: which briefings, in what order, titled how; editors' changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.app import editions
from mailer.app.actors import Actor
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
        statuses = {i: status for i, status in session.execute(select(Edition.id, Edition.status))}
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


def test_composing_tomorrow_early_leaves_todays_briefings_to_today(runtime: Runtime) -> None:
    # The newsletter goes out at 07:00 UTC. At 05:00 on the 25th, today's edition is not
    # composed yet; composing the 26th's early must not take the 25th's news.
    newsletter_id = factories.newsletter(runtime)
    early = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
    briefing(runtime, "a", "Overnight story", hours_ago=9)  # 03:00 on the 25th
    briefing(runtime, "b", "Dawn story", hours_ago=8)  # 04:00

    tomorrow = compose(runtime, newsletter_id, date(2026, 11, 26), now=early)
    assert tomorrow.skipped  # nothing published since the 25th's slot yet

    today = compose(runtime, newsletter_id, date(2026, 11, 25), now=early + timedelta(hours=2))
    assert titles_of(runtime, today.edition.id) == ["Dawn story", "Overnight story"]

    # Later that day, news for the 26th; composed early again, it takes only that.
    briefing(runtime, "c", "Afternoon story", hours_ago=-2)  # 14:00 on the 25th
    again = compose(runtime, newsletter_id, date(2026, 11, 26), now=NOW + timedelta(hours=3))
    assert again.edition.id == tomorrow.edition.id
    assert titles_of(runtime, again.edition.id) == ["Afternoon story"]


def test_an_edition_composed_before_its_slot_hands_what_follows_to_the_next(
    runtime: Runtime,
) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "a", "Before five", hours_ago=8)  # 04:00 on the 25th
    today = compose(runtime, newsletter_id, date(2026, 11, 25), now=NOW - timedelta(hours=7))
    assert titles_of(runtime, today.edition.id) == ["Before five"]
    # Published after today's edition was composed (05:00), before its slot (07:00):
    # the 26th's edition, composed early, takes it (nothing is left behind).
    briefing(runtime, "b", "Between five and seven", hours_ago=6)
    tomorrow = compose(runtime, newsletter_id, date(2026, 11, 26), now=NOW - timedelta(hours=5))
    assert titles_of(runtime, tomorrow.edition.id) == ["Between five and seven"]


def test_composing_a_past_date_takes_nothing_from_after_its_day(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "old", "Tuesday story", hours_ago=26)  # 10:00 on the 24th
    briefing(runtime, "new", "Wednesday story", hours_ago=2)  # 10:00 on the 25th

    late = compose(runtime, newsletter_id, date(2026, 11, 24))  # composed on the 25th
    assert titles_of(runtime, late.edition.id) == ["Tuesday story"]
    today = compose(runtime, newsletter_id, date(2026, 11, 25), now=NOW + timedelta(minutes=1))
    assert titles_of(runtime, today.edition.id) == ["Wednesday story"]


def test_a_cancelled_edition_that_never_started_gives_its_briefings_back(
    runtime: Runtime,
) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "a", "First", hours_ago=3)
    briefing(runtime, "b", "Second", hours_ago=4)
    cancelled = compose(runtime, newsletter_id, date(2026, 11, 25)).edition
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, cancelled.id)
        assert edition is not None
        dispatcher.cancel(session, edition)

    tomorrow = compose(runtime, newsletter_id, date(2026, 11, 26), now=NOW + timedelta(hours=20))
    assert titles_of(runtime, tomorrow.edition.id) == ["First", "Second"]
    with runtime.sessions() as session:
        statuses = {
            b.title: b.status for b in session.scalars(select(Briefing).order_by(Briefing.id))
        }
    assert statuses == {"First": BriefingStatus.READY, "Second": BriefingStatus.READY}


def test_a_cancelled_edition_that_went_out_keeps_its_briefings(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "a", "Sent story", hours_ago=3)
    started = compose(runtime, newsletter_id, date(2026, 11, 25)).edition
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, started.id)
        assert edition is not None
        dispatcher.start(session, edition)
        dispatcher.cancel(session, edition)

    tomorrow = compose(runtime, newsletter_id, date(2026, 11, 26), now=NOW + timedelta(hours=20))
    assert tomorrow.skipped


def test_a_deleted_draft_gives_its_briefings_back(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    briefing(runtime, "a", "Kept story", hours_ago=3)
    draft = compose(runtime, newsletter_id, date(2026, 11, 25)).edition
    editions.delete_draft(runtime, Actor.cli(), draft.id)

    again = compose(runtime, newsletter_id, date(2026, 11, 25))
    assert again.created
    assert titles_of(runtime, again.edition.id) == ["Kept story"]


def test_headlines_and_corrections_title_the_edition(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    top = briefing(runtime, "a", "A very long headline the wire wrote for this story", hours_ago=1)
    other = briefing(runtime, "b", "Second story", hours_ago=2)
    with transaction(runtime.sessions) as session:
        corrected = session.get(Briefing, other)
        assert corrected is not None
        corrected.edited_title, corrected.edited_lead = "Corrected second", "A <b>fixed</b> lead."
    edition_id = compose(runtime, newsletter_id, date(2026, 11, 25)).edition.id
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert edition.subject == "A very long headline the wire wrote for this story"
        assert edition.preheader == "Plus 1 more: Corrected second"
        editing.set_headline(session, edition, top, "  Short   one ")
        assert edition.subject == "Short one"
        assert edition.html is not None and edition.text is not None
        assert "Short one" in edition.html and "Corrected second" in edition.html
        # The corrected lead is an editor's plain text: escaped, never markup.
        assert "A &lt;b&gt;fixed&lt;/b&gt; lead." in edition.html
        assert "1. Short one\n2. Corrected second\n" in edition.text
        with pytest.raises(ValueError, match="at most 300"):
            editing.set_headline(session, edition, top, "x" * 301)
        editing.set_headline(session, edition, top, "")
        assert edition.subject == "A very long headline the wire wrote for this story"


def test_recompose_keeps_the_arrangement_and_leaves_exclusions_out(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    first = briefing(runtime, "a", "First", hours_ago=3)
    second = briefing(runtime, "b", "Second", hours_ago=4)
    third = briefing(runtime, "c", "Third", hours_ago=5)
    edition_id = compose(runtime, newsletter_id, date(2026, 11, 25)).edition.id
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        editing.reorder(session, edition, [third])
        editing.set_headline(session, edition, third, "Third, short")
        editing.exclude(session, edition, second)
    newcomer = briefing(runtime, "d", "Newcomer", hours_ago=1)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        done = editing.recompose(session, edition, now=NOW)
        assert done.added == (newcomer,) and done.dropped == ()
        order = [
            (i.briefing_id, i.headline) for i in sorted(edition.items, key=lambda i: i.position)
        ]
        assert order == [(third, "Third, short"), (first, None), (newcomer, None)]
        assert edition.excluded_briefing_ids == [second]
        editing.include(session, edition, second, 0, now=NOW)
        order = [i.briefing_id for i in sorted(edition.items, key=lambda i: i.position)]
        assert order == [second, third, first, newcomer]
        assert edition.excluded_briefing_ids == []
        with pytest.raises(ValueError, match="already in"):
            editing.include(session, edition, second, now=NOW)
