"""Newsletters and their daily schedules: create, change, look up, approve a held edition.

The scheduler reads schedules from the database at every tick, so a change made here
applies within ``MAILER_SCHEDULER_TICK_SECONDS`` without a restart. Every value is
checked before anything changes, so a refused change leaves the newsletter as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.accounts.models import Role
from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import Conflict, Invalid, NotFound
from mailer.db.base import utcnow
from mailer.db.models import Edition, MailingList, Newsletter
from mailer.db.session import transaction
from mailer.dispatch.dispatcher import DispatchError
from mailer.runtime import Runtime
from mailer.schedule import status
from mailer.schedule.models import DEFAULT_STEPS, RunState, Schedule, ScheduleRun
from mailer.schedule.runner import ApprovalError, approve
from mailer.schedule.slots import (
    ScheduleError,
    format_slot,
    parse_slot,
    parse_steps,
    parse_timezone,
    parse_weekdays,
)
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.segments import SegmentRuleError

__all__ = [
    "approve_held",
    "create_newsletter",
    "get_newsletter",
    "list_newsletters",
    "list_runs",
    "update_newsletter",
]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# Column widths of newsletters.name / from_name and lists.name.
_MAX_NAME = 200
_MAX_LIST_NAME = 100
# Minutes: at least one; at most a week, which keeps values inside a 32-bit column and
# covers a weekend between slots.
_MAX_MINUTES = 7 * 24 * 60
_MAX_RUNS = 1000
# What a newsletter created without schedule options gets (the CLI's long-standing default).
_DEFAULT_SLOT = "07:00"
_DEFAULT_TIMEZONE = "UTC"
# A BCP 47 language tag (RFC 5646) as HTML's lang takes it: "en", "de-CH", "zh-Hant-TW".
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_MAX_LANGUAGE = 35

_T = TypeVar("_T")


def _parsed(field: str, parse: Callable[[str], _T], value: str) -> _T:
    try:
        return parse(value)
    except ScheduleError as exc:
        raise Invalid(str(exc), field=field) from exc


def _address(field: str, value: str) -> str:
    try:
        return normalize_email(value)
    except InvalidAddress as exc:
        raise Invalid(f"{field.replace('_', ' ')}: {exc}", field=field) from exc


def _line(field: str, value: str) -> str:
    """A one-line text (a name shown in a header or a From line): trimmed, printable."""
    cleaned = value.strip()
    if not cleaned:
        raise Invalid(f"{field.replace('_', ' ')} must not be empty", field=field)
    if len(cleaned) > _MAX_NAME:
        raise Invalid(
            f"{field.replace('_', ' ')} is {len(cleaned)} characters; at most {_MAX_NAME}",
            field=field,
        )
    # A line break in a display name would end up in the From header.
    if not cleaned.isprintable():
        raise Invalid(f"{field.replace('_', ' ')} contains control characters", field=field)
    return cleaned


def _language(value: str) -> str:
    """The language a newsletter is written in: the HTML's lang, Content-Language."""
    cleaned = value.strip()
    if len(cleaned) > _MAX_LANGUAGE or not _LANGUAGE.fullmatch(cleaned):
        raise Invalid(
            f"language {value!r}: give a BCP 47 language tag such as en, de or pt-BR",
            field="language",
        )
    return cleaned


def _postal_address(value: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        # CAN-SPAM: every message carries the sender's postal address.
        raise Invalid("postal address must not be empty", field="postal_address")
    return cleaned


def _minutes(field: str, value: int) -> int:
    if not 1 <= value <= _MAX_MINUTES:
        raise Invalid(
            f"{field.replace('_', ' ')} {value}: give minutes from 1 to {_MAX_MINUTES}",
            field=field,
        )
    return value


def _list_names(names: Sequence[str]) -> list[str]:
    cleaned = list(dict.fromkeys(n.strip() for n in names))
    for name in cleaned:
        if not name or len(name) > _MAX_LIST_NAME or not name.isprintable():
            raise Invalid(
                f"list {name!r}: give a name of 1 to {_MAX_LIST_NAME} printable characters",
                field="lists",
            )
    if not cleaned:
        raise Invalid("a newsletter needs at least one list", field="lists")
    return cleaned


def _lists(session: Session, names: Sequence[str]) -> list[MailingList]:
    found = {
        m.name: m for m in session.scalars(select(MailingList).where(MailingList.name.in_(names)))
    }
    return [found.get(name) or MailingList(name=name) for name in names]


def _apply(
    schedule: Schedule,
    now: datetime,
    *,
    slot: str | None,
    timezone: str | None,
    weekdays: str | None,
    pull_interval: int | None,
    steps: str | None,
    approval: bool | None,
    approval_deadline: int | None,
    local_time: bool | None,
    enabled: bool | None,
) -> None:
    """Validate every given value first, then change the schedule (all or nothing)."""
    new_slot = format_slot(_parsed("slot", parse_slot, slot)) if slot is not None else None
    new_zone = _parsed("timezone", parse_timezone, timezone).key if timezone is not None else None
    new_days = _parsed("weekdays", parse_weekdays, weekdays) if weekdays is not None else None
    new_steps = _parsed("steps", parse_steps, steps) if steps is not None else None
    if pull_interval is not None:
        _minutes("pull_interval", pull_interval)
    if approval_deadline is not None:
        _minutes("approval_deadline", approval_deadline)
    timing_changed = False
    for attr, value in (("slot", new_slot), ("timezone", new_zone), ("weekdays", new_days)):
        if value is not None and value != getattr(schedule, attr):
            setattr(schedule, attr, value)
            timing_changed = True
    if enabled is not None and enabled != schedule.enabled:
        schedule.enabled = enabled
        timing_changed = timing_changed or enabled
    if new_steps is not None:
        schedule.steps = new_steps
    if pull_interval is not None:
        schedule.pull_interval_minutes = pull_interval
    if approval is not None:
        schedule.requires_approval = approval
    if approval_deadline is not None:
        schedule.approval_deadline_minutes = approval_deadline
    if local_time is not None:
        schedule.local_time_delivery = local_time
    if timing_changed:
        # A slot that already passed under the new timing is not fired by the edit.
        schedule.effective_from = now
    schedule.updated_at = now
    newsletter = schedule.newsletter
    newsletter.timezone = schedule.timezone
    newsletter.send_time = schedule.slot[:5]


def _new_schedule(newsletter: Newsletter, now: datetime, *, slot: str, timezone: str) -> Schedule:
    """A daily schedule with the defaults, before the caller's options are applied."""
    return Schedule(
        newsletter=newsletter,
        slot=slot,
        timezone=timezone,
        weekdays="mon,tue,wed,thu,fri,sat,sun",
        pull_interval_minutes=15,
        steps=DEFAULT_STEPS,
        requires_approval=False,
        approval_deadline_minutes=120,
        local_time_delivery=False,
        enabled=True,
        effective_from=now,
        created_at=now,
    )


def _describe(session: Session, newsletter: Newsletter) -> dict[str, Any]:
    schedule = session.get(Schedule, newsletter.id)
    runs = session.scalars(
        select(ScheduleRun)
        .where(ScheduleRun.newsletter_id == newsletter.id)
        .order_by(ScheduleRun.slot_date.desc())
        .limit(10)
    ).all()
    return {
        "slug": newsletter.slug,
        "name": newsletter.name,
        "from": f"{newsletter.from_name} <{newsletter.from_email}>",
        "reply_to": newsletter.reply_to,
        "language": newsletter.language,
        "lists": sorted(m.name for m in newsletter.lists),
        "schedule": status.schedule_dict(session, schedule, utcnow()) if schedule else None,
        "runs": [status.run_dict(r) for r in runs],
    }


def _snapshot(newsletter: Newsletter, schedule: Schedule | None) -> dict[str, Any]:
    """What an operator can change, as the audit log keeps it."""
    data: dict[str, Any] = {
        "name": newsletter.name,
        "from_name": newsletter.from_name,
        "from_email": newsletter.from_email,
        "reply_to": newsletter.reply_to,
        "postal_address": newsletter.postal_address,
        "audience_note": newsletter.audience_note,
        "language": newsletter.language,
        "lists": sorted(m.name for m in newsletter.lists),
    }
    if schedule is not None:
        data |= {
            "slot": schedule.slot,
            "timezone": schedule.timezone,
            "weekdays": schedule.weekdays,
            "steps": schedule.steps,
            "pull_interval_minutes": schedule.pull_interval_minutes,
            "requires_approval": schedule.requires_approval,
            "approval_deadline_minutes": schedule.approval_deadline_minutes,
            "local_time_delivery": schedule.local_time_delivery,
            "enabled": schedule.enabled,
        }
    return data


def _load(session: Session, slug: str, *, lock: bool = False) -> Newsletter:
    query = select(Newsletter).where(Newsletter.slug == slug)
    if lock:
        query = query.with_for_update()
    newsletter = session.scalar(query)
    if newsletter is None:
        raise NotFound(f"no newsletter {slug!r} (see `mailer newsletters list`)")
    return newsletter


def create_newsletter(
    runtime: Runtime,
    actor: Actor,
    slug: str,
    *,
    name: str,
    from_name: str,
    from_email: str,
    postal_address: str,
    reply_to: str | None = None,
    audience_note: str = "",
    language: str = "en",
    lists: Sequence[str] = (),
    slot: str | None = None,
    timezone: str | None = None,
    weekdays: str | None = None,
    pull_interval: int | None = None,
    steps: str | None = None,
    approval: bool | None = None,
    approval_deadline: int | None = None,
    local_time: bool | None = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    """A newsletter and its daily schedule (07:00 UTC, every day, unless told otherwise).

    Without ``lists`` it gets one list named after its slug. Returns what
    ``get_newsletter`` returns.
    """
    actor.require(Role.ADMIN)
    if not _SLUG.match(slug):
        raise Invalid(
            f"slug {slug!r}: use lower-case letters, digits and '-' (at most 64)", field="slug"
        )
    values = {
        "name": _line("name", name),
        "from_name": _line("from_name", from_name),
        "from_email": _address("from_email", from_email),
        "reply_to": _address("reply_to", reply_to) if reply_to else None,
        "postal_address": _postal_address(postal_address),
        "audience_note": audience_note.strip(),
        "language": _language(language),
    }
    list_names = _list_names(lists or [slug])
    now = utcnow()
    try:
        with transaction(runtime.sessions) as session:
            if session.scalar(select(Newsletter.id).where(Newsletter.slug == slug)):
                raise Conflict(
                    f"newsletter {slug!r} exists: change it with `mailer newsletters update`"
                )
            newsletter = Newsletter(slug=slug, lists=_lists(session, list_names), **values)
            session.add(newsletter)
            session.flush()
            schedule = _new_schedule(
                newsletter, now, slot=_DEFAULT_SLOT, timezone=_DEFAULT_TIMEZONE
            )
            _apply(
                schedule,
                now,
                slot=slot,
                timezone=timezone,
                weekdays=weekdays,
                pull_interval=pull_interval,
                steps=steps,
                approval=approval,
                approval_deadline=approval_deadline,
                local_time=local_time,
                enabled=enabled,
            )
            session.add(schedule)
            session.flush()
            audit.record(
                session,
                actor,
                "newsletter.create",
                "newsletter",
                newsletter.id,
                after={"slug": slug, **_snapshot(newsletter, schedule)},
            )
            return _describe(session, newsletter)
    except IntegrityError as exc:
        # Another operator created the same slug (or list) between our check and insert.
        raise Conflict(f"newsletter {slug!r} was created at the same time; try again") from exc


def update_newsletter(
    runtime: Runtime,
    actor: Actor,
    slug: str,
    *,
    name: str | None = None,
    from_name: str | None = None,
    from_email: str | None = None,
    reply_to: str | None = None,
    postal_address: str | None = None,
    audience_note: str | None = None,
    language: str | None = None,
    lists: Sequence[str] | None = None,
    slot: str | None = None,
    timezone: str | None = None,
    weekdays: str | None = None,
    pull_interval: int | None = None,
    steps: str | None = None,
    approval: bool | None = None,
    approval_deadline: int | None = None,
    local_time: bool | None = None,
    enabled: bool | None = None,
) -> dict[str, Any]:
    """Change what is given (``None`` leaves it); the running service applies it at its next
    tick. ``reply_to=""`` removes the Reply-To address; ``lists`` replaces the lists.

    A newsletter without a schedule gets one (from its timezone and send time).
    """
    actor.require(Role.ADMIN)
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = _line("name", name)
    if from_name is not None:
        values["from_name"] = _line("from_name", from_name)
    if from_email is not None:
        values["from_email"] = _address("from_email", from_email)
    if reply_to is not None:
        values["reply_to"] = _address("reply_to", reply_to) if reply_to.strip() else None
    if postal_address is not None:
        values["postal_address"] = _postal_address(postal_address)
    if audience_note is not None:
        values["audience_note"] = audience_note.strip()
    if language is not None:
        values["language"] = _language(language)
    list_names = _list_names(lists) if lists is not None else None
    now = utcnow()
    with transaction(runtime.sessions) as session:
        newsletter = _load(session, slug, lock=True)
        schedule = session.get(Schedule, newsletter.id, with_for_update=True)
        before = _snapshot(newsletter, schedule)
        for attr, value in values.items():
            setattr(newsletter, attr, value)
        if list_names is not None:
            newsletter.lists = _lists(session, list_names)
        if schedule is None:
            schedule = _new_schedule(
                newsletter, now, slot=newsletter.send_time, timezone=newsletter.timezone
            )
            # Columns written before schedules existed: refuse rather than store a bad rule.
            _parsed("slot", parse_slot, schedule.slot)
            _parsed("timezone", parse_timezone, schedule.timezone)
            session.add(schedule)
        _apply(
            schedule,
            now,
            slot=slot,
            timezone=timezone,
            weekdays=weekdays,
            pull_interval=pull_interval,
            steps=steps,
            approval=approval,
            approval_deadline=approval_deadline,
            local_time=local_time,
            enabled=enabled,
        )
        session.flush()
        after = _snapshot(newsletter, schedule)
        changed = [k for k in after if before.get(k) != after[k]]
        if changed:
            audit.record(
                session,
                actor,
                "newsletter.update",
                "newsletter",
                newsletter.id,
                before={k: before.get(k) for k in changed},
                after={k: after[k] for k in changed},
            )
        return _describe(session, newsletter)


def get_newsletter(runtime: Runtime, actor: Actor, slug: str) -> dict[str, Any]:
    """A newsletter with its schedule, next slots (local and UTC) and its last ten runs:
    ``slug``, ``name``, ``from``, ``reply_to``, ``lists``, ``schedule`` (or None), ``runs``."""
    actor.require(Role.EDITOR)
    with runtime.sessions() as session:
        return _describe(session, _load(session, slug))


def list_newsletters(runtime: Runtime, actor: Actor) -> list[dict[str, Any]]:
    """Every newsletter by slug: ``id``, ``slug``, ``name``, ``timezone``, ``schedule`` (with
    its next slot; None for a newsletter without one)."""
    actor.require(Role.EDITOR)
    now = utcnow()
    with runtime.sessions() as session:
        rows = session.execute(
            select(Newsletter, Schedule)
            .outerjoin(Schedule, Schedule.newsletter_id == Newsletter.id)
            .order_by(Newsletter.slug)
        ).all()
        return [
            {
                "id": newsletter.id,
                "slug": newsletter.slug,
                "name": newsletter.name,
                "timezone": newsletter.timezone,
                "schedule": status.schedule_dict(session, schedule, now, 1) if schedule else None,
            }
            for newsletter, schedule in rows
        ]


def list_runs(runtime: Runtime, actor: Actor, slug: str, limit: int = 30) -> list[dict[str, Any]]:
    """What became of each slot, newest first: sent, held, missed, skipped or failed, and why."""
    actor.require(Role.EDITOR)
    if limit < 1:
        raise Invalid("limit must be at least 1", field="limit")
    with runtime.sessions() as session:
        newsletter = _load(session, slug)
        return [
            status.run_dict(r)
            for r in session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.newsletter_id == newsletter.id)
                .order_by(ScheduleRun.slot_date.desc())
                .limit(min(limit, _MAX_RUNS))
            )
        ]


def approve_held(
    runtime: Runtime, actor: Actor, slug: str, day: date | None = None
) -> dict[str, Any]:
    """Approve the edition held at a slot (the newest held one, or ``day``'s): it is handed
    to the workers at once. Returns the run as ``list_runs`` shows it."""
    actor.require(Role.EDITOR)
    now = utcnow()
    try:
        with transaction(runtime.sessions) as session:
            newsletter = _load(session, slug)
            query = select(ScheduleRun).where(ScheduleRun.newsletter_id == newsletter.id)
            if day is not None:
                query = query.where(ScheduleRun.slot_date == day)
            else:
                query = query.where(ScheduleRun.state == RunState.HELD)
            # The run row is the scheduler's key too: holding it keeps the deadline's
            # cancellation and this approval from both happening.
            run = session.scalar(
                query.order_by(ScheduleRun.slot_date.desc()).limit(1).with_for_update()
            )
            if run is None:
                if day is not None:
                    raise NotFound(f"no run of {slug!r} on {day.isoformat()}")
                raise NotFound(f"no edition of {slug!r} is held for approval")
            approve(session, run, now)
            edition = session.get(Edition, run.edition_id) if run.edition_id else None
            if edition is not None:
                edition.approved_by, edition.approved_at = actor.label, now
            data = status.run_dict(run)
            audit.record(
                session,
                actor,
                "newsletter.approve",
                "edition",
                run.edition_id,
                before={"state": RunState.HELD.value},
                after={"state": run.state, "reason": run.reason},
                note=f"{slug} {run.slot_date.isoformat()}",
            )
            return data
    except (ApprovalError, DispatchError, SegmentRuleError, ScheduleError) as exc:
        raise Conflict(str(exc)) from exc
