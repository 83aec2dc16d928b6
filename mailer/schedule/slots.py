"""Slot arithmetic: when a newsletter's daily slot falls, in UTC, whatever the timezone does.

A slot is a wall-clock time ("07:00") in an IANA timezone on selected weekdays.
Daylight-saving rules, decided here once:

* a slot inside the spring-forward gap (02:30 on a day the clocks jump from
  02:00 to 03:00) runs at the first instant after the gap: 03:00 local, the
  moment the clocks change, so it is neither skipped nor pushed an hour late;
* a slot inside the fall-back overlap (01:30 on a day 01:00-02:00 happens
  twice) runs once, at the first occurrence (``fold=0``).

Every instant returned is timezone-aware UTC (Invariant 5).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STEPS = ("pull", "compose", "send")
_SLOT = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_ALIASES = {
    "daily": WEEKDAYS,
    "every-day": WEEKDAYS,
    "all": WEEKDAYS,
    "weekdays": WEEKDAYS[:5],
    "weekends": WEEKDAYS[5:],
}


class ScheduleError(ValueError):
    """A slot, timezone, weekday list or step list that cannot be used."""


def parse_slot(value: str) -> time:
    """``HH:MM`` (24-hour), or ``HH:MM:SS``."""
    match = _SLOT.match(value.strip())
    if match is None:
        raise ScheduleError(f"slot {value!r}: use HH:MM in 24-hour time, e.g. 06:30 or 17:05")
    hour, minute, second = match.groups()
    return time(int(hour), int(minute), int(second or 0))


def format_slot(value: time) -> str:
    return value.strftime("%H:%M:%S" if value.second else "%H:%M")


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA timezone by name, or a ScheduleError that says what is expected.

    The one check of a zone name, wherever one comes in (newsletters, schedules, sends,
    subscribers, imports, the preference page). Only names of the zone database are
    opened: ``ZoneInfo`` reads any path it is given, and a directory such as ``Europe``
    or a name longer than the system's file names raise ``OSError``, not an answer."""
    cleaned = name.strip()
    shown = cleaned if len(cleaned) <= 60 else cleaned[:57] + "..."
    if cleaned not in _known_zones():
        raise ScheduleError(
            f"timezone {shown!r}: not an IANA timezone name (e.g. Europe/Paris, "
            "America/New_York, UTC)"
        )
    try:
        return ZoneInfo(cleaned)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # the zone files changed since
        raise ScheduleError(f"timezone {shown!r}: not readable in the zone database") from None


def parse_weekdays(value: str) -> str:
    """``mon,wed,fri``, ranges (``mon-fri``), or ``daily`` / ``weekdays`` / ``weekends``;
    returned in canonical form (``mon,tue,…``)."""
    chosen: set[int] = set()
    for raw in value.lower().replace(" ", "").split(","):
        if not raw:
            continue
        if raw in _ALIASES:
            chosen.update(WEEKDAYS.index(d) for d in _ALIASES[raw])
            continue
        first, _, last = raw.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ScheduleError(
                f"weekdays {value!r}: use mon,tue,wed,thu,fri,sat,sun, ranges like mon-fri, "
                "or daily / weekdays / weekends"
            )
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if last else start
        span = (end - start) % 7
        chosen.update((start + i) % 7 for i in range(span + 1))
    if not chosen:
        raise ScheduleError(f"weekdays {value!r}: choose at least one day")
    return ",".join(WEEKDAYS[i] for i in sorted(chosen))


def parse_steps(value: str) -> str:
    """Steps at the slot, in canonical order; ``compose`` is always one of them."""
    given = [s for s in value.lower().replace(" ", "").split(",") if s]
    unknown = [s for s in given if s not in STEPS]
    if unknown or "compose" not in given:
        raise ScheduleError(
            f"steps {value!r}: a comma-separated choice of pull, compose, send that "
            "includes compose (e.g. pull,compose,send)"
        )
    return ",".join(s for s in STEPS if s in given)


def local_slot(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``at`` on ``day`` in ``zone`` (rules in the module doc)."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists (and, when ambiguous, fold=0 is its first occurrence)
    # In a gap: fold=0 reads the wall time with the offset before the change (an instant
    # after the change), fold=1 with the offset after it (one before). The change lies
    # between; find its first second.
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    early, late = min(first, second), max(first, second)
    after = late.astimezone(zone).utcoffset()
    while late - early > timedelta(seconds=1):
        middle = early + (late - early) / 2
        middle = middle.replace(microsecond=0)
        if middle <= early:
            break
        if middle.astimezone(zone).utcoffset() == after:
            late = middle
        else:
            early = middle
    return late


@dataclass(frozen=True)
class Rule:
    """A daily slot: ``at`` in ``zone`` on ``weekdays`` (0 = Monday)."""

    at: time
    zone: ZoneInfo
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, slot: str, timezone: str, weekdays: str) -> Rule:
        days = parse_weekdays(weekdays)
        return cls(
            parse_slot(slot),
            parse_timezone(timezone),
            frozenset(WEEKDAYS.index(d) for d in days.split(",")),
        )

    def runs_on(self, day: date) -> bool:
        return day.weekday() in self.weekdays

    def instant(self, day: date, zones: Iterable[ZoneInfo] = ()) -> datetime:
        """When the slot of ``day`` starts. With ``zones`` (local-time delivery): the
        earliest of that day's slot in the newsletter's zone and in each of them, so
        the edition is ready for the first wave."""
        return min(local_slot(day, self.at, z) for z in (self.zone, *zones))


@dataclass(frozen=True, order=True)
class Slot:
    at: datetime  # UTC instant the slot's run starts
    day: date  # the slot's date in the newsletter's timezone (the edition's date)


def slots_between(
    rule: Rule, start: datetime, end: datetime, zones: Iterable[ZoneInfo] = ()
) -> list[Slot]:
    """Slots starting in ``[start, end]``, oldest first."""
    zones = tuple(zones)
    # Local dates around the window: a slot's instant may be up to a day away from its
    # date's midnight in UTC, more with local-time zones far east of the newsletter.
    day = start.astimezone(rule.zone).date() - timedelta(days=2)
    last = end.astimezone(rule.zone).date() + timedelta(days=2)
    found = []
    while day <= last:
        if rule.runs_on(day):
            at = rule.instant(day, zones)
            if start <= at <= end:
                found.append(Slot(at, day))
        day += timedelta(days=1)
    return sorted(found)


def next_slots(
    rule: Rule, after: datetime, count: int = 1, zones: Iterable[ZoneInfo] = ()
) -> list[Slot]:
    """The next ``count`` slots strictly after ``after``."""
    zones = tuple(zones)
    if not rule.weekdays:
        return []
    day = after.astimezone(rule.zone).date() - timedelta(days=2)
    found: list[Slot] = []
    while len(found) < count:
        if rule.runs_on(day):
            at = rule.instant(day, zones)
            if at > after:
                found.append(Slot(at, day))
        day += timedelta(days=1)
    return found
