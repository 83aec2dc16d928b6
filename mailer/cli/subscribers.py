"""``mailer subscribers``: import and look up readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from mailer.app import subscribers
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json

app = typer.Typer(help="Subscribers, their lists and suppressions.", no_args_is_help=True)


@app.command("import")
def import_file(
    file: Path = typer.Argument(..., help="CSV with columns email, name, then any attributes."),
    list_name: str = typer.Option(..., "--list", help="List to subscribe them to."),
    as_json: bool = JsonOption,
) -> None:
    """Import subscribers from a CSV file onto a list (bad rows are reported and skipped)."""
    with open_runtime() as runtime:
        try:
            report = subscribers.import_file(runtime, Actor.cli(), file, list_name)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(report)
    else:
        console.print(
            f"{report['added']} added, {report['updated']} updated, {report['subscribed']} "
            f"subscribed to {list_name!r}, {report['kept_unsubscribed']} kept unsubscribed, "
            f"{len(report['errors'])} rows rejected",
            highlight=False,
            markup=False,
        )
        for error in report["errors"]:
            errors.print(f"[red]rejected:[/] {escape(error['reason'])}", highlight=False)
    if report["errors"]:
        raise typer.Exit(1)


@app.command()
def show(email: str, as_json: bool = JsonOption) -> None:
    """A subscriber's status, lists and suppression."""
    with open_runtime() as runtime:
        try:
            data = subscribers.show_subscriber(runtime, Actor.cli(), email)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(data)
        return
    address = escape(data["email"])
    sub: dict[str, Any] | None = data["subscriber"]
    if sub is not None:
        name = escape(sub["name"] or "no name")
        console.print(f"[bold]{address}[/] ({name}): {sub['status']}", highlight=False)
        for entry in sub["lists"]:
            console.print(f"  list {escape(entry['name'])}: {entry['status']}", highlight=False)
    supp: dict[str, Any] | None = data["suppression"]
    if supp is not None:
        console.print(
            f"  [red]suppressed[/]: {supp['reason']} (from {escape(supp['source'])}, "
            f"{supp['since']})",
            highlight=False,
        )
    else:
        console.print("  not suppressed")
