"""mailer.app.newsletters: what the CLI and the workspace call to run newsletters."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailer.accounts.models import AuditEntry, Role
from mailer.app import newsletters
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound, PermissionDenied
from mailer.db.base import utcnow
from mailer.db.models import Edition, Newsletter
from mailer.runtime import Runtime
from mailer.schedule.runner import Runner
from tests import factories
from tests.scheduling import Clock, scheduled_newsletter

ADMIN = Actor("account:admin@example.org", Role.ADMIN, None)
EDITOR = Actor("account:ed@example.org", Role.EDITOR, None)
REQUIRED: dict[str, Any] = {
    "name": "The Morning Note",
    "from_name": "Desk",
    "from_email": "Desk@News.Example.org",
    "postal_address": "1 Quay Street, Valmere",
}


def audit_entries(runtime: Runtime, action: str) -> list[AuditEntry]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"slot": "7am"}, "slot"),
        ({"timezone": "Europe/Pariss"}, "timezone"),
        ({"weekdays": "monday"}, "weekdays"),
        ({"steps": "pull,send"}, "steps"),
        ({"pull_interval": 0}, "pull_interval"),
        ({"approval_deadline": 10**9}, "approval_deadline"),
        ({"from_email": "not-an-address"}, "from_email"),
        ({"reply_to": "nobody@"}, "reply_to"),
        ({"name": "   "}, "name"),
        ({"from_name": "Desk\r\nBcc: everyone@example.org"}, "from_name"),
        ({"postal_address": ""}, "postal_address"),
        ({"lists": ["readers", " "]}, "lists"),
        ({"language": "English"}, "language"),
        ({"language": "en_US"}, "language"),
        ({"language": 'en" onload="x'}, "language"),
    ],
)
def test_create_names_the_wrong_field_and_creates_nothing(
    runtime: Runtime, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as raised:
        newsletters.create_newsletter(runtime, ADMIN, "morning", **(REQUIRED | changes))
    assert raised.value.field == field
    assert newsletters.list_newsletters(runtime, ADMIN) == []
    assert audit_entries(runtime, "newsletter.create") == []


def test_create_get_list_and_who_may(runtime: Runtime) -> None:
    with pytest.raises(Invalid) as raised:
        newsletters.create_newsletter(runtime, ADMIN, "Not A Slug", **REQUIRED)
    assert raised.value.field == "slug"
    with pytest.raises(PermissionDenied):
        newsletters.create_newsletter(runtime, EDITOR, "morning", **REQUIRED)

    created = newsletters.create_newsletter(
        runtime,
        ADMIN,
        "morning",
        **REQUIRED,
        lists=["readers", "readers", "extras"],
        slot="06:30",
        timezone="Europe/Paris",
        weekdays="mon-fri",
        approval=True,
    )
    assert created["from"] == "Desk <desk@news.example.org>"
    assert created["lists"] == ["extras", "readers"] and created["runs"] == []
    schedule = created["schedule"]
    assert (schedule["slot"], schedule["timezone"], schedule["weekdays"]) == (
        "06:30",
        "Europe/Paris",
        "mon,tue,wed,thu,fri",
    )
    assert schedule["requires_approval"] and len(schedule["next_slots"]) == 3
    for slot in schedule["next_slots"]:
        local = datetime.fromisoformat(slot["local"])
        assert local.strftime("%H:%M") == "06:30" and local.weekday() < 5
        assert datetime.fromisoformat(slot["at"]) == local

    # The editor reads what the administrator made, in the same shape.
    assert newsletters.get_newsletter(runtime, EDITOR, "morning") == created
    [listed] = newsletters.list_newsletters(runtime, EDITOR)
    assert listed["slug"] == "morning" and isinstance(listed["id"], int)
    assert listed["timezone"] == "Europe/Paris"
    assert len(listed["schedule"]["next_slots"]) == 1
    with pytest.raises(NotFound):
        newsletters.get_newsletter(runtime, EDITOR, "evening")
    with pytest.raises(Conflict, match="exists"):
        newsletters.create_newsletter(runtime, ADMIN, "morning", **REQUIRED)

    [entry] = audit_entries(runtime, "newsletter.create")
    assert entry.actor == ADMIN.label and entry.target_id == str(listed["id"])
    assert entry.after is not None
    assert entry.after["slug"] == "morning" and entry.after["slot"] == "06:30"
    assert entry.after["lists"] == ["extras", "readers"]


def test_update_changes_what_is_given_and_audits_the_difference(runtime: Runtime) -> None:
    newsletters.create_newsletter(runtime, ADMIN, "morning", **REQUIRED, reply_to="a@example.org")
    before = newsletters.get_newsletter(runtime, ADMIN, "morning")["schedule"]
    updated = newsletters.update_newsletter(
        runtime,
        ADMIN,
        "morning",
        name="The Early Note",
        reply_to="",
        lists=["early"],
        slot="05:45",
        pull_interval=5,
    )
    assert updated["name"] == "The Early Note" and updated["reply_to"] is None
    assert updated["lists"] == ["early"]
    assert updated["schedule"]["slot"] == "05:45"
    assert updated["schedule"]["effective_from"] > before["effective_from"]
    [entry] = audit_entries(runtime, "newsletter.update")
    assert entry.before == {
        "name": "The Morning Note",
        "reply_to": "a@example.org",
        "lists": ["morning"],
        "slot": "07:00",
        "pull_interval_minutes": 15,
    }
    assert entry.after == {
        "name": "The Early Note",
        "reply_to": None,
        "lists": ["early"],
        "slot": "05:45",
        "pull_interval_minutes": 5,
    }

    # Nothing changed, nothing logged; a refused change leaves everything as it was.
    newsletters.update_newsletter(runtime, ADMIN, "morning", slot="05:45")
    with pytest.raises(Invalid) as raised:
        newsletters.update_newsletter(runtime, ADMIN, "morning", name="Late", timezone="Mars/Base")
    assert raised.value.field == "timezone"
    assert newsletters.get_newsletter(runtime, ADMIN, "morning")["name"] == "The Early Note"
    assert len(audit_entries(runtime, "newsletter.update")) == 1
    with pytest.raises(PermissionDenied):
        newsletters.update_newsletter(runtime, EDITOR, "morning", name="Mine")
    with pytest.raises(NotFound):
        newsletters.update_newsletter(runtime, ADMIN, "nope", name="Nope")


def test_update_gives_an_unscheduled_newsletter_a_schedule(runtime: Runtime) -> None:
    factories.newsletter(runtime, slug="legacy")
    assert newsletters.get_newsletter(runtime, EDITOR, "legacy")["schedule"] is None
    made = newsletters.update_newsletter(runtime, ADMIN, "legacy", enabled=False)["schedule"]
    assert made["slot"] == "07:00" and made["timezone"] == "UTC" and not made["enabled"]
    [entry] = audit_entries(runtime, "newsletter.update")
    assert entry.after is not None and entry.after["enabled"] is False


def test_runs_and_approving_a_held_edition(runtime: Runtime, tmp_path: Path) -> None:
    now = utcnow()
    slot_at = now + timedelta(seconds=2)
    scheduled_newsletter(
        runtime,
        tmp_path / "desk",
        slot=slot_at.strftime("%H:%M:%S"),
        requires_approval=True,
        since=now - timedelta(minutes=1),
        subscribers=2,
    )
    with pytest.raises(NotFound, match="no edition"):
        newsletters.approve_held(runtime, EDITOR, "daily")
    # The scheduler's tick a few seconds on (an injected clock, not a wait).
    tick = Runner(runtime, holder="test", clock=Clock(slot_at + timedelta(seconds=3))).tick()
    assert tick.states() == ["due", "held"]
    [held] = newsletters.list_runs(runtime, EDITOR, "daily")
    assert held["state"] == "held"
    with pytest.raises(Invalid):
        newsletters.list_runs(runtime, EDITOR, "daily", limit=0)

    approved = newsletters.approve_held(runtime, EDITOR, "daily")
    assert approved["state"] == "sent" and "2 deliveries queued" in approved["reason"]
    with runtime.sessions() as session:
        edition = session.get(Edition, approved["edition_id"])
        assert edition is not None and edition.approved_by == EDITOR.label
    [entry] = audit_entries(runtime, "newsletter.approve")
    assert entry.target_kind == "edition" and entry.target_id == str(approved["edition_id"])
    assert entry.after is not None and entry.after["state"] == "sent"

    day = datetime.fromisoformat(held["slot_date"]).date()
    with pytest.raises(Conflict, match="not held"):
        newsletters.approve_held(runtime, EDITOR, "daily", day)
    with pytest.raises(NotFound):
        newsletters.approve_held(runtime, EDITOR, "daily", day - timedelta(days=30))


def test_newsletters_are_stored_as_given(runtime: Runtime) -> None:
    newsletters.create_newsletter(
        runtime, ADMIN, "morning", **REQUIRED, audience_note="  you asked for it  "
    )
    with runtime.sessions() as session:
        stored = session.scalars(select(Newsletter)).one()
        assert stored.from_email == "desk@news.example.org"
        assert stored.audience_note == "you asked for it"
        assert (stored.send_time, stored.timezone) == ("07:00", "UTC")


def test_a_newsletter_is_written_in_english_unless_told(runtime: Runtime) -> None:
    created = newsletters.create_newsletter(runtime, ADMIN, "morning", **REQUIRED)
    assert created["language"] == "en"
    changed = newsletters.update_newsletter(runtime, ADMIN, "morning", language=" de-CH ")
    assert changed["language"] == "de-CH"
    (entry,) = audit_entries(runtime, "newsletter.update")
    assert entry.before == {"language": "en"} and entry.after == {"language": "de-CH"}
    with pytest.raises(Invalid) as raised:
        newsletters.update_newsletter(runtime, ADMIN, "morning", language="")
    assert raised.value.field == "language"
    assert newsletters.get_newsletter(runtime, ADMIN, "morning")["language"] == "de-CH"
