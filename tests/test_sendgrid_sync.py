"""Reading SendGrid's suppression lists, against a local server that answers like the API."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterator

import httpx
import pytest
from jsonschema import Draft202012Validator, ValidationError  # type: ignore[import-untyped]

from mailer.bounces.sendgrid_sync import (
    MAX_RATE_LIMIT_WAIT,
    ProviderSuppression,
    SendGridSuppressionClient,
    SuppressionKind,
    SyncError,
)
from tests.suppression_server import (
    API_KEY,
    KINDS,
    SuppressionServer,
    error_validator,
    item,
    item_validators,
    suppression_server,
)

T0 = 1_700_000_000


@functools.cache
def validators() -> tuple[dict[str, Draft202012Validator], Draft202012Validator]:
    return item_validators(), error_validator()


def check_documented_shapes(server: SuppressionServer) -> None:
    """Every answer the fake gave has the shape SendGrid's published schema gives it."""
    items, errors = validators()
    for request in server.state.requests:
        if request.status == 200:
            kind = request.path.rpartition("/")[2]
            items[kind].validate(request.body)
        elif request.status:
            errors.validate(request.body)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SuppressionServer]:
    # One server for the module: stopping one waits out its half-second poll.
    with suppression_server() as running:
        yield running


@pytest.fixture
def raw_server(shared_server: SuppressionServer) -> SuppressionServer:
    """The server, emptied, for tests that plant items SendGrid's schema forbids."""
    shared_server.state.reset()
    return shared_server


@pytest.fixture
def server(raw_server: SuppressionServer) -> Iterator[SuppressionServer]:
    yield raw_server
    check_documented_shapes(raw_server)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(
    server: SuppressionServer, sleeps: list[float], key: str = API_KEY, page_size: int = 500
) -> SendGridSuppressionClient:
    return SendGridSuppressionClient(
        key, server.base_url, timeout=2.0, page_size=page_size, sleep=sleeps.append
    )


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def bounces(count: int, created: int = T0) -> list[dict[str, object]]:
    return [item("bounces", f"reader{n}@example.org", created + n) for n in range(count)]


def test_the_fake_answers_in_the_documented_shapes(server: SuppressionServer) -> None:
    # Each list's own shape passes, and the validators do catch a drifted one.
    items, _errors = validators()
    for kind in KINDS:
        items[kind].validate([item(kind, "a@example.org", T0)])
    with pytest.raises(ValidationError, match="'ip' is a required property"):
        items["spam_reports"].validate([{"created": T0, "email": "a@example.org"}])
    with pytest.raises(ValidationError, match="is not of type 'integer'"):
        items["unsubscribes"].validate([{"created": "today", "email": "a@example.org"}])
    server.state.add("blocks", item("blocks", "b@example.org", T0, status="4.0.0"))
    ok = httpx.get(
        server.url("/v3/suppression/blocks"), headers={"Authorization": f"Bearer {API_KEY}"}
    )
    refused = httpx.get(server.url("/v3/suppression/blocks"))
    assert ok.status_code == 200 and ok.json()[0]["email"] == "b@example.org"
    assert refused.status_code == 401
    assert refused.json() == {"errors": [{"field": None, "message": "authorization required"}]}


@pytest.mark.parametrize(
    ("count", "offsets"),
    [(1234, [0, 500, 1000]), (1000, [0, 500, 1000]), (499, [0]), (0, [0])],
)
def test_pages_until_a_short_page(
    server: SuppressionServer, sleeps: list[float], count: int, offsets: list[int]
) -> None:
    server.state.add("bounces", *bounces(count))
    with client(server, sleeps) as sync:
        got = list(sync.fetch(SuppressionKind.BOUNCE, None, T0 + 10_000))
    assert [s.email for s in got] == [f"reader{n}@example.org" for n in range(count)]
    assert server.state.offsets("bounces") == offsets
    assert {r.query["limit"] for r in server.state.requests} == {"500"}
    assert sync.skipped == [] and sleeps == []


def test_smaller_pages_and_the_request_headers(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    server.state.add(
        "unsubscribes", *[item("unsubscribes", f"u{n}@example.org", T0) for n in range(7)]
    )
    with client(server, sleeps, page_size=3) as sync:
        got = list(sync.fetch(SuppressionKind.GLOBAL_UNSUBSCRIBE, None, T0 + 1))
    assert len(got) == 7
    assert server.state.offsets("unsubscribes") == [0, 3, 6]
    headers = server.state.requests[0].headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Accept"] == "application/json"


def test_the_window_is_since_inclusive_until_exclusive(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    since, until = T0, T0 + 3600
    for created in (since - 1, since, until - 1, until, until + 1):
        server.state.add("spam_reports", item("spam_reports", f"t{created}@example.org", created))
    with client(server, sleeps) as sync:
        got = list(sync.fetch(SuppressionKind.SPAM_REPORT, since, until))
        everything = list(sync.fetch(SuppressionKind.SPAM_REPORT, None, until))
        empty = list(sync.fetch(SuppressionKind.SPAM_REPORT, until, until))
    assert [s.created for s in got] == [since, until - 1]
    assert [s.created for s in everything] == [since - 1, since, until - 1]
    assert empty == []
    first, second = server.state.requests  # an empty window asks nothing
    # SendGrid's end_time is inclusive: the last second of the window is until - 1.
    assert first.query == {
        "start_time": str(since),
        "end_time": str(until - 1),
        "limit": "500",
        "offset": "0",
    }
    assert "start_time" not in second.query and second.query["end_time"] == str(until - 1)


def test_a_window_that_ends_before_it_starts_is_refused(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    with client(server, sleeps) as sync, pytest.raises(ValueError, match="after it ends"):
        list(sync.fetch(SuppressionKind.BOUNCE, T0 + 1, T0))
    assert server.state.requests == []


def test_an_event_recorded_during_a_sync_is_read_by_the_next_one(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    # The caller fixes until before starting and stores it as the next since.
    server.state.add("bounces", item("bounces", "early@example.org", T0 - 50))
    until = T0
    seen: list[ProviderSuppression] = []
    with client(server, sleeps) as sync:
        for suppression in sync.fetch_all(None, until):
            seen.append(suppression)
            if suppression.email == "early@example.org":
                # SendGrid records a bounce while the other lists are still being read.
                server.state.add("bounces", item("bounces", "during@example.org", until))
        assert [s.email for s in seen] == ["early@example.org"]
        later = list(sync.fetch_all(until, until + 600))
    assert [s.email for s in later] == ["during@example.org"]


def test_all_five_lists(server: SuppressionServer, sleeps: list[float]) -> None:
    state = server.state
    state.add(
        "bounces",
        item(
            "bounces",
            "Gone@Example.ORG",
            T0,
            reason="550 5.1.1 <gone@example.org>: Recipient address rejected  ",
            status="5.1.1",
        ),
    )
    state.add(
        "blocks",
        item(
            "blocks",
            "full@example.org",
            T0 + 1,
            reason="unable to resolve MX record for example.org: servfail",
            status="4.0.0",
        ),
    )
    state.add("spam_reports", item("spam_reports", "angry@example.org", T0 + 2))
    state.add(
        "invalid_emails",
        item(
            "invalid_emails",
            "typo@exmaple.org",
            T0 + 3,
            reason="Mail domain mentioned in email address is unknown",
        ),
    )
    state.add("unsubscribes", item("unsubscribes", "left@example.org", T0 + 4))
    with client(server, sleeps) as sync:
        got = list(sync.fetch_all(T0, T0 + 10))
    assert got == [
        ProviderSuppression(
            SuppressionKind.BOUNCE,
            "gone@example.org",
            T0,
            "550 5.1.1 <gone@example.org>: Recipient address rejected",
            "5.1.1",
        ),
        ProviderSuppression(
            SuppressionKind.BLOCK,
            "full@example.org",
            T0 + 1,
            "4.0.0 unable to resolve MX record for example.org: servfail",
            "4.0.0",
        ),
        ProviderSuppression(
            SuppressionKind.SPAM_REPORT,
            "angry@example.org",
            T0 + 2,
            "sent from 10.63.202.100",
            None,
        ),
        ProviderSuppression(
            SuppressionKind.INVALID_EMAIL,
            "typo@exmaple.org",
            T0 + 3,
            "Mail domain mentioned in email address is unknown",
            None,
        ),
        ProviderSuppression(
            SuppressionKind.GLOBAL_UNSUBSCRIBE, "left@example.org", T0 + 4, "", None
        ),
    ]
    assert [r.path for r in state.requests] == [f"/v3/suppression/{kind}" for kind in KINDS]


def test_rate_limited_waits_for_the_reset_then_goes_on(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    server.state.add("bounces", *bounces(600))
    server.state.fail_next("ok")
    server.state.fail_next("429", 2)  # the second page is refused twice
    with client(server, sleeps) as sync:
        got = list(sync.fetch(SuppressionKind.BOUNCE, None, T0 + 10_000))
    assert len(got) == 600
    assert [r.status for r in server.state.requests] == [200, 429, 429, 200]
    assert server.state.offsets("bounces") == [0, 500, 500, 500]
    # X-RateLimit-Reset is two seconds ahead (whole seconds, so up to one less).
    assert len(sleeps) == 2 and all(0.5 <= s <= 2.0 for s in sleeps)


def test_a_far_rate_limit_reset_is_capped(server: SuppressionServer, sleeps: list[float]) -> None:
    server.state.rate_limit_reset_in = 86_400
    server.state.fail_next("429")
    with client(server, sleeps) as sync:
        assert list(sync.fetch(SuppressionKind.BLOCK, None, T0)) == []
    assert sleeps == [MAX_RATE_LIMIT_WAIT]


@pytest.mark.parametrize("failure", ["500", "close"])
def test_a_passing_failure_is_retried(
    server: SuppressionServer, sleeps: list[float], failure: str
) -> None:
    server.state.add("invalid_emails", item("invalid_emails", "x@example.org", T0))
    server.state.fail_next(failure, 2)
    with client(server, sleeps) as sync:
        got = list(sync.fetch(SuppressionKind.INVALID_EMAIL, None, T0 + 1))
    assert [s.email for s in got] == ["x@example.org"]
    assert len(server.state.requests) == 3
    assert len(sleeps) == 2  # backed off before each retry


def test_a_persistent_server_error_ends_in_sync_error(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    server.state.fail_next("500", 100)
    with client(server, sleeps) as sync, pytest.raises(SyncError) as raised:
        list(sync.fetch_all(None, T0))
    message = str(raised.value)
    assert "bounces" in message and "500" in message and "internal error" in message
    assert "gave up after 5 tries" in message
    assert len(server.state.requests) == 5 and len(sleeps) == 4


def test_an_unreachable_server_ends_in_sync_error(sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: every connection is refused at once.
    sync = SendGridSuppressionClient(
        API_KEY, f"http://127.0.0.1:{port}", timeout=2.0, sleep=sleeps.append
    )
    with sync, pytest.raises(SyncError, match="ConnectError") as raised:
        list(sync.fetch(SuppressionKind.BLOCK, None, T0))
    assert "blocks" in str(raised.value) and len(sleeps) == 4


def test_a_bad_key_ends_in_sync_error_without_the_key(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    key = "SG.wrong-but-secret-key"
    with client(server, sleeps, key=key) as sync, pytest.raises(SyncError) as raised:
        list(sync.fetch_all(None, T0))
    message = str(raised.value)
    assert "bounces" in message and "401" in message
    assert "The provided authorization grant is invalid" in message
    assert key not in message and key not in repr(raised.value.__cause__)
    assert len(server.state.requests) == 1 and sleeps == []  # never retried


def test_a_key_without_the_scope_names_the_list(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    server.state.fail_next("ok", 2)
    server.state.fail_next("403")
    with client(server, sleeps) as sync, pytest.raises(SyncError) as raised:
        list(sync.fetch_all(None, T0))
    message = str(raised.value)
    assert "spam_reports" in message and "403" in message and "access forbidden" in message
    assert API_KEY not in message


def test_malformed_items_are_skipped_and_reported(
    raw_server: SuppressionServer, sleeps: list[float]
) -> None:
    planted: list[object] = [
        {"created": T0, "reason": "no address"},
        {"created": T0, "email": 42},
        {"created": T0, "email": "no-at-sign.example.org"},
        {"email": "nocreated@example.org"},
        {"created": "yesterday", "email": "text@example.org"},
        {"created": True, "email": "bool@example.org"},
        {"created": float("inf"), "email": "inf@example.org"},  # sent as Infinity
        {"created": -5, "email": "negative@example.org"},
        "just a string",
        None,
    ]
    good = [item("bounces", f"good{n}@example.org", T0 + n) for n in range(4)]
    # Two good items, the planted ones across a page boundary (page size 5), two more.
    raw_server.state.add("bounces", *good[:2], *planted, *good[2:])
    # A description of the wrong type costs the words, not the suppression; control
    # characters in one are dropped, as at every other way in.
    raw_server.state.add("blocks", {"created": T0, "email": "odd@example.org", "reason": 7})
    raw_server.state.add(
        "blocks",
        {"created": T0, "email": "ctl@example.org", "reason": "550\x00 no\x07 such\ufffe user"},
    )
    with client(raw_server, sleeps, page_size=5) as sync:
        got = list(sync.fetch_all(None, T0 + 10))
    assert raw_server.state.offsets("bounces") == [0, 5, 10]
    assert [s.email for s in got] == [
        "good0@example.org",
        "good1@example.org",
        "good2@example.org",
        "good3@example.org",
        "odd@example.org",
        "ctl@example.org",
    ]
    assert got[-2].reason == "" and got[-2].status is None
    assert got[-1].reason == "550 no such user"
    assert sync.skipped == [
        f"bounces item 2: 'email' missing or not a string: {compact(planted[0])}",
        f"bounces item 3: 'email' missing or not a string: {compact(planted[1])}",
        "bounces item 4: unusable 'email': 'no-at-sign.example.org': An email address must "
        f"have an @-sign.: {compact(planted[2])}",
        f"bounces item 5: 'created' missing or not a number: {compact(planted[3])}",
        f"bounces item 6: 'created' missing or not a number: {compact(planted[4])}",
        # true is an int to Python, not a time to SendGrid
        f"bounces item 7: 'created' missing or not a number: {compact(planted[5])}",
        f"bounces item 8: 'created' is not a time in unix seconds: {compact(planted[6])}",
        f"bounces item 9: 'created' is not a time in unix seconds: {compact(planted[7])}",
        'bounces item 10: not an object: "just a string"',
        "bounces item 11: not an object: null",
    ]


def test_a_server_ignoring_offset_cannot_loop_forever(
    server: SuppressionServer, sleeps: list[float]
) -> None:
    server.state.add("bounces", *bounces(4))
    server.state.ignore_offset = True
    with client(server, sleeps, page_size=2) as sync, pytest.raises(SyncError, match="repeats"):
        list(sync.fetch(SuppressionKind.BOUNCE, None, T0 + 10))
    assert server.state.offsets("bounces") == [0, 2]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="page_size"):
        SendGridSuppressionClient(API_KEY, "http://127.0.0.1:9", page_size=501)
    with pytest.raises(ValueError, match="empty"):
        SendGridSuppressionClient("", "http://127.0.0.1:9")
