"""``mailer sources`` and ``mailer pull``: where briefings come from, and fetching them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import select

from mailer.briefings import feeds
from mailer.briefings.folder import pull_folder
from mailer.briefings.pull import pull_sources
from mailer.briefings.report import PullReport
from mailer.briefings.sources import SourceError, add_source, enabled_sources
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json
from mailer.db.models import Source, SourceKind
from mailer.db.session import transaction

app = typer.Typer(help="Briefing sources: folders, feeds, the push API.", no_args_is_help=True)

NewsletterOption = typer.Option(None, "--newsletter", help="Only for this newsletter (slug).")
DraftOption = typer.Option(False, "--draft", help="New briefings wait for an editor.")


def _add(name: str, kind: SourceKind, location: str, newsletter: str | None, draft: bool) -> None:
    with open_runtime() as runtime:
        try:
            with transaction(runtime.sessions) as session:
                add_source(
                    session,
                    name=name,
                    kind=kind,
                    location=location,
                    newsletter_slug=newsletter,
                    mark_ready=not draft,
                )
        except SourceError as exc:
            fail(str(exc))
    console.print(f"added {kind} source {name!r}; pull it with `mailer pull --source {name}`")


@app.command("add-folder")
def add_folder(
    name: str,
    path: Path,
    newsletter: str | None = NewsletterOption,
    draft: bool = DraftOption,
) -> None:
    """Add a folder of .txt/.md briefing files."""
    _add(name, SourceKind.FOLDER, str(path), newsletter, draft)


@app.command("add-feed")
def add_feed(
    name: str,
    url: str,
    newsletter: str | None = NewsletterOption,
    draft: bool = DraftOption,
) -> None:
    """Add an RSS 2.0 or Atom feed."""
    _add(name, SourceKind.FEED, url, newsletter, draft)


@app.command("list")
def list_sources(as_json: bool = JsonOption) -> None:
    """Sources with the outcome of their last pull."""
    with open_runtime() as runtime, runtime.sessions() as session:
        rows = [
            {
                "name": s.name,
                "kind": s.kind,
                "location": s.location,
                "enabled": s.enabled,
                "mark_ready": s.mark_ready,
                "last_pulled_at": s.last_pulled_at.isoformat() if s.last_pulled_at else None,
                "last_outcome": s.last_outcome,
                "last_error": s.last_error,
            }
            for s in session.scalars(select(Source).order_by(Source.name))
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("name", "kind", "location", "last pull", "outcome")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["kind"]),
            str(row["location"]),
            str(row["last_pulled_at"] or "never"),
            str(row["last_outcome"] or ""),
        )
    console.print(table)


@app.command()
def remove(name: str) -> None:
    """Remove a source (its briefings stay)."""
    with open_runtime() as runtime, transaction(runtime.sessions) as session:
        source = session.scalar(select(Source).where(Source.name == name))
        if source is None:
            fail(f"no source {name!r}")
        session.delete(source)
    console.print(f"removed source {name!r}")


def pull(
    source: list[str] = typer.Option(None, "--source", help="Only these sources (repeatable)."),
    folder: Path | None = typer.Option(None, "--folder", help="Also pull this folder, once."),
    as_json: bool = JsonOption,
) -> None:
    """Pull new and changed briefings from every enabled source."""
    with open_runtime() as runtime:
        with runtime.sessions() as session:
            chosen = enabled_sources(session, source or None)
            missing = set(source or ()) - {s.name for s in chosen}
        if missing:
            fail(f"no source named {', '.join(sorted(missing))}")
        if not chosen and folder is None:
            fail("no sources: add one with `mailer sources add-folder|add-feed`, or pass --folder")
        progress = Progress(
            TextColumn("pulling"),
            BarColumn(),
            MofNCompleteColumn(),
            console=errors,
            disable=as_json,
            transient=True,
        )
        reports: list[PullReport] = []
        with progress, feeds.make_client(feeds.user_agent(runtime.settings.base_url)) as client:
            task = progress.add_task("pull", total=None)

            def advance() -> None:
                progress.advance(task)

            patterns = runtime.settings.boilerplate_patterns
            if folder is not None:
                try:
                    reports.append(
                        pull_folder(runtime.sessions, folder, boilerplate=patterns, on_item=advance)
                    )
                except NotADirectoryError as exc:
                    fail(str(exc))
            reports += pull_sources(
                runtime.sessions, chosen, client, boilerplate=patterns, on_item=advance
            )
    failed = sum(r.failed for r in reports)
    if as_json:
        print_json({"sources": [r.as_dict() for r in reports], "failed": failed})
    else:
        for report in reports:
            console.print(f"[bold]{report.source}[/]: {report.summary()}", highlight=False)
            for error in report.errors:
                errors.print(f"  [red]failed:[/] {error.message}", highlight=False)
    if failed:
        raise typer.Exit(1)
