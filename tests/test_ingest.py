"""Pulling a folder of briefings: bad files are reported, good ones stored, nothing half-written."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from mailer.briefings.folder import pull_folder
from mailer.db.models import Briefing, BriefingStatus
from mailer.db.session import transaction
from mailer.runtime import Runtime

GOOD = (
    "The harbour reopened on Monday after a week of storms.\n"
    "What's going on now: Ferries resumed at dawn.\n"
)


def test_bad_files_are_named_and_the_rest_ingested(runtime: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-good.txt").write_text(GOOD, encoding="utf-8")
    (folder / "b-empty.txt").write_text("\n\n", encoding="utf-8")
    (folder / "c-latin1.txt").write_bytes("Caf\xe9 owners protest.\n".encode("latin-1"))
    (folder / "d-front.md").write_text("---\ntitle: [unclosed\n---\nLead.\n", encoding="utf-8")
    (folder / "e-paywall-only.txt").write_text("Already a subscriber? Log in.\n", encoding="utf-8")
    (folder / "z-good.md").write_text("---\ntags: [a, b]\n---\n" + GOOD, encoding="utf-8")
    (folder / "notes.json").write_text("{}", encoding="utf-8")  # not a briefing: ignored

    report = pull_folder(runtime.sessions, folder)

    assert report.counts["new"] == 2
    assert report.failed == 4
    joined = "\n".join(e.message for e in report.errors)
    for name in ("b-empty.txt", "c-latin1.txt", "d-front.md", "e-paywall-only.txt"):
        assert name in joined
    assert "empty" in joined and "UTF-8" in joined and "d-front.md:2" in joined
    with runtime.sessions() as session:
        assert session.scalar(select(func.count(Briefing.id))) == 2


def test_pull_again_updates_unsent_and_keeps_sent_copies(runtime: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    story = folder / "story.txt"
    story.write_text(GOOD, encoding="utf-8")
    assert pull_folder(runtime.sessions, folder).counts["new"] == 1
    assert pull_folder(runtime.sessions, folder).counts["unchanged"] == 1

    story.write_text(GOOD + "What happens next: More sailings on Friday.\n", encoding="utf-8")
    assert pull_folder(runtime.sessions, folder).counts["updated"] == 1
    with transaction(runtime.sessions) as session:
        briefing = session.scalars(select(Briefing)).one()
        assert [s["label"] for s in briefing.sections] == [
            "What's going on now",
            "What happens next",
        ]
        briefing.status = BriefingStatus.SENT

    story.write_text(GOOD.replace("dawn", "noon"), encoding="utf-8")
    assert pull_folder(runtime.sessions, folder).counts["corrected"] == 1
    assert pull_folder(runtime.sessions, folder).counts["unchanged"] == 1  # recorded once
    with runtime.sessions() as session:
        sections = session.scalars(select(Briefing)).one().sections
    assert sections[0]["paragraphs"] == ["Ferries resumed at dawn."]
