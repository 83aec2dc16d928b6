"""Request bodies read with a limit: an oversized body is refused, never held whole."""

from __future__ import annotations

from fastapi import Request


class BodyTooLarge(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body larger than the limit of {limit:,} bytes")


async def read_capped(request: Request, limit: int) -> bytes:
    """The raw body, bounded before reading (Content-Length) and while reading."""
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise BodyTooLarge(limit)
    return bytes(chunks)
