"""`offboarding demo`: the whole service plus throwaway systems with a demo organisation: a
directory (slapd), an information system (a SCIM app), and sandboxes (stateful fakes, so
labelled) of Microsoft Entra ID, GitHub and two hosting panels; plus one manual step (the
laptop and the badge) that a person attests."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from connectors.manual import ManualStep
from demo.apex import NAME as APEX_NAME
from demo.apex import ApexApp, ScimAppUnavailable, running_apex
from demo.directory import LocalDirectory
from demo.github_sandbox import running_github_sandbox
from demo.graph_sandbox import running_graph_sandbox
from demo.organisation import DemoOrg, seed_demo_org
from demo.panel_sandbox import running_panel_sandbox
from demo.samba_ad import SambaUnavailable, running_samba_ad
from demo.starter import StarterConnector, write_starter
from offboarding.domain.cases import get_case
from offboarding.intake.client import send_event, termination_event
from offboarding.wiring.db import make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.service import RunningService, run_service
from offboarding.wiring.settings import PeopleSettings, Settings
from offboarding.workinstruction.file import to_yaml as work_instruction_yaml

# The work instruction's manual step in the demo: Milan Dijkstra (Operations) collects them.
MANUAL_STEPS = [
    {
        "id": "laptop-and-badge",
        "text": "Collect the laptop and the door badge",
        "text_nl": "Laptop en toegangspas innemen",
        "assignee": "E1016",
    }
]

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


@dataclass
class DemoSystems:
    """The demo's throwaway systems, running and seeded."""

    directory: LocalDirectory
    org: DemoOrg
    apex: ApexApp | None  # None without scim2-server
    connectors: list[StarterConnector]
    apex_missing: str = ""
    sandboxes: list[tuple[str, str]] | None = None  # (name, base URL) of each sandbox


def start_systems(stack: contextlib.ExitStack, home: Path, *, with_ad: bool = False) -> DemoSystems:
    """The directory (slapd), the information system (a SCIM app) and the sandboxes,
    stopped by `stack`; `with_ad`: an Active Directory DC (Samba) too, where Jan de Vries
    is the hybrid leaver whose Entra ID account is synced from AD."""
    directory = stack.enter_context(
        LocalDirectory.start(home / "directory", admin_password=secrets.token_urlsafe(18))
    )
    org = seed_demo_org(directory, password="Demo-" + secrets.token_urlsafe(9))
    ldap = directory.connector_config(name="directory", managers_group=org.managers_group_dn)
    connectors = [StarterConnector(ldap, {"bind_password": "DIRECTORY_BIND_PASSWORD"})]
    notes: list[str] = []
    hybrid = with_ad and start_active_directory(stack, connectors, notes)
    sandboxes = start_sandboxes(stack, connectors, hybrid=hybrid)
    try:
        apex = stack.enter_context(running_apex(token=secrets.token_urlsafe(24)))
    except ScimAppUnavailable as exc:
        notes.append(str(exc))
        return DemoSystems(directory, org, None, connectors, "; ".join(notes), sandboxes)
    connectors.append(StarterConnector(apex.connector_config(), {"token": "APEX_SCIM_TOKEN"}))
    return DemoSystems(directory, org, apex, connectors, "; ".join(notes), sandboxes)


def start_active_directory(
    stack: contextlib.ExitStack, connectors: list[StarterConnector], notes: list[str]
) -> bool:
    """A throwaway Samba AD DC (about 20 s to provision); False, with a note, without Samba."""
    try:
        ad = stack.enter_context(
            running_samba_ad(
                admin_password="Ad-" + secrets.token_urlsafe(12) + "1!",
                user_password="Demo-" + secrets.token_urlsafe(9) + "1!",
            )
        )
    except SambaUnavailable as exc:
        notes.append(f"Active Directory is left out: {exc}")
        return False
    connectors.append(
        StarterConnector(ad.connector_config(), {"bind_password": "AD_BIND_PASSWORD"})
    )
    return True


def start_sandboxes(
    stack: contextlib.ExitStack, connectors: list[StarterConnector], *, hybrid: bool = False
) -> list[tuple[str, str]]:
    """Entra ID (over HTTPS with its own CA), GitHub and the two hosting panels: stateful
    fakes of the vendors' APIs, named "(sandbox)" wherever a person reads them."""
    graph = stack.enter_context(running_graph_sandbox(synced_leaver=hybrid))
    connectors.append(StarterConnector(graph.connector_config(), {"client_secret": "ENTRA_SECRET"}))
    github = stack.enter_context(running_github_sandbox())
    connectors.append(StarterConnector(github.connector_config(), {"token": "GITHUB_TOKEN"}))
    panels = stack.enter_context(
        running_panel_sandbox(plesk_key=secrets.token_urlsafe(24), da_key=secrets.token_urlsafe(24))
    )
    connectors.append(StarterConnector(panels.plesk.connector_config(), {"api_key": "PLESK_KEY"}))
    connectors.append(
        StarterConnector(panels.directadmin.connector_config(), {"login_key": "DA_LOGIN_KEY"})
    )
    return [
        (str(graph.connector_config()["name"]), graph.base_url),
        (str(github.connector_config()["name"]), github.base_url),
        (str(panels.plesk.connector_config()["name"]), panels.plesk.base_url),
        (str(panels.directadmin.connector_config()["name"]), panels.directadmin.base_url),
    ]


def run_demo(
    settings: Settings,
    *,
    announce: Callable[[RunningService], None],
    wait: Callable[[], None],
    with_ad: bool = False,
) -> None:
    """Everything under `settings.home` is the demo's own and starts fresh."""
    configure_logging()
    shutil.rmtree(settings.home, ignore_errors=True)
    settings.home.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        systems = start_systems(stack, settings.home, with_ad=with_ad)
        org = systems.org
        starter = write_starter(
            settings.home / "starter", settings=settings, connectors=systems.connectors
        )
        # nothing of a real configuration leaks in: own systems, database, mail and links
        policy = settings.policy.model_copy(
            update={
                "manual_steps": tuple(ManualStep(**m) for m in MANUAL_STEPS),
                # what the sandboxes can only report (a dynamic group, a device) too
                "manual_assignee": "E1016",
                "on_leave": {},  # the demo's systems: disable (the default)
            }
        )
        # the demo runs a work instruction file, as an installation would (its plans record
        # the file's version label and SHA-256)
        # absolute: the runner and workers start in the project's folder, and a relative
        # path in their settings would be read next to their (empty) config file instead
        instruction = (settings.home / "workinstruction.yaml").resolve()
        instruction.write_text(
            work_instruction_yaml(
                policy,
                version="demo-1",
                title="Offboarding work instruction (demo)",
                owner="HR (demo)",
                approve_within_hours=settings.approval_ttl_hours,
                retention_days=settings.retention_days,
                connectors=[str(c.config["name"]) for c in systems.connectors],
            ),
            encoding="utf-8",
        )
        settings = settings.model_copy(
            update={
                "connectors": [dict(c.config) for c in systems.connectors],
                "people": PeopleSettings(),
                "smtp": None,
                "database_url": None,
                "public_url": None,
                "env": "demo",
                "policy": policy,
                "work_instruction": instruction,
            }
        )
        with run_service(settings) as running:
            announce(running)
            typer.echo(
                f"  Demo directory: {systems.directory.url} ({len(org.employee_ids)} employees)"
            )
            if systems.apex is not None:
                typer.echo(
                    f"  Demo SCIM app ({APEX_NAME}): {systems.apex.base_url} "
                    f"({len(systems.apex.users)} users; groups {', '.join(systems.apex.groups)})"
                )
            else:
                typer.secho(f"  {systems.apex_missing}", fg=typer.colors.YELLOW)
            for name, url in systems.sandboxes or []:
                typer.echo(f"  {name}: {url}")
            typer.echo(
                "  Manual steps: Milan Dijkstra (E1016) collects the laptop and badge and does "
                "what no API reaches; after the approval his attestation links are in the outbox"
            )
            typer.echo(
                f"  Configuration to start from: {starter.config} "
                f"(its secrets: {starter.secrets.name} next to it)"
            )
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
