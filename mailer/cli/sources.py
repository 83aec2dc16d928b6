"""``mailer sources`` and ``mailer pull``: where briefings come from, and fetching them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mailer.app import sources
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json

app = typer.Typer(help="Briefing sources: folders, feeds, the push API.", no_args_is_help=True)

NewsletterOption = typer.Option(None, "--newsletter", help="Only for this newsletter (slug).")
DraftOption = typer.Option(False, "--draft", help="New briefings wait for an editor.")


@app.command("add-folder")
def add_folder(
    name: str,
    path: Path,
    newsletter: str | None = NewsletterOption,
    draft: bool = DraftOption,
) -> None:
    """Add a folder of .txt/.md briefing files."""
    with open_runtime() as runtime:
        try:
            sources.add_folder(runtime, Actor.cli(), name, path, newsletter=newsletter, draft=draft)
        except AppError as exc:
            fail(exc.message)
    console.print(f"added folder source {name!r}; pull it with `mailer pull --source {name}`")


@app.command("add-feed")
def add_feed(
    name: str,
    url: str,
    newsletter: str | None = NewsletterOption,
    draft: bool = DraftOption,
) -> None:
    """Add an RSS 2.0 or Atom feed."""
    with open_runtime() as runtime:
        try:
            sources.add_feed(runtime, Actor.cli(), name, url, newsletter=newsletter, draft=draft)
        except AppError as exc:
            fail(exc.message)
    console.print(f"added feed source {name!r}; pull it with `mailer pull --source {name}`")


@app.command("list")
def list_sources(as_json: bool = JsonOption) -> None:
    """Sources with the outcome of their last pull."""
    with open_runtime() as runtime:
        try:
            found = sources.list_sources(runtime, Actor.cli())
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json([s.as_dict() for s in found])
        return
    table = Table("name", "kind", "location", "newsletter", "last pull", "outcome")
    for s in found:
        table.add_row(
            escape(s.name),
            s.kind,
            escape(s.location),
            escape(s.newsletter or "all"),
            s.last_pulled_at.isoformat() if s.last_pulled_at else "never",
            escape(s.last_outcome or ""),
        )
    console.print(table)


@app.command()
def remove(name: str) -> None:
    """Remove a source (its briefings stay)."""
    with open_runtime() as runtime:
        try:
            sources.remove(runtime, Actor.cli(), name)
        except AppError as exc:
            fail(exc.message)
    console.print(f"removed source {name!r}")


def pull(
    source: list[str] = typer.Option(None, "--source", help="Only these sources (repeatable)."),
    folder: Path | None = typer.Option(None, "--folder", help="Also pull this folder, once."),
    as_json: bool = JsonOption,
) -> None:
    """Pull new and changed briefings from every enabled source."""
    progress = Progress(
        TextColumn("pulling"),
        BarColumn(),
        MofNCompleteColumn(),
        console=errors,
        disable=as_json,
        transient=True,
    )
    with open_runtime() as runtime, progress:
        task = progress.add_task("pull", total=None)

        def advance() -> None:
            progress.advance(task)

        try:
            result = sources.pull(
                runtime, Actor.cli(), sources=source or None, folder=folder, on_item=advance
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(result.as_dict())
    else:
        for report in result.sources:
            console.print(f"[bold]{escape(report.source)}[/]: {report.summary}", highlight=False)
            for error in report.errors:
                errors.print(f"  [red]failed:[/] {escape(error.message)}", highlight=False)
    if result.failed:
        raise typer.Exit(1)
