"""`mailer newsletters`: schedules created, changed and approved from the command line."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mailer.cli import app
from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.schedule.runner import Runner
from tests import factories
from tests.scheduling import Clock, write_briefing

runner = CliRunner()
REQUIRED = [
    "--name",
    "The Morning Note",
    "--from-name",
    "Desk",
    "--from-email",
    "Desk@News.Example.org",
    "--postal-address",
    "1 Quay Street, Valmere",
]


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.stderr


def as_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json"))


def test_create_validates_everything_and_changes_nothing_on_error(cli_env: Path) -> None:
    for extra, message in (
        (["--timezone", "Europe/Pariss"], "not an IANA timezone name"),
        (["--slot", "7am"], "use HH:MM in 24-hour time"),
        (["--slot", "24:00"], "use HH:MM"),
        (["--weekdays", "monday"], "weekdays 'monday'"),
        (["--steps", "pull,send"], "includes compose"),
    ):
        error = invoke("newsletters", "create", "morning", *REQUIRED, *extra, code=1)
        assert message in " ".join(error.split()), error
    bad_sender = [*REQUIRED[:5], "not-an-address", *REQUIRED[6:]]
    invoke("newsletters", "create", "morning", *bad_sender, code=1)
    invoke("newsletters", "create", "Not A Slug", *REQUIRED, code=1)
    assert as_json("newsletters", "list") == []


def test_create_show_list_update(cli_env: Path) -> None:
    created = as_json(
        "newsletters",
        "create",
        "morning",
        *REQUIRED,
        "--slot",
        "06:30",
        "--timezone",
        "Europe/Paris",
        "--weekdays",
        "mon-fri",
        "--list",
        "readers",
    )
    schedule = created["schedule"]
    assert created["from"] == "Desk <desk@news.example.org>" and created["lists"] == ["readers"]
    assert (schedule["slot"], schedule["timezone"], schedule["weekdays"]) == (
        "06:30",
        "Europe/Paris",
        "mon,tue,wed,thu,fri",
    )
    assert schedule["steps"] == "pull,compose,send" and schedule["enabled"]
    upcoming = schedule["next_slots"]
    assert len(upcoming) == 3
    for slot in upcoming:
        local = datetime.fromisoformat(slot["local"])
        assert local.strftime("%H:%M") == "06:30" and local.weekday() < 5
    assert invoke("newsletters", "create", "morning", *REQUIRED, code=1).count("exists")

    listed = as_json("newsletters", "list")
    assert [n["slug"] for n in listed] == ["morning"]
    assert "06:30" in invoke("newsletters", "list") and "Europe/Paris" in invoke(
        "newsletters", "show", "morning"
    )

    updated = as_json(
        "newsletters",
        "update",
        "morning",
        "--slot",
        "05:45",
        "--timezone",
        "America/New_York",
        "--weekdays",
        "daily",
        "--steps",
        "compose,send",
        "--approval",
        "--approval-deadline",
        "90",
        "--local-time",
        "--pull-interval",
        "5",
    )["schedule"]
    assert (updated["slot"], updated["timezone"], updated["weekdays"]) == (
        "05:45",
        "America/New_York",
        "mon,tue,wed,thu,fri,sat,sun",
    )
    assert updated["requires_approval"] and updated["approval_deadline_minutes"] == 90
    assert updated["local_time_delivery"] and updated["pull_interval_minutes"] == 5
    assert updated["effective_from"] > schedule["effective_from"]
    assert datetime.fromisoformat(updated["next_slots"][0]["local"]).strftime("%H:%M") == "05:45"

    # A change that does not move the slot keeps it in effect as it was.
    kept = as_json("newsletters", "update", "morning", "--no-approval")["schedule"]
    assert kept["effective_from"] == updated["effective_from"] and not kept["requires_approval"]
    disabled = as_json("newsletters", "update", "morning", "--disable")["schedule"]
    assert not disabled["enabled"] and disabled["next_slots"] == []
    invoke("newsletters", "update", "morning", "--timezone", "Mars/Base", code=1)
    invoke("newsletters", "show", "nope", code=1)

    # Written in English unless told; the language is checked and shown.
    assert created["language"] == "en"
    assert as_json("newsletters", "update", "morning", "--language", "fr-CA")["language"] == "fr-CA"
    assert "in fr-CA" in invoke("newsletters", "show", "morning")
    assert "BCP 47" in invoke("newsletters", "update", "morning", "--language", "French", code=1)


def test_update_gives_an_unscheduled_newsletter_a_schedule(cli_env: Path) -> None:
    runtime = Runtime(Settings(database_url=os.environ["MAILER_DATABASE_URL"]))
    try:
        factories.newsletter(runtime, slug="legacy")
    finally:
        runtime.close()
    assert as_json("newsletters", "show", "legacy")["schedule"] is None
    made = as_json("newsletters", "update", "legacy", "--disable")["schedule"]
    assert made["slot"] == "07:00" and made["timezone"] == "UTC" and not made["enabled"]


def test_held_edition_approved_from_the_command_line(cli_env: Path, tmp_path: Path) -> None:
    desk = tmp_path / "desk"
    write_briefing(desk)
    soon = datetime.now(UTC) + timedelta(seconds=2)
    as_json(
        "newsletters",
        "create",
        "morning",
        *REQUIRED,
        "--slot",
        soon.strftime("%H:%M:%S"),
        "--approval",
        "--list",
        "readers",
    )
    invoke("sources", "add-folder", "desk", str(desk), "--newsletter", "morning")
    runtime = Runtime(Settings(database_url=os.environ["MAILER_DATABASE_URL"]))
    try:
        factories.subscribers(runtime, 2, list_name="readers")
        # The scheduler's tick, a few seconds on (an injected clock, not a wait).
        tick = Runner(runtime, holder="test", clock=Clock(soon + timedelta(seconds=3))).tick()
        assert tick.states() == ["due", "held"]
    finally:
        runtime.close()
    [held] = as_json("newsletters", "runs", "morning")
    assert held["state"] == "held" and "approval" in held["reason"]
    assert "held" in invoke("newsletters", "show", "morning")

    approved = as_json("newsletters", "approve", "morning")
    assert approved["state"] == "sent" and approved["approved_at"]
    assert "2 deliveries queued" in approved["reason"]
    error = invoke("newsletters", "approve", "morning", "--date", held["slot_date"], code=1)
    assert "not held" in error
    assert "no edition" in invoke("newsletters", "approve", "morning", code=1)
