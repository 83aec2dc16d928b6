"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from mailer.config import Settings
from mailer.db.migrate import is_current
from mailer.runtime import Runtime
from mailer.web import (
    api,
    errors,
    preview_link,
    readers,
    stats,
    status,
    unsubscribe,
    webhooks,
)
from mailer.web.security import headers_for
from mailer.web.views import make_templates
from mailer.web.workspace import admin, audience, briefings, editions, signin, today

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings or Settings())
    # Refuse to start without a signing key rather than serve links we cannot check.
    runtime.settings.require_secret_key()
    app = FastAPI(title="mailer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.state.pages = make_templates()
    app.state.webhook_verifier = webhooks.make_verifier(runtime.settings)
    app.state.policy_runner = webhooks.PolicyRunner(runtime)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        # A route that set its own (the preview frame) keeps them.
        for name, value in headers_for(request.url.path).items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        health: dict[str, object] = {"status": "ok"}
        if not runtime.settings.sendgrid_webhook_verify:
            # Loud on purpose: an unverified webhook lets anyone suppress addresses.
            health["warnings"] = ["SendGrid webhook signature verification is OFF"]
        return health

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        try:
            with runtime.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current = is_current(runtime.engine)
        except Exception as exc:  # any database failure means "not ready"
            return JSONResponse(
                {"status": "unavailable", "database": type(exc).__name__}, status_code=503
            )
        if not current:
            return JSONResponse(
                {"status": "unavailable", "migrations": "pending: run `mailer db upgrade`"},
                status_code=503,
            )
        return JSONResponse({"status": "ok"})

    errors.install(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(unsubscribe.router)
    app.include_router(preview_link.router)
    app.include_router(readers.router)
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(status.router)
    app.include_router(signin.router)
    app.include_router(today.router)
    app.include_router(briefings.router)
    app.include_router(editions.router)
    app.include_router(stats.router)
    app.include_router(admin.router)
    app.include_router(audience.router)
    return app
