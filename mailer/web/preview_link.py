"""Where every link of a preview or a test send leads: a page that says so and does nothing.

Previews and test sends never carry a working unsubscribe or preference token, so that a
forwarded test or a click in the editor's preview cannot change anybody's subscription.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/preview/link", response_class=HTMLResponse)
@router.post("/preview/link", response_class=HTMLResponse)
def preview_link(request: Request) -> HTMLResponse:
    response: HTMLResponse = request.app.state.pages.TemplateResponse(
        request, "preview_link.html", {}
    )
    return response
