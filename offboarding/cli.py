"""`offboarding`: run the service, run the demo, check the audit log."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Annotated

import typer

app = typer.Typer(help="Employee offboarding with four-eyes approval.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
hris_app = typer.Typer(help="Act as the HR system (for trying things out).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(hris_app, name="hris")
approvals_app = typer.Typer(help="Approval links.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

HostOption = Annotated[
    str | None, typer.Option(help="Address for the web app (default 127.0.0.1).")
]
PortOption = Annotated[int | None, typer.Option(help="Port for the web app (default 8080).")]
PrefectPortOption = Annotated[
    int | None,
    typer.Option(help="Port for the embedded Prefect server and its UI (default 4200)."),
]


def _settings(  # type: ignore[no-untyped-def]
    host: str | None = None,
    port: int | None = None,
    prefect_port: int | None = None,
    **overrides: object,
):
    from pydantic import ValidationError

    from offboarding.wiring.settings import Settings

    given = {"host": host, "port": port, "prefect_port": prefect_port, **overrides}
    values = {k: v for k, v in given.items() if v is not None}
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.secho(f"Configuration problem:\n{exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _wait_forever() -> None:
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("\nStopping ...")


@app.command()
def up(
    host: HostOption = None, port: PortOption = None, prefect_port: PrefectPortOption = None
) -> None:
    """Run the service: local Prefect server, flow deployments served, web app."""
    from offboarding.wiring.logging import configure_logging
    from offboarding.wiring.service import run_service

    configure_logging()
    settings = _settings(host, port, prefect_port)
    if not settings.connectors:
        typer.secho(
            f"No connectors configured. Add them to {settings.home / 'config.toml'} "
            "(see README), or try `offboarding demo`.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    _check_connector_configs(settings)
    try:
        with run_service(settings) as running:
            _announce(running)
            _wait_forever()
    except RuntimeError as exc:  # a part of the service could not start: say which and why
        typer.secho(f"Could not start: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


def _check_connector_configs(settings) -> None:  # type: ignore[no-untyped-def]
    """Refuse to start on a connector configuration that cannot work, saying why."""
    from connectors.registry import build_connector, build_people_directory

    try:
        for config in settings.connectors:
            build_connector(config)
        build_people_directory(settings.connector_config(settings.people.connector))
    except (ValueError, LookupError) as exc:  # pydantic's ValidationError is a ValueError
        typer.secho(f"Connector configuration problem:\n{exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _announce(running) -> None:  # type: ignore[no-untyped-def]
    settings = running.settings
    typer.secho("Offboarding service is running.", fg=typer.colors.GREEN, bold=True)
    web = running.web_url
    typer.echo(f"  Web app (HRIS intake, approvals): {web}   (API docs: {web}/docs)")
    typer.echo(f"  Prefect UI (management view):    {running.prefect_ui_url}")
    mail = (
        f"SMTP {settings.smtp.host}:{settings.smtp.port}"
        if settings.smtp
        else f"outbox {settings.outbox_dir.resolve()}"
    )
    typer.echo(f"  Email: {mail}")
    typer.echo("Press Ctrl-C to stop.")


@app.command()
def demo(
    host: HostOption = None, port: PortOption = None, prefect_port: PrefectPortOption = None
) -> None:
    """Run the service with a throwaway demo directory and one leaver event already sent.

    The demo keeps its data in `<data dir>/demo`, fresh on every start, apart from yours.
    """
    from demo.run import run_demo
    from offboarding.wiring.service import check_ports_free

    base = _settings(host, port, prefect_port)
    settings = _settings(host, port, prefect_port, env="demo", home=base.home / "demo")
    try:
        check_ports_free(settings)  # before the demo wipes its data dir: it may be in use
        run_demo(settings, announce=_announce, wait=_wait_forever)
    except RuntimeError as exc:
        typer.secho(f"Could not start: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


@app.command()
def check() -> None:
    """Check every configured connector (reach, rights, lockout policy) and the managers list."""
    from connectors.registry import build_connector, build_people_directory

    settings = _settings()
    if not settings.connectors:
        typer.secho("No connectors configured.", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    _check_connector_configs(settings)
    healthy = True
    for config in settings.connectors:
        health = build_connector(config).check()
        healthy &= health.ok
        mark = "ok" if health.ok else "NEEDS ATTENTION"
        typer.echo(f"{config['name']} ({config['kind']}): {mark}")
        for message in health.messages:
            typer.echo(f"  - {message}")
    managers = build_people_directory(
        settings.connector_config(settings.people.connector)
    ).managers()
    typer.echo(f"managers who can approve: {len(managers)}")
    if len(managers) < 2:
        healthy = False
        typer.echo("  - four-eyes needs at least two managers: the requester never approves")
    raise typer.Exit(0 if healthy else 1)


@app.command()
def cases(
    status: Annotated[str | None, typer.Option(help="Only cases in this status.")] = None,
) -> None:
    """List cases, newest first: id, status, leaver, last working day, detail."""
    from sqlmodel import Session, col, select

    from offboarding.domain.models import Case, CaseStatus
    from offboarding.wiring.db import create_schema, make_engine

    engine = make_engine(_settings().resolved_database_url)
    create_schema(engine)
    with Session(engine) as session:
        query = select(Case).order_by(col(Case.created_at).desc())
        if status:
            try:
                query = query.where(Case.status == CaseStatus(status))
            except ValueError as exc:
                choices = ", ".join(s.value for s in CaseStatus)
                typer.secho(f"Unknown status {status!r}; use one of: {choices}", err=True)
                raise typer.Exit(2) from exc
        for case in session.exec(query):
            typer.echo(
                f"{case.id}  {case.status.value:<17} {case.employee_id:<8} {case.display_name:<24} "
                f"{case.last_working_day}  {case.status_detail[:60]}"
            )


@approvals_app.command("resend")
def approvals_resend(case_id: Annotated[str, typer.Argument(help="The case id.")]) -> None:
    """Send fresh approval links for a waiting case (e.g. after the links expired)."""
    import getpass

    from approvals.requests import NotAwaitingApproval, renew_approvals
    from offboarding.domain.cases import get_case
    from offboarding.wiring.services import build_services

    services = build_services(_settings())
    case = get_case(services.engine, case_id)
    if case is None:
        typer.secho(f"No case {case_id}; see `offboarding cases`.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    try:
        issued = renew_approvals(services, case, actor=f"operator:{getpass.getuser()}")
    except NotAwaitingApproval as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
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
    from offboarding.wiring.db import create_schema, make_engine

    settings = _settings()
    engine = make_engine(settings.resolved_database_url)
    create_schema(engine)
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
    from offboarding.wiring.db import create_schema, make_engine

    engine = make_engine(_settings().resolved_database_url)
    create_schema(engine)
    events = events_for_case(engine, case_id)
    if not events:
        typer.secho(f"No audit events for case {case_id}.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    for event in events:
        details = "" if event.erased else f"  {event.details}"
        typer.echo(
            f"#{event.seq:<6} {event.at:%Y-%m-%d %H:%M:%S} {event.actor:<22} "
            f"{event.action:<24} {event.outcome}{details}"
        )


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit hash chain; non-zero exit names the first bad event."""
    from offboarding.domain.audit import verify_chain
    from offboarding.wiring.db import make_engine

    settings = _settings()
    report = verify_chain(make_engine(settings.resolved_database_url))
    if report.ok:
        typer.echo(f"Audit log intact: {report.events} events, hash chain verified.")
        return
    typer.secho(
        f"Audit log BROKEN at event {report.first_bad_seq}: {report.problem}.",
        fg=typer.colors.RED,
        err=True,
    )
    raise typer.Exit(1)


@hris_app.command("send")
def hris_send(
    employee_id: Annotated[str, typer.Option("--employee", help="Employee id of the leaver.")],
    requested_by: Annotated[str, typer.Option(help="Employee id of the initiator (HR).")],
    email: Annotated[str, typer.Option(help="Leaver's email.")],
    display_name: Annotated[str, typer.Option(help="Leaver's name.")],
    last_working_day: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD (default today).")
    ] = None,
    urgent: Annotated[bool, typer.Option(help="Instant dismissal.")] = False,
    url: Annotated[str | None, typer.Option(help="Web app base URL.")] = None,
) -> None:
    """Sign and post an employee.terminated event, as the HR system would."""
    settings = _settings()
    from offboarding.intake.client import send_event, termination_event

    response = send_event(
        base_url=url or settings.base_url,
        secret=settings.hris_secret.get_secret_value(),
        event=termination_event(
            employee_id=employee_id,
            email=email,
            display_name=display_name,
            requested_by=requested_by,
            last_working_day=date.fromisoformat(last_working_day) if last_working_day else None,
            urgent=urgent,
        ),
    )
    typer.echo(f"{response.status_code} {response.text}")
    if response.status_code >= 400:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
