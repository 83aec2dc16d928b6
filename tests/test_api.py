"""The CMS push API: bearer tokens, idempotent re-posts, field errors, sanitized HTML."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mailer.briefings.api_tokens import create_token, revoke
from mailer.db.models import Briefing, BriefingStatus
from mailer.db.session import transaction
from mailer.runtime import Runtime
from mailer.web.app import create_app


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime)) as test_client:
        yield test_client


@pytest.fixture
def token(runtime: Runtime) -> str:
    with transaction(runtime.sessions) as session:
        return create_token(session, "cms")


def post(client: TestClient, token: str | None, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/briefings", json=body, headers=headers)


STRUCTURED = {
    "external_id": "story-1",
    "title": "Harbour reopens after storms",
    "lead": "The harbour reopened on Monday after a week of storms.",
    "sections": [
        {
            "label": "What\u2019s going on now",
            "body": "Ferries resumed at dawn.\n\nCrews worked overnight.",
        },
        {"label": "Why it matters", "body": "The islands depend on the ferries."},
    ],
    "url": "https://news.example.org/harbour",
    "tags": ["transport"],
    "published": "2026-11-25T06:00:00-05:00",
}


def count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count(Briefing.id))) or 0)


def test_new_then_identical_then_changed(runtime: Runtime, client: TestClient, token: str) -> None:
    created = post(client, token, STRUCTURED)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["outcome"] == "new" and body["status"] == "ready"
    assert body["sections"][0] == {
        "label": "What\u2019s going on now",
        "paragraphs": ["Ferries resumed at dawn.", "Crews worked overnight."],
    }
    assert body["published"] == "2026-11-25T11:00:00+00:00"

    again = post(client, token, dict(reversed(list(STRUCTURED.items()))))
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"

    changed = post(client, token, {**STRUCTURED, "lead": "The harbour reopened on Tuesday."})
    assert changed.status_code == 200 and changed.json()["outcome"] == "updated"
    assert count(runtime) == 1


def test_raw_bodies_in_each_format(client: TestClient, token: str) -> None:
    text = post(
        client,
        token,
        {
            "external_id": "t",
            "format": "text",
            "body": "A <b>literal</b> lead stays text.\nWhy it matters: Plain text is never HTML.",
        },
    )
    assert text.status_code == 201, text.text
    assert text.json()["lead"] == "A <b>literal</b> lead stays text."

    markdown = post(
        client,
        token,
        {
            "external_id": "m",
            "format": "markdown",
            "body": "Lead sentence here.\n\n"
            "**What happens next:** A [vote](https://x.example/) on Friday.",
        },
    )
    assert markdown.status_code == 201, markdown.text
    assert markdown.json()["sections"][0]["label"] == "What happens next"

    html = post(
        client,
        token,
        {
            "external_id": "h",
            "format": "html",
            "title": "Council vote",
            "body": "<p>The council met.</p><script>alert(1)</script>"
            "<p><strong>Why it matters:</strong> "
            '<a href="javascript:alert(2)">Roads</a> close.</p>',
        },
    )
    assert html.status_code == 201, html.text
    section = html.json()["sections"][0]
    assert section["label"] == "Why it matters" and "alert" not in section["paragraphs"][0]


def test_authentication(runtime: Runtime, client: TestClient, token: str) -> None:
    missing = post(client, None, STRUCTURED)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert post(client, "mlr_wrong", STRUCTURED).status_code == 401
    with transaction(runtime.sessions) as session:
        assert revoke(session, "cms")
    assert post(client, token, STRUCTURED).status_code == 401
    assert count(runtime) == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"title": "no id", "lead": "A lead."}, ["body", "external_id"]),
        ({"external_id": "x"}, ["body"]),
        ({"external_id": "x", "lead": "L.", "body": "B."}, ["body"]),
        ({"external_id": "x", "lead": "L.", "url": "javascript:alert(1)"}, ["body", "url"]),
        ({"external_id": "x", "lead": "L.", "published": "tomorrow"}, ["body", "published"]),
        ({"external_id": "x", "lead": "L.", "surprise": 1}, ["body", "surprise"]),
        (
            {
                "external_id": "x",
                "lead": "Lead.",
                "sections": [
                    {"label": "Fine", "body": "ok"},
                    {"label": "Not. A label", "body": "text"},
                ],
            },
            ["body", "sections", 1, "label"],
        ),
        ({"external_id": "x", "lead": "   "}, ["body", "lead"]),
    ],
)
def test_bad_input_gets_field_errors_and_stores_nothing(
    runtime: Runtime, client: TestClient, token: str, body: dict[str, Any], loc: list[Any]
) -> None:
    response = post(client, token, body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert loc in locations, locations
    assert count(runtime) == 0


def test_oversized_and_malformed_requests(runtime: Runtime, client: TestClient, token: str) -> None:
    huge = {
        **STRUCTURED,
        "external_id": "huge",
        "sections": [{"label": "More", "body": "x" * 150_000}] * 8,
    }
    assert post(client, token, huge).status_code == 413
    broken = client.post(
        "/api/briefings",
        content=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    assert count(runtime) == 0


def test_draft_tokens_leave_briefings_for_an_editor(runtime: Runtime, client: TestClient) -> None:
    with transaction(runtime.sessions) as session:
        draft_token = create_token(session, "wire", mark_ready=False)
    assert post(client, draft_token, STRUCTURED).status_code == 201
    with runtime.sessions() as session:
        assert session.scalars(select(Briefing.status)).one() == BriefingStatus.DRAFT
