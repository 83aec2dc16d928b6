"""``mailer accounts``: who may sign in to the workspace, with which role.

The command line acts as an administrator (``Actor.cli()``). Passwords are never
command-line arguments (they would stay in shell histories and process lists): either
the account gets a one-time sign-in link, or ``--password-prompt`` asks twice with
hidden input, or reads ``MAILER_ACCOUNT_PASSWORD`` when a script sets it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from mailer.app import accounts
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="Workspace accounts: create, list, disable, reset.", no_args_is_help=True)

PASSWORD_ENV = "MAILER_ACCOUNT_PASSWORD"  # noqa: S105 (the variable's name, not a password)

PasswordPromptOption = typer.Option(
    False,
    "--password-prompt",
    help=f"Set a password now, asked twice with hidden input (or read from {PASSWORD_ENV}) "
    "instead of printing a one-time sign-in link.",
)


@contextmanager
def _app_errors() -> Iterator[None]:
    try:
        yield
    except AppError as exc:
        fail(exc.message)


def _password(wanted: bool) -> str | None:
    if not wanted:
        return None
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


def _print_link(email: str, link: str, hours: int) -> None:
    console.print(
        f"one-time sign-in link for {escape(email)} (valid {hours} hours; "
        "give it to them only, it lets whoever opens it set the password):",
        highlight=False,
    )
    # Not through Rich: a link wrapped at the terminal's width would not paste whole.
    typer.echo(link)


@app.command()
def create(
    email: str,
    role: str = typer.Option(..., "--role", help="admin or editor."),
    password_prompt: bool = PasswordPromptOption,
    as_json: bool = JsonOption,
) -> None:
    """Create an account; prints its one-time sign-in link unless a password is set."""
    password = _password(password_prompt)
    with open_runtime() as runtime, _app_errors():
        view, link = accounts.create_account(runtime, Actor.cli(), email, role, password)
        hours = runtime.settings.sign_in_link_hours
    if as_json:
        print_json({**view.as_dict(), "sign_in_link": link})
        return
    console.print(f"account {escape(view.email)} created ({view.role})", highlight=False)
    if link is not None:
        _print_link(view.email, link, hours)


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """Every account, by address."""
    with open_runtime() as runtime, _app_errors():
        views = accounts.list_accounts(runtime, Actor.cli())
    if as_json:
        print_json([view.as_dict() for view in views])
        return
    table = Table(box=box.SIMPLE_HEAD)
    # Addresses whole, even on a narrow terminal: the other columns give way.
    longest = max((len(view.email) for view in views), default=5)
    table.add_column("email", min_width=min(longest, 48), overflow="fold")
    for name in ("role", "status", "password", "created", "last sign-in"):
        table.add_column(name)
    for view in views:
        table.add_row(
            escape(view.email),
            view.role,
            "disabled" if view.disabled else "enabled",
            "set" if view.has_password else "not set",
            f"{view.created_at:%Y-%m-%d}",
            f"{view.last_sign_in_at:%Y-%m-%d %H:%M}" if view.last_sign_in_at else "never",
        )
    console.print(table)


@app.command()
def disable(email: str) -> None:
    """Stop an account from signing in; its sessions end at once."""
    with open_runtime() as runtime, _app_errors():
        view = accounts.disable_account(runtime, Actor.cli(), email)
    console.print(f"account {escape(view.email)} disabled", highlight=False)


@app.command()
def enable(email: str) -> None:
    """Let a disabled account sign in again."""
    with open_runtime() as runtime, _app_errors():
        view = accounts.enable_account(runtime, Actor.cli(), email)
    console.print(f"account {escape(view.email)} enabled", highlight=False)


@app.command()
def reset(
    email: str,
    password_prompt: bool = PasswordPromptOption,
    as_json: bool = JsonOption,
) -> None:
    """Clear an account's password and end its sessions; prints a new sign-in link."""
    password = _password(password_prompt)
    with open_runtime() as runtime, _app_errors():
        view, link = accounts.reset_account(runtime, Actor.cli(), email, password)
        hours = runtime.settings.sign_in_link_hours
    if as_json:
        print_json({**view.as_dict(), "sign_in_link": link})
        return
    done = "password set" if link is None else "password cleared"
    console.print(f"account {escape(view.email)} reset: {done}, sessions ended", highlight=False)
    if link is not None:
        _print_link(view.email, link, hours)


@app.command()
def role(email: str, new_role: str = typer.Argument(..., metavar="ROLE")) -> None:
    """Make an account an admin or an editor (from its next request)."""
    with open_runtime() as runtime, _app_errors():
        view = accounts.change_role(runtime, Actor.cli(), email, new_role)
    console.print(f"account {escape(view.email)} is now {view.role}", highlight=False)


@app.command("end-sessions")
def end_sessions(email: str) -> None:
    """Sign an account out everywhere, at once (it can sign in again)."""
    with open_runtime() as runtime, _app_errors():
        ended = accounts.end_sessions(runtime, Actor.cli(), email)
    console.print(f"{ended} session{'s' if ended != 1 else ''} ended", highlight=False)
