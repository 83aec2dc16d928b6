"""What the web surface refuses, and how: credential throttling (API tokens, webhook
signatures), the push API's token before its body, webhook items nested too deep,
security headers, path ids out of range, trailing slashes (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mailer.accounts import throttle
from mailer.briefings.api_tokens import create_token
from mailer.config import Settings
from mailer.db.models import Event
from mailer.db.session import transaction
from mailer.runtime import Runtime
from mailer.web.app import create_app
from tests.webhook_keys import new_private_key, public_key_b64, sign

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
KEY = new_private_key()


@pytest.fixture
def signed_runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings.model_copy(update={"sendgrid_webhook_public_key": public_key_b64(KEY)}))
    yield rt
    rt.close()


@pytest.fixture
def client(signed_runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=signed_runtime), base_url="https://news.example.org") as c:
        yield c


@pytest.fixture
def token(signed_runtime: Runtime) -> str:
    with transaction(signed_runtime.sessions) as session:
        return create_token(session, "cms")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {SIGNATURE: sign(KEY, stamp, body), TIMESTAMP: stamp}


def event(n: int, **extra: object) -> dict[str, object]:
    return {
        "event": "delivered",
        "sg_event_id": f"ev-{n}",
        "email": f"reader{n}@example.org",
        "timestamp": 1_780_000_000,
        **extra,
    }


def stored_events(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        rows = session.execute(select(Event.kind, func.count()).group_by(Event.kind)).all()
    return {kind: count for kind, count in rows}


# -- throttling ------------------------------------------------------------------------


def test_wrong_api_tokens_are_throttled_per_client_in_the_same_words(
    client: TestClient, token: str
) -> None:
    answers = [
        client.post("/api/briefings", content=b"{}", headers=bearer(f"wrong-{n}"))
        for n in range(throttle.FAILURES_ALLOWED)
    ]
    assert [a.status_code for a in answers] == [401] * throttle.FAILURES_ALLOWED
    assert len({a.text for a in answers}) == 1, "every refusal says the same"
    # Now the client waits: even the right token is not looked at, on every route that
    # takes one, and neither is a sign-up's.
    for method, path in (
        ("POST", "/api/briefings"),
        ("POST", "/api/subscribers"),
        ("GET", "/status"),
        ("GET", "/editions/1/stats.json"),
    ):
        answer = client.request(method, path, content=b"{}", headers=bearer(token))
        assert answer.status_code == 429, (path, answer.text)
        assert int(answer.headers["Retry-After"]) >= 1


def test_a_good_token_writes_no_throttle_state(
    client: TestClient, token: str, signed_runtime: Runtime
) -> None:
    for _ in range(throttle.FAILURES_ALLOWED + 2):
        assert client.get("/status", headers=bearer(token)).status_code == 200
    with signed_runtime.sessions() as session:
        assert throttle.wait_for(session, (throttle.client_key("testclient"),)) is None


def test_forged_webhooks_are_refused_alike_then_throttled(
    client: TestClient, signed_runtime: Runtime
) -> None:
    body = orjson.dumps([event(1)])
    good = signed(body)
    forgeries = [
        {},  # no signature at all
        {SIGNATURE: good[SIGNATURE], TIMESTAMP: "1000000000"},  # a stale timestamp
        {SIGNATURE: signed(b"[]")[SIGNATURE], TIMESTAMP: good[TIMESTAMP]},  # another body's
        {SIGNATURE: "bm90IGEgc2lnbmF0dXJl", TIMESTAMP: good[TIMESTAMP]},
        {SIGNATURE: "%%%", TIMESTAMP: good[TIMESTAMP]},
    ]
    answers = [client.post("/webhooks/sendgrid", content=body, headers=h) for h in forgeries]
    assert [a.status_code for a in answers] == [403] * len(forgeries)
    assert {a.json()["error"] for a in answers} == {"signature not accepted"}
    throttled = client.post("/webhooks/sendgrid", content=body, headers=good)
    assert throttled.status_code == 429
    assert stored_events(signed_runtime) == {}


# -- the push API reads nothing before the token ------------------------------------------


def test_the_push_api_checks_the_token_before_the_body(client: TestClient, token: str) -> None:
    garbage = b'{"title": 5, "sections": "no"}'
    anonymous = client.post("/api/briefings", content=garbage, headers=bearer("not-a-token"))
    assert anonymous.status_code == 401
    assert "title" not in anonymous.text and "sections" not in anonymous.text
    known = client.post("/api/briefings", content=garbage, headers=bearer(token))
    assert known.status_code == 422
    assert client.post("/api/briefings", content=garbage).status_code == 401


# -- webhook items --------------------------------------------------------------------------


def test_a_signed_batch_with_an_item_nested_255_deep_keeps_the_good_events(
    client: TestClient, signed_runtime: Runtime
) -> None:
    deep: dict[str, object] = {}
    level = deep
    for _ in range(254):
        level["a"] = {}
        level = level["a"]  # type: ignore[assignment]
    items = [event(1), event(2, unique_args=deep), event(3, note="x" * 70_000), event(4)]
    body = json.dumps(items).encode()  # (orjson itself refuses to write 255 levels)
    answer = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["received"], report["accepted"], report["rejected"]) == (4, 2, 2)
    assert report["rejected_reasons"] == [
        "item 1: nested deeper than 16 levels",
        "item 2: larger than 65,536 characters",
    ]
    assert stored_events(signed_runtime) == {"delivered": 2, "rejected": 2}
    with signed_runtime.sessions() as session:
        kept = session.scalars(select(Event.payload).where(Event.kind == "rejected")).all()
    # What is kept of a refused item is a short excerpt, never the item.
    assert all(set(p) == {"excerpt"} and len(p["excerpt"]) <= 500 for p in kept)


# -- headers, paths ---------------------------------------------------------------------------


def test_https_sites_send_hsts_and_http_ones_do_not(client: TestClient, settings: Settings) -> None:
    for path in ("/healthz", "/signin", "/u/1.1.x"):
        assert client.get(path).headers["Strict-Transport-Security"] == "max-age=31536000"
    plain = Runtime(settings.model_copy(update={"base_url": "http://127.0.0.1:8000"}))
    try:
        answer = TestClient(create_app(runtime=plain)).get("/healthz")
        assert "Strict-Transport-Security" not in answer.headers
    finally:
        plain.close()


def test_a_trailing_slash_is_not_redirected(client: TestClient) -> None:
    for path in ("/u/1.1.abc/", "/healthz/", "/signin/"):
        for method in ("GET", "POST"):
            answer = client.request(method, path, follow_redirects=False)
            assert answer.status_code == 404, (method, path)


@pytest.mark.parametrize(
    "path",
    [
        f"/editions/{2**64}",
        f"/editions/{2**64}/stats",
        f"/admin/editions/{2**64}/stats",
        f"/briefings/{2**63}",
        f"/admin/subscribers/{2**70}",
        "/admin/subscribers/0",
        "/editions/-1",
    ],
)
def test_an_id_out_of_range_is_404(client: TestClient, path: str) -> None:
    assert client.get(path, follow_redirects=False).status_code == 404


def test_multipart_is_refused_where_no_route_takes_it(client: TestClient) -> None:
    for path in ("/subscribe/daily", "/signin", "/api/briefings", "/webhooks/sendgrid"):
        answer = client.post(path, files={"f": ("a.txt", b"x" * 10)})
        assert answer.status_code == 415, path


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/subscribe/daily", 16 * 1024),
        ("/signin", 16 * 1024),
        ("/p/1.abc", 16 * 1024),
        ("/api/subscribers", 16 * 1024),
        ("/webhooks/sendgrid", 1024 * 1024),
        ("/admin/lists", 512 * 1024),
    ],
)
def test_every_route_caps_its_body(client: TestClient, path: str, limit: int) -> None:
    over = client.post(
        path,
        content=b"a=" + b"x" * limit,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert over.status_code == 413, (path, over.status_code)
