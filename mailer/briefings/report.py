"""What a pull did, per source: counts by outcome and the items that failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailer.briefings.sanitize import clean_text
from mailer.briefings.store import StoreOutcome

# Enough to say what is wrong; errors can quote the input, which is not ours to keep whole.
MAX_ITEM = 2000
MAX_MESSAGE = 1000


@dataclass(frozen=True)
class ItemError:
    item: str
    message: str


@dataclass
class PullReport:
    source: str
    counts: dict[StoreOutcome, int] = field(default_factory=lambda: dict.fromkeys(StoreOutcome, 0))
    errors: list[ItemError] = field(default_factory=list)
    not_modified: bool = False

    @property
    def failed(self) -> int:
        return len(self.errors)

    def fail(self, item: str, message: str) -> None:
        """Record one item's error; stored as it is, so cleaned and cut to size here."""
        message = clean_text(message)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "\u2026"
        self.errors.append(ItemError(clean_text(item)[:MAX_ITEM], message))

    def summary(self) -> str:
        if self.not_modified:
            return "not modified"
        parts = [f"{n} {outcome}" for outcome, n in self.counts.items() if n]
        if self.failed:
            parts.append(f"{self.failed} failed")
        return ", ".join(parts) or "empty"

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            **{str(k): v for k, v in self.counts.items()},
            "failed": self.failed,
            "not_modified": self.not_modified,
            "errors": [{"item": e.item, "message": e.message} for e in self.errors],
        }
