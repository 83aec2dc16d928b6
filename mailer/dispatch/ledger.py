"""The delivery ledger: one row per (edition, subscriber), and every state change of it.

All SQL for the ledger lives here. Invariants (DESIGN.md):
1. nobody suppressed or unsubscribed is mailed: checked when the ledger is
   filled and again when a batch is claimed;
2. at most once per (edition, subscriber): the row is unique, and a batch is
   committed as ``sending`` before any transport call;
4. every state that matters is a committed row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailer.db.base import UTCDateTime, utcnow
from mailer.db.models import (
    Batch,
    Delivery,
    DeliveryStatus,
    Edition,
    Newsletter,
    newsletter_lists,
)
from mailer.dispatch import liveness
from mailer.transports.base import Outcome, Result
from subscribers.audience import mailable
from subscribers.models import Subscriber
from subscribers.segments import compile_rule

# The tables themselves, for Core statements on the hot path (no ORM bookkeeping).
DELIVERIES = cast(Table, Delivery.__table__)
BATCHES = cast(Table, Batch.__table__)

# Spelled as a literal, not a bound parameter, so that both databases can prove the
# claim index's predicate (status = 'queued') and use it.
QUEUED_LITERALLY = text(f"deliveries.status = '{DeliveryStatus.QUEUED.value}'")

MAX_BATCH = 1000
MAX_ATTEMPTS = 5
FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min… capped at an hour: temporary refusals get room to clear."""
    delay: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(delay, LONGEST_RETRY)


class Claimed(NamedTuple):
    delivery_id: int
    subscriber_id: int
    email: str
    name: str | None


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    batch_id: int
    deliveries: list[Claimed]
    skipped: int
    last_id: int  # where the next claim of this caller starts


def _newsletter_list_ids(newsletter_id: int) -> Any:
    return select(newsletter_lists.c.list_id).where(
        newsletter_lists.c.newsletter_id == newsletter_id
    )


def audience_condition(newsletter: Newsletter) -> ColumnElement[bool]:
    segment = compile_rule(newsletter.segment.rule) if newsletter.segment else true()
    return and_(mailable(_newsletter_list_ids(newsletter.id)), segment)


def fill(session: Session, edition: Edition) -> int:
    """Queue a delivery for everyone in the audience who has none yet; one statement.

    Idempotent: running it again adds only subscribers who joined since.
    Returns the number of rows added.
    """
    now = utcnow()
    source = select(
        literal(edition.id, Integer()),
        Subscriber.id,
        Subscriber.email,
        literal(DeliveryStatus.QUEUED.value, String()),
        literal(0, Integer()),
        literal(now, UTCDateTime()),
    ).where(audience_condition(edition.newsletter))
    columns = ["edition_id", "subscriber_id", "email", "status", "attempts", "queued_at"]
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # The unique (edition, subscriber) index alone makes this idempotent. An anti-join
    # against the ledger would be quadratic on PostgreSQL: its scan of the table being
    # filled reads every page this very statement adds.
    statement = (
        insert_fn(Delivery)
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["edition_id", "subscriber_id"])
    )
    # Counted rather than read from rowcount, which psycopg reports as -1 for
    # a parameterised INSERT … SELECT.
    before = _ledger_size(session, edition.id)
    session.execute(statement)
    if dialect == "postgresql":
        # A freshly filled ledger has no statistics; without them the planner may
        # sort every queued row for each batch it claims.
        session.execute(text("ANALYZE deliveries"))
    return _ledger_size(session, edition.id) - before


def _ledger_size(session: Session, edition_id: int) -> int:
    return int(
        session.scalar(select(func.count(Delivery.id)).where(Delivery.edition_id == edition_id))
        or 0
    )


def ids_among(column: ColumnElement[Any], ids: Sequence[int], dialect: str) -> ColumnElement[bool]:
    """``column IN ids`` with the ids as one parameter, not a thousand.

    A statement with one array (PostgreSQL) or one JSON text (SQLite) parameter is
    compiled once and cached; an expanding IN list is re-rendered for every batch.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(BigInteger)))
    values: Select[Any] = select(literal_column("value", BigInteger)).select_from(
        func.json_each(bindparam(None, orjson.dumps(list(ids)).decode(), type_=String))
    )
    return column.in_(values.scalar_subquery())


def claim(
    connection: Connection,
    edition_id: int,
    list_ids: Sequence[int],
    worker: str,
    transport: str,
    size: int,
    *,
    after_id: int = 0,
) -> ClaimedBatch | None:
    """Take up to ``size`` queued deliveries and mark them ``sending``. The caller commits.

    Rows whose subscriber left, bounced or was suppressed since the ledger was
    filled are marked ``skipped`` instead (Invariant 1).
    """
    size = max(1, min(size, MAX_BATCH))
    now = utcnow()
    dialect = connection.dialect.name
    pick = (
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Subscriber.email,
            Subscriber.name,
            # The audience re-check (Invariant 1), evaluated per picked row: correlated
            # probes of the indexes for these rows, not a pass over every subscription.
            mailable(list_ids, probe=True),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(
            Delivery.edition_id == edition_id,
            QUEUED_LITERALLY,
            # Keyset: start after the caller's last batch. On PostgreSQL the index still
            # holds entries of rows claimed earlier (until vacuum); scanning from the
            # start every time would make a large send quadratic.
            Delivery.id > after_id,
            or_(Delivery.retry_after.is_(None), Delivery.retry_after <= now),
        )
        .order_by(Delivery.id)
        .limit(size)
    )
    if dialect == "postgresql":
        # Workers on any number of machines take disjoint batches without waiting.
        pick = pick.with_for_update(skip_locked=True, of=DELIVERIES)
    rows = connection.execute(pick).all()
    if not rows:
        return None
    last_id = rows[-1][0]
    claimed = [Claimed(r[0], r[1], r[2], r[3]) for r in rows if r[4]]
    skipped = len(rows) - len(claimed)
    if skipped:
        connection.execute(
            update(DELIVERIES)
            # Guarded: a row another worker took meanwhile stays that worker's.
            .where(
                ids_among(DELIVERIES.c.id, [r[0] for r in rows if not r[4]], dialect),
                Delivery.status == DeliveryStatus.QUEUED,
            )
            .values(
                status=DeliveryStatus.SKIPPED,
                error="unsubscribed or suppressed before its batch was claimed",
                finished_at=now,
            )
        )
    if not claimed:
        return ClaimedBatch(0, [], skipped, last_id)
    batch_id = connection.scalar(
        insert(BATCHES)
        .values(
            edition_id=edition_id,
            worker=worker,
            transport=transport,
            size=len(claimed),
            claimed_at=now,
        )
        .returning(BATCHES.c.id)
    )
    assert batch_id is not None
    # The status guard makes a racing claimer (SQLite has no SKIP LOCKED) take nothing
    # twice: only rows this statement moved from queued are ours.
    moved = connection.execute(
        update(DELIVERIES)
        .where(
            ids_among(DELIVERIES.c.id, [c.delivery_id for c in claimed], dialect),
            Delivery.status == DeliveryStatus.QUEUED,
        )
        .values(
            status=DeliveryStatus.SENDING,
            batch_id=batch_id,
            claimed_at=now,
            attempts=Delivery.attempts + 1,
        )
    ).rowcount
    if moved != len(claimed):
        # Lost a race for some rows (rare): keep only those this batch holds.
        taken = set(connection.scalars(select(Delivery.id).where(Delivery.batch_id == batch_id)))
        claimed = [c for c in claimed if c.delivery_id in taken]
        outcome = None if claimed else "empty: taken by another worker"
        connection.execute(
            update(BATCHES)
            .where(BATCHES.c.id == batch_id)
            .values(size=len(claimed), outcome=outcome, finished_at=None if claimed else now)
        )
    return ClaimedBatch(batch_id, claimed, skipped, last_id)


def record(
    connection: Connection, batch_id: int, results: Sequence[Result], *, backoff: bool = True
) -> dict[Outcome, int]:
    """Write what the transport said about each delivery of a batch. The caller commits.

    Only rows still ``sending`` in this batch are touched, so a claim that was
    taken over in the meantime is not overwritten.
    """
    now = utcnow()
    tally = dict.fromkeys(Outcome, 0)
    message_ids = {r.message_id for r in results}
    if results and all(r.outcome is Outcome.SENT for r in results) and len(message_ids) == 1:
        # The usual batch API answer: the whole batch sent under one message id. One
        # statement marks it, instead of one row at a time.
        connection.execute(
            update(DELIVERIES)
            .where(
                Delivery.batch_id == batch_id,
                or_(
                    Delivery.status == DeliveryStatus.SENDING,
                    Delivery.status == DeliveryStatus.UNKNOWN,
                ),
            )
            .values(
                status=DeliveryStatus.SENT,
                message_id=message_ids.pop(),
                error=None,
                finished_at=now,
            )
        )
        tally[Outcome.SENT] = len(results)
        _finish_batch(connection, batch_id, tally, now, message_id=results[0].message_id)
        return tally
    attempts = {
        row.id: row.attempts
        for row in connection.execute(
            select(Delivery.id, Delivery.attempts).where(Delivery.batch_id == batch_id)
        )
    }
    # The transport itself was unavailable (provider down, bad key): not these
    # recipients' fault, so the claim is not counted as an attempt and an outage of
    # any length never turns into failures.
    by_outcome: dict[Outcome, list[dict[str, Any]]] = {o: [] for o in Outcome}
    for result in results:
        if (
            result.outcome is Outcome.RETRY
            and not result.transport_down
            and attempts.get(result.delivery_id, 0) >= MAX_ATTEMPTS
        ):
            result = Result(
                result.delivery_id,
                Outcome.FAILED,
                error=f"gave up after {MAX_ATTEMPTS} attempts: {result.error}",
            )
        values: dict[str, Any] = {"delivery_id": result.delivery_id, "error": result.error}
        if result.outcome is Outcome.SENT:
            values |= {"message_id": result.message_id}
        if result.outcome is Outcome.RETRY:
            tries = attempts.get(result.delivery_id, 1)
            values |= {"retry_after": now + retry_delay(tries) if backoff else None}
            values |= {"attempts": max(tries - 1, 0) if result.transport_down else tries}
        by_outcome[result.outcome].append(values)
        tally[result.outcome] += 1
    fixed: dict[Outcome, dict[str, Any]] = {
        Outcome.SENT: {"status": DeliveryStatus.SENT, "finished_at": now},
        Outcome.FAILED: {"status": DeliveryStatus.FAILED, "finished_at": now},
        Outcome.UNKNOWN: {"status": DeliveryStatus.UNKNOWN, "finished_at": now},
        Outcome.RETRY: {"status": DeliveryStatus.QUEUED, "batch_id": None, "claimed_at": None},
    }
    for outcome, rows in by_outcome.items():
        if rows:
            # One executemany per outcome, by primary key.
            connection.execute(
                update(DELIVERIES).where(
                    Delivery.id == bindparam("delivery_id"),
                    Delivery.batch_id == batch_id,
                    # A claim expired while we worked is `unknown`: what the transport
                    # actually said about it is better than a guess.
                    # (or_, not in_: expanding IN cannot run under executemany)
                    or_(
                        Delivery.status == DeliveryStatus.SENDING,
                        Delivery.status == DeliveryStatus.UNKNOWN,
                    ),
                ),
                [row | fixed[outcome] for row in rows],
            )
    sent_ids = {r.message_id for r in results if r.outcome is Outcome.SENT and r.message_id}
    _finish_batch(
        connection, batch_id, tally, now, message_id=sent_ids.pop() if len(sent_ids) == 1 else None
    )
    return tally


def _finish_batch(
    connection: Connection,
    batch_id: int,
    tally: dict[Outcome, int],
    now: datetime,
    *,
    message_id: str | None = None,
) -> None:
    summary = ", ".join(f"{k.value}={v}" for k, v in tally.items() if v)
    connection.execute(
        update(BATCHES)
        .where(Batch.id == batch_id)
        .values(outcome=summary or "empty", finished_at=now, provider_message_id=message_id)
    )


def reap(session: Session, timeout: timedelta) -> int:
    """Take over the claims of workers that died mid-send. The caller commits.

    A claim is dead when its worker certainly stopped (liveness), or, where
    that cannot be seen, when it is older than ``timeout``. Its rows may have
    gone out, so they become ``unknown`` (never resent blindly); a worker that
    reports late still records what its transport said (see ``record``).
    """
    open_batches = session.execute(
        select(Batch.id, Batch.worker, Batch.claimed_at).where(Batch.finished_at.is_(None))
    ).all()
    if not open_batches:
        return 0
    gone, unseen = liveness.dead(session, (b.worker for b in open_batches))
    cutoff = utcnow() - timeout
    stale = [
        b.id
        for b in open_batches
        if b.worker in gone or (b.worker in unseen and b.claimed_at < cutoff)
    ]
    if not stale:
        return 0
    now = utcnow()
    result = session.execute(
        update(Delivery)
        .where(Delivery.batch_id.in_(stale), Delivery.status == DeliveryStatus.SENDING)
        .values(
            status=DeliveryStatus.UNKNOWN,
            error="its worker stopped before recording an outcome",
            finished_at=now,
        )
    )
    session.execute(
        update(Batch)
        .where(Batch.id.in_(stale))
        .values(outcome="worker stopped: in-flight rows unknown", finished_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def skip_queued(session: Session, edition_id: int, reason: str) -> int:
    result = session.execute(
        update(Delivery)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SKIPPED, error=reason, finished_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def recent_rate(
    session: Session, edition_id: int, window: timedelta = timedelta(minutes=1)
) -> float:
    """Deliveries finished per second over the last ``window``."""
    since = utcnow() - window
    finished = session.scalar(
        select(func.count(Delivery.id)).where(
            Delivery.edition_id == edition_id, Delivery.finished_at >= since
        )
    )
    return float(finished or 0) / window.total_seconds()


def counts(session: Session, edition_id: int) -> dict[str, int]:
    tally = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    for status, number in session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.edition_id == edition_id)
        .group_by(Delivery.status)
    ):
        tally[status] = number
    return tally
