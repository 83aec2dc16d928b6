"""Local-time delivery: one edition, released to each timezone at its own slot.

The ledger is filled as for any send; then each queued row gets a "not before"
(``deliveries.retry_after``, which claims already honour) at the slot in its
subscriber's timezone, one set-based UPDATE per distinct timezone. Subscribers
without a timezone, or with one that is not a valid IANA name, get the
newsletter's. Workers pick each wave up when it comes due.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from mailer.db.models import Delivery, DeliveryStatus, Newsletter, newsletter_lists
from mailer.dispatch.ledger import DELIVERIES
from mailer.schedule.slots import ScheduleError, local_slot, parse_timezone
from subscribers.models import Subscriber, SubscriberStatus, Subscription, SubscriptionStatus

log = logging.getLogger(__name__)


def audience_zones(session: Session, newsletter: Newsletter) -> tuple[ZoneInfo, ...]:
    """The valid timezones of the newsletter's active subscribers (those set)."""
    names = session.scalars(
        select(Subscriber.timezone)
        .distinct()
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(newsletter_lists, newsletter_lists.c.list_id == Subscription.list_id)
        .where(
            newsletter_lists.c.newsletter_id == newsletter.id,
            Subscription.status == SubscriptionStatus.ACTIVE,
            Subscriber.status == SubscriberStatus.ACTIVE,
            Subscriber.timezone.is_not(None),
        )
    )
    zones = []
    for name in names:
        zone = _zone(name) if name else None
        if zone is not None:
            zones.append(zone)
    return tuple(zones)


def assign(
    session: Session, edition_id: int, day: date, at: time, default: ZoneInfo
) -> dict[str, datetime]:
    """Give every queued delivery of the edition its wave; returns instants by timezone
    name (``""`` for the newsletter's own)."""
    names = session.scalars(
        select(Subscriber.timezone)
        .distinct()
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.QUEUED)
    ).all()
    fallback = local_slot(day, at, default)
    waves: dict[str, datetime] = {}
    invalid: list[str] = []
    for name in names:
        zone = _zone(name) if name else None
        if name and zone is None:
            invalid.append(name)
        instant = local_slot(day, at, zone) if zone is not None else fallback
        whose: ColumnElement[bool] = (
            Subscriber.timezone == name if name else Subscriber.timezone.is_(None)
        )
        session.execute(
            update(DELIVERIES)
            .where(
                DELIVERIES.c.edition_id == edition_id,
                DELIVERIES.c.status == DeliveryStatus.QUEUED,
                DELIVERIES.c.subscriber_id.in_(select(Subscriber.id).where(whose)),
            )
            .values(retry_after=instant)
        )
        waves[name if name and zone is not None else ""] = instant
    if invalid:
        log.warning(
            "waves.invalid_timezones",
            extra={"edition_id": edition_id, "timezones": sorted(invalid)[:20]},
        )
    log.info(
        "edition.waves",
        extra={
            "edition_id": edition_id,
            "waves": {k or "newsletter": v.isoformat() for k, v in sorted(waves.items())},
        },
    )
    return waves


def _zone(name: str) -> ZoneInfo | None:
    try:
        return parse_timezone(name)
    except ScheduleError:
        return None
