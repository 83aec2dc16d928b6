"""How the bounce reader does on a corpus of real bounce mail with expected answers.

A corpus is a folder of ``.eml`` files and an ``expected.json`` with one row per failed
recipient (``file``, ``index`` 1-based, ``hard``, ``bounce``; see
tests/data/bounces/sisimai/README.md). The reader's recipients are compared by position:
the i-th address it reports answers the row with index i. The figures:

- detected: expected recipients of bounces the reader reported an address for;
- agreement: of those, how many it calls hard exactly when the expected answer does;
- addresses reported for messages that are no bounce (should be none);
- messages with more addresses than expected recipients (should be none);
- exceptions, and messages the reader flagged as unparsed.

Nothing here knows any file of any corpus: it is the measure, not the rules.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailer.bounces.mail import MailBounce, read_bounce
from mailer.bounces.reasons import BounceClass


class CorpusError(ValueError):
    """The corpus folder or its expected answers cannot be read; says where."""


@dataclass(frozen=True)
class Expected:
    file: str
    index: int
    hard: bool
    bounce: bool
    reason: str


@dataclass
class Figures:
    messages: int = 0
    bounce_messages: int = 0
    not_bounce_messages: int = 0
    expected_recipients: int = 0
    detected: int = 0
    agreed: int = 0
    not_bounce_addresses: int = 0
    extra_address_messages: int = 0
    exceptions: int = 0
    unparsed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    missed: list[dict[str, Any]] = field(default_factory=list)
    disagreed: list[dict[str, Any]] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)

    @property
    def detection_rate(self) -> float:
        return self.detected / self.expected_recipients if self.expected_recipients else 0.0

    @property
    def agreement_rate(self) -> float:
        return self.agreed / self.detected if self.detected else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["detection_rate"] = round(self.detection_rate, 4)
        data["agreement_rate"] = round(self.agreement_rate, 4)
        return data


def load_expected(directory: Path) -> dict[str, list[Expected]]:
    """The expected answers by file, each file's rows in index order."""
    path = directory / "expected.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{path}: no expected answers (expected.json) here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: cannot be read: {exc}") from None
    if not isinstance(rows, list):
        raise CorpusError(f"{path}: expected a JSON list of rows")
    by_file: dict[str, list[Expected]] = {}
    for number, row in enumerate(rows, 1):
        try:
            item = Expected(
                file=str(row["file"]),
                index=int(row["index"]),
                hard=bool(row["hard"]),
                bounce=bool(row["bounce"]),
                reason=str(row.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorpusError(f"{path}: row {number}: missing or bad field {exc}") from None
        if Path(item.file).name != item.file or not (directory / item.file).is_file():
            raise CorpusError(f"{path}: row {number}: no message {item.file!r} in {directory}")
        by_file.setdefault(item.file, []).append(item)
    for items in by_file.values():
        items.sort(key=lambda e: e.index)
    return by_file


def evaluate(directory: Path) -> Figures:
    """Read every message the expected answers name and count how the reader did."""
    expected = load_expected(directory)
    figures = Figures()
    reasons: Counter[str] = Counter()
    for name, rows in sorted(expected.items()):
        figures.messages += 1
        raw = (directory / name).read_bytes()
        try:
            read = read_bounce(raw)
        except Exception as exc:  # the reader promises not to raise; count it if it does
            figures.exceptions += 1
            figures.missed.append({"file": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        if read.unparsed is not None:
            figures.unparsed += 1
        found = read.bounces
        reasons.update(b.reason.value for b in found)
        if not rows[0].bounce:
            figures.not_bounce_messages += 1
            figures.not_bounce_addresses += len(found)
            if found:
                figures.extra.append({"file": name, "addresses": [b.email for b in found]})
            continue
        figures.bounce_messages += 1
        if len(found) > len(rows):
            figures.extra_address_messages += 1
            figures.extra.append(
                {"file": name, "expected": len(rows), "addresses": [b.email for b in found]}
            )
        for row in rows:
            figures.expected_recipients += 1
            bounce = found[row.index - 1] if row.index <= len(found) else None
            if bounce is None:
                figures.missed.append({"file": name, "index": row.index, "reason": row.reason})
                continue
            figures.detected += 1
            if (bounce.kind is BounceClass.HARD) == row.hard:
                figures.agreed += 1
            else:
                figures.disagreed.append(_disagreement(name, row, bounce))
    figures.reasons = dict(reasons.most_common())
    return figures


def _disagreement(name: str, row: Expected, bounce: MailBounce) -> dict[str, Any]:
    return {
        "file": name,
        "index": row.index,
        "expected": "hard" if row.hard else "soft",
        "expected_reason": row.reason,
        "got": bounce.kind.value,
        "reason": bounce.reason.value,
        "status": bounce.status,
        "diagnostic": bounce.diagnostic[:160],
    }
