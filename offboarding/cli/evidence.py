"""`offboarding evidence CASE_ID`: the evidence pack of a finished case, as HTML, PDF or
Markdown, in Dutch or English, read from the database and the audit log only."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from offboarding.cli.app import _fail, _first_line, _say, app
from offboarding.cli.configuration import _database, _settings


class Language(StrEnum):
    NL = "nl"
    EN = "en"


class OutputFormat(StrEnum):
    HTML = "html"
    PDF = "pdf"
    MD = "md"


@app.command()
def evidence(
    case_id: Annotated[str, typer.Argument(help="The case id (`offboarding cases`).")],
    lang: Annotated[
        Language | None,
        typer.Option("--lang", help="Language of the pack (default: default_language)."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="html (self-contained), pdf or md.")
    ] = OutputFormat.HTML,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="File to write (default evidence-CASE_ID.LANG.FORMAT here); - for stdout."
        ),
    ] = None,
) -> None:
    """Write the evidence pack of a completed, rejected or needs-attention case: the leaver,
    the HR trigger, every plan version and its SHA-256, every decision and refused attempt,
    each step, the attestations, the verification, what was kept, and the audit-chain anchor."""
    from offboarding.evidence.pack import CaseNotFinished, UnknownCase, gather
    from offboarding.evidence.render import Format, PdfUnavailable, render

    settings = _settings()
    engine = _database(settings)
    language = lang.value if lang else settings.default_language
    try:
        pack = gather(engine, case_id)
    except (UnknownCase, CaseNotFinished) as exc:
        _fail(str(exc))
    try:
        content = render(pack, language, Format(fmt.value))
    except PdfUnavailable as exc:
        _fail(str(exc))
    if out is not None and str(out) == "-":
        typer.echo(content.decode() if fmt is not OutputFormat.PDF else content, nl=False)
        return
    target = out or Path(f"evidence-{case_id}.{language}.{fmt.value}")
    try:
        target.write_bytes(content)
    except OSError as exc:
        _fail(f"Could not write {target}: {_first_line(exc)}")
    _say(f"Wrote {target} ({len(content)} bytes, {fmt.value}, {language})")
