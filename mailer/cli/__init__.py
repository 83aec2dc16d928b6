"""The ``mailer`` command line."""

from __future__ import annotations

from enum import StrEnum

import typer

from mailer.cli import (
    accounts,
    api_tokens,
    audit,
    bounces,
    briefings,
    common,
    db,
    demo,
    editions,
    lists,
    newsletters,
    scheduler,
    segments,
    serve,
    sources,
    subscribers,
    suppressions,
    worker,
)

app = typer.Typer(
    name="mailer",
    help="Daily briefing newsletters: pull, compose, render, dispatch, track.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@app.callback()
def options(
    log_level: LogLevel | None = typer.Option(
        None,
        "--log-level",
        case_sensitive=False,
        help="Log this level and up to stderr (default: MAILER_LOG_LEVEL, else WARNING; "
        "INFO for serve, worker and scheduler).",
    ),
) -> None:
    """Daily briefing newsletters: pull, compose, render, dispatch, track."""
    common.set_log_level(log_level.value if log_level else None)


app.add_typer(db.app, name="db")
app.add_typer(briefings.app, name="briefings")
app.add_typer(editions.app, name="editions")
app.add_typer(newsletters.app, name="newsletters")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(lists.app, name="lists")
app.add_typer(segments.app, name="segments")
app.add_typer(sources.app, name="sources")
app.add_typer(api_tokens.app, name="api-tokens")
app.add_typer(bounces.app, name="bounces")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(accounts.app, name="accounts")
app.add_typer(audit.app, name="audit")
app.command("pull")(sources.pull)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("scheduler")(scheduler.scheduler)


def main() -> None:
    app()
