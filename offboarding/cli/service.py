"""Running the service: `up`, `demo`, `check`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from offboarding.wiring.settings import Settings

from offboarding.cli.app import HostOption, PortOption, PrefectPortOption, _fail, _say, app
from offboarding.cli.configuration import _database_problem, _require_connectors, _settings


def _wait_forever(first: Callable[[], None] | None = None) -> None:
    """Until Ctrl-C; `first` (announcing the service) runs inside, so a Ctrl-C that comes
    the moment "Press Ctrl-C" is printed is a clean stop, not an interrupted start."""
    try:
        if first is not None:
            first()
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("\nStopping ...")


@app.command()
def up(
    host: HostOption = None,
    port: PortOption = None,
    prefect_port: PrefectPortOption = None,
    production: Annotated[
        bool,
        typer.Option(
            "--production",
            help="PostgreSQL for the service and for Prefect, and the workers of a Prefect "
            "process work pool instead of the embedded runner (see README, Production mode).",
        ),
    ] = False,
) -> None:
    """Run the service: local Prefect server, flow deployments served, web app."""
    from offboarding.wiring.logging import configure_logging
    from offboarding.wiring.service import production_problem, run_service

    configure_logging()
    settings = _settings(host, port, prefect_port)
    if production and (problem := production_problem(settings)):
        _fail(f"Could not start: {problem}", 2)
    _require_connectors(settings)
    try:
        with run_service(settings, production=production) as running:
            _wait_forever(lambda: _announce(running))
    except RuntimeError as exc:  # a part of the service could not start: say which and why
        _fail(f"Could not start: {exc}")
    except KeyboardInterrupt:
        _fail("Interrupted while starting; everything that had started is stopped.", 130)


def _announce(running) -> None:  # type: ignore[no-untyped-def]
    settings = running.settings
    typer.secho("Offboarding service is running.", fg=typer.colors.GREEN, bold=True)
    web = running.web_url
    typer.echo(f"  Web app (HRIS intake, approvals): {web}   (API docs: {web}/docs)")
    typer.echo(f"  Prefect UI (management view):    {running.prefect_ui_url}")
    if running.work_pool:
        typer.echo(
            f"  Flow runs: work pool {running.work_pool!r}, {len(running.workers)} worker(s) "
            f"here, at most {settings.work_pool_concurrency} runs at once "
            "(more workers: `offboarding worker`)"
        )
    mail = (
        f"SMTP {settings.smtp.host}:{settings.smtp.port}"
        if settings.smtp
        else f"outbox {settings.outbox_dir.resolve()}"
    )
    typer.echo(f"  Email: {mail}")
    typer.echo("Press Ctrl-C to stop.")


@app.command()
def demo(
    host: HostOption = None,
    port: PortOption = None,
    prefect_port: PrefectPortOption = None,
    ad: Annotated[
        bool,
        typer.Option(
            "--ad", help="Also start an Active Directory DC (Samba; about 20 s): a hybrid leaver"
        ),
    ] = False,
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
        run_demo(settings, announce=_announce, wait=_wait_forever, with_ad=ad)
    except RuntimeError as exc:
        _fail(f"Could not start: {exc}")
    except KeyboardInterrupt:
        _fail("Interrupted; everything the demo had started is stopped.", 130)


# -- looking at the configuration -----------------------------------------------------------


@app.command()
def check() -> None:
    """Check every configured connector (reach, rights, lockout policy), the managers list
    and the database."""
    from connectors.base import ConnectorError, Health
    from connectors.registry import build_connector, build_people_directory

    settings = _settings()
    _require_connectors(settings)
    attention: list[str] = []
    for config in settings.connectors:
        try:
            health = build_connector(config).check()
        except ConnectorError as exc:
            health = Health(ok=False, messages=[str(exc)])
        attention += [] if health.ok else [config["name"]]
        _say(f"{config['name']} ({config['kind']}): {'ok' if health.ok else 'NEEDS ATTENTION'}")
        for message in health.messages:
            _say(f"  - {message}")
    people = settings.people.connector
    try:
        managers = build_people_directory(settings.connector_config(people)).managers()
    except ConnectorError as exc:
        attention.append("managers")
        _say(f"managers who can approve: unknown; the people directory ({people}) failed")
        _say(f"  - {exc}")
    else:
        _say(f"managers who can approve: {len(managers)}")
        if len(managers) < 2:
            attention.append("managers")
            _say("  - four-eyes needs at least two managers: the requester never approves")
        attention += _check_assignees(settings)
    ok, detail = _database_health(settings)
    attention += [] if ok else ["database"]
    _say(f"database: {detail}")
    if attention:
        _fail(f"Needs attention: {', '.join(attention)} (see above).")


def _check_assignees(settings: Settings) -> list[str]:
    """Every person the work instruction assigns a manual step to must be known, with an
    email address: else nobody could attest it and the case would stop."""
    from connectors.registry import build_people_directory

    rules = settings.policy
    wanted = {step.assignee: f"manual step {step.id!r}" for step in rules.manual_steps}
    if rules.manual_assignee:
        wanted.setdefault(rules.manual_assignee, "manual_assignee")
    if not wanted:
        return []
    people = build_people_directory(settings.connector_config(settings.people.connector))
    unknown = []
    for employee_id, role in sorted(wanted.items()):
        person = people.find_person(employee_id)
        if person is None or not person.email:
            unknown.append(f"{employee_id} ({role})")
    _say(f"manual steps: {len(rules.manual_steps)}; assignees known: {len(wanted) - len(unknown)}")
    for problem in unknown:
        _say(f"  - config.toml: policy: {problem} is not in the people directory or has no email")
    return ["manual step assignees"] if unknown else []


def _database_health(settings: Settings) -> tuple[bool, str]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from offboarding.wiring.db import make_engine, where

    url = settings.resolved_database_url
    if make_url(url).get_backend_name() == "sqlite":
        path = make_url(url).database or ""
        if not Path(path).exists():
            return True, f"SQLite {path}: not created yet (`offboarding up` creates it)"
    if make_url(url).get_backend_name() == "sqlite":
        engine = make_engine(url)
    else:
        engine = make_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return False, f"NEEDS ATTENTION\n  - {_database_problem(url, exc)}"
    finally:
        engine.dispose()
    return True, f"{where(url)}: ok"
