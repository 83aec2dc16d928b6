"""``mailer api-tokens``: keys for a CMS to push briefings."""

from __future__ import annotations

import typer
from rich.table import Table

from mailer.app import sources
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import console, fail, open_runtime

app = typer.Typer(help="Push API tokens.", no_args_is_help=True)


@app.command()
def create(
    name: str,
    newsletter: str | None = typer.Option(None, "--newsletter", help="Only for this newsletter."),
    draft: bool = typer.Option(False, "--draft", help="Pushed briefings wait for an editor."),
) -> None:
    """Make a token; it is shown once and only its hash is kept."""
    with open_runtime() as runtime:
        try:
            token = sources.create_api_token(
                runtime, Actor.cli(), name, newsletter=newsletter, draft=draft
            )
        except AppError as exc:
            fail(exc.message)
    console.print(f"token for {name!r} (shown once; store it in the CMS now):")
    typer.echo(token)


@app.command("list")
def list_tokens() -> None:
    """Tokens by name (never their values)."""
    with open_runtime() as runtime:
        try:
            found = sources.list_api_tokens(runtime, Actor.cli())
        except AppError as exc:
            fail(exc.message)
    table = Table("name", "created", "last used", "revoked")
    for token in found:
        table.add_row(
            token.name,
            token.created_at.isoformat()[:16],
            token.last_used_at.isoformat()[:16] if token.last_used_at else "never",
            token.revoked_at.isoformat()[:16] if token.revoked_at else "",
        )
    console.print(table)


@app.command("revoke")
def revoke_token(name: str) -> None:
    """Stop a token from working, at once."""
    with open_runtime() as runtime:
        try:
            sources.revoke_api_token(runtime, Actor.cli(), name)
        except AppError as exc:
            fail(exc.message)
    console.print(f"token {name!r} revoked")
