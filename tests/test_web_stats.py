"""The per-edition stats page and its JSON, over real HTTP (SQLite and PostgreSQL).

An edition is sent through the outbox transport, signed SendGrid events are posted
to ``/webhooks/sendgrid`` of the app served by uvicorn, and a reader unsubscribes
with the link from their email; the bounce policy runs as the webhook's background
task. The page must then show exactly the numbers those facts imply.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from markupsafe import escape
from sqlalchemy import func, select

from mailer.app import accounts
from mailer.app.actors import Actor
from mailer.db.models import Delivery, Edition, Event
from mailer.db.session import transaction
from mailer.dispatch.dispatcher import send_edition
from mailer.editions.editing import retitle
from mailer.events.models import WebhookBatch
from mailer.events.policy import pending_count
from mailer.events.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from mailer.events.stats import edition_stats
from mailer.runtime import Runtime
from mailer.transports.outbox import OutboxTransport
from mailer.web.app import create_app
from tests import factories
from tests.browser import LiveServer
from tests.test_web_unsubscribe import list_unsubscribe_url, outbox_message
from tests.webhook_keys import new_private_key, public_key_b64, sign
from tests.workspace import PASSWORD

OPERATOR = "ops@news.example.org"
SUBJECT = '<script>alert("pwned")</script> & <b>Tuesday</b>'
READERS = 10
_ids = itertools.count(1)


# ---------------------------------------------------------------- helpers (the browser test
# uses them too)


@dataclass(frozen=True)
class Site:
    runtime: Runtime
    server: LiveServer
    http: httpx.Client
    key: ec.EllipticCurvePrivateKey
    session_cookie: str


def signed_in_cookie(runtime: Runtime) -> str:
    """A workspace session of an editor, as the sign-in page would open it."""
    made, _ = accounts.create_account(runtime, Actor.cli(), OPERATOR, "editor", password=PASSWORD)
    ticket = accounts.open_session(runtime, made.id, "127.0.0.1", "tests")
    return ticket.cookie_value


@contextmanager
def serve(runtime: Runtime) -> Iterator[Site]:
    """The app on a live uvicorn with a signed-in editor and a webhook key configured."""
    key = new_private_key()
    runtime.settings.sendgrid_webhook_public_key = public_key_b64(key)
    cookie = signed_in_cookie(runtime)
    with LiveServer() as server:
        server.start(create_app(runtime=runtime))
        # The site's base URL is https, so its cookie is Secure: sent by hand over http.
        headers = {"Cookie": f"mailer_session={cookie}"}
        with httpx.Client(base_url=server.url, timeout=20, headers=headers) as client:
            yield Site(runtime, server, client, key, cookie)


OUR_SCRIPT = '<script src="/static/htmx.min.js" defer>'


def scripts(page: str) -> list[str]:
    """Every script tag of a page: the workspace's own htmx, and nothing an editor wrote."""
    return re.findall(r"<script[^>]*>", page, flags=re.IGNORECASE)


def page_path(edition_id: int) -> str:
    return f"/editions/{edition_id}/stats"


def sent_edition(runtime: Runtime, subject: str = SUBJECT) -> tuple[int, list[str], list[int]]:
    """An edition to READERS readers, retitled by an editor, sent through the outbox."""
    newsletter_id = factories.newsletter(runtime)
    readers = factories.subscribers(runtime, READERS)
    edition_id = factories.edition(runtime, newsletter_id)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        retitle(edition, subject=subject)
    tally = send_edition(
        runtime.sessions,
        edition_id,
        OutboxTransport(runtime.settings.outbox_dir),
        runtime.dispatch_settings(),
    )
    assert tally["sent"] == READERS
    with runtime.sessions() as session:
        ids = dict(
            session.execute(
                select(Delivery.email, Delivery.id).where(Delivery.edition_id == edition_id)
            ).all()
        )
    return edition_id, readers, [ids[r] for r in readers]


def event(
    kind: str, email: str, edition_id: int, delivery_id: int, at: int, **extra: Any
) -> dict[str, Any]:
    """One event as SendGrid posts it, custom args as the dispatch sets them."""
    return {
        "email": email,
        "timestamp": at,
        "event": kind,
        "sg_event_id": f"stats-{next(_ids)}-{time.time_ns()}",
        "sg_message_id": f"msg{delivery_id}.filter0001.1.0",
        "edition_id": str(edition_id),
        "delivery_id": str(delivery_id),
        **extra,
    }


def post_events(site: Site, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps(events).encode()
    stamp = str(int(time.time()))
    response = site.http.post(
        "/webhooks/sendgrid",
        content=body,
        headers={
            SIGNATURE_HEADER: sign(site.key, stamp, body),
            TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def wait_for_policy(runtime: Runtime, timeout: float = 15.0) -> None:
    """The webhook stores and applies after answering: wait until nothing is waiting."""
    deadline = time.monotonic() + timeout
    while True:
        with runtime.sessions() as session:
            kept = session.scalar(select(func.count(WebhookBatch.id)))
            if kept == 0 and pending_count(session) == 0:
                return
        assert time.monotonic() < deadline, "the policy did not apply every event in time"
        time.sleep(0.05)


@dataclass(frozen=True)
class Story:
    """What happened to the edition, and what the page must say about it."""

    edition_id: int
    counts: dict[str, str]
    rates: dict[str, str]
    # (hour as "YYYY-MM-DDTHH:00Z", kind) -> count: the chart's bars
    bars: dict[tuple[str, str], int]


def hour_text(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:00Z")


def tell_story(site: Site) -> Story:
    """Send an edition, post its provider events, and unsubscribe one reader by link.

    Readers 0-7 get the mail, 8 soft-bounces (``blocked``), 9 hard-bounces; 0-3
    open twice and 0 once more, 0 and 1 click, 7 reports spam, 5 is dropped, and 6
    leaves with the link from the email.
    """
    runtime = site.runtime
    edition_id, readers, ids = sent_edition(runtime)
    # Whole hours in the past, with one empty hour in between (hour 2).
    base = (int(time.time()) // 3600 - 4) * 3600
    h0, h1, h3 = base + 600, base + 3600 + 120, base + 3 * 3600 + 300

    def on(i: int, kind: str, at: int, **extra: Any) -> dict[str, Any]:
        return event(kind, readers[i], edition_id, ids[i], at, **extra)

    events = [on(i, "processed", h0 - 60) for i in range(READERS)]
    events += [on(i, "delivered", h0) for i in range(8)]
    events += [on(9, "bounce", h0, type="bounce", reason="550 5.1.1 no such user")]
    events += [on(8, "bounce", h0, type="blocked", reason="554 5.7.1 policy")]
    events += [on(i, "open", h1 + n) for i in range(4) for n in range(2)]
    events += [on(i, "click", h1 + 30, url="https://news.example.org/a") for i in (0, 1)]
    events += [on(0, "open", h3), on(7, "spamreport", h3)]
    events += [on(5, "dropped", h3, reason="Spam Content")]
    report = post_events(site, events)
    assert (report["accepted"], report["rejected"]) == (len(events), 0)

    # Reader 6 leaves with the one-click link from their email.
    link = list_unsubscribe_url(outbox_message(runtime, edition_id, readers[6]))
    left = site.http.post(urlsplit(link).path, data={"List-Unsubscribe": "One-Click"})
    assert left.status_code == 200
    wait_for_policy(runtime)
    with runtime.sessions() as session:
        [left_at] = session.scalars(
            select(Event.occurred_at).where(
                Event.kind == "unsubscribe", Event.source == "one-click"
            )
        ).all()
    left_hour = left_at.astimezone(UTC).strftime("%Y-%m-%dT%H:00Z")

    return Story(
        edition_id=edition_id,
        counts={
            "recipients": "10",
            "sent": "10",
            "delivered": "8",
            "bounced_hard": "1",
            "bounced_soft": "1",
            "dropped": "1",
            "complaints": "1",
            "unsubscribes": "1",
            "opens": "4",
            "opens_total": "9",
            "clicks": "2",
            "clicks_total": "2",
            "unknown": "0",
        },
        rates={
            "delivered": "80.00%",  # of sent
            "bounced_hard": "10.00%",
            "bounced_soft": "10.00%",
            "dropped": "10.00%",
            "complaints": "12.50%",  # of delivered
            "unsubscribes": "12.50%",
            "opens": "50.00%",
            "clicks": "25.00%",
        },
        bars={
            (hour_text(h0), "delivered"): 8,
            (hour_text(h0), "bounce"): 2,
            (hour_text(h1), "open"): 8,
            (hour_text(h1), "click"): 2,
            (hour_text(h3), "open"): 1,
            (hour_text(h3), "dropped"): 1,
            (hour_text(h3), "spamreport"): 1,
            (left_hour, "unsubscribe"): 1,
        },
    )


# ---------------------------------------------------------------- reading the page

_ROW = re.compile(
    r'<tr id="row-(?P<metric>\w+)"[^>]*>\s*<th scope="row">[^<]*</th>\s*'
    r'<td class="count">(?P<count>[^<]*)</td>\s*<td class="rate">(?P<rate>[^<]*)</td>'
)
_BAR = re.compile(
    r'<rect class="bar" data-kind="(?P<kind>\w+)" data-start="(?P<start>[^"]+)" '
    r'data-count="(?P<count>\d+)" x="(?P<x>[\d.]+)" y="(?P<y>[\d.]+)" '
    r'width="(?P<width>[\d.]+)" height="(?P<height>[\d.]+)"'
)


def table(page: str) -> tuple[dict[str, str], dict[str, str]]:
    rows = [m.groupdict() for m in _ROW.finditer(page)]
    return {r["metric"]: r["count"] for r in rows}, {
        r["metric"]: r["rate"] for r in rows if r["rate"]
    }


def bars(page: str) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for match in _BAR.finditer(page):
        key = (match["start"], match["kind"])
        assert key not in found, f"two bars for {key}"
        found[key] = int(match["count"])
    return found


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def site(runtime: Runtime) -> Iterator[Site]:
    with serve(runtime) as served:
        yield served


# ---------------------------------------------------------------- tests


def test_the_page_shows_what_happened_to_the_edition(site: Site) -> None:
    story = tell_story(site)
    response = site.http.get(page_path(story.edition_id))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # Scripts from this site only (htmx); the chart is drawn on the server.
    assert "script-src 'self';" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    page = response.text

    counts, rates = table(page)
    assert counts == story.counts
    assert rates == story.rates
    assert bars(page) == story.bars
    # Stacked: each hour's bars sit on one another, from the x axis (y = 216) up.
    for hour in {start for start, _ in story.bars}:
        column = sorted(
            (m for m in _BAR.finditer(page) if m["start"] == hour), key=lambda m: -float(m["y"])
        )
        bottom = 216.0
        for match in column:
            assert float(match["y"]) + float(match["height"]) == pytest.approx(bottom, abs=0.02)
            bottom = float(match["y"])
    # Accessible: a titled, described image, and the figures again in a table.
    assert 'role="img" aria-labelledby="chart-title chart-desc"' in page
    assert '<title id="chart-title">Events per hour, edition' in page
    assert "of 24 events (delivered, opens, clicks, bounces, drops, complaints, unsubscribes)" in (
        page
    )
    hidden = page[page.index('<div class="visually-hidden" id="timeline-data">') :]
    assert hidden.count('<tr><th scope="row">') == len({start for start, _ in story.bars})
    # The legend names every kind drawn, once.
    assert re.findall(r'<g class="legend-item" data-kind="(\w+)">', page) == [
        "delivered",
        "open",
        "click",
        "bounce",
        "dropped",
        "spamreport",
        "unsubscribe",
    ]
    assert scripts(page) == [OUR_SCRIPT]


def test_the_json_is_the_same_figures(site: Site) -> None:
    story = tell_story(site)
    response = site.http.get(page_path(story.edition_id) + ".json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    with site.runtime.sessions() as session:
        assert data == json.loads(json.dumps(edition_stats(session, story.edition_id).as_dict()))
    assert data["subject"] == SUBJECT  # JSON carries the text as it is
    assert {k: str(data[k]) for k in ("sent", "delivered", "bounced_hard", "bounced_soft")} == {
        k: story.counts[k] for k in ("sent", "delivered", "bounced_hard", "bounced_soft")
    }
    assert (data["unique_opens"], data["opens"], data["unique_clicks"], data["clicks"]) == (
        4,
        9,
        2,
        2,
    )
    assert data["rates"]["opens"] == 0.5 and data["rates"]["complaints"] == 0.125
    timeline = {(p["hour"], p["kind"]): p["count"] for p in data["timeline"]}
    assert timeline == story.bars


def test_the_editors_subject_is_escaped(site: Site) -> None:
    edition_id, _, _ = sent_edition(site.runtime)
    page = site.http.get(page_path(edition_id)).text
    assert str(escape(SUBJECT)) in page  # &lt;script&gt;alert(&#34;pwned&#34;)...
    assert scripts(page) == [OUR_SCRIPT] and "<b>Tuesday" not in page
    assert f"<title>Edition {edition_id}: &lt;script&gt;" in page
    # No events yet: the page says so instead of drawing an empty chart.
    assert 'id="no-events"' in page and "<svg" not in page


def test_a_session_is_required(site: Site) -> None:
    edition_id, _, _ = sent_edition(site.runtime, subject="Plain")
    forged = site.session_cookie[:-2] + ("BB" if site.session_cookie.endswith("AA") else "AA")
    for cookie in ("", f"mailer_session={forged}", "mailer_session=nonsense"):
        page = site.http.get(page_path(edition_id), headers={"Cookie": cookie})
        assert page.status_code == 303 and page.headers["location"].startswith("/signin")
        data = site.http.get(page_path(edition_id) + ".json", headers={"Cookie": cookie})
        assert data.status_code == 401 and "Plain" not in data.text
    for path in (page_path(edition_id), page_path(edition_id) + ".json"):
        assert site.http.get(path).status_code == 200
    # The old operator address leads to the page.
    moved = site.http.get(f"/admin/editions/{edition_id}/stats")
    assert moved.status_code == 308 and moved.headers["location"] == page_path(edition_id)


def test_an_unknown_edition_is_a_404(site: Site) -> None:
    page = site.http.get(page_path(424242))
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert '<h1 id="missing">No edition 424242</h1>' in page.text
    data = site.http.get(page_path(424242) + ".json")
    assert data.status_code == 404
    assert data.json() == {"error": "no edition with id 424242"}
    # A path id that is no id, or beyond the database's BIGINT, names nothing either.
    for path in (
        "/editions/abc/stats",
        f"/editions/{2**64}/stats",
        f"/editions/{2**64}/stats.json",
    ):
        assert site.http.get(path).status_code == 404, path
    assert site.http.get(f"/admin/editions/{2**64}/stats").status_code == 404


def test_a_provider_unsubscribe_is_one_point_on_the_chart(site: Site) -> None:
    # The policy acts on SendGrid's event without recording a second one of its own.
    edition_id, readers, ids = sent_edition(site.runtime, subject="Plain")
    at = (int(time.time()) // 3600 - 2) * 3600
    post_events(site, [event("unsubscribe", readers[0], edition_id, ids[0], at)])
    wait_for_policy(site.runtime)
    page = site.http.get(page_path(edition_id)).text
    counts, _ = table(page)
    assert counts["unsubscribes"] == "1"
    assert bars(page) == {(hour_text(at), "unsubscribe"): 1}
