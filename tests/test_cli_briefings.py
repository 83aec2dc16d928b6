"""The briefing commands end to end: sources, pull, list/show/parse, tokens, editing editions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from mailer.cli import app
from tests.feed_server import FeedServer, Route, serving

runner = CliRunner()
SAMPLE_FEED = Path(__file__).parent / "data" / "feeds" / "briefings.rss"


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with serving() as running:
        running.routes["/feed.rss"] = Route(body=SAMPLE_FEED.read_bytes(), etag='"1"')
        running.routes["/down.rss"] = Route(status=503)
        yield running


def test_sources_pull_and_briefings(cli_env: Path, server: FeedServer) -> None:
    invoke("db", "upgrade")
    desk = cli_env / "desk"
    desk.mkdir()
    (desk / "story.txt").write_text(
        "Log in to keep reading.\nA bridge reopened on Sunday.\nWhy it matters: Commutes.\n"
    )
    (desk / "broken.md").write_text("---\ntitle: [oops\n---\nLead.\n")
    invoke("sources", "add-folder", "desk", str(desk), "--draft")
    invoke("sources", "add-feed", "wire", server.url("/feed.rss"))
    invoke("sources", "add-feed", "down", server.url("/down.rss"))

    result = runner.invoke(app, ["pull", "--json"])
    assert result.exit_code == 1  # something failed, and it says what
    report = {r["source"]: r for r in json.loads(result.stdout)["sources"]}
    assert report["desk"]["new"] == 1 and "broken.md:2" in report["desk"]["errors"][0]["message"]
    assert report["wire"]["new"] == 2
    assert "HTTP 503" in report["down"]["errors"][0]["message"]

    again = json.loads(runner.invoke(app, ["pull", "--json", "--source", "wire"]).stdout)
    assert again["sources"][0]["not_modified"] is True

    sources = {s["name"]: s for s in json.loads(invoke("sources", "list", "--json"))}
    assert "HTTP 503" in sources["down"]["last_error"]
    assert sources["wire"]["last_outcome"] == "not modified"

    drafts = json.loads(invoke("briefings", "list", "--status", "draft", "--json"))
    assert [b["title"] for b in drafts] == ["A bridge reopened on Sunday."]
    shown = json.loads(invoke("briefings", "show", str(drafts[0]["id"]), "--json"))
    assert shown["dropped"] == ["Log in to keep reading."]
    assert shown["sections"] == [{"label": "Why it matters", "paragraphs": ["Commutes."]}]
    invoke("briefings", "ready", str(drafts[0]["id"]))
    assert json.loads(invoke("briefings", "list", "--status", "draft", "--json")) == []

    parsed = json.loads(invoke("briefings", "parse", server.url("/feed.rss"), "--json"))
    assert [p["guid"] for p in parsed] == [
        "briefing-2026-11-24-port-strike",
        "briefing-2026-11-24-heat-pumps",
    ]


def test_compose_and_edit_an_edition(cli_env: Path) -> None:
    invoke("demo", "--subscribers", "2")  # a newsletter, and an edition already sent
    folder = cli_env / "more"
    folder.mkdir()
    for name, lead in (("a", "Alpha happened."), ("b", "Beta happened."), ("c", "Gamma happened.")):
        (folder / f"{name}.txt").write_text(f"{lead}\nWhy it matters: Reasons.\n")
    invoke("pull", "--folder", str(folder))

    # Today's edition was sent by the demo: it no longer changes. Compose tomorrow's.
    editions = json.loads(invoke("editions", "list", "--json"))
    sent_id = editions[0]["id"]
    locked = runner.invoke(app, ["editions", "update", str(sent_id), "--subject", "Nope"])
    assert locked.exit_code == 1 and "can no longer change" in locked.stderr

    # An edition takes the briefings of its own dates: tomorrow's, composed early, takes
    # what arrived after today's was composed (the demo's newsletter is on New York time).
    tomorrow = (datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=1)).isoformat()
    composed = json.loads(invoke("editions", "compose", "daily", "--date", tomorrow, "--json"))
    assert composed["status"] == "ready" and composed["briefings"] == 3
    shown = json.loads(invoke("editions", "show", str(composed["id"]), "--json"))
    ids = [item["briefing_id"] for item in shown["items"]]
    invoke("editions", "exclude", str(composed["id"]), str(ids[1]))
    invoke("editions", "reorder", str(composed["id"]), str(ids[2]))
    invoke("editions", "update", str(composed["id"]), "--subject", "Three things, then two")
    shown = json.loads(invoke("editions", "show", str(composed["id"]), "--json"))
    assert [item["briefing_id"] for item in shown["items"]] == [ids[2], ids[0]]
    assert shown["subject"] == "Three things, then two"
    text = invoke("editions", "preview", str(composed["id"]), "--text")
    assert "1. Alpha happened.\n2. Gamma happened.\n" in text


def test_api_token_commands(cli_env: Path) -> None:
    invoke("db", "upgrade")
    token = invoke("api-tokens", "create", "cms").strip().splitlines()[-1]
    assert token.startswith("mlr_")
    listed = invoke("api-tokens", "list")
    assert "cms" in listed and token not in listed
    invoke("api-tokens", "revoke", "cms")
    assert runner.invoke(app, ["api-tokens", "revoke", "cms"]).exit_code == 1


def test_an_editor_corrects_a_briefing_and_a_pull_keeps_it(cli_env: Path) -> None:
    invoke("db", "upgrade")
    desk = cli_env / "desk"
    desk.mkdir()
    story = desk / "story.txt"
    story.write_text("A bridge reopened on Sunday.\nWhy it matters: Commutes.\n")
    invoke("sources", "add-folder", "desk", str(desk))
    invoke("pull")
    [row] = json.loads(invoke("briefings", "list", "--json"))
    briefing_id = str(row["id"])

    nothing = runner.invoke(app, ["briefings", "correct", briefing_id])
    assert nothing.exit_code == 1 and "--title" in nothing.stderr
    too_long = runner.invoke(app, ["briefings", "correct", briefing_id, "--title", "x" * 301])
    assert too_long.exit_code == 1 and "at most 300" in too_long.stderr
    missing = runner.invoke(app, ["briefings", "correct", "999", "--title", "Nope"])
    assert missing.exit_code == 1 and "no briefing" in missing.stderr

    corrected = json.loads(
        invoke("briefings", "correct", briefing_id, "--title", "  The  bridge is open ", "--json")
    )
    assert corrected["title"] == "The bridge is open" and corrected["edited"]
    assert corrected["original_title"] == "A bridge reopened on Sunday."
    assert corrected["edited_by"].startswith("cli:") and corrected["edited_at"]
    shown = invoke("briefings", "show", briefing_id)
    assert "The bridge is open" in shown and "the source says" in shown
    assert "A bridge reopened on Sunday." in shown
    [listed] = json.loads(invoke("briefings", "list", "--search", "BRIDGE IS", "--json"))
    assert listed["title"] == "The bridge is open" and listed["edited"]

    story.write_text("A bridge reopened on Sunday night.\nWhy it matters: Commutes.\n")
    invoke("pull")
    after = json.loads(invoke("briefings", "show", briefing_id, "--json"))
    assert after["title"] == "The bridge is open"
    assert after["original_title"] == "A bridge reopened on Sunday night."

    restored = json.loads(invoke("briefings", "correct", briefing_id, "--title", "", "--json"))
    assert restored["title"] == "A bridge reopened on Sunday night." and not restored["edited"]
