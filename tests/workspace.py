"""Helpers for workspace tests: accounts, signing in over real HTTP, reading CSRF tokens."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from mailer.app import accounts
from mailer.app.actors import Actor
from mailer.runtime import Runtime
from mailer.web.app import create_app
from tests.browser import LiveServer

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class Site:
    runtime: Runtime
    server: LiveServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=20, follow_redirects=False)


@contextmanager
def serve(runtime: Runtime, *, https: bool = False) -> Iterator[Site]:
    """The app on a live uvicorn. Its base URL becomes the server's own (plain http), so
    that cookies travel: an https base URL makes them Secure, and they would not."""
    with LiveServer() as server:
        if not https:
            runtime.settings.base_url = server.url
        server.start(create_app(runtime=runtime))
        yield Site(runtime, server)


def account(runtime: Runtime, email: str, role: str = "editor", password: str = PASSWORD) -> None:
    accounts.create_account(runtime, Actor.cli(), email, role, password=password)


def csrf_in(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found[1]


def sign_in(
    client: httpx.Client, email: str, password: str = PASSWORD, *, expect: int = 303
) -> httpx.Response:
    form = client.get("/signin")
    assert form.status_code == 200
    answer = client.post(
        "/signin", data={"email": email, "password": password, "csrf": csrf_in(form.text)}
    )
    assert answer.status_code == expect, answer.text[:500]
    return answer


@contextmanager
def signed_in(site: Site, email: str, role: str = "editor") -> Iterator[httpx.Client]:
    account(site.runtime, email, role)
    with site.client() as client:
        sign_in(client, email)
        yield client


def page_csrf(client: httpx.Client, path: str = "/") -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text[:500]
    return csrf_in(answer.text)
