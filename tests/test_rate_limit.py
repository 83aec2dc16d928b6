"""SendGrid's X-RateLimit-Reset, however malformed, is a sane wait: the parser both
SendGrid clients share, and each client over real HTTP against a local stand-in."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.bounces.sendgrid_sync import SendGridSuppressionClient, SuppressionKind
from mailer.runtime import Runtime
from mailer.transports.base import Outcome, Recipient
from mailer.transports.rate_limit import DEFAULT_WAIT, MAX_WAIT, MIN_WAIT, reset_wait
from mailer.transports.sendgrid import SendGridTransport
from tests.factories import envelope
from tests.sendgrid_sink import API_KEY, SinkServer, sendgrid_sink
from tests.sending import prepared, send
from tests.suppression_server import API_KEY as SUPPRESSION_KEY
from tests.suppression_server import SuppressionServer
from tests.waits import sleep_checks

NOW = 1_800_000_000.0
MALFORMED = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "-5",
    "-1800000002",
    "garbage",
    "",
    " ",
    "1e9",
    "0x10",
    "1_800_000_000",
    "12abc",
    "1.8e9",
    "+1800000002",
    "١٢٣",
]


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        (str(int(NOW) + 2), 2.0),  # the documented form: two seconds ahead
        (f"{NOW + 7.5}", 7.5),
        (str(int(NOW) - 100), MIN_WAIT),  # already reset: soon
        (str(int(NOW)), MIN_WAIT),
        (str(int(NOW) + 86_400), MAX_WAIT),  # a day ahead: the cap
        ("9" * 30, MAX_WAIT),  # huge
        ("9" * 400, MAX_WAIT),  # past what a float holds
        ("30", 30.0),  # too small for a time: seconds to wait
        ("0", MIN_WAIT),
        (None, DEFAULT_WAIT),  # no header at all
        *[(value, DEFAULT_WAIT) for value in MALFORMED],
    ],
)
def test_the_reset_header_becomes_a_bounded_wait(value: str | None, wait: float) -> None:
    assert reset_wait(value, now=NOW) == pytest.approx(wait)


def test_the_cap_is_the_callers() -> None:
    assert reset_wait(str(int(NOW) + 86_400), now=NOW, cap=10.0) == 10.0
    assert reset_wait("nan", now=NOW, cap=0.75) == 0.75


@settings(max_examples=300, derandomize=True, database=None)
@given(st.one_of(st.text(max_size=40), st.floats().map(repr), st.integers().map(str)))
def test_any_header_value_is_a_finite_wait_within_bounds(value: str) -> None:
    wait = reset_wait(value)
    assert math.isfinite(wait) and MIN_WAIT <= wait <= MAX_WAIT


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    with sendgrid_sink() as server:
        yield server


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "9" * 400, "garbage", ""])
def test_the_transport_waits_and_sends_whatever_the_reset_says(
    sink: SinkServer, value: str
) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        sleep_checks(seconds)
        waits.append(seconds)

    sink.sink.actions = ["429", "429"]
    sink.sink.rate_limit_reset = value
    transport = SendGridTransport(API_KEY, sink.base_url, timeout=2.0, sleep=sleep)
    try:
        recipients = [Recipient(i, f"r{i}@example.com", None, f"https://x/u/{i}") for i in (1, 2)]
        results = transport.send(envelope(), recipients)
    finally:
        transport.close()
    assert sink.sink.answered == [429, 429, 202]
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(waits) == 2 and all(MIN_WAIT <= w <= MAX_WAIT for w in waits)


def test_a_nan_reset_no_longer_leaves_a_batch_unknown(runtime: Runtime, sink: SinkServer) -> None:
    """The issue's case, through the dispatcher and a sender process: a 429 with
    ``X-RateLimit-Reset: nan`` made ``sleep(nan)`` raise, and the batch, of which
    nothing had been sent, was left ``unknown``."""
    edition_id = prepared(runtime, 4)
    sink.sink.actions = ["429"]
    sink.sink.rate_limit_reset = "nan"
    transport = SendGridTransport(API_KEY, sink.base_url, timeout=2.0, sleep=sleep_checks)
    tally = send(runtime, edition_id, transport)
    assert tally["sent"] == 4 and tally.get("unknown", 0) == 0
    assert sink.sink.answered == [429, 202]


@pytest.fixture(scope="module")
def suppressions() -> Iterator[SuppressionServer]:
    with SuppressionServer() as server:
        yield server


@pytest.mark.parametrize("value", ["nan", "-inf", "-7", "9" * 400, "soon", ""])
def test_the_suppression_sync_waits_and_reads_whatever_the_reset_says(
    suppressions: SuppressionServer, value: str
) -> None:
    suppressions.state.reset()
    suppressions.state.add(
        "bounces", {"email": "gone@example.org", "created": 1_700_000_000, "reason": "550 5.1.1"}
    )
    suppressions.state.rate_limit_reset = value
    suppressions.state.fail_next("429", 2)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        sleep_checks(seconds)
        waits.append(seconds)

    with SendGridSuppressionClient(
        SUPPRESSION_KEY, suppressions.base_url, timeout=2.0, sleep=sleep
    ) as client:
        found = list(client.fetch(SuppressionKind.BOUNCE, None, int(time.time())))
    assert [s.email for s in found] == ["gone@example.org"]
    assert [r.status for r in suppressions.state.requests] == [429, 429, 200]
    assert len(waits) == 2 and all(MIN_WAIT <= w <= MAX_WAIT for w in waits)
