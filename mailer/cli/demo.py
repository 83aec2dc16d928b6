"""``mailer demo``: the whole pipeline, from nothing, in the working directory."""

from __future__ import annotations

import typer
from sqlalchemy import func, select

from mailer.app import editions
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.briefings.folder import pull_folder
from mailer.cli.common import console, fail, load_settings, open_runtime
from mailer.cli.editions import run_send
from mailer.config import ConfigError, config_file_path, ensure_local_secret_key
from mailer.db import migrate
from mailer.db.models import EditionStatus
from mailer.demo.setup import BRIEFINGS_DIR, NEWSLETTER_SLUG, ensure_newsletter, ensure_subscribers
from subscribers.models import Subscriber

# Editions the demo may send when today's was skipped (it ran before today).
_SENDABLE = (EditionStatus.READY, EditionStatus.SENDING, EditionStatus.PAUSED, EditionStatus.SENT)


def demo(
    subscribers: int = typer.Option(1000, min=1, max=1_000_000, help="Sample subscribers."),
) -> None:
    """Pull sample briefings, compose today's edition and send it to sample subscribers.

    Safe to run again: nothing is sent twice.
    """
    settings = load_settings()
    try:
        settings, generated = ensure_local_secret_key(settings)
    except ConfigError as exc:
        fail(str(exc))
    if generated:
        console.print(f"generated a signing key in {config_file_path()} (keep it private)")

    actor = Actor.cli()
    with open_runtime(settings, migrated=False) as runtime:
        migrate.upgrade(runtime.engine)
        ensure_newsletter(runtime.sessions)
        pulled = pull_folder(runtime.sessions, BRIEFINGS_DIR)
        console.print(
            "briefings: "
            + ", ".join(f"{v} {k}" for k, v in pulled.counts.items())
            + f", {pulled.failed} failed"
        )
        imported = ensure_subscribers(runtime.sessions, subscribers)
        console.print(f"subscribers: {imported.added} added")

        try:
            composed, created = editions.compose(runtime, actor, NEWSLETTER_SLUG)
            edition_id = composed.id
            state = "composed" if created else "found"
            if composed.status == EditionStatus.SKIPPED:
                latest = next(
                    (
                        e
                        for e in editions.list_editions(runtime, actor, statuses=_SENDABLE)
                        if e.newsletter_slug == NEWSLETTER_SLUG
                    ),
                    None,
                )
                if latest is None:
                    fail(f"nothing to send: {composed.status_reason}")
                edition_id, state = latest.id, "no new briefings; latest is"
        except AppError as exc:
            fail(exc.message)
        console.print(f"edition {edition_id}: {state}")

        tally = run_send(runtime, edition_id)
        try:
            edition = editions.get_edition(runtime, actor, edition_id)
        except AppError as exc:
            fail(exc.message)
        with runtime.sessions() as session:
            total_subscribers = session.scalar(select(func.count(Subscriber.id)))
            sample = session.scalar(select(Subscriber.email).order_by(Subscriber.id).limit(1))

    console.print()
    console.print(f"[bold]edition {edition_id}[/] — {edition.subject}", highlight=False)
    console.print(
        "  deliveries: "
        + ", ".join(f"{n} {s}" for s, n in tally.items() if n)
        + f" (of {total_subscribers} subscribers)"
    )
    if edition.status == EditionStatus.SENT and edition.sent_at is not None:
        console.print(f"  status: sent at {edition.sent_at:%Y-%m-%d %H:%M} UTC")
    console.print(f"  outbox: {settings.outbox_dir / f'edition-{edition_id}'}")
    console.print()
    console.print("Preview it (its unsubscribe link only says it is a preview):")
    console.print(f"  mailer editions preview {edition_id} --as {sample} -o preview.html")
    console.print(f"  mailer editions preview {edition_id} --text")
    console.print("Open the editors' workspace:")
    console.print("  mailer accounts create you@example.org --role admin   # a one-time link")
    console.print("  mailer serve   # open that link; any .eml's List-Unsubscribe URL works too")
