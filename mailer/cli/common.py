"""What every command shares: settings, runtime, errors, JSON output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from mailer import logs
from mailer.config import ConfigError, Settings
from mailer.db.migrate import is_current
from mailer.runtime import Runtime

console = Console()
errors = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")

# `mailer --log-level X …`: above MAILER_LOG_LEVEL, for this run.
_log_level: str | None = None


def set_log_level(level: str | None) -> None:
    global _log_level
    _log_level = level.upper() if level else None


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def load_settings(*, service: bool = False) -> Settings:
    """The settings, with logging set up: ``--log-level``, else ``MAILER_LOG_LEVEL``, else
    WARNING for a command (what it prints is for a person) or INFO for a ``service``
    (serve, worker, scheduler: their log is what an operator reads)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        details = "; ".join(
            f"MAILER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {details}")
    level = _log_level or settings.log_level or ("INFO" if service else "WARNING")
    logs.configure(level, settings.log_format)
    return settings


@contextmanager
def open_runtime(
    settings: Settings | None = None, *, migrated: bool = True, service: bool = False
) -> Iterator[Runtime]:
    runtime = Runtime(settings or load_settings(service=service))
    try:
        if migrated and not is_current(runtime.engine):
            fail("the database schema is not up to date: run `mailer db upgrade` first")
        yield runtime
    except ConfigError as exc:
        fail(str(exc))
    finally:
        runtime.close()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
