"""``mailer briefings`` and ``mailer pull``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from mailer.briefings.folder import briefing_files, pull_folder
from mailer.briefings.parser import BriefingError, parse_file
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json

app = typer.Typer(help="Briefings: the news items editions are made of.", no_args_is_help=True)


@app.command()
def parse(
    file: Path = typer.Argument(..., help="A .txt or .md briefing file."),
    as_json: bool = JsonOption,
) -> None:
    """Show what a briefing file parses to, including the boilerplate dropped."""
    try:
        parsed = parse_file(file)
    except BriefingError as exc:
        fail(str(exc))
    if as_json:
        print_json(parsed.to_dict())
        return
    console.print(f"[bold]{parsed.title}[/]", highlight=False)
    if parsed.lead != parsed.title:
        console.print(parsed.lead, highlight=False)
    for section in parsed.sections:
        label = f"[bold]{section.label}:[/] " if section.label else ""
        console.print(f"\n{label}{section.body}", highlight=False)
    for line in parsed.dropped:
        console.print(f"\n[dim]dropped: {line}[/]", highlight=False)


def pull(
    folder: Path = typer.Option(..., "--folder", help="Folder of .txt/.md briefing files."),
    as_json: bool = JsonOption,
) -> None:
    """Pull new and changed briefings from a folder."""
    try:
        total = sum(1 for _ in briefing_files(folder))
    except NotADirectoryError as exc:
        fail(str(exc))
    with open_runtime() as runtime:
        progress = Progress(
            TextColumn("pulling"),
            BarColumn(),
            MofNCompleteColumn(),
            console=errors,
            disable=as_json,
            transient=True,
        )
        with progress:
            task = progress.add_task("pull", total=total)
            report = pull_folder(runtime.sessions, folder, on_file=lambda _: progress.advance(task))
    if as_json:
        print_json(report.as_dict())
    else:
        summary = ", ".join(f"{v} {k}" for k, v in report.counts.items())
        console.print(f"{summary}, {report.failed} failed")
        for error in report.errors:
            errors.print(f"[red]failed:[/] {error}", highlight=False)
    if report.failed:
        raise typer.Exit(1)
