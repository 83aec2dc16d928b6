"""What happened to an edition after it was sent: counts, rates and a timeline.

Per-recipient facts (delivered, bounced, opened, clicked) come from the ledger,
where the policy stamps them once per delivery, so a reader who opens ten times
counts once in the rates; totals of opens and clicks come from the events. Both are
read from what is kept as they change (``mailer.dispatch.tallies``,
``mailer.events.tallies``), never by counting the ledger or the events themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.db.models import DeliveryStatus, Edition, Event
from mailer.dispatch import tallies
from mailer.dispatch.ledger import SENT_WHOLE
from mailer.events import tallies as event_tallies

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


# The event kinds counted by distinct address: only these are shown.
_BY_ADDRESS = ("dropped", "spamreport", "unsubscribe", "group_unsubscribe")


_LEDGER_COLUMNS = (*map(str, tallies.STORED), *tallies.STAMPS)
_LEDGER = select(tallies.kept(_LEDGER_COLUMNS), SENT_WHOLE)


def edition_stats(session: Session, edition_id: int, *, timeline: bool = True) -> EditionStats:
    """The edition's numbers; ``timeline=False`` leaves out the events per hour (a list of
    editions draws no chart, and the timeline is a scan of every event of each)."""
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise StatsError(f"no edition with id {edition_id}")
    # The ledger's kept counts (by status, and of what the policy stamped on its rows)
    # and the batch rows sent whole, in one statement: one snapshot.
    *kept, sent_whole = session.execute(_LEDGER, {"edition_id": edition_id}).one()
    ledger = dict(zip(_LEDGER_COLUMNS, map(int, kept), strict=True))
    by_kind = dict(
        session.execute(
            select(Event.kind, func.count(func.distinct(Event.email)))
            .where(Event.edition_id == edition_id, Event.kind.in_(_BY_ADDRESS))
            .group_by(Event.kind)
        ).all()
    )
    totals = event_tallies.totals(session, edition_id, ("open", "click"))
    return EditionStats(
        edition_id=edition.id,
        subject=edition.subject,
        status=edition.status,
        recipients=sum(ledger[str(status)] for status in tallies.STORED),
        # Rows of batches sent whole are sent, as their batch row records.
        sent=ledger[DeliveryStatus.SENT] + int(sent_whole),
        delivered=ledger["delivered"],
        bounced_hard=ledger["bounced_hard"],
        bounced_soft=ledger["bounced_soft"],
        dropped=int(by_kind.get("dropped", 0)),
        complaints=int(by_kind.get("spamreport", 0)),
        unsubscribes=int(by_kind.get("unsubscribe", 0) + by_kind.get("group_unsubscribe", 0)),
        unique_opens=ledger["opened"],
        opens=totals.get("open", 0),
        unique_clicks=ledger["clicked"],
        clicks=totals.get("click", 0),
        unknown=ledger[DeliveryStatus.UNKNOWN],
        timeline=_timeline(session, edition_id) if timeline else [],
    )


def _timeline(session: Session, edition_id: int) -> list[tuple[str, str, int]]:
    return [
        (hour.strftime("%Y-%m-%dT%H:00Z"), kind, number)
        for hour, kind, number in event_tallies.by_hour(session, edition_id, TIMELINE_KINDS)
    ]
