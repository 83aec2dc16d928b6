"""``mailer db``: schema migrations."""

from __future__ import annotations

import typer

from mailer.cli.common import console, open_runtime
from mailer.db import migrate

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (the latest by default)."""
    with open_runtime(migrated=False) as runtime:
        migrate.upgrade(runtime.engine, revision)
        console.print(f"schema at revision {migrate.current_revision(runtime.engine)}")


@app.command()
def current() -> None:
    """Show the schema revision and whether migrations are pending."""
    with open_runtime(migrated=False) as runtime:
        revision = migrate.current_revision(runtime.engine)
        head = migrate.head_revision()
        state = "up to date" if revision == head else f"pending (latest is {head})"
        console.print(f"revision {revision or 'none'}: {state}")
