"""Reader pages over real HTTP (a live uvicorn), on SQLite and PostgreSQL: subscribing with
double and single opt-in, confirming, the preference page from an edition's email, the
web copy and the archive, taking one's data and erasing it; throttles, byte-identical
answers, and tokens that are tampered with, expired or swapped."""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import String, Text, func, inspect, select, text, update

from mailer.accounts import rate_limits
from mailer.app import readers
from mailer.briefings.api_tokens import create_token
from mailer.db.base import Base, utcnow
from mailer.db.models import Delivery, Edition, Newsletter
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers.audience import mailable
from subscribers.importer import ImportReport, Row, import_rows
from subscribers.models import (
    Consent,
    MailingList,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
)
from subscribers.tokens import (
    sign_confirmation,
    sign_edition_web,
    sign_email_change,
    sign_preferences,
    sign_unsubscribe,
)
from tests import factories
from tests.conftest import SECRET
from tests.test_web_unsubscribe import send
from tests.workspace import Site, serve

KEY = SECRET.encode() if isinstance(SECRET, str) else SECRET
LINK = re.compile(r"https?://[^\s\"<>]+")


@pytest.fixture
def site(runtime: Runtime) -> Iterator[Site]:
    newsletter_id = factories.newsletter(runtime, lists=("morning", "weekend"))
    with transaction(runtime.sessions) as session:
        for mailing_list in session.scalars(select(MailingList)):
            mailing_list.public = True
            mailing_list.description = f"The {mailing_list.name} edition"
            # morning: double opt-in (the default); weekend: single.
            if mailing_list.name == "weekend":
                mailing_list.opt_in = "single"
        newsletter = session.get(Newsletter, newsletter_id)
        assert newsletter is not None
        newsletter.public_archive = True
    with serve(runtime) as live:
        yield live


def list_ids(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        return {
            name: id_ for name, id_ in session.execute(select(MailingList.name, MailingList.id))
        }


def reader_mail(runtime: Runtime) -> list[EmailMessage]:
    """Reader emails outside any edition (confirmations), oldest first."""
    folder = runtime.settings.outbox_dir / "test-sends" / "edition-0"
    found = []
    for path in sorted(folder.glob("*.eml")) if folder.exists() else []:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def to_of(message: EmailMessage) -> str:
    return str(message["To"].addresses[0].addr_spec)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def link_in(message: EmailMessage, path: str) -> str:
    for url in LINK.findall(text_of(message)):
        if urlsplit(url).path.startswith(path):
            return urlsplit(url).path
    raise AssertionError(f"no {path} link in {text_of(message)!r}")


def subscriber(runtime: Runtime, address: str) -> Subscriber | None:
    with runtime.sessions() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == address))


def statuses(runtime: Runtime, address: str) -> dict[str, str]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(MailingList.name, Subscription.status)
            .join(Subscription, Subscription.list_id == MailingList.id)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.email == address)
        )
        return {name: status for name, status in rows}


def consents(runtime: Runtime, address: str) -> list[str]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Consent.kind)
                .join(Subscriber, Subscriber.id == Consent.subscriber_id)
                .where(Subscriber.email == address)
                .order_by(Consent.id)
            )
        )


def pace_passed(runtime: Runtime) -> None:
    """As if the 10 minutes between two confirmation emails had gone by."""
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Subscriber).values(confirmation_sent_at=utcnow() - timedelta(minutes=11))
        )


def mailable_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        lists = list(session.scalars(select(MailingList.id)))
        query = select(func.count()).select_from(Subscriber).where(mailable(lists))
        return int(session.scalar(query) or 0)


def sign_up(client: httpx.Client, address: str, *lists: int, **more: str) -> httpx.Response:
    data: dict[str, object] = {"email": address, "name": "Ada Reader", "lists": list(lists)}
    data.update(more)
    return client.post("/subscribe/daily", data=data)


def test_double_opt_in_confirm_then_preferences_from_an_edition(
    runtime: Runtime, site: Site
) -> None:
    ids = list_ids(runtime)
    with site.client() as client:
        form = client.get("/subscribe/daily")
        assert form.status_code == 200
        assert "script" not in form.headers["content-security-policy"]
        assert 'name="website"' in form.text and "Europe/Paris" in form.text
        answer = sign_up(client, "ada@example.com", ids["morning"], timezone="Europe/Paris")
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        assert statuses(runtime, "ada@example.com") == {"morning": "pending"}
        assert consents(runtime, "ada@example.com") == ["subscribe"]
        (message,) = reader_mail(runtime)
        assert to_of(message) == "ada@example.com"
        confirm = link_in(message, "/confirm/")

        # GET shows a button and changes nothing: link scanners fetch it.
        page = client.get(confirm)
        assert page.status_code == 200 and 'id="confirm"' in page.text
        assert statuses(runtime, "ada@example.com") == {"morning": "pending"}
        done = client.post(confirm)
        assert done.status_code == 200 and "You're in" in done.text
        assert statuses(runtime, "ada@example.com") == {"morning": "active"}
        assert consents(runtime, "ada@example.com") == ["subscribe", "confirm"]
        found = subscriber(runtime, "ada@example.com")
        assert found is not None and found.timezone == "Europe/Paris"
        # A second click is harmless.
        assert "nothing left to confirm" in client.post(confirm).text

        # An edition's email carries the preference link and the web copy's.
        with runtime.sessions() as session:
            newsletter_id = session.scalar(select(Newsletter.id))
        assert newsletter_id is not None
        edition_id = factories.edition(runtime, newsletter_id)
        send(runtime, edition_id)
        with runtime.sessions() as session:
            delivery = session.scalar(
                select(Delivery.id).where(Delivery.email == "ada@example.com")
            )
        path = runtime.settings.outbox_dir / f"edition-{edition_id}" / f"{delivery}.eml"
        edition_mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(edition_mail, EmailMessage)
        preferences = link_in(edition_mail, "/p/")
        web = link_in(edition_mail, "/e/")
        html_part = edition_mail.get_body(("html",))
        assert html_part is not None
        html = str(html_part.get_content())  # type: ignore[attr-defined]
        assert site.server.url + preferences in html and site.server.url + web in html

        page = client.get(preferences)
        assert page.status_code == 200 and 'id="save-lists"' in page.text
        # Join the weekend list, drop the morning one.
        saved = client.post(f"{preferences}/lists", data={"lists": [ids["weekend"]]})
        assert saved.status_code == 200
        assert statuses(runtime, "ada@example.com") == {
            "morning": "unsubscribed",
            "weekend": "active",
        }
        assert client.post(f"{preferences}/pause", data={"length": "week"}).status_code == 200
        found = subscriber(runtime, "ada@example.com")
        assert found is not None and found.paused_until is not None
        assert found.paused_until > utcnow() + timedelta(days=6)
        # Paused: not mailable, so neither a fill nor a claim picks them.
        assert mailable_count(runtime) == 0
        assert client.post(f"{preferences}/resume").status_code == 200
        assert (
            client.post(f"{preferences}/timezone", data={"timezone": "Asia/Tokyo"}).status_code
            == 200
        )
        found = subscriber(runtime, "ada@example.com")
        assert found is not None and found.paused_until is None and found.timezone == "Asia/Tokyo"
        assert mailable_count(runtime) == 1

        left = client.post(f"{preferences}/leave")
        assert left.status_code == 200 and 'id="come-back"' in left.text
        assert set(statuses(runtime, "ada@example.com").values()) == {"unsubscribed"}
        found = subscriber(runtime, "ada@example.com")
        assert found is not None and found.status == SubscriberStatus.UNSUBSCRIBED

        # Coming back needs a fresh confirmation.
        pace_passed(runtime)
        back = client.post(f"{preferences}/come-back", data={"lists": [ids["morning"]]})
        assert back.status_code == 200 and 'id="waiting"' in back.text
        assert statuses(runtime, "ada@example.com")["morning"] == "pending"
        second = reader_mail(runtime)[-1]
        assert client.post(link_in(second, "/confirm/")).status_code == 200
        assert statuses(runtime, "ada@example.com")["morning"] == "active"
        assert consents(runtime, "ada@example.com")[-2:] == ["resubscribe", "confirm"]

        # The web copy: no address, no working token.
        page = client.get(web)
        assert page.status_code == 200
        assert "ada@example.com" not in page.text and "Ada" not in page.text
        assert "/u/" not in page.text and "/p/" not in page.text
        assert "/preview/link" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        archive = client.get("/archive/daily")
        assert archive.status_code == 200 and web in archive.text


def test_single_opt_in_and_the_unsubscribe_page_offers_preferences_and_undo(
    runtime: Runtime, site: Site
) -> None:
    ids = list_ids(runtime)
    with site.client() as client:
        answer = sign_up(client, "sol@example.com", ids["weekend"])
        assert "Thanks for subscribing" in answer.text
        assert statuses(runtime, "sol@example.com") == {"weekend": "active"}
        assert reader_mail(runtime) == []
        found = subscriber(runtime, "sol@example.com")
        assert found is not None
        with runtime.sessions() as session:
            newsletter_id = session.scalar(select(Newsletter.id))
        assert newsletter_id is not None
        edition_id = factories.edition(runtime, newsletter_id)
        send(runtime, edition_id)
        token = sign_unsubscribe(KEY, found.id, edition_id)
        gone = client.post(f"/u/{token}", data={"via": "page"})
        assert gone.status_code == 200
        assert f'href="/p/{token}"' in gone.text and f'action="/p/{token}/undo"' in gone.text
        assert statuses(runtime, "sol@example.com") == {"weekend": "unsubscribed"}
        undone = client.post(f"/p/{token}/undo")
        assert undone.status_code == 200, undone.text
        assert statuses(runtime, "sol@example.com")["weekend"] == "active"
        # A token of an edition that started before this subscriber existed was someone
        # else's (an erased reader whose number SQLite gave again): it opens nothing.
        with transaction(runtime.sessions) as session:
            session.execute(
                update(Edition)
                .where(Edition.id == edition_id)
                .values(send_started_at=found.created_at - timedelta(days=1))
            )
        assert client.get(f"/p/{token}").status_code == 404


def test_known_unknown_suppressed_and_bot_sign_ups_get_byte_identical_answers(
    runtime: Runtime, site: Site
) -> None:
    ids = list_ids(runtime)
    with transaction(runtime.sessions) as session:
        session.add(Subscriber(email="known@example.com", name="Known", attributes={}))
        session.add(Suppression(email="bounced@example.com", reason="bounce", source="test"))
    with site.client() as client:
        answers = [
            sign_up(client, address, ids["morning"]).content
            for address in ("known@example.com", "new@example.com", "bounced@example.com")
        ]
        answers.append(sign_up(client, "bot@example.com", ids["morning"], website="x").content)
    assert len(set(answers)) == 1
    assert subscriber(runtime, "bounced@example.com") is None
    assert subscriber(runtime, "bot@example.com") is None
    # The known and the new address got their confirmation; nobody else got anything.
    assert sorted(to_of(m) for m in reader_mail(runtime)) == [
        "known@example.com",
        "new@example.com",
    ]


def test_one_client_is_throttled_and_one_address_gets_one_confirmation_per_10_minutes(
    runtime: Runtime, site: Site
) -> None:
    ids = list_ids(runtime)
    codes = []
    with site.client() as client:
        for number in range(100):
            codes.append(sign_up(client, f"r{number}@example.com", ids["morning"]).status_code)
        throttled = sign_up(client, "late@example.com", ids["morning"])
    limit = runtime.settings.subscribe_per_client_per_minute
    assert codes[:limit] == [200] * limit and set(codes[limit:]) == {429}
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    # Throttled sign-ups stored nothing.
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == limit
    assert len(reader_mail(runtime)) == limit

    runtime.settings.subscribe_per_client_per_minute = 1000
    with serve(runtime) as other, other.client() as client:
        for _ in range(3):
            assert sign_up(client, "same@example.com", ids["morning"]).status_code == 200
    same = [m for m in reader_mail(runtime) if to_of(m) == "same@example.com"]
    assert len(same) == 1


def test_requests_counted_together_are_counted_as_one_after_another(runtime: Runtime) -> None:
    # A group of sign-ups counts its requests in one upsert per network and minute; each
    # must get what counting it alone, in order, would have given it.
    start = datetime(2026, 12, 4, 10, 0, 50, tzinfo=UTC)
    requests = [
        (key, start + timedelta(seconds=second))
        for second in range(0, 20, 2)  # across a minute's boundary
        for key in ("signup:192.0.2.1", "signup:192.0.2.2", "signup:192.0.2.1")
    ]
    with transaction(runtime.sessions) as session:
        together = rate_limits.take_all(session, requests, 12)
    with transaction(runtime.sessions) as session:
        alone = [rate_limits.take(session, f"again:{key}", 12, at) for key, at in requests]
    assert together == alone
    assert together[:3] == [None, None, None]
    assert any(wait is not None for wait in together), "the limit was never reached"


def test_an_editions_web_copy_is_on_the_web_only_once_it_went_out(
    runtime: Runtime, site: Site
) -> None:
    with runtime.sessions() as session:
        newsletter_id = session.scalar(select(Newsletter.id))
    assert newsletter_id is not None
    factories.subscribers(runtime, 2, list_name="morning")
    edition_id = factories.edition(runtime, newsletter_id)
    path = f"/e/{sign_edition_web(KEY, edition_id)}"
    with site.client() as client:
        # Its link is known (an editor's preview, say) but the edition is still a draft.
        assert client.get(path).status_code == 404
        send(runtime, edition_id)
        page = client.get(path)
    assert page.status_code == 200
    assert "reader00000@example.com" not in page.text and "/u/" not in page.text


def test_a_form_sent_back_keeps_the_time_zone_chosen(runtime: Runtime, site: Site) -> None:
    with site.client() as client:
        fresh = client.get("/subscribe/daily").text
        # Two lists offered and none picked: the form comes back, as it was filled in.
        again = client.post(
            "/subscribe/daily", data={"email": "zoe@example.com", "timezone": "Asia/Tokyo"}
        )
    assert "<option selected>" not in fresh and "<option>Asia/Tokyo</option>" in fresh
    assert again.status_code == 422
    assert again.text.count("<option selected>") == 1
    assert "<option selected>Asia/Tokyo</option>" in again.text


def test_refused_sign_ups_count_against_the_client_too(runtime: Runtime, site: Site) -> None:
    # A bot that sends garbage, or fills the honeypot, spends its client's minute as well.
    ids = list_ids(runtime)
    limit = runtime.settings.subscribe_per_client_per_minute
    with site.client() as client:
        codes = [
            sign_up(client, f"not an address {n}", ids["morning"]).status_code
            for n in range(limit - 1)
        ]
        codes.append(sign_up(client, "bot@example.com", ids["morning"], website="x").status_code)
        late = sign_up(client, "real@example.com", ids["morning"])
    assert codes == [422] * (limit - 1) + [200]
    assert late.status_code == 429
    assert subscriber(runtime, "real@example.com") is None
    assert reader_mail(runtime) == []


def test_tampered_expired_and_swapped_tokens_change_nothing(runtime: Runtime, site: Site) -> None:
    ids = list_ids(runtime)
    with site.client() as client:
        sign_up(client, "tess@example.com", ids["morning"])
        found = subscriber(runtime, "tess@example.com")
        assert found is not None
        good = link_in(reader_mail(runtime)[0], "/confirm/").rpartition("/")[2]
        tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
        other_id = f"{found.id + 1}." + good.partition(".")[2]
        expired = sign_confirmation(KEY, found.id, int(time.time()) - 1)
        preferences = sign_preferences(KEY, found.id)
        change = sign_email_change(KEY, found.id, int(time.time()) + 600, "x@example.com")
        for token in (tampered, other_id, expired, preferences, change, "garbage"):
            assert client.get(f"/confirm/{token}").status_code == 400, token
            assert client.post(f"/confirm/{token}").status_code == 400, token
        assert statuses(runtime, "tess@example.com") == {"morning": "pending"}
        # A confirmation link cannot open the preference page, nor the web copy's.
        for path in (f"/p/{good}", f"/p/{good}/leave", f"/p/{tampered}/erase", f"/e/{good}"):
            response = client.post(path) if "leave" in path or "erase" in path else client.get(path)
            assert response.status_code == 400, path
        assert client.post(f"/confirm/email/{good}").status_code == 400
        assert statuses(runtime, "tess@example.com") == {"morning": "pending"}
        # The edition web token of an edition that was not sent is not found.
        assert client.get(f"/e/{sign_edition_web(KEY, 999)}").status_code == 404
        assert client.post(f"/confirm/{good}").status_code == 200
        assert statuses(runtime, "tess@example.com") == {"morning": "active"}


def test_change_of_address_waits_for_the_new_address(runtime: Runtime, site: Site) -> None:
    ids = list_ids(runtime)
    with site.client() as client:
        sign_up(client, "old@example.com", ids["weekend"])
        found = subscriber(runtime, "old@example.com")
        assert found is not None
        page = f"/p/{sign_preferences(KEY, found.id)}"
        asked = client.post(f"{page}/email", data={"new_email": "New@Example.com"})
        assert asked.status_code == 200 and "sent a link" in asked.text
        assert subscriber(runtime, "old@example.com") is not None
        (message,) = reader_mail(runtime)
        assert to_of(message) == "new@example.com"
        link = link_in(message, "/confirm/email/")
        assert "Use new@example.com?" in client.get(link).text
        assert subscriber(runtime, "old@example.com") is not None
        assert client.post(link).status_code == 200
        assert subscriber(runtime, "old@example.com") is None
        assert subscriber(runtime, "new@example.com") is not None


def test_the_api_signs_up_with_a_token(runtime: Runtime, site: Site) -> None:
    with transaction(runtime.sessions) as session:
        token = create_token(session, "cms", newsletter_slug="daily")
    body = {"email": "api@example.com", "name": "Api", "lists": ["weekend"], "timezone": "UTC"}
    with site.client() as client:
        assert client.post("/api/subscribers", json=body).status_code == 401
        bad = client.post("/api/subscribers", json=body, headers={"Authorization": "Bearer no"})
        assert bad.status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        answer = client.post("/api/subscribers", json=body, headers=auth)
        assert answer.status_code == 202 and answer.json() == {"status": "accepted"}
        again = client.post("/api/subscribers", json=body, headers=auth)
        assert again.content == answer.content
        wrong = client.post("/api/subscribers", json={**body, "lists": ["nope"]}, headers=auth)
        assert wrong.status_code == 422
        zone = client.post("/api/subscribers", json={**body, "timezone": "Mars/Base"}, headers=auth)
        assert zone.status_code == 422
        # Nesting a recursive parser cannot take is a 422 that names it, not a 500.
        deep = '{"email": "d@example.com", "attributes": ' + '{"a":' * 2000 + "1" + "}" * 2001
        nested = client.post("/api/subscribers", content=deep, headers=auth)
        assert nested.status_code == 422 and "not JSON" in nested.text
        shallow = '{"email": "d@example.com", "x": ' + "[" * 20 + "]" * 20 + "}"
        too_deep = client.post("/api/subscribers", content=shallow, headers=auth)
        assert too_deep.status_code == 422 and "nested deeper than 16" in too_deep.text
    assert statuses(runtime, "api@example.com") == {"weekend": "active"}


def text_columns(runtime: Runtime) -> Iterator[tuple[str, str]]:
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, String | Text) or "JSON" in type(column.type).__name__:
                yield table.name, column.name


def scan_for(runtime: Runtime, address: str) -> list[str]:
    """Every text column of every table that still holds ``address``."""
    hits = []
    with runtime.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        for table, column in text_columns(runtime):
            if table not in tables:
                continue
            # Names from our own metadata; the address is a parameter.
            query = f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE :a'  # noqa: S608
            if connection.execute(text(query), {"a": f"%{address}%"}).scalar_one():
                hits.append(f"{table}.{column}")
    return hits


def test_download_and_erase_leave_no_address_behind(runtime: Runtime, site: Site) -> None:
    ids = list_ids(runtime)
    with site.client() as client:
        sign_up(client, "gone@example.com", ids["morning"])
        client.post(link_in(reader_mail(runtime)[0], "/confirm/"))
        found = subscriber(runtime, "gone@example.com")
        assert found is not None
        with runtime.sessions() as session:
            newsletter_id = session.scalar(select(Newsletter.id))
        assert newsletter_id is not None
        edition_id = factories.edition(runtime, newsletter_id)
        send(runtime, edition_id)
        page = f"/p/{sign_unsubscribe(KEY, found.id, edition_id)}"
        data = client.post(f"{page}/data")
        assert data.status_code == 200 and "attachment" in data.headers["content-disposition"]
        exported = json.loads(data.content)
        assert exported["profile"]["email"] == "gone@example.com"
        assert client.get(f"{page}/erase").status_code == 200
        assert subscriber(runtime, "gone@example.com") is not None  # GET changed nothing
        # Without the confirmation field the POST only asks again.
        assert 'id="erase-confirm"' in client.post(f"{page}/erase").text
        erased = client.post(f"{page}/erase", data={"confirm": "erase"})
        assert erased.status_code == 200 and 'id="erased"' in erased.text
        assert client.get(page).status_code == 404

    assert scan_for(runtime, "gone@example.com") == []
    # An import of the address is refused (its marker is found with the key).
    report = import_rows(
        runtime.sessions,
        [Row(line=2, email="gone@example.com", name="Gone", attributes={})],
        "morning",
        ImportReport(),
        erasure_key=KEY,
    )
    assert report.erased == 1 and subscriber(runtime, "gone@example.com") is None
    # They may subscribe anew: the marker goes when they confirm.
    with site.client() as client:
        pace_passed(runtime)
        sign_up(client, "gone@example.com", ids["morning"])
        client.post(link_in(reader_mail(runtime)[-1], "/confirm/"))
    assert statuses(runtime, "gone@example.com") == {"morning": "active"}


def test_archive_only_when_public(runtime: Runtime, site: Site) -> None:
    with transaction(runtime.sessions) as session:
        newsletter = session.scalar(select(Newsletter))
        assert newsletter is not None
        newsletter.public_archive = False
    with site.client() as client:
        assert client.get("/archive/daily").status_code == 404
        assert client.get("/archive/nope").status_code == 404
        assert client.get("/subscribe/nope").status_code == 404


def test_sign_ups_of_one_new_address_at_once_make_one_reader_and_one_email(
    runtime: Runtime, site: Site
) -> None:
    # The form's write takes no lock on a new address: each of these web processes (a
    # runtime each, so a writer each) inserts it, and on PostgreSQL all but one find it
    # taken once the first commits.
    ids = list_ids(runtime)
    processes = [Runtime(runtime.settings) for _ in range(4)]
    with runtime.sessions() as session:
        slug = session.scalar(select(Newsletter.slug))
    assert slug is not None
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def sign_up_now(number: int) -> None:
        start.wait()
        try:
            readers.subscribe(
                processes[number],
                slug,
                email="twin@example.com",
                name="Twin",
                list_ids=[ids["morning"], ids["weekend"]],
                timezone=None,
                client=f"192.0.2.{number}",
            ).result(30)
        except BaseException as exc:  # any failure is what this test finds
            failures.append(exc)

    threads = [threading.Thread(target=sign_up_now, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for process in processes:
        process.close()
    assert failures == []
    with runtime.sessions() as session:
        rows = session.scalars(select(Subscriber).where(Subscriber.email == "twin@example.com"))
        assert len(list(rows)) == 1
    assert statuses(runtime, "twin@example.com") == {"morning": "pending", "weekend": "active"}
    assert [to_of(m) for m in reader_mail(runtime)] == ["twin@example.com"]
