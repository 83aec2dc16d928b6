"""``mailer briefings``: the news items editions are made of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mailer.app import briefings
from mailer.app.actors import Actor
from mailer.app.briefings import BriefingDetail, BriefingSummary
from mailer.app.errors import AppError
from mailer.briefings import feeds
from mailer.briefings.parser import BriefingError, ParsedBriefing, parse_file
from mailer.cli.common import JsonOption, console, fail, load_settings, open_runtime, print_json
from mailer.db.models import BriefingStatus

app = typer.Typer(help="Briefings: the news items editions are made of.", no_args_is_help=True)


def _show_parsed(parsed: ParsedBriefing) -> None:
    console.print(Text(parsed.title, style="bold"), highlight=False)
    if parsed.lead != parsed.title:
        console.print(parsed.lead, highlight=False, markup=False)
    for section in parsed.sections:
        label = f"{section.label}: " if section.label else ""
        console.print(f"\n{label}{section.body}", highlight=False, markup=False)
    for line in parsed.dropped:
        console.print(f"\n(dropped) {line}", highlight=False, markup=False, style="dim")


@app.command()
def parse(
    target: str = typer.Argument(..., metavar="FILE|URL", help="A .txt/.md file or a feed URL."),
    as_json: bool = JsonOption,
) -> None:
    """Show what a file or feed parses to, including the boilerplate dropped."""
    settings = load_settings()
    patterns = settings.boilerplate_patterns
    if target.startswith(("http://", "https://")):
        with feeds.make_client(feeds.user_agent(settings.base_url)) as client:
            try:
                fetched = feeds.fetch(client, target)
                assert fetched.content is not None
                parsed_items = feeds.parse_feed(
                    fetched.content,
                    url=target,
                    content_type=fetched.content_type,
                    boilerplate=patterns,
                )
            except feeds.FeedError as exc:
                fail(str(exc))
        results: list[dict[str, object]] = []
        for item in parsed_items:
            if isinstance(item, BriefingError):
                results.append({"error": str(item)})
            else:
                results.append({"guid": item.guid, "author": item.author, **item.parsed.to_dict()})
        if as_json:
            print_json(results)
        else:
            for result in results:
                console.print(result.get("error") or result["title"], highlight=False, markup=False)
        return
    try:
        parsed = parse_file(Path(target), boilerplate=patterns)
    except BriefingError as exc:
        fail(str(exc))
    if as_json:
        print_json(parsed.to_dict())
    else:
        _show_parsed(parsed)


def _summary_dict(b: BriefingSummary) -> dict[str, Any]:
    return {
        "id": b.id,
        "status": b.status,
        "published": b.published_at.isoformat(),
        "title": b.title,
        "tags": list(b.tags),
        "source_key": b.source_key,
        "source": b.source,
        "edited": b.edited,
        "in_editions": list(b.in_editions),
    }


def _detail_dict(b: BriefingDetail) -> dict[str, Any]:
    """The shape ``show --json`` has always had (title and lead are what readers get),
    with the editor's correction beside the source's words."""
    return {
        "id": b.id,
        "status": b.status,
        "source_key": b.source_key,
        "title": b.title,
        "lead": b.lead,
        "sections": [{"label": s["label"], "paragraphs": s["paragraphs"]} for s in b.sections],
        "tags": list(b.tags),
        "url": b.url,
        "author": b.author,
        "published": b.published_at.isoformat(),
        "dropped": b.dropped,
        "source": b.source,
        "edited": b.edited,
        "original_title": b.original_title,
        "original_lead": b.original_lead,
        "edited_by": b.edited_by,
        "edited_at": b.edited_at.isoformat() if b.edited_at else None,
        "in_editions": list(b.in_editions),
        "corrections": [
            {"recorded_at": c["recorded_at"].isoformat(), "title": c["title"], "lead": c["lead"]}
            for c in b.corrections
        ],
    }


def _show_detail(b: BriefingDetail) -> None:
    console.print(f"[bold]#{b.id} {escape(b.title)}[/] ({b.status})", highlight=False)
    console.print(b.lead, highlight=False, markup=False)
    if b.edited:
        who = f" by {b.edited_by}" if b.edited_by else ""
        when = f" at {b.edited_at:%Y-%m-%d %H:%M} UTC" if b.edited_at else ""
        console.print(
            f"\n[yellow]corrected{escape(who)}{when}[/]; the source says:", highlight=False
        )
        if b.title != b.original_title:
            console.print(f"  title: {b.original_title}", highlight=False, markup=False)
        if b.lead != b.original_lead:
            console.print(f"  lead: {b.original_lead}", highlight=False, markup=False)
    for section in b.sections:
        label = f"{section['label']}: " if section["label"] else ""
        console.print(f"\n{label}{section['text']}", highlight=False, markup=False)
    for correction in b.corrections:
        console.print(
            f"\n[yellow]correction received {correction['recorded_at'].isoformat()}[/]",
            highlight=False,
        )
        console.print(f"  {correction['title']}", highlight=False, markup=False)


@app.command("list")
def list_briefings(
    status: BriefingStatus | None = typer.Option(None, help="Only briefings in this state."),
    source: str | None = typer.Option(None, "--source", help="Only from this source (name)."),
    search: str | None = typer.Option(
        None, "--search", help="Only those whose title or lead contains this."
    ),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """Briefings, newest first."""
    with open_runtime() as runtime:
        try:
            found = briefings.list_briefings(
                runtime,
                Actor.cli(),
                status=status.value if status else None,
                source=source,
                search=search,
                limit=limit,
            )
        except AppError as exc:
            fail(exc.message)
    rows = [_summary_dict(b) for b in found]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "status", "published", "title")
    for b in found:
        title = escape(b.title) + (" [yellow](corrected)[/]" if b.edited else "")
        table.add_row(str(b.id), b.status, f"{b.published_at:%Y-%m-%d %H:%M}", title)
    console.print(table)


@app.command()
def show(briefing_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """One briefing as stored, with an editor's correction and any corrections received
    from the source after it was sent."""
    with open_runtime() as runtime:
        try:
            detail = briefings.get_briefing(runtime, Actor.cli(), briefing_id)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(_detail_dict(detail))
    else:
        _show_detail(detail)


@app.command()
def correct(
    briefing_id: int = typer.Argument(..., metavar="ID"),
    title: str | None = typer.Option(
        None, "--title", help="The headline; '' restores the source's."
    ),
    lead: str | None = typer.Option(None, "--lead", help="The lead; '' restores the source's."),
    as_json: bool = JsonOption,
) -> None:
    """Correct a briefing's headline or lead (pulling again never overwrites it); the
    composed editions that carry it are re-rendered. Refused once it has been sent."""
    if title is None and lead is None:
        fail("give --title and/or --lead")
    with open_runtime() as runtime:
        try:
            detail = briefings.correct_briefing(
                runtime, Actor.cli(), briefing_id, title=title, lead=lead
            )
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json(_detail_dict(detail))
        return
    state = "corrected" if detail.edited else "as the source has it"
    console.print(f"briefing {briefing_id} is {state}", highlight=False)
    _show_detail(detail)


def _set_status(briefing_id: int, status: BriefingStatus) -> None:
    with open_runtime() as runtime:
        try:
            briefings.set_status(runtime, Actor.cli(), briefing_id, status.value)
        except AppError as exc:
            fail(exc.message)
    console.print(f"briefing {briefing_id} is {status}")


@app.command()
def ready(briefing_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Mark a draft briefing ready for the next edition."""
    _set_status(briefing_id, BriefingStatus.READY)


@app.command()
def archive(briefing_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Keep a briefing out of future editions."""
    _set_status(briefing_id, BriefingStatus.ARCHIVED)


@app.command()
def draft(briefing_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Hold a briefing back for an editor."""
    _set_status(briefing_id, BriefingStatus.DRAFT)
