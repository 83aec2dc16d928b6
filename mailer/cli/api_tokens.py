"""``mailer api-tokens``: keys for a CMS to push briefings."""

from __future__ import annotations

import typer
from rich.table import Table
from sqlalchemy import select

from mailer.briefings.api_tokens import create_token, revoke
from mailer.briefings.sources import SourceError
from mailer.cli.common import console, fail, open_runtime
from mailer.db.models import ApiToken
from mailer.db.session import transaction

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
            with transaction(runtime.sessions) as session:
                token = create_token(
                    session, name, newsletter_slug=newsletter, mark_ready=not draft
                )
        except SourceError as exc:
            fail(str(exc))
    console.print(f"token for {name!r} (shown once; store it in the CMS now):")
    typer.echo(token)


@app.command("list")
def list_tokens() -> None:
    """Tokens by name (never their values)."""
    with open_runtime() as runtime, runtime.sessions() as session:
        table = Table("name", "created", "last used", "revoked")
        for token in session.scalars(select(ApiToken).order_by(ApiToken.name)):
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
    with open_runtime() as runtime, transaction(runtime.sessions) as session:
        if not revoke(session, name):
            fail(f"no live token named {name!r}")
    console.print(f"token {name!r} revoked")
