"""Bounce and event tracking end to end: the signed webhook, the policy, provider sync,
bounce mail, reconciliation of unknown deliveries, stats, and lifting suppressions."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from mailer.bounces.mailbox import FolderSource
from mailer.bounces.sendgrid_sync import SendGridSuppressionClient
from mailer.bounces.sync import import_bounce_mail, sync_sendgrid
from mailer.cli import app as cli
from mailer.db.models import Delivery, DeliveryStatus, Event, ProviderSync
from mailer.db.session import transaction
from mailer.dispatch import tallies
from mailer.dispatch.dispatcher import send_edition
from mailer.dispatch.tallies import moved
from mailer.events.policy import Policy, apply_pending
from mailer.events.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from mailer.runtime import Runtime
from mailer.transports.outbox import OutboxTransport
from mailer.web.app import create_app
from subscribers.models import Subscriber, SubscriberStatus, Suppression
from subscribers.suppressions import lift
from tests import factories
from tests.suppression_server import API_KEY, item, suppression_server
from tests.webhook_keys import new_private_key, public_key_b64, sign

BOUNCES = Path(__file__).parent / "data" / "bounces"
_ids = itertools.count(1)
A_DAY_AGO = datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return new_private_key()


@pytest.fixture
def client(runtime: Runtime, key: ec.EllipticCurvePrivateKey) -> Iterator[TestClient]:
    runtime.settings.sendgrid_webhook_public_key = public_key_b64(key)
    with TestClient(create_app(runtime=runtime)) as test_client:
        yield test_client


def sent_edition(runtime: Runtime, count: int, slug: str = "daily") -> tuple[int, dict[str, int]]:
    """An edition sent through the outbox; returns it and each address's delivery id."""
    newsletter_id = factories.newsletter(runtime, slug=slug)
    if slug == "daily":
        factories.subscribers(runtime, count)
    edition_id = factories.edition(runtime, newsletter_id)
    tally = send_edition(
        runtime.sessions,
        edition_id,
        OutboxTransport(runtime.settings.outbox_dir),
        runtime.dispatch_settings(),
    )
    assert tally["sent"] == count
    with runtime.sessions() as session:
        rows = session.execute(
            select(Delivery.email, Delivery.id).where(Delivery.edition_id == edition_id)
        ).all()
    return edition_id, {email: delivery_id for email, delivery_id in rows}


# A hard bounce as SendGrid reports one: its type, the status and the server's words.
NO_SUCH_USER = {
    "type": "bounce",
    "status": "5.1.1",
    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
}


def event(
    kind: str, email: str, edition_id: int | None, delivery_id: int | None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": email,
        "timestamp": int(time.time()) - 60,
        "event": kind,
        "sg_event_id": f"evt-{next(_ids)}",
        "sg_message_id": f"msg{next(_ids)}.filter0001.1.0",
    }
    if edition_id is not None:
        body["edition_id"] = str(edition_id)
    if delivery_id is not None:
        body["delivery_id"] = str(delivery_id)
    return body | extra


def post(
    client: TestClient,
    key: ec.EllipticCurvePrivateKey,
    events: list[dict[str, Any]],
    *,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    body = json.dumps(events).encode()
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signed = {
        SIGNATURE_HEADER: sign(key, stamp, body),
        TIMESTAMP_HEADER: stamp,
        "Content-Type": "application/json",
    }
    response = client.post(
        "/webhooks/sendgrid", content=body, headers=signed if headers is None else headers
    )
    # The policy runs as a background task after the answer; TestClient has run it.
    return response


def stored_events(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(
            session.scalar(select(func.count(Event.id)).where(Event.source == "sendgrid")) or 0
        )


def suppressed(runtime: Runtime) -> dict[str, str]:
    with runtime.sessions() as session:
        return dict(session.execute(select(Suppression.email, Suppression.reason)).all())


def audience_of_next_edition(runtime: Runtime) -> set[str]:
    """Who a second newsletter on the same list actually mails."""
    newsletter_id = factories.newsletter(runtime, slug=f"next{next(_ids)}")
    edition_id = factories.edition(runtime, newsletter_id)
    send_edition(
        runtime.sessions,
        edition_id,
        OutboxTransport(runtime.settings.outbox_dir),
        runtime.dispatch_settings(),
    )
    with runtime.sessions() as session:
        return set(
            session.scalars(
                select(Delivery.email).where(
                    Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENT
                )
            )
        )


# -- the signature ------------------------------------------------------------------


def test_a_signed_batch_is_stored(runtime: Runtime, client: TestClient, key: Any) -> None:
    edition_id, deliveries = sent_edition(runtime, 3)
    email, delivery_id = next(iter(deliveries.items()))
    response = post(client, key, [event("delivered", email, edition_id, delivery_id)])
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    with runtime.sessions() as session:
        stored = session.scalar(select(Event).where(Event.source == "sendgrid"))
        assert stored is not None and stored.delivery_id == delivery_id
        assert stored.processed_at is not None  # the policy ran after the answer
        row = session.get(Delivery, delivery_id)
        assert row is not None and row.delivered_at is not None


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong key", "stale", "future", "no signature", "no timestamp", "garbage signature"],
)
def test_a_bad_signature_is_refused_and_nothing_is_stored(
    runtime: Runtime, client: TestClient, key: Any, tamper: str
) -> None:
    events = [event("bounce", "reader00001@example.com", None, None, type="bounce")]
    body = json.dumps(events).encode()
    now = int(time.time())
    stamp = str(now)
    signature = sign(key, stamp, body)
    if tamper == "body":
        body = body.replace(b"reader00001", b"reader00002")
    elif tamper == "wrong key":
        signature = sign(new_private_key(), stamp, body)
    elif tamper in ("stale", "future"):
        stamp = str(now - 3600 if tamper == "stale" else now + 3600)
        signature = sign(key, stamp, body)
    headers = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: stamp}
    if tamper == "no signature":
        del headers[SIGNATURE_HEADER]
    elif tamper == "no timestamp":
        del headers[TIMESTAMP_HEADER]
    elif tamper == "garbage signature":
        headers[SIGNATURE_HEADER] = "not base64 at all!"
    response = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"]
    assert stored_events(runtime) == 0
    assert suppressed(runtime) == {}


def test_without_a_key_the_webhook_is_unavailable_not_open(runtime: Runtime) -> None:
    with TestClient(create_app(runtime=runtime)) as unconfigured:
        response = unconfigured.post("/webhooks/sendgrid", content=b"[]")
    assert response.status_code == 503
    assert stored_events(runtime) == 0


def test_switching_verification_off_is_loud(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.settings.sendgrid_webhook_verify = False
    with TestClient(create_app(runtime=runtime)) as unverified:
        assert "verification is OFF" in unverified.get("/healthz").json()["warnings"][0]
        body = json.dumps([event("open", "reader00001@example.com", None, None)]).encode()
        assert unverified.post("/webhooks/sendgrid", content=body).status_code == 200
    assert any(r.getMessage() == "webhook.verification_off" for r in caplog.records)


def test_malformed_input_gets_a_clear_answer_and_stores_nothing_broken(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    stamp = str(int(time.time()))
    for body, status in ((b"{not json", 400), (b'{"event": "open"}', 400)):
        response = client.post(
            "/webhooks/sendgrid",
            content=body,
            headers={SIGNATURE_HEADER: sign(key, stamp, body), TIMESTAMP_HEADER: stamp},
        )
        assert response.status_code == status
        assert response.json()["error"]
    assert stored_events(runtime) == 0
    # Bad items next to good ones: the good are stored, the bad recorded, answer 2xx
    # (SendGrid would retry a refused batch for a day).
    good = event("open", "reader00001@example.com", None, None)
    response = post(client, key, [good, {"event": "teleport", "email": "x@example.com"}, 42])
    assert response.status_code == 200
    assert response.json()["accepted"] == 1 and response.json()["rejected"] == 2
    with runtime.sessions() as session:
        kinds = sorted(session.scalars(select(Event.kind).where(Event.source == "sendgrid")))
    assert kinds == ["open", "rejected", "rejected"]


def test_an_oversized_body_is_refused(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/webhooks/sendgrid", content=b"[" + b" " * 1_100_000 + b"]", headers={})
    assert response.status_code == 413
    assert stored_events(runtime) == 0


# -- the policy -----------------------------------------------------------------------


def test_a_replayed_batch_changes_nothing(runtime: Runtime, client: TestClient, key: Any) -> None:
    edition_id, deliveries = sent_edition(runtime, 4)
    batch = [
        event("bounce", email, edition_id, delivery_id, type="bounce", status="5.1.1")
        for email, delivery_id in list(deliveries.items())[:2]
    ] + [event("open", email, edition_id, delivery_id) for email, delivery_id in deliveries.items()]
    first = post(client, key, batch).json()
    before = (stored_events(runtime), suppressed(runtime))
    second = post(client, key, batch).json()
    # The replay is kept and applied like any batch: none of its events is stored again.
    assert first["accepted"] == second["accepted"] == 6 and before[0] == 6
    assert (stored_events(runtime), suppressed(runtime)) == before
    assert len(before[1]) == 2


def test_a_hard_bounce_stops_the_next_edition(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, deliveries = sent_edition(runtime, 5)
    bounced = "reader00002@example.com"
    post(
        client,
        key,
        [
            event(
                "bounce",
                bounced,
                edition_id,
                deliveries[bounced],
                type="bounce",
                reason="550 5.1.1 no such user",
                status="5.1.1",
            )
        ],
    )
    assert suppressed(runtime) == {bounced: "hard bounce"}
    with runtime.sessions() as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == bounced))
        assert subscriber is not None and subscriber.status == SubscriberStatus.BOUNCED
        assert session.get(Delivery, deliveries[bounced]).bounce_class == "hard"  # type: ignore[union-attr]
    audience = audience_of_next_edition(runtime)
    assert bounced not in audience and len(audience) == 4


def test_three_soft_bounces_suppress_and_two_do_not(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, deliveries = sent_edition(runtime, 3)
    flaky, blocked = "reader00001@example.com", "reader00003@example.com"
    # Deferred several times for one message: one soft signal, not three.
    post(
        client,
        key,
        [
            event("deferred", flaky, edition_id, deliveries[flaky], response="421 try later")
            for _ in range(4)
        ],
    )
    # Two more messages blocked: soft signals from different sends.
    post(
        client,
        key,
        [
            event("bounce", blocked, None, None, type="blocked", reason="IP blocklisted")
            for _ in range(2)
        ],
    )
    assert suppressed(runtime) == {}
    post(
        client, key, [event("bounce", blocked, None, None, type="blocked", reason="IP blocklisted")]
    )
    assert suppressed(runtime) == {blocked: "repeated soft bounces"}
    assert audience_of_next_edition(runtime) == {
        "reader00001@example.com",
        "reader00002@example.com",
    }


def test_a_spam_report_suppresses_at_once(runtime: Runtime, client: TestClient, key: Any) -> None:
    edition_id, deliveries = sent_edition(runtime, 3)
    angry = "reader00003@example.com"
    post(client, key, [event("spamreport", angry, edition_id, deliveries[angry])])
    assert suppressed(runtime) == {angry: "spam complaint"}
    with runtime.sessions() as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == angry))
        assert subscriber is not None and subscriber.status == SubscriberStatus.COMPLAINED
    assert angry not in audience_of_next_edition(runtime)


def test_drops_suppress_only_for_address_reasons(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    sent_edition(runtime, 3)
    post(
        client,
        key,
        [
            event("dropped", "reader00001@example.com", None, None, reason="Bounced Address"),
            event("dropped", "reader00002@example.com", None, None, reason="Invalid"),
            event(
                "dropped",
                "reader00003@example.com",
                None,
                None,
                reason="Spam Content (if spam checker app enabled)",
            ),
        ],
    )
    assert suppressed(runtime) == {
        "reader00001@example.com": "hard bounce",
        "reader00002@example.com": "invalid address",
    }


def test_unsubscribe_events_leave_and_group_resubscribe_returns(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, deliveries = sent_edition(runtime, 3)
    leaver = "reader00001@example.com"
    post(
        client,
        key,
        [event("group_unsubscribe", leaver, edition_id, deliveries[leaver], asm_group_id=7)],
    )
    assert leaver not in audience_of_next_edition(runtime)
    resubscribe = event("group_resubscribe", leaver, edition_id, deliveries[leaver], asm_group_id=7)
    stale = resubscribe | {"sg_event_id": "stale", "timestamp": resubscribe["timestamp"] - 3600}
    post(client, key, [stale])  # older than the unsubscribe: a late retry, ignored
    assert leaver not in audience_of_next_edition(runtime)
    post(client, key, [resubscribe | {"timestamp": resubscribe["timestamp"] + 30}])
    assert leaver in audience_of_next_edition(runtime)


def made_unknown(runtime: Runtime, edition_id: int, delivery_ids: list[int]) -> None:
    """Rows whose outcome was lost a day ago, as a reaped batch leaves them (the kept
    counts moved with them)."""
    with transaction(runtime.sessions) as session:
        was = session.scalars(select(Delivery.status).where(Delivery.id.in_(delivery_ids))).all()
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(delivery_ids))
            .values(status=DeliveryStatus.UNKNOWN, finished_at=A_DAY_AGO)
        )
        for status in was:
            tallies.add(session, edition_id, moved(1, status, DeliveryStatus.UNKNOWN))


def test_unknown_deliveries_are_reconciled_by_provider_events(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, deliveries = sent_edition(runtime, 4)
    made_unknown(runtime, edition_id, list(deliveries.values()))
    processed = list(deliveries.items())[:3]
    response = post(
        client,
        key,
        [event("processed", email, edition_id, delivery_id) for email, delivery_id in processed],
    )
    assert response.status_code == 200
    with runtime.sessions() as session:
        states = dict(
            session.execute(
                select(Delivery.email, Delivery.status).where(Delivery.edition_id == edition_id)
            ).all()
        )
    assert sorted(states.values()) == ["sent", "sent", "sent", "unknown"]

    # What is still unknown after the grace period is the operator's call.
    runner = CliRunner()
    env = {"MAILER_DATABASE_URL": runtime.settings.database_url}
    listed = runner.invoke(
        cli,
        ["editions", "reconcile", str(edition_id), "--grace-hours", "2", "--json"],
        env=env,
    )
    assert listed.exit_code == 0, listed.output
    assert [d["email"] for d in json.loads(listed.output)["due"]] == [list(deliveries)[3]]
    given_up = runner.invoke(
        cli,
        [
            "editions",
            "reconcile",
            str(edition_id),
            "--grace-hours",
            "2",
            "--give-up",
            "--json",
        ],
        env=env,
    )
    assert json.loads(given_up.output)["changed"] == 1
    with runtime.sessions() as session:
        row = session.get(Delivery, deliveries[list(deliveries)[3]])
        assert (
            row is not None
            and row.status == DeliveryStatus.FAILED
            and "given up" in (row.error or "")
        )


def test_resending_unknowns_queues_them_and_sends_them_once(runtime: Runtime) -> None:
    edition_id, deliveries = sent_edition(runtime, 3)
    made_unknown(runtime, edition_id, [next(iter(deliveries.values()))])
    runner = CliRunner()
    env = {
        "MAILER_DATABASE_URL": runtime.settings.database_url,
        "MAILER_OUTBOX_DIR": str(runtime.settings.outbox_dir),
    }
    result = runner.invoke(
        cli,
        ["editions", "reconcile", str(edition_id), "--grace-hours", "2", "--resend", "--json"],
        env=env,
    )
    assert json.loads(result.output)["changed"] == 1
    tally = send_edition(
        runtime.sessions,
        edition_id,
        OutboxTransport(runtime.settings.outbox_dir),
        runtime.dispatch_settings(),
    )
    assert tally["sent"] == 3 and tally["unknown"] == 0


# -- provider sync and bounce mail -----------------------------------------------------------


def test_sync_pulls_every_list_with_pagination_and_is_idempotent(runtime: Runtime) -> None:
    sent_edition(runtime, 3)
    now = int(time.time())
    with suppression_server() as server:
        server.state.add(
            "bounces",
            *[item("bounces", f"gone{i}@example.com", now - 3600) for i in range(1, 1201)],
        )
        server.state.add("bounces", item("bounces", "reader00001@example.com", now - 3600))
        server.state.add(
            "spam_reports", item("spam_reports", "reader00002@example.com", now - 3600)
        )
        server.state.add(
            "invalid_emails", item("invalid_emails", "reader00003@example.com", now - 3600)
        )
        server.state.add("blocks", item("blocks", "blocked@example.com", now - 3600))
        server.state.add("unsubscribes", item("unsubscribes", "left@example.com", now - 3600))
        client = SendGridSuppressionClient(API_KEY, server.base_url, page_size=500)
        report = sync_sendgrid(runtime, client=client)
        assert report.fetched == 1205 and report.stored == 1205
        assert server.state.offsets("bounces") == [0, 500, 1000]
        again = sync_sendgrid(runtime, client=SendGridSuppressionClient(API_KEY, server.base_url))
    assert again.since == report.until and again.stored == 0
    suppressions = suppressed(runtime)
    assert suppressions["reader00001@example.com"] == "hard bounce"
    assert suppressions["reader00002@example.com"] == "spam complaint"
    assert suppressions["reader00003@example.com"] == "invalid address"
    assert "blocked@example.com" not in suppressions  # one soft signal is counted, not final
    assert len(suppressions) == 1203
    with runtime.sessions() as session:
        state = session.get(ProviderSync, "sendgrid-suppressions")
        assert state is not None and state.synced_until == again.until and state.last_error is None


def test_bounce_mail_suppresses_hard_and_counts_soft(runtime: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "bounces"
    inbox.mkdir()
    for name in ("postfix-user-unknown.eml", "gmail-mailbox-full-delayed.eml", "out-of-office.eml"):
        shutil.copy(BOUNCES / name, inbox / name)
    report = import_bounce_mail(runtime, FolderSource(inbox))
    assert report.messages == 3 and report.not_bounces == 1 and report.bounces >= 2
    with runtime.sessions() as session:
        classes = dict(
            session.execute(
                select(Event.email, Event.bounce_class).where(Event.source == "dsn")
            ).all()
        )
    hard = [email for email, kind in classes.items() if kind == "hard"]
    soft = [email for email, kind in classes.items() if kind == "soft"]
    assert hard and soft
    assert set(suppressed(runtime)) == set(hard)
    # Read mail is moved aside: a second run reads nothing.
    assert import_bounce_mail(runtime, FolderSource(inbox)).messages == 0


# -- stats and lifting ------------------------------------------------------------------


def test_stats_count_what_happened(runtime: Runtime, client: TestClient, key: Any) -> None:
    edition_id, deliveries = sent_edition(runtime, 10)
    emails = list(deliveries)
    events = [event("delivered", e, edition_id, deliveries[e]) for e in emails[:8]]
    events += [event("open", e, edition_id, deliveries[e]) for e in emails[:4] for _ in range(2)]
    events += [
        event(
            "click", emails[0], edition_id, deliveries[emails[0]], url="https://news.example.org/a"
        )
    ]
    events += [event("bounce", emails[9], edition_id, deliveries[emails[9]], **NO_SUCH_USER)]
    events += [event("bounce", emails[8], edition_id, deliveries[emails[8]], type="blocked")]
    events += [event("spamreport", emails[7], edition_id, deliveries[emails[7]])]
    assert post(client, key, events).status_code == 200
    result = CliRunner().invoke(
        cli,
        ["editions", "stats", str(edition_id), "--json"],
        env={"MAILER_DATABASE_URL": runtime.settings.database_url},
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["sent"], stats["delivered"], stats["bounced_hard"], stats["bounced_soft"]) == (
        10,
        8,
        1,
        1,
    )
    assert (stats["unique_opens"], stats["opens"], stats["unique_clicks"], stats["complaints"]) == (
        4,
        8,
        1,
        1,
    )
    assert stats["rates"]["opens"] == 0.5 and stats["rates"]["bounced_hard"] == 0.1
    assert sum(point["count"] for point in stats["timeline"] if point["kind"] == "open") == 8


def test_lifting_a_suppression_is_audited_and_mails_again(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, deliveries = sent_edition(runtime, 2)
    email = "reader00001@example.com"
    post(client, key, [event("bounce", email, edition_id, deliveries[email], **NO_SUCH_USER)])
    with transaction(runtime.sessions) as session:
        lifted = lift(session, email, operator="ops", note="mailbox fixed, confirmed by phone")
    assert lifted.reason == "hard bounce"
    with runtime.sessions() as session:
        audit = session.scalar(select(Event).where(Event.kind == "suppression_lifted"))
        assert audit is not None and audit.payload["operator"] == "ops"
        assert audit.payload["reason"] == "hard bounce"
    assert email in audience_of_next_edition(runtime)


def test_pending_events_are_applied_once_even_if_asked_twice(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, _ = sent_edition(runtime, 2)
    post(client, key, [event("spamreport", "reader00001@example.com", edition_id, None)])
    again = apply_pending(runtime.sessions, Policy())
    assert again.events == 0 and again.suppressed == 0


# -- hardening --------------------------------------------------------------------------


def test_a_nul_character_does_not_lose_the_batch(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    edition_id, deliveries = sent_edition(runtime, 2)
    bounced = "reader00001@example.com"
    events = [
        event("bounce", bounced, edition_id, deliveries[bounced], type="bounce", status="5.1.1"),
        event("deferred", "reader00002@example.com", None, None, response="451 odd\u0000reply"),
    ]
    response = post(client, key, events)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2 and stored_events(runtime) == 2
    assert suppressed(runtime) == {bounced: "hard bounce"}


def test_policy_blocks_are_soft_whatever_sendgrid_calls_them(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    sent_edition(runtime, 2)
    # Our IP on a blocklist, reported as a bounce: not the reader's address at fault.
    post(
        client,
        key,
        [
            event(
                "bounce", "reader00001@example.com", None, None,
                type="bounce", status="5.7.1", reason="550 5.7.1 IP listed",
            )
        ],
    )  # fmt: skip
    assert suppressed(runtime) == {}
    with runtime.sessions() as session:
        kind = session.scalar(select(Event.bounce_class).where(Event.kind == "bounce"))
    assert kind == "soft"


def test_deferrals_of_messages_delivered_in_the_end_do_not_count(
    runtime: Runtime, client: TestClient, key: Any
) -> None:
    reader = "reader00001@example.com"
    for slug in ("daily", "second", "third"):
        edition_id, deliveries = sent_edition(runtime, 2, slug=slug)
        post(client, key, [event("deferred", reader, edition_id, deliveries[reader])])
        post(client, key, [event("delivered", reader, edition_id, deliveries[reader])])
    assert suppressed(runtime) == {}


def test_sync_skips_a_record_it_cannot_date_and_goes_on(runtime: Runtime) -> None:
    now = int(time.time())
    with suppression_server() as server:
        server.state.add(
            "bounces",
            item("bounces", "millis@example.com", now * 1000),  # milliseconds, not seconds
            item("bounces", "fine@example.com", now - 600),
        )
        report = sync_sendgrid(runtime, client=SendGridSuppressionClient(API_KEY, server.base_url))
    assert report.stored == 1 and len(report.skipped) == 1
    assert set(suppressed(runtime)) == {"fine@example.com"}
