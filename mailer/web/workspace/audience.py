"""Administrators' audience pages: subscribers, lists, segments and CSV import.

Thin callers of ``mailer.app.subscribers``, ``lists`` and ``segments``: every rule lives
there. Each form also works without JavaScript (a POST, then a redirect to the page that
shows the result); htmx only adds the segment editor's live count.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from mailer import jsondata
from mailer.app import lists, segments, subscribers
from mailer.app.errors import Invalid
from mailer.web import auth
from mailer.web.limits import (
    IMPORT_BODY_BYTES,
    UPLOAD_BODY_BYTES,
    UPLOAD_BYTES,
    FormRefused,
    read_form,
)
from mailer.web.views import page

router = APIRouter(prefix="/admin")
PAGE = 50
PREVIEW_ROWS = 10
# An upload is held in the preview form until it is imported: bigger files go through
# `mailer subscribers import`, which streams.
MAX_UPLOAD = UPLOAD_BYTES
SUBSCRIBER_STATES = ("active", "unsubscribed", "bounced", "complained")
LIST_STATES = ("active", "pending", "unsubscribed")


def _see(path: str, notice: str | None = None) -> RedirectResponse:
    """After a POST, to the page that shows the result (a reload does not repeat it)."""
    query = f"?{urlencode({'notice': notice})}" if notice else ""
    return RedirectResponse(path + query, status_code=303)


def _json_object(field: str, text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = jsondata.parse(text)
    except ValueError as exc:
        raise Invalid(f"{field}: {exc}", field=field) from exc
    if not isinstance(value, dict):
        raise Invalid(f"{field}: give a JSON object", field=field)
    return value


# --- Subscribers ---------------------------------------------------------------------


@router.get("/subscribers", response_class=HTMLResponse)
def subscriber_list(
    request: Request,
    info: auth.Admin,
    q: Annotated[str, Query(max_length=320)] = "",
    list_name: Annotated[str, Query(alias="list", max_length=100)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[int | None, Query(ge=0)] = None,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    error = None
    try:
        rows = subscribers.search_subscribers(
            runtime,
            info.actor,
            query=q or None,
            list_name=list_name or None,
            status=status or None,
            limit=PAGE,
            after_id=after,
        )
    except Invalid as exc:
        rows, error = [], exc.message
    filters = {k: v for k, v in (("q", q), ("list", list_name), ("status", status)) if v}
    next_page = None
    if len(rows) == PAGE:
        next_page = "/admin/subscribers?" + urlencode(filters | {"after": rows[-1].id})
    return page(
        request,
        "workspace/subscribers.html",
        {
            "rows": rows,
            "q": q,
            "list_name": list_name,
            "status": status,
            "lists": lists.list_names(runtime, info.actor),
            "states": LIST_STATES if list_name else SUBSCRIBER_STATES,
            "first_page": "/admin/subscribers?" + urlencode(filters) if after else None,
            "next_page": next_page,
            "notice": notice,
            "error": error,
        },
    )


@router.post("/subscribers")
def subscriber_add(
    request: Request,
    info: auth.Admin,
    email: Annotated[str, Form(max_length=320)],
    name: Annotated[str, Form(max_length=200)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "",
    attributes: Annotated[str, Form(max_length=20_000)] = "",
    lists_: Annotated[list[str] | None, Form(alias="lists")] = None,
    override: Annotated[str, Form(max_length=3)] = "",
) -> RedirectResponse:
    added = subscribers.add_subscriber(
        auth.runtime_of(request),
        info.actor,
        email,
        name=name,
        lists=lists_ or [],
        attributes=_json_object("attributes", attributes),
        timezone=timezone,
        override_suppression=override == "yes",
    )
    return _see(f"/admin/subscribers/{added.id}", f"{added.email} added.")


@router.get("/subscribers/{subscriber_id}", response_class=HTMLResponse)
def subscriber_detail(
    request: Request,
    info: auth.Admin,
    subscriber_id: int,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    detail = subscribers.get_subscriber(runtime, info.actor, subscriber_id)
    states = {m.list: m.status for m in detail.memberships}
    return page(
        request,
        "workspace/subscriber.html",
        {
            "s": detail,
            "lists": [(name, states.get(name)) for name in lists.list_names(runtime, info.actor)],
            "states": SUBSCRIBER_STATES,
            "notice": notice,
        },
    )


@router.post("/subscribers/{subscriber_id}/edit")
def subscriber_edit(
    request: Request,
    info: auth.Admin,
    subscriber_id: int,
    email: Annotated[str, Form(max_length=320)],
    name: Annotated[str, Form(max_length=200)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "",
    status: Annotated[str, Form(max_length=20)] = "active",
    attributes: Annotated[str, Form(max_length=20_000)] = "",
) -> RedirectResponse:
    subscribers.edit_subscriber(
        auth.runtime_of(request),
        info.actor,
        subscriber_id,
        email=email,
        name=name,
        timezone=timezone,
        status=status,
        attributes=_json_object("attributes", attributes),
    )
    return _see(f"/admin/subscribers/{subscriber_id}", "Saved.")


@router.post("/subscribers/{subscriber_id}/memberships")
async def subscriber_memberships(
    request: Request, info: auth.Admin, subscriber_id: int
) -> RedirectResponse:
    # One select per list, named "list:<name>"; "-" leaves that list as it is.
    form = await request.form()
    wanted = {
        str(key).removeprefix("list:"): str(value)
        for key, value in form.multi_items()
        if str(key).startswith("list:") and value != "-"
    }
    subscribers.set_memberships(auth.runtime_of(request), info.actor, subscriber_id, wanted)
    return _see(f"/admin/subscribers/{subscriber_id}", "Lists saved.")


@router.post("/subscribers/{subscriber_id}/remove")
def subscriber_remove(request: Request, info: auth.Admin, subscriber_id: int) -> RedirectResponse:
    subscribers.remove_subscriber(auth.runtime_of(request), info.actor, subscriber_id)
    return _see("/admin/subscribers", f"Subscriber #{subscriber_id} deleted.")


@router.post("/subscribers/{subscriber_id}/erase")
def subscriber_erase(
    request: Request,
    info: auth.Admin,
    subscriber_id: int,
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> RedirectResponse:
    # Erasure cannot be undone: the word typed is the confirmation, not a click alone.
    if confirm.strip().lower() != "erase":
        raise Invalid('type "erase" to confirm', field="confirm")
    subscribers.erase_subscriber(auth.runtime_of(request), info.actor, subscriber_id)
    return _see("/admin/subscribers", f"Subscriber #{subscriber_id} erased.")


@router.get("/subscribers/{subscriber_id}/data.json")
def subscriber_data(request: Request, info: auth.Admin, subscriber_id: int) -> JSONResponse:
    data = subscribers.export_subscriber_data(auth.runtime_of(request), info.actor, subscriber_id)
    return JSONResponse(
        data,
        headers={"Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"'},
    )


# --- Lists ---------------------------------------------------------------------------


@router.get("/lists", response_class=HTMLResponse)
def list_page(
    request: Request,
    info: auth.Admin,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    rows = lists.list_lists(auth.runtime_of(request), info.actor)
    return page(request, "workspace/lists.html", {"rows": rows, "notice": notice})


@router.post("/lists")
def list_create(
    request: Request,
    info: auth.Admin,
    name: Annotated[str, Form(max_length=100)],
    description: Annotated[str, Form(max_length=2000)] = "",
    opt_in: Annotated[str, Form(max_length=10)] = "double",
    public: Annotated[str, Form(max_length=3)] = "",
) -> RedirectResponse:
    made = lists.create_list(
        auth.runtime_of(request),
        info.actor,
        name,
        description=description,
        opt_in=opt_in,
        public=public == "yes",
    )
    return _see("/admin/lists", f"List {made.name} created.")


@router.post("/lists/save")
def list_save(
    request: Request,
    info: auth.Admin,
    name: Annotated[str, Form(max_length=100)],
    new_name: Annotated[str, Form(max_length=100)],
    description: Annotated[str, Form(max_length=2000)] = "",
    opt_in: Annotated[str, Form(max_length=10)] = "double",
    public: Annotated[str, Form(max_length=3)] = "",
) -> RedirectResponse:
    runtime = auth.runtime_of(request)
    lists.set_list(
        runtime, info.actor, name, description=description, opt_in=opt_in, public=public == "yes"
    )
    saved = lists.rename_list(runtime, info.actor, name, new_name)
    return _see("/admin/lists", f"List {saved.name} saved.")


@router.post("/lists/delete")
def list_delete(
    request: Request, info: auth.Admin, name: Annotated[str, Form(max_length=100)]
) -> RedirectResponse:
    deleted = lists.delete_list(auth.runtime_of(request), info.actor, name)
    return _see("/admin/lists", f"List {deleted} deleted.")


# --- Segments ------------------------------------------------------------------------


@router.get("/segments", response_class=HTMLResponse)
def segment_page(
    request: Request,
    info: auth.Admin,
    notice: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    return page(
        request,
        "workspace/segments.html",
        {
            "rows": segments.list_segments(runtime, info.actor),
            "newsletters": segments.newsletter_segments(runtime, info.actor),
            "notice": notice,
            "example": json.dumps(
                {"match": "all", "conditions": [{"field": "list", "op": "eq", "value": "morning"}]},
                indent=2,
            ),
        },
    )


@router.get("/segments/count", response_class=HTMLResponse)
def segment_count(
    request: Request, info: auth.Admin, rule: Annotated[str, Query(max_length=20_000)] = ""
) -> HTMLResponse:
    """The live count beside the rule being edited: a fragment, the error in it if any."""
    try:
        counted: int | None = segments.count_segment(
            auth.runtime_of(request), info.actor, _json_object("rule", rule)
        )
        error = None
    except Invalid as exc:
        counted, error = None, exc.message
    return page(request, "workspace/_segment_count.html", {"count": counted, "error": error})


@router.post("/segments")
def segment_create(
    request: Request,
    info: auth.Admin,
    name: Annotated[str, Form(max_length=100)],
    rule: Annotated[str, Form(max_length=20_000)] = "",
) -> RedirectResponse:
    made = segments.create_segment(
        auth.runtime_of(request), info.actor, name, _json_object("rule", rule)
    )
    return _see("/admin/segments", f"Segment {made.name} saved.")


@router.post("/segments/save")
def segment_save(
    request: Request,
    info: auth.Admin,
    name: Annotated[str, Form(max_length=100)],
    new_name: Annotated[str, Form(max_length=100)],
    rule: Annotated[str, Form(max_length=20_000)] = "",
) -> RedirectResponse:
    saved = segments.update_segment(
        auth.runtime_of(request),
        info.actor,
        name,
        new_name=new_name,
        rule=_json_object("rule", rule),
    )
    return _see("/admin/segments", f"Segment {saved.name} saved.")


@router.post("/segments/delete")
def segment_delete(
    request: Request, info: auth.Admin, name: Annotated[str, Form(max_length=100)]
) -> RedirectResponse:
    deleted = segments.delete_segment(auth.runtime_of(request), info.actor, name)
    return _see("/admin/segments", f"Segment {deleted} deleted.")


@router.post("/segments/attach")
def segment_attach(
    request: Request,
    info: auth.Admin,
    newsletter: Annotated[str, Form(max_length=64)],
    segment: Annotated[str, Form(max_length=100)] = "",
) -> RedirectResponse:
    attached = segments.attach_segment(
        auth.runtime_of(request), info.actor, newsletter, segment or None
    )
    what = f"segment {attached}" if attached else "no segment (all of its lists)"
    return _see("/admin/segments", f"{newsletter} now sends to {what}.")


# --- Import --------------------------------------------------------------------------


@router.get("/import", response_class=HTMLResponse)
def import_page(request: Request, info: auth.Admin) -> HTMLResponse:
    runtime = auth.runtime_of(request)
    return page(
        request,
        "workspace/import.html",
        {"lists": lists.list_names(runtime, info.actor), "preview": None},
    )


async def _form(request: Request) -> FormData:
    try:
        return await read_form(request)
    except FormRefused as exc:
        raise Invalid(str(exc)) from None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Spreadsheets on Windows save cp1252; every byte decodes, so this cannot fail.
        return data.decode("cp1252")


@router.post("/import/preview", response_class=HTMLResponse, max_body_size=UPLOAD_BODY_BYTES)
async def import_preview(request: Request, info: auth.Admin) -> HTMLResponse:
    # Read by hand, after the session was checked: FastAPI reads a File parameter before
    # any dependency runs, so anyone could have had us spool an upload to disk.
    form = await _form(request)
    file, list_name = form.get("file"), form.get("list")
    if not isinstance(file, UploadFile):
        raise Invalid("choose a CSV file", field="file")
    if not isinstance(list_name, str) or not 0 < len(list_name) <= 100:
        raise Invalid("choose a list", field="list")
    data = await file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise Invalid(
            f"the file is over {MAX_UPLOAD // (1024 * 1024)} MB: use `mailer subscribers import`",
            field="file",
        )
    text = _decode(data)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = [row for _, row in zip(range(PREVIEW_ROWS + 1), reader, strict=False)]
    runtime = auth.runtime_of(request)
    return page(
        request,
        "workspace/import.html",
        {
            "lists": lists.list_names(runtime, info.actor),
            "preview": {
                "filename": file.filename or "upload.csv",
                "header": rows[0] if rows else [],
                "rows": rows[1:],
                "lines": text.count("\n"),
                "text": text,
                "list": list_name,
            },
        },
    )


@router.post("/import", response_class=HTMLResponse, max_body_size=IMPORT_BODY_BYTES)
async def import_run(request: Request, info: auth.Admin) -> HTMLResponse:
    # By hand after the session, as the preview: this body may be 15 MB.
    form = await _form(request)
    text, list_name = form.get("text"), form.get("list")
    filename = form.get("filename") or "upload.csv"
    if not isinstance(text, str) or len(text) > MAX_UPLOAD:
        raise Invalid(f"the file must be text of at most {MAX_UPLOAD:,} characters", field="text")
    if not isinstance(list_name, str) or not 0 < len(list_name) <= 100:
        raise Invalid("choose a list", field="list")
    if not isinstance(filename, str) or len(filename) > 200:
        raise Invalid("the file name is too long", field="filename")
    runtime = auth.runtime_of(request)
    report = await run_in_threadpool(
        subscribers.import_text, runtime, info.actor, text, list_name, origin=f"upload:{filename}"
    )
    return page(
        request,
        "workspace/import.html",
        {
            "lists": lists.list_names(runtime, info.actor),
            "preview": None,
            "report": report,
            "list_name": list_name,
        },
    )


# --- Export --------------------------------------------------------------------------


@router.get("/export.csv")
def export(
    request: Request,
    info: auth.Admin,
    list_name: Annotated[str | None, Query(alias="list", max_length=100)] = None,
    segment: Annotated[str | None, Query(max_length=100)] = None,
) -> StreamingResponse:
    """A CSV download of everyone, a list or a segment, streamed as it is read."""
    lines = subscribers.export_csv(
        auth.runtime_of(request), info.actor, list_name=list_name or None, segment=segment or None
    )
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", list_name or segment or "everyone").strip("-")
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="subscribers-{stem or "export"}.csv"'
        },
    )
