"""Cases and their evidence: `cases`, `approvals resend`, `retention`, `audit`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from offboarding.cli.app import _fail, app, approvals_app, audit_app
from offboarding.cli.configuration import _database, _require_connectors, _settings


@app.command()
def cases(
    status: Annotated[str | None, typer.Option(help="Only cases in this status.")] = None,
) -> None:
    """List cases, newest first: id, status, leaver, last working day, detail."""
    from sqlmodel import Session, col, select

    from offboarding.domain.models import Case, CaseStatus

    query = select(Case).order_by(col(Case.created_at).desc())
    if status:
        try:
            query = query.where(Case.status == CaseStatus(status))
        except ValueError:
            choices = ", ".join(s.value for s in CaseStatus)
            _fail(f"Unknown status {status!r}; use one of: {choices}", 2)
    engine = _database(_settings())
    with Session(engine) as session:
        found = list(session.exec(query))
    typer.echo(
        f"{'CASE':<32}  {'STATUS':<17} {'EMPLOYEE':<8} {'NAME':<24} {'LAST DAY':<10}  DETAIL"
    )
    if not found:
        typer.echo("no cases" + (f" with status {status}" if status else ""))
    for case in found:
        typer.echo(
            f"{case.id:<32}  {case.status.value:<17} {case.employee_id:<8} "
            f"{case.display_name:<24} {case.last_working_day!s:<10}  {case.status_detail[:60]}"
        )


@approvals_app.command("resend")
def approvals_resend(case_id: Annotated[str, typer.Argument(help="The case id.")]) -> None:
    """Send fresh approval links for a waiting case (e.g. after the links expired)."""
    import getpass

    from approvals.requests import NotAwaitingApproval, renew_approvals
    from offboarding.domain.cases import get_case
    from offboarding.domain.models import CaseStatus
    from offboarding.wiring.services import build_services

    settings = _settings()
    engine = _database(settings)
    case = get_case(engine, case_id)
    if case is None:
        _fail(f"No case {case_id}; `offboarding cases` lists the cases.")
    if case.status != CaseStatus.AWAITING_APPROVAL:
        _fail(
            f"case {case_id} is {case.status.value}, not awaiting approval: links are only "
            "sent while a case waits for a decision."
        )
    _require_connectors(settings, why="sending links needs the people directory")
    services = build_services(settings, engine=engine)
    try:
        issued = renew_approvals(services, case, actor=f"operator:{getpass.getuser()}")
    except NotAwaitingApproval as exc:
        _fail(str(exc))
    for link in issued:
        typer.echo(f"new link sent to {link.approver.display_name} <{link.approver.email}>")
        if services.uses_outbox:
            typer.echo(f"  {link.url}")


@app.command()
def retention(
    dry_run: Annotated[bool, typer.Option(help="Only list the cases that are due.")] = False,
) -> None:
    """Erase personal data of closed cases older than `retention_days` (also runs daily)."""
    from datetime import timedelta

    from offboarding.domain.retention import apply_retention, due_cases

    settings = _settings()
    engine = _database(settings)
    now = datetime.now(UTC)
    if dry_run:
        due = due_cases(engine, cutoff=now - timedelta(days=settings.retention_days))
        typer.echo(f"{len(due)} closed case(s) older than {settings.retention_days} days:")
        for case in due:
            typer.echo(f"  {case.id}  {case.status.value}  closed {case.updated_at:%Y-%m-%d}")
        return
    report = apply_retention(
        engine, retention_days=settings.retention_days, now=now, outbox=settings.outbox_dir
    )
    typer.echo(
        f"Erased personal data of {len(report.cases)} case(s) and {report.audit_events} audit "
        f"event(s); deleted {report.outbox_files} outbox email(s). The audit chain still verifies."
    )


@audit_app.command("show")
def audit_show(case_id: Annotated[str, typer.Argument(help="The case id.")]) -> None:
    """Print a case's audit trail: when, who, what, outcome."""
    from offboarding.domain.audit import events_for_case

    events = events_for_case(_database(_settings()), case_id)
    if not events:
        _fail(f"No audit events for case {case_id}; `offboarding cases` lists the cases.")
    for event in events:
        details = "" if event.erased else f"  {event.details}"
        typer.echo(
            f"#{event.seq:<6} {event.at:%Y-%m-%d %H:%M:%S} {event.actor:<22} "
            f"{event.action:<24} {event.outcome}{details}"
        )


AnchorsOption = Annotated[
    Path | None,
    typer.Option(
        "--anchors", help="The anchor file (default: audit-anchors.jsonl in the data dir)."
    ),
]


@audit_app.command("verify")
def audit_verify(anchors: AnchorsOption = None) -> None:
    """Recompute the audit hash chain and check it against the anchor file (rows cut from the
    end of the log); non-zero exit names the first bad event or the reason."""
    from offboarding.domain.anchors import ANCHOR_FILE, read_anchors, verify_against_anchors

    settings = _settings()
    engine = _database(settings)
    path = anchors or settings.home / ANCHOR_FILE
    if anchors is not None and not anchors.is_file():
        _fail(f"No anchor file at {anchors}; leave out --anchors to use {ANCHOR_FILE}.", 2)
    report = verify_against_anchors(engine, read_anchors(path))
    chain = report.chain
    if not chain.ok:
        _fail(
            "\n".join(
                [f"Audit log BROKEN at event {chain.first_bad_seq}: {chain.problem}."]
                + [f"Audit log BROKEN: {problem}." for problem in report.problems]
            )
        )
    if report.problems:
        _fail("\n".join(f"Audit log BROKEN: {problem}." for problem in report.problems))
    summary = f"Audit log intact: chain of {chain.events} events intact, hash chain verified"
    if report.newest is None:
        typer.echo(
            f"{summary}; no anchors in {path}, so rows cut from the end cannot be detected "
            "(`offboarding audit anchor` writes one)."
        )
        return
    plural = "" if report.anchors == 1 else "s"
    newest = report.newest
    typer.echo(
        f"{summary}; consistent with {report.anchors} anchor{plural}, "
        f"newest at seq {newest.seq} of {newest.when}."
    )
    if report.uncovered:
        typer.echo(
            f"{report.uncovered} event(s) after seq {newest.seq} are not anchored yet: "
            "cutting them would go unnoticed until the next anchor."
        )


@audit_app.command("anchor")
def audit_anchor(anchors: AnchorsOption = None) -> None:
    """Write the chain's head to the anchor file now (and record that in the log)."""
    import getpass

    from offboarding.domain.anchors import (
        ANCHOR_FILE,
        AnchorFileError,
        FileAnchorSink,
        write_anchor,
    )

    settings = _settings()
    engine = _database(settings)
    sink = FileAnchorSink(anchors or settings.home / ANCHOR_FILE)
    try:
        anchor = write_anchor(engine, sink, actor=f"operator:{getpass.getuser()}")
    except (AnchorFileError, OSError) as exc:
        _fail(f"Could not write an anchor: {exc}")
    typer.echo(
        f"Anchored seq {anchor.seq} ({anchor.hash[:16]}...) of {anchor.when} in {sink.path}."
    )


# -- acting as the HR system ----------------------------------------------------------------
