"""``mailer subscribers``: import and look up readers."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy import select

from mailer.cli.common import JsonOption, console, errors, fail, open_runtime, print_json
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.importer import ImportFileError, import_csv
from subscribers.models import Subscriber, Suppression

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
            report = import_csv(runtime.sessions, file, list_name)
        except ImportFileError as exc:
            fail(str(exc))
    if as_json:
        print_json(report.as_dict())
    else:
        console.print(
            f"{report.added} added, {report.updated} updated, {report.subscribed} subscribed to "
            f"{list_name!r}, {report.kept_unsubscribed} kept unsubscribed, "
            f"{len(report.errors)} rows rejected"
        )
        for _line, reason in report.errors:
            errors.print(f"[red]rejected:[/] {reason}", highlight=False)
    if report.errors:
        raise typer.Exit(1)


@app.command()
def show(email: str, as_json: bool = JsonOption) -> None:
    """A subscriber's status, lists and suppression."""
    try:
        address = normalize_email(email)
    except InvalidAddress as exc:
        fail(str(exc))
    with open_runtime() as runtime, runtime.sessions() as session:
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
        suppression = session.scalar(select(Suppression).where(Suppression.email == address))
        if subscriber is None and suppression is None:
            fail(f"no subscriber {address}")
        data: dict[str, object] = {
            "email": address,
            "subscriber": None,
            "suppression": None,
        }
        if subscriber is not None:
            data["subscriber"] = {
                "id": subscriber.id,
                "name": subscriber.name,
                "status": subscriber.status,
                "attributes": subscriber.attributes,
                "created_at": subscriber.created_at.isoformat(),
                "lists": [
                    {
                        "name": s.mailing_list.name,
                        "status": s.status,
                        "unsubscribed_at": s.unsubscribed_at.isoformat()
                        if s.unsubscribed_at
                        else None,
                    }
                    for s in sorted(subscriber.subscriptions, key=lambda s: s.list_id)
                ],
            }
        if suppression is not None:
            data["suppression"] = {
                "reason": suppression.reason,
                "source": suppression.source,
                "since": suppression.created_at.isoformat(),
            }
    if as_json:
        print_json(data)
        return
    sub = data["subscriber"]
    if isinstance(sub, dict):
        console.print(f"[bold]{address}[/] ({sub['name'] or 'no name'}): {sub['status']}")
        for entry in sub["lists"]:
            console.print(f"  list {entry['name']}: {entry['status']}", highlight=False)
    supp = data["suppression"]
    if isinstance(supp, dict):
        console.print(
            f"  [red]suppressed[/]: {supp['reason']} (from {supp['source']}, {supp['since']})"
        )
    else:
        console.print("  not suppressed")
