"""The web app built from the environment, for an ASGI server's own worker processes.

``mailer serve --workers N`` starts its web processes with it, and it is what to give
any other ASGI server::

    uvicorn --factory mailer.web.asgi:app_from_environment --workers 4 --no-server-header

Each process reads the same settings (``MAILER_*``, the config file) and keeps no state
of its own that another needs: sessions, throttles and rate limits live in the database.
"""

from __future__ import annotations

from fastapi import FastAPI

from mailer import logs
from mailer.config import Settings
from mailer.web.app import create_app


def app_from_environment() -> FastAPI:
    settings = Settings()
    # A web process is a service: its log is what an operator reads.
    logs.configure(settings.log_level or "INFO", settings.log_format)
    return create_app(settings)
