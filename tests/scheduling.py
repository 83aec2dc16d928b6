"""Helpers for the scheduler's tests: an injectable clock, a scheduled newsletter, briefings."""

from __future__ import annotations

import email
import email.policy
import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from mailer.briefings.sources import add_source
from mailer.db.models import Delivery, Edition, Newsletter, SourceKind
from mailer.db.session import transaction
from mailer.dispatch import ledger
from mailer.dispatch.dispatcher import send_edition
from mailer.runtime import Runtime
from mailer.schedule.models import Schedule, ScheduleRun
from mailer.transports.outbox import OutboxTransport
from tests import factories

_SERIAL = itertools.count(1)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime) -> None:
        assert now.tzinfo is not None
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def write_briefing(folder: Path, tag: str | None = None, published: datetime | None = None) -> Path:
    """One new briefing file in the newsroom's plain-text style.

    With ``published`` it is Markdown that says when it was published: tests that run
    on a fake clock give their briefings a time on that clock (a plain-text file is
    published when it is pulled, by the real one), since an edition takes only the
    briefings of its own dates.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = next(_SERIAL)
    name = tag or f"item-{n}"
    body = (
        f"The harbour authority approved plan {name} for the north quay.\n"
        f"What's going on now: Work on plan {name} starts next month.\n"
        "What happens next: A public hearing is set for the spring.\n"
    )
    if published is None:
        path = folder / f"{name}.txt"
        path.write_text(body, encoding="utf-8")
    else:
        path = folder / f"{name}.md"
        front = f"---\npublished: {published.isoformat()}\n---\n"
        path.write_text(front + body.replace("\n", "\n\n"), encoding="utf-8")
    return path


def scheduled_newsletter(
    runtime: Runtime,
    folder: Path,
    *,
    slug: str = "daily",
    slot: str = "07:00",
    timezone: str = "UTC",
    weekdays: str = "mon,tue,wed,thu,fri,sat,sun",
    steps: str = "pull,compose,send",
    requires_approval: bool = False,
    approval_deadline_minutes: int = 120,
    local_time_delivery: bool = False,
    since: datetime,
    subscribers: int = 3,
    published: datetime | None = None,
) -> int:
    """A newsletter with subscribers, a folder source holding one briefing (published
    ``since`` unless said otherwise), and a schedule in effect ``since`` then, whose slot
    and timezone are the newsletter's (as ``mailer newsletters create`` makes them)."""
    newsletter_id = factories.newsletter(runtime, slug=slug)
    if subscribers:
        factories.subscribers(runtime, subscribers)
    write_briefing(folder, published=published or since)
    with transaction(runtime.sessions) as session:
        newsletter = session.get(Newsletter, newsletter_id)
        assert newsletter is not None
        newsletter.timezone, newsletter.send_time = timezone, slot[:5]
        add_source(
            session,
            name=f"{slug}-desk",
            kind=SourceKind.FOLDER,
            location=str(folder),
            newsletter_slug=slug,
        )
        session.add(
            Schedule(
                newsletter_id=newsletter_id,
                slot=slot,
                timezone=timezone,
                weekdays=weekdays,
                steps=steps,
                requires_approval=requires_approval,
                approval_deadline_minutes=approval_deadline_minutes,
                local_time_delivery=local_time_delivery,
                effective_from=since,
            )
        )
    return newsletter_id


def runs(runtime: Runtime) -> list[ScheduleRun]:
    with runtime.sessions() as session:
        return list(session.scalars(select(ScheduleRun).order_by(ScheduleRun.slot_date)))


def editions(runtime: Runtime) -> list[Edition]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Edition).order_by(Edition.id)))


def ledger_size(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count(Delivery.id))) or 0)


def drain(runtime: Runtime, edition_id: int) -> dict[str, int]:
    """What a worker does with a sending edition, here and now."""
    return send_edition(
        runtime.sessions,
        edition_id,
        OutboxTransport(runtime.settings.outbox_dir),
        runtime.dispatch_settings(),
    )


def outbox_recipients(outbox: Path, edition_id: int) -> list[str]:
    found = []
    for path in sorted((outbox / f"edition-{edition_id}").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.append(message["To"].addresses[0].addr_spec)
    return sorted(found)


def counts(runtime: Runtime, edition_id: int) -> dict[str, int]:
    with runtime.sessions() as session:
        return ledger.counts(session, edition_id)


def slot_dates(items: Sequence[ScheduleRun]) -> list[date]:
    return [r.slot_date for r in items]
