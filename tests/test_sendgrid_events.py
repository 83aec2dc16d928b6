"""Parsing SendGrid Event Webhook bodies: every event kind, mapping and bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mailer.events.sendgrid_events import (
    KNOWN_EVENTS,
    MAX_REASON_CHARS,
    PayloadError,
    ProviderEvent,
    Rejected,
    message_id_prefix,
    parse_events,
)

MSG = "W86EgYT6SQKk0lRflfLRsA"
SG_MESSAGE_ID = f"{MSG}.filterdrecv-p3las1-5bf99c48d-5jl5f-21-5C5B8A2D-18.0"
ARGS = '"edition_id":"42","delivery_id":"1001"'

# Shaped like the samples in SendGrid's Event Webhook reference, custom args as the
# dispatch sets them (strings, returned as top-level keys).
SENDGRID_BODY = f"""[
  {{"email":"Reader@Example.com","timestamp":1700000001,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "event":"processed","category":["newsletter-daily","edition-42"],
    "sg_event_id":"cHJvY2Vzc2VkLTEyMzQ1Ng","sg_message_id":"{SG_MESSAGE_ID}",
    "pool":{{"name":"new_MY_test","id":210}},{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000002,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "event":"deferred","category":["newsletter-daily","edition-42"],
    "sg_event_id":"ZGVmZXJyZWQtMTIzNDU2","sg_message_id":"{SG_MESSAGE_ID}",
    "response":"400 try again later","attempt":"5",{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000003,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "event":"delivered","category":["newsletter-daily","edition-42"],
    "sg_event_id":"ZGVsaXZlcmVkLTEyMzQ1Ng","sg_message_id":"{SG_MESSAGE_ID}",
    "response":"250 OK","ip":"168.1.1.1","tls":1,"cert_err":0,{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000004,"event":"open","sg_machine_open":false,
    "category":["newsletter-daily","edition-42"],"sg_event_id":"b3Blbi0xMjM0NTY",
    "sg_message_id":"{SG_MESSAGE_ID}","useragent":"Mozilla/4.0 (compatible; MSIE 6.1)",
    "ip":"255.255.255.255",{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000005,"event":"click",
    "category":["newsletter-daily","edition-42"],"sg_event_id":"Y2xpY2stMTIzNDU2",
    "sg_message_id":"{SG_MESSAGE_ID}","useragent":"Mozilla/5.0","ip":"255.255.255.255",
    "url":"https://news.example.com/2023/11/14/story","url_offset":{{"index":0,"type":"html"}},
    {ARGS}}},
  {{"email":"gone@example.com","timestamp":1700000006,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "bounce_classification":"Invalid Address","event":"bounce","category":"newsletter-daily",
    "sg_event_id":"Ym91bmNlLTEyMzQ1Ng","sg_message_id":"{SG_MESSAGE_ID}",
    "reason":"550 5.1.1 The email account that you tried to reach does not exist",
    "status":"5.1.1","type":"bounce","edition_id":"42","delivery_id":"1002"}},
  {{"email":"blocked@example.com","timestamp":1700000007,"bounce_classification":"Reputation",
    "event":"bounce","sg_event_id":"YmxvY2tlZC0xMjM0NTY","sg_message_id":"{SG_MESSAGE_ID}",
    "reason":"554 Message rejected due to local policy","status":"5.7.1","type":"blocked",
    "edition_id":"42","delivery_id":"1003"}},
  {{"email":"dropped@example.com","timestamp":1700000008,"smtp-id":"<14c5d75ce93.dfd.64b469@ismtpd-555>",
    "event":"dropped","category":"newsletter-daily","sg_event_id":"ZHJvcHBlZC0xMjM0NTY",
    "sg_message_id":"{SG_MESSAGE_ID}","reason":"Bounced Address","status":"5.0.0",
    "edition_id":"42","delivery_id":"1004"}},
  {{"email":"reader@example.com","timestamp":1700000009,"event":"spamreport",
    "sg_event_id":"c3BhbXJlcG9ydC0xMjM0NTY","sg_message_id":"{SG_MESSAGE_ID}",{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000010,"event":"unsubscribe",
    "category":["newsletter-daily","edition-42"],"sg_event_id":"dW5zdWJzY3JpYmUtMTIzNDU2",
    "sg_message_id":"{SG_MESSAGE_ID}",{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000011,"event":"group_unsubscribe",
    "category":["newsletter-daily"],"sg_event_id":"Z3JvdXBfdW5zdWItMTIzNDU2",
    "sg_message_id":"{SG_MESSAGE_ID}","useragent":"Mozilla/5.0","ip":"255.255.255.255",
    "url":"https://example.com/unsubscribe","asm_group_id":10,{ARGS}}},
  {{"email":"reader@example.com","timestamp":1700000012,"event":"group_resubscribe",
    "category":["newsletter-daily"],"sg_event_id":"Z3JvdXBfcmVzdWItMTIzNDU2",
    "sg_message_id":"{SG_MESSAGE_ID}","useragent":"Mozilla/5.0","ip":"255.255.255.255",
    "url":"https://example.com/resubscribe","asm_group_id":10,{ARGS}}}
]
""".encode()


def _by_kind(events: list[ProviderEvent]) -> dict[str, ProviderEvent]:
    return {e.kind: e for e in events if e.bounce_type != "blocked"}


def _body(*items: Any) -> bytes:
    return orjson.dumps(list(items))


def _item(**fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "email": "reader@example.com",
        "timestamp": 1700000000,
        "event": "delivered",
        "sg_event_id": "ZXZlbnQtMQ",
        "sg_message_id": SG_MESSAGE_ID,
    }
    item.update(fields)
    return {k: v for k, v in item.items() if v is not ...}


def _one(item: Any) -> ProviderEvent:
    events, rejected = parse_events(_body(item))
    assert rejected == []
    assert len(events) == 1
    return events[0]


def _reason(item: Any) -> str:
    events, rejected = parse_events(_body(item))
    assert events == []
    assert len(rejected) == 1
    return rejected[0].reason


def test_every_documented_event_kind_is_read() -> None:
    events, rejected = parse_events(SENDGRID_BODY)
    assert rejected == []
    assert len(events) == 12
    assert {e.kind for e in events} == KNOWN_EVENTS
    assert [e.occurred_at for e in events] == list(range(1700000001, 1700000013))
    for event in events:
        assert event.message_id == SG_MESSAGE_ID
        assert event.edition_id == 42
        assert event.raw["sg_event_id"] == event.event_id

    kinds = _by_kind(events)
    processed = kinds["processed"]
    assert processed.email == "reader@example.com"  # lower-cased
    assert processed.event_id == "cHJvY2Vzc2VkLTEyMzQ1Ng"
    assert processed.delivery_id == 1001
    assert processed.reason is None and processed.bounce_type is None and processed.url is None
    assert processed.raw["pool"] == {"name": "new_MY_test", "id": 210}

    assert kinds["deferred"].reason == "400 try again later"
    assert kinds["delivered"].reason == "250 OK"
    assert kinds["click"].url == "https://news.example.com/2023/11/14/story"
    assert kinds["open"].url is None

    bounce = kinds["bounce"]
    assert (bounce.email, bounce.delivery_id) == ("gone@example.com", 1002)
    assert bounce.bounce_type == "bounce"
    assert bounce.status == "5.1.1"
    # The status is already in SendGrid's words: not repeated.
    assert bounce.reason == "550 5.1.1 The email account that you tried to reach does not exist"

    (blocked,) = [e for e in events if e.bounce_type == "blocked"]
    assert (blocked.kind, blocked.delivery_id, blocked.status) == ("bounce", 1003, "5.7.1")
    assert blocked.reason == "554 Message rejected due to local policy (status 5.7.1)"

    dropped = kinds["dropped"]
    assert dropped.reason == "Bounced Address (status 5.0.0)"
    assert dropped.bounce_type is None

    assert kinds["group_unsubscribe"].asm_group_id == 10
    assert kinds["group_resubscribe"].asm_group_id == 10
    assert kinds["spamreport"].asm_group_id is None


def test_the_email_is_stripped_and_lower_cased() -> None:
    assert _one(_item(email="  Ann.Lee@Example.COM \n")).email == "ann.lee@example.com"


@pytest.mark.parametrize(
    ("edition", "delivery", "expected"),
    [
        ("42", "1001", (42, 1001)),
        (42, 1001, (42, 1001)),  # integers are fine too
        ("9223372036854775807", "1", (9223372036854775807, 1)),
        ("9223372036854775808", "1", (None, 1)),  # beyond BIGINT
        ("", "abc", (None, None)),
        ("0", "-5", (None, None)),
        ("1.5", 1.0, (None, None)),
        (True, False, (None, None)),
        (None, ["1"], (None, None)),
        (" 42", "4\u00b2", (None, None)),  # stray space; a superscript digit
        (..., ..., (None, None)),  # not sent at all, e.g. mail sent by another system
    ],
)
def test_custom_args_map_an_event_to_its_delivery(
    edition: Any, delivery: Any, expected: tuple[int | None, int | None]
) -> None:
    # A bad custom arg costs only the mapping: the event itself is kept.
    event = _one(_item(edition_id=edition, delivery_id=delivery))
    assert (event.edition_id, event.delivery_id) == expected


def test_the_message_id_prefix_is_the_send_x_message_id() -> None:
    assert message_id_prefix(SG_MESSAGE_ID) == MSG
    assert message_id_prefix(MSG) == MSG
    assert message_id_prefix(_one(_item()).message_id or "") == MSG


def test_optional_fields_of_an_odd_type_read_as_none() -> None:
    event = _one(
        _item(
            event="bounce",
            sg_message_id=123,
            type="hard",
            reason={"text": "no"},
            response="  ",
            status=5,
            asm_group_id="ten",
        )
    )
    assert event.message_id is None
    assert event.bounce_type is None
    assert event.reason is None and event.status is None and event.asm_group_id is None
    assert event.raw["reason"] == {"text": "no"}


@pytest.mark.parametrize("value", [[], {"a": 1}, ["bounce"], None, 1])
def test_an_unhashable_or_odd_bounce_type_is_ignored(value: Any) -> None:
    assert _one(_item(event="bounce", type=value)).bounce_type is None


def test_bounce_type_and_url_belong_to_their_own_kinds() -> None:
    event = _one(_item(event="deferred", type="bounce", url="https://example.com/x"))
    assert event.bounce_type is None and event.url is None


def test_a_long_reason_is_truncated() -> None:
    event = _one(_item(event="bounce", reason="x" * 5000, status="5.0.0"))
    assert event.reason is not None
    assert len(event.reason) == MAX_REASON_CHARS
    assert event.reason.endswith("…")


def test_reason_and_response_are_joined() -> None:
    event = _one(_item(event="deferred", reason="mailbox full", response="452 4.2.2 over quota"))
    assert event.reason == "mailbox full; 452 4.2.2 over quota"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (17, "item 0: must be a JSON object, not a number"),
        ("delivered", "item 0: must be a JSON object, not a string"),
        ([], "item 0: must be a JSON object, not an array"),
        (None, "item 0: must be a JSON object, not null"),
        (_item(sg_event_id=...), "item 0: `sg_event_id` is missing"),
        (_item(sg_event_id=""), "item 0: `sg_event_id` is empty"),
        (_item(sg_event_id="  "), "item 0: `sg_event_id` is empty"),
        (_item(sg_event_id=12), "item 0: `sg_event_id` must be a string, not a number"),
        (_item(sg_event_id="x" * 201), "item 0: `sg_event_id` is longer than 200 characters"),
        (_item(email=...), "item 0: `email` is missing"),
        (_item(email=None), "item 0: `email` is missing"),
        (_item(email=["a@b.c"]), "item 0: `email` must be a string, not an array"),
        (_item(email="nobody"), "item 0: `email` is not an address: 'nobody'"),
        (_item(email=f"{'a' * 320}@b.c"), "item 0: `email` is longer than 320 characters"),
        (_item(timestamp=...), "item 0: `timestamp` is missing"),
        (
            _item(timestamp="1700000000"),
            "item 0: `timestamp` must be an integer (unix seconds), not a string",
        ),
        (
            _item(timestamp=1700000000.5),
            "item 0: `timestamp` must be an integer (unix seconds), not a number",
        ),
        (
            _item(timestamp=True),
            "item 0: `timestamp` must be an integer (unix seconds), not a boolean",
        ),
        (_item(timestamp=-1), "item 0: `timestamp` is out of range: -1"),
        (_item(timestamp=10**15), f"item 0: `timestamp` is out of range: {10**15}"),
        (_item(event=...), "item 0: `event` is missing"),
        (_item(event=3), "item 0: `event` must be a string, not a number"),
        (_item(event="machine_opened"), "item 0: unknown event name 'machine_opened'"),
        (_item(event="Delivered"), "item 0: unknown event name 'Delivered'"),
        (_item(event="x" * 1000), f"item 0: unknown event name '{'x' * 57}...'"),
    ],
)
def test_a_bad_item_is_rejected_with_a_clear_reason(item: Any, reason: str) -> None:
    assert _reason(item) == reason


def test_every_problem_of_an_item_is_named() -> None:
    assert _reason({"event": "open", "timestamp": "now"}) == (
        "item 0: `sg_event_id` is missing; `email` is missing; "
        "`timestamp` must be an integer (unix seconds), not a string"
    )


def test_bad_items_do_not_stop_the_good_ones() -> None:
    items: list[Any] = [_item(sg_event_id=f"ZXZlbnQt{i}") for i in range(20)]
    items[3] = {"event": "delivered"}
    items[17] = _item(sg_event_id="ZXZlbnQtMTc", timestamp="1700000000")
    items[18] = "garbage"
    events, rejected = parse_events(_body(*items))
    assert len(events) == 17
    assert [r.index for r in rejected] == [3, 17, 18]
    assert rejected[1] == Rejected(
        17,
        "item 17: `timestamp` must be an integer (unix seconds), not a string",
        items[17],
    )
    assert rejected[2].raw == "garbage"


def test_a_repeated_event_id_in_one_body_keeps_the_first() -> None:
    first = _item(sg_event_id="ZHVw", event="delivered")
    again = _item(sg_event_id="ZHVw", event="open")
    other = _item(sg_event_id="b3RoZXI")
    events, rejected = parse_events(_body(first, again, other, first))
    assert rejected == []
    assert [(e.event_id, e.kind) for e in events] == [
        ("ZHVw", "delivered"),
        ("b3RoZXI", "delivered"),
    ]


def test_a_rejected_copy_does_not_hide_a_good_one() -> None:
    bad = _item(sg_event_id="ZHVw", timestamp="soon")
    good = _item(sg_event_id="ZHVw")
    events, rejected = parse_events(_body(bad, good))
    assert [r.index for r in rejected] == [0]
    assert [e.event_id for e in events] == ["ZHVw"]


def test_an_empty_array_is_no_events() -> None:
    assert parse_events(b"[]") == ([], [])


def test_an_oversized_body_is_refused_with_the_limit() -> None:
    body = _body(*[_item(sg_event_id=f"ZXZlbnQt{i}") for i in range(50)])
    assert parse_events(body, max_bytes=len(body))[0]  # exactly at the limit is fine
    with pytest.raises(PayloadError, match=f"{len(body)} bytes, over the limit of 1000 bytes"):
        parse_events(body, max_bytes=1000)
    with pytest.raises(PayloadError, match="over the limit of 1048576 bytes"):
        parse_events(b"[" + b" " * 1_048_576 + b"]")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"email":"a@b.c",', r"not valid JSON: unexpected end of data: line 1 column 19"),
        (b'[{"email":"a@b.c"}]]', r"not valid JSON: .*char 19"),
        (b"", "not valid JSON"),
        (b'["\xff"]', "not valid JSON"),
        (b"[NaN]", "not valid JSON"),
        (b'{"event":"delivered"}', "must be a JSON array of events, not an object"),
        (b'"delivered"', "must be a JSON array of events, not a string"),
        (b"null", "must be a JSON array of events, not null"),
        (b"42", "must be a JSON array of events, not a number"),
    ],
)
def test_a_body_that_is_not_an_array_of_events_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_events(body)


def test_a_full_batch_is_read() -> None:
    # Batches of 1,000 events are the expected load: all read, none lost.
    items = [
        _item(sg_event_id=f"ZXZlbnQt{i:04d}", delivery_id=str(i + 1), edition_id="7")
        for i in range(1000)
    ]
    events, rejected = parse_events(_body(*items))
    assert rejected == []
    assert [e.delivery_id for e in events] == list(range(1, 1001))
