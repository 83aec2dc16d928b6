"""``mailer bounces``: provider suppression sync, bounce mail, and the bounce policy."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from mailer.app.actors import Actor
from mailer.app.bounces import list_unparsed
from mailer.app.errors import AppError
from mailer.bounces.evaluate import CorpusError, evaluate
from mailer.bounces.mailbox import (
    BounceSource,
    BounceSourceError,
    FolderSource,
    ImapSource,
    MboxSource,
)
from mailer.bounces.sendgrid_sync import SyncError
from mailer.bounces.sync import SyncNotConfigured, import_bounce_mail, sync_sendgrid
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json
from mailer.config import Settings
from mailer.events.policy import Policy, apply_pending

app = typer.Typer(help="Bounces, complaints and provider suppressions.", no_args_is_help=True)


@app.command()
def sync(as_json: bool = JsonOption) -> None:
    """Pull SendGrid's bounces, blocks, spam reports, invalid emails and global
    unsubscribes since the last sync, and apply the bounce policy. Safe to rerun."""
    with open_runtime() as runtime:
        try:
            report = sync_sendgrid(runtime)
        except (SyncNotConfigured, SyncError) as exc:
            fail(str(exc))
    if as_json:
        print_json(report.as_dict())
        return
    policy = report.policy
    console.print(
        f"{report.fetched} records fetched, {report.stored} new; "
        f"{policy.suppressed} addresses suppressed, {policy.unsubscribed} unsubscribed"
    )
    for line in report.skipped:
        errors.print(f"[yellow]skipped:[/] {line}", highlight=False)


@app.command("import")
def import_mail(
    folder: Path | None = typer.Option(None, help="A directory of .eml files."),
    mbox: Path | None = typer.Option(None, help="An mbox file."),
    imap: bool = typer.Option(False, help="The mailbox in MAILER_BOUNCE_IMAP_*."),
    as_json: bool = JsonOption,
) -> None:
    """Read bounce mail (RFC 3464 reports and other formats), apply the bounce policy.

    Messages read are moved to processed/ (folder), removed (mbox) or flagged
    deleted (IMAP), so a rerun reads only new mail."""
    if sum((folder is not None, mbox is not None, imap)) != 1:
        fail("give exactly one of --folder, --mbox, --imap")
    with open_runtime() as runtime:
        source = _source(runtime.settings, folder, mbox, imap)
        try:
            report = import_bounce_mail(runtime, source)
        except BounceSourceError as exc:
            fail(str(exc))
        finally:
            source.close()
    if as_json:
        print_json(report.as_dict())
        return
    console.print(
        f"{report.messages} messages: {report.bounces} bounces ({report.stored} new), "
        f"{report.not_bounces} not bounces, {report.unparsed} unparsed; "
        f"{report.policy.suppressed if report.policy else 0} addresses suppressed"
    )
    if report.unparsed:
        errors.print(
            f"[yellow]{report.unparsed} messages could not be read[/] (see 'mailer bounces "
            f"unparsed'): {', '.join(escape(k) for k in report.unparsed_keys[:10])}",
            highlight=False,
        )


@app.command("unparsed")
def unparsed(
    limit: int = typer.Option(100, min=1, max=10_000),
    as_json: bool = JsonOption,
) -> None:
    """Bounce mail that could not be read (kept by 'bounces import'), newest first."""
    with open_runtime() as runtime:
        try:
            rows = list_unparsed(runtime, Actor.cli(), limit=limit)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json([vars(row) for row in rows])
        return
    table = Table("received", "message", "from", "subject", "why")
    for row in rows:
        table.add_row(
            f"{row.received_at:%Y-%m-%d %H:%M}",
            escape(row.key),
            escape(row.headers.get("From", "")),
            escape(row.headers.get("Subject", "")[:60]),
            escape(row.why[:80]),
        )
    console.print(table)


@app.command("evaluate")
def evaluate_corpus(
    directory: Path = typer.Argument(..., help="A folder of .eml files and expected.json."),
    as_json: bool = JsonOption,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every miss."),
) -> None:
    """How the bounce reader does on a corpus with expected answers: bounces detected,
    hard/soft agreement, addresses reported for non-bounces, exceptions. No database."""
    if not directory.is_dir():
        fail(f"{directory} is not a directory")
    try:
        figures = evaluate(directory)
    except CorpusError as exc:
        fail(str(exc))
    if as_json:
        print_json(figures.as_dict())
        return
    console.print(
        f"{figures.messages} messages ({figures.bounce_messages} bounces, "
        f"{figures.not_bounce_messages} not bounces)\n"
        f"detected:  {figures.detected}/{figures.expected_recipients} failed recipients "
        f"({figures.detection_rate:.1%})\n"
        f"hard/soft: {figures.agreed}/{figures.detected} agree ({figures.agreement_rate:.1%})\n"
        f"addresses reported for non-bounces: {figures.not_bounce_addresses}\n"
        f"messages with more addresses than expected: {figures.extra_address_messages}\n"
        f"exceptions: {figures.exceptions}, unparsed: {figures.unparsed}",
        highlight=False,
    )
    if verbose:
        for item in figures.missed:
            console.print(f"missed    {escape(str(item))}", highlight=False)
        for item in figures.disagreed:
            console.print(f"disagreed {escape(str(item))}", highlight=False)
        for item in figures.extra:
            console.print(f"extra     {escape(str(item))}", highlight=False)


def _source(settings: Settings, folder: Path | None, mbox: Path | None, imap: bool) -> BounceSource:
    if folder is not None:
        if not folder.is_dir():
            fail(f"{folder} is not a directory")
        return FolderSource(folder)
    if mbox is not None:
        return MboxSource(mbox)
    if not settings.bounce_imap_host or not settings.bounce_imap_username:
        fail("set MAILER_BOUNCE_IMAP_HOST and MAILER_BOUNCE_IMAP_USERNAME to read bounces by IMAP")
    password = settings.bounce_imap_password
    return ImapSource(
        settings.bounce_imap_host,
        settings.bounce_imap_port,
        settings.bounce_imap_username,
        password.get_secret_value() if password else "",
        folder=settings.bounce_imap_folder,
        ssl=settings.bounce_imap_security == "tls",
        starttls=settings.bounce_imap_security == "starttls",
    )


@app.command()
def apply(as_json: bool = JsonOption) -> None:
    """Apply the bounce policy to stored events not yet applied (the webhook does this
    itself right after answering; this is for catching up)."""
    with open_runtime() as runtime:
        report = apply_pending(runtime.sessions, Policy.from_settings(runtime.settings))
    if as_json:
        print_json(report.as_dict())
    else:
        console.print(
            f"{report.events} events applied: {report.suppressed} suppressed, "
            f"{report.unsubscribed} unsubscribed, {report.reconciled} unknown deliveries "
            "reconciled as sent"
        )
