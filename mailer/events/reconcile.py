"""Deliveries whose outcome is ``unknown``: wait for the provider's word, then ask a human.

A timeout or a reset after the request went out, or a worker that died mid-send,
leaves rows ``unknown`` (Invariant 2: never resent blindly). Provider events turn
them ``sent`` as they arrive (``policy``). What is still unknown after a grace
period is listed for an operator, who resends those rows or gives them up,
explicitly, and the choice is recorded on each row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from mailer.db.base import utcnow
from mailer.db.models import Batch, Delivery, DeliveryStatus, Edition, EditionStatus, Event
from mailer.db.session import transaction
from mailer.dispatch import tallies
from mailer.dispatch.tallies import moved
from mailer.editions import states
from mailer.events.policy import Policy, apply_pending
from mailer.runtime import Runtime

log = logging.getLogger(__name__)

# Events from SendGrid's Event Webhook (the sync and bounce mail carry other sources).
WEBHOOK_SOURCE = "sendgrid"

Decision = Literal["resend", "give-up"]


class ReconcileError(RuntimeError):
    """The edition cannot be reconciled as asked."""


@dataclass(frozen=True)
class UnknownDelivery:
    delivery_id: int
    email: str
    since: datetime | None
    error: str | None


@dataclass(frozen=True)
class ReconcileView:
    edition_id: int
    grace: timedelta
    waiting: int  # unknown, still within the grace period
    due: list[UnknownDelivery]  # unknown beyond it: an operator's decision

    def as_dict(self) -> dict[str, Any]:
        return {
            "edition_id": self.edition_id,
            "grace_seconds": int(self.grace.total_seconds()),
            "waiting": self.waiting,
            "due": [
                {
                    "delivery_id": d.delivery_id,
                    "email": d.email,
                    "since": d.since.isoformat() if d.since else None,
                    "error": d.error,
                }
                for d in self.due
            ],
        }


def _unknown(edition_id: int) -> Any:
    return (Delivery.edition_id == edition_id) & (Delivery.status == DeliveryStatus.UNKNOWN)


def review(
    session: Session,
    edition_id: int,
    grace: timedelta,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> ReconcileView:
    if session.get(Edition, edition_id) is None:
        raise ReconcileError(f"no edition with id {edition_id}")
    cutoff = clock() - grace
    old_enough = func.coalesce(Delivery.finished_at, Delivery.claimed_at) <= cutoff
    due = [
        UnknownDelivery(row.id, row.email, row.finished_at or row.claimed_at, row.error)
        for row in session.execute(
            select(
                Delivery.id,
                Delivery.email,
                Delivery.finished_at,
                Delivery.claimed_at,
                Delivery.error,
            )
            .where(_unknown(edition_id), old_enough)
            .order_by(Delivery.id)
        )
    ]
    total = session.scalar(select(func.count(Delivery.id)).where(_unknown(edition_id))) or 0
    return ReconcileView(edition_id, grace, int(total) - len(due), due)


def decide(
    session: Session,
    edition_id: int,
    decision: Decision,
    grace: timedelta,
    *,
    operator: str,
    clock: Callable[[], datetime] = utcnow,
) -> int:
    """Resend or give up every unknown delivery beyond the grace period. The caller commits.

    Resending queues the rows again (the edition goes back to ``sending`` so workers
    take them); giving up fails them with the operator's name in the reason.
    """
    view = review(session, edition_id, grace, clock=clock)
    return _settle(
        session, edition_id, [d.delivery_id for d in view.due], decision, operator, clock()
    )


def _settle(
    session: Session,
    edition_id: int,
    ids: list[int],
    decision: Decision,
    operator: str,
    now: datetime,
) -> int:
    if not ids:
        return 0
    guard = (Delivery.id.in_(ids), Delivery.status == DeliveryStatus.UNKNOWN)
    if decision == "give-up":
        values: dict[str, Any] = {
            "status": DeliveryStatus.FAILED,
            "error": f"given up by {operator} after an unknown outcome",
            "finished_at": now,
        }
    else:
        edition = session.get(Edition, edition_id, with_for_update=True)
        assert edition is not None
        if edition.status == EditionStatus.CANCELLED:
            raise ReconcileError(f"edition {edition_id} is cancelled: nothing is resent")
        values = {
            "status": DeliveryStatus.QUEUED,
            "error": f"resend requested by {operator} after an unknown outcome",
            # batch_id stays: a queued row without one would read as never claimed,
            # and within the range of a batch sent whole, as sent (see the ledger).
            "claimed_at": None,
            "finished_at": None,
            "retry_after": None,
        }
        if edition.status == EditionStatus.SENT:
            reason = f"resending {len(ids)} unknown deliveries ({operator})"
            states.move(edition, EditionStatus.SENDING, reason)
    result = session.execute(update(Delivery).where(*guard).values(**values))
    changed = int(getattr(result, "rowcount", 0) or 0)
    tallies.add(session, edition_id, moved(changed, DeliveryStatus.UNKNOWN, values["status"]))
    return changed


# Who resends when nobody had to decide (recorded on each row it queues again).
AUTOMATIC = "the reconciler (no event within the grace while the webhook delivered others)"


def unanswered(
    session: Session,
    edition_id: int,
    grace: timedelta,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> list[int]:
    """Unknown deliveries that the provider would have told us about had it taken them.

    SendGrid sends a ``processed`` event for every message it accepts, and any event
    about an unknown row settles it as sent (``policy``). A row is unanswered when its
    batch went to SendGrid, the grace has passed, the event webhook delivered events
    received after that batch went out (so it was working), and no event names the row.
    Rows of other transports (no events) and rows sent while the webhook was silent are
    never here: they wait for an operator (DESIGN.md, Invariant 2).
    """
    cutoff = clock() - grace
    # The webhook's latest event, by the newest id (events are stored in the order they
    # arrive): a walk back from the end of the table, not a pass over it.
    last_heard = session.scalar(
        select(Event.received_at)
        .where(Event.source == WEBHOOK_SOURCE)
        .order_by(Event.id.desc())
        .limit(1)
    )
    if last_heard is None:
        return []
    # An event stored but not yet applied: applying it settles the row (it is checked
    # among the few pending events; applied ones have already made their rows sent).
    pending_about_it = (
        select(Event.id)
        .where(text("events.processed_at IS NULL"), Event.delivery_id == Delivery.id)
        .exists()
    )
    return list(
        session.scalars(
            select(Delivery.id)
            .join(Batch, Batch.id == Delivery.batch_id)
            .where(
                _unknown(edition_id),
                func.coalesce(Delivery.finished_at, Delivery.claimed_at) <= cutoff,
                Batch.transport == "sendgrid",
                Batch.finished_at < last_heard,
                ~pending_about_it,
            )
            .order_by(Delivery.id)
        )
    )


def resend_unanswered(
    session: Session,
    edition_id: int,
    grace: timedelta,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> int:
    """Queue the unanswered deliveries again (see ``unanswered``). The caller commits."""
    ids = unanswered(session, edition_id, grace, clock=clock)
    edition = session.get(Edition, edition_id)
    if not ids or edition is None or edition.status == EditionStatus.CANCELLED:
        return 0
    return _settle(session, edition_id, ids, "resend", AUTOMATIC, clock())


def reconcile_due(runtime: Runtime) -> dict[int, int]:
    """The service job: apply pending provider events (which reconcile what they can),
    resend what SendGrid would have told us about (``unanswered``), then report, per
    edition, the unknown deliveries still waiting for an operator."""
    apply_pending(runtime.sessions, Policy.from_settings(runtime.settings))
    grace = timedelta(hours=runtime.settings.reconcile_grace_hours)
    cutoff = utcnow() - grace
    with runtime.sessions() as session:
        due = session.scalars(
            select(Delivery.edition_id)
            .distinct()
            .where(
                Delivery.status == DeliveryStatus.UNKNOWN,
                func.coalesce(Delivery.finished_at, Delivery.claimed_at) <= cutoff,
            )
        ).all()
    for edition_id in due:
        with transaction(runtime.sessions) as session:
            resent = resend_unanswered(session, edition_id, grace)
        if resent:
            log.info(
                "edition.unknown_resent",
                extra={"edition_id": edition_id, "resent": resent, "by": AUTOMATIC},
            )
    with runtime.sessions() as session:
        waiting = {
            edition_id: int(count)
            for edition_id, count in session.execute(
                select(Delivery.edition_id, func.count(Delivery.id))
                .where(
                    Delivery.status == DeliveryStatus.UNKNOWN,
                    func.coalesce(Delivery.finished_at, Delivery.claimed_at) <= cutoff,
                )
                .group_by(Delivery.edition_id)
            )
        }
    for edition_id, count in waiting.items():
        log.warning(
            "edition.unknown_deliveries",
            extra={
                "edition_id": edition_id,
                "unknown": count,
                "hint": f"mailer editions reconcile {edition_id}",
            },
        )
    return waiting
