"""The folder source: every ``.txt`` and ``.md`` file in a directory is a briefing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from mailer.briefings.parser import MARKDOWN_SUFFIXES, BriefingError, parse_file
from mailer.briefings.store import StoreOutcome, store_briefing
from mailer.db.session import transaction

BRIEFING_SUFFIXES = frozenset({".txt"}) | MARKDOWN_SUFFIXES


@dataclass
class PullReport:
    counts: dict[StoreOutcome, int] = field(default_factory=lambda: dict.fromkeys(StoreOutcome, 0))
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    def as_dict(self) -> dict[str, object]:
        return {
            **{str(k): v for k, v in self.counts.items()},
            "failed": self.failed,
            "errors": list(self.errors),
        }


def briefing_files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory")
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in BRIEFING_SUFFIXES:
            yield path


def source_key_for(path: Path) -> str:
    return f"folder:{path.resolve()}"


def pull_folder(
    factory: sessionmaker[Session],
    folder: Path,
    *,
    on_file: Callable[[Path], None] | None = None,
) -> PullReport:
    """Parse and store each file in its own transaction.

    A bad file is reported (its path and what is wrong) and leaves nothing
    behind; the files around it are still stored.
    """
    report = PullReport()
    for path in briefing_files(folder):
        try:
            parsed = parse_file(path)
        except BriefingError as exc:
            report.errors.append(str(exc))
        else:
            with transaction(factory) as session:
                _, outcome = store_briefing(session, source_key_for(path), parsed)
            report.counts[outcome] += 1
        if on_file is not None:
            on_file(path)
    return report
