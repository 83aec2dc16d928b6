"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import text

from mailer.config import Settings
from mailer.db.migrate import is_current
from mailer.runtime import Runtime
from mailer.web import api, stats, status, unsubscribe, webhooks

PAGES = Path(__file__).parent / "pages"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    # Unsubscribe URLs carry a token: never leak them to other sites.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings or Settings())
    # Refuse to start without a signing key rather than serve links we cannot check.
    runtime.settings.require_secret_key()
    app = FastAPI(title="mailer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    app.state.pages = Jinja2Templates(directory=PAGES)
    app.state.webhook_verifier = webhooks.make_verifier(runtime.settings)
    app.state.policy_runner = webhooks.PolicyRunner(runtime)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
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

    app.include_router(unsubscribe.router)
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(stats.router)
    app.include_router(status.router)
    return app
