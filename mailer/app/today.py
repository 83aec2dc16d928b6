"""What an editor sees first: each newsletter's next slot and draft, editions in flight with
their progress, and the last sends with their headline numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.accounts.models import Role
from mailer.app import editions, newsletters
from mailer.app.actors import Actor
from mailer.db.base import utcnow
from mailer.db.models import EditionStatus
from mailer.runtime import Runtime

# Editions an editor may still be working on.
_DRAFTING = (EditionStatus.DRAFT, EditionStatus.READY, EditionStatus.SKIPPED)
LAST_SENDS = 5


@dataclass(frozen=True)
class NextSlot:
    local: str  # "Wed 02 Dec 06:30", in the newsletter's zone
    utc: str


@dataclass(frozen=True)
class NewsletterToday:
    slug: str
    name: str
    timezone: str
    local_date: date
    next_slot: NextSlot | None
    approval: bool
    schedule_off: bool
    draft: editions.EditionDetail | None


@dataclass(frozen=True)
class InFlight:
    edition: editions.EditionSummary
    progress: editions.Progress


@dataclass(frozen=True)
class LastSend:
    edition_id: int
    newsletter_name: str
    subject: str
    sent_at: datetime | None
    sent: int
    delivered: int
    opens: int
    clicks: int
    bounced: int
    unsubscribes: int


@dataclass(frozen=True)
class Today:
    newsletters: tuple[NewsletterToday, ...]
    in_flight: tuple[InFlight, ...]
    last_sends: tuple[LastSend, ...]


def _slot(schedule: dict[str, Any] | None) -> NextSlot | None:
    if not schedule or not schedule.get("next_slots"):
        return None
    first = schedule["next_slots"][0]
    local = datetime.fromisoformat(first["local"])
    at = datetime.fromisoformat(first["at"])
    return NextSlot(local.strftime("%a %d %b %H:%M"), at.strftime("%a %d %b %H:%M"))


def today(runtime: Runtime, actor: Actor) -> Today:
    actor.require(Role.EDITOR)
    now = utcnow()
    drafting = editions.list_editions(
        runtime, actor, statuses=_DRAFTING, limit=100, with_counts=False
    )
    rows = []
    for item in newsletters.list_newsletters(runtime, actor):
        schedule = item.get("schedule")
        zone = (schedule or {}).get("timezone") or item.get("timezone") or "UTC"
        local_date = now.astimezone(ZoneInfo(zone)).date()
        # The newest draft of this newsletter that is not behind us.
        draft = next(
            (
                e
                for e in drafting
                if e.newsletter_slug == item["slug"] and e.edition_date >= local_date
            ),
            None,
        )
        rows.append(
            NewsletterToday(
                slug=item["slug"],
                name=item["name"],
                timezone=zone,
                local_date=local_date,
                next_slot=_slot(schedule),
                approval=bool((schedule or {}).get("requires_approval")),
                schedule_off=schedule is not None and not schedule.get("enabled", True),
                draft=editions.get_edition(runtime, actor, draft.id) if draft else None,
            )
        )
    flying = editions.list_editions(
        runtime,
        actor,
        statuses=(EditionStatus.SENDING, EditionStatus.PAUSED),
        limit=20,
        with_counts=False,
    )
    in_flight = tuple(InFlight(e, editions.progress(runtime, actor, e.id)) for e in flying)
    last = []
    for sent in editions.list_editions(
        runtime, actor, statuses=(EditionStatus.SENT,), limit=LAST_SENDS, with_counts=False
    ):
        numbers = editions.stats(runtime, actor, sent.id, timeline=False)
        last.append(
            LastSend(
                edition_id=sent.id,
                newsletter_name=sent.newsletter_name,
                subject=sent.subject,
                sent_at=sent.sent_at,
                sent=numbers.sent,
                delivered=numbers.delivered,
                opens=numbers.unique_opens,
                clicks=numbers.unique_clicks,
                bounced=numbers.bounced_hard + numbers.bounced_soft,
                unsubscribes=numbers.unsubscribes,
            )
        )
    return Today(tuple(rows), in_flight, tuple(last))
