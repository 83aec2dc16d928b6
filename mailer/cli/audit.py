"""``mailer audit``: who changed what, and when."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="The audit log.", no_args_is_help=True)


def _compact(values: dict[str, Any] | None) -> str:
    if not values:
        return ""
    return ", ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}"
        for key, value in values.items()
    )


def _change(entry: audit.Entry) -> str:
    before, after = _compact(entry.before), _compact(entry.after)
    if before and after:
        return f"{before} → {after}"
    return before or after


@app.command("list")
def list_(
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, newest first."),
    action: str | None = typer.Option(
        None, "--action", help="Only this action, e.g. account.create."
    ),
    target: str | None = typer.Option(
        None, "--target", metavar="KIND[:ID]", help="Only about this, e.g. account or account:3."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Entries newest first: when, who, what, about what, before and after."""
    target_kind, target_id = None, None
    if target:
        kind, _, ident = target.partition(":")
        target_kind, target_id = kind.strip() or None, ident.strip() or None
        if target_kind is None:
            fail(f"--target {target!r}: use KIND or KIND:ID, e.g. account:3")
    with open_runtime() as runtime:
        try:
            entries = audit.list_entries(
                runtime,
                Actor.cli(),
                limit=limit,
                action=action,
                target_kind=target_kind,
                target_id=target_id,
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json([entry.as_dict() for entry in entries])
        return
    table = Table("id", "at (UTC)", "actor", "action", "target", "change", "note")
    for entry in entries:
        table.add_row(
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            escape(entry.actor),
            escape(entry.action),
            escape(entry.target_kind + (f":{entry.target_id}" if entry.target_id else "")),
            escape(_change(entry)),
            escape(entry.note or ""),
        )
    console.print(table)
