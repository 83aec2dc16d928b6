"""``mailer audit``: who changed what, and when."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from mailer.app import audit
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="The audit log.", no_args_is_help=True)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _change(entry: audit.Entry) -> str:
    """Before and after in one line: what stayed once (``k=v``), what changed as
    ``k: old → new``."""
    before, after = entry.before or {}, entry.after or {}
    parts = []
    for key in dict.fromkeys([*before, *after]):
        if key in before and key in after and before[key] != after[key]:
            parts.append(f"{key}: {_value(before[key])} → {_value(after[key])}")
        elif key in after:
            parts.append(f"{key}={_value(after[key])}")
        else:
            parts.append(f"{key} was {_value(before[key])}")
    return ", ".join(parts)


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
    rows = [
        (
            str(entry.id),
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            entry.actor,
            entry.action,
            entry.target_kind + (f":{entry.target_id}" if entry.target_id else ""),
            "; ".join(part for part in (_change(entry), entry.note) if part),
        )
        for entry in entries
    ]
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    table.add_column("at (UTC)", min_width=10)
    table.add_column("actor", overflow="fold")
    # Actions and targets whole: they are what people filter on next.
    for index, name in ((3, "action"), (4, "target")):
        longest = max((len(row[index]) for row in rows), default=len(name))
        table.add_column(name, min_width=min(longest, 24), overflow="fold")
    table.add_column("change", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
