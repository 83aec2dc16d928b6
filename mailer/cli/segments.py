"""``mailer segments``: saved rules over subscribers, counted and attached to newsletters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from mailer import jsondata
from mailer.app import segments
from mailer.app.actors import Actor
from mailer.app.errors import AppError
from mailer.cli.common import JsonOption, console, fail, open_runtime, print_json

app = typer.Typer(help="Saved segments: rules over subscribers.", no_args_is_help=True)

RuleOption = typer.Option(
    None, "--rule", help='The rule as JSON: {"match": "all", "conditions": [...]}.'
)
RuleFileOption = typer.Option(None, "--rule-file", help="Read the rule's JSON from this file.")


def _rule(rule: str | None, rule_file: Path | None) -> Any:
    if rule is not None and rule_file is not None:
        fail("give --rule or --rule-file, not both")
    text = rule_file.read_text(encoding="utf-8") if rule_file is not None else rule
    if text is None:
        return None
    try:
        return jsondata.parse(text)
    except ValueError as exc:
        fail(f"the rule is {exc}")


def _show(info: segments.SegmentInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.as_dict())
        return
    used = ", ".join(info.newsletters) or "no newsletter"
    console.print(
        f"[bold]{escape(info.name)}[/] ({escape(used)}): {escape(json.dumps(info.rule))}",
        highlight=False,
    )


@app.command()
def create(
    name: str,
    rule: str | None = RuleOption,
    rule_file: Path | None = RuleFileOption,
    as_json: bool = JsonOption,
) -> None:
    """Save a segment (the rule is checked: a bad one names the condition at fault)."""
    parsed = _rule(rule, rule_file)
    with open_runtime() as runtime:
        try:
            info = segments.create_segment(
                runtime, Actor.cli(), name, parsed if parsed is not None else {}
            )
        except AppError as exc:
            fail(exc.message)
    _show(info, as_json)


@app.command()
def update(
    name: str,
    new_name: str | None = typer.Option(None, "--name", help="Rename it."),
    rule: str | None = RuleOption,
    rule_file: Path | None = RuleFileOption,
    as_json: bool = JsonOption,
) -> None:
    """Rename a segment or replace its rule."""
    parsed = _rule(rule, rule_file)
    with open_runtime() as runtime:
        try:
            info = segments.update_segment(
                runtime, Actor.cli(), name, new_name=new_name, rule=parsed
            )
        except AppError as exc:
            fail(exc.message)
    _show(info, as_json)


@app.command()
def delete(name: str, as_json: bool = JsonOption) -> None:
    """Delete a segment (refused while a newsletter uses it)."""
    with open_runtime() as runtime:
        try:
            deleted = segments.delete_segment(runtime, Actor.cli(), name)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json({"deleted": deleted})
    else:
        console.print(f"segment {deleted!r} deleted", highlight=False, markup=False)


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """Every saved segment with its rule and newsletters."""
    with open_runtime() as runtime:
        try:
            rows = segments.list_segments(runtime, Actor.cli())
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    table = Table("name", "newsletters", "rule")
    for r in rows:
        table.add_row(r.name, ", ".join(r.newsletters), json.dumps(r.rule))
    console.print(table)


@app.command()
def count(
    name: str | None = typer.Argument(None, help="A saved segment; or give --rule."),
    rule: str | None = RuleOption,
    rule_file: Path | None = RuleFileOption,
    as_json: bool = JsonOption,
) -> None:
    """How many subscribers a saved segment or a rule matches now."""
    parsed = _rule(rule, rule_file)
    if (name is None) == (parsed is None):
        fail("give a segment's name or a --rule")
    with open_runtime() as runtime:
        try:
            if parsed is None and name is not None:
                parsed = segments.get_segment(runtime, Actor.cli(), name).rule
            matched = segments.count_segment(runtime, Actor.cli(), parsed)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json({"count": matched})
    else:
        console.print(f"{matched} subscribers", highlight=False)


@app.command()
def attach(
    newsletter: str = typer.Argument(..., help="The newsletter's slug."),
    segment: str | None = typer.Argument(None, help="The segment; leave out with --detach."),
    detach: bool = typer.Option(False, "--detach", help="Send to all of its lists again."),
    as_json: bool = JsonOption,
) -> None:
    """Attach a segment to a newsletter (it then sends to its lists' matching subscribers)."""
    if (segment is None) != detach:
        fail("give a segment, or --detach")
    with open_runtime() as runtime:
        try:
            attached = segments.attach_segment(runtime, Actor.cli(), newsletter, segment)
        except AppError as exc:
            fail(exc.message)
    if as_json:
        print_json({"newsletter": newsletter, "segment": attached})
    else:
        what = f"segment {attached!r}" if attached else "no segment"
        console.print(f"{newsletter}: {what}", highlight=False, markup=False)
