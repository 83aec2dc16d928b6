"""What a schedule needs at a given moment: which slot to run, which to record as missed.

Pure: it reads nothing but its arguments, so every rule here is tested without a
database or a clock. The database decides what already happened (``taken``: the
slot dates that have a run row); this decides what the moment calls for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailer.schedule.slots import Rule, Slot, slots_between

# How far back a scheduler looks for slots it never saw (downtime longer than this
# leaves no trace of each missed day, only of the last week's).
LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class Plan:
    run: Slot | None  # the slot to claim and run now
    missed: tuple[tuple[Slot, str], ...] = ()  # slots to record as missed, with why


def plan(
    rule: Rule,
    *,
    now: datetime,
    effective_from: datetime,
    taken: Collection[date],
    grace: timedelta,
    zones: Iterable[ZoneInfo] = (),
    lookback: timedelta = LOOKBACK,
) -> Plan:
    """Slots in ``[max(effective_from, now - lookback), now]`` without a run: the newest
    runs if it is at most ``grace`` late; every other one is recorded as missed."""
    start = max(effective_from, now - lookback)
    open_slots = [s for s in slots_between(rule, start, now, zones) if s.day not in taken]
    if not open_slots:
        return Plan(None)
    newest = open_slots[-1]
    run = newest if now - newest.at <= grace else None
    missed = []
    for slot in open_slots:
        if slot is run:
            continue
        late = now - slot.at
        if late > grace:
            why = f"missed by {duration(late)}, beyond the {duration(grace)} grace: not sent"
        else:
            why = f"superseded by the later slot of {newest.day.isoformat()}"
        missed.append((slot, why))
    return Plan(run, tuple(missed))


def duration(value: timedelta) -> str:
    """``2d 3h 04m``, ``6h 00m``, ``45s``: for reasons an operator reads."""
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours}h {minutes:02d}m" if hours or days else f"{minutes}m"
    return f"{days}d {text}" if days else text
