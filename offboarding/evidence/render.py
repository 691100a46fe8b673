"""An evidence pack as a self-contained HTML page, a PDF, or Markdown, in Dutch or English.

One template per format (`templates/reports/evidence_pack.html`, `.md`), the words from the
catalogs: the shared page and connector catalogs (`load_messages`, for plan steps, kinds
and actions) with the report's own `reports/messages.{lang}.json` merged in. The template
environment is the service's (`StrictUndefined`; every value cleaned by `finalize`, HTML
autoescaped, Markdown escaped), so a name from HR or the directory never becomes markup.

The HTML has its CSS inline and loads nothing: it can be mailed, archived or opened
offline. The PDF is that HTML laid out by WeasyPrint, which needs Pango from the system
(Debian: libpango-1.0-0, libpangoft2-1.0-0, libharfbuzz-subset0 and a font such as
fonts-dejavu-core).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import jinja2

from connectors.base import format_message
from offboarding.evidence.rows import CheckRow, EvidencePack
from offboarding.notification.rendering import SUPPORTED_LANGUAGES, load_messages, shared_templates

REPORT_CATALOG = "reports/messages.{language}.json"


class Format(StrEnum):
    HTML = "html"
    PDF = "pdf"
    MD = "md"


class PdfUnavailable(RuntimeError):
    """WeasyPrint or the system libraries it needs are missing."""


def messages(env: jinja2.Environment, language: str) -> dict[str, str]:
    """The shared catalogs with the report's own phrases; a key in both is an error."""
    merged = load_messages(env, language)
    name = REPORT_CATALOG.format(language=language)
    for key, phrase in _report_catalog(env, name).items():
        if key in merged:
            raise ValueError(f"{name} reuses the key {key!r} of the page or connector catalogs")
        merged[key] = phrase
    return merged


def _report_catalog(env: jinja2.Environment, name: str) -> dict[str, str]:
    if env.loader is None:
        raise ValueError("the template environment has no loader")
    source, _, _ = env.loader.get_source(env, name)
    found = json.loads(source)
    if not isinstance(found, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in found.items()
    ):
        raise ValueError(f"{name} must be one flat JSON object of strings")
    return found


def _check_label(t: Mapping[str, str]) -> Any:
    def label(check: CheckRow) -> str:
        """The catalog's phrase for a check when it needs no parameters (the audit keeps
        the check's id and its English text, not its parameters); else the English text."""
        phrase = t.get(check.check) if check.check else None
        return phrase if phrase and "%(" not in phrase else check.name

    return label


def _fill(phrase: str, **params: object) -> str:
    return format_message(phrase, {key: str(value) for key, value in params.items()})


def render_text(
    pack: EvidencePack,
    language: str,
    fmt: Format = Format.HTML,
    env: jinja2.Environment | None = None,
) -> str:
    """The pack as HTML or Markdown in `language` ("nl" or "en")."""
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {', '.join(SUPPORTED_LANGUAGES)}")
    if fmt is Format.PDF:
        raise ValueError("a PDF is not text: use render_pdf")
    environment = env or shared_templates()
    t = messages(environment, language)
    template = environment.get_template(f"reports/evidence_pack.{fmt.value}")
    return template.render(pack=pack, t=t, lang=language, check_label=_check_label(t), fill=_fill)


def html_to_pdf(html: str) -> bytes:
    """Lay the self-contained HTML out as a PDF (A4). Nothing is fetched: the page has no
    external resources, and the fetcher refuses any all the same."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: Pango missing from the system
        raise PdfUnavailable(
            "PDF output needs WeasyPrint (pip package weasyprint) and Pango (Debian: "
            "libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core): "
            f"{exc}. Use --format html or md meanwhile."
        ) from exc

    def refuse(url: str, *args: object, **kwargs: object) -> dict[str, Any]:
        raise ValueError(f"the evidence pack loads nothing from outside ({url})")

    pdf = weasyprint.HTML(string=html, url_fetcher=refuse).write_pdf()
    if not isinstance(pdf, bytes):
        raise PdfUnavailable("WeasyPrint returned no PDF")
    return pdf


def render(
    pack: EvidencePack,
    language: str,
    fmt: Format = Format.HTML,
    env: jinja2.Environment | None = None,
) -> bytes:
    """The pack in `fmt` as bytes (UTF-8 for HTML and Markdown)."""
    if fmt is Format.PDF:
        return html_to_pdf(render_text(pack, language, Format.HTML, env))
    return render_text(pack, language, fmt, env).encode()
