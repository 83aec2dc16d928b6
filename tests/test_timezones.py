"""Zone names are checked in one place (``parse_timezone``), whichever way they come in: a
directory of the zone database (``Europe``) or an overlong name is a clear error, never
an ``OSError`` out of ``ZoneInfo`` that takes good work down with it (issue 17: 5)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailer.accounts.models import Role
from mailer.app import newsletters
from mailer.app import subscribers as app
from mailer.app.actors import Actor
from mailer.app.errors import Invalid
from mailer.runtime import Runtime
from mailer.schedule.slots import ScheduleError, parse_timezone
from subscribers.models import Subscriber

ADMIN = Actor("account:admin@example.org", Role.ADMIN, None)
BAD = ["Europe", "America/", "x" * 300, "../etc/passwd", "Europe/Pariss", "zone.tab", ""]


@pytest.mark.parametrize("name", BAD)
def test_names_outside_the_zone_database_are_refused(name: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_timezone(name)
    assert "not an IANA timezone name" in str(caught.value)
    assert len(str(caught.value)) < 200  # an overlong name is not echoed whole


def test_zone_names_are_taken_as_the_database_spells_them() -> None:
    assert parse_timezone(" Europe/Paris ").key == "Europe/Paris"
    assert parse_timezone("UTC").key == "UTC"


def test_an_import_keeps_its_good_rows_and_names_the_bad_zones(runtime: Runtime) -> None:
    text = (
        "email,timezone\n"
        "a@example.com,Europe/Lisbon\n"
        "b@example.com,Europe\n"
        f"c@example.com,{'x' * 300}\n"
        "d@example.com,\n"
    )
    report = app.import_text(runtime, ADMIN, text, "morning")
    assert (report["added"], report["rejected"]) == (2, 2)
    assert [e["line"] for e in report["errors"]] == [3, 4]
    assert all("timezone" in e["reason"] for e in report["errors"])
    with runtime.sessions() as session:
        zones = dict(session.execute(select(Subscriber.email, Subscriber.timezone)).all())
    assert zones == {"a@example.com": "Europe/Lisbon", "d@example.com": None}


@pytest.mark.parametrize("name", ["Europe", "x" * 300])
def test_newsletters_and_subscribers_refuse_them_as_bad_input(runtime: Runtime, name: str) -> None:
    with pytest.raises(Invalid) as caught:
        newsletters.create_newsletter(
            runtime,
            ADMIN,
            "morning",
            name="The Morning Note",
            from_name="Desk",
            from_email="desk@news.example.org",
            postal_address="1 Quay Street, Valmere",
            timezone=name,
        )
    assert caught.value.field == "timezone"
    with pytest.raises(Invalid) as caught:
        app.add_subscriber(runtime, ADMIN, "a@example.com", timezone=name)
    assert caught.value.field == "timezone"
