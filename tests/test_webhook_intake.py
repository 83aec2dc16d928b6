"""The webhook's intake: batches kept as received, applied behind the answer exactly once
(SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import orjson
import pytest
from sqlalchemy import func, select, text

from mailer.db.models import Event
from mailer.events import intake
from mailer.events.models import WebhookBatch
from mailer.runtime import Runtime


def body(batch: int, size: int = 20, rejects: int = 1) -> bytes:
    items: list[object] = [
        {
            "event": "open",
            "sg_event_id": f"b{batch}-e{n}",
            "email": f"reader{n}@example.org",
            "timestamp": 1_780_000_000 + n,
        }
        for n in range(size)
    ]
    items += [{"event": "teleport", "n": n} for n in range(rejects)]
    return orjson.dumps(items)


def counts(runtime: Runtime) -> tuple[int, int, int]:
    """(events stored from SendGrid, of which rejected items, batches still kept)"""
    with runtime.sessions() as session:
        stored = session.scalar(select(func.count(Event.id)).where(Event.source == "sendgrid"))
        rejected = session.scalar(select(func.count(Event.id)).where(Event.kind == "rejected"))
        kept = session.scalar(select(func.count(WebhookBatch.id)))
    return int(stored or 0), int(rejected or 0), int(kept or 0)


def test_a_kept_batch_is_applied_once_whenever_the_intake_runs(runtime: Runtime) -> None:
    intake.receive(runtime.engine, body(1))
    # Nothing is stored until the intake runs (a process that died after answering).
    assert counts(runtime) == (0, 0, 1)
    report = intake.apply_batches(runtime.engine)
    assert (report.batches, report.stored.stored, report.stored.rejected) == (1, 20, 1)
    assert counts(runtime) == (21, 1, 0)
    # Run again, and replay the same body: no event twice (rejects are per batch).
    assert intake.apply_batches(runtime.engine).batches == 0
    intake.receive(runtime.engine, body(1, rejects=0))
    assert intake.apply_batches(runtime.engine).stored.duplicates == 20
    assert counts(runtime) == (21, 1, 0)


def test_two_appliers_at_once_apply_each_batch_once(runtime: Runtime) -> None:
    batches = 12
    for n in range(batches):
        intake.receive(runtime.engine, body(n))
    reports: list[intake.IntakeReport] = []
    failures: list[BaseException] = []

    def apply() -> None:
        try:
            reports.append(intake.apply_batches(runtime.engine))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert sum(r.batches for r in reports) == batches
    assert counts(runtime) == (batches * 21, batches, 0)


def test_a_batch_that_fails_is_retried_then_left_with_its_error(
    runtime: Runtime, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the failure is a SQLite trigger")
    with runtime.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON events "
                "WHEN NEW.email = 'reader3@example.org' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
        )
    intake.receive(runtime.engine, body(1))
    intake.receive(
        runtime.engine,
        orjson.dumps(
            [
                {
                    "event": "open",
                    "sg_event_id": "ok-1",
                    "email": "x@example.org",
                    "timestamp": 1_780_000_000,
                }
            ]
        ),
    )
    for attempt in range(1, intake.MAX_ATTEMPTS + 1):
        report = intake.apply_batches(runtime.engine)
        # The good batch behind the bad one is applied the first time round.
        assert (report.failed, report.batches) == (1, 1 if attempt == 1 else 0)
    with runtime.sessions() as session:
        left = session.scalars(select(WebhookBatch)).one()
    assert left.attempts == intake.MAX_ATTEMPTS and "poisoned" in (left.last_error or "")
    # Abandoned: later runs leave it alone (an operator decides), and nothing was lost.
    assert intake.apply_batches(runtime.engine).failed == 0
    assert counts(runtime) == (1, 0, 1)
