"""``mailer suppressions``: who must not be mailed, and lifting that, audited."""

from __future__ import annotations

import getpass

import typer
from rich.markup import escape
from rich.table import Table

from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json
from mailer.db.session import transaction
from subscribers.addresses import InvalidAddress, normalize_email
from subscribers.suppressions import NotSuppressed, SuppressionReason, lift, listing, suppress

app = typer.Typer(help="The suppression list.", no_args_is_help=True)


@app.command("list")
def list_(
    reason: str | None = typer.Option(None, help="Only this reason, e.g. 'hard bounce'."),
    limit: int = typer.Option(100, min=1, max=100_000),
    as_json: bool = JsonOption,
) -> None:
    """Suppressed addresses, newest first, with reason, source and time."""
    with open_runtime() as runtime, runtime.sessions() as session:
        rows = listing(session, reason=reason, limit=limit)
    if as_json:
        print_json([vars(row) for row in rows])
        return
    table = Table("email", "reason", "source", "since", "detail")
    for row in rows:
        table.add_row(
            row.email,
            row.reason,
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
    address = _address(email)
    with open_runtime() as runtime, transaction(runtime.sessions) as session:
        added = suppress(
            session,
            address,
            SuppressionReason.OPERATOR,
            source=f"operator:{_operator()}",
            detail=note,
        )
    console.print(f"{address} suppressed" if added else f"{address} was already suppressed")


@app.command("lift")
def lift_(
    email: str,
    note: str = typer.Option(..., "--note", help="Why it is lifted (audited)."),
    as_json: bool = JsonOption,
) -> None:
    """Lift a suppression. The address may be mailed again; the lift is recorded."""
    address = _address(email)
    with open_runtime() as runtime, transaction(runtime.sessions) as session:
        try:
            lifted = lift(session, address, operator=_operator(), note=note)
        except NotSuppressed as exc:
            fail(str(exc))
    if as_json:
        print_json(vars(lifted))
    else:
        console.print(f"lifted: {address} (was: {lifted.reason}, from {lifted.source})")


def _address(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidAddress as exc:
        fail(str(exc))


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown operator"
