"""JSON that comes from outside (forms, CSV cells, API bodies, the command line).

Python's ``json`` parses by recursion: text nested a few thousand levels deep raises
``RecursionError``, which no caller expects from bad input, and so does every recursive
walk of a value nested nearly as deep (``clean_data``, the JSON columns' serialiser).
``parse`` parses with orjson (which stops at 1,024 levels with an ordinary decoding
error) and refuses what nests deeper than a caller's bound before anything walks it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# Attributes, segment rules and sign-ups are objects a few levels deep.
MAX_DEPTH = 16


def excess(value: Any, *, max_depth: int, max_chars: int | None = None) -> str | None:
    """What makes ``value`` too deep (or, with ``max_chars``, too large), or None.

    One walk, level by level (no recursion, whatever the nesting), counting the
    characters of keys and strings: a cheap measure of size, next to the parse.
    """
    level, depth, size = [value], 0, 0
    while level:
        depth += 1
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        deeper = []
        for item in level:
            if isinstance(item, dict):
                size += sum(map(len, item))
                children: Any = item.values()
            elif isinstance(item, list):
                children = item
            else:
                continue
            for child in children:
                if isinstance(child, str):
                    size += len(child)
                elif isinstance(child, dict | list):
                    deeper.append(child)
        if max_chars is not None and size > max_chars:
            return f"larger than {max_chars:,} characters"
        level = deeper
    return None


def parse(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value ``text`` holds; ValueError (saying what is wrong) if it is not JSON,
    nests deeper than ``max_depth`` or holds a whole number beyond 64 bits."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    problem = excess(value, max_depth=max_depth)
    if problem is not None:
        raise ValueError(problem)
    if _LONG_DIGITS.search(text if isinstance(text, bytes) else text.encode()):
        # orjson reads a whole number beyond 64 bits (19 digits or more) as a float,
        # silently rounded, which no JSON column could store exactly: the text is read
        # again to find one, which is safe now that its depth is known.
        json.loads(text, parse_int=_whole_number)
    return value


_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _whole_number(digits: str) -> int:
    number = int(digits)
    if not -(2**63) <= number < 2**63:
        shown = digits if len(digits) <= 30 else digits[:30] + "…"
        raise ValueError(f"the whole number {shown} is too large: write it as a string")
    return number
