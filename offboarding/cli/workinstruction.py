"""`offboarding workinstruction render`: the work instruction ("werkinstructie
uitdiensttreding") generated from the configuration this installation runs, as Markdown,
HTML or PDF, in Dutch or English, so what is handed to an auditor is what the code executes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from offboarding.cli.app import _fail, _first_line, _say, app
from offboarding.cli.configuration import _settings

LANGUAGES = ("nl", "en")
FORMATS = ("md", "html", "pdf")

workinstruction_app = typer.Typer(
    help="The work instruction, generated from the configuration.", no_args_is_help=True
)
app.add_typer(workinstruction_app, name="workinstruction")


@workinstruction_app.command("render")
def render_command(
    lang: Annotated[str, typer.Option("--lang", help="nl or en.")],
    fmt: Annotated[str, typer.Option("--format", help="md, html (self-contained) or pdf.")] = "md",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="File to write (default werkinstructie.LANG.FORMAT); - for stdout."
        ),
    ] = None,
) -> None:
    """Write the work instruction: roles, trigger, every configured system with what is
    revoked and in which order, containment on instant dismissal, manual steps with assignee
    and deadline, deadlines, evidence, retention; versioned by a hash of the configuration."""
    if lang not in LANGUAGES:
        _fail(f"--lang {lang!r} is not supported; use one of: {', '.join(LANGUAGES)}", code=2)
    if fmt not in FORMATS:
        _fail(f"--format {fmt!r} is not supported; use one of: {', '.join(FORMATS)}", code=2)
    from offboarding.workinstruction.document import build
    from offboarding.workinstruction.render import Format, PdfUnavailable, render

    settings = _settings()
    document = build(settings, issued=datetime.now(settings.zone).date())
    try:
        content = render(document, lang, Format(fmt))
    except PdfUnavailable as exc:
        _fail(str(exc))
    if out is not None and str(out) == "-":
        typer.echo(content if fmt == "pdf" else content.decode(), nl=False)
        return
    target = out or Path(f"werkinstructie.{lang}.{fmt}")
    try:
        target.write_bytes(content)
    except OSError as exc:
        _fail(f"Could not write {target}: {_first_line(exc)}")
    _say(f"Wrote {target} ({len(content)} bytes, {fmt}, {lang}, version {document.version})")
