"""``mailer newsletters``: newsletters and their daily schedules, editable while the service runs.

The scheduler reads schedules from the database at every tick, so a change here
applies within ``MAILER_SCHEDULER_TICK_SECONDS`` without a restart.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json
from mailer.db.base import utcnow
from mailer.db.models import MailingList, Newsletter
from mailer.db.session import transaction
from mailer.dispatch.dispatcher import DispatchError
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

app = typer.Typer(help="Newsletters and their daily schedules.", no_args_is_help=True)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

SlotOption = typer.Option(None, "--slot", help="Daily slot, HH:MM in the newsletter's timezone.")
TimezoneOption = typer.Option(None, "--timezone", help="IANA timezone, e.g. Europe/Paris.")
WeekdaysOption = typer.Option(
    None, "--weekdays", help="mon,tue,… ranges like mon-fri, or daily / weekdays / weekends."
)
PullOption = typer.Option(None, "--pull-interval", min=1, help="Minutes between source pulls.")
StepsOption = typer.Option(
    None, "--steps", help="At the slot: pull,compose,send (compose is required)."
)
ApprovalOption = typer.Option(
    None, "--approval/--no-approval", help="Hold each edition for an editor's approval."
)
DeadlineOption = typer.Option(
    None, "--approval-deadline", min=1, help="Minutes after the slot to approve, else skipped."
)
LocalTimeOption = typer.Option(
    None, "--local-time/--no-local-time", help="Deliver at the slot in each subscriber's zone."
)
EnabledOption = typer.Option(None, "--enable/--disable", help="Whether the schedule runs.")


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
    new_slot = format_slot(parse_slot(slot)) if slot is not None else None
    new_zone = parse_timezone(timezone).key if timezone is not None else None
    new_days = parse_weekdays(weekdays) if weekdays is not None else None
    new_steps = parse_steps(steps) if steps is not None else None
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
        "lists": sorted(m.name for m in newsletter.lists),
        "schedule": status.schedule_dict(session, schedule, utcnow()) if schedule else None,
        "runs": [status.run_dict(r) for r in runs],
    }


def _print(data: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(data['slug'])}[/]: {escape(data['name'])}", highlight=False)
    lists = escape(", ".join(data["lists"]) or "none")
    console.print(f"  from {escape(data['from'])}; lists: {lists}", highlight=False)
    schedule = data["schedule"]
    if schedule is None:
        console.print("  no schedule (create one with `mailer newsletters update SLUG --enable`)")
    else:
        state = "enabled" if schedule["enabled"] else "disabled"
        console.print(
            f"  schedule ({state}): {schedule['slot']} {schedule['timezone']} on "
            f"{schedule['weekdays']}; steps {schedule['steps']}; pull every "
            f"{schedule['pull_interval_minutes']} min",
            highlight=False,
        )
        if schedule["requires_approval"]:
            console.print(
                f"  held for approval, up to {schedule['approval_deadline_minutes']} min "
                "after the slot"
            )
        if schedule["local_time_delivery"]:
            console.print("  delivered at the slot in each subscriber's timezone")
        for slot in schedule["next_slots"]:
            console.print(f"  next: {slot['local']} (UTC {slot['at']})", highlight=False)
    if data["runs"]:
        table = Table("slot date", "state", "edition", "reason")
        for run in data["runs"]:
            table.add_row(
                run["slot_date"],
                run["state"],
                str(run["edition_id"] or ""),
                escape(run["reason"] or ""),
            )
        console.print(table)


def _new_schedule(newsletter: Newsletter, now: datetime, *, slot: str, timezone: str) -> Schedule:
    """A daily schedule with the defaults, before the command's options are applied."""
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


def _load(session: Session, slug: str) -> Newsletter:
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if newsletter is None:
        fail(f"no newsletter {slug!r} (see `mailer newsletters list`)")
    return newsletter


@app.command()
def create(
    slug: str = typer.Argument(..., help="Short name: lower-case letters, digits, '-'."),
    name: str = typer.Option(..., "--name", help="The newsletter's title."),
    from_name: str = typer.Option(..., "--from-name"),
    from_email: str = typer.Option(..., "--from-email"),
    postal_address: str = typer.Option(..., "--postal-address", help="Shown in every footer."),
    reply_to: str | None = typer.Option(None, "--reply-to"),
    audience_note: str = typer.Option("", "--audience-note", help="Why readers get it."),
    lists: list[str] = typer.Option(None, "--list", help="Its mailing lists (repeatable)."),
    slot: str | None = SlotOption,
    timezone: str | None = TimezoneOption,
    weekdays: str | None = WeekdaysOption,
    pull_interval: int | None = PullOption,
    steps: str | None = StepsOption,
    approval: bool | None = ApprovalOption,
    approval_deadline: int | None = DeadlineOption,
    local_time: bool | None = LocalTimeOption,
    enabled: bool | None = EnabledOption,
    as_json: bool = JsonOption,
) -> None:
    """Create a newsletter and its daily schedule (07:00 UTC, every day, unless told)."""
    if not _SLUG.match(slug):
        fail(f"slug {slug!r}: use lower-case letters, digits and '-' (at most 64)")
    try:
        sender = normalize_email(from_email)
        reply = normalize_email(reply_to) if reply_to else None
    except InvalidAddress as exc:
        fail(str(exc))
    now = utcnow()
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                if session.scalar(select(Newsletter.id).where(Newsletter.slug == slug)):
                    fail(f"newsletter {slug!r} exists: change it with `mailer newsletters update`")
                mailing_lists = []
                for list_name in lists or [slug]:
                    found = session.scalar(select(MailingList).where(MailingList.name == list_name))
                    mailing_lists.append(found or MailingList(name=list_name))
                newsletter = Newsletter(
                    slug=slug,
                    name=name,
                    from_name=from_name,
                    from_email=sender,
                    reply_to=reply,
                    postal_address=postal_address,
                    audience_note=audience_note,
                    lists=mailing_lists,
                )
                session.add(newsletter)
                session.flush()
                schedule = _new_schedule(newsletter, now, slot="07:00", timezone="UTC")
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
                data = _describe(session, newsletter)
        except ScheduleError as exc:
            fail(str(exc))
    if as_json:
        print_json(data)
    else:
        console.print(f"created newsletter {slug!r}")
        _print(data)


@app.command()
def update(
    slug: str = typer.Argument(..., help="The newsletter's slug."),
    name: str | None = typer.Option(None, "--name"),
    from_name: str | None = typer.Option(None, "--from-name"),
    from_email: str | None = typer.Option(None, "--from-email"),
    postal_address: str | None = typer.Option(None, "--postal-address"),
    slot: str | None = SlotOption,
    timezone: str | None = TimezoneOption,
    weekdays: str | None = WeekdaysOption,
    pull_interval: int | None = PullOption,
    steps: str | None = StepsOption,
    approval: bool | None = ApprovalOption,
    approval_deadline: int | None = DeadlineOption,
    local_time: bool | None = LocalTimeOption,
    enabled: bool | None = EnabledOption,
    as_json: bool = JsonOption,
) -> None:
    """Change a newsletter or its schedule; the running service applies it at its next tick.

    A newsletter without a schedule gets one (from its timezone and send time).
    """
    now = utcnow()
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                newsletter = _load(session, slug)
                if from_email is not None:
                    newsletter.from_email = normalize_email(from_email)
                for attr, value in (
                    ("name", name),
                    ("from_name", from_name),
                    ("postal_address", postal_address),
                ):
                    if value is not None:
                        setattr(newsletter, attr, value)
                schedule = session.get(Schedule, newsletter.id)
                if schedule is None:
                    schedule = _new_schedule(
                        newsletter, now, slot=newsletter.send_time, timezone=newsletter.timezone
                    )
                    parse_slot(schedule.slot)
                    parse_timezone(schedule.timezone)
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
                data = _describe(session, newsletter)
        except (ScheduleError, InvalidAddress) as exc:
            fail(str(exc))
    if as_json:
        print_json(data)
    else:
        console.print(f"updated newsletter {slug!r}")
        _print(data)


@app.command()
def show(
    slug: str = typer.Argument(..., help="The newsletter's slug."), as_json: bool = JsonOption
) -> None:
    """A newsletter, its schedule, its next slots and its recent runs."""
    with open_runtime() as runtime, runtime.sessions() as session:
        data = _describe(session, _load(session, slug))
    if as_json:
        print_json(data)
    else:
        _print(data)


@app.command("list")
def list_newsletters(as_json: bool = JsonOption) -> None:
    """Newsletters with their schedules and next slot."""
    with open_runtime() as runtime, runtime.sessions() as session:
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for newsletter in session.scalars(select(Newsletter).order_by(Newsletter.slug)):
            found = session.get(Schedule, newsletter.id)
            described = status.schedule_dict(session, found, now, 1) if found else None
            rows.append({"slug": newsletter.slug, "name": newsletter.name, "schedule": described})
    if as_json:
        print_json(rows)
        return
    table = Table("slug", "name", "slot", "timezone", "weekdays", "steps", "enabled", "next")
    for row in rows:
        schedule: dict[str, Any] | None = row["schedule"]
        if schedule is None:
            table.add_row(row["slug"], escape(row["name"]), "", "", "", "", "no schedule", "")
            continue
        upcoming = schedule["next_slots"]
        table.add_row(
            row["slug"],
            escape(row["name"]),
            schedule["slot"],
            schedule["timezone"],
            schedule["weekdays"],
            schedule["steps"] + (" (approval)" if schedule["requires_approval"] else ""),
            "yes" if schedule["enabled"] else "no",
            upcoming[0]["local"][:16] if upcoming else "",
        )
    console.print(table)


@app.command()
def runs(
    slug: str = typer.Argument(..., help="The newsletter's slug."),
    limit: int = typer.Option(30, min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """What became of each slot: sent, held, missed, skipped or failed, and why."""
    with open_runtime() as runtime, runtime.sessions() as session:
        newsletter = _load(session, slug)
        rows = [
            status.run_dict(r)
            for r in session.scalars(
                select(ScheduleRun)
                .where(ScheduleRun.newsletter_id == newsletter.id)
                .order_by(ScheduleRun.slot_date.desc())
                .limit(limit)
            )
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("slot date", "slot (UTC)", "state", "edition", "reason")
    for run in rows:
        table.add_row(
            run["slot_date"],
            run["slot_at"][:16],
            run["state"],
            str(run["edition_id"] or ""),
            escape(run["reason"] or ""),
        )
    console.print(table)


@app.command("approve")
def approve_held(
    slug: str = typer.Argument(..., help="The newsletter's slug."),
    day: datetime | None = typer.Option(
        None, "--date", formats=["%Y-%m-%d"], help="The slot date (default: the held one)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Approve the edition held at a slot: it is handed to the workers at once."""
    now = utcnow()
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                newsletter = _load(session, slug)
                query = select(ScheduleRun).where(ScheduleRun.newsletter_id == newsletter.id)
                if day is not None:
                    query = query.where(ScheduleRun.slot_date == date(day.year, day.month, day.day))
                else:
                    query = query.where(ScheduleRun.state == RunState.HELD)
                run = session.scalar(
                    query.order_by(ScheduleRun.slot_date.desc()).limit(1).with_for_update()
                )
                if run is None:
                    fail(f"no edition of {slug!r} is held for approval")
                approve(session, run, now)
                data = status.run_dict(run)
        except (ApprovalError, DispatchError, SegmentRuleError, ScheduleError) as exc:
            fail(str(exc))
    if as_json:
        print_json(data)
    else:
        console.print(f"approved: {data['reason']}", highlight=False)
