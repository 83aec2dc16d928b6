"""The push API for a CMS: ``POST /api/briefings`` and ``POST /api/subscribers`` with a
bearer token.

Briefings: 201 with the stored briefing when it is new, 200 for a re-post (identical or
changed), 401 without a valid token, 422 with field errors for bad input, 413 for an
oversized body. Subscribers: 202 with the same body whether or not the address was
known (see ``mailer.app.readers``), 401, 422, 429 when throttled.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from mailer.app import readers
from mailer.app.errors import Invalid, NotFound, RateLimited
from mailer.briefings.api_tokens import authenticate
from mailer.briefings.parser import BriefingError
from mailer.briefings.push import BriefingIn, store_pushed
from mailer.briefings.store import StoreOutcome, as_dict
from mailer.db.session import transaction
from mailer.runtime import Runtime
from mailer.web.auth import client_of
from mailer.web.bodies import BodyTooLarge, read_capped

router = APIRouter(prefix="/api")
MAX_REQUEST_BYTES = 1_048_576


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=422)


@router.post("/briefings")
async def push_briefing(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("send 'Authorization: Bearer <token>'")
    try:
        body = await read_capped(request, MAX_REQUEST_BYTES)
    except BodyTooLarge as exc:
        return JSONResponse({"detail": str(exc)}, status_code=413)
    try:
        item = BriefingIn.model_validate_json(body)
    except ValidationError as exc:
        return _unprocessable(
            [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            ]
        )
    return await run_in_threadpool(_store, runtime, token.strip(), item)


def _loc(field: str | None) -> list[str | int]:
    """'sections[2].label' -> ['sections', 2, 'label'], as pydantic reports locations."""
    if not field:
        return []
    loc: list[str | int] = []
    for part in field.split("."):
        name, _, index = part.partition("[")
        loc.append(name)
        if index.rstrip("]").isdigit():
            loc.append(int(index.rstrip("]")))
    return loc


def _store(runtime: Runtime, token: str, item: BriefingIn) -> JSONResponse:
    with transaction(runtime.sessions) as session:
        source = authenticate(session, token)
        if source is None:
            return _unauthorized("unknown or revoked token")
        patterns = runtime.settings.boilerplate_patterns
        try:
            try:
                with session.begin_nested():
                    briefing, outcome = store_pushed(session, source, item, boilerplate=patterns)
            except IntegrityError:
                # The same item posted twice at once: the other post inserted it first,
                # so this one is a re-post of it.
                briefing, outcome = store_pushed(session, source, item, boilerplate=patterns)
        except BriefingError as exc:
            return _unprocessable(
                [{"loc": ["body", *_loc(exc.field)], "msg": exc.reason, "type": "value_error"}]
            )
        payload = {**as_dict(briefing), "outcome": outcome.value}
    return JSONResponse(payload, status_code=201 if outcome is StoreOutcome.NEW else 200)


MAX_SUBSCRIBER_BYTES = 16_384


@router.post("/subscribers")
async def add_subscriber(request: Request) -> JSONResponse:
    """A sign-up from a CMS: the lists' opt-in modes apply as on the public form."""
    runtime: Runtime = request.app.state.runtime
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorized("send 'Authorization: Bearer <token>'")
    try:
        body = await read_capped(request, MAX_SUBSCRIBER_BYTES)
    except BodyTooLarge as exc:
        return JSONResponse({"detail": str(exc)}, status_code=413)
    try:
        fields = readers.subscribe_payload(json.loads(body))
    except ValueError:
        return _unprocessable([{"loc": ["body"], "msg": "not JSON", "type": "json_invalid"}])
    except Invalid as exc:
        return _unprocessable(
            [{"loc": ["body", exc.field or ""], "msg": exc.message, "type": "value_error"}]
        )
    client = client_of(request)
    try:
        await run_in_threadpool(
            lambda: readers.subscribe_api(runtime, token.strip(), client=client, **fields)
        )
    except NotFound:
        return _unauthorized("unknown or revoked token")
    except Invalid as exc:
        return _unprocessable(
            [{"loc": ["body", exc.field or ""], "msg": exc.message, "type": "value_error"}]
        )
    except RateLimited as exc:
        return JSONResponse(
            {"detail": exc.message},
            status_code=429,
            headers={"Retry-After": str(max(1, int(exc.retry_after)))},
        )
    return JSONResponse({"status": "accepted"}, status_code=202)
