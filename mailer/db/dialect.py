"""What differs between our two databases and has one answer for both."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite


def conflict_insert(dialect: str) -> Any:
    """``insert`` with ``ON CONFLICT`` (do nothing, do update) for this database: both
    speak it, through their own SQLAlchemy dialects."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert
