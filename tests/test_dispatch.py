"""The ledger's invariants (DESIGN.md 1, 2 and 4), on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import gc
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from mailer.cli import app
from mailer.db.models import (
    Batch,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionStatus,
    MailingList,
    Newsletter,
    Segment,
)
from mailer.db.session import transaction
from mailer.dispatch import dispatcher, ledger
from mailer.dispatch.dispatcher import send_edition
from mailer.events import reconcile
from mailer.events.stats import edition_stats
from mailer.runtime import Runtime
from mailer.transports.base import Envelope, Outcome, Recipient, Result
from mailer.transports.outbox import OutboxTransport
from subscribers.models import (
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from subscribers.unsubscribe import unsubscribe
from tests import factories
from tests.outboxes import BatchApi, Recording


def outbox_recipients(runtime: Runtime, edition_id: int) -> list[str]:
    folder = runtime.settings.outbox_dir / f"edition-{edition_id}"
    found = []
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.append(message["To"].addresses[0].addr_spec)
    return found


def send(
    runtime: Runtime, edition_id: int, transport: object | None = None, **overrides: object
) -> dict[str, int]:
    # Threads: these tests' transports record what they were handed in this process.
    settings = replace(
        runtime.dispatch_settings(),
        sender_process=False,
        **overrides,  # type: ignore[arg-type]
    )
    return send_edition(
        runtime.sessions,
        edition_id,
        transport or OutboxTransport(runtime.settings.outbox_dir),  # type: ignore[arg-type]
        settings,
    )


class Hooked(OutboxTransport):
    """The real outbox, with a hook run after each batch (to act mid-send)."""

    def __init__(self, directory: Path, after_batch: Callable[[int], None]) -> None:
        super().__init__(directory)
        self.after_batch = after_batch
        self.batches = 0

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        results = super().send(envelope, recipients)
        self.batches += 1
        self.after_batch(self.batches)
        return results


def test_send_twice_mails_nobody_twice(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 25)
    edition_id = factories.edition(runtime, newsletter_id)

    transport = Recording(runtime.settings.outbox_dir)
    first = send(runtime, edition_id, transport, batch_size=10)
    second = send(runtime, edition_id, transport, batch_size=10)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert dispatcher.start(session, edition) == 0  # a sent edition is never refilled
    third = send(runtime, edition_id, transport, batch_size=10)

    assert len(transport.handed) == len(set(transport.handed)) == 25
    assert first["sent"] == second["sent"] == third["sent"] == 25
    assert sorted(outbox_recipients(runtime, edition_id)) == sorted(emails)
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.SENT
        batches = session.scalars(select(Delivery.batch_id).distinct()).all()
    assert len(batches) == 3  # 10 + 10 + 5, and the second run claimed nothing


def test_claims_plan_no_parallel_query_and_give_the_pool_its_setting_back(
    runtime: Runtime,
) -> None:
    engine = runtime.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    show = "SHOW max_parallel_workers_per_gather"
    with engine.connect() as connection:
        default = connection.exec_driver_sql(show).scalar()
    assert default != "0"
    with ledger.claiming(engine) as connection:
        with connection.begin():
            assert connection.exec_driver_sql(show).scalar() == "0"
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with engine.connect() as connection:
        # The same pooled session, with the server's setting again.
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
        assert connection.exec_driver_sql(show).scalar() == default


def test_a_send_tunes_the_interpreter_and_gives_its_settings_back(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 5)
    edition_id = factories.edition(runtime, newsletter_id)
    before = gc.get_threshold(), sys.getswitchinterval()
    during: list[tuple[int, tuple[int, int, int], float]] = []

    def look(_batch: int) -> None:
        during.append((gc.get_freeze_count(), gc.get_threshold(), sys.getswitchinterval()))

    tally = send(runtime, edition_id, Hooked(runtime.settings.outbox_dir, look), batch_size=2)

    assert tally["sent"] == 5 and len(during) == 3
    assert all(frozen > 0 and threshold[0] >= 2_000 for frozen, threshold, _ in during)
    assert all(switch < before[1] for _, _, switch in during)
    assert gc.get_freeze_count() == 0
    assert (gc.get_threshold(), sys.getswitchinterval()) == before


def test_ledger_row_is_unique_per_edition_and_subscriber(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 2)
    edition_id = factories.edition(runtime, newsletter_id)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert ledger.fill(session, edition) == 2
        assert ledger.fill(session, edition) == 0  # idempotent
    with pytest.raises(IntegrityError), transaction(runtime.sessions) as session:
        subscriber_id = session.scalars(select(Subscriber.id)).first()
        session.add(Delivery(edition_id=edition_id, subscriber_id=subscriber_id, email="x@y.org"))


def test_suppressed_unsubscribed_and_bounced_get_nothing(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 6)
    suppressed, left, bounced = emails[0], emails[1], emails[2]
    with transaction(runtime.sessions) as session:
        session.add(Suppression(email=suppressed, reason="hard bounce", source="test"))
        by_email = {s.email: s for s in session.scalars(select(Subscriber))}
        unsubscribe(
            session.connection(),
            by_email[left].id,
            left,
            [s.list_id for s in by_email[left].subscriptions],
            source="test",
        )
        by_email[bounced].status = SubscriberStatus.BOUNCED
    edition_id = factories.edition(runtime, newsletter_id)

    tally = send(runtime, edition_id)

    assert tally["sent"] == 3
    assert sorted(outbox_recipients(runtime, edition_id)) == sorted(emails[3:])
    with runtime.sessions() as session:
        ledgered = set(session.scalars(select(Delivery.email)))
    assert ledgered.isdisjoint({suppressed, left, bounced})


def test_who_unsubscribes_mid_send_gets_nothing_more(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 30)
    edition_id = factories.edition(runtime, newsletter_id)
    late_leaver, late_suppressed = emails[24], emails[27]

    def after(batch: int) -> None:
        if batch != 1:
            return
        with transaction(runtime.sessions) as session:
            leaver = session.scalar(select(Subscriber).where(Subscriber.email == late_leaver))
            assert leaver is not None
            unsubscribe(
                session.connection(),
                leaver.id,
                leaver.email,
                [s.list_id for s in leaver.subscriptions],
                source="test",
            )
            session.add(Suppression(email=late_suppressed, reason="complaint", source="test"))

    transport = Hooked(runtime.settings.outbox_dir, after)
    tally = send(runtime, edition_id, transport, batch_size=10)

    assert transport.batches == 3
    assert tally["sent"] == 28
    assert tally["skipped"] == 2
    received = outbox_recipients(runtime, edition_id)
    assert late_leaver not in received and late_suppressed not in received
    assert len(received) == 28


def test_cancel_mid_send_keeps_what_went_out_and_skips_the_rest(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 30)
    edition_id = factories.edition(runtime, newsletter_id)
    skipped_by_cancel: list[int] = []

    def after(batch: int) -> None:
        if batch == 1:
            # Batch 1 is in flight: handed over, its outcome not recorded yet.
            with transaction(runtime.sessions) as session:
                edition = session.get(Edition, edition_id)
                assert edition is not None
                skipped_by_cancel.append(dispatcher.cancel(session, edition))

    transport = Hooked(runtime.settings.outbox_dir, after)
    tally = send(runtime, edition_id, transport, batch_size=10)

    assert skipped_by_cancel == [20]
    assert transport.batches == 1
    assert tally == {**tally, "sent": 10, "skipped": 20, "queued": 0, "sending": 0}
    assert len(set(outbox_recipients(runtime, edition_id))) == 10
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.CANCELLED


def test_pause_then_resume_sends_everyone_once(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 30)
    edition_id = factories.edition(runtime, newsletter_id)

    def after(batch: int) -> None:
        if batch == 1:
            with transaction(runtime.sessions) as session:
                edition = session.get(Edition, edition_id)
                assert edition is not None
                dispatcher.pause(session, edition)

    first = send(runtime, edition_id, Hooked(runtime.settings.outbox_dir, after), batch_size=10)
    assert first == {**first, "sent": 10, "queued": 20, "sending": 0}

    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.PAUSED
        dispatcher.resume(session, edition)
    second = send(runtime, edition_id, batch_size=10)

    assert second == {**second, "sent": 30, "queued": 0, "sending": 0}
    received = outbox_recipients(runtime, edition_id)
    assert len(received) == len(set(received)) == 30


def started(runtime: Runtime, readers: int) -> tuple[int, list[int]]:
    """An edition of ``readers`` recipients, its ledger filled; and its list ids."""
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, readers)
    edition_id = factories.edition(runtime, newsletter_id)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        dispatcher.start(session, edition)
        return edition_id, [mailing_list.id for mailing_list in edition.newsletter.lists]


def claim_from_start(
    runtime: Runtime, edition_id: int, list_ids: list[int], batches: int = 1
) -> ledger.Claim | None:
    """One claim of batches of 10, from the beginning, as a fresh worker makes it."""
    with runtime.engine.connect() as connection, connection.begin():
        assert ledger.lock_edition(connection, edition_id) == EditionStatus.SENDING
        return ledger.claim(connection, edition_id, list_ids, "w", "outbox", 10, batches=batches)


def test_a_dead_workers_batch_that_was_never_posted_goes_back_to_the_queue(
    runtime: Runtime, tmp_path: Path
) -> None:
    edition_id, list_ids = started(runtime, 30)
    # A worker of this process whose run is over: dead to the reaper on both databases.
    worker = f"{socket.gethostname()}:{os.getpid()}:crashed"
    with runtime.engine.connect() as connection, connection.begin():
        assert ledger.lock_edition(connection, edition_id) == EditionStatus.SENDING
        claim = ledger.claim(connection, edition_id, list_ids, worker, "outbox", 10, batches=2)
    assert claim is not None
    posted, waiting = claim.batches
    assert ledger.mark_posted(runtime.engine, [posted.batch_id]) == {
        posted.batch_id
    }  # then it crashed

    with transaction(runtime.sessions) as session:
        assert ledger.reap(session, timedelta(hours=1)) == 10
    with runtime.sessions() as session:
        tally = ledger.counts(session, edition_id)
        batches = {b.id: b for b in session.scalars(select(Batch))}
    # Only what may have reached the wire is unknown; the rest waits in the queue.
    assert (tally["unknown"], tally["queued"], tally["sending"]) == (10, 20, 0)
    assert batches[waiting.batch_id].outcome == "worker stopped before posting: rows queued again"
    # Taken over, the batch may not go any more, however late its worker asks.
    assert ledger.mark_posted(runtime.engine, [waiting.batch_id]) == set()

    outbox = OutboxTransport(tmp_path / "out")
    tally = send_edition(runtime.sessions, edition_id, outbox, runtime.dispatch_settings())
    assert (tally["sent"], tally["unknown"], tally["queued"]) == (20, 10, 0)
    # Each message is written as <delivery id>.eml: the 20 queued again, once each.
    written = {int(re.sub(r"\D", "", p.stem)) for p in outbox.folder_for(edition_id).glob("*.eml")}
    assert len(written) == 20 and set(waiting.delivery_ids) <= written
    assert not written & set(posted.delivery_ids)


def test_claims_skip_open_batches_and_retried_rows_come_back(runtime: Runtime) -> None:
    edition_id, list_ids = started(runtime, 25)

    def claim(batches: int = 1) -> ledger.Claim | None:
        return claim_from_start(runtime, edition_id, list_ids, batches)

    claims = [claim(), claim(), claim(batches=2)]
    held = [b.delivery_ids for c in claims if c for b in c.batches]
    assert [len(ids) for ids in held] == [10, 10, 5]
    assert len({i for ids in held for i in ids}) == 25  # nobody in two batches
    assert claim() is None  # every row is in flight
    with runtime.sessions() as session:
        tally = ledger.counts(session, edition_id)
    assert (tally["sending"], tally["queued"]) == (25, 0)

    first = claims[0]
    assert first is not None
    batch = first.batches[0]
    refused = batch.deliveries[:3]
    with runtime.engine.connect() as connection, connection.begin():
        ledger.record(
            connection,
            batch.batch_id,
            batch.delivery_ids,
            [
                Result(d[0], Outcome.RETRY if d in refused else Outcome.SENT, "m")
                for d in batch.deliveries
            ],
            backoff=False,
        )
    again = claim()
    assert again is not None
    assert again.batches[0].delivery_ids == [d[0] for d in refused]


def test_a_batch_sent_whole_is_recorded_on_its_batch_row_alone(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 25)
    edition_id = factories.edition(runtime, newsletter_id)
    transport = BatchApi(runtime.settings.outbox_dir)

    tally = send(runtime, edition_id, transport, batch_size=10)
    again = send(runtime, edition_id, transport, batch_size=10)

    assert tally == again == {**tally, "sent": 25, "queued": 0, "sending": 0}
    assert len(transport.handed) == len(set(transport.handed)) == 25
    with runtime.sessions() as session:
        # Not one ledger row was written by the send: the batch rows say it all.
        written = session.scalars(
            select(Delivery.id).where(Delivery.status != DeliveryStatus.QUEUED)
        ).all()
        batches = session.execute(
            select(Batch.id, Batch.provider_message_id, Batch.sent_whole).order_by(Batch.id)
        ).all()
        rows = ledger.rows(session, edition_id)
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.SENT
        assert edition_stats(session, edition_id).sent == 25
        assert ledger.recent_rate(session, edition_id) == 25 / 60
    assert written == []
    assert [whole for _, _, whole in batches] == [True, True, True]
    assert {r.status for r in rows} == {DeliveryStatus.SENT}
    assert {r.attempts for r in rows} == {1}
    by_batch = {batch_id: message_id for batch_id, message_id, _ in batches}
    assert all(r.message_id == by_batch[r.batch_id] for r in rows)
    assert sorted(r.email for r in rows) == sorted(emails)


def test_cancel_keeps_batches_sent_whole_sent(runtime: Runtime) -> None:
    edition_id, list_ids = started(runtime, 30)
    claim = claim_from_start(runtime, edition_id, list_ids, batches=2)
    assert claim is not None and all(batch.whole for batch in claim.batches)
    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        envelope = dispatcher.envelope_for(edition)
    transport = BatchApi(runtime.settings.outbox_dir)
    with runtime.engine.connect() as connection, connection.begin():
        for batch in claim.batches:
            ids = batch.delivery_ids
            recipients = [Recipient(i, email, name, "u") for i, _, email, name in batch.deliveries]
            results = transport.send(envelope, recipients)
            ledger.record(connection, batch.batch_id, ids, results, whole=batch.whole)

    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert dispatcher.cancel(session, edition) == 10
    with runtime.sessions() as session:
        tally = ledger.counts(session, edition_id)
        rows = ledger.rows(session, edition_id)
    assert tally == {**tally, "sent": 20, "skipped": 10, "queued": 0, "sending": 0}
    assert {r.id for r in rows if r.status == DeliveryStatus.SENT} == set(transport.handed)


def test_a_resent_unknown_row_inside_a_later_batchs_range_goes_out_again(
    runtime: Runtime,
) -> None:
    edition_id, list_ids = started(runtime, 5)
    with runtime.engine.connect() as connection, connection.begin():
        ledger.lock_edition(connection, edition_id)
        first = ledger.claim(connection, edition_id, list_ids, "w", "outbox", 1)
        assert first is not None
        (lost,) = first.batches[0].delivery_ids
        ledger.record(
            connection,
            first.batches[0].batch_id,
            [lost],
            [Result(lost, Outcome.UNKNOWN, error="timed out")],
        )
    # A fresh worker claims from the start: its range spans the unknown row, which an
    # operator may queue again later, so this batch must not close its range for good.
    rest = claim_from_start(runtime, edition_id, list_ids)
    assert rest is not None and not rest.batches[0].whole
    with runtime.engine.connect() as connection, connection.begin():
        batch = rest.batches[0]
        ids = batch.delivery_ids
        results = [Result(i, Outcome.SENT, "one-id") for i in ids]
        ledger.record(connection, batch.batch_id, ids, results, whole=batch.whole)
    with transaction(runtime.sessions) as session:
        assert reconcile.decide(session, edition_id, "resend", timedelta(0), operator="ed") == 1

    transport = BatchApi(runtime.settings.outbox_dir)
    tally = send(runtime, edition_id, transport, batch_size=10)

    assert transport.handed == [lost]
    assert tally == {**tally, "sent": 5, "unknown": 0, "queued": 0}


class FailsOnSecond(OutboxTransport):
    """The real outbox, until a bug strikes in the middle of the second batch."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.batches = 0

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        self.batches += 1
        if self.batches == 2:
            super().send(envelope, recipients[:5])
            raise RuntimeError("a bug in the transport")
        return super().send(envelope, recipients)


def test_a_failed_hand_over_makes_its_batch_unknown_at_once(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 30)
    edition_id = factories.edition(runtime, newsletter_id)

    with pytest.raises(RuntimeError, match="a bug"):
        send(runtime, edition_id, FailsOnSecond(runtime.settings.outbox_dir), batch_size=10)
    with runtime.sessions() as session:
        tally = ledger.counts(session, edition_id)
        errors = set(
            session.scalars(select(Delivery.error).where(Delivery.status == DeliveryStatus.UNKNOWN))
        )
    # The same process goes on (a long-lived worker): nothing is held open meanwhile.
    assert tally == {**tally, "sent": 10, "unknown": 10, "queued": 10, "sending": 0}
    assert errors == {"hand-over failed: RuntimeError: a bug in the transport"}
    final = send(runtime, edition_id, batch_size=10)
    assert final == {**final, "sent": 20, "unknown": 10, "queued": 0}
    received = outbox_recipients(runtime, edition_id)
    assert len(received) == len(set(received)) == 25


def test_cancel_skips_rows_waiting_inside_an_open_batchs_range(runtime: Runtime) -> None:
    edition_id, list_ids = started(runtime, 25)
    with transaction(runtime.sessions) as session:
        ids = sorted(session.scalars(select(Delivery.id).where(Delivery.edition_id == edition_id)))
        # Two readers wait for a later wave (local-time delivery).
        for delivery in session.scalars(select(Delivery).where(Delivery.id.in_(ids[2:4]))):
            delivery.retry_after = datetime.now(UTC) + timedelta(hours=3)
    claim = claim_from_start(runtime, edition_id, list_ids)
    assert claim is not None
    held = claim.batches[0].delivery_ids
    assert held == ids[:2] + ids[4:12]

    with transaction(runtime.sessions) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        assert dispatcher.cancel(session, edition) == 15  # the waiting two and the rest
    with runtime.sessions() as session:
        statuses = dict(session.execute(select(Delivery.id, Delivery.status)).all())
    assert {statuses[i] for i in held} == {DeliveryStatus.QUEUED}  # still its batch's
    assert statuses[ids[2]] == statuses[ids[3]] == DeliveryStatus.SKIPPED


class Crashing(OutboxTransport):
    """Writes half a batch, then dies the way a killed process would."""

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        super().send(envelope, recipients[: len(recipients) // 2])
        raise KeyboardInterrupt("process killed mid-batch")


def test_crash_mid_batch_loses_nothing_and_resends_nothing_blindly(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 20)
    edition_id = factories.edition(runtime, newsletter_id)

    with pytest.raises(KeyboardInterrupt):
        send(runtime, edition_id, Crashing(runtime.settings.outbox_dir), batch_size=10)
    with runtime.sessions() as session:
        after_crash = ledger.counts(session, edition_id)
    assert after_crash["sending"] == 10 and after_crash["queued"] == 10

    with runtime.sessions() as session:
        # Claimed rows stay queued; the open batch row is what holds them.
        held = session.scalars(select(Batch.delivery_ids).where(Batch.finished_at.is_(None)))
        in_flight = {i for ids in held for i in json.loads(ids)}
    assert len(in_flight) == 10

    # Restarted: the crashed run is gone, so its claim is taken over at once. What it
    # had in flight may have gone out: `unknown`, never mailed again blindly.
    transport = Recording(runtime.settings.outbox_dir)
    final = send(runtime, edition_id, transport, batch_size=10)
    assert final == {**final, "sent": 10, "unknown": 10, "sending": 0, "queued": 0}
    assert in_flight.isdisjoint(transport.handed) and len(transport.handed) == 10
    received = outbox_recipients(runtime, edition_id)
    assert len(received) == len(set(received)) == 15
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.SENT


class Down(OutboxTransport):
    """A transport that cannot reach anything: every recipient is a retry."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.calls = 0

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        self.calls += 1
        return [
            Result(r.delivery_id, Outcome.RETRY, error="connection refused", transport_down=True)
            for r in recipients
        ]


def test_a_transport_that_is_down_stops_the_run_without_burning_attempts(
    runtime: Runtime,
) -> None:
    newsletter_id = factories.newsletter(runtime)
    factories.subscribers(runtime, 30)
    edition_id = factories.edition(runtime, newsletter_id)
    down = Down(runtime.settings.outbox_dir)

    tally = send(runtime, edition_id, down, batch_size=10)

    assert down.calls == 1
    assert tally["queued"] == 30 and tally["failed"] == 0
    with runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None and edition.status == EditionStatus.SENDING
    # However long the outage, nobody fails because of it.
    for _ in range(7):
        factories.backoff_passed(runtime)
        assert send(runtime, edition_id, down, batch_size=10)["failed"] == 0
    with runtime.sessions() as session:
        assert set(session.scalars(select(Delivery.attempts))) == {0}
    resumed = send(runtime, edition_id, batch_size=10)
    assert resumed["sent"] == 20 and resumed["queued"] == 10  # the refused batch backs off
    factories.backoff_passed(runtime)
    assert send(runtime, edition_id, batch_size=10)["sent"] == 30


class Flaky(OutboxTransport):
    """Refuses the first attempt of some recipients, definitively fails others."""

    def __init__(self, directory: Path, retry: set[str], fail: set[str]) -> None:
        super().__init__(directory)
        self.retry, self.fail, self.seen = retry, fail, set[str]()

    def send(self, envelope: Envelope, recipients: Sequence[Recipient]) -> list[Result]:
        results, passing = [], []
        for r in recipients:
            if r.email in self.fail:
                results.append(Result(r.delivery_id, Outcome.FAILED, error="550 no such user"))
            elif r.email in self.retry and r.email not in self.seen:
                self.seen.add(r.email)
                results.append(Result(r.delivery_id, Outcome.RETRY, error="451 try later"))
            else:
                passing.append(r)
        return results + super().send(envelope, passing)


def test_retry_is_requeued_and_failure_is_recorded(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 5)
    edition_id = factories.edition(runtime, newsletter_id)
    transport = Flaky(runtime.settings.outbox_dir, retry={emails[0]}, fail={emails[1]})

    first = send(runtime, edition_id, transport)

    assert first["sent"] == 3 and first["failed"] == 1 and first["queued"] == 1
    with transaction(runtime.sessions) as session:
        waiting = session.scalars(select(Delivery).where(Delivery.email == emails[0])).one()
        assert waiting.retry_after is not None  # not before its backoff has passed
        assert send(runtime, edition_id, transport)["queued"] == 1
        waiting.retry_after = None  # as if the backoff had passed
    tally = send(runtime, edition_id, transport)
    assert tally["sent"] == 4 and tally["failed"] == 1
    with runtime.sessions() as session:
        rows = {d.email: d for d in session.scalars(select(Delivery))}
    assert rows[emails[0]].attempts == 2 and rows[emails[0]].status == DeliveryStatus.SENT
    assert rows[emails[1]].status == DeliveryStatus.FAILED
    assert rows[emails[1]].error == "550 no such user"
    assert sorted(outbox_recipients(runtime, edition_id)) == sorted(set(emails) - {emails[1]})


def test_segment_narrows_the_audience(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime)
    emails = factories.subscribers(runtime, 4)
    with transaction(runtime.sessions) as session:
        for subscriber in session.scalars(select(Subscriber)):
            city = "Valmere" if subscriber.email in emails[:2] else "Arden"
            subscriber.attributes = {"city": city}
        segment = Segment(
            name="valmere",
            rule={"conditions": [{"field": "attributes.city", "op": "eq", "value": "Valmere"}]},
        )
        newsletter = session.get(Newsletter, newsletter_id)
        assert newsletter is not None
        newsletter.segment = segment
    edition_id = factories.edition(runtime, newsletter_id)

    send(runtime, edition_id)

    assert sorted(outbox_recipients(runtime, edition_id)) == sorted(emails[:2])


def test_only_the_newsletters_lists_are_mailed(runtime: Runtime) -> None:
    newsletter_id = factories.newsletter(runtime, lists=("morning",))
    morning = factories.subscribers(runtime, 3, "morning", prefix="am")
    factories.subscribers(runtime, 3, "evening", prefix="pm")
    factories.subscribers(runtime, 1, "evening", prefix="am")  # am00001 is on both lists
    with transaction(runtime.sessions) as session:
        # Someone who left "morning" but is still on "evening" is not mailed.
        sub = session.scalar(
            select(Subscription)
            .join(Subscriber)
            .join(MailingList)
            .where(Subscriber.email == morning[0], MailingList.name == "morning")
        )
        assert sub is not None
        sub.status = SubscriptionStatus.UNSUBSCRIBED
    edition_id = factories.edition(runtime, newsletter_id)

    send(runtime, edition_id)

    assert sorted(outbox_recipients(runtime, edition_id)) == sorted(morning[1:])


def test_throttle_spaces_batches_to_the_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = dispatcher.Throttle(500, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        throttle.wait_for(1000)
    assert slept == [2.0, 2.0, 2.0]  # 1000 per batch at 500/s: one batch every 2 s
    assert dispatcher.Throttle(0, sleep=sleep).wait_for(10**6) is None and len(slept) == 3


def test_status_reports_rate_and_eta(cli_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--subscribers", "40"]).exit_code == 0
    result = runner.invoke(app, ["editions", "status", "1", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["deliveries"]["sent"] == 40
    assert status["rate_per_second"] == round(40 / 60, 1)  # all finished within the minute
    assert status["eta_seconds"] is None  # nothing left
