"""The ``mailer`` command line."""

from __future__ import annotations

import typer

from mailer.cli import briefings, db, demo, editions, serve, subscribers

app = typer.Typer(
    name="mailer",
    help="Daily briefing newsletters: pull, compose, render, dispatch, track.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(briefings.app, name="briefings")
app.add_typer(editions.app, name="editions")
app.add_typer(subscribers.app, name="subscribers")
app.command("pull")(briefings.pull)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)


def main() -> None:
    app()
