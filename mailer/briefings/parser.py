"""Parse the newsroom's briefing files into structured briefings.

Two formats are accepted:

* Plain text (``.txt`` and anything that is not Markdown): the newsroom writes one
  paragraph per line, so every non-blank line is a paragraph.
* Markdown (``.md``, ``.markdown``): optional YAML front matter between ``---`` lines
  at the very top, then paragraphs separated by blank lines.

The first paragraph that is not paywall boilerplate is the lead; the paragraphs after it
are grouped into sections by their ``Label: text`` prefix (``**Label:** text`` in
Markdown). Unlabelled paragraphs belong to the section before them.

Everything here is pure apart from :func:`parse_file` reading its one file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml

__all__ = [
    "DEFAULT_BOILERPLATE",
    "DEFAULT_MAX_BYTES",
    "MARKDOWN_SUFFIXES",
    "BriefingError",
    "ParsedBriefing",
    "Section",
    "parse_file",
    "parse_text",
]

MARKDOWN_SUFFIXES: frozenset[str] = frozenset({".md", ".markdown"})
DEFAULT_MAX_BYTES = 1_048_576

# Each pattern is matched case-insensitively at the *start* of a paragraph only, so a
# news paragraph that mentions logging in half-way through a sentence is kept.
DEFAULT_BOILERPLATE: tuple[str, ...] = (
    r"already (?:a )?(?:subscriber|subscribed|member)\b",
    r"(?:please )?(?:log|sign)[- ]?(?:in|on)(?: to your account)?"
    r" (?:to|and) (?:keep|continue|start) reading",
    r"(?:please )?(?:log|sign)[- ]?(?:in|on) to (?:read|view|see|access)\b",
    r"(?:please )?(?:log|sign)[- ]?(?:in|on) or subscribe\b",
    r"make sure (?:to|you) (?:log|sign)[- ]?(?:in|on)",
    r"(?:subscribe|register)(?: now| today)? (?:to|and) (?:keep|continue) reading",
    r"to (?:keep|continue) reading,? (?:please )?(?:log[- ]?in|sign[- ]?in|subscribe)",
    r"this (?:article|content|story|post|briefing|newsletter) is (?:only )?(?:available )?"
    r"(?:for|to) (?:paid |paying )?(?:subscribers|members)",
    r"having trouble (?:seeing|viewing|accessing) this (?:content|article|page|story)",
    r"you(?:'|\u2019)ve (?:reached|used up) your (?:free )?(?:article|story) limit",
)

_LABEL_MAX_WORDS = 10
_LABEL_MAX_CHARS = 80
# A label is a phrase, not a sentence or a quotation. Apostrophes (' and U+2019) stay
# allowed because the house labels use them ("What's going on now"); U+2018 is only ever
# an opening quote. Markup characters rule out emphasis, code and links that happen to
# hold a colon. Escapes keep the look-alike quote characters unambiguous when read.
_LABEL_FORBIDDEN = frozenset('.!?;"\u201c\u201d\u00ab\u00bb\u201e\u201f\u2039\u203a\u2018*`[]<>')

# The label is the part before the first colon; a colon glued to the next character
# ("https://", "5:30") is not a label separator, hence the required whitespace.
_PLAIN_LABEL = re.compile(r"(?P<label>[^:\n]+):(?P<rest>(?:\s.*)?)", re.DOTALL)
# **Label:** text, **Label**: text, and the same with __ … __.
_BOLD_LABEL = re.compile(
    r"(?P<delim>\*\*|__)(?P<label>[^:\n]+?)(?::(?P=delim)|(?P=delim):)(?P<rest>.*)",
    re.DOTALL,
)

# Builds the error for a front matter key, already knowing its line.
_Fail = Callable[[str, str], "BriefingError"]

_FRONT_MATTER_OPEN = "---"
_FRONT_MATTER_CLOSE = ("---", "...")


class BriefingError(ValueError):
    """A briefing that cannot be parsed, with where and why.

    ``field`` names the front matter key at fault, when there is one.
    """

    source: str
    line: int | None
    field: str | None
    reason: str

    def __init__(
        self, source: str, reason: str, line: int | None = None, field: str | None = None
    ) -> None:
        # Positional args mirror __init__ so the error survives pickling between workers.
        super().__init__(source, reason, line, field)
        self.source = source
        self.reason = reason
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.field is None:
            return f"{where}: {self.reason}"
        return f"{where}: front matter field {self.field!r}: {self.reason}"


@dataclass(frozen=True)
class Section:
    """One labelled part of a briefing; ``label`` is None for text before any label."""

    label: str | None
    paragraphs: tuple[str, ...]

    @property
    def body(self) -> str:
        return "\n\n".join(self.paragraphs)


@dataclass(frozen=True)
class ParsedBriefing:
    source: str
    title: str
    lead: str
    sections: tuple[Section, ...]
    tags: tuple[str, ...]
    url: str | None
    published_at: datetime | None
    dropped: tuple[str, ...]
    content_hash: str

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "title": self.title,
            "lead": self.lead,
            "sections": [
                {"label": s.label, "body": s.body, "paragraphs": list(s.paragraphs)}
                for s in self.sections
            ],
            "tags": list(self.tags),
            "url": self.url,
            "published": None if self.published_at is None else self.published_at.isoformat(),
            "dropped": list(self.dropped),
            "content_hash": self.content_hash,
        }


class _Paragraph(NamedTuple):
    line: int  # 1-based line of the paragraph's first line in the file
    text: str


@dataclass(frozen=True)
class _FrontMatter:
    title: str | None = None
    url: str | None = None
    published_at: datetime | None = None
    tags: tuple[str, ...] = ()


@dataclass
class _SectionDraft:
    label: str | None
    line: int
    paragraphs: list[str] = field(default_factory=list)


def parse_file(
    path: Path,
    *,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParsedBriefing:
    """Read and parse one briefing file; Markdown iff the suffix is .md or .markdown."""
    source = str(path)
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    try:
        with path.open("rb") as fh:
            # One byte over the limit is enough to know it is too big, without reading
            # a runaway file into memory.
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        # A folder source lists files and reads them later; one that vanished or is
        # unreadable in between is reported like any other bad briefing.
        raise BriefingError(source, f"cannot read file: {exc.strerror or exc}") from exc
    if len(raw) > max_bytes:
        raise BriefingError(source, f"file is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise BriefingError(
            source,
            f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start}",
            line=line,
        ) from None
    return _parse(
        text,
        source=source,
        markdown=path.suffix.lower() in MARKDOWN_SUFFIXES,
        boilerplate=boilerplate,
        content_hash=hashlib.sha256(raw).hexdigest(),
    )


def parse_text(
    text: str,
    *,
    source: str,
    markdown: bool,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
) -> ParsedBriefing:
    """Parse a briefing already in memory; ``source`` only labels errors and the result."""
    return _parse(
        text,
        source=source,
        markdown=markdown,
        boilerplate=boilerplate,
        content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def _parse(
    text: str,
    *,
    source: str,
    markdown: bool,
    boilerplate: Sequence[str],
    content_hash: str,
) -> ParsedBriefing:
    patterns = _compile_boilerplate(_as_pattern_tuple(boilerplate))
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise BriefingError(source, "empty file")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    front = _FrontMatter()
    body_start = 0
    if markdown:
        front, body_start = _split_front_matter(lines, source)
        paragraphs = _markdown_paragraphs(lines, body_start)
    else:
        paragraphs = _text_paragraphs(lines)
    if not paragraphs:
        raise BriefingError(source, "no content after front matter")

    kept: list[_Paragraph] = []
    dropped: list[str] = []
    for para in paragraphs:
        if any(p.match(para.text) for p in patterns):
            dropped.append(para.text)
        else:
            kept.append(para)
    if not kept:
        raise BriefingError(
            source,
            f"no lead paragraph: only boilerplate ({len(dropped)} paragraph(s) dropped)",
        )

    lead = kept[0].text
    sections = _build_sections(kept[1:], source=source, markdown=markdown)
    return ParsedBriefing(
        source=source,
        title=front.title if front.title is not None else lead,
        lead=lead,
        sections=sections,
        tags=front.tags,
        url=front.url,
        published_at=front.published_at,
        dropped=tuple(dropped),
        content_hash=content_hash,
    )


def _as_pattern_tuple(boilerplate: Sequence[str]) -> tuple[str, ...]:
    # A bare string is a Sequence[str] too; iterating it would make one pattern per
    # character and silently drop every paragraph that starts with a common letter.
    if isinstance(boilerplate, str):
        raise TypeError("boilerplate must be a sequence of patterns, not a single string")
    return tuple(boilerplate)


@lru_cache(maxsize=32)
def _compile_boilerplate(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled: list[re.Pattern[str]] = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"invalid boilerplate pattern {pattern!r}: {exc}") from None
    return tuple(compiled)


def _text_paragraphs(lines: list[str]) -> list[_Paragraph]:
    return [_Paragraph(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]


def _markdown_paragraphs(lines: list[str], start: int) -> list[_Paragraph]:
    paragraphs: list[_Paragraph] = []
    group: list[str] = []
    group_line = 0
    for i in range(start, len(lines) + 1):
        stripped = lines[i].strip() if i < len(lines) else ""
        if stripped:
            if not group:
                group_line = i + 1
            group.append(stripped)
        elif group:
            paragraphs.append(_Paragraph(group_line, " ".join(group)))
            group = []
    return paragraphs


def _split_front_matter(lines: list[str], source: str) -> tuple[_FrontMatter, int]:
    """Return the front matter and the index of the first body line."""
    if lines[0].rstrip() != _FRONT_MATTER_OPEN:
        return _FrontMatter(), 0
    for end in range(1, len(lines)):
        if lines[end].rstrip() in _FRONT_MATTER_CLOSE:
            break
    else:
        raise BriefingError(source, "unterminated front matter: no closing '---' line", line=1)
    # lines[1] is file line 2; YAML marks count from 0.
    front = _read_front_matter("\n".join(lines[1:end]), first_line=2, source=source)
    return front, end + 1


def _read_front_matter(yaml_text: str, *, first_line: int, source: str) -> _FrontMatter:
    loader = yaml.SafeLoader(yaml_text)
    try:
        node = loader.get_single_node()
        data: Any = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else first_line + mark.line
        problem = exc.problem or exc.context or "syntax error"
        raise BriefingError(source, f"invalid YAML in front matter: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise BriefingError(
            source, f"invalid YAML in front matter: {exc}", line=first_line
        ) from None
    finally:
        loader.dispose()

    if data is None:
        return _FrontMatter()
    if not isinstance(data, dict):
        raise BriefingError(
            source,
            f"front matter is not a mapping of keys to values (got {type(data).__name__})",
            line=first_line,
        )

    key_lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key_lines.setdefault(key_node.value, first_line + key_node.start_mark.line)

    def fail(key: str, reason: str) -> BriefingError:
        return BriefingError(source, reason, line=key_lines.get(key), field=key)

    return _FrontMatter(
        title=_front_title(data.get("title"), fail),
        url=_front_url(data.get("url"), fail),
        published_at=_front_published(data.get("published"), fail),
        tags=_front_tags(data.get("tags"), fail),
    )


def _front_title(value: object, fail: _Fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail("title", f"not a string: {value!r}")
    # A blank title falls back to the lead rather than producing an empty subject line.
    return value.strip() or None


def _front_url(value: object, fail: _Fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail("url", f"not a string: {value!r}")
    url = value.strip()
    parts = urlsplit(url)
    if (
        parts.scheme.lower() not in {"http", "https"}
        or not parts.netloc
        or any(c.isspace() for c in url)
    ):
        raise fail("url", f"not an http(s) URL: {value!r}")
    return url


def _front_published(value: object, fail: _Fail) -> datetime | None:
    if value is None:
        return None
    moment: datetime
    # datetime is a subclass of date, so it must be tested first.
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise fail("published", f"not a date: {value!r}") from None
    else:
        raise fail("published", f"not a date: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _front_tags(value: object, fail: _Fail) -> tuple[str, ...]:
    if value is None:
        return ()
    items: list[str]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            # YAML reads `tags: [2026, space]` as an int; the writer meant the text.
            if isinstance(item, int | float) and not isinstance(item, bool):
                items.append(str(item))
            elif isinstance(item, str):
                items.append(item)
            else:
                raise fail("tags", f"item {index} is not a string: {item!r}")
    else:
        raise fail("tags", f"not a list or a comma-separated string: {value!r}")
    # dict.fromkeys keeps the first spelling and the writer's order.
    return tuple(dict.fromkeys(t for t in (i.strip() for i in items) if t))


def _split_label(text: str, *, markdown: bool) -> tuple[str, str] | None:
    """Return (label, rest) if the paragraph opens with a label, else None."""
    if markdown:
        bold = _BOLD_LABEL.fullmatch(text)
        if bold is not None:
            label = bold.group("label").strip()
            if _is_label(label):
                return label, bold.group("rest").strip()
    plain = _PLAIN_LABEL.fullmatch(text)
    if plain is not None:
        label = plain.group("label").strip()
        if _is_label(label):
            return label, plain.group("rest").strip()
    return None


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= _LABEL_MAX_CHARS
        and len(label.split()) <= _LABEL_MAX_WORDS
        and not any(c in _LABEL_FORBIDDEN for c in label)
        and any(c.isalpha() for c in label)
    )


def _build_sections(
    paragraphs: Sequence[_Paragraph], *, source: str, markdown: bool
) -> tuple[Section, ...]:
    drafts: list[_SectionDraft] = []
    for para in paragraphs:
        labelled = _split_label(para.text, markdown=markdown)
        if labelled is not None:
            label, rest = labelled
            # "Label:" alone on its line is a heading for the paragraphs that follow.
            drafts.append(_SectionDraft(label, para.line, [rest] if rest else []))
        elif drafts:
            drafts[-1].paragraphs.append(para.text)
        else:
            drafts.append(_SectionDraft(None, para.line, [para.text]))
    for draft in drafts:
        if not draft.paragraphs:
            raise BriefingError(source, f"label {draft.label!r} has no text", line=draft.line)
    return tuple(Section(d.label, tuple(d.paragraphs)) for d in drafts)
