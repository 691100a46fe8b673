"""`offboarding demo`: the whole service plus a throwaway directory with a demo organisation."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import typer

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.cases import get_case
from offboarding.intake.client import send_event, termination_event
from offboarding.wiring.db import make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.service import RunningService, run_service
from offboarding.wiring.settings import PeopleSettings, Settings

LINK = re.compile(r"https?://\S+/approvals/[A-Za-z0-9._\-]+")


def approval_links(outbox: Path, since: float) -> list[tuple[str, str]]:
    """(recipient, link) from approval emails written to the outbox after `since`."""
    found: list[tuple[str, str]] = []
    for path in sorted(outbox.glob("*.eml")):
        if path.stat().st_mtime < since:
            continue
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""  # type: ignore[union-attr]
        for link in LINK.findall(text):
            found.append((str(message["To"]), link))
    return found


def send_leaver_event(base_url: str, settings: Settings, org: DemoOrg) -> httpx.Response:
    """HR's signed termination event for the demo leaver, requested by the demo requester."""
    return send_event(
        base_url=base_url,
        secret=settings.hris_secret.get_secret_value(),
        event=termination_event(
            employee_id=org.leaver_id,
            email=org.leaver_email,
            display_name=org.leaver_name,
            requested_by=org.requester_id,
        ),
    )


def wait_until_suspended(api_url: str, settings: Settings, case_id: str, *, timeout: float) -> bool:
    """True once the case's run waits for a decision: every approval email is out by then."""
    deadline = time.monotonic() + timeout
    engine = make_engine(settings.resolved_database_url)
    try:
        flow_run_id = None
        while flow_run_id is None and time.monotonic() < deadline:
            case = get_case(engine, case_id)
            flow_run_id = case.flow_run_id if case else None
            if flow_run_id is None:
                time.sleep(0.2)
    finally:
        engine.dispose()
    while flow_run_id is not None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            state = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=5).json()["state"]
            if state["type"] == "PAUSED":
                return True
            if state["type"] in ("FAILED", "CRASHED", "COMPLETED", "CANCELLED"):
                return False
        time.sleep(0.3)
    return False


def run_demo(
    settings: Settings,
    *,
    announce: Callable[[RunningService], None],
    wait: Callable[[], None],
) -> None:
    """Everything under `settings.home` is the demo's own and starts fresh."""
    configure_logging()
    shutil.rmtree(settings.home, ignore_errors=True)
    settings.home.mkdir(parents=True)
    workdir = settings.home / "directory"
    password = "Demo-" + secrets.token_urlsafe(9)
    with LocalDirectory.start(workdir, admin_password=secrets.token_urlsafe(18)) as directory:
        org = seed_demo_org(directory, password=password)
        connector = directory.connector_config(
            name="directory", managers_group=org.managers_group_dn
        )
        # nothing of a real configuration leaks in: own directory, database, mail and links
        settings = settings.model_copy(
            update={
                "connectors": [connector],
                "people": PeopleSettings(),
                "smtp": None,
                "database_url": None,
                "public_url": None,
                "env": "demo",
            }
        )
        with run_service(settings) as running:
            announce(running)
            typer.echo(f"  Demo directory: {directory.url} ({len(org.employee_ids)} employees)")
            started = time.time() - 1
            response = send_leaver_event(running.web_url, settings, org)
            typer.echo(
                f"\nHR sent a termination event for {org.leaver_name} ({org.leaver_id}): "
                f"HTTP {response.status_code} {response.text}"
            )
            waiting = response.status_code == 202 and wait_until_suspended(
                running.api_url, settings, response.json()["case_id"], timeout=120
            )
            links = approval_links(settings.outbox_dir, started) if waiting else []
            if links:
                typer.secho("\nOpen one approval link as a second manager:", bold=True)
                for to, link in links:
                    typer.echo(f"  {to}: {link}")
                typer.echo(f"(emails are in {settings.outbox_dir.resolve()})")
                typer.echo(
                    "Afterwards, check the audit log with:\n"
                    f"  OFFBOARDING_HOME={settings.home} offboarding audit verify"
                )
            else:
                typer.secho(
                    "No approval email yet; see the run in the Prefect UI.", fg=typer.colors.YELLOW
                )
            wait()
