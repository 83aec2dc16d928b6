"""How the application layer's errors, and the web's own refusals, reach people.

One mapping for every route: a page gets an error page with the message; an htmx
request gets the message in the page's flash area (the page around it stays as it was);
JSON gets ``{"detail": message}``. The message is the domain's own: it says what is
wrong, never a stack trace or a secret.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError

from mailer.app.errors import (
    AppError,
    AuthenticationFailed,
    Conflict,
    Invalid,
    NotFound,
    PermissionDenied,
    RateLimited,
    Throttled,
)
from mailer.web.auth import Forbidden, SignInRequired, sign_in_url
from mailer.web.views import is_htmx, page

log = logging.getLogger(__name__)

# What to tell a client whose request met a database that was locked, busy or gone.
RETRY_AFTER_SECONDS = 5

STATUS = (
    (NotFound, 404, "Not found"),
    (Invalid, 422, "That did not work"),
    (Conflict, 409, "That cannot be done now"),
    (PermissionDenied, 403, "Not allowed"),
    (Throttled, 429, "Too many attempts"),
    (AuthenticationFailed, 401, "Sign-in needed"),
    (RateLimited, 429, "Too many requests"),
)


def wants_json(request: Request) -> bool:
    path = request.url.path
    return (
        path.endswith(".json")
        or path.startswith(("/api/", "/status", "/webhooks/"))
        or "application/json" in request.headers.get("accept", "")
    )


def problem(request: Request, status: int, heading: str, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"detail": message}, status_code=status)
    if is_htmx(request):
        response = page(
            request, "workspace/_flash.html", {"message": message, "kind": "error"}, status
        )
        response.headers["HX-Retarget"] = "#flash"
        response.headers["HX-Reswap"] = "outerHTML"
        return response
    back = request.headers.get("referer") if request.method != "GET" else None
    return page(
        request,
        "workspace/error.html",
        {"heading": heading, "message": message, "back": back},
        status,
    )


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "(no route)"))


def install(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, _exc: SignInRequired) -> Response:
        if wants_json(request):
            return JSONResponse(
                {"detail": "sign in, or send 'Authorization: Bearer <API token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": sign_in_url(request)})
        if request.method != "GET":
            return RedirectResponse("/signin", status_code=303)
        return RedirectResponse(sign_in_url(request), status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return problem(request, 403, "Not allowed", exc.message)

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        for kind, status, heading in STATUS:
            if isinstance(exc, kind):
                response = problem(request, status, heading, exc.message)
                retry = getattr(exc, "retry_after", None)
                if retry is not None:
                    response.headers["Retry-After"] = str(max(1, int(retry)))
                return response
        return problem(request, 400, "That did not work", exc.message)

    @app.exception_handler(OperationalError)
    async def database_unavailable(request: Request, exc: OperationalError) -> Response:
        # A lock held too long (a migration's, another writer's) or a lost connection:
        # nothing was changed, and the same request will do later. Not a 500.
        # The driver's own first line ("database is locked", "canceling statement due
        # to lock timeout"), not SQLAlchemy's text, which carries the statement's values.
        detail = (str(exc.orig).splitlines() or [""])[0][:200]
        log.warning(
            "web.database_unavailable",
            # The route's pattern, not the path: reader links carry their token in it.
            extra={"route": _route(request), "error": type(exc.orig).__name__, "detail": detail},
        )
        response = problem(
            request,
            503,
            "Busy for a moment",
            "The database is busy or out of reach just now; nothing was changed. "
            "Try again in a few seconds.",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "the request"
        return problem(request, 422, "That did not work", f"{where}: {first.get('msg', 'invalid')}")
