"""Editions through the application layer (and the command line that calls it), on SQLite
and PostgreSQL: composing, arranging, previews without working links, checks, test sends,
approval, one-off send times started by the scheduler, and sending."""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from typer.testing import CliRunner

from mailer.accounts.models import AuditEntry, Role
from mailer.app import editions
from mailer.app.actors import Actor
from mailer.app.errors import ChecksFailed, Conflict, Invalid, NotFound, RateLimited
from mailer.briefings.folder import pull_folder
from mailer.briefings.parser import parse_text
from mailer.briefings.store import store_briefing
from mailer.cli import app as cli
from mailer.config import Settings
from mailer.db.base import utcnow
from mailer.db.models import BriefingStatus, Edition, Event
from mailer.db.session import transaction
from mailer.editions import checks as edition_checks
from mailer.editions.checks import Rendition
from mailer.editions.compose import rerender
from mailer.events.sendgrid_events import parse_events
from mailer.events.store import store_sendgrid
from mailer.runtime import Runtime
from mailer.schedule.models import RunState, ScheduleRun
from mailer.schedule.runner import Runner
from tests import factories
from tests.feed_server import Route, serving
from tests.loopback import LoopbackServer
from tests.scheduling import Clock, drain, ledger_size, scheduled_newsletter, utc
from tests.sendgrid_sink import API_KEY, SinkServer, sendgrid_sink

EDITOR = Actor("account:ed@example.org", Role.EDITOR)
PREVIEW_LINK = "https://news.example.org/preview/link"


def briefing(
    runtime: Runtime,
    key: str,
    title: str,
    *,
    hours_ago: float,
    url: str | None = None,
    status: BriefingStatus = BriefingStatus.READY,
) -> int:
    parsed = parse_text(
        f"{title} happened today.\nWhy it matters: It matters for {key}.\n",
        source=key,
        markdown=False,
    )
    parsed = replace(
        parsed, title=title, url=url, published_at=utcnow() - timedelta(hours=hours_ago)
    )
    with transaction(runtime.sessions) as session:
        stored, _ = store_briefing(session, key, parsed, initial_status=status)
        return stored.id


@pytest.fixture
def daily(runtime: Runtime) -> int:
    """A newsletter with three subscribers and three recent briefings."""
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 3)
    briefing(runtime, "a", "Alpha story", hours_ago=2)
    briefing(runtime, "b", "Beta story", hours_ago=3)
    briefing(runtime, "c", "Gamma story", hours_ago=4)
    return newsletter_id


def composed(runtime: Runtime) -> editions.EditionDetail:
    detail, _ = editions.compose(runtime, EDITOR, "daily")
    return detail


def audit_actions(runtime: Runtime, edition_id: int) -> list[str]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.target_kind == "edition", AuditEntry.target_id == str(edition_id))
                .order_by(AuditEntry.id)
            )
        )


def break_postal_address(runtime: Runtime, edition_id: int) -> None:
    """As if the footer had lost the postal address (a template edit, an empty setting)."""
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        edition.newsletter.postal_address = ""
        rerender(edition)


# -- composing and reading -------------------------------------------------------------


def test_compose_then_read_it_back(runtime: Runtime, daily: int) -> None:
    detail, created = editions.compose(runtime, EDITOR, "daily")
    assert created and detail.status == "ready" and detail.editable
    assert [i.title for i in detail.items] == ["Alpha story", "Beta story", "Gamma story"]
    assert [i.position for i in detail.items] == [0, 1, 2]
    assert detail.items[0].word_count_title == 2 and detail.items[0].headline is None
    assert detail.subject == "Alpha story" and detail.html_bytes > 1000
    assert (detail.newsletter_slug, detail.timezone, detail.held) == ("daily", "UTC", False)
    assert detail.available == () and detail.excluded == ()

    again, created_again = editions.compose(runtime, EDITOR, "daily")
    assert not created_again and again.id == detail.id
    with pytest.raises(NotFound):
        editions.compose(runtime, EDITOR, "nope")
    with pytest.raises(NotFound):
        editions.get_edition(runtime, EDITOR, 999)

    [summary] = editions.list_editions(runtime, EDITOR)
    assert (summary.id, summary.briefings, summary.status) == (detail.id, 3, "ready")
    assert summary.counts["queued"] == 0
    assert audit_actions(runtime, detail.id) == ["edition.compose"]


def test_lists_page_newest_first_and_filter_by_status(runtime: Runtime, daily: int) -> None:
    ready = composed(runtime)
    skipped = [editions.compose(runtime, EDITOR, "daily", date(2026, 1, d))[0] for d in (1, 2, 3)]
    assert {e.status for e in skipped} == {"skipped"}

    first = editions.list_editions(runtime, EDITOR, limit=2)
    assert [e.id for e in first] == sorted([ready.id, *(e.id for e in skipped)], reverse=True)[:2]
    rest = editions.list_editions(runtime, EDITOR, limit=2, before_id=first[-1].id)
    assert [e.id for e in rest] == sorted([e.id for e in first + rest], reverse=True)[2:]
    assert len(first + rest) == 4
    assert [e.id for e in editions.list_editions(runtime, EDITOR, statuses=["ready"])] == [ready.id]


# -- arranging -------------------------------------------------------------------------


def test_an_editor_arranges_an_edition_and_each_change_is_audited(
    runtime: Runtime, daily: int
) -> None:
    detail = composed(runtime)
    alpha, beta, gamma = (i.briefing_id for i in detail.items)

    approved = editions.approve(runtime, EDITOR, detail.id)
    assert approved.approved_by == EDITOR.label and approved.status == "ready"

    out = editions.exclude(runtime, EDITOR, detail.id, beta)
    assert [i.briefing_id for i in out.items] == [alpha, gamma]
    assert [c.briefing_id for c in out.excluded] == [beta]
    assert out.approved_by is None  # what was approved is not what would go out now
    back = editions.include(runtime, EDITOR, detail.id, beta, 0)
    assert [i.briefing_id for i in back.items] == [beta, alpha, gamma] and back.excluded == ()
    assert back.subject == "Beta story"

    moved = editions.move(runtime, EDITOR, detail.id, beta, 1)
    assert [i.briefing_id for i in moved.items] == [alpha, beta, gamma]
    still = editions.move(runtime, EDITOR, detail.id, alpha, -1)  # already first: no change
    assert [i.briefing_id for i in still.items] == [alpha, beta, gamma]
    reordered = editions.reorder(runtime, EDITOR, detail.id, [gamma])
    assert [i.briefing_id for i in reordered.items] == [gamma, alpha, beta]

    headed = editions.set_headline(runtime, EDITOR, detail.id, gamma, "  Gamma,   briefly ")
    assert headed.items[0].headline == headed.items[0].title == "Gamma, briefly"
    assert headed.subject == "Gamma, briefly"  # the default subject follows the headline
    with pytest.raises(Invalid) as too_long:
        editions.set_headline(runtime, EDITOR, detail.id, gamma, "x" * 301)
    assert too_long.value.field == "headline"
    with pytest.raises(NotFound):
        editions.set_headline(runtime, EDITOR, detail.id, 999, "Nope")

    retitled = editions.retitle(runtime, EDITOR, detail.id, subject="Three things today")
    assert retitled.subject == "Three things today"
    assert retitled.subject_override == "Three things today"
    restored = editions.retitle(runtime, EDITOR, detail.id, subject="")
    assert restored.subject == "Gamma, briefly" and restored.subject_override is None

    # News arrives: it is offered, not taken, until an editor includes it or recomposes.
    late = briefing(runtime, "d", "Delta story", hours_ago=1)
    shown = editions.get_edition(runtime, EDITOR, detail.id)
    assert [c.briefing_id for c in shown.available] == [late]
    editions.exclude(runtime, EDITOR, detail.id, alpha)
    recomposed = editions.recompose(runtime, EDITOR, detail.id)
    assert [i.briefing_id for i in recomposed.items] == [gamma, beta, late]
    assert recomposed.items[0].headline == "Gamma, briefly"
    assert [c.briefing_id for c in recomposed.excluded] == [alpha]
    assert recomposed.available == ()

    assert audit_actions(runtime, detail.id) == [
        "edition.compose",
        "edition.approve",
        "edition.exclude",
        "edition.include",
        "edition.move",
        "edition.reorder",
        "edition.headline",
        "edition.retitle",
        "edition.retitle",
        "edition.exclude",
        "edition.recompose",
    ]
    with runtime.sessions() as session:
        entry = session.scalar(
            select(AuditEntry).where(AuditEntry.action == "edition.exclude").limit(1)
        )
        assert entry is not None and entry.actor == EDITOR.label
        assert entry.before is not None and entry.after is not None
        assert entry.before["briefings"] == [alpha, beta, gamma]
        assert entry.after["briefings"] == [alpha, gamma] and entry.after["excluded"] == [beta]
        assert entry.before["approved_by"] == EDITOR.label and entry.after["approved_by"] is None


def test_include_takes_only_what_the_edition_may_carry(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    archived = briefing(runtime, "x", "Archived", hours_ago=1, status=BriefingStatus.ARCHIVED)
    stale = briefing(runtime, "y", "Stale", hours_ago=100)
    for briefing_id in (archived, stale):
        with pytest.raises(Invalid) as refused:
            editions.include(runtime, EDITOR, detail.id, briefing_id)
        assert refused.value.field == "briefing_id"
    with pytest.raises(NotFound):
        editions.include(runtime, EDITOR, detail.id, 999)
    with pytest.raises(Invalid):
        editions.include(runtime, EDITOR, detail.id, detail.items[0].briefing_id)


def test_nothing_changes_once_sending_has_started(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    started = editions.send_now(runtime, EDITOR, detail.id)
    assert started.status == "sending" and not started.editable
    assert started.approved_by == EDITOR.label
    first = detail.items[0].briefing_id
    for change in (
        lambda: editions.exclude(runtime, EDITOR, detail.id, first),
        lambda: editions.set_headline(runtime, EDITOR, detail.id, first, "Late"),
        lambda: editions.retitle(runtime, EDITOR, detail.id, subject="Late"),
        lambda: editions.recompose(runtime, EDITOR, detail.id),
        lambda: editions.delete_draft(runtime, EDITOR, detail.id),
        lambda: editions.approve(runtime, EDITOR, detail.id),
    ):
        with pytest.raises(Conflict):
            change()
    assert editions.get_edition(runtime, EDITOR, detail.id).subject == detail.subject
    # Asked again, it is already with the workers: nothing more happens.
    assert editions.send_now(runtime, EDITOR, detail.id).status == "sending"
    assert ledger_size(runtime) == 3


def test_a_deleted_draft_is_gone_and_its_date_composes_again(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    editions.delete_draft(runtime, EDITOR, detail.id)
    with pytest.raises(NotFound):
        editions.get_edition(runtime, EDITOR, detail.id)
    again, created = editions.compose(runtime, EDITOR, "daily")
    assert created and len(again.items) == 3
    assert "edition.delete" in audit_actions(runtime, detail.id)

    cancelled = editions.cancel(runtime, EDITOR, again.id)
    assert cancelled.status == "cancelled"
    editions.delete_draft(runtime, EDITOR, again.id)  # it never started: it may go


# -- previews and checks ---------------------------------------------------------------


def test_previews_are_personal_but_their_links_do_nothing(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    html = editions.preview(runtime, EDITOR, detail.id, as_email="Reader00001@Example.com")
    assert html.part == "html" and html.as_email == "reader00001@example.com"
    assert "reader00001@example.com" in html.content
    assert f'href="{PREVIEW_LINK}"' in html.content and "/u/" not in html.content
    text = editions.preview(runtime, EDITOR, detail.id, part="text")
    assert f"Unsubscribe with one click: {PREVIEW_LINK}" in text.content
    assert "%%" not in text.content  # every placeholder filled, none with a real value

    with pytest.raises(NotFound):
        editions.preview(runtime, EDITOR, detail.id, as_email="stranger@example.com")
    with pytest.raises(Invalid) as bad:
        editions.preview(runtime, EDITOR, detail.id, as_email="not-an-address")
    assert bad.value.field == "as_email"


def test_checks_pass_a_good_edition_and_refuse_one_without_an_address(
    runtime: Runtime, daily: int
) -> None:
    detail = composed(runtime)
    found = {c.name: c for c in editions.checks(runtime, EDITOR, detail.id)}
    assert list(found) == [
        "size",
        "unsubscribe",
        "postal_address",
        "subject",
        "preheader",
        "headlines",
        "links",
        "images",
    ]
    assert all(c.level == "ok" for c in found.values()), found

    break_postal_address(runtime, detail.id)
    refused = {c.name: c.level for c in editions.checks(runtime, EDITOR, detail.id)}
    assert refused["postal_address"] == "refuse"
    with pytest.raises(ChecksFailed) as failed:
        editions.approve(runtime, EDITOR, detail.id)
    assert any("postal address" in f for f in failed.value.failures)
    for action in (
        lambda: editions.send_now(runtime, EDITOR, detail.id),
        lambda: editions.schedule_send(runtime, EDITOR, detail.id, utcnow() + timedelta(hours=1)),
    ):
        with pytest.raises(ChecksFailed):
            action()
    assert ledger_size(runtime) == 0


def rendition(**overrides: object) -> Rendition:
    nonce = "0123456789ab"
    values: dict[str, object] = {
        "html": (
            "<html><head><title>x</title></head><body><p>Hello</p>"
            '<a href="https://news.example.org/a">a</a> <a href="#top">top</a> '
            '<a href="mailto:desk@news.example.org">mail</a> '
            f'<a href="%%{nonce}:unsubscribe_url%%">Unsubscribe</a>'
            "<p>1 Quay Street, Valmere</p></body></html>"
        ),
        "text": f"Hello\nUnsubscribe: %%{nonce}:unsubscribe_url%%\n1 Quay Street,\nValmere\n",
        "nonce": nonce,
        "subject": "Today's news",
        "preheader": "Plus 2 more",
        "postal_address": "1 Quay Street, Valmere",
        "headlines": ("Short headline",),
    }
    values.update(overrides)
    return Rendition(**values)  # type: ignore[arg-type]


def levels(found: list[edition_checks.Check]) -> dict[str, str]:
    return {c.name: c.level for c in found}


def test_check_rules() -> None:
    good = rendition()
    assert set(levels(edition_checks.evaluate(good)).values()) == {"ok"}

    html = good.html.replace(
        "<p>Hello</p>",
        '<p>Hello</p><a href=" java\tscript:alert(1)">x</a><a href="/relative">r</a>'
        '<img src="https://news.example.org/logo.png">',
    )
    found = {c.name: c for c in edition_checks.evaluate(replace(good, html=html))}
    assert found["links"].level == "refuse" and "script:alert(1)" in found["links"].message
    assert found["images"].level == "warn" and "logo.png" in found["images"].message
    only_relative = good.html.replace("<p>Hello</p>", '<a href="ftp://x.example/f">f</a>')
    relative = edition_checks.evaluate(replace(good, html=only_relative))
    assert levels(relative)["links"] == "warn"

    long_headline = "one two three four five six seven eight nine ten eleven twelve thirteen 14 15"
    odd = replace(
        good,
        subject="x" * 95,
        preheader="  ",
        headlines=("Fine", long_headline),
        text=good.text.replace("%%0123456789ab:unsubscribe_url%%", ""),
    )
    found = {c.name: c for c in edition_checks.evaluate(odd)}
    assert found["subject"].level == "warn" and "95 characters" in found["subject"].message
    assert found["preheader"].level == "warn"
    assert found["headlines"].level == "warn" and "(15 words)" in found["headlines"].message
    assert found["unsubscribe"].level == "refuse" and "text" in found["unsubscribe"].message
    assert levels(edition_checks.evaluate(replace(good, subject=" ")))["subject"] == "refuse"
    assert levels(edition_checks.evaluate(replace(good, postal_address="Elsewhere 9")))[
        "postal_address"
    ] == ("refuse")

    big = good.html.replace("<p>Hello</p>", "<p>" + "x" * 91_000 + "</p>")
    assert levels(edition_checks.evaluate(replace(good, html=big)))["size"] == "refuse"
    near = good.html.replace("<p>Hello</p>", "<p>" + "x" * 80_000 + "</p>")
    assert levels(edition_checks.evaluate(replace(good, html=near)))["size"] == "warn"


class _Site(BaseHTTPRequestHandler):
    """Answers HEAD like a web site would; records which methods it was asked."""

    asked: ClassVar[list[tuple[str, str]]] = []

    def do_HEAD(self) -> None:
        self.asked.append(("HEAD", self.path))
        if self.path == "/slow":
            time.sleep(1.5)
        status = {"/ok": 200, "/gone": 410, "/slow": 200, "/get-only": 405}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.asked.append(("GET", self.path))
        self.send_response(200 if self.path == "/get-only" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_the_link_check_asks_a_real_server() -> None:
    _Site.asked = []
    with LoopbackServer(_Site) as site:
        urls = [site.url(p) for p in ("/ok", "/gone", "/slow", "/get-only")]
        check = edition_checks.links_answer(urls, timeout=0.5)
    assert check.level == "warn"
    assert f"{urls[1]} (HTTP 410)" in check.message
    assert f"{urls[2]} (no answer within 0.5 s)" in check.message
    assert urls[0] not in check.message and urls[3] not in check.message
    # HEAD first; GET only where HEAD is not allowed.
    assert ("GET", "/ok") not in _Site.asked and ("GET", "/get-only") in _Site.asked

    with serving() as feeds:  # a server that knows no HEAD at all (501): GET instead
        feeds.routes["/page"] = Route(body=b"<p>hi</p>", content_type="text/html")
        fine = edition_checks.links_answer([feeds.url("/page")], timeout=2)
        missing = edition_checks.links_answer([feeds.url("/missing")], timeout=2)
    assert fine.level == "ok" and missing.level == "warn" and "HTTP 404" in missing.message


def test_checks_with_links_fetch_the_editions_links(runtime: Runtime) -> None:
    factories.newsletter(runtime)
    with serving() as server:
        server.routes["/story"] = Route(body=b"story", content_type="text/html")
        briefing(runtime, "a", "Linked story", hours_ago=1, url=server.url("/story"))
        briefing(runtime, "b", "Broken link", hours_ago=2, url=server.url("/moved"))
        detail = composed(runtime)
        offline = {c.name for c in editions.checks(runtime, EDITOR, detail.id)}
        found = {c.name: c for c in editions.checks(runtime, EDITOR, detail.id, check_links=True)}
    assert "link_check" not in offline
    assert found["link_check"].level == "warn"
    assert server.url("/moved") in found["link_check"].message
    assert server.url("/story") not in found["link_check"].message


# -- test sends ------------------------------------------------------------------------


def test_test_sends_go_aside_marked_and_rate_limited(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    result = editions.test_send(
        runtime, EDITOR, detail.id, ["Reader00001@Example.com", "desk@news.example.org"]
    )
    assert result.addresses == ("reader00001@example.com", "desk@news.example.org")
    assert result.subject == f"[TEST] {detail.subject}"

    outbox = runtime.settings.outbox_dir
    files = sorted((outbox / "test-sends" / f"edition-{detail.id}").glob("*.eml"))
    assert len(files) == 2
    assert not (outbox / f"edition-{detail.id}").exists()  # never among the readers' mail
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["Subject"] == result.subject
    assert message["List-Unsubscribe"] == f"<{PREVIEW_LINK}>"
    assert message["X-Mailer-Test-Send"] and message["X-Mailer-Delivery"] is None
    assert ".test@" in message["Message-ID"]
    assert b"/u/" not in files[0].read_bytes()
    assert ledger_size(runtime) == 0
    assert editions.progress(runtime, EDITOR, detail.id).total == 0

    for wrong in ([], [f"r{i}@example.com" for i in range(11)], ["not-an-address"]):
        with pytest.raises(Invalid) as refused:
            editions.test_send(runtime, EDITOR, detail.id, wrong)
        assert refused.value.field == "addresses"

    for _ in range(4):
        editions.test_send(runtime, EDITOR, detail.id, ["desk@news.example.org"])
    with pytest.raises(RateLimited) as limited:
        editions.test_send(runtime, EDITOR, detail.id, ["desk@news.example.org"])
    assert 0 < limited.value.retry_after <= 600
    assert audit_actions(runtime, detail.id).count("edition.test_send") == 5


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    with sendgrid_sink() as server:
        yield server


def test_sendgrid_test_sends_name_no_edition_and_never_count(
    runtime: Runtime, settings: Settings, daily: int, sink: SinkServer
) -> None:
    detail = composed(runtime)
    assert editions.send(runtime, EDITOR, detail.id)["sent"] == 3
    through_sendgrid = Runtime(
        settings.model_copy(
            update={
                "transport": "sendgrid",
                "sendgrid_api_key": SecretStr(API_KEY),
                "sendgrid_base_url": sink.base_url,
            }
        )
    )
    try:
        editions.test_send(through_sendgrid, EDITOR, detail.id, ["reader00001@example.com"])
    finally:
        through_sendgrid.close()
    assert sink.sink.answered == [202]  # a valid v3 body
    [body] = sink.sink.bodies
    [person] = body["personalizations"]
    assert body["custom_args"] == {"test_send": "true"} and body["categories"] == ["test-send"]
    assert person["custom_args"] == {"test_send": "true"}
    assert body["subject"].startswith("[TEST] ")
    assert person["headers"]["List-Unsubscribe"] == f"<{PREVIEW_LINK}>"

    # SendGrid reports an open of the test message (its custom args come back as sent).
    before = editions.stats(runtime, EDITOR, detail.id)
    events, rejected = parse_events(
        json.dumps(
            [
                {
                    "email": "reader00001@example.com",
                    "timestamp": int(time.time()),
                    "event": "open",
                    "sg_event_id": "test-open-1",
                    "sg_message_id": "testsendmessage.filter0001.1.0",
                    "test_send": "true",
                }
            ]
        ).encode()
    )
    with runtime.engine.begin() as connection:
        report = store_sendgrid(connection, events, rejected)
    assert report.unmatched == 1
    after = editions.stats(runtime, EDITOR, detail.id)
    assert (after.opens, after.unique_opens) == (before.opens, before.unique_opens) == (0, 0)
    with runtime.sessions() as session:
        stored = session.scalar(select(Event).where(Event.external_id == "test-open-1"))
        assert stored is not None and stored.edition_id is None and stored.delivery_id is None


# -- approving, scheduling, sending ----------------------------------------------------


def held_edition(runtime: Runtime, folder: Path) -> tuple[int, ScheduleRun]:
    """A schedule with approval whose slot passed five minutes ago, held after a tick."""
    now = utcnow()
    slot = (now - timedelta(minutes=5)).replace(second=0, microsecond=0)
    scheduled_newsletter(
        runtime,
        folder,
        slot=f"{slot:%H:%M}",
        requires_approval=True,
        since=now - timedelta(hours=1),
        published=now - timedelta(minutes=30),
    )
    Runner(runtime, holder="test", clock=utcnow).tick()
    with runtime.sessions() as session:
        run = session.scalars(select(ScheduleRun)).one()
    assert run.state == RunState.HELD and run.edition_id is not None
    return run.edition_id, run


def test_approving_a_held_edition_sends_it(runtime: Runtime, tmp_path: Path) -> None:
    edition_id, run = held_edition(runtime, tmp_path / "desk")
    detail = editions.get_edition(runtime, EDITOR, edition_id)
    assert detail.held and detail.approval_deadline == run.deadline_at

    approved = editions.approve(runtime, EDITOR, edition_id)
    assert approved.status == "sending" and not approved.held
    assert approved.approved_by == EDITOR.label
    with runtime.sessions() as session:
        assert session.get(ScheduleRun, run.id).state == RunState.SENT  # type: ignore[union-attr]
    assert drain(runtime, edition_id)["sent"] == 3


def test_a_held_edition_past_its_deadline_is_not_approved(runtime: Runtime, tmp_path: Path) -> None:
    edition_id, run = held_edition(runtime, tmp_path / "desk")
    with transaction(runtime.sessions) as session:
        session.execute(
            update(ScheduleRun)
            .where(ScheduleRun.id == run.id)
            .values(deadline_at=utcnow() - timedelta(minutes=1))
        )
    with pytest.raises(Conflict, match="deadline"):
        editions.approve(runtime, EDITOR, edition_id)
    assert editions.get_edition(runtime, EDITOR, edition_id).status == "ready"
    with pytest.raises(Invalid) as late:
        editions.schedule_send(runtime, EDITOR, edition_id, utcnow() + timedelta(hours=1))
    assert late.value.field == "at"


def test_send_now_then_follow_it(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    started = editions.send_now(runtime, EDITOR, detail.id)
    state = editions.progress(runtime, EDITOR, detail.id)
    assert (started.status, state.total, state.counts["queued"], state.done) == (
        "sending",
        3,
        3,
        0,
    )
    assert drain(runtime, detail.id)["sent"] == 3
    state = editions.progress(runtime, EDITOR, detail.id)
    assert (state.status, state.done, state.eta_seconds) == ("sent", 3, None)
    assert state.rate_per_second > 0
    with pytest.raises(Conflict):
        editions.send_now(runtime, EDITOR, detail.id)
    assert audit_actions(runtime, detail.id) == ["edition.compose", "edition.send_now"]


def test_pause_resume_and_cancel(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    editions.send_now(runtime, EDITOR, detail.id)
    paused = editions.pause(runtime, EDITOR, detail.id)
    assert paused.status == "paused" and paused.status_reason == "paused by ed@example.org"
    with pytest.raises(Conflict):
        editions.pause(runtime, EDITOR, detail.id)
    assert editions.resume(runtime, EDITOR, detail.id).status == "sending"
    cancelled = editions.cancel(runtime, EDITOR, detail.id)
    assert cancelled.status == "cancelled"
    assert editions.progress(runtime, EDITOR, detail.id).counts["skipped"] == 3
    with pytest.raises(Conflict):
        editions.cancel(runtime, EDITOR, detail.id)
    assert audit_actions(runtime, detail.id)[-3:] == [
        "edition.pause",
        "edition.resume",
        "edition.cancel",
    ]


def test_a_set_send_time_is_started_once_by_the_scheduler(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    with pytest.raises(Invalid) as past:
        editions.schedule_send(runtime, EDITOR, detail.id, utcnow() - timedelta(minutes=1))
    assert past.value.field == "at"
    with pytest.raises(Invalid):
        editions.schedule_send(runtime, EDITOR, detail.id, datetime(2099, 1, 1, 6, 30))

    at = (utcnow() + timedelta(minutes=30)).astimezone(ZoneInfo("Europe/Paris"))
    scheduled = editions.schedule_send(runtime, EDITOR, detail.id, at)
    assert scheduled.scheduled_for == at.astimezone(UTC)
    assert scheduled.approved_by == EDITOR.label and scheduled.status == "ready"

    clock = Clock(at.astimezone(UTC) - timedelta(minutes=1))
    runner = Runner(runtime, holder="test", clock=clock)
    assert runner.tick().started == []
    clock.set(at.astimezone(UTC) + timedelta(seconds=1))
    assert runner.tick().started == [detail.id]
    assert runner.tick().started == []  # the next tick: nothing more
    assert Runner(runtime, holder="other", clock=clock).tick().started == []
    assert editions.get_edition(runtime, EDITOR, detail.id).status == "sending"
    assert ledger_size(runtime) == 3
    with runtime.sessions() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "edition.start")
        ).one()
    assert entry.actor == "scheduler" and entry.target_id == str(detail.id)


def test_a_scheduled_send_that_fails_its_checks_is_not_started(
    runtime: Runtime, daily: int
) -> None:
    detail = composed(runtime)
    at = utcnow() + timedelta(minutes=10)
    editions.schedule_send(runtime, EDITOR, detail.id, at)
    break_postal_address(runtime, detail.id)
    report = Runner(runtime, holder="test", clock=Clock(at + timedelta(seconds=1))).tick()
    assert report.started == []
    after = editions.get_edition(runtime, EDITOR, detail.id)
    assert after.status == "ready" and after.scheduled_for is None
    assert after.status_reason is not None and "did not start" in after.status_reason
    assert "postal address" in after.status_reason
    assert "edition.scheduled_send_refused" in audit_actions(runtime, detail.id)
    assert ledger_size(runtime) == 0


def test_unschedule_takes_the_time_back(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    at = utcnow() + timedelta(minutes=10)
    editions.schedule_send(runtime, EDITOR, detail.id, at)
    assert editions.unschedule(runtime, EDITOR, detail.id).scheduled_for is None
    assert Runner(runtime, holder="t", clock=Clock(at + timedelta(minutes=1))).tick().started == []
    assert editions.get_edition(runtime, EDITOR, detail.id).status == "ready"


def test_send_blocks_until_drained(runtime: Runtime, daily: int) -> None:
    detail = composed(runtime)
    seen: list[dict[str, int]] = []
    tally = editions.send(runtime, EDITOR, detail.id, on_progress=seen.append)
    assert tally["sent"] == 3 and seen and seen[-1]["sent"] == 3
    assert editions.send(runtime, EDITOR, detail.id)["sent"] == 3  # again: nothing more
    assert editions.get_edition(runtime, EDITOR, detail.id).status == "sent"


# -- the command line ------------------------------------------------------------------

runner = CliRunner()


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result.stdout


def test_the_edition_commands(cli_env: Path, database_url: str) -> None:
    invoke("demo", "--subscribers", "2")
    folder = cli_env / "more"
    folder.mkdir()
    for name, lead in (("a", "Alpha happened."), ("b", "Beta happened."), ("c", "Gamma happened.")):
        (folder / f"{name}.txt").write_text(f"{lead}\nWhy it matters: Reasons.\n")
    invoke("pull", "--folder", str(folder))
    tomorrow = (datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=1)).isoformat()
    made = json.loads(invoke("editions", "compose", "daily", "--date", tomorrow, "--json"))
    edition_id = str(made["id"])
    shown = json.loads(invoke("editions", "show", edition_id, "--json"))
    ids = [str(item["briefing_id"]) for item in shown["items"]]

    assert "edition " + edition_id + ": Short" in invoke(
        "editions", "headline", edition_id, ids[0], "Short"
    )
    invoke("editions", "exclude", edition_id, ids[1])
    invoke("editions", "recompose", edition_id)
    shown = json.loads(invoke("editions", "show", edition_id, "--json"))
    assert [str(e["briefing_id"]) for e in shown["excluded"]] == [ids[1]]
    invoke("editions", "include", edition_id, ids[1], "--position", "1")
    shown = json.loads(invoke("editions", "show", edition_id, "--json"))
    assert [str(i["briefing_id"]) for i in shown["items"]] == [ids[1], ids[0], ids[2]]
    assert shown["items"][1]["headline"] == "Short"

    preview = invoke("editions", "preview", edition_id, "--as", "reader00001@example.com")
    assert "https://news.example.org/preview/link" in preview and "/u/" not in preview
    checked = json.loads(invoke("editions", "checks", edition_id, "--json"))
    assert {c["level"] for c in checked} <= {"ok", "warn"}
    sent = invoke("editions", "test-send", edition_id, "Desk@News.Example.org")
    assert "test sent to desk@news.example.org: [TEST] " in sent

    scheduled = invoke(
        "editions", "schedule", edition_id, "--at", "2099-07-01 06:30", "--timezone", "Europe/Paris"
    )
    assert "goes out at 2099-07-01 04:30 UTC" in scheduled
    assert "with no set send time" in invoke("editions", "unschedule", edition_id)
    assert "approved by cli:" in invoke("editions", "approve", edition_id)
    bad = runner.invoke(cli, ["editions", "schedule", edition_id, "--at", "2001-01-01 06:30"])
    assert bad.exit_code == 1 and "has passed" in bad.stderr

    # A refused check: exit 1, and the edition cannot be approved or sent.
    runtime = Runtime(Settings(database_url=database_url))
    try:
        break_postal_address(runtime, int(edition_id))
    finally:
        runtime.close()
    refused = runner.invoke(cli, ["editions", "checks", edition_id])
    assert refused.exit_code == 1 and "postal_address" in refused.stdout
    approve = runner.invoke(cli, ["editions", "approve", edition_id])
    assert approve.exit_code == 1 and "postal address" in approve.stderr

    invoke("editions", "delete", edition_id)
    gone = runner.invoke(cli, ["editions", "show", edition_id])
    assert gone.exit_code == 1 and f"no edition with id {edition_id}" in gone.stderr


def test_send_exits_1_while_deliveries_are_still_queued(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("db", "upgrade")
    invoke("demo", "--subscribers", "2")
    folder = cli_env / "more"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha happened.\nWhy it matters: Reasons.\n")
    invoke("pull", "--folder", str(folder))
    tomorrow = (datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=1)).isoformat()
    made = json.loads(invoke("editions", "compose", "daily", "--date", tomorrow, "--json"))
    blocked = cli_env / "not-a-folder"
    blocked.write_text("a file where the outbox should be")
    monkeypatch.setenv("MAILER_OUTBOX_DIR", str(blocked))

    result = runner.invoke(cli, ["editions", "send", str(made["id"])])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())  # as wrapped for the terminal
    assert "2 deliveries are still queued" in said
    assert f"mailer editions send {made['id']}" in said


def test_an_edition_approved_before_its_slot_is_not_held(runtime: Runtime, tmp_path: Path) -> None:
    scheduled_newsletter(runtime, tmp_path / "desk", requires_approval=True, since=utc(2025, 6, 10))
    pull_folder(runtime.sessions, tmp_path / "desk")  # composed ahead of the slot's own pull
    early, _ = editions.compose(runtime, EDITOR, "daily", date(2025, 6, 10))
    editions.approve(runtime, EDITOR, early.id)

    report = Runner(runtime, holder="test", clock=Clock(utc(2025, 6, 10, 7, 0, 1))).tick()
    assert report.states() == [RunState.DUE, RunState.SENT]
    assert editions.get_edition(runtime, EDITOR, early.id).status == "sending"


def test_a_slot_leaves_an_edition_with_its_own_send_time_to_it(
    runtime: Runtime, tmp_path: Path
) -> None:
    scheduled_newsletter(runtime, tmp_path / "desk", since=utc(2025, 6, 10))
    pull_folder(runtime.sessions, tmp_path / "desk")
    early, _ = editions.compose(runtime, EDITOR, "daily", date(2025, 6, 10))
    editions.schedule_send(runtime, EDITOR, early.id, utcnow() + timedelta(days=1))

    report = Runner(runtime, holder="test", clock=Clock(utc(2025, 6, 10, 7, 0, 1))).tick()
    assert report.states() == [RunState.DUE, RunState.COMPOSED]
    with runtime.sessions() as session:
        run = session.scalars(select(ScheduleRun)).one()
    assert run.reason is not None and "is scheduled for" in run.reason
    assert editions.get_edition(runtime, EDITOR, early.id).status == "ready"
