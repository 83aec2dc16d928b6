"""mailer.app.briefings and mailer.app.sources: what editors do with briefings and sources."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from mailer.accounts.models import AuditEntry, Role
from mailer.app import briefings, sources
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound, PermissionDenied
from mailer.db.models import Briefing, BriefingStatus, Edition, EditionStatus, Newsletter
from mailer.db.session import transaction
from mailer.dispatch import dispatcher
from mailer.editions.compose import compose_edition, rerender
from mailer.runtime import Runtime
from tests import factories
from tests.scheduling import utc

ADMIN = Actor("account:admin@example.org", Role.ADMIN, None)
EDITOR = Actor("account:ed@example.org", Role.EDITOR, None)

STORY = (
    "---\ntitle: Harbour reopens\ntags: [port]\n---\n"
    "The harbour reopened on Monday after a week of storms.\n\n"
    "**Why it matters:** Ferries resumed at *dawn* <script>alert(1)</script>.\n"
)
CHANGED = STORY.replace("Harbour reopens", "Harbour reopens fully").replace(
    "on Monday", "on Monday morning"
)


def audit_entries(runtime: Runtime, action: str) -> list[AuditEntry]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


def edition_of(runtime: Runtime, edition_id: int) -> Edition:
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return edition


def desk(runtime: Runtime, tmp_path: Path) -> tuple[Path, int, int]:
    """A newsletter, a folder source with one story, and a composed edition carrying it."""
    factories.newsletter(runtime)
    folder = tmp_path / "desk"
    folder.mkdir()
    (folder / "harbour.md").write_text(STORY, encoding="utf-8")
    sources.add_folder(runtime, ADMIN, "desk", folder)
    assert sources.pull(runtime, EDITOR).failed == 0
    [story] = briefings.list_briefings(runtime, EDITOR)
    with transaction(runtime.sessions) as session:
        newsletter = session.scalars(select(Newsletter)).one()
        edition_id = compose_edition(session, newsletter).edition.id
    return folder, story.id, edition_id


def test_pages_are_newest_first_and_lose_or_repeat_nothing(runtime: Runtime) -> None:
    start = utc(2026, 1, 1)
    # Four briefings share each instant, so pages must split ties by id.
    rows = [
        {
            "source_key": f"api:cms:{i}",
            "content_hash": f"{i:064x}",
            "title": f"Story {i}",
            "lead": f"Lead {i}.",
            "status": BriefingStatus.DRAFT if i % 3 == 0 else BriefingStatus.READY,
            "published_at": start + timedelta(minutes=i // 4),
        }
        for i in range(3000)
    ]
    with transaction(runtime.sessions) as session:
        session.execute(insert(Briefing), rows)
        stored = session.execute(select(Briefing.id, Briefing.published_at, Briefing.status)).all()
    newest_first = sorted(stored, key=lambda r: (r.published_at, r.id), reverse=True)

    def walk(status: str | None) -> list[int]:
        seen: list[int] = []
        before = None
        while page := briefings.list_briefings(
            runtime, EDITOR, status=status, limit=97, before=before
        ):
            assert len(page) <= 97
            seen += [b.id for b in page]
            before = (page[-1].published_at, page[-1].id)
        return seen

    assert walk(None) == [r.id for r in newest_first]
    assert walk("draft") == [r.id for r in newest_first if r.status == "draft"]
    first = briefings.list_briefings(runtime, EDITOR, limit=2)
    assert first[0].title == "Story 2999" and first[0].source_kind == "api"
    assert first[0].source is None and not first[0].edited and first[0].in_editions == ()
    with pytest.raises(Invalid) as raised:
        briefings.list_briefings(runtime, EDITOR, status="gone")
    assert raised.value.field == "status"


def test_search_is_case_insensitive_and_takes_wildcards_literally(runtime: Runtime) -> None:
    titles = [
        "Rates rise 50% in Valmere",
        "RATES RISE 500 IN ARDEN",
        "snake_case news",
        "Some case",
    ]
    with transaction(runtime.sessions) as session:
        session.execute(
            insert(Briefing),
            [
                {
                    "source_key": f"api:cms:{i}",
                    "content_hash": str(i),
                    "title": title,
                    "lead": "Nothing to see.",
                    "published_at": utc(2026, 1, 1, i),
                }
                for i, title in enumerate(titles)
            ],
        )

    def found(text: str) -> list[str]:
        return [b.title for b in briefings.list_briefings(runtime, EDITOR, search=text)]

    assert found("rates rise") == [titles[1], titles[0]]
    assert found("50%") == [titles[0]]
    assert found("e_c") == [titles[2]]
    assert found("nothing  TO see") == list(reversed(titles))
    assert found("absent") == []


def test_sources_are_added_listed_pulled_and_removed_with_their_errors(
    runtime: Runtime, tmp_path: Path
) -> None:
    factories.newsletter(runtime, slug="daily")
    folder = tmp_path / "desk"
    folder.mkdir()
    (folder / "good.md").write_text(STORY, encoding="utf-8")
    (folder / "broken.md").write_text("---\ntitle: [oops\n---\nLead.\n", encoding="utf-8")

    for call, field in (
        (lambda: sources.add_folder(runtime, ADMIN, "Bad Name", folder), "name"),
        (lambda: sources.add_folder(runtime, ADMIN, "desk", tmp_path / "absent"), "path"),
        (lambda: sources.add_feed(runtime, ADMIN, "wire", "ftp://example.org/feed"), "url"),
        (
            lambda: sources.add_folder(runtime, ADMIN, "desk", folder, newsletter="nope"),
            "newsletter",
        ),
    ):
        with pytest.raises(Invalid) as raised:
            call()
        assert raised.value.field == field
    with pytest.raises(PermissionDenied):
        sources.add_folder(runtime, EDITOR, "desk", folder)

    added = sources.add_folder(runtime, ADMIN, "desk", folder, newsletter="daily", draft=True)
    assert added.location == str(folder.resolve()) and added.newsletter == "daily"
    assert not added.mark_ready
    with pytest.raises(Conflict):
        sources.add_feed(runtime, ADMIN, "desk", "https://example.org/feed")
    with pytest.raises(PermissionDenied):  # an arbitrary folder is the administrator's
        sources.pull(runtime, EDITOR, folder=folder)
    with pytest.raises(NotFound, match="no source named nope"):
        sources.pull(runtime, EDITOR, sources=["nope"])

    items: list[None] = []
    result = sources.pull(runtime, EDITOR, on_item=lambda: items.append(None))
    [report] = result.sources
    assert (report.source, report.counts["new"], report.failed) == ("desk", 1, 1)
    assert result.failed == 1 and len(items) == 2  # once per file, stored or not
    assert result.as_dict()["sources"][0]["errors"][0]["message"] == report.errors[0].message

    [listed] = briefings.list_sources(runtime, EDITOR)
    assert listed.name == "desk" and listed.last_outcome == "1 new, 1 failed"
    assert listed.last_error is not None and "broken.md:2" in listed.last_error
    [error] = briefings.recent_pull_errors(runtime, EDITOR)
    assert error.source == "desk" and error.item.endswith("broken.md")
    [story] = briefings.list_briefings(runtime, EDITOR, source="desk")
    assert story.status == "draft" and story.source == "desk" and story.source_kind == "folder"
    assert briefings.list_briefings(runtime, EDITOR, source="elsewhere") == []

    removed = sources.remove(runtime, ADMIN, "desk")
    assert removed.name == "desk"
    with pytest.raises(NotFound):
        sources.remove(runtime, ADMIN, "desk")
    assert briefings.list_sources(runtime, EDITOR) == []
    assert briefings.recent_pull_errors(runtime, EDITOR) == []  # gone with their source
    [kept] = briefings.list_briefings(runtime, EDITOR)  # briefings stay
    assert kept.source is None and kept.source_kind == "folder"
    assert [e.target_id for e in audit_entries(runtime, "source.add")] == [str(added.id)]
    assert [e.before["name"] for e in audit_entries(runtime, "source.remove") if e.before] == [
        "desk"
    ]
    [pulled] = audit_entries(runtime, "sources.pull")
    assert pulled.actor == EDITOR.label and pulled.after == {"desk": "1 new, 1 failed"}


def test_api_tokens_are_made_once_and_revoked(runtime: Runtime) -> None:
    token = sources.create_api_token(runtime, ADMIN, "cms", draft=True)
    assert token.startswith("mlr_")
    with pytest.raises(Conflict):
        sources.create_api_token(runtime, ADMIN, "cms")
    [view] = sources.list_api_tokens(runtime, ADMIN)
    assert view.name == "cms" and view.revoked_at is None
    sources.revoke_api_token(runtime, ADMIN, "cms")
    with pytest.raises(NotFound):
        sources.revoke_api_token(runtime, ADMIN, "cms")
    with pytest.raises(PermissionDenied):
        sources.create_api_token(runtime, EDITOR, "other")
    [made] = audit_entries(runtime, "api_token.create")
    assert made.after == {"name": "cms", "newsletter": None, "draft": True}
    assert token not in str(made.after)
    assert len(audit_entries(runtime, "api_token.revoke")) == 1


def test_detail_shows_sections_safely_and_where_the_briefing_is(
    runtime: Runtime, tmp_path: Path
) -> None:
    _, briefing_id, edition_id = desk(runtime, tmp_path)
    detail = briefings.get_briefing(runtime, EDITOR, briefing_id)
    assert (detail.title, detail.original_title) == ("Harbour reopens", "Harbour reopens")
    assert detail.lead == "The harbour reopened on Monday after a week of storms."
    assert detail.in_editions == (edition_id,) and detail.tags == ("port",)
    [section] = detail.sections
    assert section["label"] == "Why it matters"
    assert section["text"] == "Ferries resumed at dawn <script>alert(1)</script>."
    assert section["html"] == (
        "<p>Ferries resumed at <em>dawn</em> &lt;script&gt;alert(1)&lt;/script&gt;.</p>"
    )
    assert not detail.edited and detail.edited_by is None and detail.corrections == []
    with pytest.raises(NotFound):
        briefings.get_briefing(runtime, EDITOR, briefing_id + 100)


def test_a_correction_is_checked_stored_audited_and_re_renders_its_editions(
    runtime: Runtime, tmp_path: Path
) -> None:
    _, briefing_id, edition_id = desk(runtime, tmp_path)
    for changes, field in (
        ({"title": "x" * 301}, "title"),
        ({"lead": "y" * 2001}, "lead"),
        ({"title": "reversed \u202etext"}, "title"),  # shown backwards in a subject line
    ):
        with pytest.raises(Invalid) as raised:
            briefings.correct_briefing(runtime, EDITOR, briefing_id, **changes)
        assert raised.value.field == field
    rendered_before = edition_of(runtime, edition_id).rendered_at
    assert rendered_before is not None

    detail = briefings.correct_briefing(
        runtime, EDITOR, briefing_id, title="  Harbour   reopens\n at dawn ", lead="x" * 2000
    )
    assert detail.title == "Harbour reopens at dawn" and detail.original_title == "Harbour reopens"
    assert detail.lead == "x" * 2000 and detail.edited and detail.edited_by == EDITOR.label
    assert detail.edited_at is not None
    edition = edition_of(runtime, edition_id)
    assert edition.status == EditionStatus.READY
    assert edition.rendered_at is not None and edition.rendered_at > rendered_before
    [entry] = audit_entries(runtime, "briefing.correct")
    assert entry.actor == EDITOR.label and entry.target_id == str(briefing_id)
    assert entry.before == {"title": None, "lead": None}
    assert entry.after == {"title": "Harbour reopens at dawn", "lead": "x" * 2000}
    assert entry.note == f"re-rendered edition(s) {edition_id}"

    # The same words again change nothing; the source's own words are no correction;
    # '' goes back to the source's.
    briefings.correct_briefing(runtime, EDITOR, briefing_id, title="Harbour reopens at dawn")
    assert len(audit_entries(runtime, "briefing.correct")) == 1
    restored = briefings.correct_briefing(
        runtime, ADMIN, briefing_id, title="Harbour reopens", lead=""
    )
    assert restored.title == "Harbour reopens" and not restored.edited
    assert restored.edited_by is None and restored.edited_at is None
    last = audit_entries(runtime, "briefing.correct")[-1]
    assert last.actor == ADMIN.label and last.after == {"title": None, "lead": None}
    with pytest.raises(NotFound):
        briefings.correct_briefing(runtime, EDITOR, briefing_id + 100, title="Nope")
    # Control characters are stripped as at every way in, not refused.
    cleaned = briefings.correct_briefing(runtime, EDITOR, briefing_id, title="Harbour\x00 reopens!")
    assert cleaned.title == "Harbour reopens!"


def test_a_repull_never_overwrites_a_correction(runtime: Runtime, tmp_path: Path) -> None:
    folder, briefing_id, edition_id = desk(runtime, tmp_path)
    corrected = briefings.correct_briefing(
        runtime, EDITOR, briefing_id, title="Harbour reopens at last", lead="Ferries are back."
    )
    (folder / "harbour.md").write_text(CHANGED, encoding="utf-8")
    [report] = sources.pull(runtime, EDITOR).sources
    assert report.counts["updated"] == 1

    after = briefings.get_briefing(runtime, EDITOR, briefing_id)
    # The source's columns follow the source; the editor's stay as the editor left them.
    assert after.original_title == "Harbour reopens fully"
    assert after.original_lead == "The harbour reopened on Monday morning after a week of storms."
    assert (after.title, after.lead) == ("Harbour reopens at last", "Ferries are back.")
    assert (after.edited_by, after.edited_at) == (corrected.edited_by, corrected.edited_at)
    with runtime.sessions() as session:
        stored = session.get(Briefing, briefing_id)
        assert stored is not None
        assert (stored.edited_title, stored.edited_lead) == (
            "Harbour reopens at last",
            "Ferries are back.",
        )
    # The edition re-rendered at the correction still carries the editor's words, and so
    # does any later rendering of it (an editor's reorder, say).
    assert "Ferries are back." in (edition_of(runtime, edition_id).text or "")
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        rerender(edition)
        assert "Harbour reopens at last" in (edition.html or "")
        assert "Ferries are back." in (edition.text or "")


def test_a_sent_briefing_stays_as_it_went_out(runtime: Runtime, tmp_path: Path) -> None:
    folder, briefing_id, edition_id = desk(runtime, tmp_path)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        dispatcher.start(session, edition)
    html = edition_of(runtime, edition_id).html
    with pytest.raises(Conflict, match="was sent"):
        briefings.correct_briefing(runtime, EDITOR, briefing_id, title="Too late")
    with pytest.raises(Conflict, match="was sent"):
        briefings.set_status(runtime, EDITOR, briefing_id, "archived")
    assert edition_of(runtime, edition_id).html == html
    assert audit_entries(runtime, "briefing.correct") == []

    # A change at the source after sending is kept beside it, not applied.
    (folder / "harbour.md").write_text(CHANGED, encoding="utf-8")
    sources.pull(runtime, EDITOR)
    detail = briefings.get_briefing(runtime, EDITOR, briefing_id)
    assert detail.title == "Harbour reopens" and detail.status == "sent"
    [correction] = detail.corrections
    assert correction["title"] == "Harbour reopens fully"


def test_a_skipped_edition_is_not_made_sendable_by_a_correction(
    runtime: Runtime, tmp_path: Path
) -> None:
    _, briefing_id, edition_id = desk(runtime, tmp_path)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        edition.status = EditionStatus.SKIPPED
    rendered = edition_of(runtime, edition_id).rendered_at
    briefings.correct_briefing(runtime, EDITOR, briefing_id, title="Harbour reopens at dawn")
    edition = edition_of(runtime, edition_id)
    assert edition.status == EditionStatus.SKIPPED and edition.rendered_at == rendered
    assert audit_entries(runtime, "briefing.correct")[0].note is None


def test_status_changes_are_audited(runtime: Runtime, tmp_path: Path) -> None:
    _, briefing_id, _ = desk(runtime, tmp_path)
    drafted = briefings.set_status(runtime, EDITOR, briefing_id, "draft")
    assert drafted.status == "draft" and type(drafted) is briefings.BriefingSummary
    briefings.set_status(runtime, EDITOR, briefing_id, "draft")  # no change, no entry
    assert briefings.set_status(runtime, EDITOR, briefing_id, "archive").status == "archived"
    assert [(e.before, e.after) for e in audit_entries(runtime, "briefing.status")] == [
        ({"status": "ready"}, {"status": "draft"}),
        ({"status": "draft"}, {"status": "archived"}),
    ]
    with pytest.raises(Invalid):
        briefings.set_status(runtime, EDITOR, briefing_id, "sent")
    with pytest.raises(NotFound):
        briefings.set_status(runtime, EDITOR, briefing_id + 100, "ready")
