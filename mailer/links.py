"""Public URLs that go into emails."""

from __future__ import annotations

from subscribers.tokens import sign_unsubscribe


def unsubscribe_url(base_url: str, key: bytes, subscriber_id: int, edition_id: int) -> str:
    return f"{base_url}/u/{sign_unsubscribe(key, subscriber_id, edition_id)}"
