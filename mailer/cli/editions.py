"""``mailer editions``: compose, edit, check, send and follow a newsletter's editions.

Each command parses its arguments, calls one function of ``mailer.app.editions`` as
the operator at the command line, and prints what it returns; an application error
is printed as the reason and the command exits 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailer.app import editions
from mailer.app.actors import Actor
from mailer.app.errors import AppError, ChecksFailed
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json
from mailer.db.models import DeliveryStatus
from mailer.events.reconcile import Decision
from mailer.runtime import Runtime
from mailer.schedule.slots import ScheduleError, local_slot, parse_timezone

app = typer.Typer(help="Editions: one send of a newsletter.", no_args_is_help=True)

DONE = editions.DONE
_T = TypeVar("_T")


@contextmanager
def _errors() -> Iterator[None]:
    """An application error as one line on stderr and exit code 1."""
    try:
        yield
    except ChecksFailed as exc:
        errors.print("[bold red]error:[/] the edition's checks refuse it:", highlight=False)
        for failure in exc.failures:
            errors.print(f"  - {escape(failure)}", highlight=False)
        raise typer.Exit(1) from exc
    except AppError as exc:
        fail(escape(exc.message))


def _call(action: Callable[[Runtime, Actor], _T]) -> _T:
    with open_runtime() as runtime, _errors():
        return action(runtime, Actor.cli())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _summary(
    item: editions.EditionSummary | editions.EditionDetail, tally: dict[str, int]
) -> dict[str, object]:
    briefings = item.briefings if isinstance(item, editions.EditionSummary) else len(item.items)
    return {
        "id": item.id,
        "newsletter": item.newsletter_slug,
        "date": item.edition_date.isoformat(),
        "status": item.status,
        "subject": item.subject,
        "briefings": briefings,
        "deliveries": tally,
        "scheduled_for": _iso(item.scheduled_for),
        "sent_at": _iso(item.sent_at),
    }


def _counts(runtime: Runtime, edition_id: int) -> dict[str, int]:
    return editions.progress(runtime, Actor.cli(), edition_id).counts


def _describe(summary: dict[str, object]) -> str:
    tally = summary["deliveries"]
    assert isinstance(tally, dict)
    counts = ", ".join(f"{n} {status}" for status, n in tally.items() if n)
    return f"edition {summary['id']} is {summary['status']}: {counts or 'no deliveries'}"


def _edited(detail: editions.EditionDetail) -> None:
    console.print(
        f"edition {detail.id}: {detail.subject}\n  {detail.preheader}",
        highlight=False,
        markup=False,
    )


@app.command("list")
def list_editions(as_json: bool = JsonOption) -> None:
    """List editions, newest first."""

    def every(runtime: Runtime, actor: Actor) -> list[editions.EditionSummary]:
        found: list[editions.EditionSummary] = []
        before: int | None = None
        while True:
            page = editions.list_editions(runtime, actor, limit=editions.MAX_PAGE, before_id=before)
            found += page
            if len(page) < editions.MAX_PAGE:
                return found
            before = page[-1].id

    rows = [_summary(e, e.counts) for e in _call(every)]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "newsletter", "date", "status", "sent", "subject")
    for row in rows:
        tally = row["deliveries"]
        assert isinstance(tally, dict)
        table.add_row(
            str(row["id"]),
            str(row["newsletter"]),
            str(row["date"]),
            str(row["status"]),
            str(tally["sent"]),
            escape(str(row["subject"])),
        )
    console.print(table)


@app.command()
def compose(
    newsletter: str = typer.Argument(..., help="Newsletter slug."),
    day: datetime | None = typer.Option(
        None, "--date", formats=["%Y-%m-%d"], help="Edition date (default: today, local)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Compose and render today's edition of NEWSLETTER (or show the one that exists).

    It takes the briefings of its own date window (see the README); with none the
    edition is recorded as skipped, with the reason.
    """
    with open_runtime() as runtime, _errors():
        detail, created = editions.compose(
            runtime, Actor.cli(), newsletter, day.date() if day is not None else None
        )
        summary = _summary(detail, _counts(runtime, detail.id))
    if as_json:
        print_json(summary)
    elif detail.status == "skipped":
        console.print(f"edition {detail.id} skipped: {detail.status_reason}", markup=False)
    else:
        verb = "composed" if created else "already composed"
        console.print(
            f"edition {detail.id} {verb}: {detail.subject}\n"
            f"preview with `mailer editions show {detail.id}`, "
            f"send with `mailer editions send {detail.id}`",
            highlight=False,
            markup=False,
        )


def _choice(choice: editions.BriefingChoice) -> dict[str, object]:
    return {
        "briefing_id": choice.briefing_id,
        "title": choice.title,
        "published_at": choice.published_at.isoformat(),
        "source": choice.source,
    }


@app.command()
def show(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """An edition's subject, preheader and briefings in order, what is excluded, and
    what arrived since it was composed."""
    with open_runtime() as runtime, _errors():
        detail = editions.get_edition(runtime, Actor.cli(), edition_id)
        tally = _counts(runtime, edition_id)
    data: dict[str, object] = {
        **_summary(detail, tally),
        "preheader": detail.preheader,
        "reason": detail.status_reason,
        "subject_override": detail.subject_override,
        "preheader_override": detail.preheader_override,
        "approved_by": detail.approved_by,
        "approved_at": _iso(detail.approved_at),
        "held": detail.held,
        "approval_deadline": _iso(detail.approval_deadline),
        "html_bytes": detail.html_bytes,
        "items": [
            {
                "position": i.position,
                "briefing_id": i.briefing_id,
                "title": i.title,
                "headline": i.headline,
                "lead": i.lead,
                "source": i.source,
                "published_at": i.published_at.isoformat(),
            }
            for i in detail.items
        ],
        "excluded": [_choice(c) for c in detail.excluded],
        "available": [_choice(c) for c in detail.available],
    }
    if as_json:
        print_json(data)
        return
    console.print(
        f"[bold]edition {edition_id}[/] ({escape(detail.status)}): {escape(detail.subject)}",
        highlight=False,
    )
    console.print(f"  preheader: {detail.preheader}", highlight=False, markup=False)
    if detail.status_reason:
        console.print(f"  reason: {detail.status_reason}", highlight=False, markup=False)
    if detail.scheduled_for:
        console.print(f"  scheduled for {detail.scheduled_for:%Y-%m-%d %H:%M} UTC")
    if detail.approved_by:
        console.print(f"  approved by {detail.approved_by}", highlight=False, markup=False)
    for item in detail.items:
        console.print(
            f"  {item.position + 1}. [{item.briefing_id}] {item.title}",
            highlight=False,
            markup=False,
        )
    for label, choices in (("excluded", detail.excluded), ("available", detail.available)):
        for choice in choices:
            console.print(
                f"  {label}: [{choice.briefing_id}] {choice.title}", highlight=False, markup=False
            )


@app.command()
def exclude(
    edition_id: int = typer.Argument(..., metavar="ID"),
    briefing_id: int = typer.Argument(..., metavar="BRIEFING"),
) -> None:
    """Take a briefing out of an edition that has not started sending (it stays out when
    the edition is recomposed)."""
    _edited(_call(lambda r, a: editions.exclude(r, a, edition_id, briefing_id)))


@app.command()
def include(
    edition_id: int = typer.Argument(..., metavar="ID"),
    briefing_id: int = typer.Argument(..., metavar="BRIEFING"),
    position: int | None = typer.Option(
        None, "--position", min=1, help="Where to put it (1 is first; default: last)."
    ),
) -> None:
    """Add back an excluded briefing, or one that arrived since the edition was composed."""
    at = position - 1 if position is not None else None
    _edited(_call(lambda r, a: editions.include(r, a, edition_id, briefing_id, at)))


@app.command()
def reorder(
    edition_id: int = typer.Argument(..., metavar="ID"),
    briefing_ids: list[int] = typer.Argument(..., metavar="BRIEFING..."),
) -> None:
    """Put these briefings first, in this order; the rest follow as they were."""
    _edited(_call(lambda r, a: editions.reorder(r, a, edition_id, briefing_ids)))


@app.command()
def headline(
    edition_id: int = typer.Argument(..., metavar="ID"),
    briefing_id: int = typer.Argument(..., metavar="BRIEFING"),
    text: str = typer.Argument(..., metavar="TEXT", help="The short headline ('' clears it)."),
) -> None:
    """Give a briefing a short headline in this edition (the default subject uses it)."""
    _edited(_call(lambda r, a: editions.set_headline(r, a, edition_id, briefing_id, text)))


@app.command()
def update(
    edition_id: int = typer.Argument(..., metavar="ID"),
    subject: str | None = typer.Option(
        None, help="Override the subject ('' restores the template's)."
    ),
    preheader: str | None = typer.Option(None, help="Override the preheader ('' restores)."),
) -> None:
    """Override an edition's subject or preheader before it is sent."""
    if subject is None and preheader is None:
        fail("give --subject and/or --preheader")
    _edited(_call(lambda r, a: editions.retitle(r, a, edition_id, subject, preheader)))


@app.command()
def recompose(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Take the briefings again, as composing would now: newcomers follow those still in,
    which keep their order and headlines; excluded ones stay out."""
    _edited(_call(lambda r, a: editions.recompose(r, a, edition_id)))


@app.command()
def delete(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Delete an edition that never started sending; its briefings go back to the pool."""
    _call(lambda r, a: editions.delete_draft(r, a, edition_id))
    console.print(f"edition {edition_id} deleted")


@app.command("checks")
def run_checks(
    edition_id: int = typer.Argument(..., metavar="ID"),
    links: bool = typer.Option(False, "--links", help="Also ask every link whether it answers."),
    as_json: bool = JsonOption,
) -> None:
    """The pre-send checks: size, unsubscribe link, postal address, subject, preheader,
    headlines, links, images. Exits 1 if any refuses."""
    found = _call(lambda r, a: editions.checks(r, a, edition_id, check_links=links))
    if as_json:
        print_json([{"name": c.name, "level": c.level, "message": c.message} for c in found])
    else:
        style = {"ok": "green", "warn": "yellow", "refuse": "bold red"}
        table = Table("level", "check", "what")
        for check in found:
            table.add_row(
                f"[{style[check.level]}]{check.level}[/]", check.name, escape(check.message)
            )
        console.print(table)
    if any(c.level == "refuse" for c in found):
        raise typer.Exit(1)


@app.command("test-send")
def test_send(
    edition_id: int = typer.Argument(..., metavar="ID"),
    addresses: list[str] = typer.Argument(..., metavar="EMAIL..."),
) -> None:
    """Send the edition, marked [TEST], to 1 to 10 addresses (not counted anywhere; its
    links do nothing)."""
    result = _call(lambda r, a: editions.test_send(r, a, edition_id, addresses))
    console.print(
        f"test sent to {', '.join(result.addresses)}: {result.subject}",
        highlight=False,
        markup=False,
    )


@app.command()
def approve(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Approve edition ID after its checks; held by a schedule, it goes out now."""
    detail = _call(lambda r, a: editions.approve(r, a, edition_id))
    console.print(
        f"edition {detail.id} approved by {detail.approved_by}; it is {detail.status}",
        highlight=False,
        markup=False,
    )


@app.command()
def schedule(
    edition_id: int = typer.Argument(..., metavar="ID"),
    at: datetime = typer.Option(
        ..., "--at", formats=["%Y-%m-%d %H:%M"], help='When, e.g. "2026-12-03 06:30".'
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="IANA zone of --at (default: the newsletter's)."
    ),
) -> None:
    """Send edition ID once at a set time (the leading scheduler starts it)."""

    def scheduled(runtime: Runtime, actor: Actor) -> editions.EditionDetail:
        zone_name = timezone or editions.get_edition(runtime, actor, edition_id).timezone
        try:
            zone = parse_timezone(zone_name)
        except ScheduleError as exc:
            fail(str(exc))
        # Read as the scheduler reads slots: a time in a daylight-saving gap is the gap's end.
        when = local_slot(at.date(), at.time(), zone)
        return editions.schedule_send(runtime, actor, edition_id, when)

    detail = _call(scheduled)
    assert detail.scheduled_for is not None
    console.print(
        f"edition {detail.id} goes out at {detail.scheduled_for:%Y-%m-%d %H:%M} UTC "
        f"(approved by {detail.approved_by})",
        highlight=False,
        markup=False,
    )


@app.command()
def unschedule(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Drop edition ID's set send time."""
    detail = _call(lambda r, a: editions.unschedule(r, a, edition_id))
    console.print(f"edition {detail.id} is {detail.status}, with no set send time")


def run_send(runtime: Runtime, edition_id: int, *, quiet: bool = False) -> dict[str, int]:
    """Send with a progress bar; shared by `editions send` and `demo`."""
    progress = Progress(
        TextColumn("[bold]sending[/] edition " + str(edition_id)),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        disable=quiet,
    )
    with progress, _errors():
        task = progress.add_task("send", total=None)

        def show(tally: dict[str, int]) -> None:
            progress.update(task, total=sum(tally.values()), completed=sum(tally[s] for s in DONE))

        return editions.send(runtime, Actor.cli(), edition_id, on_progress=show)


def _still_queued(state: editions.Progress, edition_id: int) -> str:
    """Why deliveries are still queued after a send returned."""
    queued = state.counts[DeliveryStatus.QUEUED]
    if state.status == "paused":
        why = f"the edition is paused ({state.status_reason or 'by an operator'})"
        then = f"resume it with `mailer editions resume {edition_id}`, then send again"
    elif state.next_retry_at is not None:
        why = (
            "the transport refused them for now, or could not be reached; the next may go "
            f"at {state.next_retry_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        then = f"run `mailer editions send {edition_id}` again then"
    else:
        why = "the transport was unavailable"
        then = f"run `mailer editions send {edition_id}` again"
    return f"{queued} deliveries are still queued: {why}; {then}."


@app.command()
def send(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """Send edition ID here and now (checks first), or resume it where it stopped.
    Nobody is mailed twice. Exits 1 if deliveries are still queued at the end."""
    with open_runtime() as runtime:
        tally = run_send(runtime, edition_id, quiet=as_json)
        with _errors():
            detail = editions.get_edition(runtime, Actor.cli(), edition_id)
            state = editions.progress(runtime, Actor.cli(), edition_id)
    summary = _summary(detail, tally)
    if as_json:
        print_json(summary)
    else:
        console.print(_describe(summary))
    if tally[DeliveryStatus.UNKNOWN]:
        errors.print(
            f"[yellow]{tally['unknown']} deliveries are unknown[/]: their worker stopped "
            "mid-send, so they may or may not have gone out; they are never resent blindly "
            f"(`mailer editions reconcile {edition_id}`)."
        )
    if tally[DeliveryStatus.QUEUED]:
        errors.print(f"[yellow]{escape(_still_queued(state, edition_id))}[/]")
        raise typer.Exit(1)


@app.command()
def start(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Check edition ID, fill its ledger and mark it sending, for `mailer worker`s."""
    with open_runtime() as runtime, _errors():
        detail = editions.send_now(runtime, Actor.cli(), edition_id)
        queued = _counts(runtime, edition_id)[DeliveryStatus.QUEUED]
    console.print(
        f"edition {edition_id} is {detail.status}; {queued} deliveries queued for the workers"
    )


@app.command()
def pause(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Stop claiming new batches of edition ID (batches in flight finish)."""
    detail = _call(lambda r, a: editions.pause(r, a, edition_id))
    console.print(f"edition {edition_id} is {detail.status}")


@app.command()
def resume(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Let a paused edition be sent again."""
    detail = _call(lambda r, a: editions.resume(r, a, edition_id))
    console.print(
        f"edition {edition_id} is {detail.status}; continue with `mailer editions send "
        f"{edition_id}`"
    )


@app.command()
def cancel(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Stop edition ID for good; nobody still queued will get it. Cancelled before it
    started, its briefings go back to the pool."""
    with open_runtime() as runtime, _errors():
        detail = editions.cancel(runtime, Actor.cli(), edition_id)
        skipped = _counts(runtime, edition_id)[DeliveryStatus.SKIPPED]
    console.print(f"{skipped} deliveries skipped")
    console.print(f"edition {edition_id} is {detail.status}")


@app.command()
def status(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """Counts of edition ID's deliveries by status, the current rate and an ETA."""
    with open_runtime() as runtime, _errors():
        detail = editions.get_edition(runtime, Actor.cli(), edition_id)
        state = editions.progress(runtime, Actor.cli(), edition_id)
    summary = _summary(detail, state.counts)
    summary["rate_per_second"] = state.rate_per_second
    summary["eta_seconds"] = state.eta_seconds
    summary["reason"] = state.status_reason
    if as_json:
        print_json(summary)
        return
    console.print(_describe(summary))
    if state.status_reason:
        console.print(f"  reason: {state.status_reason}", highlight=False, markup=False)
    if state.total > state.done:
        eta = f", about {state.eta_seconds} s left" if state.eta_seconds else ""
        console.print(f"  {state.rate_per_second:,.1f} deliveries/s over the last minute{eta}")


@app.command()
def preview(
    edition_id: int = typer.Argument(..., metavar="ID"),
    as_email: str | None = typer.Option(None, "--as", help="Personalize for this subscriber."),
    text: bool = typer.Option(False, "--text", help="The plain-text part instead of HTML."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write to a file."),
) -> None:
    """Show edition ID as a reader gets it (HTML by default). Its unsubscribe link goes
    to a page that says it is a preview: it never unsubscribes anybody."""
    shown = _call(
        lambda r, a: editions.preview(
            r, a, edition_id, as_email=as_email, part="text" if text else "html"
        )
    )
    if output is None:
        typer.echo(shown.content)
    else:
        output.write_text(shown.content, encoding="utf-8")
        console.print(f"wrote {output}")


@app.command()
def stats(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """What happened after the send: delivered, bounced, complaints, opens, clicks, rates."""
    result = _call(lambda r, a: editions.stats(r, a, edition_id))
    if as_json:
        print_json(result.as_dict())
        return
    rates = result.rates()
    table = Table("", "count", "rate", title=f"edition {edition_id}: {escape(result.subject)}")
    rows = [
        ("sent", result.sent, None),
        ("delivered", result.delivered, rates["delivered"]),
        ("bounced (hard)", result.bounced_hard, rates["bounced_hard"]),
        ("bounced (soft)", result.bounced_soft, rates["bounced_soft"]),
        ("dropped", result.dropped, rates["dropped"]),
        ("complaints", result.complaints, rates["complaints"]),
        ("unsubscribes", result.unsubscribes, rates["unsubscribes"]),
        (f"opens ({result.opens} in all)", result.unique_opens, rates["opens"]),
        (f"clicks ({result.clicks} in all)", result.unique_clicks, rates["clicks"]),
        ("outcome unknown", result.unknown, None),
    ]
    for label, count, rate in rows:
        table.add_row(label, f"{count:,}", "" if rate is None else f"{rate:.2%}")
    console.print(table)
    console.print(
        "rates: bounces and drops of sent; the rest of delivered (unique readers)",
        style="dim",
    )


@app.command()
def reconcile(
    edition_id: int = typer.Argument(..., metavar="ID"),
    grace_hours: float | None = typer.Option(
        None, "--grace-hours", help="Leave younger unknowns to provider events [config]."
    ),
    resend: bool = typer.Option(False, "--resend", help="Queue them again (may double-mail)."),
    give_up: bool = typer.Option(False, "--give-up", help="Mark them failed, never resent."),
    as_json: bool = JsonOption,
) -> None:
    """List deliveries still `unknown` after the grace period; resend or give them up."""
    if resend and give_up:
        fail("choose one of --resend and --give-up")
    decision: Decision | None = "resend" if resend else "give-up" if give_up else None
    done = _call(
        lambda r, a: editions.reconcile(
            r, a, edition_id, grace_hours=grace_hours, decision=decision
        )
    )
    view, changed = done.view, done.changed
    if as_json:
        print_json({**view.as_dict(), "changed": changed})
        return
    console.print(
        f"edition {edition_id}: {len(view.due)} unknown beyond {view.grace}, "
        f"{view.waiting} still within it"
    )
    for item in view.due[:50]:
        console.print(
            f"  {item.delivery_id}  {item.email}  {escape(item.error or '')}", highlight=False
        )
    if resend:
        console.print(f"{changed} queued again: `mailer editions send {edition_id}` sends them")
    elif give_up:
        console.print(f"{changed} given up (failed, never resent)")
    elif view.due:
        console.print("decide with --resend or --give-up", style="dim")
