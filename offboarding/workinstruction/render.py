"""The work instruction as Markdown, self-contained HTML or PDF, in Dutch or English.

The words live in one Markdown template per language (`templates/reports/
workinstruction.{nl,en}.md`), rendered with the service's template environment
(`StrictUndefined`; every configured value Markdown-escaped by `finalize`). The HTML is that
same Markdown turned into HTML by markdown-it (raw HTML off, so a value can never become
markup) inside `templates/reports/workinstruction.html` (inline CSS, loads nothing); the
PDF is that HTML laid out by WeasyPrint, as the evidence pack's is. So the three formats
cannot say different things.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from itertools import pairwise

import jinja2
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from offboarding.evidence.render import PdfUnavailable, html_to_pdf
from offboarding.notification.rendering import SUPPORTED_LANGUAGES, load_messages, shared_templates
from offboarding.workinstruction.document import AccessRule, WorkInstruction

__all__ = ["Format", "PdfUnavailable", "render", "render_text"]


class Format(StrEnum):
    MD = "md"
    HTML = "html"
    PDF = "pdf"


def _number(value: float) -> str:
    """48.0 -> "48", 1.5 -> "1.5": hours and seconds as people write them."""
    return f"{value:g}"


def _labels(t: dict[str, str]) -> dict[str, Callable[..., str]]:
    """The catalog's words for effects, kinds and actions (the plan pages use the same)."""

    def effect(value: str) -> str:
        return t.get(f"plan.effect.{value}", str(value))

    def action(value: str) -> str:
        return t.get(f"plan.action.{value}", str(value))

    def kind(rule: AccessRule) -> str:
        return t.get(f"plan.kind.{rule.kind}") or effect(rule.effect)

    return {"effect": effect, "action": action, "kind": kind, "number": _number}


def render_markdown(
    document: WorkInstruction, language: str, env: jinja2.Environment | None = None
) -> str:
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {', '.join(SUPPORTED_LANGUAGES)}")
    environment = env or shared_templates()
    t = load_messages(environment, language)
    template = environment.get_template(f"reports/workinstruction.{language}.md")
    return template.render(doc=document, lang=language, **_labels(t))


def _title(tokens: Sequence[Token]) -> str:
    """The text of the first level-1 heading (the document's title, a template's words)."""
    for opening, inline in pairwise(tokens):
        if opening.type == "heading_open" and opening.tag == "h1":
            return str(inline.content).replace("\\", "")
    return ""


def render_text(
    document: WorkInstruction,
    language: str,
    fmt: Format = Format.MD,
    env: jinja2.Environment | None = None,
) -> str:
    """The document as Markdown or HTML in `language` ("nl" or "en")."""
    if fmt is Format.PDF:
        raise ValueError("a PDF is not text: use render")
    environment = env or shared_templates()
    markdown = render_markdown(document, language, environment)
    if fmt is Format.MD:
        return markdown
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = parser.render(markdown)
    shell = environment.get_template("reports/workinstruction.html")
    return shell.render(
        lang=language,
        title=_title(parser.parse(markdown)),
        body=Markup(body),  # noqa: S704 - markdown-it output with raw HTML disabled
        version=document.version,
    )


def render(
    document: WorkInstruction,
    language: str,
    fmt: Format = Format.MD,
    env: jinja2.Environment | None = None,
) -> bytes:
    """The document in `fmt` as bytes (UTF-8 for Markdown and HTML)."""
    if fmt is Format.PDF:
        return html_to_pdf(render_text(document, language, Format.HTML, env))
    return render_text(document, language, fmt, env).encode()
