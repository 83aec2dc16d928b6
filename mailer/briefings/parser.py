"""Parse the newsroom's briefings into structured briefings, whatever the source format.

The structure is always the same: optional boilerplate (paywall and log-in prompts) that
is dropped, a lead paragraph, then paragraphs grouped into sections by a label;
unlabelled paragraphs belong to the section before them. What differs is how paragraphs
and labels are written:

* Plain text (``.txt`` and anything that is not Markdown): one paragraph per line, labels
  as ``Label: text``. Text is never read as markup; its HTML is the escaped text.
* Markdown (``.md``, ``.markdown``): optional YAML front matter between ``---`` lines at
  the very top (no aliases, nesting bounded), then CommonMark (raw HTML in it is shown as
  text, never interpreted). Labels are bold: ``**Label:** text`` or ``**Label**: text``.
* HTML (:func:`parse_html`, for feed and CMS bodies): block elements are paragraphs,
  labels are bold: ``<strong>Label:</strong> text`` (or ``<b>``).
* Fields (:func:`parse_fields`): a CMS that already knows lead and sections.

In marked-up bodies a label is always marked: an unmarked paragraph that happens to
open with a few words and a colon (a quotation introduced by its speaker) is text of the
section before it. Boilerplate is dropped in whatever element it comes: a paragraph, a
list item, or an inline element carrying the CMS's ``paywall`` class.

Markdown and HTML bodies are sanitized (see :mod:`mailer.briefings.sanitize`); every
paragraph comes as plain text and as safe inline HTML. Every input is first cleaned of
control characters (:func:`~mailer.briefings.sanitize.clean_text`), and every error
quotes at most a short excerpt of the input it refuses.

Everything here is pure apart from :func:`parse_file` reading its one file.
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from html import escape, unescape
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import urlsplit

import yaml
from markdown_it import MarkdownIt

from mailer.briefings.sanitize import (
    DropTest,
    HtmlBlock,
    TooDeep,
    clean_text,
    html_blocks,
    html_to_text,
    sanitize_html,
)

__all__ = [
    "DEFAULT_BOILERPLATE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHARS",
    "MARKDOWN_SUFFIXES",
    "MAX_URL_LENGTH",
    "BodyFormat",
    "BriefingError",
    "ParsedBriefing",
    "Section",
    "http_url",
    "parse_fields",
    "parse_file",
    "parse_html",
    "parse_text",
]

BodyFormat = Literal["text", "markdown", "html"]

MARKDOWN_SUFFIXES: frozenset[str] = frozenset({".md", ".markdown"})
DEFAULT_MAX_BYTES = 1_048_576
DEFAULT_MAX_CHARS = 200_000
# What a mail client, and the briefings' url column, take.
MAX_URL_LENGTH = 2000

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

# CMS templates mark their paywall prompt with a class rather than fixed wording.
_PAYWALL_CLASS = "paywall"

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
# The same rules on sanitized HTML, where the only attribute-free bold tags are <strong>
# and <b>, and text holds no "<" (nh3 escapes it). The label text may not hold markup,
# and it must be bold: in marked-up text the writer marks a label.
_HTML_BOLD_LABEL = re.compile(
    r"<(?P<tag>strong|b)>(?P<inner>[^<]*)</(?P=tag)>(?P<rest>.*)", re.DOTALL
)
_HEAD_LABEL = re.compile(r"(?P<label>[^:]+):(?P<space>\s*)", re.DOTALL)
_HTML_LEADING_SPACE = re.compile(r"^(?:\s|&nbsp;|<br>)+")

_FRONT_MATTER_OPEN = "---"
_FRONT_MATTER_CLOSE = ("---", "...")
# Front matter is a handful of flat keys; deeper nesting is only ever an attack on the
# recursive YAML composer.
_MAX_FRONT_MATTER_DEPTH = 20

# What an error may quote of the input it refuses: enough to find it, never the input
# itself (an error goes to a terminal, a pull log and an HTTP response).
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel = 2
_EXCERPT.maxstring = 60
_EXCERPT.maxother = 60
_EXCERPT.maxlong = 40
_EXCERPT.maxlist = _EXCERPT.maxtuple = _EXCERPT.maxdict = _EXCERPT.maxset = 4
_MAX_EXCERPT = 80
_MAX_REASON = 500

# CommonMark without raw HTML: markup typed into Markdown is shown, never interpreted.
# No linkify or typographer: the writer's quotes and text stay as written. Indented code
# blocks are off because an indented paragraph in a briefing is text, as it always was.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable("code")

_T = TypeVar("_T")


class BriefingError(ValueError):
    """A briefing that cannot be parsed, with where and why.

    ``field`` names the input at fault, when there is one: a front matter key, or (with
    ``front_matter`` false) an argument of :func:`parse_html` / :func:`parse_fields`
    such as ``sections[2].label``.
    """

    source: str
    line: int | None
    field: str | None
    reason: str
    front_matter: bool

    def __init__(
        self,
        source: str,
        reason: str,
        line: int | None = None,
        field: str | None = None,
        front_matter: bool = True,
    ) -> None:
        if len(reason) > _MAX_REASON:
            reason = reason[: _MAX_REASON - 1] + "\u2026"
        # Positional args mirror __init__ so the error survives pickling between workers.
        super().__init__(source, reason, line, field, front_matter)
        self.source = source
        self.reason = reason
        self.line = line
        self.field = field
        self.front_matter = front_matter

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.field is None:
            return f"{where}: {self.reason}"
        kind = "front matter field" if self.front_matter else "field"
        return f"{where}: {kind} {self.field!r}: {self.reason}"


@dataclass(frozen=True)
class Section:
    """One labelled part of a briefing; ``label`` is None for text before any label.

    ``html`` holds each paragraph as sanitized inline HTML (no wrapping ``<p>``), in the
    order of ``paragraphs``; left out, it is the escaped plain text.
    """

    label: str | None
    paragraphs: tuple[str, ...]
    html: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.html:
            object.__setattr__(self, "html", tuple(_escape(p) for p in self.paragraphs))
        elif len(self.html) != len(self.paragraphs):
            raise ValueError(
                f"section has {len(self.paragraphs)} paragraph(s) but {len(self.html)} html"
            )

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
    # Sanitized inline HTML of the lead; left out, it is the escaped lead.
    lead_html: str = ""

    def __post_init__(self) -> None:
        if not self.lead_html:
            object.__setattr__(self, "lead_html", _escape(self.lead))

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "title": self.title,
            "lead": self.lead,
            "lead_html": self.lead_html,
            "sections": [
                {
                    "label": s.label,
                    "body": s.body,
                    "paragraphs": list(s.paragraphs),
                    "html": list(s.html),
                }
                for s in self.sections
            ],
            "tags": list(self.tags),
            "url": self.url,
            "published": None if self.published_at is None else self.published_at.isoformat(),
            "dropped": list(self.dropped),
            "content_hash": self.content_hash,
        }


class _Paragraph(NamedTuple):
    line: int | None  # 1-based line of the paragraph's first line, when known
    text: str
    html: str
    rich: bool  # html came from markup (labels are read from it), not from escaping text
    classes: str = ""
    boilerplate: bool = False  # a part of marked-up text the splitter found boilerplate


@dataclass(frozen=True)
class _Meta:
    title: str | None = None
    url: str | None = None
    published_at: datetime | None = None
    tags: tuple[str, ...] = ()


@dataclass
class _SectionDraft:
    label: str | None
    line: int | None
    paragraphs: list[_Paragraph] = field(default_factory=list)


class _Invalid(Exception):
    """A value that fails a check; the caller knows which field and line it was."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- entry points -----------------------------------------------------------------------


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
        text = clean_text(raw.decode("utf-8"))
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
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ParsedBriefing:
    """Parse a briefing already in memory; ``source`` only labels errors and the result."""
    _check_size(text, max_chars, source=source)
    return _parse(
        clean_text(text),
        source=source,
        markdown=markdown,
        boilerplate=boilerplate,
        # Of the text as given: a lone surrogate (from JSON) has no UTF-8 of its own.
        content_hash=hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
    )


def parse_html(
    html: str,
    *,
    source: str,
    title: str | None = None,
    url: str | None = None,
    tags: Sequence[str] = (),
    published_at: datetime | None = None,
    boilerplate: Sequence[str] = DEFAULT_BOILERPLATE,
    max_chars: int = DEFAULT_MAX_CHARS,
    content_hash: str | None = None,
) -> ParsedBriefing:
    """Parse a feed or CMS body written in HTML; the other arguments are its metadata.

    Paragraphs marked with a ``paywall`` class are dropped like boilerplate wording.
    ``title`` defaults to the lead, ``content_hash`` to the SHA-256 of ``html``.
    """
    patterns = _compile_boilerplate(_as_pattern_tuple(boilerplate))
    _check_size(html, max_chars, source=source)
    meta = _Meta(
        title=_api_field(source, "title", title, _read_api_title),
        url=_api_field(source, "url", url, _read_url),
        published_at=_api_field(source, "published_at", published_at, _read_published),
        tags=_api_field(source, "tags", tags, _read_tags),
    )
    digest = content_hash or hashlib.sha256(html.encode("utf-8", "surrogatepass")).hexdigest()
    paragraphs = _html_paragraphs(source, clean_text(html), _drop_test(patterns))
    if not paragraphs:
        raise BriefingError(source, "no lead paragraph: the body has no text")
    return _assemble(paragraphs, source=source, meta=meta, patterns=patterns, content_hash=digest)


def parse_fields(
    *,
    source: str,
    title: str | None = None,
    lead: str,
    sections: Sequence[tuple[str | None, str]],
    body_format: BodyFormat = "text",
    url: str | None = None,
    tags: Sequence[str] = (),
    published_at: datetime | None = None,
    content_hash: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> ParsedBriefing:
    """Build a briefing from a CMS that posts its structure: a lead and labelled sections.

    Lead and section bodies are read as ``body_format``: plain text (paragraphs split on
    blank lines, never read as markup), Markdown or HTML (sanitized). Title and labels are
    plain text; a missing or blank title is the lead's text. Nothing is dropped as
    boilerplate: the CMS says what the lead is. Bad values raise :class:`BriefingError`
    naming the field, e.g. ``sections[2].label``.
    """
    _check_size(_posted_text(lead, sections), max_chars, source=source)
    reader = _body_reader(source, body_format)
    checked_title = _api_field(source, "title", title, _read_api_title)
    lead_para = _field_lead(source, lead, reader)
    drafts = [_field_section(source, index, item, reader) for index, item in enumerate(sections)]
    meta = _Meta(
        title=checked_title,
        url=_api_field(source, "url", url, _read_url),
        published_at=_api_field(source, "published_at", published_at, _read_published),
        tags=_api_field(source, "tags", tags, _read_tags),
    )
    digest = content_hash or _fields_hash(
        checked_title, lead, [(d.label, body) for d, body in drafts], body_format, meta
    )
    return ParsedBriefing(
        source=source,
        title=checked_title if checked_title is not None else _default_title(lead_para),
        lead=lead_para.text,
        lead_html=lead_para.html,
        sections=tuple(_finish(d) for d, _ in drafts),
        tags=meta.tags,
        url=meta.url,
        published_at=meta.published_at,
        dropped=(),
        content_hash=digest,
    )


# --- files and text ---------------------------------------------------------------------


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

    meta = _Meta()
    if markdown:
        meta, body_start = _split_front_matter(lines, source)
        paragraphs = _markdown_paragraphs(
            "\n".join(lines[body_start:]),
            first_line=body_start + 1,
            source=source,
            drop=_drop_test(patterns),
        )
    else:
        paragraphs = _text_paragraphs(lines)
    if not paragraphs:
        raise BriefingError(source, "no content after front matter")
    return _assemble(
        paragraphs, source=source, meta=meta, patterns=patterns, content_hash=content_hash
    )


def _check_size(text: str, max_chars: int, *, source: str) -> None:
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if len(text) > max_chars:
        raise BriefingError(source, f"body is {len(text)} characters; the limit is {max_chars}")


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


def _escape(text: str) -> str:
    # Quotes are harmless in element content and stay readable in the HTML this way.
    return escape(text, quote=False)


def _plain(line: int | None, text: str) -> _Paragraph:
    return _Paragraph(line, text, _escape(text), rich=False)


def _rich(line: int | None, block: HtmlBlock) -> _Paragraph:
    return _Paragraph(
        line, block.text, block.html, True, block.classes, boilerplate=block.boilerplate
    )


def _drop_test(patterns: Sequence[re.Pattern[str]]) -> DropTest:
    def drop(text: str, classes: str) -> bool:
        return _PAYWALL_CLASS in classes.lower() or any(p.match(text) for p in patterns)

    return drop


def _excerpt(value: object) -> str:
    """A short, quoted rendering of a bad value, whatever its size or shape."""
    text = _EXCERPT.repr(value)
    return text if len(text) <= _MAX_EXCERPT else text[: _MAX_EXCERPT - 1] + "\u2026"


def _text_paragraphs(lines: list[str]) -> list[_Paragraph]:
    return [_plain(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]


def _html_paragraphs(
    source: str, html: str, drop: DropTest | None, line: int | None = None
) -> list[_Paragraph]:
    try:
        return [_rich(line, block) for block in html_blocks(html, drop=drop)]
    except TooDeep as exc:
        raise BriefingError(source, str(exc), line=line) from None


def _markdown_paragraphs(
    body: str, *, first_line: int, source: str, drop: DropTest | None = None
) -> list[_Paragraph]:
    paragraphs: list[_Paragraph] = []
    for offset, chunk in _markdown_chunks(body):
        line = None if offset is None else first_line + offset
        paragraphs.extend(_html_paragraphs(source, chunk, drop, line))
    return paragraphs


def _markdown_chunks(body: str) -> list[tuple[int | None, str]]:
    """Render each top-level Markdown block on its own, to know the line it starts on."""
    env: dict[str, Any] = {}
    tokens = _MARKDOWN.parse(body, env)
    chunks: list[tuple[int | None, str]] = []
    begin = depth = 0
    for index, token in enumerate(tokens):
        depth += token.nesting
        if depth == 0:
            group = tokens[begin : index + 1]
            offset = group[0].map[0] if group[0].map else None
            chunks.append((offset, _MARKDOWN.renderer.render(group, _MARKDOWN.options, env)))
            begin = index + 1
    return chunks


# --- structure: boilerplate, lead, sections ---------------------------------------------


def _assemble(
    paragraphs: Sequence[_Paragraph],
    *,
    source: str,
    meta: _Meta,
    patterns: Sequence[re.Pattern[str]],
    content_hash: str,
) -> ParsedBriefing:
    kept: list[_Paragraph] = []
    dropped: list[str] = []
    for para in paragraphs:
        if _is_boilerplate(para, patterns):
            dropped.append(para.text)
        else:
            kept.append(para)
    if not kept:
        raise BriefingError(
            source,
            f"no lead paragraph: only boilerplate ({len(dropped)} paragraph(s) dropped)",
        )
    lead = kept[0]
    return ParsedBriefing(
        source=source,
        title=meta.title if meta.title is not None else _default_title(lead),
        lead=lead.text,
        lead_html=lead.html,
        sections=_build_sections(kept[1:], source=source),
        tags=meta.tags,
        url=meta.url,
        published_at=meta.published_at,
        dropped=tuple(dropped),
        content_hash=content_hash,
    )


def _is_boilerplate(para: _Paragraph, patterns: Sequence[re.Pattern[str]]) -> bool:
    # Marked-up text was tested part by part as it was split (see _drop_test).
    return para.boilerplate or (not para.rich and any(p.match(para.text) for p in patterns))


def _default_title(lead: _Paragraph) -> str:
    # A line break inside an HTML lead must not end up in a subject line.
    return " ".join(lead.text.split()) if lead.rich else lead.text


def _build_sections(paragraphs: Sequence[_Paragraph], *, source: str) -> tuple[Section, ...]:
    drafts: list[_SectionDraft] = []
    for para in paragraphs:
        labelled = _split_paragraph(para)
        if labelled is not None:
            label, rest = labelled
            # "Label:" alone on its line is a heading for the paragraphs that follow.
            drafts.append(_SectionDraft(label, para.line, [] if rest is None else [rest]))
        elif drafts:
            drafts[-1].paragraphs.append(para)
        else:
            drafts.append(_SectionDraft(None, para.line, [para]))
    for draft in drafts:
        if not draft.paragraphs:
            raise BriefingError(source, f"label {draft.label!r} has no text", line=draft.line)
    return tuple(_finish(d) for d in drafts)


def _finish(draft: _SectionDraft) -> Section:
    return Section(
        draft.label,
        tuple(p.text for p in draft.paragraphs),
        tuple(p.html for p in draft.paragraphs),
    )


def _split_paragraph(para: _Paragraph) -> tuple[str, _Paragraph | None] | None:
    """Return (label, rest of the paragraph or None) if it opens with a label."""
    if not para.rich:
        plain = _split_label(para.text)
        if plain is None:
            return None
        return plain[0], (_plain(para.line, plain[1]) if plain[1] else None)
    labelled = _split_html_label(para.html)
    if labelled is None:
        return None
    label, rest_html = labelled
    rest = _rich(para.line, HtmlBlock(rest_html, html_to_text(rest_html), para.classes))
    return label, (rest if rest.text else None)


def _split_label(text: str) -> tuple[str, str] | None:
    """Return (label, rest) if the plain-text paragraph opens with a label, else None."""
    plain = _PLAIN_LABEL.fullmatch(text)
    if plain is not None:
        label = plain.group("label").strip()
        if _is_label(label):
            return label, plain.group("rest").strip()
    return None


def _split_html_label(fragment: str) -> tuple[str, str] | None:
    """Return (label, rest html) if sanitized inline HTML opens with a label, else None."""
    bold = _HTML_BOLD_LABEL.match(fragment)
    if bold is None:
        return None
    head, rest = unescape(bold.group("inner")), bold.group("rest")
    if rest.startswith(":"):
        head, rest = head + ":", rest[1:]
    match = _HEAD_LABEL.fullmatch(head)
    # The colon may be followed by space inside the bold run or after it.
    if match is None or not (match.group("space") or _opens_with_space(rest)):
        return None
    label = match.group("label")
    # HTML whitespace (line wraps, &nbsp;) inside a label carries no meaning.
    label = " ".join(label.split())
    if not _is_label(label):
        return None
    return label, sanitize_html(_HTML_LEADING_SPACE.sub("", rest))


def _opens_with_space(html: str) -> bool:
    return not html or html[0].isspace() or html.startswith(("&nbsp;", "<br>"))


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= _LABEL_MAX_CHARS
        and len(label.split()) <= _LABEL_MAX_WORDS
        and not any(c in _LABEL_FORBIDDEN for c in label)
        and any(c.isalpha() for c in label)
    )


# --- fields posted by a CMS -------------------------------------------------------------

_BodyReader = Callable[[str], list[_Paragraph]]


def _body_reader(source: str, body_format: str) -> _BodyReader:
    readers: dict[str, _BodyReader] = {
        "text": _text_body,
        "markdown": lambda body: _markdown_paragraphs(body, first_line=1, source=source),
        "html": lambda body: _html_paragraphs(source, body, None),
    }
    reader = readers.get(body_format)
    if reader is None:
        raise _field_error(
            source,
            "body_format",
            f"must be one of {', '.join(readers)}, got {_excerpt(body_format)}",
        )
    return lambda body: reader(clean_text(body))


def _posted_text(lead: object, sections: object) -> str:
    # Measured before any value is checked, so only the strings count; the checks that
    # follow report everything else.
    parts = [lead]
    if isinstance(sections, list | tuple):
        parts += [p for item in sections if isinstance(item, list | tuple) for p in item]
    return "".join(p for p in parts if isinstance(p, str))


def _text_body(body: str) -> list[_Paragraph]:
    # Blank lines separate paragraphs; a single line break is only a wrap.
    blocks = re.split(r"\n[ \t]*\n", body.replace("\r\n", "\n").replace("\r", "\n"))
    texts = (" ".join(block.split()) for block in blocks)
    return [_plain(None, text) for text in texts if text]


def _field_lead(source: str, lead: object, reader: _BodyReader) -> _Paragraph:
    if not isinstance(lead, str):
        raise _field_error(source, "lead", f"not a string: {_excerpt(lead)}")
    paragraphs = reader(lead)
    if not paragraphs:
        raise _field_error(source, "lead", "is empty")
    if len(paragraphs) > 1:
        raise _field_error(
            source, "lead", f"has {len(paragraphs)} paragraphs; a lead is one paragraph"
        )
    return paragraphs[0]


def _field_section(
    source: str, index: int, item: object, reader: _BodyReader
) -> tuple[_SectionDraft, str]:
    where = f"sections[{index}]"
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise _field_error(source, where, f"not a (label, body) pair: {_excerpt(item)}")
    label, body = item
    checked = _field_label(source, where, index, label)
    if not isinstance(body, str):
        raise _field_error(source, f"{where}.body", f"not a string: {_excerpt(body)}")
    paragraphs = reader(body)
    if not paragraphs:
        raise _field_error(source, f"{where}.body", "is empty")
    return _SectionDraft(checked, None, paragraphs), body


def _field_label(source: str, where: str, index: int, label: object) -> str | None:
    if label is None:
        if index:
            raise _field_error(source, f"{where}.label", "only the first section may be unlabelled")
        return None
    if not isinstance(label, str):
        raise _field_error(source, f"{where}.label", f"not a string: {_excerpt(label)}")
    # A CMS form may keep the colon the newsroom types after a label.
    phrase = " ".join(clean_text(label).split()).removesuffix(":").rstrip()
    if not phrase:
        raise _field_error(source, f"{where}.label", "is empty")
    if ":" in phrase or not _is_label(phrase):
        raise _field_error(
            source,
            f"{where}.label",
            f"not a label: {_excerpt(label)} (a label is a short phrase of at most "
            f"{_LABEL_MAX_WORDS} words, without sentence punctuation or quotation marks)",
        )
    return phrase


def _fields_hash(
    title: str | None,
    lead: str,
    sections: list[tuple[str | None, str]],
    body_format: str,
    meta: _Meta,
) -> str:
    canonical = json.dumps(
        {
            "title": title,
            "lead": lead,
            "sections": sections,
            "body_format": body_format,
            "url": meta.url,
            "tags": list(meta.tags),
            "published": None if meta.published_at is None else meta.published_at.isoformat(),
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _field_error(source: str, name: str, reason: str) -> BriefingError:
    return BriefingError(source, reason, field=name, front_matter=False)


def _api_field(source: str, name: str, value: object, read: Callable[[object], _T]) -> _T:
    try:
        return read(value)
    except _Invalid as exc:
        raise _field_error(source, name, exc.reason) from None


# --- front matter and metadata values ---------------------------------------------------


def _split_front_matter(lines: list[str], source: str) -> tuple[_Meta, int]:
    """Return the front matter and the index of the first body line."""
    if lines[0].rstrip() != _FRONT_MATTER_OPEN:
        return _Meta(), 0
    for end in range(1, len(lines)):
        if lines[end].rstrip() in _FRONT_MATTER_CLOSE:
            break
    else:
        raise BriefingError(source, "unterminated front matter: no closing '---' line", line=1)
    # lines[1] is file line 2; YAML marks count from 0.
    front = _read_front_matter("\n".join(lines[1:end]), first_line=2, source=source)
    return front, end + 1


class _FrontMatterLoader(yaml.SafeLoader):
    """YAML's safe loader without what only an attacker needs.

    Aliases are refused: a few hundred bytes of nested ones expand to gigabytes once the
    value is walked or printed. Nesting is bounded, because the composer recurses.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        problem = None
        if self.check_event(yaml.AliasEvent):
            problem = "aliases (*name) are not allowed"
        elif self._depth >= _MAX_FRONT_MATTER_DEPTH:
            problem = f"nested more than {_MAX_FRONT_MATTER_DEPTH} levels deep"
        if problem is not None:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, problem, mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    # "2026-01-02T43:04:05" has the shape of a YAML timestamp but is no moment: kept as
    # text, it is refused by the field's own check, with the field's name and line.
    if loader.timestamp_regexp.match(node.value) is None:  # an explicit !!timestamp tag
        return loader.construct_scalar(node)
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return loader.construct_scalar(node)


_FrontMatterLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _read_front_matter(yaml_text: str, *, first_line: int, source: str) -> _Meta:
    loader: _FrontMatterLoader | None = None
    try:
        # The reader checks the characters as it is made: inside the try.
        loader = _FrontMatterLoader(yaml_text)
        node = loader.get_single_node()
        data: Any = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else first_line + mark.line
        problem = exc.problem or exc.context or "syntax error"
        raise BriefingError(source, f"invalid YAML in front matter: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise BriefingError(
            source, f"invalid YAML in front matter: {str(exc)[:_MAX_EXCERPT]}", line=first_line
        ) from None
    except Exception as exc:
        # A value YAML's own constructors cannot make: they are not written for hostile
        # input ("!!int" with nothing after it raises IndexError, a bad !!binary a
        # binascii.Error), and whatever they raise is this file's error, not the pull's.
        raise BriefingError(
            source, f"invalid value in front matter ({type(exc).__name__})", line=first_line
        ) from None
    finally:
        if loader is not None:
            loader.dispose()

    if data is None:
        return _Meta()
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

    def value(key: str, read: Callable[[object], _T]) -> _T:
        try:
            return read(data.get(key))
        except _Invalid as exc:
            raise BriefingError(source, exc.reason, line=key_lines.get(key), field=key) from None

    return _Meta(
        title=value("title", _read_title),
        url=value("url", _read_url),
        published_at=value("published", _read_published),
        tags=value("tags", _read_tags),
    )


def _read_title(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"not a string: {_excerpt(value)}")
    # A blank title falls back to the lead rather than producing an empty subject line.
    return clean_text(value).strip() or None


def _read_api_title(value: object) -> str | None:
    # Titles from a feed or form may carry the line wraps of their source markup.
    title = _read_title(value)
    return None if title is None else " ".join(title.split())


def http_url(value: str) -> str | None:
    """``value`` (cleaned and stripped) if it is an absolute http(s) URL, else None."""
    url = clean_text(value).strip()
    try:
        parts = urlsplit(url)
        # .port reads the number, which urlsplit alone leaves unchecked ("host:99999").
        valid = parts.scheme.lower() in {"http", "https"} and bool(parts.hostname)
        valid = valid and (parts.port is None or parts.port > 0)
    except ValueError:  # a bracketed host that is no IPv6 address ("//]"), a bad port
        return None
    return url if valid and not any(c.isspace() for c in url) else None


def _read_url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"not a string: {_excerpt(value)}")
    url = http_url(value)
    if url is None:
        raise _Invalid(f"not an http(s) URL: {_excerpt(value)}")
    if len(url) > MAX_URL_LENGTH:
        raise _Invalid(f"is {len(url)} characters; at most {MAX_URL_LENGTH}")
    return url


def _read_published(value: object) -> datetime | None:
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
            raise _Invalid(f"not a date: {_excerpt(value)}") from None
    else:
        raise _Invalid(f"not a date: {_excerpt(value)}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _read_tags(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items: list[str]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            # YAML reads `tags: [2026, space]` as an int; the writer meant the text.
            if isinstance(item, int | float) and not isinstance(item, bool):
                items.append(str(item))
            elif isinstance(item, str):
                items.append(item)
            else:
                raise _Invalid(f"item {index} is not a string: {_excerpt(item)}")
    else:
        raise _Invalid(f"not a list or a comma-separated string: {_excerpt(value)}")
    # dict.fromkeys keeps the first spelling and the writer's order.
    return tuple(dict.fromkeys(t for t in (clean_text(i).strip() for i in items) if t))
