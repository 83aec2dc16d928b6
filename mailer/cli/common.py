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


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        details = "; ".join(
            f"MAILER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {details}")
    logs.configure(settings.log_level, settings.log_format)
    return settings


@contextmanager
def open_runtime(settings: Settings | None = None, *, migrated: bool = True) -> Iterator[Runtime]:
    runtime = Runtime(settings or load_settings())
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
