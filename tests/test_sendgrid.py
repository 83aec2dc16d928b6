"""The SendGrid transport against a local server that answers like the API, over real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailer.db.models import Delivery, DeliveryStatus, Edition, EditionStatus, Event
from mailer.db.session import transaction
from mailer.dispatch import dispatcher, ledger, tallies
from mailer.dispatch.tallies import moved
from mailer.events.policy import Policy, apply_pending
from mailer.events.reconcile import resend_unanswered, unanswered
from mailer.events.sendgrid_events import parse_events
from mailer.events.store import store_sendgrid
from mailer.runtime import Runtime
from mailer.transports import transport_for
from mailer.transports.base import Recipient
from mailer.transports.headers import feedback_sender
from mailer.transports.sendgrid import SendGridTransport, display_name, substitution_keys
from subscribers.models import Subscriber
from tests import factories
from tests.sendgrid_sink import API_KEY, SinkServer, sendgrid_sink
from tests.sending import prepared, send
from tests.waits import no_wait


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    with sendgrid_sink() as server:
        yield server


SENDER = "briefing@news.example.org"  # tests.factories.newsletter's


def transport(base_url: str, key: str = API_KEY, timeout: float = 2.0) -> SendGridTransport:
    return SendGridTransport(key, base_url, timeout=timeout, sleep=no_wait)


def rows(runtime: Runtime) -> dict[int, ledger.LedgerRow]:
    """Every delivery as it stands (rows of batches sent whole read as sent)."""
    with runtime.sessions() as session:
        editions = session.scalars(select(Edition.id)).all()
        return {d.id: d for e in editions for d in ledger.rows(session, e)}


def test_batches_are_valid_personalized_and_recorded(runtime: Runtime, sink: SinkServer) -> None:
    edition_id = prepared(runtime, 2500)
    with transaction(runtime.sessions) as session:
        first = session.scalars(select(Subscriber).order_by(Subscriber.id)).first()
        assert first is not None
        first.name = 'Ada "Al" <Lovelace>; Esq,\x07'

    tally = send(runtime, edition_id, transport(sink.base_url))

    assert tally["sent"] == 2500
    # Several requests are in flight at once: they may arrive in any order.
    assert sorted(len(b["personalizations"]) for b in sink.sink.bodies) == [500, 1000, 1000]
    assert sink.sink.answered == [202, 202, 202]  # the sink validated every body
    assert sorted(sink.sink.delivery_ids()) == sorted(rows(runtime))
    body = sink.sink.bodies[0]
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.token_nonce
        html_key, text_key = substitution_keys(edition.token_nonce)
    assert body["content"][0]["type"] == "text/plain" and text_key in body["content"][0]["value"]
    assert html_key in body["content"][1]["value"] and text_key not in body["content"][1]["value"]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["custom_args"] == {"edition_id": str(edition_id)}
    (person,) = [
        p
        for b in sink.sink.bodies
        for p in b["personalizations"]
        if p["to"][0]["email"] == "reader00001@example.com"
    ]
    # Every character kept but the bell; quoted, as SendGrid needs a name with specials.
    assert person["to"] == [
        {"email": "reader00001@example.com", "name": '"Ada \\"Al\\" <Lovelace>; Esq,"'}
    ]
    assert body["headers"]["List-Id"] == "The Daily Briefing <daily.news.example.org>"
    assert body["headers"]["Feedback-ID"] == f"e{edition_id}:daily:{feedback_sender(SENDER)}"
    assert person["custom_args"]["edition_id"] == str(edition_id)
    url = person["substitutions"][f"{text_key}unsubscribe_url%%"]
    assert url.startswith("https://news.example.org/u/")
    assert person["headers"]["List-Unsubscribe"] == f"<{url}>"
    # Only the tokens the template uses travel: this one has no `name`, and the web
    # copy's link, the same for everyone, was filled in once before the send.
    assert set(person["substitutions"]) == {
        f"{html_key}unsubscribe_url%%",
        f"{text_key}unsubscribe_url%%",
        f"{html_key}preferences_url%%",
        f"{text_key}preferences_url%%",
        f"{html_key}email%%",
        f"{text_key}email%%",
    }
    preferences = person["substitutions"][f"{text_key}preferences_url%%"]
    assert preferences == url.replace("/u/", "/p/")
    assert person["substitutions"][f"{text_key}email%%"] == "reader00001@example.com"
    assert all(d.message_id for d in rows(runtime).values())


def test_rate_limits_and_unavailable_are_retried(runtime: Runtime, sink: SinkServer) -> None:
    edition_id = prepared(runtime, 30)
    sink.sink.actions = ["429", "503", "503"]

    tally = send(runtime, edition_id, transport(sink.base_url), batch_size=10)

    assert tally["sent"] == 30
    assert sorted(sink.sink.accepted_ids()) == sorted(rows(runtime))
    assert sink.sink.answered[:3] == [429, 503, 503]


def test_persistent_503_leaves_the_batch_queued_for_later(
    runtime: Runtime, sink: SinkServer
) -> None:
    edition_id = prepared(runtime, 10)
    sink.sink.actions = ["503"] * 6

    first = send(runtime, edition_id, transport(sink.base_url))
    assert first["queued"] == 10 and first["failed"] == 0

    factories.backoff_passed(runtime)
    second = send(runtime, edition_id, transport(sink.base_url))
    assert second["sent"] == 10
    assert sorted(sink.sink.accepted_ids()) == sorted(rows(runtime))


@pytest.mark.parametrize("action", ["hang", "reset"])
def test_ambiguous_outcomes_are_unknown_and_never_resent(
    runtime: Runtime, sink: SinkServer, action: str
) -> None:
    # Batches of equal size: several are in flight at once and reach the sink in any
    # order, so whichever gets the fault, the counts are the same.
    edition_id = prepared(runtime, 30)
    sink.sink.actions = ["ok", action]
    sink.sink.hang_seconds = 2.0

    tally = send(runtime, edition_id, transport(sink.base_url, timeout=0.5), batch_size=10)

    assert tally["sent"] == 20 and tally["unknown"] == 10
    again = send(runtime, edition_id, transport(sink.base_url))
    assert again["unknown"] == 10
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 30  # nobody reached the provider twice
    unknown = [d for d in rows(runtime).values() if d.status == DeliveryStatus.UNKNOWN]
    assert all("outcome unknown" in (d.error or "") for d in unknown)


@pytest.mark.parametrize("status", ["500", "502", "504"])
def test_server_errors_that_may_have_taken_the_batch_are_unknown(
    runtime: Runtime, sink: SinkServer, status: str
) -> None:
    edition_id = prepared(runtime, 30)
    sink.sink.actions = ["ok", status]

    tally = send(runtime, edition_id, transport(sink.base_url), batch_size=10)

    assert tally["sent"] == 20 and tally["unknown"] == 10
    assert send(runtime, edition_id, transport(sink.base_url))["unknown"] == 10
    seen = sink.sink.delivery_ids()
    assert len(seen) == len(set(seen)) == 30  # nobody was posted twice
    unknown = [d for d in rows(runtime).values() if d.status == DeliveryStatus.UNKNOWN]
    assert all(f"outcome unknown: {status}" in (d.error or "") for d in unknown)


def _webhook_says(
    runtime: Runtime, edition_id: int, kind: str, deliveries: list[ledger.LedgerRow]
) -> None:
    """SendGrid's Event Webhook reports ``kind`` for these deliveries of the edition, now."""
    items = [
        {
            "email": d.email,
            "timestamp": int(time.time()),
            "event": kind,
            "sg_event_id": f"evt-{kind}-{d.id}",
            "edition_id": str(edition_id),
            "delivery_id": str(d.id),
        }
        for d in deliveries
    ]
    events, rejected = parse_events(json.dumps(items).encode())
    with runtime.engine.begin() as connection:
        store_sendgrid(connection, events, rejected)


def test_unknown_rows_settle_from_the_webhook_without_an_operator(
    runtime: Runtime, sink: SinkServer
) -> None:
    edition_id = prepared(runtime, 30)
    sink.sink.actions = ["ok", "500"]
    send(runtime, edition_id, transport(sink.base_url), batch_size=10)
    by_status: dict[str, list[ledger.LedgerRow]] = {}
    for delivery in rows(runtime).values():
        by_status.setdefault(delivery.status, []).append(delivery)
    unknown, sent = by_status[DeliveryStatus.UNKNOWN], by_status[DeliveryStatus.SENT]
    later = datetime.now(UTC) + timedelta(hours=3)  # past the grace
    grace = timedelta(hours=2)

    # The webhook has said nothing since the batch went out: an operator decides.
    with transaction(runtime.sessions) as session:
        assert resend_unanswered(session, edition_id, grace, clock=lambda: later) == 0
    # It delivers events again (so it is healthy), three of them about unknown rows:
    # those were accepted after all; SendGrid never took the other seven.
    _webhook_says(runtime, edition_id, "processed", unknown[:3] + sent[:5])
    apply_pending(runtime.sessions, Policy.from_settings(runtime.settings))
    with transaction(runtime.sessions) as session:
        # Within the grace, nothing is resent yet.
        assert resend_unanswered(session, edition_id, grace) == 0
        assert resend_unanswered(session, edition_id, grace, clock=lambda: later) == 7
    statuses = {d.id: d.status for d in rows(runtime).values()}
    assert {statuses[d.id] for d in unknown[:3]} == {DeliveryStatus.SENT}
    assert {statuses[d.id] for d in unknown[3:]} == {DeliveryStatus.QUEUED}
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.SENDING

    tally = send(runtime, edition_id, transport(sink.base_url), batch_size=10)
    assert tally["sent"] == 30 and tally["unknown"] == 0
    posted = sink.sink.delivery_ids()
    # The seven went out a second time (their first post was refused); nobody else did.
    assert sorted(posted) == sorted([*statuses, *(d.id for d in unknown[3:])])


def test_unknown_rows_of_other_transports_wait_for_an_operator(runtime: Runtime) -> None:
    edition_id = prepared(runtime, 10)
    outbox = send(runtime, edition_id, transport_for(runtime.settings), batch_size=10)
    assert outbox["sent"] == 10
    with transaction(runtime.sessions) as session:
        # Made unknown as a reaped outbox batch would be: no events will ever come.
        delivery = session.scalars(
            select(Delivery).where(Delivery.edition_id == edition_id).order_by(Delivery.id)
        ).first()
        assert delivery is not None
        delivery.status = DeliveryStatus.UNKNOWN
        session.flush()
        tallies.add(session, edition_id, moved(1, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN))
    # The webhook is healthy (it reports on another reader), but this row's batch never
    # went to SendGrid.
    _webhook_says(runtime, edition_id, "processed", list(rows(runtime).values())[-1:])
    later = datetime.now(UTC) + timedelta(hours=3)
    with transaction(runtime.sessions) as session:
        assert unanswered(session, edition_id, timedelta(hours=2), clock=lambda: later) == []


def test_refusals_fail_with_sendgrids_reasons(runtime: Runtime, sink: SinkServer) -> None:
    edition_id = prepared(runtime, 20)  # two batches of ten, in flight together
    sink.sink.actions = ["400"]

    tally = send(runtime, edition_id, transport(sink.base_url), batch_size=10)

    assert tally["failed"] == 10 and tally["sent"] == 10
    failed = [d for d in rows(runtime).values() if d.status == DeliveryStatus.FAILED]
    assert all("verified Sender Identity" in (d.error or "") for d in failed)


def test_a_bad_key_pauses_the_edition_without_burning_the_list(
    runtime: Runtime, sink: SinkServer
) -> None:
    edition_id = prepared(runtime, 30)

    tally = send(runtime, edition_id, transport(sink.base_url, key="SG.wrong"), batch_size=10)

    assert tally["queued"] == 30 and len(sink.sink.bodies) == 0
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.PAUSED
        assert "401" in (edition.status_reason or "")
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        dispatcher.resume(session, edition)
    assert send(runtime, edition_id, transport(sink.base_url), batch_size=10)["sent"] == 30


def test_connection_refused_leaves_everyone_queued(runtime: Runtime) -> None:
    edition_id = prepared(runtime, 5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    tally = send(runtime, edition_id, transport(f"http://127.0.0.1:{closed_port}"))

    assert tally["queued"] == 5 and tally["sent"] == 0


def test_transport_is_configured_from_settings(runtime: Runtime, sink: SinkServer) -> None:
    settings = runtime.settings.model_copy(
        update={
            "transport": "sendgrid",
            "sendgrid_base_url": sink.base_url,
            "sendgrid_api_key": None,
        }
    )
    from mailer.config import ConfigError

    with pytest.raises(ConfigError, match="MAILER_SENDGRID_API_KEY"):
        transport_for(settings)


def test_values_are_escaped_for_html_and_raw_for_text() -> None:
    envelope = factories.envelope(edition_id=7, from_email="d@news.example.org", subject="S")
    sg = transport("http://127.0.0.1:9")
    recipient = Recipient(1, "a@example.com", 'Ada "Al" <L>; Esq', "https://x/u/1")
    body = json.loads(sg.body(envelope, [recipient]))
    sg.close()
    substitutions = body["personalizations"][0]["substitutions"]
    assert substitutions["%%0123456789ab:name%%"] == "Ada &#34;Al&#34; &lt;L&gt;; Esq"
    assert substitutions["%%0123456789abt:name%%"] == 'Ada "Al" <L>; Esq'
    assert body["content"][0]["value"] == (
        "Hi %%0123456789abt:name%% %%0123456789abt:unsubscribe_url%%"
    )


def test_events_without_custom_args_find_their_delivery_by_x_message_id(
    runtime: Runtime, sink: SinkServer
) -> None:
    edition_id = prepared(runtime, 1500)
    send(runtime, edition_id, transport(sink.base_url), batch_size=1000)
    ledger_rows = rows(runtime)
    # One reader of each batch, and an address the batch does not hold.
    by_batch: dict[str, ledger.LedgerRow] = {}
    for delivery in ledger_rows.values():
        assert delivery.message_id is not None
        by_batch.setdefault(delivery.message_id, delivery)
    assert len(by_batch) == 2
    first, second = by_batch.values()
    items = [
        {
            "email": d.email,
            "timestamp": 1_700_000_000,
            "event": "delivered",
            "sg_event_id": f"evt-{d.id}",
            "sg_message_id": f"{d.message_id}.filterdrecv-5645d9c87f-78xgx-1-0",
        }
        for d in (first, second)
    ]
    items.append(items[0] | {"sg_event_id": "evt-stranger", "email": second.email})
    events, rejected = parse_events(json.dumps(items).encode())
    with runtime.engine.begin() as connection:
        report = store_sendgrid(connection, events, rejected)
    assert (report.stored, report.unmatched) == (3, 1)
    with runtime.sessions() as session:
        matched = dict(session.execute(select(Event.external_id, Event.delivery_id)).all())
    assert matched == {
        f"evt-{first.id}": first.id,
        f"evt-{second.id}": second.id,
        "evt-stranger": None,
    }


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("Reader 12", "Reader 12"),
        ("Zoë Ünïcødé", "Zoë Ünïcødé"),
        ("  spaced   out ", "spaced out"),
        ("Smith, Ada", '"Smith, Ada"'),
        ('Zoë Ünïcødé, "quoted"', '"Zoë Ünïcødé, \\"quoted\\""'),
        ("Howdy y'all :(", '"Howdy y\'all :("'),
        ("back\\slash", '"back\\\\slash"'),
        ("bell\x07 and\r\nbreak", "bell and break"),
        (None, ""),
    ],
)
def test_names_keep_every_character_quoted_as_sendgrid_needs(name: str | None, sent: str) -> None:
    assert display_name(name) == sent
