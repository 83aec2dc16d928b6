"""``mailer suppressions``: who must not be mailed, and lifting that, audited."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from mailer.app import suppressions
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.bounces.reasons import reason_label
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="The suppression list.", no_args_is_help=True)


@app.command("list")
def list_(
    reason: str | None = typer.Option(None, help="Only this reason, e.g. 'hard bounce'."),
    limit: int = typer.Option(100, min=1, max=100_000),
    as_json: bool = JsonOption,
) -> None:
    """Suppressed addresses, newest first, with reason, why a bounce failed, source and
    time."""
    with open_runtime() as runtime:
        try:
            rows = suppressions.list_suppressions(runtime, Actor.cli(), reason=reason, limit=limit)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json([vars(row) for row in rows])
        return
    table = Table("email", "reason", "why it failed", "source", "since", "detail")
    for row in rows:
        table.add_row(
            row.email,
            row.reason,
            reason_label(row.bounce_reason) or "",
            escape(row.source),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            escape(row.detail[:60]),
        )
    console.print(table)


@app.command()
def add(
    email: str,
    note: str = typer.Option(..., "--note", help="Why (kept with the suppression)."),
) -> None:
    """Suppress an address by hand."""
    with open_runtime() as runtime:
        try:
            added = suppressions.add_suppression(runtime, Actor.cli(), email, note=note)
        except AppError as exc:
            fail(exc.message)
    address = email.strip().lower()
    console.print(f"{address} suppressed" if added else f"{address} was already suppressed")


@app.command("lift")
def lift_(
    email: str,
    note: str = typer.Option(..., "--note", help="Why it is lifted (audited)."),
    as_json: bool = JsonOption,
) -> None:
    """Lift a suppression. The address may be mailed again; the lift is recorded."""
    with open_runtime() as runtime:
        try:
            lifted = suppressions.lift_suppression(runtime, Actor.cli(), email, note=note)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        data: dict[str, Any] = vars(lifted)
        print_json(data)
    else:
        console.print(
            f"lifted: {lifted.email} (was: {lifted.reason}, from {escape(lifted.source)})",
            highlight=False,
        )
