"""``mailer subscribers``: import and look up readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

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


def _attributes(pairs: list[str]) -> dict[str, Any] | None:
    """``key=value`` options; a value that parses as JSON (a number, true) is kept as such."""
    if not pairs:
        return None
    attributes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--attribute {pair!r}: give key=value")
        try:
            attributes[key.strip()] = json.loads(value)
        except ValueError:
            attributes[key.strip()] = value
    return attributes


def _print_detail(detail: subscribers.SubscriberDetail) -> None:
    name = escape(detail.name or "no name")
    console.print(
        f"[bold]#{detail.id} {escape(detail.email)}[/] ({name}): {detail.status}", highlight=False
    )
    for m in detail.memberships:
        console.print(f"  list {escape(m.list)}: {m.status}", highlight=False)
    if detail.attributes:
        console.print(f"  attributes: {escape(json.dumps(detail.attributes))}", highlight=False)
    if detail.suppression is not None:
        console.print(f"  [red]suppressed[/]: {escape(detail.suppression['reason'])}")


@app.command()
def add(
    email: str,
    name: str | None = typer.Option(None, "--name"),
    lists: list[str] = typer.Option([], "--list", help="A list to put them on (repeatable)."),
    attribute: list[str] = typer.Option([], "--attribute", help="key=value (repeatable)."),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA zone, e.g. Europe/Paris."),
    override: bool = typer.Option(
        False, "--override-suppression", help="Add a suppressed or erased address anyway."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Add a subscriber by hand: active at once, recorded as the operator's doing."""
    with open_runtime() as runtime:
        try:
            detail = subscribers.add_subscriber(
                runtime,
                Actor.cli(),
                email,
                name=name,
                lists=lists,
                attributes=_attributes(attribute),
                timezone=timezone,
                override_suppression=override,
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(detail.as_dict())
    else:
        _print_detail(detail)


@app.command()
def edit(
    subscriber: str = typer.Argument(..., help="Id or address."),
    email: str | None = typer.Option(None, "--email", help="A new address."),
    name: str | None = typer.Option(None, "--name", help='"" clears it.'),
    attribute: list[str] = typer.Option(
        [], "--attribute", help="key=value (repeatable); replaces all attributes."
    ),
    timezone: str | None = typer.Option(None, "--timezone", help='"" clears it.'),
    status: str | None = typer.Option(None, "--status", help="active, unsubscribed, bounced…"),
    memberships: list[str] = typer.Option(
        [], "--membership", help="list=active|unsubscribed (repeatable)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Change a subscriber's address, name, attributes, timezone, status or lists."""
    changes: dict[str, str] = {}
    for pair in memberships:
        list_name, sep, state = pair.rpartition("=")
        if not sep or not list_name:
            fail(f"--membership {pair!r}: give list=active or list=unsubscribed")
        changes[list_name] = state
    with open_runtime() as runtime:
        try:
            detail = subscribers.edit_subscriber(
                runtime,
                Actor.cli(),
                subscriber,
                email=email,
                name=name,
                attributes=_attributes(attribute),
                timezone=timezone,
                status=status,
            )
            if changes:
                detail = subscribers.set_memberships(runtime, Actor.cli(), detail.id, changes)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(detail.as_dict())
    else:
        _print_detail(detail)


@app.command()
def remove(
    subscriber: str = typer.Argument(..., help="Id or address."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    as_json: bool = JsonOption,
) -> None:
    """Delete a subscriber (an import may add them again; use erase for a GDPR request)."""
    if not yes:
        typer.confirm(f"Delete subscriber {subscriber}?", abort=True)
    with open_runtime() as runtime:
        try:
            removed = subscribers.remove_subscriber(runtime, Actor.cli(), subscriber)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json({"removed": removed})
    else:
        console.print(f"subscriber #{removed} deleted", highlight=False)


@app.command()
def erase(
    subscriber: str = typer.Argument(..., help="Id or address."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    as_json: bool = JsonOption,
) -> None:
    """Erase a subscriber's data: only a keyed hash of the address stays, as a suppression."""
    if not yes:
        typer.confirm(f"Erase subscriber {subscriber} for good?", abort=True)
    with open_runtime() as runtime:
        try:
            erased = subscribers.erase_subscriber(runtime, Actor.cli(), subscriber)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json({"erased": erased})
    else:
        console.print(f"subscriber #{erased} erased", highlight=False)


@app.command("export-data")
def export_data(
    subscriber: str = typer.Argument(..., help="Id or address."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
) -> None:
    """Everything held about one subscriber, as JSON (their right of access)."""
    with open_runtime() as runtime:
        try:
            data = subscribers.export_subscriber_data(runtime, Actor.cli(), subscriber)
        except AppError as exc:
            fail(exc.message)
    if output is None:
        print_json(data)
    else:
        output.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        errors.print(f"written to {escape(str(output))}", highlight=False)


@app.command()
def search(
    query: str | None = typer.Argument(None, help="Address prefix or part of a name."),
    list_name: str | None = typer.Option(None, "--list"),
    status: str | None = typer.Option(None, "--status", help="On --list if given."),
    limit: int = typer.Option(50, "--limit", min=1, max=subscribers.MAX_PAGE),
    after: int | None = typer.Option(None, "--after", help="Last id of the previous page."),
    as_json: bool = JsonOption,
) -> None:
    """Find subscribers, a page at a time in id order (--after continues)."""
    with open_runtime() as runtime:
        try:
            rows = subscribers.search_subscribers(
                runtime,
                Actor.cli(),
                query=query,
                list_name=list_name,
                status=status,
                limit=limit,
                after_id=after,
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(
            {
                "subscribers": [r.as_dict() for r in rows],
                "next_after": rows[-1].id if len(rows) == limit else None,
            }
        )
        return
    table = Table("id", "email", "name", "status", "lists")
    for r in rows:
        table.add_row(str(r.id), r.email, r.name or "", r.status, ", ".join(r.lists))
    console.print(table)
    if len(rows) == limit:
        console.print(f"more: --after {rows[-1].id}", highlight=False)
