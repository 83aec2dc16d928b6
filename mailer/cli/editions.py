"""``mailer editions``: compose, send and follow a newsletter's editions."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json
from mailer.db.models import DeliveryStatus, Edition, Newsletter
from mailer.db.session import transaction
from mailer.dispatch import dispatcher, ledger
from mailer.dispatch.dispatcher import DispatchError, send_edition
from mailer.editions import editing
from mailer.editions.compose import compose_edition
from mailer.editions.editing import EditionLocked
from mailer.editions.titles import TitleTemplateError
from mailer.events.policy import Policy, apply_pending
from mailer.events.reconcile import ReconcileError
from mailer.events.reconcile import decide as reconcile_decide
from mailer.events.reconcile import review as reconcile_review
from mailer.events.stats import StatsError, edition_stats
from mailer.links import unsubscribe_url
from mailer.rendering.personalize import personalize
from mailer.rendering.render import RenderError
from mailer.runtime import Runtime
from mailer.transports import transport_for
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.models import Subscriber
from subscribers.segments import SegmentRuleError

app = typer.Typer(help="Editions: one send of a newsletter.", no_args_is_help=True)

DONE = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED, DeliveryStatus.UNKNOWN)


def edition_summary(edition: Edition, tally: dict[str, int]) -> dict[str, object]:
    return {
        "id": edition.id,
        "newsletter": edition.newsletter.slug,
        "date": edition.edition_date.isoformat(),
        "status": edition.status,
        "subject": edition.subject,
        "briefings": len(edition.items),
        "deliveries": tally,
        "sent_at": edition.sent_at.isoformat() if edition.sent_at else None,
    }


@app.command("list")
def list_editions(as_json: bool = JsonOption) -> None:
    """List editions, newest first."""
    with open_runtime() as runtime, runtime.sessions() as session:
        editions = session.scalars(select(Edition).order_by(Edition.id.desc())).all()
        rows = [edition_summary(e, ledger.counts(session, e.id)) for e in editions]
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
            str(row["subject"]),
        )
    console.print(table)


def compose_for(
    runtime: Runtime, slug: str, day: date | None = None
) -> tuple[int, bool, str | None]:
    """Compose today's edition; returns its id, whether it is new, and why it was skipped."""
    with transaction(runtime.sessions) as session:
        newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
        if newsletter is None:
            fail(f"no newsletter {slug!r}")
        try:
            composed = compose_edition(
                session, newsletter, edition_date=day, templates_dir=runtime.settings.templates_dir
            )
        except (RenderError, TitleTemplateError) as exc:
            fail(str(exc))
        reason = composed.edition.status_reason if composed.skipped else None
        return composed.edition.id, composed.created, reason


@app.command()
def compose(
    newsletter: str = typer.Argument(..., help="Newsletter slug."),
    day: datetime | None = typer.Option(
        None, "--date", formats=["%Y-%m-%d"], help="Edition date (default: today, local)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Compose and render today's edition of NEWSLETTER (or show the one that exists).

    With no new briefings the edition is recorded as skipped, with the reason.
    """
    with open_runtime() as runtime:
        edition_id, created, skipped = compose_for(
            runtime, newsletter, day.date() if day is not None else None
        )
        with runtime.sessions() as session:
            edition = session.get(Edition, edition_id)
            assert edition is not None
            summary = edition_summary(edition, ledger.counts(session, edition_id))
    if as_json:
        print_json(summary)
    elif skipped:
        console.print(f"edition {edition_id} skipped: {skipped}")
    else:
        verb = "composed" if created else "already composed"
        console.print(
            f"edition {edition_id} {verb}: {summary['subject']}\n"
            f"preview with `mailer editions show {edition_id}`, "
            f"send with `mailer editions send {edition_id}`",
            highlight=False,
        )


def _edit(edition_id: int, change: Callable[[Session, Edition, Runtime], None]) -> None:
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                # Locked like dispatcher.start: an edit never lands on a sending edition.
                edition = session.get(Edition, edition_id, with_for_update=True)
                if edition is None:
                    fail(f"no edition with id {edition_id}")
                change(session, edition, runtime)
                subject, preheader = edition.subject, edition.preheader
        except (EditionLocked, LookupError, ValueError, RenderError, TitleTemplateError) as exc:
            fail(str(exc))
    console.print(f"edition {edition_id}: {subject}\n  {preheader}", highlight=False)


@app.command()
def show(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """An edition's subject, preheader and briefings in order."""
    with open_runtime() as runtime, runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            fail(f"no edition with id {edition_id}")
        data = {
            **edition_summary(edition, ledger.counts(session, edition_id)),
            "preheader": edition.preheader,
            "reason": edition.status_reason,
            "items": [
                {"position": i.position, "briefing_id": i.briefing_id, "title": i.briefing.title}
                for i in sorted(edition.items, key=lambda i: i.position)
            ],
        }
    if as_json:
        print_json(data)
        return
    console.print(
        f"[bold]edition {edition_id}[/] ({data['status']}): {data['subject']}", highlight=False
    )
    console.print(f"  preheader: {data['preheader']}", highlight=False, markup=False)
    if data["reason"]:
        console.print(f"  reason: {data['reason']}", highlight=False, markup=False)
    for item in data["items"]:  # type: ignore[attr-defined]
        console.print(
            f"  {item['position'] + 1}. [{item['briefing_id']}] {item['title']}",
            highlight=False,
            markup=False,
        )


@app.command()
def exclude(
    edition_id: int = typer.Argument(..., metavar="ID"),
    briefing_id: int = typer.Argument(..., metavar="BRIEFING"),
) -> None:
    """Take a briefing out of an edition that has not started sending."""
    _edit(
        edition_id,
        lambda s, e, r: editing.exclude(s, e, briefing_id, templates_dir=r.settings.templates_dir),
    )


@app.command()
def reorder(
    edition_id: int = typer.Argument(..., metavar="ID"),
    briefing_ids: list[int] = typer.Argument(..., metavar="BRIEFING..."),
) -> None:
    """Put these briefings first, in this order; the rest follow as they were."""
    _edit(
        edition_id,
        lambda s, e, r: editing.reorder(s, e, briefing_ids, templates_dir=r.settings.templates_dir),
    )


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
    _edit(
        edition_id,
        lambda s, e, r: editing.retitle(
            e, subject=subject, preheader=preheader, templates_dir=r.settings.templates_dir
        ),
    )


def run_send(runtime: Runtime, edition_id: int, *, quiet: bool = False) -> dict[str, int]:
    """Send with a progress bar; shared by `editions send` and `demo`."""
    settings = runtime.dispatch_settings()
    transport = transport_for(runtime.settings)
    progress = Progress(
        TextColumn("[bold]sending[/] edition " + str(edition_id)),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        disable=quiet,
    )
    try:
        with progress:
            task = progress.add_task("send", total=None)

            def show(tally: dict[str, int]) -> None:
                progress.update(
                    task, total=sum(tally.values()), completed=sum(tally[s] for s in DONE)
                )

            return send_edition(runtime.sessions, edition_id, transport, settings, on_progress=show)
    except (DispatchError, SegmentRuleError) as exc:
        fail(str(exc))
    finally:
        transport.close()


@app.command()
def send(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """Send edition ID, or resume it where it stopped. Nobody is mailed twice."""
    with open_runtime() as runtime:
        tally = run_send(runtime, edition_id, quiet=as_json)
        with runtime.sessions() as session:
            edition = session.get(Edition, edition_id)
            assert edition is not None
            summary = edition_summary(edition, tally)
    if as_json:
        print_json(summary)
    else:
        console.print(_describe(summary))
        if tally["unknown"]:
            errors.print(
                f"[yellow]{tally['unknown']} deliveries are unknown[/]: their worker stopped "
                "mid-send, so they may or may not have gone out; they are never resent blindly."
            )
        if tally["queued"]:
            errors.print(
                f"[yellow]{tally['queued']} deliveries are still queued[/] (the transport was "
                "unavailable, or the edition was paused): "
                f"run `mailer editions send {edition_id}` again."
            )


def _describe(summary: dict[str, object]) -> str:
    tally = summary["deliveries"]
    assert isinstance(tally, dict)
    counts = ", ".join(f"{n} {status}" for status, n in tally.items() if n)
    return f"edition {summary['id']} is {summary['status']}: {counts or 'no deliveries'}"


@app.command()
def start(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Fill edition ID's ledger and mark it sending, for `mailer worker` processes to send."""
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                edition = session.get(Edition, edition_id)
                if edition is None:
                    fail(f"no edition with id {edition_id}")
                queued = dispatcher.start(session, edition)
                state = edition.status
        except (DispatchError, SegmentRuleError) as exc:
            fail(str(exc))
    console.print(f"edition {edition_id} is {state}; {queued} deliveries queued for the workers")


def _lifecycle(edition_id: int, action: str) -> None:
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                edition = session.get(Edition, edition_id)
                if edition is None:
                    fail(f"no edition with id {edition_id}")
                if action == "pause":
                    dispatcher.pause(session, edition)
                elif action == "resume":
                    dispatcher.resume(session, edition)
                else:
                    skipped = dispatcher.cancel(session, edition)
                    console.print(f"{skipped} queued deliveries skipped")
                state = edition.status
        except DispatchError as exc:
            fail(str(exc))
    hint = f"; continue with `mailer editions send {edition_id}`" if action == "resume" else ""
    console.print(f"edition {edition_id} is {state}{hint}")


@app.command()
def pause(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Stop claiming new batches of edition ID (batches in flight finish)."""
    _lifecycle(edition_id, "pause")


@app.command()
def resume(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Let a paused edition be sent again."""
    _lifecycle(edition_id, "resume")


@app.command()
def cancel(edition_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Stop edition ID for good; nobody still queued will get it."""
    _lifecycle(edition_id, "cancel")


@app.command()
def status(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """Counts of edition ID's deliveries by status, the current rate and an ETA."""
    with open_runtime() as runtime, runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            fail(f"no edition with id {edition_id}")
        tally = ledger.counts(session, edition_id)
        rate = ledger.recent_rate(session, edition_id)
        summary = edition_summary(edition, tally)
    remaining = tally["queued"] + tally["sending"]
    summary["rate_per_second"] = round(rate, 1)
    summary["eta_seconds"] = round(remaining / rate) if rate and remaining else None
    summary["reason"] = edition.status_reason
    if as_json:
        print_json(summary)
        return
    console.print(_describe(summary))
    if edition.status_reason:
        console.print(f"  reason: {edition.status_reason}", highlight=False, markup=False)
    if remaining:
        eta = f", about {summary['eta_seconds']} s left" if summary["eta_seconds"] else ""
        console.print(f"  {rate:,.1f} deliveries/s over the last minute{eta}")


@app.command()
def preview(
    edition_id: int = typer.Argument(..., metavar="ID"),
    as_email: str | None = typer.Option(None, "--as", help="Personalize for this subscriber."),
    text: bool = typer.Option(False, "--text", help="The plain-text part instead of HTML."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write to a file."),
) -> None:
    """Show edition ID as a reader gets it (HTML by default)."""
    with open_runtime() as runtime, runtime.sessions() as session:
        edition = session.get(Edition, edition_id)
        if edition is None or edition.html is None or edition.text is None:
            fail(f"no rendered edition with id {edition_id}")
        values = {
            "unsubscribe_url": f"{runtime.settings.base_url}/u/preview",
            "name": "",
            "email": "",
        }
        if as_email is not None:
            try:
                address = normalize_email(as_email)
            except InvalidAddress as exc:
                fail(f"--as: {exc}")
            subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
            if subscriber is None:
                fail(f"no subscriber {address}")
            key = runtime.settings.require_secret_key()
            values = {
                "unsubscribe_url": unsubscribe_url(
                    runtime.settings.base_url, key, subscriber.id, edition.id
                ),
                "name": subscriber.name or "",
                "email": subscriber.email,
            }
        content = edition.text if text else edition.html
        assert edition.token_nonce is not None
        rendered = personalize(content, edition.token_nonce, values, html=not text)
    if output is None:
        typer.echo(rendered)
    else:
        output.write_text(rendered, encoding="utf-8")
        console.print(f"wrote {output}")


@app.command()
def stats(edition_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """What happened after the send: delivered, bounced, complaints, opens, clicks, rates."""
    with open_runtime() as runtime, runtime.sessions() as session:
        try:
            result = edition_stats(session, edition_id)
        except StatsError as exc:
            fail(str(exc))
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
    with open_runtime() as runtime:
        hours = runtime.settings.reconcile_grace_hours if grace_hours is None else grace_hours
        grace = timedelta(hours=hours)
        # Provider events that arrived since the last policy run may settle some now.
        apply_pending(runtime.sessions, Policy.from_settings(runtime.settings))
        with transaction(runtime.sessions) as session:
            try:
                view = reconcile_review(session, edition_id, grace)
                changed = 0
                if resend or give_up:
                    changed = reconcile_decide(
                        session,
                        edition_id,
                        "resend" if resend else "give-up",
                        grace,
                        operator=getpass.getuser(),
                    )
            except ReconcileError as exc:
                fail(str(exc))
    if as_json:
        print_json({**view.as_dict(), "changed": changed})
        return
    console.print(
        f"edition {edition_id}: {len(view.due)} unknown beyond {grace}, "
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
