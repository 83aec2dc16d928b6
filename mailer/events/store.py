"""Recording provider feedback: each event once, tied to its ledger row when it can be.

Storing is the webhook's whole synchronous job (answer SendGrid fast); the bounce
policy runs afterwards over the events still marked pending (``policy.py``).

An event finds its delivery by, in order: the ``delivery_id`` custom arg the
dispatch put on the send (trusted only if that row was for the same address);
the batch's ``X-Message-Id`` (the prefix of ``sg_message_id``) and the address;
the ``edition_id`` custom arg and the address. Events that match nothing are kept
with no delivery: the suppression policy works by address anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, insert, or_, select, tuple_

from mailer.bounces.reasons import Verdict, blocked_verdict, classify
from mailer.db.base import utcnow
from mailer.db.dialect import conflict_insert
from mailer.db.models import Batch, Event
from mailer.dispatch.ledger import DELIVERIES, ids_among, never_claimed
from mailer.events import tallies
from mailer.events.sendgrid_events import ProviderEvent, Rejected, message_id_prefix
from subscribers.models import Subscriber

EVENTS = cast(Table, Event.__table__)
# Where provider feedback comes from; other events (a reader's own unsubscribe, an
# operator lifting a suppression) are our records and are kept.
PROVIDER_SOURCES = ("sendgrid", "sendgrid-sync", "dsn")

# SendGrid's soft signals: the receiving server refused for now, or for a reason
# that is not the address itself (a block of our IP, a full mailbox).
SOFT_KINDS = frozenset({"deferred"})


@dataclass
class StoreReport:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    unmatched: int = 0
    rejected: int = 0
    rejected_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "unmatched": self.unmatched,
            "rejected": self.rejected,
            "rejected_reasons": self.rejected_reasons[:20],
        }


@dataclass(frozen=True, slots=True)
class _Match:
    delivery_id: int
    edition_id: int


def bounce_verdict(event: ProviderEvent) -> Verdict | None:
    """Why a SendGrid bounce or deferral failed, and how hard; None for other events."""
    if event.kind == "bounce":
        if event.bounce_type == "blocked":
            # SendGrid's blocks are refusals of our IP or content, never a gone address.
            return blocked_verdict(event.status, event.reason or "")
        return classify(event.status, event.reason or "")
    if event.kind in SOFT_KINDS:
        return classify(event.status, event.reason or "", temporary=True)
    return None


def store_sendgrid(
    connection: Connection,
    events: Sequence[ProviderEvent],
    rejected: Sequence[Rejected] = (),
    *,
    source: str = "sendgrid",
) -> StoreReport:
    """Insert the events not seen before, pending for the policy. The caller commits."""
    report = StoreReport(received=len(events) + len(rejected), rejected=len(rejected))
    matches = _match(connection, events)
    now = utcnow()
    rows = []
    for event in events:
        match = matches.get(event.event_id)
        if match is None:
            report.unmatched += 1
        verdict = bounce_verdict(event)
        rows.append(
            {
                "source": source,
                "external_id": event.event_id,
                "kind": event.kind,
                "email": event.email,
                "edition_id": match.edition_id if match else None,
                "delivery_id": match.delivery_id if match else None,
                "bounce_class": verdict.kind.value if verdict else None,
                "bounce_reason": verdict.reason.value if verdict else None,
                "detail": event.reason,
                "payload": event.raw,
                "occurred_at": datetime.fromtimestamp(event.occurred_at, UTC),
                "received_at": now,
                "processed_at": None,
            }
        )
    report.stored = insert_new(connection, rows)
    report.duplicates = len(rows) - report.stored
    if rejected:
        # Kept for the operator, never retried by SendGrid (the batch is answered 2xx).
        connection.execute(
            insert(EVENTS),
            [
                {
                    "source": source,
                    "external_id": None,
                    "kind": "rejected",
                    "email": _text_field(item.raw, "email")[:320],
                    "edition_id": None,
                    "delivery_id": None,
                    "bounce_class": None,
                    "detail": item.reason[:1000],
                    "payload": item.raw if isinstance(item.raw, dict) else {"item": item.raw},
                    "occurred_at": now,
                    "received_at": now,
                    "processed_at": now,
                }
                for item in rejected
            ],
        )
        report.rejected_reasons = [item.reason for item in rejected]
    return report


def insert_new(connection: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert event rows, skipping external ids already stored; return how many were new."""
    if not rows:
        return 0
    insert_fn = conflict_insert(connection.dialect.name)
    statement = (
        insert_fn(EVENTS)
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(EVENTS.c.edition_id, EVENTS.c.kind, EVENTS.c.occurred_at)
    )
    # Batched into multi-row INSERTs ("insertmanyvalues"), with RETURNING per row.
    stored = [(edition, kind, at) for edition, kind, at in connection.execute(statement, rows)]
    tallies.add(connection, stored)
    return len(stored)


def _match(connection: Connection, events: Sequence[ProviderEvent]) -> dict[str, _Match]:
    dialect = connection.dialect.name
    found: dict[str, _Match] = {}
    # 1. The delivery id the dispatch put in custom_args, if it names this address.
    by_id = {e.delivery_id for e in events if e.delivery_id is not None}
    if by_id:
        rows = connection.execute(
            select(DELIVERIES.c.id, DELIVERIES.c.edition_id, DELIVERIES.c.email).where(
                ids_among(DELIVERIES.c.id, sorted(by_id), dialect)
            )
        ).all()
        ledger = {row.id: row for row in rows}
        for event in events:
            row = ledger.get(event.delivery_id) if event.delivery_id is not None else None
            if row is not None and row.email == event.email:
                found[event.event_id] = _Match(row.id, row.edition_id)
    rest = [e for e in events if e.event_id not in found]
    # 2. The batch's X-Message-Id and the address.
    prefixes = {message_id_prefix(e.message_id) for e in rest if e.message_id}
    if prefixes:
        rows = connection.execute(
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.edition_id,
                DELIVERIES.c.email,
                Batch.provider_message_id,
            )
            # A batch's rows lie in its id range and carry its message id, or it was
            # sent whole and they are the never-claimed queued rows of that range.
            .join(
                Batch,
                and_(
                    DELIVERIES.c.edition_id == Batch.edition_id,
                    DELIVERIES.c.id.between(Batch.first_id, Batch.last_id),
                    or_(
                        DELIVERIES.c.message_id == Batch.provider_message_id,
                        and_(Batch.sent_whole, never_claimed()),
                    ),
                ),
            )
            .where(
                Batch.provider_message_id.in_(sorted(prefixes)),
                DELIVERIES.c.email.in_(sorted({e.email for e in rest})),
            )
        ).all()
        by_message = {(row.provider_message_id, row.email): row for row in rows}
        for event in rest:
            if event.message_id:
                row = by_message.get((message_id_prefix(event.message_id), event.email))
                if row is not None:
                    found[event.event_id] = _Match(row.id, row.edition_id)
        rest = [e for e in rest if e.event_id not in found]
    # 3. The edition id and the address.
    pairs = {(e.edition_id, e.email) for e in rest if e.edition_id is not None}
    if pairs:
        by_pair = {
            (row.edition_id, row.email): row for row in _by_edition_and_address(connection, pairs)
        }
        for event in rest:
            row = by_pair.get((event.edition_id, event.email))
            if row is not None:
                found[event.event_id] = _Match(row.id, row.edition_id)
    return found


def _by_edition_and_address(
    connection: Connection, pairs: Iterable[tuple[int | None, str]]
) -> list[Any]:
    pairs = sorted(pairs, key=lambda p: (p[0] or 0, p[1]))
    return list(
        connection.execute(
            select(DELIVERIES.c.id, DELIVERIES.c.edition_id, Subscriber.email).join(
                Subscriber,
                and_(
                    Subscriber.id == DELIVERIES.c.subscriber_id,
                    tuple_(DELIVERIES.c.edition_id, Subscriber.email).in_(pairs),
                ),
            )
        ).all()
    )


def _text_field(raw: Any, name: str) -> str:
    value = raw.get(name) if isinstance(raw, dict) else None
    return value.strip().lower() if isinstance(value, str) else ""
