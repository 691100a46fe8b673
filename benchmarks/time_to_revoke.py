"""Time from a second manager's approval POST to the completed run, for the demo leaver.

Starts the whole service on its embedded defaults (SQLite, local Prefect server,
outbox), a throwaway slapd with the demo organisation, and offboards Jan de Vries
(E1042, five groups) several times, restoring his access between rounds.

    .venv/bin/python benchmarks/time_to_revoke.py [--rounds 7] [--upgrade] [--production]

`--production` runs the service as `offboarding up --production` does instead: PostgreSQL for
the service and for Prefect (throwaway databases), a process work pool and its worker.

`--upgrade` measures instant dismissal arriving late: a normal leaving waits for its approval,
then HR's urgent event for the same person arrives; timed from that intake POST until the
leaver's sign-in is locked in slapd (containment done, the rest still waiting for approval).
Each round then approves, so the next starts from a closed case.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import secrets
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import ldap3

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from demo.run import approval_links, send_leaver_event
from offboarding.domain.cases import get_case
from offboarding.wiring.db import make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.processes import free_port
from offboarding.wiring.service import run_service
from offboarding.wiring.settings import Settings

CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


def restore_leaver(directory: LocalDirectory, org: DemoOrg, password: str) -> None:
    """Give the leaver back everything the previous round took away."""
    conn = directory.admin_connection()
    try:
        for group in org.leaver_group_dns:
            conn.search(group, "(objectClass=posixGroup)", search_scope=ldap3.BASE)
            attribute, value = (
                ("memberUid", org.leaver_uid) if conn.entries else ("member", org.leaver_dn)
            )
            conn.search(
                group,
                f"({attribute}={ldap3.utils.conv.escape_filter_chars(value)})",
                search_scope=ldap3.BASE,
            )
            if not conn.entries:
                conn.modify(group, {attribute: [(ldap3.MODIFY_ADD, [value])]})
        conn.modify(
            org.leaver_dn,
            {
                "pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])],
                "pwdReset": [(ldap3.MODIFY_DELETE, [])],
            },
        )
    except ldap3.core.exceptions.LDAPNoSuchAttributeResult:
        pass
    finally:
        conn.unbind()
    conn = directory.admin_connection()
    conn.modify(org.leaver_dn, {"userPassword": [(ldap3.MODIFY_REPLACE, [password])]})
    conn.unbind()


def run_of(settings: Settings, case_id: str) -> str:
    """The case's flow run, once the dispatcher has created it."""
    engine = make_engine(settings.resolved_database_url)
    try:
        while True:
            case = get_case(engine, case_id)
            if case is not None and case.flow_run_id:
                return case.flow_run_id
            time.sleep(0.05)
    finally:
        engine.dispose()


def locked(directory: LocalDirectory, dn: str) -> bool:
    conn = directory.admin_connection()
    try:
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["pwdAccountLockedTime"])
        return bool(conn.entries and conn.entries[0]["pwdAccountLockedTime"].values)
    finally:
        conn.unbind()


def approve(link: str) -> float:
    """GET the approval page (until the run waits), POST approve; when the POST was sent."""
    with httpx.Client(timeout=60) as browser:
        page = browser.get(link)
        while page.status_code != 200:  # the run may still be on its way to suspending
            time.sleep(0.05)
            page = browser.get(link)
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        posted_at = time.time()
        browser.post(link, data={"decision": "approve", "csrf_token": token}).raise_for_status()
    return posted_at


def wait_completed(running, flow_run_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    while True:
        run = httpx.get(f"{running.api_url}/flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"):
            break
        time.sleep(0.05)
    if run["state"]["type"] != "COMPLETED":
        raise SystemExit(f"run ended {run['state']['type']}: {run['state'].get('message')}")
    return run  # type: ignore[no-any-return]


def upgrade_round(running, settings: Settings, org: DemoOrg, directory: LocalDirectory) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the urgent event's intake POST to the leaver's sign-in locked."""
    from offboarding.intake.client import send_event, termination_event

    since = time.time() - 0.5
    response = send_leaver_event(running.web_url, settings, org)
    response.raise_for_status()
    case_id = response.json()["case_id"]
    links: list[tuple[str, str]] = []
    while not links:  # the case waits for its approval
        time.sleep(0.05)
        links = approval_links(settings.outbox_dir, since)
    assert not locked(directory, org.leaver_dn)
    time.sleep(1)  # every approval mail of the first plan is out (3 approvers)
    links = approval_links(settings.outbox_dir, since)
    urgent = termination_event(
        employee_id=org.leaver_id,
        email=org.leaver_email,
        display_name=org.leaver_name,
        requested_by=org.requester_id,
        urgent=True,
    )
    upgraded_at = time.time() - 0.5
    t_upgrade = time.perf_counter()
    answer = send_event(
        base_url=running.web_url, secret=settings.hris_secret.get_secret_value(), event=urgent
    )
    if answer.status_code >= 300 or answer.json().get("case_id") != case_id:
        raise SystemExit(f"the urgent event did not upgrade the case: {answer.text[:300]}")
    while not locked(directory, org.leaver_dn):
        time.sleep(0.02)
    took = time.perf_counter() - t_upgrade
    first = set(links)
    links = []  # the upgrade made a new plan: its links, not the first plan's, decide
    while not links:
        time.sleep(0.05)
        links = [x for x in approval_links(settings.outbox_dir, upgraded_at) if x not in first]
    approve(links[0][1])
    wait_completed(running, run_of(settings, case_id))
    return took


def flow_body_seconds(running, flow_run_id: str) -> float:  # type: ignore[no-untyped-def]
    """The resumed run's own time: its last Running state to Completed, from Prefect's state
    history (the new process's start and Prefect's scheduling are before it)."""
    states = httpx.get(
        f"{running.api_url}/flow_run_states/", params={"flow_run_id": flow_run_id}
    ).json()
    at = {
        s["type"]: datetime.fromisoformat(s["timestamp"]).timestamp()
        for s in sorted(states, key=lambda s: s["timestamp"])
    }
    return at["COMPLETED"] - at["RUNNING"]


def one_round(running, settings: Settings, org: DemoOrg) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(seconds from intake to approval email, from approval POST to completion, and the
    resumed flow body's own seconds)."""
    since = time.time() - 0.5
    t_intake = time.perf_counter()
    response = send_leaver_event(running.web_url, settings, org)
    response.raise_for_status()
    case_id = response.json()["case_id"]
    links: list[tuple[str, str]] = []
    while not links:
        time.sleep(0.05)
        links = approval_links(settings.outbox_dir, since)
    to_email = time.perf_counter() - t_intake
    posted_at = approve(links[0][1])
    flow_run_id = run_of(settings, case_id)
    run = wait_completed(running, flow_run_id)
    ended = datetime.fromisoformat(run["end_time"]).timestamp()
    return to_email, ended - posted_at, flow_body_seconds(running, flow_run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--upgrade", action="store_true", help="time an urgent upgrade instead")
    parser.add_argument(
        "--production", action="store_true", help="PostgreSQL and a process work pool"
    )
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    password = "Bench-" + secrets.token_urlsafe(8)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as databases:
        home = Path(tmp)
        urls: dict[str, str] = {}
        if args.production:
            from reorganisation import postgres_database  # benchmarks/reorganisation.py

            urls["database_url"] = databases.enter_context(postgres_database())
            urls["prefect_database_url"] = databases.enter_context(postgres_database())
        with LocalDirectory.start(
            home / "slapd", admin_password=secrets.token_urlsafe(16)
        ) as directory:
            org = seed_demo_org(directory, password=password)
            settings = Settings(
                home=home / "home",
                port=free_port(),
                prefect_port=free_port(),
                connectors=[directory.connector_config(managers_group=org.managers_group_dn)],
                # an instant dismissal locks the account at once (the rest waits for approval)
                **({"urgent_containment": ["account"]} if args.upgrade else {}),
                **urls,  # type: ignore[arg-type]
            )
            started = time.perf_counter()
            with run_service(settings, quiet=True, production=args.production) as running:
                mode = (
                    "PostgreSQL, Prefect server on PostgreSQL, a process work pool's worker"
                    if args.production
                    else "SQLite, Prefect server on SQLite, runner"
                )
                print(f"service up in {time.perf_counter() - started:.1f} s ({mode}, web app)")
                if args.upgrade:
                    upgrades = []
                    for n in range(1, args.rounds + 1):
                        restore_leaver(directory, org, password)
                        upgrades.append(upgrade_round(running, settings, org, directory))
                        print(
                            f"round {n}: urgent event POST -> sign-in locked {upgrades[-1]:.2f} s"
                        )
                    print(
                        f"urgent upgrade -> containment done, median of {len(upgrades)}: "
                        f"{statistics.median(upgrades):.2f} s "
                        f"(min {min(upgrades):.2f}, max {max(upgrades):.2f})"
                    )
                    return
                to_emails, to_done, bodies = [], [], []
                for n in range(1, args.rounds + 1):
                    restore_leaver(directory, org, password)
                    to_email, to_complete, body = one_round(running, settings, org)
                    to_emails.append(to_email)
                    to_done.append(to_complete)
                    bodies.append(body)
                    print(
                        f"round {n}: intake -> approval email {to_email:.2f} s; "
                        f"approval POST -> run completed {to_complete:.2f} s; "
                        f"resumed flow body (Running -> Completed) {body:.2f} s"
                    )
    print(
        f"leaver: {org.leaver_name} ({org.leaver_id}), "
        f"{len(org.leaver_group_dns)} groups + lock + password"
    )
    print(
        f"approval POST -> completed, median of {len(to_done)}: {statistics.median(to_done):.2f} s "
        f"(min {min(to_done):.2f}, max {max(to_done):.2f})"
    )
    print(
        f"resumed flow body (last Running -> Completed), median: {statistics.median(bodies):.2f} s "
        f"(min {min(bodies):.2f}, max {max(bodies):.2f})"
    )
    print(
        f"intake -> approval email, median: {statistics.median(to_emails):.2f} s "
        f"(min {min(to_emails):.2f}, max {max(to_emails):.2f})"
    )


if __name__ == "__main__":
    main()
