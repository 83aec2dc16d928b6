"""The whole pipeline through the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mailer.accounts.models import AuditEntry
from mailer.cli import app
from mailer.config import Settings
from mailer.runtime import Runtime

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_demo_runs_the_pipeline_and_never_sends_twice(cli_env: Path) -> None:
    first = invoke("demo", "--subscribers", "120")
    assert "120 sent" in first

    editions = json.loads(invoke("editions", "list", "--json"))
    assert len(editions) == 1
    edition = editions[0]
    assert edition["status"] == "sent"
    assert edition["briefings"] == 6
    assert edition["deliveries"]["sent"] == 120

    outbox = cli_env / "outbox" / f"edition-{edition['id']}"
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 120
    recipients = set()
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        recipients.add(str(message["To"].addresses[0].addr_spec))
        assert message.get_content_type() == "multipart/alternative"
        assert message["List-Unsubscribe"].startswith("<https://news.example.org/u/")
    assert len(recipients) == 120

    # The signing key the demo generated is kept, so old links stay valid.
    key_file = cli_env / "absent.toml"
    key = key_file.read_text()
    second = invoke("demo", "--subscribers", "120")
    assert "120 sent" in second
    assert key_file.read_text() == key
    assert len(list(outbox.glob("*.eml"))) == 120
    status = json.loads(invoke("editions", "status", str(edition["id"]), "--json"))
    assert status["deliveries"]["sent"] == 120
    assert status["deliveries"]["queued"] == 0


def test_import_compose_send_and_show(cli_env: Path) -> None:
    invoke("db", "upgrade")
    invoke("demo", "--subscribers", "3")
    csv_file = cli_env / "readers.csv"
    csv_file.write_text(
        "email,name,city\n"
        "New.Reader@Example.com,New Reader,Valmere\n"
        "not-an-address,Broken,Nowhere\n"
        "third@example.com,,Arden\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        app, ["subscribers", "import", str(csv_file), "--list", "morning-readers", "--json"]
    )
    # A rejected row makes the command exit non-zero, but the good rows land.
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["added"] == 2
    assert report["errors"][0]["line"] == 3
    assert "not-an-address" in report["errors"][0]["reason"]

    shown = json.loads(invoke("subscribers", "show", "new.reader@example.com", "--json"))
    assert shown["subscriber"]["name"] == "New Reader"
    assert shown["subscriber"]["attributes"] == {"city": "Valmere"}
    assert shown["subscriber"]["lists"][0]["name"] == "morning-readers"
    assert shown["suppression"] is None

    # Today's edition exists and was sent (the demo made it): compose finds it rather
    # than making a second one, and the newcomers are not retro-mailed.
    editions = json.loads(invoke("editions", "list", "--json"))
    compose = invoke("editions", "compose", "daily")
    assert f"edition {editions[0]['id']} already composed" in compose
    status = json.loads(invoke("editions", "status", str(editions[0]["id"]), "--json"))
    assert status["deliveries"]["sent"] == 3


def test_suppressions_by_hand_and_imports_are_audited(cli_env: Path) -> None:
    invoke("db", "upgrade")
    csv_file = cli_env / "readers.csv"
    csv_file.write_text("email,name\nReader@Example.com,A Reader\n", encoding="utf-8")
    invoke("subscribers", "import", str(csv_file), "--list", "readers")
    assert "suppressed" in invoke("suppressions", "add", "Reader@Example.com", "--note", "phoned")
    again = invoke("suppressions", "add", "reader@example.com", "--note", "phoned again")
    assert "already suppressed" in again
    [listed] = json.loads(invoke("suppressions", "list", "--json"))
    assert listed["reason"] == "added by an operator" and listed["source"].startswith("operator:")
    shown = json.loads(invoke("subscribers", "show", "reader@example.com", "--json"))
    assert shown["suppression"]["reason"] == "added by an operator"
    blank = runner.invoke(app, ["suppressions", "add", "other@example.com", "--note", "  "])
    assert blank.exit_code == 1 and "note" in blank.stderr

    lifted = json.loads(
        invoke("suppressions", "lift", "reader@example.com", "--note", "confirmed", "--json")
    )
    assert lifted["reason"] == "added by an operator"
    again_lifted = runner.invoke(
        app, ["suppressions", "lift", "reader@example.com", "--note", "twice"]
    )
    assert again_lifted.exit_code == 1 and "not suppressed" in again_lifted.stderr

    runtime = Runtime(Settings())
    try:
        with runtime.sessions() as session:
            entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    finally:
        runtime.close()
    assert [e.action for e in entries] == [
        "subscribers.import",
        "suppression.add",
        "suppression.lift",
    ]
    assert all(e.actor.startswith("cli:") for e in entries)
    assert entries[0].after == {
        "added": 1,
        "updated": 0,
        "subscribed": 1,
        "kept_unsubscribed": 0,
        "rejected": 0,
    }
    assert entries[2].before is not None and entries[2].before["reason"] == "added by an operator"
    assert entries[2].note == "confirmed"


def test_briefings_parse_json_and_pull(cli_env: Path) -> None:
    folder = cli_env / "briefings"
    folder.mkdir()
    (folder / "good.txt").write_text(
        "Already a subscriber? Log in to keep reading.\n"
        "The harbour reopened on Monday after a week of storms.\n"
        "What's going on now: Ferries resumed at dawn.\n"
        "Crews worked overnight.\n",
        encoding="utf-8",
    )
    (folder / "empty.md").write_text("   \n", encoding="utf-8")
    parsed = json.loads(invoke("briefings", "parse", str(folder / "good.txt"), "--json"))
    assert parsed["lead"] == "The harbour reopened on Monday after a week of storms."
    assert parsed["sections"][0]["label"] == "What's going on now"
    assert parsed["sections"][0]["paragraphs"] == [
        "Ferries resumed at dawn.",
        "Crews worked overnight.",
    ]
    assert parsed["dropped"] == ["Already a subscriber? Log in to keep reading."]

    bad = runner.invoke(app, ["briefings", "parse", str(folder / "empty.md"), "--json"])
    assert bad.exit_code == 1
    assert "empty.md" in bad.stderr

    invoke("db", "upgrade")
    result = runner.invoke(app, ["pull", "--folder", str(folder), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1
    (folder_report,) = report["sources"]
    assert folder_report["new"] == 1
    assert "empty.md" in folder_report["errors"][0]["message"]


def test_commands_refuse_an_unmigrated_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    result = runner.invoke(app, ["editions", "list"])
    assert result.exit_code == 1
    assert "mailer db upgrade" in result.stderr
