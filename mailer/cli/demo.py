"""``mailer demo``: the whole pipeline, from nothing, in the working directory."""

from __future__ import annotations

import typer
from sqlalchemy import func, select

from mailer.briefings.folder import pull_folder
from mailer.cli.common import console, fail, load_settings, open_runtime
from mailer.cli.editions import run_send
from mailer.config import ConfigError, config_file_path, ensure_local_secret_key
from mailer.db import migrate
from mailer.db.models import Edition, EditionStatus, Newsletter
from mailer.db.session import transaction
from mailer.demo.setup import BRIEFINGS_DIR, ensure_newsletter, ensure_subscribers
from mailer.editions.compose import compose_edition
from mailer.editions.titles import TitleTemplateError
from mailer.rendering.render import RenderError
from subscribers.models import Subscriber


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

    with open_runtime(settings, migrated=False) as runtime:
        migrate.upgrade(runtime.engine)
        newsletter_id = ensure_newsletter(runtime.sessions)
        pulled = pull_folder(runtime.sessions, BRIEFINGS_DIR)
        console.print(
            "briefings: "
            + ", ".join(f"{v} {k}" for k, v in pulled.counts.items())
            + f", {pulled.failed} failed"
        )
        imported = ensure_subscribers(runtime.sessions, subscribers)
        console.print(f"subscribers: {imported.added} added")

        with transaction(runtime.sessions) as session:
            newsletter = session.get(Newsletter, newsletter_id)
            assert newsletter is not None
            try:
                composed = compose_edition(
                    session, newsletter, templates_dir=settings.templates_dir
                )
            except (RenderError, TitleTemplateError) as exc:
                fail(str(exc))
            edition_id = composed.edition.id
            state = "composed" if composed.created else "found"
            if composed.skipped:
                latest = session.scalar(
                    select(Edition)
                    .where(
                        Edition.newsletter_id == newsletter_id,
                        Edition.status != EditionStatus.SKIPPED,
                    )
                    .order_by(Edition.id.desc())
                )
                if latest is None:
                    fail(f"nothing to send: {composed.edition.status_reason}")
                edition_id, state = latest.id, "no new briefings; latest is"
        console.print(f"edition {edition_id}: {state}")

        tally = run_send(runtime, edition_id)
        with runtime.sessions() as session:
            edition = session.get(Edition, edition_id)
            assert edition is not None
            total_subscribers = session.scalar(select(func.count(Subscriber.id)))
            sample = session.scalar(select(Subscriber.email).order_by(Subscriber.id).limit(1))

    console.print()
    console.print(f"[bold]edition {edition_id}[/] — {edition.subject}", highlight=False)
    console.print(
        "  deliveries: "
        + ", ".join(f"{n} {s}" for s, n in tally.items() if n)
        + f" (of {total_subscribers} subscribers)"
    )
    if edition.status == EditionStatus.SENT:
        console.print(f"  status: sent at {edition.sent_at:%Y-%m-%d %H:%M} UTC")
    console.print(f"  outbox: {settings.outbox_dir / f'edition-{edition_id}'}")
    console.print()
    console.print("Preview it:")
    console.print(f"  mailer editions preview {edition_id} --as {sample} -o preview.html")
    console.print(f"  mailer editions preview {edition_id} --text")
    console.print("Try an unsubscribe link (List-Unsubscribe header of any .eml):")
    console.print("  mailer serve   # then open the link from an outbox message")
