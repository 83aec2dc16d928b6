"""``mailer lists``: create, rename, describe, set, delete and list mailing lists."""

from __future__ import annotations

import typer
from rich.table import Table

from mailer.app import lists
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="Mailing lists: opt-in mode, visibility, counts.", no_args_is_help=True)

OptInOption = typer.Option(None, "--opt-in", help="double (a confirmation email) or single.")
PublicOption = typer.Option(
    None, "--public/--private", help="Offered on the subscribe form and preference page?"
)


def _show(info: lists.ListInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.as_dict())
        return
    used = ", ".join(info.newsletters) or "no newsletter"
    console.print(
        f"[bold]{info.name}[/] ({info.opt_in} opt-in, {'public' if info.public else 'private'}): "
        f"{info.active} active, {info.pending} pending, {info.unsubscribed} unsubscribed; {used}",
        highlight=False,
        markup=True,
    )


@app.command()
def create(
    name: str,
    description: str = typer.Option("", "--description"),
    opt_in: str = typer.Option("double", "--opt-in", help="double or single."),
    public: bool = typer.Option(False, "--public/--private"),
    as_json: bool = JsonOption,
) -> None:
    """Create a list."""
    with open_runtime() as runtime:
        try:
            info = lists.create_list(
                runtime, Actor.cli(), name, description=description, opt_in=opt_in, public=public
            )
        except AppError as exc:
            fail(exc.message)
    _show(info, as_json)


@app.command()
def rename(name: str, new_name: str, as_json: bool = JsonOption) -> None:
    """Rename a list (newsletters and subscriptions follow)."""
    with open_runtime() as runtime:
        try:
            info = lists.rename_list(runtime, Actor.cli(), name, new_name)
        except AppError as exc:
            fail(exc.message)
    _show(info, as_json)


@app.command()
def describe(name: str, description: str, as_json: bool = JsonOption) -> None:
    """Set a list's description (shown to readers on public lists)."""
    with open_runtime() as runtime:
        try:
            info = lists.describe_list(runtime, Actor.cli(), name, description)
        except AppError as exc:
            fail(exc.message)
    _show(info, as_json)


@app.command("set")
def set_(
    name: str,
    opt_in: str | None = OptInOption,
    public: bool | None = PublicOption,
    as_json: bool = JsonOption,
) -> None:
    """Set a list's opt-in mode and visibility."""
    with open_runtime() as runtime:
        try:
            info = lists.set_list(runtime, Actor.cli(), name, opt_in=opt_in, public=public)
        except AppError as exc:
            fail(exc.message)
    _show(info, as_json)


@app.command()
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", help="Do not ask."),
    as_json: bool = JsonOption,
) -> None:
    """Delete a list and its subscriptions (refused while a newsletter uses it)."""
    if not yes:
        typer.confirm(f"Delete list {name!r} and its subscriptions?", abort=True)
    with open_runtime() as runtime:
        try:
            deleted = lists.delete_list(runtime, Actor.cli(), name)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json({"deleted": deleted})
    else:
        console.print(f"list {deleted!r} deleted", highlight=False, markup=False)


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """Every list with its subscribers counted by status."""
    with open_runtime() as runtime:
        try:
            rows = lists.list_lists(runtime, Actor.cli())
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    table = Table("name", "opt-in", "public", "active", "pending", "unsubscribed", "newsletters")
    for r in rows:
        table.add_row(
            r.name,
            r.opt_in,
            "yes" if r.public else "no",
            str(r.active),
            str(r.pending),
            str(r.unsubscribed),
            ", ".join(r.newsletters),
        )
    console.print(table)
