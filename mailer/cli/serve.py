"""``mailer serve``: the web app."""

from __future__ import annotations

import typer
import uvicorn

from mailer.cli.common import fail, load_settings
from mailer.config import ConfigError
from mailer.web.app import create_app


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the web app (unsubscribe links, health checks)."""
    settings = load_settings()
    try:
        app = create_app(settings)
    except ConfigError as exc:
        fail(str(exc))
    # Our own JSON logs cover requests; uvicorn's access log would print tokens in URLs.
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)
