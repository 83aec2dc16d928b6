"""Tests for mailer.briefings.parser against the newsroom's samples and edge cases."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

import mailer.demo
from mailer.briefings.parser import (
    DEFAULT_BOILERPLATE,
    BriefingError,
    ParsedBriefing,
    Section,
    parse_fields,
    parse_file,
    parse_html,
    parse_text,
)

DATA = Path(__file__).parent / "data" / "briefings"
FEED = Path(__file__).parent / "data" / "feeds" / "briefings.rss"
DEMO = Path(mailer.demo.__file__).parent / "briefings"

CENTRAL_BANK = DATA / "2026-11-20-central-bank.txt"
CLOUD_OUTAGE = DATA / "2026-11-21-cloud-outage.txt"
CONGESTION = DATA / "2026-11-22-congestion-pricing.txt"
LUNAR = DATA / "2026-11-23-lunar-lander.md"


def labels(briefing: ParsedBriefing) -> list[str | None]:
    return [s.label for s in briefing.sections]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def md(text: str) -> ParsedBriefing:
    return parse_text(text, source="t.md", markdown=True)


def txt(text: str) -> ParsedBriefing:
    return parse_text(text, source="t.txt", markdown=False)


# --- the newsroom's samples -------------------------------------------------------------


def test_central_bank_sample() -> None:
    b = parse_file(CENTRAL_BANK)

    assert b.source == str(CENTRAL_BANK)
    assert b.lead == (
        "The Eastland Central Bank kept interest rates unchanged for a third straight "
        "meeting, signalling it is in no hurry to cut again."
    )
    assert b.title == b.lead
    assert labels(b) == [
        "Some stuff you should know before you read",
        "What's going on now",
        "What happens next",
    ]
    assert b.dropped == (
        "Already a subscriber? Log in to keep reading. Having trouble seeing this content "
        "after logging in? Check that your payment method is up to date.",
    )
    now = b.sections[1]
    assert len(now.paragraphs) == 2
    assert now.paragraphs[0].startswith("At Thursday's meeting, policymakers held")
    assert now.paragraphs[0].endswith('keep deciding "meeting by meeting."')
    assert now.paragraphs[1].startswith("Several governors argued")
    assert now.body == "\n\n".join(now.paragraphs)
    assert b.sections[2].paragraphs == (
        "Markets now expect at most one more cut next year. The next policy meeting is "
        "scheduled for late January, when the bank will also publish fresh growth and "
        "inflation forecasts.",
    )
    assert b.tags == ()
    assert b.url is None
    assert b.published_at is None
    assert b.content_hash == hashlib.sha256(CENTRAL_BANK.read_bytes()).hexdigest()


def test_cloud_outage_sample_without_boilerplate() -> None:
    b = parse_file(CLOUD_OUTAGE)

    assert b.dropped == ()
    assert b.lead.startswith("A six-hour outage at Helios Cloud")
    assert labels(b) == [
        "Some stuff you should know before you read",
        "What's going on now",
        "Why it matters",
    ]
    assert b.sections[1].paragraphs[1] == (
        "Customers who had built backups in a second region reported only brief disruption."
    )
    assert len(b.sections[2].paragraphs) == 1


def test_congestion_sample_keeps_label_verbatim_and_drops_login_prompt() -> None:
    b = parse_file(CONGESTION)

    assert len(b.dropped) == 1
    assert b.dropped[0].startswith("Already a subscriber? Make sure to log into your account")
    assert b.lead == (
        "Northbridge's city council voted 7-4 to charge drivers a daily fee to enter the "
        "downtown core starting next spring."
    )
    assert labels(b) == [
        "Some shit you should know before you read",
        "What's going on now",
        "More on the vote",
    ]
    # "7 a.m." inside the text must not confuse the label, and the follow-on stays attached.
    assert b.sections[1].paragraphs[0].startswith("The fee will be $9 on weekdays between 7 a.m.")
    assert b.sections[1].paragraphs[1].startswith("Opponents, including several downtown")
    assert b.sections[2].paragraphs[0].startswith('Mayor Dana Okafor called the decision "the')


def test_lunar_markdown_sample_with_front_matter() -> None:
    b = parse_file(LUNAR)

    assert b.title == "Space agency pushes back crewed lunar landing by a year"
    assert b.lead == (
        "The first crewed landing on the Moon in more than half a century has been delayed "
        "again, this time to late 2028."
    )
    assert b.url == "https://news.example.org/briefings/lunar-landing-delay"
    assert b.published_at == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    assert b.published_at is not None and b.published_at.utcoffset() is not None
    assert b.tags == ("science", "space")
    assert labels(b) == [
        "Some stuff you should know before you read",
        "What's going on now",
        "The bigger picture",
    ]
    assert (
        "tanker launches \u2014 something that has never been done" in (b.sections[0].paragraphs[0])
    )
    assert all("**" not in s.body for s in b.sections)
    assert b.dropped == ()


def test_to_dict_is_json_ready() -> None:
    d = parse_file(LUNAR).to_dict()

    assert json.loads(json.dumps(d)) == d
    assert d["published"] == "2026-11-23T11:00:00+00:00"
    assert d["tags"] == ["science", "space"]
    assert d["source"] == str(LUNAR)
    assert d["dropped"] == []
    sections = d["sections"]
    assert isinstance(sections, list)
    text = (
        "Officials said two uncrewed test flights slipped after problems with the lander's "
        "engines during ground testing. The crew of four has already been named and will "
        "keep training on the current timeline."
    )
    assert sections[1] == {
        "label": "What's going on now",
        "body": text,
        "paragraphs": [text],
        "html": [text],
    }
    assert d["lead_html"] == d["lead"]
    assert set(d) == {
        "title",
        "lead",
        "lead_html",
        "sections",
        "tags",
        "url",
        "published",
        "dropped",
        "source",
        "content_hash",
    }


# --- demo briefings ---------------------------------------------------------------------


def test_demo_briefings_all_parse() -> None:
    files = sorted(p for p in DEMO.iterdir() if p.is_file())
    assert sorted(p.suffix for p in files) == [".md", ".txt", ".txt", ".txt", ".txt", ".txt"]

    parsed = [parse_file(p) for p in files]
    for b in parsed:
        labelled = [s for s in b.sections if s.label is not None]
        assert len(labelled) >= 2, b.source
        assert all(s.paragraphs and all(s.paragraphs) for s in b.sections), b.source
        assert b.lead and b.title
    assert sum(1 for b in parsed if b.dropped) >= 1
    assert any(len(s.paragraphs) > 1 for b in parsed for s in b.sections)
    (markdown,) = [b for b in parsed if b.source.endswith(".md")]
    assert markdown.tags
    assert markdown.url is not None and markdown.published_at is not None
    assert markdown.title != markdown.lead


# --- paragraphs and typography ----------------------------------------------------------


def test_typographic_characters_survive() -> None:
    b = txt(
        "The mayor\u2019s plan passed \u2014 narrowly.\n"
        "What\u2019s going on now: Critics called it \u201ca gift\u201d to developers "
        "\u2014 and \u00abunfair\u00bb.\n"
    )

    assert b.lead == "The mayor\u2019s plan passed \u2014 narrowly."
    assert labels(b) == ["What\u2019s going on now"]
    assert b.sections[0].paragraphs == (
        "Critics called it \u201ca gift\u201d to developers \u2014 and \u00abunfair\u00bb.",
    )


def test_text_every_line_is_a_paragraph_blank_lines_optional() -> None:
    b = txt("\n\nLead sentence.\r\nWhy it matters: One.\r\n\r\n\r\nTwo.\rThree.\n\n")

    assert b.lead == "Lead sentence."
    assert b.sections == (Section("Why it matters", ("One.", "Two.", "Three.")),)


def test_markdown_joins_soft_wrapped_lines() -> None:
    b = md(
        "The lead is written\non two lines.\n\n"
        "**What happens next:** The vote is\n   on Friday.\n\n"
        "A follow-on\nparagraph.\n"
    )

    assert b.lead == "The lead is written on two lines."
    assert b.sections == (
        Section("What happens next", ("The vote is on Friday.", "A follow-on paragraph.")),
    )


@pytest.mark.parametrize(
    "paragraph",
    [
        "**Why it matters:** Text.",
        "**Why it matters**: Text.",
        "__Why it matters:__ Text.",
        "__Why it matters__: Text.",
    ],
)
def test_markdown_label_forms(paragraph: str) -> None:
    b = md(f"Lead.\n\n{paragraph}\n")

    assert b.sections == (Section("Why it matters", ("Text.",)),)


def test_markdown_unmarked_label_is_a_follow_on_paragraph() -> None:
    # A quotation introduced by its speaker is text of the section before, not a label.
    b = md(
        "Lead.\n\n**What to watch:** The vote.\n\n"
        "The minister said: \u201cWe will not back down.\u201d\n\nWhy it matters: Text.\n"
    )

    assert b.sections == (
        Section(
            "What to watch",
            (
                "The vote.",
                "The minister said: \u201cWe will not back down.\u201d",
                "Why it matters: Text.",
            ),
        ),
    )


def test_bold_label_is_not_special_in_plain_text() -> None:
    b = txt("Lead.\nWhy it matters: One.\n**Bold** text: not a label here.\n")

    assert b.sections[0].paragraphs == ("One.", "**Bold** text: not a label here.")


def test_unlabelled_paragraphs_before_first_label_form_a_none_section() -> None:
    b = txt("Lead.\nFirst context paragraph.\nSecond one.\nWhat's next: Later.\nMore.\n")

    assert b.sections == (
        Section(None, ("First context paragraph.", "Second one.")),
        Section("What's next", ("Later.", "More.")),
    )


def test_label_alone_on_its_line_heads_the_following_paragraphs() -> None:
    b = txt("Lead.\nWhat happens next:\nThe vote is on Friday.\nThen a recount.\n")

    assert b.sections == (
        Section("What happens next", ("The vote is on Friday.", "Then a recount.")),
    )


def test_only_lead_gives_no_sections() -> None:
    b = txt("Just one sentence.\n")

    assert b.lead == b.title == "Just one sentence."
    assert b.sections == ()


# --- what is and is not a label ---------------------------------------------------------


def test_colon_later_in_a_sentence_is_not_a_label() -> None:
    sentence = (
        "Officials said on Tuesday that the plan, which had been debated for years, "
        "was finally ready: the first trains run in May."
    )
    b = txt(f"Lead.\nWhy it matters: One.\n{sentence}\n")

    assert labels(b) == ["Why it matters"]
    assert b.sections[0].paragraphs == ("One.", sentence)


def test_label_is_only_the_part_before_the_first_colon() -> None:
    b = txt("Lead.\nNote: The session starts at 5:30 p.m. sharp.\n")

    assert b.sections == (Section("Note", ("The session starts at 5:30 p.m. sharp.",)),)


@pytest.mark.parametrize(
    "paragraph",
    [
        "https://example.org/story: a link, not a label",
        "The time was 10:30 when it started.",
        'He said "no": and left the room.',
        "He said \u201cno\u201d: and left the room.",
        "It rained. Then: floods everywhere.",
        "Really? Yes: it happened.",
        "One two three four five six seven eight nine ten eleven: too many words.",
        "A" * 81 + ": too many characters.",
        "2026: a number alone is not a phrase.",
    ],
)
def test_things_that_are_not_labels(paragraph: str) -> None:
    b = txt(f"Lead.\nWhy it matters: One.\n{paragraph}\n")

    assert labels(b) == ["Why it matters"]
    assert b.sections[0].paragraphs == ("One.", paragraph)


def test_longest_allowed_label() -> None:
    label = "one two three four five six seven eight nine ten"
    b = txt(f"Lead.\n{label}: Text.\n")

    assert labels(b) == [label]


def test_lead_that_looks_like_a_label_stays_the_lead() -> None:
    b = txt("Breaking: the bridge has reopened.\nWhy it matters: Traffic.\n")

    assert b.lead == "Breaking: the bridge has reopened."
    assert labels(b) == ["Why it matters"]


# --- boilerplate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "Already a subscriber? Sign in.",
        "Log in to keep reading.",
        "Log in to continue reading this briefing.",
        "Make sure to log into your account before viewing this content.",
        "Subscribe to keep reading.",
        "Subscribe to continue reading.",
        "This article is for subscribers only.",
        "This content is for subscribers.",
        "Having trouble seeing this content? Refresh the page.",
        "Sign in to read the full story.",
        "SIGN IN TO READ.",
        "To continue reading, please log in.",
        "You\u2019ve reached your free article limit.",
    ],
)
def test_default_boilerplate_phrasings_are_dropped(prompt: str) -> None:
    b = txt(f"{prompt}\nThe real lead.\nWhy it matters: Text.\n")

    assert b.dropped == (prompt,)
    assert b.lead == "The real lead."


def test_boilerplate_is_anchored_at_paragraph_start() -> None:
    para = "Readers who log in to keep reading will see the full budget tables."
    b = txt(f"Lead.\nWhy it matters: One.\n{para}\n")

    assert b.dropped == ()
    assert b.sections[0].paragraphs == ("One.", para)


def test_custom_boilerplate_list_replaces_the_defaults() -> None:
    text = "PAYWALL: members only\nAlready a subscriber? Log in.\nWhy it matters: Text.\n"
    b = parse_text(text, source="x", markdown=False, boilerplate=[r"paywall:"])

    assert b.dropped == ("PAYWALL: members only",)
    assert b.lead == "Already a subscriber? Log in."


def test_no_boilerplate_patterns_drops_nothing() -> None:
    b = parse_text(
        "Already a subscriber? Log in.\nLead.\n", source="x", markdown=False, boilerplate=()
    )

    assert b.dropped == ()
    assert b.lead == "Already a subscriber? Log in."


def test_invalid_boilerplate_pattern_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"invalid boilerplate pattern '\(unclosed'"):
        parse_text("Lead.\n", source="x", markdown=False, boilerplate=["(unclosed"])


def test_default_boilerplate_is_a_tuple_of_regex_sources() -> None:
    assert isinstance(DEFAULT_BOILERPLATE, tuple)
    assert all(isinstance(p, str) for p in DEFAULT_BOILERPLATE)


# --- front matter -----------------------------------------------------------------------


def test_front_matter_variants() -> None:
    b = md(
        "---\n"
        "title: '  A title  '\n"
        "tags: 'energy, climate , , energy'\n"
        "published: 2026-07-18\n"
        "author: Someone\n"
        "---\n"
        "Lead.\n"
    )

    assert b.title == "A title"
    assert b.tags == ("energy", "climate")
    assert b.published_at == datetime(2026, 7, 18, tzinfo=UTC)
    assert b.url is None


def test_published_naive_datetime_and_iso_string() -> None:
    naive = md("---\npublished: 2026-07-18 06:30:00\n---\nLead.\n")
    zulu = md("---\npublished: '2026-07-18T06:30:00Z'\n---\nLead.\n")
    offset = md('---\npublished: "2026-07-18T08:30:00+02:00"\n---\nLead.\n')

    expected = datetime(2026, 7, 18, 6, 30, tzinfo=UTC)
    assert naive.published_at == zulu.published_at == offset.published_at == expected
    assert offset.published_at is not None and offset.published_at.tzinfo == UTC


def test_numeric_tags_are_read_as_text() -> None:
    assert md("---\ntags: [2026, space]\n---\nLead.\n").tags == ("2026", "space")


def test_empty_front_matter_and_blank_title_fall_back_to_lead() -> None:
    assert md("---\n---\nLead.\n").title == "Lead."
    assert md("---\ntitle:\n---\nLead.\n").title == "Lead."
    assert md("---\ntitle: '   '\n---\nLead.\n").title == "Lead."


def test_front_matter_only_recognised_in_markdown() -> None:
    b = txt("---\ntitle: x\n---\nLead.\n")

    assert b.lead == "---"
    assert b.title == "---"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    raw = "\ufeff---\ntitle: T\n---\nLead.\n".encode()
    b = parse_file(write(tmp_path, "bom.md", raw))

    assert b.title == "T"
    assert b.content_hash == hashlib.sha256(raw).hexdigest()


def test_markdown_suffixes(tmp_path: Path) -> None:
    content = "---\ntitle: T\n---\nLead.\n\n**Why:** Text.\n"

    assert parse_file(write(tmp_path, "a.markdown", content)).title == "T"
    assert parse_file(write(tmp_path, "b.MD", content)).title == "T"
    assert parse_file(write(tmp_path, "c.text", content)).lead == "---"


def test_parse_text_hash_is_of_utf8_text() -> None:
    text = "Lead \u2014 with a dash.\n"
    b = txt(text)

    assert b.content_hash == hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- errors -----------------------------------------------------------------------------


def _error(text: str, *, markdown: bool = True, source: str = "b.md") -> BriefingError:
    with pytest.raises(BriefingError) as info:
        parse_text(text, source=source, markdown=markdown)
    return info.value


@pytest.mark.parametrize("text", ["", "   \n\t\n", "\ufeff\n"])
def test_empty_file(text: str) -> None:
    err = _error(text, markdown=False, source="file.txt")

    assert str(err) == "file.txt: empty file"
    assert err.line is None and err.field is None


def test_only_boilerplate_has_no_lead() -> None:
    err = _error("Already a subscriber? Log in to keep reading.\n", markdown=False, source="f")

    assert "no lead paragraph" in err.reason
    assert str(err).startswith("f: no lead paragraph")


def test_front_matter_without_body() -> None:
    err = _error("---\ntitle: T\n---\n\n")

    assert str(err) == "b.md: no content after front matter"


def test_unterminated_front_matter() -> None:
    err = _error("---\ntitle: T\nLead.\n")

    assert err.line == 1
    assert str(err) == "b.md:1: unterminated front matter: no closing '---' line"


def test_invalid_yaml_reports_file_line() -> None:
    err = _error("---\ntitle: T\ntags: [a, b\nurl: x\n---\nLead.\n")

    assert err.line is not None and err.line >= 4
    assert str(err).startswith(f"b.md:{err.line}: invalid YAML in front matter:")


def test_invalid_yaml_on_a_known_line() -> None:
    err = _error("---\ntitle: T\nbad: : :\n---\nLead.\n")

    assert err.line == 3


def test_front_matter_not_a_mapping() -> None:
    err = _error("---\n- a\n- b\n---\nLead.\n")

    assert err.line == 2
    assert "not a mapping" in err.reason
    assert "list" in err.reason


def test_published_not_a_date_matches_documented_message() -> None:
    err = _error("---\ntitle: T\npublished: tomorrow\n---\nLead.\n", source="path/to/file.md")

    assert str(err) == "path/to/file.md:3: front matter field 'published': not a date: 'tomorrow'"
    assert (err.source, err.line, err.field, err.reason) == (
        "path/to/file.md",
        3,
        "published",
        "not a date: 'tomorrow'",
    )


@pytest.mark.parametrize(
    ("front", "field", "line", "reason"),
    [
        ("title: 42", "title", 2, "not a string: 42"),
        ("title: [a, b]", "title", 2, "not a string: ['a', 'b']"),
        ("x: 1\ntags: {a: 1}", "tags", 3, "not a list or a comma-separated string: {'a': 1}"),
        ("tags: [a, [b]]", "tags", 2, "item 1 is not a string: ['b']"),
        ("url: ftp://example.org/x", "url", 2, "not an http(s) URL: 'ftp://example.org/x'"),
        ("url: not a url", "url", 2, "not an http(s) URL: 'not a url'"),
        ("url: 12", "url", 2, "not a string: 12"),
        ("published: 12", "published", 2, "not a date: 12"),
        ("published: yes", "published", 2, "not a date: True"),
    ],
)
def test_front_matter_field_types(front: str, field: str, line: int, reason: str) -> None:
    err = _error(f"---\n{front}\n---\nLead.\n")

    assert (err.field, err.line, err.reason) == (field, line, reason)
    assert str(err) == f"b.md:{line}: front matter field {field!r}: {reason}"


def test_label_without_any_text() -> None:
    err = _error(
        "Lead.\nWhy it matters: One.\nWhat happens next:\n", markdown=False, source="x.txt"
    )

    assert str(err) == "x.txt:3: label 'What happens next' has no text"


def test_non_utf8_bytes_report_offset_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.txt", "Lead.\nWhy: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(BriefingError) as info:
        parse_file(path)

    err = info.value
    assert err.line == 2
    assert err.reason == "not valid UTF-8: byte 0xe9 at byte offset 14"
    assert str(err) == f"{path}:2: not valid UTF-8: byte 0xe9 at byte offset 14"


def test_file_larger_than_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "big.txt", "Lead.\n" + "x" * 100)

    with pytest.raises(BriefingError, match="larger than 50 bytes"):
        parse_file(path, max_bytes=50)
    assert parse_file(path, max_bytes=106).lead == "Lead."


def test_missing_file_is_a_briefing_error(tmp_path: Path) -> None:
    with pytest.raises(BriefingError, match="cannot read file"):
        parse_file(tmp_path / "gone.txt")


def test_briefing_error_is_a_value_error_and_pickles() -> None:
    err = BriefingError("f.md", "not a date: 'x'", line=3, field="published")

    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - round-trip of our own object
    assert (copy.source, copy.line, copy.field, copy.reason) == (
        "f.md",
        3,
        "published",
        "not a date: 'x'",
    )
    assert str(copy) == str(err)


# --- every sample keeps its structure ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "title", "lead_start", "expected_labels"),
    [
        (
            CENTRAL_BANK,
            None,
            "The Eastland Central Bank kept interest rates unchanged",
            [
                "Some stuff you should know before you read",
                "What's going on now",
                "What happens next",
            ],
        ),
        (
            CLOUD_OUTAGE,
            None,
            "A six-hour outage at Helios Cloud",
            ["Some stuff you should know before you read", "What's going on now", "Why it matters"],
        ),
        (
            CONGESTION,
            None,
            "Northbridge's city council voted 7-4",
            [
                "Some shit you should know before you read",
                "What's going on now",
                "More on the vote",
            ],
        ),
        (
            LUNAR,
            "Space agency pushes back crewed lunar landing by a year",
            "The first crewed landing on the Moon",
            [
                "Some stuff you should know before you read",
                "What's going on now",
                "The bigger picture",
            ],
        ),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else None,
)
def test_every_sample_keeps_title_lead_and_labels(
    path: Path, title: str | None, lead_start: str, expected_labels: list[str]
) -> None:
    b = parse_file(path)

    assert b.lead.startswith(lead_start)
    assert b.title == (b.lead if title is None else title)
    assert labels(b) == expected_labels
    assert all(len(s.html) == len(s.paragraphs) for s in b.sections)


def test_all_sample_files_are_covered() -> None:
    assert sorted(DATA.iterdir()) == [CENTRAL_BANK, CLOUD_OUTAGE, CONGESTION, LUNAR]


# --- html beside the plain text ---------------------------------------------------------


def test_plain_text_is_never_read_as_html() -> None:
    b = txt(
        "Lead with <b>x</b> & <script>alert(1)</script>.\n"
        "Why it matters: <i>not</i> markup, <a href='javascript:x'>nor</a> a link.\n"
    )

    assert b.lead == "Lead with <b>x</b> & <script>alert(1)</script>."
    assert (
        b.lead_html == "Lead with &lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;."
    )
    assert b.sections[0].paragraphs == (
        "<i>not</i> markup, <a href='javascript:x'>nor</a> a link.",
    )
    assert b.sections[0].html == (
        "&lt;i&gt;not&lt;/i&gt; markup, &lt;a href='javascript:x'&gt;nor&lt;/a&gt; a link.",
    )


def test_text_file_with_script_stays_literal(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.txt",
        "<script>alert(1)</script> The lead.\nWhat's next: <b>Bold</b>: more.\n",
    )
    b = parse_file(path)

    assert b.lead == b.title == "<script>alert(1)</script> The lead."
    assert "<script" not in b.lead_html and "&lt;script&gt;" in b.lead_html
    assert b.sections == (Section("What's next", ("<b>Bold</b>: more.",)),)
    assert b.sections[0].html == ("&lt;b&gt;Bold&lt;/b&gt;: more.",)


def test_section_html_defaults_to_escaped_text() -> None:
    section = Section("Why", ("a < b & c",))

    assert section.html == ("a &lt; b &amp; c",)
    assert section == Section("Why", ("a < b & c",), ("a &lt; b &amp; c",))
    with pytest.raises(ValueError, match="2 paragraph"):
        Section("Why", ("one", "two"), ("one",))


# --- Markdown through markdown-it -------------------------------------------------------


def test_markdown_inline_markup_survives_sanitized() -> None:
    b = md(
        "The *vote* is **close** \u2014 see [the story](https://news.example.org/s?a=1&b=2 "
        '"Story").\n\n'
        "**Why it matters:** A [bad link](javascript:alert(1)), __strong__ and "
        "<script>alert(1)</script> typed as text.\n"
    )

    assert b.lead == "The vote is close \u2014 see the story."
    assert b.lead_html == (
        "The <em>vote</em> is <strong>close</strong> \u2014 see "
        '<a href="https://news.example.org/s?a=1&amp;b=2" title="Story" '
        'rel="noopener noreferrer">the story</a>.'
    )
    (section,) = b.sections
    assert section.label == "Why it matters"
    assert section.paragraphs == (
        "A [bad link](javascript:alert(1)), strong and <script>alert(1)</script> typed as text.",
    )
    assert section.html == (
        "A [bad link](javascript:alert(1)), <strong>strong</strong> and "
        "&lt;script&gt;alert(1)&lt;/script&gt; typed as text.",
    )


def test_markdown_raw_html_is_escaped_not_interpreted() -> None:
    b = md('<p class="paywall">Members only</p>\n\n<img src=x onerror=alert(1)> Lead.\n')

    assert b.dropped == ()
    assert b.lead == '<p class="paywall">Members only</p>'
    assert "<p" not in b.lead_html
    assert b.sections[0].paragraphs == ("<img src=x onerror=alert(1)> Lead.",)
    assert b.sections[0].html == ("&lt;img src=x onerror=alert(1)&gt; Lead.",)


def test_markdown_lists_and_emphasized_label_text() -> None:
    b = md(
        "Lead.\n\n"
        "**What to watch:**\n\n"
        "- The *vote* on Friday\n"
        "- A recount\n\n"
        "**Labels can't hold *emphasis*:** so this is a paragraph.\n"
    )

    (section,) = b.sections
    assert section.label == "What to watch"
    assert section.paragraphs == (
        "• The vote on Friday\n• A recount",
        "Labels can't hold emphasis: so this is a paragraph.",
    )
    assert section.html[0] == "<ul><li>The <em>vote</em> on Friday</li><li>A recount</li></ul>"


def test_markdown_bold_label_glued_to_text_is_not_bold() -> None:
    # CommonMark does not close ** between a colon and a letter: the asterisks stay.
    b = md("Lead.\n\n**Why:** One.\n\n**Note:**glued.\n")

    assert labels(b) == ["Why"]
    assert b.sections[0].paragraphs == ("One.", "**Note:**glued.")


def test_markdown_headings_and_indented_text_are_paragraphs() -> None:
    # An indented paragraph is a code block to CommonMark; the newsroom only means text.
    b = md(
        "# Heading\n\n**Why it matters:** One.\n\n    Indented <b>text</b>.\n\n    **Next:** two.\n"
    )

    assert b.lead == "Heading"
    assert b.sections == (
        Section("Why it matters", ("One.", "Indented <b>text</b>.")),
        Section("Next", ("two.",)),
    )


def test_markdown_error_lines_count_front_matter() -> None:
    err = _error("---\ntitle: T\n---\nLead.\n\n**Why:** One.\n\n**What happens next:**\n")

    assert str(err) == "b.md:8: label 'What happens next' has no text"


def test_markdown_reference_links_resolve() -> None:
    b = md("Lead with [a link][ref].\n\n[ref]: https://news.example.org/r\n")

    assert b.lead_html == (
        'Lead with <a href="https://news.example.org/r" rel="noopener noreferrer">a link</a>.'
    )
    assert b.sections == ()


# --- HTML bodies from feeds -------------------------------------------------------------


def _feed_items() -> list[ParsedBriefing]:
    feed = feedparser.parse(str(FEED))
    return [
        parse_html(
            entry.content[0].value,
            source=entry.id,
            title=entry.title,
            url=entry.link,
            tags=[tag.term for tag in entry.tags],
        )
        for entry in feed.entries
    ]


def test_feed_port_strike_item() -> None:
    port, _ = _feed_items()

    assert port.source == "briefing-2026-11-24-port-strike"
    assert port.title == "Port strike enters second week as talks stall"
    assert port.lead == (
        "Dockworkers at the country's three busiest ports stayed off the job for an eighth "
        "day, and shipping lines have started rerouting cargo."
    )
    assert labels(port) == [
        "Some stuff you should know before you read",
        "What\u2019s going on now",
        "What to watch",
    ]
    assert port.dropped == (
        "Already a subscriber? Make sure to log into your account before viewing this content.",
    )
    now = port.sections[1]
    assert now.paragraphs[0].startswith("Federal mediators met both sides on Monday")
    assert now.paragraphs[1] == "About 40 container ships are now waiting offshore."
    assert now.html[1] == "About 40 container ships are now waiting offshore."
    assert port.sections[2].paragraphs == (
        'The labor secretary said the government "has tools available" to end the strike, '
        "hinting at an 80-day cooling-off order.",
    )
    assert port.tags == ("business", "labor")
    assert port.url == "https://news.example.org/briefings/port-strike-week-two"
    assert all("<strong>" not in h for s in port.sections for h in s.html)


def test_feed_heat_pump_item_with_b_labels() -> None:
    _, heat = _feed_items()

    assert heat.lead.startswith("More heat pumps than gas boilers were sold")
    assert labels(heat) == ["Some stuff you should know before you read", "What's going on now"]
    assert heat.dropped == ()
    assert heat.sections[1].paragraphs == (
        "Installers report waiting lists of several weeks in colder states, where newer "
        "models now work well below freezing. Gas utilities argue the numbers are inflated "
        "by one-off rebate programs.",
    )


def html(body: str, **kwargs: object) -> ParsedBriefing:
    return parse_html(body, source="feed", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "paragraph",
    [
        "<p><strong>Why it matters:</strong> Text.</p>",
        "<p><b>Why it matters:</b> Text.</p>",
        "<p><strong>Why it matters</strong>: Text.</p>",
        "<p><b>Why it matters: </b>Text.</p>",
        "<p><strong>Why it matters:</strong>&nbsp;Text.</p>",
        "<p><strong>Why it matters:</strong><br>Text.</p>",
        "<p><strong>Why it\nmatters:</strong> Text.</p>",
        "<p><STRONG class=label style='color:red'>Why it matters:</STRONG> Text.</p>",
    ],
)
def test_html_label_forms(paragraph: str) -> None:
    b = html(f"<p>Lead.</p>{paragraph}")

    assert b.sections == (Section("Why it matters", ("Text.",)),)


@pytest.mark.parametrize(
    "paragraph",
    [
        "<p>Why it matters: Text.</p>",
        "<div>Why it matters: Text.</div>",
        "<p><em>Why it matters:</em> Text.</p>",
        "Why it matters: Text.",
    ],
)
def test_html_unmarked_label_is_a_follow_on_paragraph(paragraph: str) -> None:
    b = html(f"<p>Lead.</p><p><strong>What to watch:</strong> The vote.</p>{paragraph}")

    assert [(s.label, s.paragraphs) for s in b.sections] == [
        ("What to watch", ("The vote.", "Why it matters: Text."))
    ]


@pytest.mark.parametrize(
    "paragraph",
    [
        "<p><strong>Why it matters:</strong>Text glued to the colon.</p>",
        "<p><strong>Breaking.</strong> Not: a label.</p>",
        "<p><strong>He said \u201cno\u201d:</strong> quoted.</p>",
        "<p><strong>One two three four five six seven eight nine ten eleven:</strong> x.</p>",
        "<p><strong><em>Why</em>:</strong> markup inside.</p>",
        "<p><em>Why it matters:</em> emphasis is not bold.</p>",
        "<p>Text first, <strong>then bold:</strong> later.</p>",
        '<p><a href="https://example.org">Link</a>: not a label.</p>',
        "<p>The time was 10:30 when it started.</p>",
        "<p><strong>2026:</strong> a number alone.</p>",
    ],
)
def test_html_things_that_are_not_labels(paragraph: str) -> None:
    b = html(f"<p>Lead.</p><p><b>Why it matters:</b> One.</p>{paragraph}")

    assert labels(b) == ["Why it matters"]
    assert len(b.sections[0].paragraphs) == 2


def test_html_label_keeps_inline_markup_in_the_rest() -> None:
    b = html(
        "<p>Lead.</p><p><strong>What&rsquo;s next &amp; why:</strong> A "
        '<a href="https://news.example.org/x" onclick="x()">vote</a> on <em>Friday</em>.</p>'
    )

    (section,) = b.sections
    assert section.label == "What\u2019s next & why"
    assert section.paragraphs == ("A vote on Friday.",)
    assert section.html == (
        'A <a href="https://news.example.org/x" rel="noopener noreferrer">vote</a> on '
        "<em>Friday</em>.",
    )


def test_html_blocks_lists_and_double_breaks() -> None:
    b = html(
        "<div>The lead<br><br><strong>What to watch:</strong></div>"
        "<ul><li>One</li><li>Two &amp; three</li></ul>"
        "<h3>A heading</h3><blockquote><p>A quote.</p></blockquote>"
    )

    assert b.lead == "The lead"
    (section,) = b.sections
    assert section.label == "What to watch"
    assert section.paragraphs == ("• One\n• Two & three", "A heading", "A quote.")
    assert section.html[0] == "<ul><li>One</li><li>Two &amp; three</li></ul>"


def test_html_paywall_class_and_boilerplate_text_are_dropped() -> None:
    b = html(
        '<div class="story-paywall-prompt"><p>Members get more.</p></div>'
        "<p>Already a subscriber? Sign in.</p>"
        '<p class="Paywall">Subscribe for the full story.</p>'
        "<p>The real lead.</p>"
    )

    assert b.dropped == (
        "Members get more.",
        "Already a subscriber? Sign in.",
        "Subscribe for the full story.",
    )
    assert b.lead == b.title == "The real lead."


def test_html_hostile_body_is_sanitized() -> None:
    b = html(
        "<script>document.write('<p>Injected lead</p>')</script>"
        "<style>p{display:none}</style>"
        '<p onclick="steal()">Lead <img src="https://track.example/p.gif">here.</p>'
        '<p><b>Why:</b> <a href="javascript:steal()">Click</a>'
        '<iframe src="https://evil.example/"></iframe> now.</p>'
    )

    assert b.lead == b.title == "Lead here."
    assert b.lead_html == "Lead here."
    assert b.sections == (
        Section("Why", ("Click now.",), ('<a rel="noopener noreferrer">Click</a> now.',)),
    )


def test_html_title_defaults_to_lead_text_on_one_line() -> None:
    b = html("<p>Lead &amp; <em>more</em><br>on a second line.</p>")

    assert b.lead == "Lead & more\non a second line."
    assert b.lead_html == "Lead &amp; <em>more</em><br>on a second line."
    assert b.title == "Lead & more on a second line."


def test_html_metadata() -> None:
    body = "<p>Lead.</p>"
    b = html(
        body,
        title="  A  title\n",
        url=" https://news.example.org/x ",
        tags=["energy", " energy", "", "climate"],
        published_at=datetime(2026, 11, 24, 9, 30),
    )

    assert b.title == "A title"
    assert b.url == "https://news.example.org/x"
    assert b.tags == ("energy", "climate")
    assert b.published_at == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    assert b.content_hash == hashlib.sha256(body.encode()).hexdigest()
    assert html(body, content_hash="abc").content_hash == "abc"
    assert html(body, title="   ").title == "Lead."


def test_html_bad_url_names_the_field() -> None:
    with pytest.raises(BriefingError) as info:
        html("<p>Lead.</p>", url="javascript:alert(1)")

    assert info.value.field == "url"
    assert str(info.value) == "feed: field 'url': not an http(s) URL: 'javascript:alert(1)'"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "no lead paragraph: the body has no text"),
        ("<p> </p><script>x</script><img src=x>", "no lead paragraph: the body has no text"),
        (
            '<p class="paywall">Log in.</p>',
            "no lead paragraph: only boilerplate (1 paragraph(s) dropped)",
        ),
        ("<p>Lead.</p><p><b>Why:</b></p>", "label 'Why' has no text"),
    ],
)
def test_html_errors(body: str, reason: str) -> None:
    with pytest.raises(BriefingError) as info:
        html(body)

    assert info.value.reason == reason
    assert str(info.value) == f"feed: {reason}"


def test_html_size_limit() -> None:
    body = "<p>Lead.</p>" + "x" * 100
    with pytest.raises(BriefingError) as info:
        html(body, max_chars=50)

    assert str(info.value) == f"feed: body is {len(body)} characters; the limit is 50"
    assert html(body, max_chars=len(body)).lead == "Lead."
    with pytest.raises(ValueError, match="max_chars must be positive"):
        html(body, max_chars=0)


def test_parse_text_size_limit() -> None:
    with pytest.raises(BriefingError, match="body is 13 characters; the limit is 12"):
        parse_text("Lead.\nMore.\n\n", source="x", markdown=False, max_chars=12)
    assert parse_text("Lead.\nMore.\n\n", source="x", markdown=False, max_chars=13).lead == "Lead."


# --- structure posted by a CMS ----------------------------------------------------------


def test_fields_in_plain_text() -> None:
    b = parse_fields(
        source="cms:42",
        title="A <title>",
        lead="The lead\nwraps & <b>stays</b> text.",
        sections=[
            ("What's going on now:", "First paragraph.\n\nSecond\nparagraph."),
            ("Why it matters", "One <i>only</i>."),
        ],
        url="https://news.example.org/42",
        tags=("a", "b"),
        published_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
    )

    assert b.title == "A <title>"
    assert b.lead == "The lead wraps & <b>stays</b> text."
    assert b.lead_html == "The lead wraps &amp; &lt;b&gt;stays&lt;/b&gt; text."
    assert b.sections == (
        Section("What's going on now", ("First paragraph.", "Second paragraph.")),
        Section("Why it matters", ("One <i>only</i>.",)),
    )
    assert b.sections[1].html == ("One &lt;i&gt;only&lt;/i&gt;.",)
    assert b.dropped == ()
    assert (b.url, b.tags, b.source) == ("https://news.example.org/42", ("a", "b"), "cms:42")
    assert len(b.content_hash) == 64


def test_fields_in_markdown_and_html() -> None:
    md_fields = parse_fields(
        source="cms",
        title="T",
        lead="The *lead*.",
        sections=[(None, "Context [link](https://x.example/)."), ("Next", "- a\n- b\n\nMore.")],
        body_format="markdown",
    )
    html_fields = parse_fields(
        source="cms",
        title="T",
        lead="<p>The <em>lead</em>.</p>",
        sections=[
            (None, 'Context <a href="https://x.example/" onclick="x">link</a>.'),
            ("Next", "<ul><li>a</li><li>b</li></ul><p>More.</p><script>x</script>"),
        ],
        body_format="html",
    )

    for b in (md_fields, html_fields):
        assert b.lead == "The lead."
        assert b.lead_html == "The <em>lead</em>."
        assert b.sections == (
            Section(
                None,
                ("Context link.",),
                ('Context <a href="https://x.example/" rel="noopener noreferrer">link</a>.',),
            ),
            Section("Next", ("• a\n• b", "More."), ("<ul><li>a</li><li>b</li></ul>", "More.")),
        )
    assert md_fields.content_hash != html_fields.content_hash


@pytest.mark.parametrize("title", [None, "", "  \n "])
def test_fields_title_defaults_to_lead_text(title: str | None) -> None:
    b = parse_fields(
        source="cms",
        title=title,
        lead="<p>The <em>lead</em><br>wraps.</p>",
        sections=[],
        body_format="html",
    )

    assert b.lead == "The lead\nwraps."
    assert b.title == "The lead wraps."


def test_fields_hash_follows_content() -> None:
    def build(lead: str) -> ParsedBriefing:
        return parse_fields(source="s", title="T", lead=lead, sections=[("Why", "x")])

    assert build("One.").content_hash == build("One.").content_hash
    assert build("One.").content_hash != build("Two.").content_hash
    assert (
        parse_fields(
            source="s", title="T", lead="L", sections=[], content_hash="given"
        ).content_hash
        == "given"
    )


def _fields_error(**overrides: object) -> BriefingError:
    arguments: dict[str, object] = {
        "source": "cms:7",
        "title": "Title",
        "lead": "Lead.",
        "sections": [("Why it matters", "Text."), ("What happens next", "More.")],
    }
    arguments.update(overrides)
    with pytest.raises(BriefingError) as info:
        parse_fields(**arguments)  # type: ignore[arg-type]
    return info.value


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"title": 12}, "title", "not a string: 12"),
        ({"lead": ""}, "lead", "is empty"),
        ({"lead": " \n\n "}, "lead", "is empty"),
        ({"lead": "<p> </p>", "body_format": "html"}, "lead", "is empty"),
        ({"lead": "One.\n\nTwo."}, "lead", "has 2 paragraphs; a lead is one paragraph"),
        ({"lead": 3}, "lead", "not a string: 3"),
        (
            {"sections": [("Why", "x"), ("Next", "y"), ("It rained. Then", "z")]},
            "sections[2].label",
            "not a label: 'It rained. Then' (a label is a short phrase of at most 10 words, "
            "without sentence punctuation or quotation marks)",
        ),
        (
            {"sections": [("Why", "x"), ("Note: later", "y")]},
            "sections[1].label",
            "not a label: 'Note: later' (a label is a short phrase of at most 10 words, "
            "without sentence punctuation or quotation marks)",
        ),
        ({"sections": [(" : ", "x")]}, "sections[0].label", "is empty"),
        (
            {"sections": [("Why", "x"), (None, "y")]},
            "sections[1].label",
            "only the first section may be unlabelled",
        ),
        ({"sections": [("Why", "x"), (5, "y")]}, "sections[1].label", "not a string: 5"),
        ({"sections": [("Why", "x"), ("Next", "  \n ")]}, "sections[1].body", "is empty"),
        (
            {"sections": [("Why", "<script>x</script><img src=x>")], "body_format": "html"},
            "sections[0].body",
            "is empty",
        ),
        ({"sections": [("Why", None)]}, "sections[0].body", "not a string: None"),
        ({"sections": ["Why: x"]}, "sections[0]", "not a (label, body) pair: 'Why: x'"),
        ({"url": "ftp://x.example/"}, "url", "not an http(s) URL: 'ftp://x.example/'"),
        ({"tags": ["a", None]}, "tags", "item 1 is not a string: None"),
        ({"published_at": "soon"}, "published_at", "not a date: 'soon'"),
        ({"body_format": "rtf"}, "body_format", "must be one of text, markdown, html, got 'rtf'"),
    ],
)
def test_fields_validation_errors(overrides: dict[str, object], field: str, reason: str) -> None:
    err = _fields_error(**overrides)

    assert (err.source, err.line, err.field, err.reason) == ("cms:7", None, field, reason)
    assert str(err) == f"cms:7: field {field!r}: {reason}"


def test_fields_size_limit() -> None:
    err = _fields_error(lead="L" * 30, sections=[("Why", "x" * 30)], max_chars=50)

    assert err.reason == "body is 63 characters; the limit is 50"


def test_field_error_pickles_with_its_kind() -> None:
    err = _fields_error(lead="")
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - round-trip of our own object

    assert str(copy) == str(err) == "cms:7: field 'lead': is empty"
    assert copy.front_matter is False
