"""`offboarding deputy`: a manager's deputy for a period (add, list, end, link)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer

from offboarding.cli.app import _fail, app
from offboarding.cli.configuration import _database, _require_connectors, _settings

deputy_app = typer.Typer(
    help="Deputies: who decides on approvals while a manager is away.", no_args_is_help=True
)
app.add_typer(deputy_app, name="deputy")


def _operator() -> str:
    import getpass

    return f"operator:{getpass.getuser()}"


def _day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r}: not a date; use YYYY-MM-DD", 2)


def _services():  # type: ignore[no-untyped-def]
    from offboarding.wiring.services import build_services

    settings = _settings()
    engine = _database(settings)
    _require_connectors(settings, why="deputies are checked against the people directory")
    return build_services(settings, engine=engine)


@deputy_app.command("add")
def deputy_add(
    manager_id: Annotated[str, typer.Argument(help="The manager's employee id.")],
    deputy_id: Annotated[str, typer.Argument(help="The deputy's employee id.")],
    valid_from: Annotated[
        str, typer.Option("--from", help="First day (YYYY-MM-DD, company timezone).")
    ],
    valid_until: Annotated[str, typer.Option("--until", help="Last day, included (YYYY-MM-DD).")],
) -> None:
    """Name a deputy: while active, approval requests to the manager also go to the deputy.

    The deputy is told by mail; cases already waiting for the manager reach them at once."""
    from approvals.deputies import DeputyProblem, name_deputy, period_of_days
    from approvals.deputy_pages import after_naming

    first, last = _day(valid_from, "--from"), _day(valid_until, "--until")
    services = _services()
    starts_at, ends_at = period_of_days(first, last, services.settings.zone)
    try:
        row = name_deputy(
            services,
            manager_id=manager_id,
            deputy_id=deputy_id,
            starts_at=starts_at,
            ends_at=ends_at,
            actor=_operator(),
        )
    except DeputyProblem as exc:
        _fail(str(exc))
    typer.echo(
        f"deputy {row.id}: {row.deputy_id} stands in for {row.manager_id} from {first} "
        f"until {last} (both included, {services.settings.zone})"
    )
    for link in after_naming(services, row):
        typer.echo(f"asked on a waiting case: {link.approver.display_name} <{link.approver.email}>")
        if services.uses_outbox:
            typer.echo(f"  {link.url}")


@deputy_app.command("list")
def deputy_list(
    all_: Annotated[bool, typer.Option("--all", help="Also those that ended.")] = False,
) -> None:
    """Deputyships: active and to come (with --all also the ended ones)."""
    from sqlmodel import Session, col, select

    from approvals.deputies import current_deputyships
    from offboarding.domain.models import Deputyship, as_utc

    settings = _settings()
    engine = _database(settings)
    if all_:
        with Session(engine) as session:
            rows = list(session.exec(select(Deputyship).order_by(col(Deputyship.starts_at))))
    else:
        rows = current_deputyships(engine)
    zone = settings.zone
    typer.echo(f"{'ID':<32}  {'MANAGER':<8} {'DEPUTY':<8} {'FROM':<16}  {'UNTIL':<16}  STATE")
    if not rows:
        typer.echo("no deputies" + ("" if all_ else " (active or to come)"))
    now = datetime.now(zone)
    for row in rows:
        start, end = as_utc(row.starts_at).astimezone(zone), as_utc(row.ends_at).astimezone(zone)
        if row.ended_at is not None:
            state = (
                f"ended {as_utc(row.ended_at).astimezone(zone):%Y-%m-%d %H:%M} by {row.ended_by}"
            )
        elif end <= now:
            state = "over"
        else:
            state = "active" if start <= now else "to come"
        typer.echo(
            f"{row.id:<32}  {row.manager_id:<8} {row.deputy_id:<8} {start:%Y-%m-%d %H:%M}  "
            f"{end:%Y-%m-%d %H:%M}  {state}"
        )


@deputy_app.command("end")
def deputy_end(
    which: Annotated[
        str,
        typer.Argument(help="A deputyship id, or a manager's employee id (their current one)."),
    ],
) -> None:
    """End a deputyship now: from then on the deputy decides for nobody."""
    from approvals.deputies import DeputyProblem, current_deputyships, end_deputy

    services = _services()
    ids = [row.id for row in current_deputyships(services.engine)]
    if which not in ids:
        mine = current_deputyships(services.engine, manager_id=which)
        if len(mine) > 1:
            _fail(
                f"{which} has {len(mine)} deputyships (active or to come); end one by its id "
                "(`offboarding deputy list`)"
            )
        which = mine[0].id if mine else which
    try:
        row = end_deputy(services, which, actor=_operator())
    except DeputyProblem as exc:
        _fail(str(exc))
    typer.echo(f"deputy {row.id} ended: {row.deputy_id} no longer stands in for {row.manager_id}")


@deputy_app.command("link")
def deputy_link(
    manager_id: Annotated[str, typer.Argument(help="The manager's employee id.")],
    mail: Annotated[
        bool | None,
        typer.Option(
            "--mail/--print",
            help="Mail the link to the manager, or print it here. Default: mail when [smtp] "
            "is configured, print when mail only goes to the outbox.",
        ),
    ] = None,
) -> None:
    """A personal signed link (valid 72 hours) where the manager names a deputy: mailed to
    the manager in their language, or printed."""
    from approvals.deputies import LINK_HOURS, DeputyProblem, may_name_deputies
    from approvals.deputy_pages import deputy_url, mail_deputy_link
    from offboarding.notification.mail import MailError

    services = _services()
    manager = may_name_deputies(services, manager_id)
    if manager is None:
        _fail(
            f"{manager_id} is not a manager or approver in the people directory: only they "
            "name deputies"
        )
    send = not services.uses_outbox if mail is None else mail
    if send:
        try:
            mail_deputy_link(services, manager, actor=_operator())
        except DeputyProblem as exc:
            _fail(str(exc))
        except MailError as exc:
            _fail(f"the link was not mailed to {manager.email}: {exc}")
        where = f"the outbox ({services.settings.outbox_dir})" if services.uses_outbox else "mail"
        typer.echo(
            f"mailed {manager.display_name} <{manager.email}> their personal link "
            f"(valid {LINK_HOURS} hours) via {where}"
        )
        return
    assert services.deputy_links is not None  # build_services always makes one
    token = services.deputy_links.issue(manager.employee_id)
    typer.echo(f"link for {manager.display_name} (valid {LINK_HOURS} hours, personal):")
    typer.echo(f"  {deputy_url(services.settings.base_url, token)}")
