"""What happened to an edition after it was sent: counts, rates and a timeline.

Per-recipient facts (delivered, bounced, opened, clicked) come from the ledger,
where the policy stamps them once per delivery, so a reader who opens ten times
counts once in the rates; totals of opens and clicks come from the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from mailer.bounces.mail import BounceClass
from mailer.db.models import Delivery, DeliveryStatus, Edition, Event
from mailer.dispatch.ledger import sent_whole_count

TIMELINE_KINDS = ("delivered", "open", "click", "bounce", "dropped", "spamreport", "unsubscribe")


class StatsError(LookupError):
    """No such edition."""


@dataclass(frozen=True)
class EditionStats:
    edition_id: int
    subject: str
    status: str
    recipients: int
    sent: int
    delivered: int
    bounced_hard: int
    bounced_soft: int
    dropped: int
    complaints: int
    unsubscribes: int
    unique_opens: int
    opens: int
    unique_clicks: int
    clicks: int
    unknown: int
    # (hour as ISO text, kind, count), oldest first
    timeline: list[tuple[str, str, int]]

    def rates(self) -> dict[str, float | None]:
        """Shares of what was sent (bounces, drops) or delivered (engagement)."""

        def share(part: int, whole: int) -> float | None:
            return round(part / whole, 4) if whole else None

        return {
            "delivered": share(self.delivered, self.sent),
            "bounced_hard": share(self.bounced_hard, self.sent),
            "bounced_soft": share(self.bounced_soft, self.sent),
            "dropped": share(self.dropped, self.sent),
            "complaints": share(self.complaints, self.delivered),
            "unsubscribes": share(self.unsubscribes, self.delivered),
            "opens": share(self.unique_opens, self.delivered),
            "clicks": share(self.unique_clicks, self.delivered),
        }

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "timeline"}
        data["rates"] = self.rates()
        data["timeline"] = [{"hour": h, "kind": k, "count": c} for h, k, c in self.timeline]
        return data


def _count_if(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# The event kinds counted by distinct address: only these are shown.
_BY_ADDRESS = ("dropped", "spamreport", "unsubscribe", "group_unsubscribe")


def edition_stats(session: Session, edition_id: int, *, timeline: bool = True) -> EditionStats:
    """The edition's numbers; ``timeline=False`` leaves out the events per hour (a list of
    editions draws no chart, and the timeline is a scan of every event of each)."""
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise StatsError(f"no edition with id {edition_id}")
    ledger = session.execute(
        select(
            func.count(Delivery.id),
            _count_if(Delivery.status == DeliveryStatus.SENT),
            _count_if(Delivery.delivered_at.is_not(None)),
            _count_if(Delivery.bounce_class == BounceClass.HARD.value),
            _count_if(Delivery.bounce_class == BounceClass.SOFT.value),
            _count_if(Delivery.opened_at.is_not(None)),
            _count_if(Delivery.clicked_at.is_not(None)),
            _count_if(Delivery.status == DeliveryStatus.UNKNOWN),
        ).where(Delivery.edition_id == edition_id)
    ).one()
    by_kind = dict(
        session.execute(
            select(Event.kind, func.count(func.distinct(Event.email)))
            .where(Event.edition_id == edition_id, Event.kind.in_(_BY_ADDRESS))
            .group_by(Event.kind)
        ).all()
    )
    totals = dict(
        session.execute(
            select(Event.kind, func.count(Event.id))
            .where(Event.edition_id == edition_id, Event.kind.in_(("open", "click")))
            .group_by(Event.kind)
        ).all()
    )
    return EditionStats(
        edition_id=edition.id,
        subject=edition.subject,
        status=edition.status,
        recipients=int(ledger[0]),
        # Rows of batches sent whole are sent, as their batch row records.
        sent=int(ledger[1]) + sent_whole_count(session, edition_id),
        delivered=int(ledger[2]),
        bounced_hard=int(ledger[3]),
        bounced_soft=int(ledger[4]),
        dropped=int(by_kind.get("dropped", 0)),
        complaints=int(by_kind.get("spamreport", 0)),
        unsubscribes=int(by_kind.get("unsubscribe", 0) + by_kind.get("group_unsubscribe", 0)),
        unique_opens=int(ledger[5]),
        opens=int(totals.get("open", 0)),
        unique_clicks=int(ledger[6]),
        clicks=int(totals.get("click", 0)),
        unknown=int(ledger[7]),
        timeline=_timeline(session, edition_id) if timeline else [],
    )


def _timeline(session: Session, edition_id: int) -> list[tuple[str, str, int]]:
    if session.get_bind().dialect.name == "postgresql":
        hour: Any = func.date_trunc("hour", Event.occurred_at)
    else:
        hour = func.strftime("%Y-%m-%d %H:00:00", Event.occurred_at)
    rows = session.execute(
        select(hour.label("hour"), Event.kind, func.count(Event.id))
        .where(Event.edition_id == edition_id, Event.kind.in_(TIMELINE_KINDS))
        .group_by(hour, Event.kind)
        .order_by(hour, Event.kind)
    ).all()
    return [(_hour_text(h), kind, int(count)) for h, kind, count in rows]


def _hour_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:00Z")
    return str(value).replace(" ", "T")[:13] + ":00Z"
