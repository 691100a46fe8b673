"""Names and free text are shown as what they are: no hidden controls, no live Markdown."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from markdown_it import MarkdownIt
from pydantic import ValidationError

from offboarding.domain.text import (
    BIDI_CONTROLS,
    ZERO_WIDTH,
    markdown_escape,
    safe_display,
    safe_multiline,
)
from offboarding.intake.hris import TerminationEvent

NAMES_THAT_STAY = [
    "Zoë Ëmans",
    "Çelik",
    "Ødegaard",
    "José Ñúñez",
    "Łukasz Żółć",
    "Ærøskøbing Åse",
    "Владимир Ильич",
    "محمد الأحمد",
    "李小龙",
    "Nguyễn Thị Minh Khai",
    "O'Brien-Smith",
    "Jan de Vries (HR)",
]


def render_markdown(text: str) -> str:
    """CommonMark with GitHub's tables and strikethrough, as Prefect's artifact view renders."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)


# --- safe_display -------------------------------------------------------------------------


@pytest.mark.parametrize("control", sorted(BIDI_CONTROLS))
def test_every_bidi_control_is_removed(control: str) -> None:
    assert safe_display(f"Jan {control}seirf.exe") == "Jan seirf.exe"


def test_right_to_left_override_cannot_reverse_a_name() -> None:
    shown = safe_display("Jan \u202eseirf.exe")

    assert shown == "Jan seirf.exe"
    assert "\u202e" not in shown


def test_isolates_are_removed_with_what_they_wrap_kept() -> None:
    assert safe_display("Mieke \u2066\u2067Jansen\u2069\u2069") == "Mieke Jansen"
    assert safe_display("\u2068Noor\u2069 de Groot") == "Noor de Groot"


@pytest.mark.parametrize("hidden", sorted(ZERO_WIDTH))
def test_zero_width_characters_are_removed(hidden: str) -> None:
    assert safe_display(f"Ja{hidden}n de{hidden} Vries") == "Jan de Vries"


def test_zero_width_joiner_cannot_hide_inside_a_look_alike() -> None:
    assert safe_display("admin\u200d") == "admin"
    assert safe_display("ad\u200dmin") == safe_display("admin")


@pytest.mark.parametrize(
    "hidden",
    [
        "\x00",  # NUL
        "\x07",  # bell
        "\x1b",  # escape (terminal colour codes)
        "\x7f",  # delete
        "\x9b",  # C1 control sequence introducer
        "\u00ad",  # soft hyphen
        "\u180e",  # Mongolian vowel separator
        "\U000e0041",  # tag character (hidden "A")
        "\u3164",  # Hangul filler, a letter that draws nothing
        "\ud800",  # lone surrogate: could not even be encoded as UTF-8
    ],
)
def test_other_control_and_format_characters_are_removed(hidden: str) -> None:
    shown = safe_display(f"Jan{hidden} de Vries")

    assert shown == "Jan de Vries"
    shown.encode("utf-8")


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("Jan\nApproved by: CEO", "Jan Approved by: CEO"),
        ("Jan\r\nBcc: evil@example.test", "Jan Bcc: evil@example.test"),
        ("Jan\rde Vries", "Jan de Vries"),
        ("Jan\tde\tVries", "Jan de Vries"),
        ("Jan\u2028de\u2029Vries", "Jan de Vries"),
        ("Jan\x85de\x0bVries\x0c", "Jan de Vries "),
        ("Jan \n\t de  Vries", "Jan de Vries"),
        ("Jan\u00a0de\u3000Vries", "Jan de Vries"),
    ],
)
def test_line_breaks_and_tabs_become_one_space(written: str, shown: str) -> None:
    assert safe_display(written) == shown
    assert "\n" not in safe_display(written)
    assert "\r" not in safe_display(written)


def test_removing_a_control_leaves_no_double_space() -> None:
    assert safe_display("Jan \u202e de Vries") == "Jan de Vries"


@pytest.mark.parametrize("name", NAMES_THAT_STAY)
def test_names_with_diacritics_and_other_scripts_survive(name: str) -> None:
    assert safe_display(name) == name


def test_decomposed_letters_are_composed() -> None:
    decomposed = "Zoe\u0308 C\u0327elik"

    assert safe_display(decomposed) == "Zoë Çelik"
    assert len(safe_display(decomposed)) == len("Zoë Çelik")


def test_surrounding_spaces_are_the_callers_to_strip() -> None:
    assert safe_display(" success") == " success"  # e.g. a CSS class joined in a template
    assert safe_display("\u202e ") == " "


# --- safe_multiline -----------------------------------------------------------------------


def test_multiline_text_keeps_its_lines_but_not_its_controls() -> None:
    written = "Zoë blijft\u202e tot maart.\r\nZie\tHR.\u2028\n\u200bEinde"

    assert safe_multiline(written) == "Zoë blijft tot maart.\nZie HR.\n\nEinde"


def test_multiline_keeps_indentation() -> None:
    assert (
        safe_multiline("stap:\n    1. LDAP\n    2. GitHub") == "stap:\n    1. LDAP\n    2. GitHub"
    )


# --- markdown_escape ----------------------------------------------------------------------

HOSTILE_MARKDOWN = [
    "[click](http://evil)",
    "**boss**",
    "[x](http://evil) **boss**",
    "![logo](http://evil/pixel.png)",
    "<script>alert(1)</script>",
    "<http://evil>",
    "_Jan_ *de* ~~Vries~~",
    "`code` and ``more``",
    "# Approved",
    "- item",
    "+ item",
    "1. item",
    "> quoted",
    "a | b | c",
    "back\\slash \\*",
    "&#x202E;reversed &amp;",
    "{curly} (round) [square]",
    "Wow!",
]


@pytest.mark.parametrize("text", HOSTILE_MARKDOWN)
def test_markdown_in_a_paragraph_renders_literally(text: str) -> None:
    rendered = render_markdown(f"Evidence for {markdown_escape(text)}")

    assert rendered == f"<p>Evidence for {html.escape(text, quote=False)}</p>\n"


@pytest.mark.parametrize("text", HOSTILE_MARKDOWN)
def test_markdown_at_the_start_of_a_line_renders_literally(text: str) -> None:
    rendered = render_markdown(markdown_escape(text))

    assert rendered == f"<p>{html.escape(text, quote=False)}</p>\n"


@pytest.mark.parametrize("text", HOSTILE_MARKDOWN)
def test_markdown_in_a_table_cell_stays_in_its_cell(text: str) -> None:
    table = f"| Name | Id |\n|---|---|\n| {markdown_escape(text)} | E1042 |\n"
    rendered = render_markdown(table)

    cells = re.findall(r"<td>(.*?)</td>", rendered)
    assert cells == [html.escape(text, quote=False), "E1042"]


def test_markdown_link_and_bold_lose_their_meaning() -> None:
    rendered = render_markdown(markdown_escape("[x](http://evil) **boss**"))

    assert "<a" not in rendered
    assert "<strong>" not in rendered
    assert markdown_escape("[x](http://evil) **boss**") == (r"\[x\]\(http://evil\) \*\*boss\*\*")


def test_every_significant_character_is_escaped() -> None:
    assert markdown_escape("\\`*_{}[]()#+-.!|<>~&") == (
        "\\\\\\`\\*\\_\\{\\}\\[\\]\\(\\)\\#\\+\\-\\.\\!\\|\\<\\>\\~\\&"
    )


def test_markdown_escape_cleans_first() -> None:
    escaped = markdown_escape("**boss**\u202e\n| Approved | yes |")

    assert escaped == r"\*\*boss\*\* \| Approved \| yes \|"
    assert not set(escaped) & BIDI_CONTROLS


@pytest.mark.parametrize("name", NAMES_THAT_STAY)
def test_accented_names_render_unchanged_in_markdown(name: str) -> None:
    assert render_markdown(markdown_escape(name)) == f"<p>{html.escape(name, quote=False)}</p>\n"


# --- the HRIS intake ----------------------------------------------------------------------


def event(display_name: str) -> dict[str, Any]:
    return {
        "id": "evt_01J9Z6",
        "type": "employee.terminated",
        "occurred_at": "2026-11-24T09:30:00+01:00",
        "employee": {
            "id": "E1042",
            "email": "jdevries@example.test",
            "display_name": display_name,
            "manager_id": "E0007",
        },
        "last_working_day": "2026-11-30",
        "requested_by": "E0007",
    }


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("Jan \u202eseirf.exe", "Jan seirf.exe"),
        ("\u2066Jan de Vries\u2069", "Jan de Vries"),
        ("  Jan\u200d de\nVries\t", "Jan de Vries"),
        ("\u202e Jan", "Jan"),
        ("Zoe\u0308 Ëmans", "Zoë Ëmans"),
        ("[x](http://evil) **boss**", "[x](http://evil) **boss**"),  # escaped where shown
    ],
)
def test_intake_cleans_the_display_name(sent: str, kept: str) -> None:
    parsed = TerminationEvent.model_validate(event(sent))

    assert parsed.employee.display_name == kept


@pytest.mark.parametrize("name", NAMES_THAT_STAY)
def test_intake_keeps_ordinary_names(name: str) -> None:
    assert TerminationEvent.model_validate(event(name)).employee.display_name == name


@pytest.mark.parametrize("sent", ["\u202e", "\u200b\u200d\ufeff", "\u2066 \u2069", "\x00\x1b"])
def test_intake_refuses_a_name_with_nothing_visible(sent: str) -> None:
    with pytest.raises(ValidationError, match="no visible characters") as caught:
        TerminationEvent.model_validate(event(sent))

    assert caught.value.errors()[0]["loc"] == ("employee", "display_name")
