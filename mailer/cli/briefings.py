"""``mailer briefings``: the news items editions are made of."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import select

from mailer.briefings import feeds
from mailer.briefings.parser import BriefingError, ParsedBriefing, parse_file
from mailer.briefings.store import as_dict
from mailer.cli.common import JsonOption, console, fail, load_settings, open_runtime, print_json
from mailer.db.models import Briefing, BriefingStatus, Correction
from mailer.db.session import transaction

app = typer.Typer(help="Briefings: the news items editions are made of.", no_args_is_help=True)


def _show_parsed(parsed: ParsedBriefing) -> None:
    console.print(f"[bold]{parsed.title}[/]", highlight=False, markup=False)
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
                feed = feeds.read_feed(
                    fetched.content, url=target, content_type=fetched.content_type
                )
            except feeds.FeedError as exc:
                fail(str(exc))
        results: list[dict[str, object]] = []
        for item in feeds.items(feed, url=target, boilerplate=patterns):
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


@app.command("list")
def list_briefings(
    status: BriefingStatus | None = typer.Option(None, help="Only briefings in this state."),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """Briefings, newest first."""
    with open_runtime() as runtime, runtime.sessions() as session:
        query = select(Briefing).order_by(Briefing.published_at.desc(), Briefing.id.desc())
        if status is not None:
            query = query.where(Briefing.status == status)
        rows = [
            {
                "id": b.id,
                "status": b.status,
                "published": b.published_at.isoformat(),
                "title": b.title,
                "tags": b.tags,
                "source_key": b.source_key,
            }
            for b in session.scalars(query.limit(limit))
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "status", "published", "title")
    for row in rows:
        table.add_row(
            str(row["id"]), str(row["status"]), str(row["published"])[:16], str(row["title"])
        )
    console.print(table)


@app.command()
def show(briefing_id: int = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """One briefing as stored, with any corrections received after it was sent."""
    with open_runtime() as runtime, runtime.sessions() as session:
        briefing = session.get(Briefing, briefing_id)
        if briefing is None:
            fail(f"no briefing with id {briefing_id}")
        corrections = session.scalars(
            select(Correction).where(Correction.briefing_id == briefing_id).order_by(Correction.id)
        ).all()
        data = {
            **as_dict(briefing),
            "corrections": [
                {"recorded_at": c.recorded_at.isoformat(), "title": c.title, "lead": c.lead}
                for c in corrections
            ],
        }
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]#{data['id']} {data['title']}[/] ({data['status']})", highlight=False)
    console.print(str(data["lead"]), highlight=False, markup=False)
    for section in briefing.sections:
        label = f"{section.get('label')}: " if section.get("label") else ""
        body = "\n\n".join(section.get("paragraphs", []))
        console.print(f"\n{label}{body}", highlight=False, markup=False)
    for correction in data["corrections"]:
        console.print(f"\n[yellow]correction received {correction['recorded_at']}[/]")


def _set_status(briefing_id: int, status: BriefingStatus) -> None:
    with open_runtime() as runtime, transaction(runtime.sessions) as session:
        briefing = session.get(Briefing, briefing_id)
        if briefing is None:
            fail(f"no briefing with id {briefing_id}")
        if briefing.status == BriefingStatus.SENT:
            fail(f"briefing {briefing_id} was sent; a sent briefing stays as it went out")
        briefing.status = status
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
