"""Who may see the operator pages: HTTP Basic with ``MAILER_ADMIN_PASSWORD``.

Basic auth keeps the admin surface usable from a browser and from scripts
without a session store. With no password configured the admin surface does
not exist (404): it is never open by default.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

ADMIN_USER = "admin"
_basic = HTTPBasic(realm="mailer admin", auto_error=False)


def require_admin(
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> str:
    password = request.app.state.runtime.settings.admin_password
    if not password:
        raise HTTPException(status_code=404, detail="Not Found")
    secret = password.get_secret_value().encode()
    given = credentials.password.encode() if credentials else b""
    user_ok = credentials is not None and hmac.compare_digest(
        credentials.username.encode(), ADMIN_USER.encode()
    )
    # Both compared in constant time, and both always compared.
    password_ok = hmac.compare_digest(given, secret)
    if not (user_ok and password_ok):
        raise HTTPException(
            status_code=401,
            detail="admin credentials required",
            headers={"WWW-Authenticate": 'Basic realm="mailer admin", charset="UTF-8"'},
        )
    return ADMIN_USER


Admin = Annotated[str, Depends(require_admin)]
