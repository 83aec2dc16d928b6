"""``mailer subscribers``: import, export and look up readers."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailer import jsondata
from mailer.app import subscribers
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json
from subscribers.importer import ImportReport

app = typer.Typer(help="Subscribers, their lists and suppressions.", no_args_is_help=True)


@app.command("import")
def import_file(
    file: Path = typer.Argument(
        ...,
        help="CSV (',', ';' or tab; UTF-8 or cp1252) with an email column; Mailchimp, "
        "listmonk and Substack exports are understood.",
    ),
    list_name: str = typer.Option(..., "--list", help="List to subscribe them to."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and count; write nothing."),
    report_path: Path | None = typer.Option(
        None, "--report", help="Write every rejected row (line: reason) to this file."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Import subscribers from a CSV file onto a list (bad rows are reported and skipped)."""
    with ExitStack() as stack:
        report_file = (
            stack.enter_context(report_path.open("w", encoding="utf-8"))
            if report_path is not None
            else None
        )
        # The bar goes to stderr, so that --json output stays clean on stdout.
        bar = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=errors,
                transient=True,
            )
        )
        task = bar.add_task("importing", total=None)

        def progress(current: ImportReport, done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total, description=f"{current.rows:,} rows")

        runtime = stack.enter_context(open_runtime())
        try:
            report = subscribers.import_file(
                runtime,
                Actor.cli(),
                file,
                list_name,
                dry_run=dry_run,
                report_file=report_file,
                progress=progress,
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(report)
    else:
        console.print(
            f"{'dry run: ' if dry_run else ''}{report['added']} added, {report['updated']} "
            f"updated, {report['subscribed']} subscribed to {list_name!r}, "
            f"{report['kept_unsubscribed']} kept unsubscribed, {report['suppressed']} "
            f"suppressed and {report['erased']} erased skipped, {report['rejected']} rows "
            "rejected",
            highlight=False,
            markup=False,
        )
        for warning in report["warnings"]:
            errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        for error in report["errors"]:
            errors.print(
                f"[red]rejected:[/] line {error['line']}: {escape(error['reason'])}",
                highlight=False,
            )
        if report["rejected"] > len(report["errors"]):
            errors.print(
                f"… and {report['rejected'] - len(report['errors'])} more", highlight=False
            )
    if report["errors"]:
        raise typer.Exit(1)


@app.command("export")
def export(
    list_name: str | None = typer.Option(None, "--list", help="Only this list's members."),
    segment: str | None = typer.Option(None, "--segment", help="Only this saved segment."),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default stdout)."),
) -> None:
    """Export subscribers as CSV with their statuses (everyone, a list or a segment)."""
    with open_runtime() as runtime:
        try:
            lines = subscribers.export_csv(
                runtime, Actor.cli(), list_name=list_name, segment=segment
            )
        except AppError as exc:
            fail(exc.message)
        with ExitStack() as stack:
            out: TextIO = (
                stack.enter_context(output.open("w", encoding="utf-8", newline=""))
                if output is not None
                else sys.stdout
            )
            for text in lines:
                out.write(text)


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
            attributes[key.strip()] = jsondata.parse(value)
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
    query: str | None = typer.Argument(
        None, help="Address prefix, or part of a name (3 characters or more)."
    ),
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
