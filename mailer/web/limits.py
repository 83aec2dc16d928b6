"""How much any request may send: body sizes by surface, form limits, and multipart.

Every route has a body limit (FastAPI's ``max_body_size``: a declared ``Content-Length``
over it is refused before anything is read, a streamed body as soon as it passes it,
with 413). The app's default suits the workspace's forms; the public surfaces, which
anyone may post to, get far less. Forms parsed by hand (``read_form``) get the same
field limits as those FastAPI parses, and no file parts at all.

Multipart bodies are refused with 415 except on the routes that need them (``FORM_RULES``):
the CSV upload (a file) and the unsubscribe link (RFC 8058 says mailbox providers SHOULD post
one-click requests as ``multipart/form-data``; no file part is accepted there). Starlette
spools file parts to a temporary file, so this keeps uploads off the disk everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.app.errors import NotFound

# The workspace's forms: a briefing's text or a subscriber's attributes (20,000
# characters) percent-encoded as UTF-8, with room to spare.
DEFAULT_BODY_BYTES: Final = 512 * 1024
# Pages and links anyone may post to (unsubscribe, subscribe, preferences, sign-in).
PUBLIC_FORM_BYTES: Final = 16 * 1024
# The push API's briefings and SendGrid's event batches (SendGrid posts up to ~768 KB).
API_BODY_BYTES: Final = 1024 * 1024
# A sign-up through the API.
API_SIGNUP_BYTES: Final = 16 * 1024

MAX_FIELDS: Final = 500
# One form field's value; the workspace's longest fields are 20,000 characters.
MAX_FIELD_BYTES: Final = 128 * 1024
# What FastAPI applies to the Form parameters it parses.
FORM_LIMITS: Final[Any] = {
    "max_fields": MAX_FIELDS,
    "max_files": 0,
    "max_part_size": MAX_FIELD_BYTES,
}

# The CSV upload's file (``audience.MAX_UPLOAD``), and the same text posted back
# urlencoded from the preview to be imported (percent-encoding triples a byte at most).
UPLOAD_BYTES: Final = 5 * 1024 * 1024
UPLOAD_BODY_BYTES: Final = UPLOAD_BYTES + 64 * 1024
IMPORT_BODY_BYTES: Final = 3 * UPLOAD_BYTES + 64 * 1024


@dataclass(frozen=True)
class FormRule:
    files: int = 0
    field_bytes: int = MAX_FIELD_BYTES
    multipart: bool = False


# The forms that differ from the rule (no files, fields up to MAX_FIELD_BYTES,
# urlencoded only). A path ending in "/" is a prefix.
FORM_RULES: Final = {
    "/admin/import/preview": FormRule(files=1, multipart=True),
    "/admin/import": FormRule(field_bytes=IMPORT_BODY_BYTES),
    "/u/": FormRule(multipart=True),
}


def form_rule(path: str) -> FormRule:
    for pattern, rule in FORM_RULES.items():
        if path == pattern or (pattern.endswith("/") and path.startswith(pattern)):
            return rule
    return FormRule()


# Ids are BIGINT columns: a larger number names nothing (and would not bind).
MAX_ID: Final = 2**63 - 1


async def ids_in_range(request: Request) -> None:
    """An app-wide dependency: a path id (``…_id``) that is not a positive BIGINT is 404.

    FastAPI would pass a 30-digit id on, and the database driver would fail to bind it.
    Async because it never blocks: FastAPI hands a plain function to a worker thread,
    which on every request of every route cost more than the check itself.
    """
    for name, value in request.path_params.items():
        digits = isinstance(value, str) and value.isascii() and value.isdigit()
        if name.endswith("_id") and not (digits and 0 < int(value) <= MAX_ID):
            raise NotFound(f"no such {name.removesuffix('_id')}")


class FormRefused(ValueError):
    """The form broke a limit (too many fields, a file part, a field too long)."""


async def read_form(request: Request) -> FormData:
    """The request's form within its path's ``FormRule``. On a path whose rule takes
    multipart, call it only once the caller is known (a session, a signed link): a file
    part is spooled to disk as it is read. Elsewhere multipart never gets this far
    (``RefuseMultipart``).

    Raises FormRefused; a body over the route's limit stays the framework's 413.
    """
    rule = form_rule(request.url.path)
    try:
        return await request.form(
            max_fields=MAX_FIELDS, max_files=rule.files, max_part_size=rule.field_bytes
        )
    except HTTPException as exc:
        # Starlette's words for a broken limit, as a 400; a 413 is the body limit's.
        if exc.status_code != 400:
            raise
        raise FormRefused(str(exc.detail)) from None


class RefuseMultipart:
    """ASGI middleware: 415 for a multipart body where no route takes one, unread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not form_rule(scope["path"]).multipart:
            for name, value in scope["headers"]:
                if name == b"content-type" and value[:19].lower() == b"multipart/form-data":
                    response = PlainTextResponse(
                        "multipart/form-data is not accepted here: send the form urlencoded",
                        status_code=415,
                        # The body is never read: the connection cannot be reused.
                        headers={"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
