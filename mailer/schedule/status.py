"""What the scheduler is doing, for operators: ``GET /status`` and ``mailer newsletters show``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.db.models import Edition, EditionStatus, Newsletter, Source
from mailer.dispatch import ledger
from mailer.runtime import Runtime
from mailer.schedule import lease, waves
from mailer.schedule.models import Schedule, ScheduleRun
from mailer.schedule.slots import Rule, ScheduleError, next_slots

if TYPE_CHECKING:
    from mailer.schedule.service import SchedulerService


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_dict(run: ScheduleRun) -> dict[str, Any]:
    return {
        "slot_date": run.slot_date.isoformat(),
        "slot_at": run.slot_at.isoformat(),
        "state": run.state,
        "edition_id": run.edition_id,
        "reason": run.reason,
        "deadline_at": _iso(run.deadline_at),
        "approved_at": _iso(run.approved_at),
        "updated_at": _iso(run.updated_at),
    }


def schedule_dict(
    session: Session, schedule: Schedule, now: datetime, count: int = 3
) -> dict[str, Any]:
    """A schedule as shown to operators, with its next slots (UTC and local)."""
    data: dict[str, Any] = {
        "slot": schedule.slot,
        "timezone": schedule.timezone,
        "weekdays": schedule.weekdays,
        "pull_interval_minutes": schedule.pull_interval_minutes,
        "steps": schedule.steps,
        "requires_approval": schedule.requires_approval,
        "approval_deadline_minutes": schedule.approval_deadline_minutes,
        "local_time_delivery": schedule.local_time_delivery,
        "enabled": schedule.enabled,
        "effective_from": schedule.effective_from.isoformat(),
        "updated_at": schedule.updated_at.isoformat(),
        "next_slots": [],
    }
    if not schedule.enabled:
        return data
    try:
        rule = Rule.parse(schedule.slot, schedule.timezone, schedule.weekdays)
    except ScheduleError as exc:
        data["error"] = str(exc)
        return data
    zones = (
        waves.audience_zones(session, schedule.newsletter) if schedule.local_time_delivery else ()
    )
    after = max(now, schedule.effective_from)
    data["next_slots"] = [
        {
            "date": slot.day.isoformat(),
            "at": slot.at.isoformat(),
            "local": slot.at.astimezone(rule.zone).isoformat(),
        }
        for slot in next_slots(rule, after, count, zones)
    ]
    return data


def report(runtime: Runtime, service: SchedulerService | None, now: datetime) -> dict[str, Any]:
    held = lease.current(runtime.engine)
    lease_live = held is not None and held.expires_at > now
    with runtime.sessions() as session:
        newsletters = []
        for newsletter, schedule in session.execute(
            select(Newsletter, Schedule)
            .outerjoin(Schedule, Schedule.newsletter_id == Newsletter.id)
            .order_by(Newsletter.slug)
        ).all():
            last = session.scalar(
                select(ScheduleRun)
                .where(ScheduleRun.newsletter_id == newsletter.id)
                .order_by(ScheduleRun.slot_date.desc())
                .limit(1)
            )
            newsletters.append(
                {
                    "slug": newsletter.slug,
                    "schedule": schedule_dict(session, schedule, now) if schedule else None,
                    "last_run": run_dict(last) if last is not None else None,
                }
            )
        sources = [
            {
                "name": s.name,
                "kind": s.kind,
                "enabled": s.enabled,
                "last_pulled_at": _iso(s.last_pulled_at),
                "last_outcome": s.last_outcome,
                "last_error": s.last_error,
            }
            for s in session.scalars(select(Source).order_by(Source.name))
        ]
        in_flight = [
            {
                "id": e.id,
                "newsletter": e.newsletter.slug,
                "date": e.edition_date.isoformat(),
                "status": e.status,
                "reason": e.status_reason,
                "send_started_at": _iso(e.send_started_at),
                "deliveries": ledger.counts(session, e.id),
            }
            for e in session.scalars(
                select(Edition)
                .where(Edition.status.in_((EditionStatus.SENDING, EditionStatus.PAUSED)))
                .order_by(Edition.id)
            )
        ]
    return {
        "now": now.isoformat(),
        "scheduler": {
            # This process: leader, standby, or none (it runs no scheduler).
            "role": service.role if service is not None else "none",
            "this_process": service.holder if service is not None else None,
            "last_tick": _iso(service.last_tick) if service is not None else None,
            "leader": held.holder if held is not None and lease_live else None,
            "lease_expires_at": _iso(held.expires_at) if held is not None else None,
        },
        "newsletters": newsletters,
        "sources": sources,
        "editions_in_flight": in_flight,
    }
