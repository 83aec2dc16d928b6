"""Public URLs that go into emails."""

from __future__ import annotations

from subscribers.tokens import UnsubscribeSigner, sign_edition_web

UNSUBSCRIBE_PATH = "/u/"
# An edition's preference link is its unsubscribe link under this path: the same token,
# so a send signs nothing more per recipient (see Recipient.token).
PREFERENCES_PATH = "/p/"
EDITION_WEB_PATH = "/e/"


class UnsubscribeLinks:
    """Unsubscribe URLs for many readers of one site, signed with one key."""

    __slots__ = ("_base", "_key", "_prefix", "_signer")

    def __init__(self, base_url: str, key: bytes) -> None:
        self._base, self._key = base_url, key
        self._prefix = f"{base_url}{UNSUBSCRIBE_PATH}"
        self._signer = UnsubscribeSigner(key)

    def url(self, subscriber_id: int, edition_id: int) -> str:
        return self._prefix + self._signer.token(subscriber_id, edition_id)

    def edition_web(self, edition_id: int) -> str:
        """The edition's web copy: one URL for every recipient, signed once per send."""
        return edition_web_url(self._base, self._key, edition_id)


def edition_web_url(base_url: str, key: bytes, edition_id: int) -> str:
    return f"{base_url}{EDITION_WEB_PATH}{sign_edition_web(key, edition_id)}"


def preferences_from_unsubscribe(unsubscribe_url: str) -> str:
    """The preference page of an email's unsubscribe link; any other URL (a preview's
    ``/preview/link``) is given back as it is, so a preview never gains a working link."""
    head, found, token = unsubscribe_url.rpartition(UNSUBSCRIBE_PATH)
    if not found or "/" in token:
        return unsubscribe_url
    return head + PREFERENCES_PATH + token


def unsubscribe_url(base_url: str, key: bytes, subscriber_id: int, edition_id: int) -> str:
    return UnsubscribeLinks(base_url, key).url(subscriber_id, edition_id)
