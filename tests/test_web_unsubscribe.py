"""The unsubscribe link of a sent email, followed through the web app (SQLite and PostgreSQL).

Every test sends a real edition through the outbox transport, reads the
``.eml`` a reader would get, and uses the link found in it: the
``List-Unsubscribe`` header for mailbox providers' RFC 8058 one-click POST,
and the same URL in the text and HTML bodies for people.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update

from mailer.briefings.folder import pull_folder
from mailer.config import ConfigError, Settings
from mailer.db.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Event,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from mailer.db.session import transaction
from mailer.dispatch import dispatcher, ledger
from mailer.dispatch.dispatcher import send_edition
from mailer.editions.compose import compose_edition
from mailer.runtime import Runtime
from mailer.transports import transport_for
from mailer.web.app import create_app
from subscribers.tokens import sign_unsubscribe, verify_unsubscribe
from tests import factories
from tests.browser import LiveServer
from tests.conftest import SECRET

BASE_URL = "https://news.example.org"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
READERS = 3


# ---------------------------------------------------------------- helpers (the browser test
# uses them too)


def send(runtime: Runtime, edition_id: int) -> dict[str, int]:
    return send_edition(
        runtime.sessions, edition_id, transport_for(runtime.settings), runtime.dispatch_settings()
    )


def outbox_message(runtime: Runtime, edition_id: int, address: str) -> EmailMessage:
    """The message ``address`` got in ``edition_id``, parsed as a mail client would."""
    with runtime.sessions() as session:
        delivery_id = session.scalar(
            select(Delivery.id).where(Delivery.edition_id == edition_id, Delivery.email == address)
        )
    assert delivery_id is not None, f"{address} has no delivery in edition {edition_id}"
    path = runtime.settings.outbox_dir / f"edition-{edition_id}" / f"{delivery_id}.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def list_unsubscribe_url(message: EmailMessage) -> str:
    """The single URL of the List-Unsubscribe header (``<https://…>``)."""
    values = message.get_all("List-Unsubscribe") or []
    assert len(values) == 1, values
    match = re.fullmatch(r"<(https?://[^>\s]+)>", str(values[0]).strip())
    assert match is not None, f"unexpected List-Unsubscribe value: {values[0]!r}"
    return match[1]


def subscription_status(runtime: Runtime, address: str) -> list[str]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Subscription.status)
                .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                .where(Subscriber.email == address)
            )
        )


def unsubscribe_events(runtime: Runtime) -> list[Event]:
    with runtime.sessions() as session:
        query = select(Event).where(Event.kind == "unsubscribe").order_by(Event.id)
        return list(session.scalars(query))


def forget(runtime: Runtime, address: str) -> None:
    """Erase a subscriber the way an operator's SQL would; the schema cascades the rest."""
    with transaction(runtime.sessions) as session:
        result = session.execute(delete(Subscriber).where(Subscriber.email == address))
        assert getattr(result, "rowcount", None) == 1


def everyone_still_subscribed(runtime: Runtime, readers: list[str]) -> None:
    for address in readers:
        assert subscription_status(runtime, address) == [SubscriptionStatus.ACTIVE]
    assert unsubscribe_events(runtime) == []


# ---------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Sent:
    newsletter_id: int
    edition_id: int
    readers: list[str]

    def path(self, url: str) -> str:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
        return parts.path


@pytest.fixture
def sent(runtime: Runtime) -> Sent:
    newsletter_id = factories.newsletter(runtime)
    readers = factories.subscribers(runtime, READERS)
    edition_id = factories.edition(runtime, newsletter_id)
    tally = send(runtime, edition_id)
    assert tally[DeliveryStatus.SENT] == READERS
    return Sent(newsletter_id, edition_id, readers)


@pytest.fixture
def client(runtime: Runtime) -> TestClient:
    # A fresh client per test: no cookies, no state carried over.
    return TestClient(create_app(runtime=runtime), base_url=BASE_URL)


def url_of(runtime: Runtime, sent: Sent, reader: int = 0) -> str:
    return list_unsubscribe_url(outbox_message(runtime, sent.edition_id, sent.readers[reader]))


# ---------------------------------------------------------------- the message


def test_each_message_carries_a_one_click_link_in_headers_and_both_bodies(
    runtime: Runtime, sent: Sent
) -> None:
    seen_urls = set()
    with runtime.sessions() as session:
        edition = session.get(Edition, sent.edition_id)
        assert edition is not None
        subject = edition.subject
        ids = {
            row.email: row.id for row in session.execute(select(Subscriber.email, Subscriber.id))
        }

    for address in sent.readers:
        message = outbox_message(runtime, sent.edition_id, address)

        assert message.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in message.iter_parts()]
        assert parts == ["text/plain", "text/html"]

        assert message["From"].addresses[0].addr_spec == "briefing@news.example.org"
        assert message["From"].addresses[0].display_name == "Briefing Desk"
        assert [a.addr_spec for a in message["To"].addresses] == [address]
        assert message["Subject"] == subject and subject
        assert message["Date"].datetime is not None
        assert message["Date"].datetime.utcoffset() == timedelta(0)
        assert re.fullmatch(r"<[^<>@\s]+@news\.example\.org>", message["Message-ID"])
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        url = list_unsubscribe_url(message)
        assert url.startswith(f"{BASE_URL}/u/")
        claims = verify_unsubscribe(SECRET.encode(), url.rsplit("/", 1)[1])
        assert (claims.subscriber_id, claims.edition_id) == (ids[address], sent.edition_id)

        text_body = message.get_body(("plain",))
        html_body = message.get_body(("html",))
        assert text_body is not None and html_body is not None
        assert url in text_body.get_content()
        assert f'href="{url}"' in html_body.get_content()
        seen_urls.add(url)

    assert len(seen_urls) == READERS  # every reader's link speaks for that reader only


# ---------------------------------------------------------------- the happy path


def test_get_shows_a_form_and_changes_nothing(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    url = url_of(runtime, sent)
    path = sent.path(url)

    for _ in range(2):  # link scanners fetch URLs, sometimes more than once
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        assert "Unsubscribe from The Daily Briefing?" in page
        assert f'<form method="post" action="{path}">' in page
        assert '<button type="submit" id="unsubscribe">' in page
        # The address is recognisable but not spelled out for whoever gets a forwarded link.
        assert sent.readers[0] not in page
        assert "@example.com" in page

    everyone_still_subscribed(runtime, sent.readers)


def test_one_click_post_unsubscribes_without_redirect_and_repeats_harmlessly(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    reader, *others = sent.readers
    path = sent.path(url_of(runtime, sent))

    response = client.post(path, data=ONE_CLICK, follow_redirects=False)
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert not client.cookies
    assert "You're unsubscribed" in response.text
    assert "will get no more emails from The Daily Briefing" in response.text

    assert subscription_status(runtime, reader) == [SubscriptionStatus.UNSUBSCRIBED]
    with runtime.sessions() as session:
        subscription = session.scalars(
            select(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.email == reader)
        ).one()
        assert subscription.unsubscribed_at is not None
    [event] = unsubscribe_events(runtime)
    assert (event.source, event.email, event.edition_id) == ("one-click", reader, sent.edition_id)
    for address in others:
        assert subscription_status(runtime, address) == [SubscriptionStatus.ACTIVE]

    again = client.post(path, data=ONE_CLICK, follow_redirects=False)
    assert again.status_code == 200
    assert "already unsubscribed" in again.text
    assert subscription_status(runtime, reader) == [SubscriptionStatus.UNSUBSCRIBED]
    assert len(unsubscribe_events(runtime)) == 1

    # The page still opens afterwards (CAN-SPAM: links keep working) and changes nothing.
    assert client.get(path).status_code == 200
    assert len(unsubscribe_events(runtime)) == 1


def test_one_click_post_as_multipart_form_data(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    # RFC 8058's own examples post multipart/form-data rather than urlencoded.
    boundary = "--12345"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
        "\r\n"
        "One-Click\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    response = client.post(
        sent.path(url_of(runtime, sent)),
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        follow_redirects=False,
    )
    assert response.status_code == 200
    assert subscription_status(runtime, sent.readers[0]) == [SubscriptionStatus.UNSUBSCRIBED]
    assert [e.source for e in unsubscribe_events(runtime)] == ["one-click"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"", None),
        (b"", "application/x-www-form-urlencoded"),
        (b'{"List-Unsubscribe": "One-Click"}', "application/json"),
        (b"List-Unsubscribe=one-click", "application/x-www-form-urlencoded"),
        (b"via=email", "application/x-www-form-urlencoded"),
        (b"unsubscribe=yes", "application/x-www-form-urlencoded"),
    ],
)
def test_a_post_without_rfc_8058s_body_changes_nothing(
    runtime: Runtime, sent: Sent, client: TestClient, content: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(
        sent.path(url_of(runtime, sent)), content=content, headers=headers, follow_redirects=False
    )
    assert response.status_code == 400
    assert "did not ask to unsubscribe" in response.text
    everyone_still_subscribed(runtime, sent.readers)


def test_a_one_click_post_with_a_file_part_is_refused(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    response = client.post(
        sent.path(url_of(runtime, sent)),
        data=ONE_CLICK,
        files={"upload": ("big.bin", b"x" * 4096)},
        follow_redirects=False,
    )
    assert response.status_code == 400
    everyone_still_subscribed(runtime, sent.readers)


def test_the_pages_button_is_recorded_as_a_link_unsubscribe(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    path = sent.path(url_of(runtime, sent, reader=1))
    response = client.post(path, data={**ONE_CLICK, "via": "page"}, follow_redirects=False)
    assert response.status_code == 200
    assert subscription_status(runtime, sent.readers[1]) == [SubscriptionStatus.UNSUBSCRIBED]
    assert [(e.source, e.email) for e in unsubscribe_events(runtime)] == [("link", sent.readers[1])]


def _second_edition(runtime: Runtime, sent: Sent, tmp_path: Path) -> int:
    folder = tmp_path / "more-briefings"
    folder.mkdir()
    (folder / "bridge-reopens.txt").write_text(
        "The Harbour Bridge reopened to traffic after eight months of repairs.\n"
        "What's going on now: Buses return to their usual routes on Monday.\n",
        encoding="utf-8",
    )
    report = pull_folder(runtime.sessions, folder)
    assert report.failed == 0, report.errors
    with transaction(runtime.sessions) as session:
        newsletter = session.get(Newsletter, sent.newsletter_id)
        assert newsletter is not None
        first = session.get(Edition, sent.edition_id)
        assert first is not None
        composed = compose_edition(
            session, newsletter, edition_date=first.edition_date + timedelta(days=1)
        )
        assert composed.created
        return composed.edition.id


def test_an_unsubscribed_reader_gets_no_later_edition(
    runtime: Runtime, sent: Sent, client: TestClient, tmp_path: Path
) -> None:
    leaver, *stayers = sent.readers
    response = client.post(sent.path(url_of(runtime, sent)), data=ONE_CLICK)
    assert response.status_code == 200

    edition_id = _second_edition(runtime, sent, tmp_path)
    tally = send(runtime, edition_id)
    assert tally[DeliveryStatus.SENT] == len(stayers)
    with runtime.sessions() as session:
        mailed = set(
            session.scalars(select(Delivery.email).where(Delivery.edition_id == edition_id))
        )
    assert mailed == set(stayers)
    for address in stayers:  # and each of them got a real message
        outbox_message(runtime, edition_id, address)
    files = list((runtime.settings.outbox_dir / f"edition-{edition_id}").glob("*.eml"))
    assert len(files) == len(stayers)
    assert not any(leaver in f.read_text(encoding="utf-8") for f in files)


def test_unsubscribing_mid_send_skips_the_queued_delivery(
    runtime: Runtime, sent: Sent, client: TestClient, tmp_path: Path
) -> None:
    leaver, *stayers = sent.readers
    edition_id = _second_edition(runtime, sent, tmp_path)
    with transaction(runtime.sessions) as session:  # the ledger is filled for everyone ...
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert dispatcher.start(session, edition) == READERS

    # ... then the reader leaves, before any batch is claimed.
    response = client.post(sent.path(url_of(runtime, sent)), data=ONE_CLICK)
    assert response.status_code == 200

    tally = send(runtime, edition_id)
    assert tally[DeliveryStatus.SENT] == len(stayers)
    assert tally[DeliveryStatus.SKIPPED] == 1
    with runtime.sessions() as session:
        assert ledger.counts(session, edition_id) == tally
        status = session.scalar(
            select(Delivery.status).where(
                Delivery.edition_id == edition_id, Delivery.email == leaver
            )
        )
    assert status == DeliveryStatus.SKIPPED


# ---------------------------------------------------------------- bad links


Spoiler = Callable[[str], str]


def _flip(char: str) -> str:
    return "B" if char == "A" else "A"


def _tampered_signature(token: str) -> str:
    middle = len(token) - 20
    return token[:middle] + _flip(token[middle]) + token[middle + 1 :]


def _other_readers_ids(token: str) -> str:
    subscriber_id, rest = token.split(".", 1)
    return f"{int(subscriber_id) + 1}.{rest}"


def _foreign_key(token: str) -> str:
    subscriber_id, edition_id, _ = token.split(".")
    return sign_unsubscribe(b"other", int(subscriber_id), int(edition_id))


FORGED = "The link's signature does not match."
MALFORMED = "The link is incomplete or malformed."
BAD_TOKENS = [
    pytest.param(_tampered_signature, FORGED, id="flipped-signature-char"),
    pytest.param(_other_readers_ids, FORGED, id="someone-elses-id"),
    pytest.param(_foreign_key, FORGED, id="signed-with-another-key"),
    pytest.param(lambda t: t[:-1], MALFORMED, id="truncated"),
    pytest.param(lambda t: t.rsplit(".", 1)[0], MALFORMED, id="no-signature"),
    pytest.param(lambda t: "not-a-token", MALFORMED, id="garbage"),
    pytest.param(lambda t: t + "A", MALFORMED, id="too-long"),
    pytest.param(lambda t: "x" * 5000, MALFORMED, id="huge"),
]


@pytest.mark.parametrize(("spoil", "reason"), BAD_TOKENS)
def test_a_bad_link_is_refused_clearly_and_changes_nothing(
    runtime: Runtime, sent: Sent, client: TestClient, spoil: Spoiler, reason: str
) -> None:
    token = sent.path(url_of(runtime, sent)).rsplit("/", 1)[1]
    path = f"/u/{spoil(token)}"

    for response in (
        client.get(path, follow_redirects=False),
        client.post(path, data=ONE_CLICK, follow_redirects=False),
        client.post(path, data={**ONE_CLICK, "via": "page"}, follow_redirects=False),
    ):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("text/html")
        assert "This link does not work" in response.text
        text = html.unescape(response.text)
        assert reason in text
        assert "Nothing was changed." in response.text
        assert "<form" not in response.text
    everyone_still_subscribed(runtime, sent.readers)


# Spellings that carry a genuine signature but are not the canonical token: a link has
# exactly one accepted form.
NON_CANONICAL = [
    pytest.param(lambda t: t + "%0A", id="trailing-newline"),
    pytest.param(lambda t: "\u0661" + t[1:] if t.startswith("1.") else "", id="arabic-digit"),
    pytest.param(lambda t: "0" + t, id="leading-zero"),
]


@pytest.mark.parametrize("spoil", NON_CANONICAL)
def test_non_canonical_spellings_of_a_token_are_refused(
    runtime: Runtime, sent: Sent, client: TestClient, spoil: Spoiler
) -> None:
    token = sent.path(url_of(runtime, sent)).rsplit("/", 1)[1]
    assert token.startswith("1."), "the first reader has subscriber id 1"
    response = client.get(f"/u/{spoil(token)}")
    assert response.status_code == 400


def test_a_link_for_a_deleted_subscriber_is_404_and_changes_nothing(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    gone, *others = sent.readers
    path = sent.path(url_of(runtime, sent))
    forget(runtime, gone)

    for response in (
        client.get(path, follow_redirects=False),
        client.post(path, data=ONE_CLICK, follow_redirects=False),
    ):
        assert response.status_code == 404
        assert "This link does not work" in response.text
        assert "no longer exists" in response.text
        assert "<form" not in response.text
    everyone_still_subscribed(runtime, others)
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == len(others)


# ---------------------------------------------------------------- headers, health, config

SECURITY_HEADERS = {
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


def test_every_response_carries_the_security_headers(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    path = sent.path(url_of(runtime, sent))
    responses = {
        "page": client.get(path),
        "bad link": client.get("/u/nonsense"),
        "health": client.get("/healthz"),
        "one-click": client.post(path, data=ONE_CLICK),
    }
    forget(runtime, sent.readers[0])
    responses["gone"] = client.get(path)
    assert [r.status_code for r in responses.values()] == [200, 400, 200, 200, 404]

    for name, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header)
        csp = response.headers.get("content-security-policy", "")
        directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
        assert directives.get("default-src") == ["'none'"], (name, csp)
        assert directives.get("form-action") == ["'self'"], (name, csp)
        assert directives.get("frame-ancestors") == ["'none'"], (name, csp)
        assert "script-src" not in directives, (name, csp)


def test_health_and_readiness(runtime: Runtime, client: TestClient) -> None:
    health = client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


def test_readiness_reports_pending_migrations(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'empty.db'}", secret_key=SECRET, base_url=BASE_URL
    )
    runtime = Runtime(settings)
    try:
        client = TestClient(create_app(runtime=runtime))
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "mailer db upgrade" in ready.json()["migrations"]
    finally:
        runtime.close()


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
    ],
)
def test_create_app_refuses_to_start_without_a_secret_key(
    database_url: str, secret: str | None
) -> None:
    settings = Settings(database_url=database_url, base_url=BASE_URL, secret_key=secret)
    with pytest.raises(ConfigError, match="MAILER_SECRET_KEY is not set"):
        create_app(settings=settings)
    runtime = Runtime(settings)
    try:
        with pytest.raises(ConfigError, match="MAILER_SECRET_KEY"):
            create_app(runtime=runtime)
    finally:
        runtime.close()


def test_create_app_refuses_a_short_key_in_production(database_url: str) -> None:
    settings = Settings(
        database_url=database_url, base_url=BASE_URL, secret_key="short", env="production"
    )
    with pytest.raises(ConfigError, match="too short for production"):
        create_app(settings=settings)


# ---------------------------------------------------------------- over real HTTP


def test_a_post_waiting_for_the_sqlite_lock_does_not_stall_other_requests(
    tmp_path: Path,
) -> None:
    """Regression: the POST handler ran its database work on the event loop."""
    from mailer.db import migrate
    from mailer.db.session import make_engine

    url = f"sqlite:///{tmp_path / 'mailer.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    settings = Settings(
        database_url=url, outbox_dir=tmp_path / "outbox", secret_key=SECRET, base_url=BASE_URL
    )
    runtime = Runtime(settings)
    with LiveServer() as server:
        newsletter_id = factories.newsletter(runtime)
        readers = factories.subscribers(runtime, 1)
        edition_id = factories.edition(runtime, newsletter_id)
        send(runtime, edition_id)
        path = urlsplit(list_unsubscribe_url(outbox_message(runtime, edition_id, readers[0]))).path
        server.start(create_app(runtime=runtime))

        writer = sqlite3.connect(tmp_path / "mailer.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # as a dispatch worker recording a batch would
        outcome: list[int] = []

        def post() -> None:
            request = urllib.request.Request(  # noqa: S310 - our own local server
                server.url + path, data=b"List-Unsubscribe=One-Click", method="POST"
            )
            with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
                outcome.append(response.status)

        poster = threading.Thread(target=post)
        try:
            poster.start()
            time.sleep(0.3)  # the POST is now waiting for the write lock
            started = time.monotonic()
            with urllib.request.urlopen(server.url + "/healthz", timeout=5) as health:  # noqa: S310
                assert health.status == 200
            assert time.monotonic() - started < 1.0
            assert poster.is_alive(), "the POST should still be waiting for the lock"
            assert subscription_status(runtime, readers[0]) == [SubscriptionStatus.ACTIVE]
        finally:
            writer.execute("ROLLBACK")
            writer.close()
            poster.join(25)
    try:
        assert outcome == [200]
        assert subscription_status(runtime, readers[0]) == [SubscriptionStatus.UNSUBSCRIBED]
    finally:
        runtime.close()


def test_a_link_from_before_its_subscriber_existed_speaks_for_nobody(
    runtime: Runtime, sent: Sent, client: TestClient
) -> None:
    # SQLite gives an erased subscriber's id again: the newcomer holding that id joined
    # after the edition went out, so the old link in the erased person's mailbox is not theirs.
    path = sent.path(url_of(runtime, sent))
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, sent.edition_id)
        assert edition is not None and edition.send_started_at is not None
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == sent.readers[0])
            .values(created_at=edition.send_started_at + timedelta(seconds=1))
        )

    assert client.get(path).status_code == 404
    answer = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 404
    everyone_still_subscribed(runtime, sent.readers)


def test_the_link_page_gives_up_on_a_locked_table_instead_of_stalling(
    runtime: Runtime, sent: Sent, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # GET /u reads on the web's event loop: a lock it met must not hold every other
    # request of the process behind it. PostgreSQL only: SQLite's readers never wait.
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite readers (WAL) never wait for a lock")
    path = sent.path(url_of(runtime, sent))
    with runtime.engine.connect() as other:
        other.exec_driver_sql("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        answer = client.get(path)
        waited = time.monotonic() - started
        other.rollback()
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert "nothing was changed" in answer.text
    assert waited < 5, f"the read waited {waited:.1f} s for the lock"
    assert client.get(path).status_code == 200  # the lock gone, the same link works
    # The operator is told what happened, and where, but not the reader's link.
    (logged,) = [r for r in caplog.records if r.getMessage() == "web.database_unavailable"]
    assert logged.__dict__["route"] == "/u/{token}"
    assert "lock timeout" in logged.__dict__["detail"]
    token = path.rpartition("/")[2]
    assert all(token not in str(r.__dict__) for r in caplog.records)


# ---------------------------------------------------------------- many at once


def _hold_writes(runtime: Runtime) -> Callable[[], None]:
    """Block every write to subscriptions from elsewhere (as a long send's batch would);
    the returned function lets them go."""
    if runtime.engine.dialect.name == "sqlite":
        database = runtime.engine.url.database
        assert database is not None
        raw = sqlite3.connect(database, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")

        def release_sqlite() -> None:
            raw.execute("ROLLBACK")
            raw.close()

        return release_sqlite
    connection = runtime.engine.connect()
    connection.exec_driver_sql("LOCK TABLE subscriptions IN SHARE MODE")

    def release_postgres() -> None:
        connection.rollback()
        connection.close()

    return release_postgres


def test_one_click_posts_arriving_together_are_written_together_each_once(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    newsletter_id = factories.newsletter(runtime)
    readers = factories.subscribers(runtime, 25)
    edition_id = factories.edition(runtime, newsletter_id)
    send(runtime, edition_id)
    paths = [
        urlsplit(list_unsubscribe_url(outbox_message(runtime, edition_id, reader))).path
        for reader in readers
    ]
    # A double click of the first reader's button, and the link of a reader since erased.
    forget(runtime, readers.pop())
    posts = [*paths[:-1], paths[0], paths[-1]]

    answers: dict[int, int] = {}
    with LiveServer() as server:
        server.start(create_app(runtime=runtime))

        def post(index: int) -> None:
            request = urllib.request.Request(  # noqa: S310 - our own local server
                server.url + posts[index], data=b"List-Unsubscribe=One-Click", method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    answers[index] = response.status
            except urllib.error.HTTPError as error:
                answers[index] = error.code

        release = _hold_writes(runtime)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(posts))]
        try:
            with caplog.at_level("INFO", logger="mailer.app.readers"):
                for thread in threads:
                    thread.start()
                time.sleep(1.0)  # every request is in: one being written, the rest queued
                everyone_still_subscribed(runtime, readers)
                release()
                for thread in threads:
                    thread.join(30)
        finally:
            for thread in threads:
                thread.join(30)

    assert answers == {**{i: 200 for i in range(len(posts) - 1)}, len(posts) - 1: 404}
    for reader in readers:
        assert subscription_status(runtime, reader) == [SubscriptionStatus.UNSUBSCRIBED]
    events = unsubscribe_events(runtime)
    assert sorted(e.email for e in events) == sorted(readers)  # the double click left once
    groups = [r.__dict__ for r in caplog.records if r.getMessage() == "subscribers.unsubscribed"]
    assert sum(g["requests"] for g in groups) == len(posts)
    assert sum(g["changed"] for g in groups) == len(readers)
    # Those that waited behind the lock were written in one transaction, not one each.
    assert len(groups) < len(posts) / 2, groups


def test_a_group_of_links_leaves_each_reader_once_and_names_the_unknown(
    runtime: Runtime, sent: Sent
) -> None:
    from subscribers.unsubscribe import LinkOutcome, LinkRequest, unsubscribe_links

    with runtime.sessions() as session:
        rows = session.execute(select(Subscriber.email, Subscriber.id))
        ids = {email: id_ for email, id_ in rows}
    first, second, gone = (ids[address] for address in sent.readers)
    forget(runtime, sent.readers[2])
    requests = [
        LinkRequest(first, sent.edition_id, "one-click"),
        LinkRequest(first, sent.edition_id, "link"),  # the same reader again, same group
        LinkRequest(second, sent.edition_id, "link"),
        LinkRequest(gone, sent.edition_id, "one-click"),
        LinkRequest(second, sent.edition_id + 1000, "one-click"),  # no such edition
    ]
    with runtime.engine.begin() as connection:
        outcomes = unsubscribe_links(connection, requests)

    changed = [o.changed if isinstance(o, LinkOutcome) else type(o).__name__ for o in outcomes]
    assert changed == [True, False, True, "UnknownRecipient", "UnknownRecipient"]
    assert [o.target.email for o in outcomes[:3] if isinstance(o, LinkOutcome)] == [
        sent.readers[0],
        sent.readers[0],
        sent.readers[1],
    ]
    events = sorted((e.email, e.source, e.edition_id) for e in unsubscribe_events(runtime))
    assert events == [
        (sent.readers[0], "one-click", sent.edition_id),
        (sent.readers[1], "link", sent.edition_id),
    ]
    assert subscription_status(runtime, sent.readers[0]) == [SubscriptionStatus.UNSUBSCRIBED]
    assert subscription_status(runtime, sent.readers[1]) == [SubscriptionStatus.UNSUBSCRIBED]
