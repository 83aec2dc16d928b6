"""Slot arithmetic and the planner: pure functions, no database, no real clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.schedule.planner import duration, plan
from mailer.schedule.slots import (
    Rule,
    ScheduleError,
    local_slot,
    next_slots,
    parse_slot,
    parse_steps,
    parse_timezone,
    parse_weekdays,
    slots_between,
)
from tests.scheduling import utc

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def test_parsing_slots_timezones_weekdays_and_steps() -> None:
    assert parse_slot("06:30") == time(6, 30)
    assert parse_slot("23:59:05") == time(23, 59, 5)
    for bad in ("24:00", "7:00", "07:60", "noon", ""):
        with pytest.raises(ScheduleError, match="HH:MM"):
            parse_slot(bad)
    assert parse_timezone("Europe/Paris").key == "Europe/Paris"
    for bad in ("Europe/Pariss", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(ScheduleError, match="IANA"):
            parse_timezone(bad)
    assert parse_weekdays("daily") == "mon,tue,wed,thu,fri,sat,sun"
    assert parse_weekdays("Mon-Fri") == "mon,tue,wed,thu,fri"
    assert parse_weekdays("sat-mon") == "mon,sat,sun"
    assert parse_weekdays("weekends, wed") == "wed,sat,sun"
    for bad in ("", "monday", "mon-xyz", ","):
        with pytest.raises(ScheduleError, match="weekdays"):
            parse_weekdays(bad)
    assert parse_steps("send,compose,pull") == "pull,compose,send"
    assert parse_steps("compose") == "compose"
    for bad in ("pull,send", "compose,mail", ""):
        with pytest.raises(ScheduleError, match="steps"):
            parse_steps(bad)


def test_an_ordinary_day() -> None:
    assert local_slot(date(2025, 6, 10), time(7, 0), BERLIN) == utc(2025, 6, 10, 5, 0)
    assert local_slot(date(2025, 1, 10), time(7, 0), BERLIN) == utc(2025, 1, 10, 6, 0)


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected_utc", "expected_local"),
    [
        # Spring forward: 02:00 → 03:00. A slot in the gap runs when the clocks change.
        (BERLIN, date(2025, 3, 30), time(2, 30), utc(2025, 3, 30, 1, 0), "03:00"),
        (BERLIN, date(2025, 3, 30), time(2, 0), utc(2025, 3, 30, 1, 0), "03:00"),
        (BERLIN, date(2025, 3, 30), time(3, 0), utc(2025, 3, 30, 1, 0), "03:00"),
        (BERLIN, date(2025, 3, 30), time(1, 59), utc(2025, 3, 30, 0, 59), "01:59"),
        (NEW_YORK, date(2025, 3, 9), time(2, 30), utc(2025, 3, 9, 7, 0), "03:00"),
        # Lord Howe moves by 30 minutes.
        (
            ZoneInfo("Australia/Lord_Howe"),
            date(2025, 10, 5),
            time(2, 15),
            utc(2025, 10, 4, 15, 30),
            "02:30",
        ),
        # Fall back: 03:00 → 02:00. An ambiguous slot runs once, at its first occurrence.
        (BERLIN, date(2025, 10, 26), time(2, 30), utc(2025, 10, 26, 0, 30), "02:30"),
        (NEW_YORK, date(2025, 11, 2), time(1, 30), utc(2025, 11, 2, 5, 30), "01:30"),
    ],
)
def test_daylight_saving_days(
    zone: ZoneInfo, day: date, at: time, expected_utc: datetime, expected_local: str
) -> None:
    instant = local_slot(day, at, zone)
    assert instant == expected_utc
    assert instant.tzinfo is UTC
    assert instant.astimezone(zone).strftime("%H:%M") == expected_local


def test_one_slot_per_day_across_both_changes() -> None:
    rule = Rule.parse("02:30", "Europe/Berlin", "daily")
    spring = slots_between(rule, utc(2025, 3, 29), utc(2025, 3, 31, 23, 59))
    assert [(s.day, s.at) for s in spring] == [
        (date(2025, 3, 29), utc(2025, 3, 29, 1, 30)),
        (date(2025, 3, 30), utc(2025, 3, 30, 1, 0)),
        (date(2025, 3, 31), utc(2025, 3, 31, 0, 30)),
    ]
    autumn = slots_between(rule, utc(2025, 10, 25), utc(2025, 10, 27, 23, 59))
    assert [(s.day, s.at) for s in autumn] == [
        (date(2025, 10, 25), utc(2025, 10, 25, 0, 30)),
        (date(2025, 10, 26), utc(2025, 10, 26, 0, 30)),
        (date(2025, 10, 27), utc(2025, 10, 27, 1, 30)),
    ]


def test_weekdays_and_next_slots() -> None:
    rule = Rule.parse("07:00", "Europe/Berlin", "mon-fri")
    friday_noon = utc(2025, 3, 28, 12)
    upcoming = next_slots(rule, friday_noon, 3)
    assert [s.day for s in upcoming] == [date(2025, 3, 31), date(2025, 4, 1), date(2025, 4, 2)]
    # Monday after the change: 07:00 CEST is 05:00 UTC.
    assert upcoming[0].at == utc(2025, 3, 31, 5)
    # Strictly after: at the slot itself, the next one is tomorrow's.
    assert next_slots(rule, upcoming[0].at)[0].day == date(2025, 4, 1)


def test_local_time_zones_move_the_start_to_the_earliest_zone() -> None:
    rule = Rule.parse("07:00", "Europe/London", "daily")
    tokyo = ZoneInfo("Asia/Tokyo")
    assert rule.instant(date(2025, 6, 10)) == utc(2025, 6, 10, 6)
    assert rule.instant(date(2025, 6, 10), [tokyo, NEW_YORK]) == utc(2025, 6, 9, 22)


GRACE = timedelta(hours=6)


def test_plan_runs_a_slot_within_the_grace_and_records_older_ones_as_missed() -> None:
    rule = Rule.parse("07:00", "UTC", "daily")
    since = utc(2025, 6, 1)
    # Before the slot: nothing.
    assert plan(rule, now=utc(2025, 6, 10, 6, 59), effective_from=utc(2025, 6, 10), taken=(),
                grace=GRACE).run is None  # fmt: skip
    # At the slot and up to the grace: run it.
    for late in (timedelta(0), timedelta(hours=5, minutes=59)):
        decided = plan(
            rule,
            now=utc(2025, 6, 10, 7) + late,
            effective_from=utc(2025, 6, 10),
            taken=(),
            grace=GRACE,
        )
        assert decided.run is not None and decided.run.day == date(2025, 6, 10)
        assert decided.missed == ()
    # Beyond the grace: missed, with why.
    decided = plan(
        rule, now=utc(2025, 6, 10, 13, 1), effective_from=utc(2025, 6, 10), taken=(), grace=GRACE
    )
    assert decided.run is None
    [(slot, why)] = decided.missed
    assert slot.day == date(2025, 6, 10)
    assert why == "missed by 6h 01m, beyond the 6h 00m grace: not sent"
    # Three days down: the two older slots are missed, today's runs.
    decided = plan(rule, now=utc(2025, 6, 10, 8), effective_from=since, taken=(), grace=GRACE)
    assert decided.run is not None and decided.run.day == date(2025, 6, 10)
    assert [s.day for s, _ in decided.missed][-2:] == [date(2025, 6, 8), date(2025, 6, 9)]
    # What has a run row is never planned again.
    again = plan(
        rule,
        now=utc(2025, 6, 10, 8),
        effective_from=utc(2025, 6, 10),
        taken={date(2025, 6, 10)},
        grace=GRACE,
    )
    assert again.run is None and again.missed == ()


def test_plan_ignores_slots_before_the_schedule_took_effect() -> None:
    rule = Rule.parse("07:00", "UTC", "daily")
    # Created (or its slot moved) at 07:30: today's 07:00 is neither run nor missed.
    decided = plan(
        rule, now=utc(2025, 6, 10, 7, 31), effective_from=utc(2025, 6, 10, 7, 30), taken=(),
        grace=GRACE,
    )  # fmt: skip
    assert decided.run is None and decided.missed == ()


def test_plan_with_a_grace_over_a_day_runs_only_the_newest() -> None:
    rule = Rule.parse("07:00", "UTC", "daily")
    decided = plan(
        rule,
        now=utc(2025, 6, 10, 8),
        effective_from=utc(2025, 6, 9),
        taken=(),
        grace=timedelta(hours=30),
    )
    assert decided.run is not None and decided.run.day == date(2025, 6, 10)
    [(slot, why)] = decided.missed
    assert slot.day == date(2025, 6, 9) and "superseded" in why


def test_durations_read_well() -> None:
    assert duration(timedelta(seconds=45)) == "45s"
    assert duration(timedelta(minutes=5)) == "5m"
    assert duration(timedelta(hours=6)) == "6h 00m"
    assert duration(timedelta(days=2, hours=3, minutes=4)) == "2d 3h 04m"
