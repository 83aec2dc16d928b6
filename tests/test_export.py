"""Streaming CSV export: everyone, a list, a segment; statuses; a round trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from mailer.accounts.models import Role
from mailer.app import subscribers as app
from mailer.app.actors import Actor
from mailer.app.errors import NotFound
from mailer.cli import app as cli
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers import exporter
from subscribers.models import Segment, Subscriber, Subscription, SubscriptionStatus, Suppression

ADMIN = Actor("account:admin@example.org", Role.ADMIN, None)
CSV = (
    "email,name,city,timezone\n"
    "a@example.com,Ann,Arden,Europe/Lisbon\n"
    'b@example.com,"Bo, Jr.",Porth,\n'
    "c@bücher.de,Cé,,\n"
)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_exports_everyone_a_list_and_a_segment_with_statuses(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter, "PAGE_ROWS", 2)  # pages end mid-audience
    app.import_text(runtime, ADMIN, CSV, "morning")
    app.import_text(runtime, ADMIN, "email\nb@example.com\n", "weekend")
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Subscription)
            .where(
                Subscription.subscriber_id.in_(
                    select(Subscriber.id).where(Subscriber.email == "a@example.com")
                )
            )
            .values(status=SubscriptionStatus.UNSUBSCRIBED)
        )
        session.add(Suppression(email="c@bücher.de", reason="hard_bounce", source="test"))
        session.add(
            Segment(
                name="porth",
                rule={"conditions": [{"field": "attributes.city", "op": "eq", "value": "Porth"}]},
            )
        )
    everyone = rows("".join(app.export_csv(runtime, ADMIN)))
    assert [r["email"] for r in everyone] == ["a@example.com", "b@example.com", "c@bücher.de"]
    assert everyone[1]["lists"] == "morning:active|weekend:active"
    assert everyone[0]["lists"] == "morning:unsubscribed"
    assert everyone[2]["suppressed"] == "hard_bounce"
    assert everyone[1]["name"] == "Bo, Jr."
    assert json.loads(everyone[0]["attributes"]) == {"city": "Arden"}
    weekend = rows("".join(app.export_csv(runtime, ADMIN, list_name="weekend")))
    assert [(r["email"], r["list_status"]) for r in weekend] == [("b@example.com", "active")]
    morning = rows("".join(app.export_csv(runtime, ADMIN, list_name="morning")))
    assert [r["list_status"] for r in morning] == ["unsubscribed", "active", "active"]
    porth = rows("".join(app.export_csv(runtime, ADMIN, segment="porth")))
    assert [r["email"] for r in porth] == ["b@example.com"]
    with pytest.raises(NotFound):
        app.export_csv(runtime, ADMIN, list_name="nope")
    with pytest.raises(NotFound):
        app.export_csv(runtime, ADMIN, segment="nope")


def test_an_export_imports_again_as_it_was(runtime: Runtime) -> None:
    app.import_text(runtime, ADMIN, CSV, "morning")
    first = "".join(app.export_csv(runtime, ADMIN))
    with transaction(runtime.sessions) as session:
        for sub in session.scalars(select(Subscriber)):
            session.delete(sub)
    report = app.import_text(runtime, ADMIN, first, "morning")
    assert report["added"] == 3 and report["errors"] == []
    second = "".join(app.export_csv(runtime, ADMIN))

    def strip(text: str) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "created_at"} for r in rows(text)]

    assert strip(second) == strip(first)


def test_the_command_writes_a_file(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    (cli_env / "in.csv").write_text(CSV)
    imported = runner.invoke(
        cli, ["subscribers", "import", "in.csv", "--list", "morning", "--json"]
    )
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(cli, ["subscribers", "export", "--list", "morning", "-o", "out.csv"])
    assert result.exit_code == 0, result.output
    out = rows((cli_env / "out.csv").read_text(encoding="utf-8"))
    assert [r["email"] for r in out] == ["a@example.com", "b@example.com", "c@bücher.de"]
