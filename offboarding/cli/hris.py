"""Acting as the HR system: `hris send`."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from offboarding.cli.app import _fail, _first_line, _say, hris_app
from offboarding.cli.configuration import _settings


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
    url: Annotated[
        str | None, typer.Option(help="Web app base URL (default: the configured one).")
    ] = None,
) -> None:
    """Sign and post an employee.terminated event, as the HR system would."""
    import httpx

    from offboarding.intake.client import send_event, termination_event

    try:
        day = date.fromisoformat(last_working_day) if last_working_day else None
    except ValueError as exc:
        raise typer.BadParameter(
            "use YYYY-MM-DD, e.g. 2026-11-30", param_hint="--last-working-day"
        ) from exc
    settings = _settings()
    base = (url or settings.base_url).rstrip("/")
    event = termination_event(
        employee_id=employee_id,
        email=email,
        display_name=display_name,
        requested_by=requested_by,
        last_working_day=day,
        urgent=urgent,
    )
    try:
        response = send_event(
            base_url=base, secret=settings.hris_secret.get_secret_value(), event=event
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        _fail(
            f"Could not reach the web app at {base} ({_first_line(exc)}). Is `offboarding up` "
            "running there? Give its address with --url, e.g. --url http://127.0.0.1:8081"
        )
    _say(f"{response.status_code} {response.text}")
    if response.status_code == 401:
        _fail(
            "The web app refused the signature: OFFBOARDING_HRIS_SECRET here must be the "
            "service's (or its OFFBOARDING_HRIS_PREVIOUS_SECRET)."
        )
    if response.status_code >= 400:
        raise typer.Exit(1)
