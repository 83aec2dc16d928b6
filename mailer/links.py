"""Public URLs that go into emails."""

from __future__ import annotations

from subscribers.tokens import UnsubscribeSigner


class UnsubscribeLinks:
    """Unsubscribe URLs for many readers of one site, signed with one key."""

    __slots__ = ("_prefix", "_signer")

    def __init__(self, base_url: str, key: bytes) -> None:
        self._prefix = f"{base_url}/u/"
        self._signer = UnsubscribeSigner(key)

    def url(self, subscriber_id: int, edition_id: int) -> str:
        return self._prefix + self._signer.token(subscriber_id, edition_id)


def unsubscribe_url(base_url: str, key: bytes, subscriber_id: int, edition_id: int) -> str:
    return UnsubscribeLinks(base_url, key).url(subscriber_id, edition_id)
