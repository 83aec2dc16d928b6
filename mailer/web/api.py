"""The push API for a CMS: ``POST /api/briefings`` and ``POST /api/subscribers`` with a
bearer token.

Briefings: 201 with the stored briefing when it is new, 200 for a re-post (identical or
changed), 401 without a valid token, 422 with field errors for bad input, 413 for an
oversized body. Subscribers: 202 with the same body whether or not the address was
known (see ``mailer.app.readers``), 401, 422, 429 when throttled.

The token is checked before the body is read (an anonymous caller learns nothing of the
schema, and costs us no parse), throttled per client (``mailer.app.credentials``): 429
with ``Retry-After`` while a client that kept failing waits.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from mailer import jsondata
from mailer.app import credentials, readers
from mailer.app.errors import AuthenticationFailed, Invalid, NotFound, RateLimited, Throttled
from mailer.briefings.parser import BriefingError
from mailer.briefings.push import BriefingIn, store_pushed
from mailer.briefings.store import StoreOutcome, as_dict
from mailer.db.models import Source
from mailer.db.session import transaction
from mailer.runtime import Runtime
from mailer.web.auth import client_of
from mailer.web.limits import API_BODY_BYTES, API_SIGNUP_BYTES

router = APIRouter(prefix="/api")
NEEDS_TOKEN = "send 'Authorization: Bearer <API token>'"  # noqa: S105 (words, not a secret)


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def _too_many(message: str, retry_after: float) -> JSONResponse:
    return JSONResponse(
        {"detail": message},
        status_code=429,
        headers={"Retry-After": str(max(1, int(retry_after)))},
    )


async def _token_source(request: Request) -> tuple[str, int] | JSONResponse:
    """The bearer token and the id of the source it speaks for, or the refusal to send."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _unauthorized(NEEDS_TOKEN)
    runtime: Runtime = request.app.state.runtime
    try:
        source_id = await run_in_threadpool(
            credentials.api_token_source, runtime, token, client_of(request)
        )
    except Throttled as exc:
        return _too_many(exc.message, exc.retry_after)
    except AuthenticationFailed as exc:
        return _unauthorized(exc.message)
    return token, source_id


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=422)


@router.post("/briefings", max_body_size=API_BODY_BYTES)
async def push_briefing(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    known = await _token_source(request)
    if isinstance(known, JSONResponse):
        return known
    _token, source_id = known
    body = await request.body()
    try:
        item = BriefingIn.model_validate_json(body)
    except ValidationError as exc:
        return _unprocessable(
            [
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            ]
        )
    return await run_in_threadpool(_store, runtime, source_id, item)


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


def _store(runtime: Runtime, source_id: int, item: BriefingIn) -> JSONResponse:
    with transaction(runtime.sessions) as session:
        source = session.get(Source, source_id)
        if source is None:  # deleted since its token was checked
            return _unauthorized(credentials.REFUSED)
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


@router.post("/subscribers", max_body_size=API_SIGNUP_BYTES)
async def add_subscriber(request: Request) -> JSONResponse:
    """A sign-up from a CMS: the lists' opt-in modes apply as on the public form."""
    runtime: Runtime = request.app.state.runtime
    known = await _token_source(request)
    if isinstance(known, JSONResponse):
        return known
    token, _source_id = known
    body = await request.body()
    try:
        fields = readers.subscribe_payload(jsondata.parse(body))
    except ValueError as exc:
        return _unprocessable([{"loc": ["body"], "msg": str(exc), "type": "json_invalid"}])
    except Invalid as exc:
        return _unprocessable(
            [{"loc": ["body", exc.field or ""], "msg": exc.message, "type": "value_error"}]
        )
    client = client_of(request)
    try:
        await run_in_threadpool(
            lambda: readers.subscribe_api(runtime, token, client=client, **fields)
        )
    except NotFound:  # revoked since it was checked
        return _unauthorized(credentials.REFUSED)
    except Invalid as exc:
        return _unprocessable(
            [{"loc": ["body", exc.field or ""], "msg": exc.message, "type": "value_error"}]
        )
    except RateLimited as exc:
        return _too_many(exc.message, exc.retry_after)
    return JSONResponse({"status": "accepted"}, status_code=202)
