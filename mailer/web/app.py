"""FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

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
from mailer.web.limits import (
    DEFAULT_BODY_BYTES,
    FORM_LIMITS,
    PUBLIC_FORM_BYTES,
    RefuseMultipart,
    ids_in_range,
)
from mailer.web.security import SecurityHeaders
from mailer.web.views import make_templates
from mailer.web.workspace import admin, audience, briefings, editions, signin, today

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """The app, on ``runtime`` (whose owner closes it) or on a runtime of its own, which
    it closes when the server stops (the web processes of ``serve --workers``): its group
    writers finish what they hold first."""
    owned = runtime is None
    runtime = runtime or Runtime(settings or Settings())
    # Refuse to start without a signing key rather than serve links we cannot check.
    runtime.settings.require_secret_key()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await run_in_threadpool(runtime.close)

    app = FastAPI(
        lifespan=lifespan,
        title="mailer",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Every body is bounded (see limits.py); public surfaces set less below.
        max_body_size=DEFAULT_BODY_BYTES,
        form_limits=FORM_LIMITS,
        # A path that matches no route is 404, never a redirect elsewhere: a one-click
        # POST must not be redirected (RFC 8058), and a link means what it says.
        redirect_slashes=False,
        dependencies=[Depends(ids_in_range)],
    )
    app.state.runtime = runtime
    app.state.pages = make_templates()
    app.state.webhook_verifier = webhooks.make_verifier(runtime.settings)
    app.state.policy_runner = webhooks.PolicyRunner(runtime)

    app.add_middleware(RefuseMultipart)
    app.add_middleware(SecurityHeaders, https=runtime.settings.base_url.startswith("https://"))

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
    app.include_router(unsubscribe.router, max_body_size=PUBLIC_FORM_BYTES)
    app.include_router(preview_link.router, max_body_size=PUBLIC_FORM_BYTES)
    app.include_router(readers.router, max_body_size=PUBLIC_FORM_BYTES)
    # Each route of these sets its own limit (API_BODY_BYTES, API_SIGNUP_BYTES).
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(status.router)
    app.include_router(signin.router, max_body_size=PUBLIC_FORM_BYTES)
    app.include_router(today.router)
    app.include_router(briefings.router)
    app.include_router(editions.router)
    app.include_router(stats.router)
    app.include_router(admin.router)
    app.include_router(audience.router)
    return app
