"""Segment comparisons and engagement conditions, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from mailer.db.models import Batch, Delivery, DeliveryStatus
from mailer.db.session import transaction
from mailer.runtime import Runtime
from subscribers.models import Subscriber
from subscribers.segments import OPS, SegmentRuleError, compile_rule
from tests import factories

NOW = datetime.now(UTC)
PEOPLE: list[dict[str, Any]] = [
    {"email": "a@example.com", "attributes": {"age": "17", "joined": "2024-05-01"}, "days": 400},
    {
        "email": "b@example.com",
        "attributes": {"age": "30", "joined": "2025-01-31T10:00"},
        "days": 20,
    },
    {"email": "c@example.com", "attributes": {"age": "n/a", "joined": "soon"}, "days": 5},
    {"email": "d@example.com", "attributes": {"age": 45, "joined": ""}, "days": 1},
    {"email": "e@example.com", "attributes": {"age": "-2.5"}, "days": 0},
]


@pytest.fixture
def people(runtime: Runtime) -> dict[str, int]:
    with transaction(runtime.sessions) as session:
        ids = {}
        for person in PEOPLE:
            sub = Subscriber(
                email=person["email"],
                attributes=person["attributes"],
                created_at=NOW - timedelta(days=person["days"]),
            )
            session.add(sub)
            session.flush()
            ids[person["email"][0]] = sub.id
    return ids


def matching(runtime: Runtime, *conditions: dict[str, Any], match: str = "all") -> str:
    rule = {"match": match, "conditions": list(conditions)}
    with runtime.sessions() as session:
        emails = session.scalars(
            select(Subscriber.email).where(compile_rule(rule)).order_by(Subscriber.email)
        )
        return "".join(e[0] for e in emails)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "attributes.age", "op": "gt", "value": 17}, "bd"),
        ({"field": "attributes.age", "op": "gte", "value": 17}, "abd"),
        ({"field": "attributes.age", "op": "lt", "value": 18}, "ae"),
        ({"field": "attributes.age", "op": "lte", "value": 30.0}, "abe"),
        ({"field": "attributes.age", "op": "between", "value": [18, 45]}, "bd"),
        ({"field": "attributes.joined", "op": "lt", "value": "2025-01-01"}, "a"),
        ({"field": "attributes.joined", "op": "gte", "value": "2025-01-31"}, "b"),
        (
            {"field": "attributes.joined", "op": "between", "value": ["2024-01-01", "2025-12-31"]},
            "ab",
        ),
        ({"field": "attributes.joined", "op": "within_last_days", "value": 36500}, "ab"),
        ({"field": "subscribed_at", "op": "within_last_days", "value": 10}, "cde"),
        ({"field": "subscribed_at", "op": "lt", "value": {"days_ago": 100}}, "a"),
        (
            {"field": "subscribed_at", "op": "gt", "value": (NOW - timedelta(days=30)).isoformat()},
            "bcde",
        ),
        (
            {
                "field": "subscribed_at",
                "op": "between",
                "value": [{"days_ago": 30}, {"days_ago": 3}],
            },
            "bc",
        ),
    ],
)
def test_comparisons(
    runtime: Runtime, people: dict[str, int], condition: dict[str, Any], expected: str
) -> None:
    # "n/a", "soon", "" and missing values match no comparison and break no query.
    assert matching(runtime, condition) == expected


def test_three_conditions_together(runtime: Runtime, people: dict[str, int]) -> None:
    assert (
        matching(
            runtime,
            {"field": "attributes.age", "op": "gte", "value": 18},
            {"field": "subscribed_at", "op": "within_last_days", "value": 30},
            {"field": "email", "op": "ends_with", "value": "@example.com"},
        )
        == "bd"
    )


NUMBERS = [
    "40",
    " 40 ",
    "\t7\n",
    "-2.5",
    "1.",
    ".5",
    "-.5",
    "007",
    "10.0",
    "123456789012",
    "9" * 100,
]
# As JSON numbers (attributes from the API or a listmonk export), including what SQLite
# writes with an exponent.
JSON_NUMBERS: list[Any] = [7, -3, 0.5, 1e20, 1e-7, 12345678901234]
NOT_NUMBERS = [
    *("+5", "1e3", "40 apples", "4 0", "0x10", "1.2.3", "--1", "-", ".", "", " ", "abc"),
    # PostgreSQL's \s matched these, then its cast failed the whole query:
    *("7\u2003", "\u30007", "\f7", "\v7"),
    # and its numeric refuses a fraction this long (SQLite would round it):
    "0." + "1" * 20000,
    "1" * 101,
]


def test_what_reads_as_a_number_is_the_same_on_both_databases(runtime: Runtime) -> None:
    values: list[Any] = [*NUMBERS, *JSON_NUMBERS, *NOT_NUMBERS, True, False, None, [1], {"a": 1}]
    with transaction(runtime.sessions) as session:
        for i, value in enumerate(values):
            session.add(Subscriber(email=f"n{i}@example.com", attributes={"v": value}))
    rule = {"conditions": [{"field": "attributes.v", "op": "gte", "value": -(10**15)}]}
    with runtime.sessions() as session:
        emails = session.scalars(select(Subscriber.email).where(compile_rule(rule)))
        matched = sorted((values[int(e[1 : e.index("@")])] for e in emails), key=str)
    assert matched == sorted([*NUMBERS, *JSON_NUMBERS], key=str)
    # Each number compares by its value, not its text: "10.0" is 10, ".5" is a half.
    between = {"conditions": [{"field": "attributes.v", "op": "between", "value": [0.4, 10]}]}
    with runtime.sessions() as session:
        emails = session.scalars(select(Subscriber.email).where(compile_rule(between)))
        assert sorted((values[int(e[1 : e.index("@")])] for e in emails), key=str) == sorted(
            ["\t7\n", "1.", ".5", "007", "10.0", 7, 0.5], key=str
        )


@pytest.mark.ledger_by_hand
def test_engagement(runtime: Runtime, people: dict[str, int]) -> None:
    day = timedelta(days=1)
    # A batch belongs to a real edition (a foreign key); the ledger rows need none.
    edition_id = factories.edition(runtime, factories.newsletter(runtime))
    rows = [
        # a: two editions sent, opened 3 days ago, clicked 40 days ago
        dict(edition_id=1, subscriber_id=people["a"], status="sent", opened_at=NOW - 3 * day),
        dict(edition_id=2, subscriber_id=people["a"], status="sent", clicked_at=NOW - 40 * day),
        # b: one edition, hard bounce 50 days ago
        dict(
            edition_id=1,
            subscriber_id=people["b"],
            status="sent",
            bounce_class="hard",
            queued_at=NOW - 50 * day,
        ),
        # c: delivered yesterday, in a batch sent whole (its row stays queued)
        dict(
            id=100,
            edition_id=edition_id,
            subscriber_id=people["c"],
            status="queued",
            delivered_at=NOW - day,
        ),
        # d: failed: not received
        dict(edition_id=1, subscriber_id=people["d"], status=DeliveryStatus.FAILED.value),
    ]
    with transaction(runtime.sessions) as session:
        for row in rows:
            values = {"email": "x@example.com", "queued_at": NOW - day} | row
            session.execute(insert(Delivery).values(**values))
        session.execute(
            insert(Batch).values(
                edition_id=edition_id,
                first_id=100,
                last_id=100,
                size=1,
                sent_whole=True,
                worker="w",
                transport="outbox",
                claimed_at=NOW,
            )
        )
    assert matching(runtime, {"field": "opened", "op": "within_last_days", "value": 7}) == "a"
    assert matching(runtime, {"field": "clicked", "op": "within_last_days", "value": 7}) == ""
    assert matching(runtime, {"field": "clicked", "op": "exists"}) == "a"
    assert matching(runtime, {"field": "delivered", "op": "within_last_days", "value": 2}) == "c"
    assert matching(runtime, {"field": "bounced", "op": "exists"}) == "b"
    assert matching(runtime, {"field": "bounced", "op": "within_last_days", "value": 30}) == ""
    received = {"field": "editions_received"}
    assert matching(runtime, received | {"op": "gte", "value": 1}) == "abc"
    assert matching(runtime, received | {"op": "gte", "value": 2}) == "a"
    assert matching(runtime, received | {"op": "eq", "value": 0}) == "de"
    assert matching(runtime, received | {"op": "lt", "value": 2}) == "bcde"
    assert matching(runtime, received | {"op": "between", "value": [1, 1]}) == "bc"


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ({"field": "attributes.age", "op": "gt", "value": "abc"}, "number, an ISO 8601 date"),
        ({"field": "attributes.age", "op": "between", "value": [1]}, "two values"),
        ({"field": "attributes.age", "op": "between", "value": [1, "2025-01-01"]}, "not both"),
        ({"field": "subscribed_at", "op": "gt", "value": "yesterday"}, "ISO 8601"),
        ({"field": "subscribed_at", "op": "eq", "value": "2025-01-01"}, "subscribed_at takes"),
        ({"field": "subscribed_at", "op": "gt", "value": {"weeks_ago": 1}}, "days_ago"),
        ({"field": "opened", "op": "within_last_days", "value": -1}, "whole number"),
        ({"field": "opened", "op": "gt", "value": 1}, "exists or within_last_days"),
        ({"field": "editions_received", "op": "gte", "value": "3"}, "whole number"),
        ({"field": "name", "op": "gt", "value": "m"}, "name takes"),
    ],
)
def test_bad_comparisons_name_the_condition(condition: dict[str, Any], reason: str) -> None:
    rule = {"conditions": [{"field": "email", "op": "exists"}, condition]}
    with pytest.raises(SegmentRuleError) as caught:
        compile_rule(rule)
    assert caught.value.where == "conditions[1]"
    assert reason in caught.value.reason


# Rules as a form, an API client or a hand-edited file might send them: the right keys
# with values of any JSON shape, NUL and other odd characters included.
TEXTS = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["age", "a\x00b", "\x00", "2025-01-31", "9999-12-31T23:00-05:00", "attributes.x\x00"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXTS
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=2),
    max_leaves=6,
)
FIELDS = (
    st.sampled_from(
        ["email", "name", "list", "subscribed_at", "opened", "bounced", "editions_received"]
    )
    | TEXTS.map(lambda key: f"attributes.{key}")
    | VALUES
)
OPS_ANY = st.sampled_from(sorted(OPS)) | VALUES
CONDITIONS = st.fixed_dictionaries({"field": FIELDS, "op": OPS_ANY, "value": VALUES}) | VALUES
RULES = st.fixed_dictionaries(
    {
        "match": st.sampled_from(["all", "any"]) | VALUES,
        "conditions": st.lists(CONDITIONS, max_size=3),
    }
)


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule=RULES)
def test_any_rule_is_a_query_or_a_segment_rule_error(runtime: Runtime, rule: Any) -> None:
    """Issue 17: a list as ``op``, a NUL in a field or value raised TypeError or a database
    error. Whatever the rule, compiling it names the bad condition or gives a query that
    both databases run."""
    try:
        condition = compile_rule(rule)
    except SegmentRuleError as error:
        assert error.where
        return
    with runtime.sessions() as session:
        session.scalar(select(func.count()).select_from(Subscriber).where(condition))


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "email", "op": ["eq"], "value": "a"},
        {"field": ["email"], "op": "eq", "value": "a"},
        {"field": "name", "op": "eq", "value": "a\x00b"},
        {"field": "attributes.ci\x00ty", "op": "eq", "value": "Arden"},
        {"field": "list", "op": "in", "value": ["morning", "\x00"]},
        {"field": "attributes.age", "op": "gt", "value": 2**70},
        {"field": "attributes.age", "op": "gt", "value": float("nan")},
        {"field": "subscribed_at", "op": "gt", "value": "9999-12-31T23:00-05:00"},
        {"field": "editions_received", "op": "gte", "value": 2**70},
    ],
)
def test_what_the_fuzzing_found_names_the_condition(condition: dict[str, Any]) -> None:
    with pytest.raises(SegmentRuleError) as caught:
        compile_rule({"conditions": [condition]})
    assert caught.value.where == "conditions[0]"
