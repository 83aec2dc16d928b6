"""``GET /status``: the scheduler's role, next slots, last pulls, editions in flight (JSON).

For a signed-in account, or a machine with an API token: it names sources and
newsletters, never subscribers or secrets.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mailer.db.base import utcnow
from mailer.schedule import status
from mailer.web.auth import Reader

router = APIRouter()


@router.get("/status")
def scheduler_status(request: Request, _reader: Reader) -> dict[str, Any]:
    runtime = request.app.state.runtime
    # Set by `mailer serve` when this process runs the scheduler.
    service = getattr(request.app.state, "scheduler", None)
    return status.report(runtime, service, utcnow())
