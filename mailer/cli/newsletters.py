"""``mailer newsletters``: newsletters and their daily schedules, editable while the service runs.

The scheduler reads schedules from the database at every tick, so a change here
applies within ``MAILER_SCHEDULER_TICK_SECONDS`` without a restart.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from mailer.app import newsletters
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="Newsletters and their daily schedules.", no_args_is_help=True)

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


def _print(data: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(data['slug'])}[/]: {escape(data['name'])}", highlight=False)
    lists = escape(", ".join(data["lists"]) or "none")
    console.print(
        f"  from {escape(data['from'])}; lists: {lists}; in {escape(data['language'])}",
        highlight=False,
    )
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


@app.command()
def create(
    slug: str = typer.Argument(..., help="Short name: lower-case letters, digits, '-'."),
    name: str = typer.Option(..., "--name", help="The newsletter's title."),
    from_name: str = typer.Option(..., "--from-name"),
    from_email: str = typer.Option(..., "--from-email"),
    postal_address: str = typer.Option(..., "--postal-address", help="Shown in every footer."),
    reply_to: str | None = typer.Option(None, "--reply-to"),
    audience_note: str = typer.Option("", "--audience-note", help="Why readers get it."),
    language: str = typer.Option(
        "en", "--language", help="What it is written in (BCP 47: en, de, pt-BR)."
    ),
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
    with open_runtime() as runtime:
        try:
            data = newsletters.create_newsletter(
                runtime,
                Actor.cli(),
                slug,
                name=name,
                from_name=from_name,
                from_email=from_email,
                postal_address=postal_address,
                reply_to=reply_to,
                audience_note=audience_note,
                language=language,
                lists=lists or (),
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
        except AppError as exc:
            fail(exc.message)
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
    reply_to: str | None = typer.Option(None, "--reply-to", help="'' removes it."),
    audience_note: str | None = typer.Option(None, "--audience-note"),
    language: str | None = typer.Option(None, "--language", help="BCP 47: en, de, pt-BR."),
    lists: list[str] = typer.Option(None, "--list", help="Replace its lists (repeatable)."),
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
    with open_runtime() as runtime:
        try:
            data = newsletters.update_newsletter(
                runtime,
                Actor.cli(),
                slug,
                name=name,
                from_name=from_name,
                from_email=from_email,
                postal_address=postal_address,
                reply_to=reply_to,
                audience_note=audience_note,
                language=language,
                lists=lists or None,
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
        except AppError as exc:
            fail(exc.message)
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
    with open_runtime() as runtime:
        try:
            data = newsletters.get_newsletter(runtime, Actor.cli(), slug)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(data)
    else:
        _print(data)


@app.command("list")
def list_newsletters(as_json: bool = JsonOption) -> None:
    """Newsletters with their schedules and next slot."""
    with open_runtime() as runtime:
        try:
            rows = newsletters.list_newsletters(runtime, Actor.cli())
        except AppError as exc:
            fail(exc.message)
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
    with open_runtime() as runtime:
        try:
            rows = newsletters.list_runs(runtime, Actor.cli(), slug, limit)
        except AppError as exc:
            fail(exc.message)
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
    with open_runtime() as runtime:
        try:
            data = newsletters.approve_held(
                runtime, Actor.cli(), slug, date(day.year, day.month, day.day) if day else None
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(data)
    else:
        console.print(f"approved: {data['reason']}", highlight=False)
