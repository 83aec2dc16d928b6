"""Security headers, by surface.

- Reader pages (subscribe, confirm, preferences, unsubscribe, archive, preview link)
  and JSON: no scripts at all, inline styles only (their pages carry their own small
  stylesheet).
- The workspace: scripts and styles from this site only (htmx and our stylesheet ship
  in the package; nothing from a CDN), frames only from this site (the preview).
- An edition's web copy: like the preview frame's, but a page of its own, never framed.
- The preview frame: the email's own HTML, which has inline styles and remote images by
  nature; it may only be framed by this site, runs no scripts, and is sandboxed.

Every answer also gets ``no-store`` and ``no-referrer``: unsubscribe URLs carry tokens,
and workspace pages carry subscribers' names; and, when the site is https, HSTS, so that
a browser never again asks for it over plain http (where a token could be read).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMMON = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

READER_HEADERS = {
    **COMMON,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
}

WORKSPACE_HEADERS = {
    **COMMON,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
}

PREVIEW_HEADERS = {
    **COMMON,
    "Content-Security-Policy": (
        "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
        "font-src https: data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
        "sandbox allow-popups allow-popups-to-escape-sandbox"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}

# An edition's web copy (/e/<token>): the email's own HTML, which has inline styles and
# remote images by nature, as a page of its own; no scripts, no forms, not framable.
EDITION_WEB_HEADERS = {
    **COMMON,
    "Content-Security-Policy": (
        "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
        "font-src https: data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
}

# Static files may be cached: they change only with the package.
STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=3600",
}

READER_PREFIXES = (
    "/u/",
    "/p/",
    "/subscribe/",
    "/confirm/",
    "/e/",
    "/archive/",
    "/preview/link",
    "/healthz",
    "/readyz",
    "/webhooks/",
    "/api/",
)


def headers_for(path: str) -> dict[str, str]:
    if path.startswith("/static/"):
        return STATIC_HEADERS
    if path.startswith(READER_PREFIXES):
        return READER_HEADERS
    return WORKSPACE_HEADERS


# A year, as browsers' preload lists expect; subdomains are not ours to speak for.
HSTS = "max-age=31536000"


class SecurityHeaders:
    """ASGI middleware: every answer gets its surface's headers (``headers_for``).

    A route that set one of its own (the preview frame) keeps it. Plain ASGI rather than
    an ``@app.middleware`` function: that wraps every request in a task and a stream.
    """

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    headers.setdefault(name, value)
                if self.https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)
