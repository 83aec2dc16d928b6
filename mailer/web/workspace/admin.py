"""Administrators' pages: accounts (create, disable, enable, reset) and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from mailer.app import accounts, audit
from mailer.web import auth
from mailer.web.views import page

router = APIRouter(prefix="/admin")
AUDIT_PAGE = 50


def _accounts_page(
    request: Request,
    info: auth.SessionInfo,
    *,
    notice: str | None = None,
    link: str | None = None,
    link_for: str | None = None,
) -> HTMLResponse:
    rows = accounts.list_accounts(auth.runtime_of(request), info.actor)
    return page(
        request,
        "workspace/accounts.html",
        {"rows": rows, "notice": notice, "link": link, "link_for": link_for},
    )


@router.get("/accounts", response_class=HTMLResponse)
def account_list(request: Request, info: auth.Admin) -> HTMLResponse:
    return _accounts_page(request, info)


@router.post("/accounts", response_class=HTMLResponse)
def create(
    request: Request,
    info: auth.Admin,
    email: Annotated[str, Form(max_length=320)],
    role: Annotated[str, Form(max_length=20)] = "editor",
) -> HTMLResponse:
    created, link = accounts.create_account(auth.runtime_of(request), info.actor, email, role)
    # The link is shown once, here, and never stored in the clear.
    return _accounts_page(
        request, info, notice=f"Account {created.email} created.", link=link, link_for=created.email
    )


@router.post("/accounts/{email}/disable", response_class=HTMLResponse)
def disable(request: Request, info: auth.Admin, email: str) -> HTMLResponse:
    done = accounts.disable_account(auth.runtime_of(request), info.actor, email)
    return _accounts_page(request, info, notice=f"{done.email} is disabled; its sessions ended.")


@router.post("/accounts/{email}/enable", response_class=HTMLResponse)
def enable(request: Request, info: auth.Admin, email: str) -> HTMLResponse:
    done = accounts.enable_account(auth.runtime_of(request), info.actor, email)
    return _accounts_page(request, info, notice=f"{done.email} is enabled.")


@router.post("/accounts/{email}/reset", response_class=HTMLResponse)
def reset(request: Request, info: auth.Admin, email: str) -> HTMLResponse:
    done, link = accounts.reset_account(auth.runtime_of(request), info.actor, email)
    return _accounts_page(
        request,
        info,
        notice=f"{done.email}: password cleared and sessions ended.",
        link=link,
        link_for=done.email,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    request: Request,
    info: auth.Admin,
    action: Annotated[str | None, Query(max_length=100)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    rows = audit.list_entries(
        auth.runtime_of(request), info.actor, limit=AUDIT_PAGE, before_id=before, action=action
    )
    return page(
        request,
        "workspace/audit.html",
        {
            "rows": rows,
            "action": action or "",
            "next_before": rows[-1].id if len(rows) == AUDIT_PAGE else None,
        },
    )
