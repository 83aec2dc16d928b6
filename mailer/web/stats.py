"""What happened to an edition after it was sent.

``GET /editions/{id}/stats`` is a workspace page: a table of counts with rates, and
a chart of events over time drawn on the server as inline SVG (no script draws it).
``GET /editions/{id}/stats.json`` is the same as JSON, for a signed-in account or a
machine with an API token. ``GET /stats`` lists the sent editions with their numbers.
The old ``/admin/editions/{id}/stats`` addresses redirect to the new ones.

The chart's bars are computed here, not in the template: one bucket per hour, or
wider buckets (2, 3, 6, 12 hours, a day...) when the events span too many hours
for one bar each to be readable. Empty buckets between the first and the last
keep their place, so the x axis is time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from mailer.app import editions
from mailer.db.models import EditionStatus
from mailer.events.stats import TIMELINE_KINDS, EditionStats, StatsError, edition_stats
from mailer.runtime import Runtime
from mailer.web import auth
from mailer.web.views import page

router = APIRouter()
STATS_PAGE = 25

# How each timeline kind is named and drawn (colour-blind-safe Tableau 10 shades).
KIND_LABELS = {
    "delivered": "delivered",
    "open": "opens",
    "click": "clicks",
    "bounce": "bounces",
    "dropped": "drops",
    "spamreport": "complaints",
    "unsubscribe": "unsubscribes",
}
KIND_COLORS = {
    "delivered": "#4e79a7",
    "open": "#59a14f",
    "click": "#f28e2b",
    "bounce": "#e15759",
    "dropped": "#9c755f",
    "spamreport": "#b07aa1",
    "unsubscribe": "#76b7b2",
}
# Bucket widths tried in turn until the chart has at most MAX_BUCKETS bars.
BUCKET_HOURS = (1, 2, 3, 6, 12, 24, 48, 168)
MAX_BUCKETS = 72
MAX_X_LABELS = 6
MAX_BAR_WIDTH = 48.0

# Geometry of the SVG, in its own units (it scales to the page's width).
WIDTH = 720
PLOT_LEFT = 56
PLOT_RIGHT = WIDTH - 16
PLOT_TOP = 16
PLOT_BOTTOM = 216
HEIGHT = 290


@dataclass(frozen=True)
class Row:
    """One line of the counts table."""

    metric: str
    label: str
    count: int
    rate: str  # "12.50%", or "" where no rate applies
    basis: str  # what the rate is a share of


@dataclass(frozen=True)
class Bar:
    kind: str
    label: str
    color: str
    start: str  # the bucket's first hour, ISO text
    count: int
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    desc: str
    unit: str  # "hour", "3 hours", "day"...
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    legend: list[tuple[str, str, str, float]]  # kind, label, colour, x
    # The same figures for the accessible table: kinds, then (bucket, counts) rows.
    kinds: list[tuple[str, str]]
    rows: list[tuple[str, list[int]]]


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _load(request: Request, edition_id: int) -> EditionStats | None:
    with _runtime(request).sessions() as session:
        try:
            return edition_stats(session, edition_id)
        except StatsError:
            return None


@router.get("/stats", response_class=HTMLResponse)
def sent_editions(
    request: Request, info: auth.Editor, before: Annotated[int | None, Query(ge=1)] = None
) -> HTMLResponse:
    runtime = _runtime(request)
    sent = editions.list_editions(
        runtime,
        info.actor,
        statuses=(EditionStatus.SENT, EditionStatus.SENDING, EditionStatus.PAUSED),
        limit=STATS_PAGE,
        before_id=before,
        with_counts=False,
    )
    rows = [(e, editions.stats(runtime, info.actor, e.id, timeline=False)) for e in sent]
    return page(
        request,
        "workspace/stats_list.html",
        {"rows": rows, "next_before": sent[-1].id if len(sent) == STATS_PAGE else None},
    )


@router.get("/admin/editions/{edition_id}/stats")
def old_stats_page(edition_id: int) -> RedirectResponse:
    return RedirectResponse(f"/editions/{edition_id}/stats", status_code=308)


@router.get("/admin/editions/{edition_id}/stats.json")
def old_stats_json(edition_id: int) -> RedirectResponse:
    return RedirectResponse(f"/editions/{edition_id}/stats.json", status_code=308)


@router.get("/editions/{edition_id}/stats", response_class=HTMLResponse)
def stats_page(request: Request, edition_id: int, _info: auth.Editor) -> HTMLResponse:
    stats = _load(request, edition_id)
    context: dict[str, Any] = {"edition_id": edition_id, "stats": stats}
    if stats is not None:
        context["rows"] = table_rows(stats)
        context["chart"] = chart(stats)
        context["geometry"] = {
            "width": WIDTH,
            "height": HEIGHT,
            "left": PLOT_LEFT,
            "right": PLOT_RIGHT,
            "top": PLOT_TOP,
            "bottom": PLOT_BOTTOM,
        }
    return page(request, "workspace/stats.html", context, 200 if stats else 404)


@router.get("/editions/{edition_id}/stats.json")
def stats_json(request: Request, edition_id: int, _reader: auth.Reader) -> JSONResponse:
    stats = _load(request, edition_id)
    if stats is None:
        return JSONResponse({"error": f"no edition with id {edition_id}"}, status_code=404)
    return JSONResponse(stats.as_dict())


def percent(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.2%}"


def table_rows(stats: EditionStats) -> list[Row]:
    rates = stats.rates()
    of_sent, of_delivered = "of sent", "of delivered"
    return [
        Row("recipients", "recipients", stats.recipients, "", ""),
        Row("sent", "sent", stats.sent, "", ""),
        Row("delivered", "delivered", stats.delivered, percent(rates["delivered"]), of_sent),
        Row(
            "bounced_hard",
            "bounced (hard)",
            stats.bounced_hard,
            percent(rates["bounced_hard"]),
            of_sent,
        ),
        Row(
            "bounced_soft",
            "bounced (soft)",
            stats.bounced_soft,
            percent(rates["bounced_soft"]),
            of_sent,
        ),
        Row("dropped", "dropped", stats.dropped, percent(rates["dropped"]), of_sent),
        Row(
            "complaints", "complaints", stats.complaints, percent(rates["complaints"]), of_delivered
        ),
        Row(
            "unsubscribes",
            "unsubscribes",
            stats.unsubscribes,
            percent(rates["unsubscribes"]),
            of_delivered,
        ),
        Row("opens", "opened (readers)", stats.unique_opens, percent(rates["opens"]), of_delivered),
        Row("opens_total", "opens in all", stats.opens, "", ""),
        Row(
            "clicks",
            "clicked (readers)",
            stats.unique_clicks,
            percent(rates["clicks"]),
            of_delivered,
        ),
        Row("clicks_total", "clicks in all", stats.clicks, "", ""),
        Row("unknown", "outcome unknown", stats.unknown, "", ""),
    ]


def _parse_hour(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)


def _bucket_hours(span_hours: int) -> int:
    for hours in BUCKET_HOURS:
        if math.ceil(span_hours / hours) <= MAX_BUCKETS:
            return hours
    return math.ceil(span_hours / MAX_BUCKETS)


def _unit(hours: int) -> str:
    if hours == 1:
        return "hour"
    if hours % 24 == 0:
        days = hours // 24
        return "day" if days == 1 else f"{days} days"
    return f"{hours} hours"


def _nice_step(top: int, ticks: int = 4) -> int:
    raw = max(top / ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= raw:
            return int(multiple * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def _fmt(value: float) -> float:
    return round(value, 2)


def chart(stats: EditionStats) -> Chart | None:
    """Stacked bars of events per bucket and kind; None when there are no events yet."""
    if not stats.timeline:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    points = [(_parse_hour(hour), kind, count) for hour, kind, count in stats.timeline]
    first = min(p[0] for p in points)
    last = max(p[0] for p in points)
    span = int((last - first).total_seconds() // 3600) + 1
    size = _bucket_hours(span)
    # Buckets aligned on the epoch, so 3-, 6-, 12- and 24-hour buckets start at UTC midnight.
    first_index = int((first - epoch).total_seconds() // 3600) // size
    last_index = int((last - epoch).total_seconds() // 3600) // size
    count_buckets = last_index - first_index + 1
    counts: list[dict[str, int]] = [{} for _ in range(count_buckets)]
    for at, kind, count in points:
        index = int((at - epoch).total_seconds() // 3600) // size - first_index
        counts[index][kind] = counts[index].get(kind, 0) + count
    starts = [epoch + timedelta(hours=(first_index + i) * size) for i in range(count_buckets)]
    present = [k for k in TIMELINE_KINDS if any(c.get(k) for c in counts)]
    peak = max(sum(c.values()) for c in counts)
    step = _nice_step(peak)
    top = max(step, math.ceil(peak / step) * step)
    height = PLOT_BOTTOM - PLOT_TOP
    slot = (PLOT_RIGHT - PLOT_LEFT) / count_buckets
    bar_width = min(max(slot * 0.8, 1.0), MAX_BAR_WIDTH)
    daily = size % 24 == 0
    unit = _unit(size)

    def label(at: datetime) -> str:
        return at.strftime("%b %d") if daily else at.strftime("%b %d %H:00")

    bars: list[Bar] = []
    for i, bucket in enumerate(counts):
        x = PLOT_LEFT + i * slot + (slot - bar_width) / 2
        base = float(PLOT_BOTTOM)
        for kind in present:
            count = bucket.get(kind, 0)
            if not count:
                continue
            h = count / top * height
            base -= h
            bars.append(
                Bar(
                    kind=kind,
                    label=KIND_LABELS[kind],
                    color=KIND_COLORS[kind],
                    start=starts[i].strftime("%Y-%m-%dT%H:00Z"),
                    count=count,
                    x=_fmt(x),
                    y=_fmt(base),
                    width=_fmt(bar_width),
                    height=_fmt(h),
                    title=f"{label(starts[i])} UTC, {KIND_LABELS[kind]}: {count:,}",
                )
            )
    y_ticks = [
        Tick(_fmt(PLOT_BOTTOM - value / top * height), f"{value:,}")
        for value in range(0, top + 1, step)
    ]
    every = math.ceil(count_buckets / MAX_X_LABELS)
    x_ticks = [
        Tick(_fmt(PLOT_LEFT + (i + 0.5) * slot), label(starts[i]))
        for i in range(0, count_buckets, every)
    ]
    legend_slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(present), 1)
    legend = [
        (kind, KIND_LABELS[kind], KIND_COLORS[kind], _fmt(PLOT_LEFT + i * legend_slot))
        for i, kind in enumerate(present)
    ]
    total = sum(c for _, _, c in points)
    end = starts[-1] + timedelta(hours=size)
    desc = (
        f"Stacked bars, one per {unit}, of {total:,} events "
        f"({', '.join(KIND_LABELS[k] for k in present)}) "
        f"from {starts[0]:%Y-%m-%d %H:00} to {end:%Y-%m-%d %H:00} UTC; "
        f"the tallest bar is {peak:,} events. The same figures are in the table that follows."
    )
    rows = [
        (f"{starts[i]:%Y-%m-%d %H:00}", [bucket.get(k, 0) for k in present])
        for i, bucket in enumerate(counts)
        if bucket
    ]
    return Chart(
        title=f"Events per {unit}, edition {stats.edition_id}",
        desc=desc,
        unit=unit,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=legend,
        kinds=[(k, KIND_LABELS[k]) for k in present],
        rows=rows,
    )
